"""The one place that reads a user's model: its output projection, and the hooks on it.

`OutputProjection.from_model` is how every part of the library turns final hidden states into the
logits the heads see (`lm_head` weight and bias, then the model's final softcap, read through
`config.get_text_config()` so that multimodal wrappers work too).

A forward hook on `model.get_output_embeddings()` (the `lm_head`) sees, at every forward, its
input (the final hidden state, after the last norm) and its output (the raw logits), for
exactly the rows that `generate` then hands to the logits processors. This works for any
Hugging Face causal LM, with KV cache, static cache, left padding and beam search (rows =
batch x beams), because it reads what `lm_head` reads instead of guessing at module names.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from autodeco_lp.inference.features import apply_softcap, final_logits


def _output_embeddings(model: nn.Module) -> nn.Module:
    lm_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(lm_head, nn.Module):
        raise TypeError(
            f"`model` ({type(model).__name__}) has no output embeddings (`get_output_embeddings()` "
            "returned None); AutoDeco needs a causal LM with an `lm_head`."
        )
    return lm_head


def final_logit_softcap(model: nn.Module) -> float | None:
    """The model's final logit soft-capping (Gemma 2/3), or None."""
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text_config, "final_logit_softcapping", None)


@dataclass(frozen=True)
class OutputProjection:
    """A model's `lm_head` as the heads see it: `projection(hidden (..., H)) -> logits (..., V)` fp32.

    Attributes:
        weight: `(V, H)` fp32 (a detached copy only when the model's weight is not fp32 already).
        bias: `(V,)` fp32 or None.
        softcap: the final logit softcap or None.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    softcap: float | None

    @classmethod
    def from_model(cls, model: nn.Module) -> OutputProjection:
        lm_head = _output_embeddings(model)
        bias = getattr(lm_head, "bias", None)
        return cls(
            weight=lm_head.weight.detach().float(),
            bias=bias.detach().float() if bias is not None else None,
            softcap=final_logit_softcap(model),
        )

    def to_float(self) -> OutputProjection:
        """The same projection with fp32 weight and bias (no copy when they are fp32 already)."""
        bias = self.bias.detach().float() if self.bias is not None else None
        return OutputProjection(self.weight.detach().float(), bias, self.softcap)

    @property
    def hidden_size(self) -> int:
        return self.weight.shape[1]

    @property
    def vocab_size(self) -> int:
        return self.weight.shape[0]

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return final_logits(hidden.to(self.weight.device), self.weight, self.bias, self.softcap)


def _remove_handles(handles: list) -> None:
    for handle in handles:
        handle.remove()


def _live_captures(lm_head: nn.Module) -> list[LMHeadCapture]:
    """The captures whose hooks are on `lm_head` now (alive and attached)."""
    found = []
    for hook in list(getattr(lm_head, "_forward_hooks", {}).values()):
        ref = getattr(hook, "autodeco_capture", None)
        capture = ref() if ref is not None else None
        if capture is not None and capture.attached:
            found.append(capture)
    return found


class LMHeadCapture:
    """Records the last position's hidden state and raw logits at each `lm_head` call, and whether
    the latest forward of the model started a new generation (a prefill).

    Attributes (after a forward):
        hidden: `(rows, H)` final hidden state of the last position, model dtype.
        logits: `(rows, V)` raw logits of the last position, before any logits processor
            (with the model's final logit soft-capping applied when it has one, e.g. Gemma).
        fresh: True from a forward until `take()` consumes it.
        prefill: True when the latest forward of the whole model was a prefill (see `_pre_forward`),
            until `take_prefill()` consumes it.

    Only tensors (and a constant flag) are stored in the hook, no counters, so a compiled model
    does not recompile every step; under compilation the tensors are cloned so that CUDA-graph
    buffers can be reused safely.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.lm_head = _output_embeddings(model)
        self.softcap = final_logit_softcap(model)
        self.hidden: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.fresh = False
        self.prefill = False
        self._handles: list = []
        self._finalizer: weakref.finalize | None = None

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> None:
        """Register the two hooks. They reach this capture through a weak reference, so a capture
        (and the processor owning it) that is garbage-collected without `detach()` is freed, and a
        finalizer then removes its hooks: nothing it held stays on the model."""
        if self._handles:
            return
        others = [c for c in _live_captures(self.lm_head) if c is not self]
        if others:
            warnings.warn(
                f"{len(others)} other AutoDeco processor(s) are still attached to this model (never closed); "
                "their hooks run at every forward and keep their last logits. Call `close()` on them, or use "
                "`with AutoDeco(...) as autodeco:`.",
                UserWarning,
                stacklevel=3,
            )
        ref = weakref.ref(self)

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            capture = ref()
            if capture is not None:
                capture._hook(module, args, kwargs, output)

        def pre_forward(module: nn.Module, args: tuple, kwargs: dict) -> None:
            capture = ref()
            if capture is not None:
                capture._pre_forward(module, args, kwargs)

        hook.autodeco_capture = pre_forward.autodeco_capture = ref
        self._handles = [
            self.lm_head.register_forward_hook(hook, with_kwargs=True),
            self.model.register_forward_pre_hook(pre_forward, with_kwargs=True),
        ]
        # Runs when this capture is collected without detach() (handles hold no reference to it).
        self._finalizer = weakref.finalize(self, _remove_handles, list(self._handles))

    def detach(self) -> None:
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer.detach()
            self._finalizer = None
        _remove_handles(self._handles)
        self._handles = []
        self.hidden = self.logits = None
        self.fresh = self.prefill = False

    def _pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Mark a prefill: a forward that feeds the model more than one position per row.

        `generate` runs its prefill eagerly (transformers 5.x `_prefill`) over the whole prompt and then
        one position per step, so a multi-position forward is the start of a generation. (A one-token
        prompt is the exception; the processor then also compares prompt lengths.) Compiled decode
        steps skip this hook body: they are never a prefill, and touching Python state there would
        recompile every step.
        """
        if torch.compiler.is_compiling():
            return
        inputs = kwargs.get("input_ids")
        if inputs is None:
            inputs = kwargs.get("inputs_embeds")
        if inputs is None and args:
            inputs = args[0]
        if isinstance(inputs, torch.Tensor) and inputs.dim() >= 2 and inputs.shape[1] > 1:
            self.prefill = True

    def take_prefill(self) -> bool:
        """Whether a prefill happened since the last call (then consumed)."""
        prefill, self.prefill = self.prefill, False
        return prefill

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        hidden = args[0] if args else next(iter(kwargs.values()))
        # (B, T, H) at prefill without logits_to_keep, (B, 1, H) otherwise: keep the last position.
        hidden = hidden[:, -1, :].detach()  # (B, H)
        logits = output[:, -1, :].detach()  # (B, V)
        logits = apply_softcap(logits, self.softcap)
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
