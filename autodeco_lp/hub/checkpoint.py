"""Saving and loading heads: the native format, and `read_heads` for every layout.

Native format (like a PEFT adapter): a folder with
- `autodeco_config.json`: the `AutoDecoConfig`, sorted and indented;
- `autodeco_heads.safetensors`: the head tensors under the released names, with the same
  config JSON in the file's metadata so that weights and config written by different saves
  are detected.

This module knows configs and tensors, never the `nn.Module`: `AutoDecoHeads.save_pretrained` and
`AutoDecoHeads.from_pretrained` (inference/heads.py) call `save_heads` / `read_heads`.

The rooms around it: source.py (local folder or Hub repo, path safety), layouts.py (one class per
layout read, in one registry), released_config.py (a released config.json as an `AutoDecoConfig`),
export.py (the released lightweight layout, and the checks on a save's target folder), files.py
(file names and checked single-file readers), publish.py (uploading heads to the Hub).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from autodeco_lp.hub.atomic import Writer, write_files_atomically, write_text
from autodeco_lp.hub.config import AutoDecoConfig
from autodeco_lp.hub.export import export_official, refuse_other_layouts, save_target
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
)
from autodeco_lp.hub.layouts import detect_layout
from autodeco_lp.hub.source import open_source

# The names other modules import from here (the format's file names, the released names' parser, the export).
__all__ = [
    "CONFIG_NAME",
    "LEGACY_BIN_NAME",
    "METADATA_CONFIG_KEY",
    "OFFICIAL_CONFIG_NAME",
    "OFFICIAL_INDEX_NAME",
    "OFFICIAL_WEIGHTS_NAME",
    "WEIGHTS_NAME",
    "export_official",
    "head_tensor_name",
    "heads_writers",
    "read_heads",
    "save_heads",
]


def save_heads(config: AutoDecoConfig, state_dict: dict[str, torch.Tensor], save_directory: str | os.PathLike) -> Path:
    """Write heads (`config` + their `state_dict`) in the native format. Never leaves a half-written
    file in place of a good one (see `atomic.write_files_atomically`)."""
    folder = save_target(save_directory, (WEIGHTS_NAME, CONFIG_NAME))
    refuse_other_layouts(folder, (OFFICIAL_INDEX_NAME, LEGACY_BIN_NAME), "native")
    official = folder / OFFICIAL_CONFIG_NAME
    if official.is_file() and is_autodeco_config(official):
        refuse_other_layouts(folder, (OFFICIAL_CONFIG_NAME,), "native")
    # Over an existing save the old config is moved away first, then the weights are replaced, then
    # the new config is put in place: a kill at any point leaves the old or the new weights, each
    # with the config embedded in them (what `read_heads` uses when the config file is absent).
    return write_files_atomically(folder, heads_writers(config, state_dict), commit=CONFIG_NAME)


def heads_writers(config: AutoDecoConfig, state_dict: dict[str, torch.Tensor]) -> dict[str, Writer]:
    """`{file name: writer(path)}` of the native format (weights with the config embedded, then the
    config). `save_heads` runs them atomically; a caller staging a whole folder runs them itself."""
    config_json = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    # Contiguous CPU copies: safetensors refuses views and device tensors.
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state_dict.items()}
    metadata = {"format": "pt", METADATA_CONFIG_KEY: config_json}
    return {
        WEIGHTS_NAME: lambda tmp: save_file(tensors, str(tmp), metadata=metadata),
        CONFIG_NAME: lambda tmp: write_text(tmp, config_json),
    }


def read_heads(
    path_or_repo_id: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | None = None,
    token: str | bool | None = None,
    base_model_name_or_path: str | None = None,
) -> tuple[AutoDecoConfig, dict[str, torch.Tensor]]:
    """Read heads in the native format or any released variant: `(config, tensors)`, checked.

    The tensors are exactly `config.tensor_shapes()` (names and shapes), finite, floating point,
    in the dtype stored on disk; `AutoDecoHeads.from_pretrained` builds the module from them.

    Only the files of one layout are read, all inside the folder (see `layouts.py`); a folder holding
    two layouts, or two candidate weight files, is refused with the candidates listed.

    Args:
        path_or_repo_id: a local folder, or a Hub repo id resolved with huggingface_hub. A name
            that is neither (no such folder, and no such repo or the Hub unreachable with nothing
            of it cached) fails at once, naming both.
        revision: Hub branch, tag or commit.
        cache_dir: huggingface_hub cache folder (defaults to `HF_HUB_CACHE`).
        token: Hub token for private repos.
        base_model_name_or_path: overrides the base model recorded in the checkpoint (released
            configs often record a private path of the trainer).

    Raises:
        ValueError: naming the file and what to do when nothing loadable is found, tensors are
            missing or unexpected, weights hold NaN/inf or are not floating point, a file is
            truncated, a file lies outside the folder, the layout is ambiguous, or config and
            weights disagree.
    """
    source = open_source(path_or_repo_id, revision, cache_dir, token)
    layout = detect_layout(source)
    config, tensors = layout.read()
    if base_model_name_or_path is not None:
        config.base_model_name_or_path = base_model_name_or_path
    return config, _checked_tensors(config, tensors, source.description, strict=layout.strict)


def _checked_tensors(
    config: AutoDecoConfig, tensors: dict[str, torch.Tensor], where: str, strict: bool
) -> dict[str, torch.Tensor]:
    """The tensors `config` describes, after checking names, shapes and values."""
    expected = config.tensor_shapes()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        raise ValueError(
            f"{where} is missing head tensors {missing}; the checkpoint is incomplete or for another configuration."
        )
    if unexpected and strict:
        raise ValueError(f"{where} has unexpected tensors {unexpected}; the config does not describe these weights.")
    for name, value in expected.items():
        got = tensors[name]
        if tuple(got.shape) != value:
            raise ValueError(
                f"{where}: tensor {name} has shape {tuple(got.shape)}, expected {value} "
                f"for hidden_size={config.hidden_size}; config and weights disagree."
            )
        if not torch.isfinite(got.float()).all():
            raise ValueError(
                f"{where}: tensor {name} holds NaN or inf values; the checkpoint is corrupt (retrain or re-download)."
            )
    return {name: tensors[name] for name in expected}
