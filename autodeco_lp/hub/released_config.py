"""The `AutoDecoConfig` of a released checkpoint: switches from its `config.json`, shapes from its tensors.

Released configs inline the whole base config and use several spellings: `enable_temperature_head`
or the older `train_temp` (and `enable_top_p_head` / `train_top_p`), `hidden_size` at the top or in
`text_config`, the base model under `base_model_name_or_path` or `_name_or_path`.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from autodeco_lp.hub.config import DEFAULT_MLP_HIDDEN_SIZE, NUM_STATISTICS, AutoDecoConfig


def config_from_released(raw: dict[str, Any], tensors: dict[str, torch.Tensor], where: str) -> AutoDecoConfig:
    """Build an `AutoDecoConfig` for a released checkpoint. Tensors of a head the config disables are
    dropped from `tensors` (with a warning)."""
    text_config = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else {}

    def flag(*names: str, default: bool) -> bool:
        for name in names:
            if name in raw:
                if not isinstance(raw[name], bool):  # "false" would read as True
                    raise ValueError(f"{where}: `{name}` in the config has to be true or false, but is {raw[name]!r}.")
                return raw[name]
        return default

    def number(name: str) -> int | None:
        value = raw.get(name)
        if value is None:
            value = text_config.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}: `{name}` in the config has to be a positive integer, but is {value!r}.")
        return value

    has_temp = any(k.startswith("temp_head.") for k in tensors)
    has_top_p = any(k.startswith("top_p_head.") for k in tensors)
    enable_temp = flag("enable_temperature_head", "train_temp", default=has_temp)
    enable_top_p = flag("enable_top_p_head", "train_top_p", default=has_top_p)
    for enabled, present, name in ((enable_temp, has_temp, "temp_head"), (enable_top_p, has_top_p, "top_p_head")):
        if present and not enabled:
            warnings.warn(f"{where}: the config disables {name}; its tensors are ignored.", UserWarning, stacklevel=3)
            for key in [k for k in tensors if k.startswith(name + ".")]:
                del tensors[key]
    use_enhanced = flag("use_enhanced_features", default=True)

    # The first layer's weight is (mlp_hidden, in): in = H for the temperature head, H + 1 (+ the
    # statistics with enhanced features) for the top-p head.
    if "temp_head.mlp.0.weight" in tensors:
        mlp_hidden, hidden_size = tensors["temp_head.mlp.0.weight"].shape
    elif "top_p_head.mlp.0.weight" in tensors:
        mlp_hidden, top_p_in = tensors["top_p_head.mlp.0.weight"].shape
        hidden_size = top_p_in - 1 - (NUM_STATISTICS if use_enhanced else 0)
    else:
        hidden_size, mlp_hidden = number("hidden_size"), DEFAULT_MLP_HIDDEN_SIZE
    if hidden_size is None:
        raise ValueError(f"{where}: cannot tell the hidden size (no temp_head/top_p_head first-layer weight).")
    declared = number("hidden_size")
    if declared is not None and int(declared) != int(hidden_size):
        raise ValueError(
            f"{where}: config.json says hidden_size={declared} but the head tensors have width {hidden_size}; "
            "config and weights come from different models."
        )
    vocab = number("vocab_size")
    base = raw.get("base_model_name_or_path") or raw.get("_name_or_path") or None
    if base is not None and not isinstance(base, str):
        raise ValueError(f"{where}: `base_model_name_or_path` in the config has to be a string, but is {base!r}.")
    return AutoDecoConfig(
        hidden_size=int(hidden_size),
        vocab_size=int(vocab) if vocab is not None else None,
        enable_temperature_head=enable_temp,
        enable_top_p_head=enable_top_p,
        use_enhanced_features=use_enhanced,
        mlp_hidden_size=int(mlp_hidden),
        base_model_name_or_path=base,
    )
