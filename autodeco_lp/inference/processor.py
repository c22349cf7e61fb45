"""`AutoDeco`: a transformers `LogitsProcessor` that applies the heads' per-token T and top-p.

It attaches one hook to an unmodified model (see `capture.py`), and at every decoding step:
1. takes the final hidden state `(rows, H)` and raw logits `(rows, V)` the hook recorded,
2. predicts `T` and `P` per row with the heads,
3. returns `hard_top_p_filter(scores / T, P)`: a new tensor, `scores` is never modified.

Steps 2-3 are one function of tensors, `autodeco_step`, with no branch on a device value: on a GPU the
step queues its kernels and never waits for them (no host-device synchronisation), and it can be
compiled as one graph (`AutoDeco(..., compile_step=True)`). The trace stays on the model's device
until it is read.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LogitsProcessor

from autodeco_lp.hub.registry import FROM_PRETRAINED, resolve_heads_for_model
from autodeco_lp.inference.capture import LMHeadCapture
from autodeco_lp.inference.features import MIN_TEMPERATURE, hard_top_p_filter
from autodeco_lp.inference.generation_checks import inspect_generate_call
from autodeco_lp.inference.heads import AutoDecoHeads, check_heads_fit_model
from autodeco_lp.inference.settings import DecodingSettings, check_bool


@dataclass
class AutoDecoTrace:
    """Per generated step and row: the temperature and top-p that were applied.

    `temperature[s, r]` and `top_p[s, r]` (shape `(steps, rows)`, fp32, CPU) are the values used
    to choose the token at position `prompt_length + s` of row `r`. Under beam search rows are
    batch x beams in the order `generate` scored them at that step.
    """

    temperature: torch.Tensor
    top_p: torch.Tensor

    def __len__(self) -> int:
        return self.temperature.shape[0]

    def row(self, index: int) -> list[tuple[float, float]]:
        """`[(T, P), ...]` for one row, one pair per generated step."""
        return list(zip(self.temperature[:, index].tolist(), self.top_p[:, index].tolist()))


def autodeco_step(
    heads: AutoDecoHeads,
    settings: DecodingSettings,
    min_tokens_to_keep: int,
    hidden: torch.Tensor,
    logits: torch.Tensor,
    scores: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decoding step of AutoDeco: `(filtered scores, T, P)` from the captured rows and the scores.

    Shapes: hidden `(rows, H)`, logits `(rows, V)` (raw, for the statistics), scores `(rows, V)` (what
    `generate` hands to the processors) -> `(rows, V)` fp32 (a new tensor), `(rows,)`, `(rows,)` fp32.
    The only branch is on `settings` (Python values fixed at construction), so a compiled step has one
    graph per shape.
    """
    temperature, top_p = settings.predict(heads, hidden, logits)  # (rows,) each
    out = scores.float() / temperature.unsqueeze(-1)  # (rows, V), a new tensor
    if settings.use_top_p_head:  # without it P = 1 everywhere: nothing to filter, no sort
        out = hard_top_p_filter(out, top_p, min_tokens_to_keep)
    return out, temperature, top_p


