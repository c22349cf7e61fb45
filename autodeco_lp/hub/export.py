"""Writing heads in the released lightweight layout (`export_official`), and the checks every save
makes on its target folder (shared with the native save in checkpoint.py).

A save never replaces what is not a checkpoint of ours: a folder entry under one of our file
names, a base model's `config.json` / `model.safetensors`, or another layout's files (a folder
holding two layouts would no longer load).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from autodeco_lp.hub.atomic import write_files_atomically, write_text
from autodeco_lp.hub.config import AutoDecoConfig
from autodeco_lp.hub.files import (
    CONFIG_NAME,
    LEGACY_BIN_NAME,
    METADATA_CONFIG_KEY,
    OFFICIAL_CONFIG_NAME,
    OFFICIAL_INDEX_NAME,
    OFFICIAL_WEIGHTS_NAME,
    WEIGHTS_NAME,
    head_tensor_name,
    is_autodeco_config,
    safetensors_header,
)


def save_target(path: str | os.PathLike, names: tuple[str, ...]) -> Path:
    """The folder to save into; refuses an empty path (it would mean the current folder) and
    entries with our file names that are not files (a user's folder is never replaced)."""
    if not os.fspath(path).strip():
        raise ValueError("the save path is empty; pass a folder ('.' for the current folder).")
    folder = Path(path)
    for name in names:
        entry = folder / name
        if entry.exists() and not entry.is_symlink() and not entry.is_file():
            raise ValueError(f"{entry} exists and is not a file; move it away before saving here.")
    return folder


def refuse_other_layouts(folder: Path, names: tuple[str, ...], layout: str) -> None:
    """Saving one layout next to another would leave a folder that no longer loads (ambiguous)."""
    present = [name for name in names if (folder / name).exists() or (folder / name).is_symlink()]
    if present:
        raise ValueError(
            f"{folder} already holds another checkpoint layout ({', '.join(present)}); writing the {layout} "
            "layout next to it would make the folder ambiguous. Write into another folder."
        )


def export_official(
    config: AutoDecoConfig,
    state_dict: dict[str, torch.Tensor],
    out_dir: str | os.PathLike,
    base_config: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Write the released lightweight layout (`config.json` + `model.safetensors`).

    This is what the authors' vLLM fork reads. `base_config` is the base model's config dict
    (`model.config.to_dict()`); the released files inline it, and the fork needs it to build
    the base model. Heads are stored in `dtype` (bf16, as released).
    """
    cfg = config
    folder = save_target(out_dir, (OFFICIAL_WEIGHTS_NAME, OFFICIAL_CONFIG_NAME))
    _refuse_foreign_release_files(folder)
    released: dict[str, Any] = dict(base_config or {})
    released.update(
        {
            "model_type": "autodeco",
            "architectures": ["AutoDecoModelForCausalLM"],
            "base_model_type": (base_config or {}).get("model_type"),
            "base_model_name_or_path": cfg.base_model_name_or_path,
            "enable_temperature_head": cfg.enable_temperature_head,
            "enable_top_p_head": cfg.enable_top_p_head,
            "use_enhanced_features": cfg.use_enhanced_features,
            # In the released configs these two hold the base hidden size H (the heads' input).
            "temperature_hidden_size": cfg.hidden_size,
            "top_p_hidden_size": cfg.hidden_size,
            "hidden_size": cfg.hidden_size,
        }
    )
    if cfg.vocab_size is not None:
        released["vocab_size"] = cfg.vocab_size
    tensors = {name: t.detach().to("cpu", dtype).contiguous() for name, t in state_dict.items()}
    text = json.dumps(released, indent=2, sort_keys=True, default=str) + "\n"
    # Our config rides along in the weights' metadata (the fork ignores it): a kill between the
    # renames (config.json moved away first, put back last) leaves weights that still load as themselves.
    metadata = {"format": "pt", METADATA_CONFIG_KEY: json.dumps(cfg.to_dict(), indent=2, sort_keys=True)}
    return write_files_atomically(
        folder,
        {
            OFFICIAL_WEIGHTS_NAME: lambda tmp: save_file(tensors, str(tmp), metadata=metadata),
            OFFICIAL_CONFIG_NAME: lambda tmp: write_text(tmp, text),
        },
        commit=OFFICIAL_CONFIG_NAME,
    )


def _refuse_foreign_release_files(folder: Path) -> None:
    """`config.json` / `model.safetensors` are common names (a base model's files): replace them only
    when they are an AutoDeco export's."""
    config_path, weights_path = folder / OFFICIAL_CONFIG_NAME, folder / OFFICIAL_WEIGHTS_NAME
    refuse_other_layouts(folder, (CONFIG_NAME, WEIGHTS_NAME, OFFICIAL_INDEX_NAME, LEGACY_BIN_NAME), "lightweight")
    if config_path.is_file():
        if not is_autodeco_config(config_path):
            raise ValueError(
                f"{config_path} exists and is not an AutoDeco config (model_type 'autodeco'); exporting here "
                "would replace it. Export into another folder."
            )
    if weights_path.is_file():
        try:
            keys = safetensors_header(weights_path)[0]
        except ValueError:
            keys = ["?"]
        foreign = [key for key in keys if head_tensor_name(key) is None]
        if foreign:
            raise ValueError(
                f"{weights_path} exists and holds tensors that are not AutoDeco heads ({foreign[:3]}...); "
                "exporting here would replace it. Export into another folder."
            )
