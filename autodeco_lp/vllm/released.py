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

from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

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


def base_config_from_released(config_dict: dict[str, Any], **kwargs: Any) -> PretrainedConfig:
    """The base model's config from a released AutoDeco `config.json` dict, architecture `AutoDecoForCausalLM`."""
    base_type = config_dict.get("base_model_type")
    if not base_type or base_type not in CONFIG_MAPPING:
        raise ValueError(
            f"a released AutoDeco config.json needs `base_model_type` naming a transformers model type, "
            f'but has {base_type!r}; add it (e.g. "llama", "qwen2") to the checkpoint\'s config.json.'
        )
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
