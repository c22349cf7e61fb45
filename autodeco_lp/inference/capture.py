"""The one place that registers hooks on a user's model.

A forward hook on `model.get_output_embeddings()` (the `lm_head`) sees, at every forward, its
input (the final hidden state, after the last norm) and its output (the raw logits), for
exactly the rows that `generate` then hands to the logits processors. This works for any
Hugging Face causal LM, with KV cache, static cache, left padding and beam search (rows =
batch x beams), because it reads what `lm_head` reads instead of guessing at module names.
"""

from __future__ import annotations

import torch
from torch import nn


class LMHeadCapture:
    """Records the last position's hidden state and raw logits at each `lm_head` call.

    Attributes (after a forward):
        hidden: `(rows, H)` final hidden state of the last position, model dtype.
        logits: `(rows, V)` raw logits of the last position, before any logits processor
            (with the model's final logit soft-capping applied when it has one, e.g. Gemma).
        fresh: True from a forward until `take()` consumes it.

    Only tensors (and a constant flag) are stored in the hook, no counters, so a compiled model
    does not recompile every step; under compilation the tensors are cloned so that CUDA-graph
    buffers can be reused safely.
    """

    def __init__(self, model: nn.Module) -> None:
        lm_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if not isinstance(lm_head, nn.Module):
            raise TypeError(
                f"`model` ({type(model).__name__}) has no output embeddings (`get_output_embeddings()` "
                "returned None); AutoDeco needs a causal LM with an `lm_head`."
            )
        self.lm_head = lm_head
        text_config = model.config.get_text_config() if hasattr(model, "config") else None
        self.softcap = getattr(text_config, "final_logit_softcapping", None)
        self.hidden: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.fresh = False
        self._handle = None

    @property
    def attached(self) -> bool:
        return self._handle is not None

    def attach(self) -> None:
        if self._handle is None:
            self._handle = self.lm_head.register_forward_hook(self._hook, with_kwargs=True)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.hidden = self.logits = None
        self.fresh = False

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        hidden = args[0] if args else next(iter(kwargs.values()))
        # (B, T, H) at prefill without logits_to_keep, (B, 1, H) otherwise: keep the last position.
        hidden = hidden[:, -1, :].detach()  # (B, H)
        logits = output[:, -1, :].detach()  # (B, V)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        if torch.compiler.is_compiling():
            # Inside a compiled (possibly CUDA-graph) forward the buffers are reused by the next
            # replay: keep our own copies. Eager outputs are fresh tensors and need no copy.
            hidden, logits = hidden.clone(), logits.clone()
        self.hidden, self.logits = hidden, logits
        self.fresh = True

    def take(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return `(hidden (rows, H), logits (rows, V))` of the latest forward, once."""
        if not self.fresh or self.hidden is None or self.logits is None:
            raise RuntimeError(
                "AutoDeco was called without a new forward of its model since its last call. This happens "
                "with assisted or prompt-lookup decoding (several positions scored per forward, or another "
                "model's forward), or when the processor is passed to a different model's generate. "
                "Use plain sampling with this model, or drop AutoDeco for this call."
            )
        self.fresh = False
        return self.hidden, self.logits