class AutoDeco(LogitsProcessor):
    r"""Per-token temperature and nucleus filtering predicted by AutoDeco heads.

    Args:
        model: any Hugging Face causal LM (left unmodified: one forward hook, removed by `close()`).
        heads: `AutoDecoHeads` trained for this model; moved to the `lm_head`'s device.
        temperature_scale: multiplies the predicted T (as the authors' server does). Default 1.
        top_p_scale: multiplies the predicted P before clamping to `max_top_p`. Default 1.
        min_temperature / max_temperature: clamp of the applied T. `min_temperature` defaults to
            `features.MIN_TEMPERATURE` (1e-2), below which sampling is greedy in practice.
        min_top_p / max_top_p: clamp of the applied P, within [0, 1].
        use_temperature_head: False applies T = 1 (top-p head only).
        use_top_p_head: False applies P = 1 (temperature head only).
        record_trace: keep the applied T and P of every step in `self.trace` (on the device; copied to
            the CPU when `trace` is read).
        min_tokens_to_keep: tokens never filtered by the nucleus (>= 1).
        compile_step: compile the step (heads, statistics, scaling, nucleus) with `torch.compile` as one
            graph, for GPUs where the eager step is bound by kernel launches. Opt-in: the first calls
            compile (seconds to minutes); if compiling fails (e.g. no C++ compiler for inductor on a
            CPU), AutoDeco warns once and runs the eager step. Values agree with eager to fp32 rounding.

    Examples:

    A tiny random Llama and untrained heads, so that it runs anywhere; with a real model, load
    trained heads with `AutoDeco.from_pretrained(model, "folder or Hub id")` (or no id at all:
    the heads registered for the model).

    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from autodeco_lp import AutoDeco, AutoDecoConfig, AutoDecoHeads
    >>> _ = torch.manual_seed(0)
    >>> config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
    ...                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=0)
    >>> model = LlamaForCausalLM(config).eval()
    >>> heads = AutoDecoHeads(AutoDecoConfig(hidden_size=16, vocab_size=64))
    >>> prompt = torch.tensor([[1, 5, 6, 7]])
    >>> with AutoDeco(model, heads) as autodeco:
    ...     out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=None,
    ...                          max_new_tokens=5, min_new_tokens=5, logits_processor=[autodeco])
    >>> out.shape
    torch.Size([1, 9])
    >>> autodeco.trace.temperature.shape  # (steps, rows): the T applied to every generated token
    torch.Size([5, 1])
    >>> bool(((autodeco.trace.top_p > 0) & (autodeco.trace.top_p <= 1)).all())
    True
    """

    def __init__(
        self,
        model: nn.Module,
        heads: AutoDecoHeads,
        *,
        temperature_scale: float = 1.0,
        top_p_scale: float = 1.0,
        min_temperature: float = MIN_TEMPERATURE,
        max_temperature: float = float("inf"),
        min_top_p: float = 0.0,
        max_top_p: float = 1.0,
        use_temperature_head: bool = True,
        use_top_p_head: bool = True,
        record_trace: bool = True,
        min_tokens_to_keep: int = 1,
        compile_step: bool = False,
    ) -> None:
        if not isinstance(heads, AutoDecoHeads):
            raise TypeError(
                f"`heads` has to be an AutoDecoHeads, but is {type(heads).__name__}; "
                "load one with AutoDecoHeads.from_pretrained(path_or_repo_id)."
            )
        check_bool("record_trace", record_trace)
        # Validated once, shared with the vLLM plugin (inference/settings.py).
        self.settings = DecodingSettings(
            temperature_scale=temperature_scale,
            top_p_scale=top_p_scale,
            min_temperature=min_temperature,
            max_temperature=max_temperature,
            min_top_p=min_top_p,
            max_top_p=max_top_p,
            use_temperature_head=check_bool("use_temperature_head", use_temperature_head),
            use_top_p_head=check_bool("use_top_p_head", use_top_p_head),
        ).for_heads(heads)
        if isinstance(min_tokens_to_keep, bool) or not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
            raise ValueError(f"`min_tokens_to_keep` has to be a positive integer, but is {min_tokens_to_keep!r}")
        self.min_tokens_to_keep = min_tokens_to_keep
        self.record_trace = record_trace
        self.compile_step = check_bool("compile_step", compile_step)
        # dynamic=None: one graph for the first batch size, one shape-generic graph if another follows.
        self._step: Callable = torch.compile(autodeco_step) if compile_step else autodeco_step

        self._capture = LMHeadCapture(model)
        weight = self._capture.lm_head.weight
        if isinstance(weight, torch.Tensor) and weight.dim() == 2:  # else the heads check H at the first step
            name = getattr(model, "name_or_path", "") or type(model).__name__
            check_heads_fit_model(heads.config, weight.shape[1], weight.shape[0], name)
        if heads.device != weight.device:
            heads.to(weight.device)
        self.heads = heads.eval()
        self.model = model
        self._steps: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._next_length: int | None = None
        self._warned: set[str] = set()
        self._capture.attach()

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        path_or_repo_id: str | os.PathLike | None = None,
        *,
        load_kwargs: dict | None = None,
        **kwargs,
    ) -> AutoDeco:
        """Load heads (from a folder, a Hub id, or, when omitted, the registry entry whose base
        model matches `model.name_or_path`) and attach them. `kwargs` go to `AutoDeco(...)`,
        `load_kwargs` to `AutoDecoHeads.from_pretrained` (e.g. `revision`, `cache_dir`)."""
        if path_or_repo_id is None:
            path_or_repo_id = resolve_heads_for_model(model, FROM_PRETRAINED)
        heads = AutoDecoHeads.from_pretrained(path_or_repo_id, **(load_kwargs or {}))
        return cls(model, heads, **kwargs)

    # -- lifecycle --

    def close(self) -> None:
        """Remove the hook; the model is exactly as before. Safe to call twice."""
        self._capture.detach()

    def __enter__(self) -> AutoDeco:
        if not self._capture.attached:
            self._capture.attach()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __getattr__(self, name: str):
        # `autodeco.temperature_scale`, `autodeco.use_top_p_head`, ...: read from the validated settings.
        if name in DecodingSettings.__dataclass_fields__ and "settings" in self.__dict__:
            return getattr(self.settings, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- prediction --

    @property
    def trace(self) -> AutoDecoTrace:
        """Applied T and P of the latest generate call, `(steps, rows)` each."""
        if not self._steps:
            empty = torch.empty(0, 0)
            return AutoDecoTrace(empty, empty.clone())
        temperature = torch.stack([t for t, _ in self._steps]).cpu()
        top_p = torch.stack([p for _, p in self._steps]).cpu()
        return AutoDecoTrace(temperature, top_p)

    @torch.no_grad()
    def predict(self, hidden: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Applied `(T, P)`, each `(rows,)` fp32: head outputs, scaled, clamped, or 1 for a head off
        (what `autodeco_step` applies, without the filter)."""
        return self.settings.predict(self.heads, hidden, logits)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self._capture.attached:
            raise RuntimeError("this AutoDeco was closed; create a new one (or use it inside `with`).")
        # A new generate call starts at its prefill forward (seen by the capture's pre-hook); the length
        # check also catches a one-token prompt, whose prefill feeds a single position.
        if self._capture.take_prefill() or input_ids.shape[1] != self._next_length:
            self._start_generation()
        self._next_length = input_ids.shape[1] + 1
        hidden, logits = self._capture.take()  # (rows, H), (rows, V)
        if hidden.shape[0] != scores.shape[0]:
            raise RuntimeError(
                f"AutoDeco captured {hidden.shape[0]} rows but generate scores {scores.shape[0]}; "
                "this decoding mode scores several positions per forward and is not supported."
            )
        out, temperature, top_p = self._run_step(hidden, logits, scores)
        if self.record_trace:
            self._steps.append((temperature, top_p))  # device tensors: no copy, no wait per step
        return out

    @torch.no_grad()
    def _run_step(self, hidden: torch.Tensor, logits: torch.Tensor, scores: torch.Tensor):
        """`autodeco_step`, compiled when asked; a compile that fails falls back to eager for good."""
        try:
            return self._step(self.heads, self.settings, self.min_tokens_to_keep, hidden, logits, scores)
        except Exception as exc:  # noqa: BLE001 (any compiler failure: inductor, a missing C++ compiler, ...)
            if self._step is autodeco_step:
                raise
            # Eagerly first: bad input raises its own error here, exactly as without compile_step.
            result = autodeco_step(self.heads, self.settings, self.min_tokens_to_keep, hidden, logits, scores)
            self._step = autodeco_step
            self._warn_once(
                "compile",
                f"AutoDeco(compile_step=True) could not compile its step ({type(exc).__name__}: {exc}); "
                "running it eagerly. Pass compile_step=False to skip the attempt.",
            )
            return result

    def _start_generation(self) -> None:
        """First step of a generate call: reset the trace, check how generate will use us."""
        self._steps = []
        info = inspect_generate_call()
        if info is None:
            return
        if info.assisted:
            raise ValueError(
                "AutoDeco does not support assisted or prompt-lookup decoding: the target model scores "
                "several positions per forward, so the hidden state behind each score is ambiguous. "
                "Remove `assistant_model` / `prompt_lookup_num_tokens` from the generate call."
            )
        if not info.do_sample and info.num_beams == 1:
            self._warn_once(
                "greedy",
                "AutoDeco is used under greedy decoding (do_sample=False), where temperature and top-p "
                "change nothing. Pass do_sample=True (and top_k=None) to sample with AutoDeco.",
            )
        if info.extra_warpers:
            fix = ", ".join(
                f"{name}={'None' if name in ('top_k', 'min_p', 'typical_p') else '1.0'}" for name in info.extra_warpers
            )
            self._warn_once(
                "warpers",
                f"generate will apply {info.extra_warpers} after AutoDeco (from the call or "
                f"model.generation_config; do_sample=True adds top_k=50 by default). Pass {fix} to "
                "generate to sample with AutoDeco's T and P alone.",
            )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=4)


AutoDecoLogitsProcessor = AutoDeco
