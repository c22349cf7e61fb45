"""The authors' released configs (`model_type: "autodeco"`) read as the base model's config.

A released merged checkpoint's `config.json` is the base config plus `model_type: "autodeco"`,
`architectures: ["AutoDecoModelForCausalLM"]`, `base_model_type` and the head switches; its
weights are the base weights under `llm.*` plus the head tensors. transformers does not know the
type, so the plugin registers `ReleasedAutoDecoConfig` with `AutoConfig.register` (public API):
reading such a config returns an instance of the *base* config class (e.g. `LlamaConfig`, so
vLLM derives layers, heads, RoPE, ... exactly as for the base model) whose architecture is
`AutoDecoForCausalLM`.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.utils import logging as hf_logging

from autodeco_lp.vllm.options import ARCHITECTURE, RELEASED_HEAD_KEYS, RELEASED_MODEL_TYPE

_DROPPED = (*RELEASED_HEAD_KEYS, "model_type", "architectures", "auto_map", "transformers_version")


def base_architecture_for(model_type: str, where: str) -> str:
    """The causal-LM architecture transformers names for a base `model_type` (`llama` -> `LlamaForCausalLM`)."""
    arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if arch is None:
        raise ValueError(
            f"{where}: base_model_type {model_type!r} has no causal-LM architecture in transformers; pass "
            '`hf_overrides={"autodeco": {"base_architecture": "...ForCausalLM"}}` naming the vLLM architecture.'
        )
    return arch


@functools.cache
def _own_keys(model_type: str) -> frozenset[str] | None:
    """The keys a default config of `model_type` writes beyond every config's generic ones (None: the
    class cannot build one with its defaults, so it tells nothing)."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # defaults of some classes log warnings (token ids beyond the vocab, ...)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            keys = CONFIG_MAPPING[model_type]().to_dict().keys()
    except Exception:  # noqa: BLE001 - any of ~200 third-party classes; a failure only means "no evidence"
        return None
    finally:
        hf_logging.set_verbosity(verbosity)
    return frozenset(keys - PretrainedConfig().to_dict().keys())


def check_base_model_type(config_dict: dict[str, Any], base_type: str) -> None:
    """Refuse a `base_model_type` that the config's own keys contradict.

    The released config.json is the base model's config dict plus the AutoDeco keys, and Llama and Gemma
    name their weights alike: `base_model_type: "gemma"` on a Llama checkpoint would load and change the
    outputs. Evidence is taken only when it is unambiguous: the config's keys are exactly the keys that
    another causal-LM type writes, and not those of `base_type` (a config written by another transformers
    version matches no type exactly and passes, as before).
    """
    keys = frozenset(config_dict.keys() - set(_DROPPED) - PretrainedConfig().to_dict().keys())
    if _own_keys(base_type) in (None, keys):
        return
    claimed = CONFIG_MAPPING[base_type]
    matches = [
        other
        for other in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        if other in CONFIG_MAPPING and CONFIG_MAPPING[other] is not claimed and _own_keys(other) == keys
    ]
    if matches:
        foreign = sorted(keys - _own_keys(base_type))[:5]
        raise ValueError(
            f"config.json: `base_model_type` is {base_type!r}, but the config's keys are exactly those of a "
            f"{matches[0]!r} config ({foreign} are not {claimed.__name__} keys): the weights would load as "
            f"{base_type!r} and the outputs change. Set `base_model_type` to {matches[0]!r}, the model_type of "
            "the base model's own config.json."
        )


def base_config_from_released(config_dict: dict[str, Any], **kwargs: Any) -> PretrainedConfig:
    """The base model's config from a released AutoDeco `config.json` dict, architecture `AutoDecoForCausalLM`."""
    base_type = config_dict.get("base_model_type")
    if not base_type or base_type not in CONFIG_MAPPING:
        raise ValueError(
            f"a released AutoDeco config.json needs `base_model_type` naming a transformers model type, "
            f'but has {base_type!r}; add it (e.g. "llama", "qwen2") to the checkpoint\'s config.json.'
        )
    check_base_model_type(config_dict, base_type)
    base = {key: value for key, value in config_dict.items() if key not in _DROPPED}
    out = CONFIG_MAPPING[base_type].from_dict(base, **kwargs)
    config = out[0] if isinstance(out, tuple) else out  # from_dict(..., return_unused_kwargs=True)
    config.architectures = [ARCHITECTURE]
    config.autodeco = {"base_architecture": base_architecture_for(base_type, "config.json")}
    return out if isinstance(out, tuple) else config


class ReleasedAutoDecoConfig(PretrainedConfig):
    """Registered for `model_type: "autodeco"`; `from_dict` returns the base config (see the module docstring)."""

    model_type = RELEASED_MODEL_TYPE

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any):  # type: ignore[override]
        return base_config_from_released(config_dict, **kwargs)


def register_released_config() -> None:
    """Make `AutoConfig` read released AutoDeco configs (idempotent)."""
    AutoConfig.register(RELEASED_MODEL_TYPE, ReleasedAutoDecoConfig, exist_ok=True)
