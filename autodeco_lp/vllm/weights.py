"""The base model's weights from a checkpoint's weight stream, checked: complete and unambiguous.

A merged checkpoint stores the base weights as `llm.<name>` next to the head tensors; a base model
stores them as `<name>`. vLLM 0.32's loader checks that every parameter was loaded, but exempts every
module with a quantization method, which includes the plain linear layers of an unquantized model: a
merged checkpoint missing `llm.model.layers.1.mlp.down_proj.weight` would serve with that weight
uninitialised. And a checkpoint holding both `llm.model.norm.weight` and `model.norm.weight` names one
parameter twice: the later copy would silently win. Both are refused here, naming the tensor.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from autodeco_lp.hub.checkpoint import head_tensor_name

BASE_PREFIX = "llm."
_SHOWN = 5  # names quoted in a message
_FIX = "re-download or re-export the checkpoint (with every shard its model.safetensors.index.json lists)"


class BaseWeights:
    """Iterates the base model's `(name, tensor)` pairs of a weight stream: `llm.` stripped, head
    tensors skipped (the heads are read by `AutoDecoHeads.from_pretrained`), a base name given twice
    refused. `checkpoint_names` maps each base name seen to the name the checkpoint used."""

    def __init__(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        self._weights = weights
        self.checkpoint_names: dict[str, str] = {}

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in self._weights:
            if head_tensor_name(name) is not None:
                continue
            base = name.removeprefix(BASE_PREFIX)
            if base in self.checkpoint_names:
                first = self.checkpoint_names[base]
                twice = f"{name!r} twice" if first == name else f"both {first!r} and {name!r}"
                raise ValueError(
                    f"the checkpoint holds {twice}: two tensors for the base model's {base!r}, and which one "
                    f"vLLM keeps depends on the file order. Keep one (a merged checkpoint names every base "
                    f"weight `{BASE_PREFIX}<name>`) or {_FIX}."
                )
            self.checkpoint_names[base] = name
            yield base, tensor

    def checkpoint_name(self, base: str) -> str:
        """The name a missing base tensor would have had in this checkpoint (`llm.` when it uses it)."""
        merged = any(name.startswith(BASE_PREFIX) for name in self.checkpoint_names.values())
        return BASE_PREFIX + base if merged else base


def packed_shards(model: nn.Module, param: str) -> list[str]:
    """The checkpoint names of a packed parameter's shards (`...qkv_proj.weight` -> `...q_proj.weight`,
    `...k_proj.weight`, `...v_proj.weight`, from the model's `packed_modules_mapping`); [] if not packed."""
    mapping = getattr(model, "packed_modules_mapping", None) or {}
    module, _, leaf = param.rpartition(".")
    parent, _, packed = module.rpartition(".")
    prefix = f"{parent}." if parent else ""
    return [f"{prefix}{shard}.{leaf}" for shard in mapping.get(packed, ())]


def check_complete(model: nn.Module, loaded: set[str], stream: BaseWeights) -> None:
    """Refuse a checkpoint that left a parameter of `model` (the base model) unloaded.

    `loaded`: the parameter names `model.load_weights` reports. A packed parameter (q, k and v in one
    `qkv_proj`) counts as loaded once any shard arrived, so when the checkpoint names shards, each
    must be there; a checkpoint that names none (packed or otherwise renamed tensors) is left to the
    parameter check.
    """
    missing = sorted({name for name, _ in model.named_parameters()} - loaded)
    for param in sorted(loaded):
        shards = packed_shards(model, param)
        if any(shard in stream.checkpoint_names for shard in shards):
            missing += [shard for shard in shards if shard not in stream.checkpoint_names]
    if missing:
        names = [stream.checkpoint_name(name) for name in missing]
        more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
        raise ValueError(
            f"the checkpoint has no tensor {', '.join(map(repr, names[:_SHOWN]))}{more}: vLLM would serve "
            f"{'that weight' if len(names) == 1 else 'those weights'} uninitialised. The checkpoint is "
            f"incomplete; {_FIX}."
        )


def load_base_weights(model: nn.Module, weights: Iterable[tuple[str, torch.Tensor]], check: bool) -> set[str] | None:
    """Load the base weights of `weights` into `model` (vLLM's `load_weights`); the names it loaded.

    `check`: refuse an incomplete checkpoint (off for quantized models, whose parameters a checkpoint
    need not carry one for one; vLLM checks those itself).
    """
    stream = BaseWeights(weights)
    loaded = model.load_weights(stream)
    if check and loaded is not None:
        check_complete(model, set(loaded), stream)
    return loaded
