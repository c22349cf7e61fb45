"""The AutoDeco heads, exactly as the authors released them (layers, tensor names). No I/O, no generation code.

Tensor names match the released checkpoints:
`temp_head.mlp.{0,2}.{weight,bias}` and `top_p_head.mlp.{0,2}.{weight,bias}`.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from autodeco_lp.hub.checkpoint import read_heads, save_heads
from autodeco_lp.hub.config import AutoDecoConfig
from autodeco_lp.hub.publish import push_heads
from autodeco_lp.inference.features import distribution_statistics


class _SigmoidMLP(nn.Module):
    """`Linear(in, hidden) -> ReLU -> Linear(hidden, 1) -> Sigmoid`, stored as `self.mlp`."""

    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_features, hidden_features),
            nn.ReLU(),
            nn.Linear(hidden_features, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x).squeeze(-1)  # (..., in) -> (...)


class TemperatureHead(_SigmoidMLP):
    """Predicts T in (0, 2) from the final hidden state: `T = 2 * sigmoid(MLP(h))`."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return 2.0 * super().forward(hidden_states)


class TopPHead(_SigmoidMLP):
    """Predicts P in (0, 1) from `[h, T, max_prob, entropy, prob_var, top5_sum]` (or `[h, T]`)."""


class AutoDecoHeads(nn.Module):
    """The pair of heads. `heads(hidden_states, logits) -> (temperature, top_p)`.

    Args:
        config: an `AutoDecoConfig`; a disabled head is not built and its output is 1.

    Example:
        >>> import torch
        >>> from autodeco_lp import AutoDecoConfig, AutoDecoHeads
        >>> heads = AutoDecoHeads(AutoDecoConfig(hidden_size=8, vocab_size=11))
        >>> t, p = heads(torch.randn(2, 3, 8), torch.randn(2, 3, 11))
        >>> t.shape, p.shape
        (torch.Size([2, 3]), torch.Size([2, 3]))
    """

    def __init__(self, config: AutoDecoConfig) -> None:
        super().__init__()
        self.config = config
        self.temp_head = (
            TemperatureHead(config.hidden_size, config.mlp_hidden_size) if config.enable_temperature_head else None
        )
        self.top_p_head = (
            TopPHead(config.top_p_input_size, config.mlp_hidden_size) if config.enable_top_p_head else None
        )

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(
        self, hidden_states: torch.Tensor, logits: torch.Tensor | None = None, run_top_p_head: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict per-position temperature and top-p.

        Args:
            hidden_states: `(..., H)` final hidden states (the input of `lm_head`), any dtype.
            logits: `(..., V)` raw logits for the same positions; needed only by the top-p head
                with enhanced features.
            run_top_p_head: False returns P = 1 without running the top-p head (a decoder that does not
                apply P need not pay for it).

        Returns:
            `(temperature, top_p)`, each `(...)` in fp32. T is detached before it feeds the
            top-p head (as in the released training), so the top-p loss does not move T
            through that path.
        """
        if hidden_states.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"`hidden_states` has width {hidden_states.shape[-1]} but the heads expect "
                f"hidden_size={self.config.hidden_size}: these heads belong to another base model."
            )
        h = hidden_states.to(self.dtype)

        def ones() -> torch.Tensor:  # the output of a disabled head, (...)
            return torch.ones(hidden_states.shape[:-1], dtype=torch.float32, device=hidden_states.device)

        temperature = self.temp_head(h).float() if self.temp_head is not None else ones()
        if self.top_p_head is None or not run_top_p_head:
            return temperature, ones()
        t_in = temperature.detach()  # (...)
        features = [h, t_in.unsqueeze(-1).to(h.dtype)]  # [(..., H), (..., 1)]
        if self.config.use_enhanced_features:
            if logits is None:
                raise ValueError("`logits` is required: the top-p head reads statistics of the distribution.")
            features.append(distribution_statistics(logits, t_in).to(h.dtype))  # (..., 4)
        features = torch.cat(features, dim=-1)  # (..., H+1) or (..., H+5)
        return temperature, self.top_p_head(features).float()

    # -- checkpoint I/O: the formats live in autodeco_lp.hub.checkpoint (configs and tensors only). --

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write `autodeco_config.json` + `autodeco_heads.safetensors` atomically."""
        save_heads(self.config, self.state_dict(), save_directory)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Upload what `save_pretrained` writes, plus a model card README.md, to the Hub repo `repo_id`
        (created when missing), in one commit through huggingface_hub's `HfApi.upload_folder`.

        Args:
            repo_id: `org/name` (or `name`, in your own namespace).
            kwargs: `model_card` (a card file, e.g. the README.md a fit wrote; default: a short card
                made from the config), `private`, `token`, `revision`, `commit_message`, `create_pr`;
                see `autodeco_lp.hub.publish.push_heads`.

        Returns:
            huggingface_hub's `CommitInfo` (`.commit_url`).
        """
        return push_heads(self.config, self.state_dict(), repo_id, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> AutoDecoHeads:
        """Load native or released heads from a folder or a Hub repo id.

        Args:
            path_or_repo_id: a local folder or a Hub repo id.
            dtype: dtype of the loaded heads (released bf16 weights are upcast; default fp32).
            device: where to put the heads (default CPU).
            kwargs: `revision`, `cache_dir`, `token`, `base_model_name_or_path`; see
                `autodeco_lp.hub.checkpoint.read_heads`.
        """
        config, tensors = read_heads(path_or_repo_id, **kwargs)
        heads = cls(config)
        heads.load_state_dict(tensors, strict=True)  # names and shapes were checked by read_heads
        return heads.to(device=device or "cpu", dtype=dtype)


def check_heads_fit_model(
    config: AutoDecoConfig, hidden_size: int, vocab_size: int | None, model_name: str, what: str = "the heads"
) -> None:
    """Refuse heads built for another model: their hidden (and, when recorded, vocab) width must match.

    `what` names the heads in the message (e.g. "`--init-heads` 'out/'").
    """
    trained_on = f"they were trained on {config.base_model_name_or_path!r}"
    if config.hidden_size != hidden_size:
        raise ValueError(
            f"{what} expect hidden_size={config.hidden_size} but {model_name!r} has final hidden states of "
            f"width {hidden_size}; load the heads trained for this model ({trained_on})."
        )
    if vocab_size is not None and config.vocab_size is not None and config.vocab_size != vocab_size:
        raise ValueError(
            f"{what} expect vocab_size={config.vocab_size} but {model_name!r} has {vocab_size} logits; "
            f"load the heads trained for this model ({trained_on})."
        )
