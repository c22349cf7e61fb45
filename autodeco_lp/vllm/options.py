"""What the AutoDeco model reads from vLLM's config: the `autodeco` block of `hf_overrides`.

```
vllm serve BASE --hf-overrides '{"architectures": ["AutoDecoForCausalLM"],
                                 "autodeco": {"heads": "DIR or org/name", "temperature_scale": 1.0}}'
```

Keys of the `autodeco` block (all optional):
- `heads`: folder or Hub id of the heads (native or released). Default: the model itself when it
  is a released merged/lightweight checkpoint (`model_type: "autodeco"`), else the heads that
  `heads/registry.json` registers for the base model.
- `revision`: Hub revision of `heads`.
- `base_architecture`: the vLLM architecture to wrap (e.g. `"LlamaForCausalLM"`). Default: the
  `architectures` of the model's own `config.json` (read again, since `hf_overrides` replaced them).
- `record_trace`: keep every sampled token's T and P in the worker (`autodeco_lp.vllm.pop_trace`).
- `trace_max_tokens`: at most this many (T, P) pairs held between two `pop_trace` calls (default 10
  million); beyond it the oldest requests are dropped with a warning.
- the `DecodingSettings` fields (`temperature_scale`, `top_p_scale`, `min_temperature`,
  `max_temperature`, `min_top_p`, `max_top_p`, `use_temperature_head`, `use_top_p_head`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from autodeco_lp.inference.settings import DecodingSettings, check_bool

ARCHITECTURE = "AutoDecoForCausalLM"
# The architecture name in the authors' released configs (merged and lightweight).
RELEASED_ARCHITECTURE = "AutoDecoModelForCausalLM"
RELEASED_MODEL_TYPE = "autodeco"
OVERRIDES_KEY = "autodeco"
# Keys of the released config.json that describe the heads, not the base model.
RELEASED_HEAD_KEYS = (
    "base_model_type",
    "base_model_name_or_path",
    "enable_temperature_head",
    "enable_top_p_head",
    "use_enhanced_features",
    "temperature_hidden_size",
    "top_p_hidden_size",
    "train_temp",
    "train_top_p",
)
_OWN_KEYS = ("heads", "revision", "base_architecture", "record_trace", "trace_max_tokens")
DEFAULT_TRACE_MAX_TOKENS = 10_000_000  # (T, P) pairs held between two pop_trace calls: 80 MB


@dataclass(frozen=True)
class AutoDecoVllmOptions:
    heads: str | None = None
    revision: str | None = None
    base_architecture: str | None = None
    record_trace: bool = False
    trace_max_tokens: int = DEFAULT_TRACE_MAX_TOKENS
    settings: DecodingSettings = field(default_factory=DecodingSettings)

    @classmethod
    def from_hf_config(cls, hf_config: Any) -> AutoDecoVllmOptions:
        return cls.from_block(getattr(hf_config, OVERRIDES_KEY, None))

    @classmethod
    def from_block(cls, raw: Any) -> AutoDecoVllmOptions:
        """From the `autodeco` block of `hf_overrides` (None: every default), validated."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ValueError(
                f'`hf_overrides["{OVERRIDES_KEY}"]` has to be a JSON object, but is {raw!r}; pass e.g. '
                f'{{"architectures": ["{ARCHITECTURE}"], "{OVERRIDES_KEY}": {{"heads": "path/or/org-name"}}}}'
            )
        own = {key: raw[key] for key in _OWN_KEYS if key in raw}
        for key in ("heads", "revision", "base_architecture"):
            if own.get(key) is not None and not isinstance(own[key], str):
                raise ValueError(f'`hf_overrides["{OVERRIDES_KEY}"]["{key}"]` has to be a string, but is {own[key]!r}')
        max_tokens = own.get("trace_max_tokens", DEFAULT_TRACE_MAX_TOKENS)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(
                f'`hf_overrides["{OVERRIDES_KEY}"]["trace_max_tokens"]` has to be a positive int, but is '
                f"{max_tokens!r}; it caps the (T, P) pairs a trace holds between two pop_trace calls."
            )
        rest = {key: value for key, value in raw.items() if key not in _OWN_KEYS}
        settings = DecodingSettings.from_dict(rest, where=f'`hf_overrides["{OVERRIDES_KEY}"]`')
        return cls(
            heads=own.get("heads"),
            revision=own.get("revision"),
            base_architecture=own.get("base_architecture"),
            record_trace=check_bool(f'hf_overrides["{OVERRIDES_KEY}"]["record_trace"]', own.get("record_trace", False)),
            trace_max_tokens=max_tokens,
            settings=settings,
        )


def hf_overrides(heads: str | None = None, **options: Any) -> dict[str, Any]:
    """The `hf_overrides` dict that serves a base model with AutoDeco heads, for `vllm.LLM(...)`.

    `options` are the keys of the `autodeco` block (see this module's docstring); they are
    validated here so a typo fails before the engine starts.
    """
    block = {key: value for key, value in options.items() if value is not None}
    if heads is not None:
        block["heads"] = str(heads)

    AutoDecoVllmOptions.from_block(block)  # the same parser the model uses
    return {"architectures": [ARCHITECTURE], OVERRIDES_KEY: block}
