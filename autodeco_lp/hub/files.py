"""The file names of every head checkpoint layout, and checked readers of one file.

Every reader here turns a broken file (truncated, not UTF-8, not the expected JSON type, integer
weights) into a `ValueError` naming the file and the fix; the layouts (layouts.py) and the native
save (checkpoint.py) build on them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from autodeco_lp.hub.config import AutoDecoConfig

# The native layout (a PEFT-like folder of our own).
CONFIG_NAME = "autodeco_config.json"
WEIGHTS_NAME = "autodeco_heads.safetensors"
# The released layouts: lightweight (`config.json` + `model.safetensors`), merged (index + shards), legacy.
OFFICIAL_CONFIG_NAME = "config.json"
OFFICIAL_WEIGHTS_NAME = "model.safetensors"
OFFICIAL_INDEX_NAME = "model.safetensors.index.json"
LEGACY_BIN_NAME = "autodeco_heads.bin"
# Every file name a layout is recognised by (what a Hub cache must hold for a repo to be loadable offline).
KNOWN_NAMES = (
    CONFIG_NAME,
    WEIGHTS_NAME,
    OFFICIAL_CONFIG_NAME,
    OFFICIAL_WEIGHTS_NAME,
    OFFICIAL_INDEX_NAME,
    LEGACY_BIN_NAME,
)
# Safetensors metadata key holding the config JSON of the same save.
METADATA_CONFIG_KEY = "autodeco_config"

HEAD_PREFIXES = ("temp_head.", "top_p_head.")
# Wrappers seen in the wild around the head names, stripped (repeatedly) before matching.
WRAPPER_PREFIXES = ("module.", "adapter.", "model.")


def head_tensor_name(key: str) -> str | None:
    """`module.adapter.temp_head.mlp.0.weight` -> `temp_head.mlp.0.weight`; None for non-head keys."""
    changed = True
    while changed and not key.startswith(HEAD_PREFIXES):
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key if key.startswith(HEAD_PREFIXES) else None


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; anything else (invalid, not UTF-8, too deep, not an object) is refused."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); re-export or re-download it.") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); re-export or re-download it."
        ) from exc
    except RecursionError as exc:
        raise ValueError(f"{path} is nested too deeply to be a config; re-export or re-download it.") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, expected an object.")
    return data


def is_autodeco_config(path: Path) -> bool:
    """Whether the JSON file at `path` is an AutoDeco export's `config.json` (`model_type` autodeco);
    unreadable or not a mapping: False."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("model_type") == "autodeco"
    except (ValueError, AttributeError):
        return False


def config_from_json(text: str, where: str) -> AutoDecoConfig:
    """The `AutoDecoConfig` of a config JSON embedded in a weights file's metadata."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: the embedded config is not valid JSON ({exc}); save the heads again.") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{where}: the embedded config is not a JSON object; save the heads again.")
    return AutoDecoConfig.from_dict(data, source=where)


def safetensors_header(path: Path) -> tuple[list[str], dict[str, str]]:
    """Tensor names and metadata of `path`, reading its header only."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys()), f.metadata() or {}
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(
            f"cannot read {path}: {exc}. The file is truncated or not a safetensors file; save or download it again."
        ) from exc


def read_safetensors(
    path: Path, keep: Callable[[str], bool] = lambda key: True
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read the tensors of `path` whose names pass `keep` (others are never read), and its metadata."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys() if keep(key)}
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(
            f"cannot read {path}: {exc}. The file is truncated or not a safetensors file; save or download it again."
        ) from exc
    check_floating(tensors, path)
    return tensors, metadata


def check_floating(tensors: dict[str, Any], path: Path) -> None:
    """Head weights are floating point; an integer or boolean tensor means a foreign or broken file."""
    for key, value in tensors.items():
        if torch.is_tensor(value) and not value.is_floating_point():
            raise ValueError(
                f"{path}: tensor {key} has dtype {value.dtype}; head weights are floating point. The file is "
                "not an AutoDeco checkpoint or was written wrongly; save or download it again."
            )


def embedded_config(path: Path) -> str | None:
    """The config JSON our saves embed in the weights' metadata, or None."""
    return safetensors_header(path)[1].get(METADATA_CONFIG_KEY)


def holds_heads(path: Path) -> bool:
    """Whether the safetensors file at `path` names any head tensor (header only)."""
    return any(head_tensor_name(key) is not None for key in safetensors_header(path)[0])


def head_tensors_from(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The head tensors of `path` under their plain names, and the file's metadata (one read; the
    file's other tensors, e.g. a merged shard's base weights, are never read)."""
    tensors, metadata = read_safetensors(path, keep=lambda key: head_tensor_name(key) is not None)
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        name = head_tensor_name(key)
        if name in out:
            raise ValueError(f"{path} holds head tensor {name} twice (as {key!r} and another wrapped name).")
        out[name] = value
    return out, metadata
