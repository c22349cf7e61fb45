"""`heads/registry.json`: which heads belong to which base model.

Matching is on the model's `name_or_path`: the Hub id itself, a local folder whose name is the
repo name (`.../Llama-3.1-Nemotron-Nano-8B-v1`), or a huggingface_hub cache snapshot
(`.../models--org--name/snapshots/<commit>`). Case-insensitive.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from torch import nn

REGISTRY_PACKAGE = "autodeco_lp.shipped_heads"
REGISTRY_NAME = "registry.json"
_HUB_CACHE_PATTERN = re.compile(r"models--([^/\\]+)--([^/\\]+)")


@dataclass(frozen=True)
class RegistryEntry:
    heads: str  # Hub repo id, or an absolute folder for heads shipped in this package
    base_model: str


def registry_dir() -> Path:
    return Path(str(resources.files(REGISTRY_PACKAGE)))


def load_registry() -> list[RegistryEntry]:
    root = registry_dir()
    data = json.loads((root / REGISTRY_NAME).read_text(encoding="utf-8"))
    entries = []
    for item in data["heads"]:
        heads = str(root / item["heads"]) if item.get("local") else item["heads"]
        entries.append(RegistryEntry(heads=heads, base_model=item["base_model"]))
    return entries


def _names_of(name_or_path: str) -> set[str]:
    """Ways `name_or_path` can spell a base model: itself, its last component, `org/name` from a cache path."""
    text = name_or_path.strip().rstrip("/\\")
    names = {text.lower(), Path(text).name.lower()}
    match = _HUB_CACHE_PATTERN.search(text)
    if match:
        names.add(f"{match.group(1)}/{match.group(2)}".lower())
        names.add(match.group(2).lower())
    return {name for name in names if name}


def find_heads(name_or_path: str) -> RegistryEntry | None:
    wanted = _names_of(name_or_path)
    for entry in load_registry():
        base = entry.base_model.lower()
        if base in wanted or base.split("/")[-1] in wanted:
            return entry
    return None


FROM_PRETRAINED = "AutoDeco.from_pretrained(model, 'path/or/hub-id')"


def resolve_heads(name: str, how: str = "--heads DIR_OR_HUB_ID") -> str:
    """The heads id (Hub id or shipped folder) registered for the base model `name` (a Hub id, or a
    folder named like one), or a ValueError listing the known pairs, with `how` to pass heads instead."""
    entry = find_heads(name) if name else None
    if entry is None:
        pairs = "\n".join(f"  {e.base_model}  ->  {e.heads}" for e in load_registry())
        raise ValueError(
            f"no registered AutoDeco heads for model {name!r}. Pass the heads explicitly ({how}), "
            f"or use one of the known pairs (base model -> heads):\n{pairs}"
        )
    return entry.heads


def resolve_heads_for_model(model: nn.Module, how: str = "--heads DIR_OR_HUB_ID") -> str:
    """`resolve_heads` for a loaded model, by its `name_or_path` (`how`: the fix the error names;
    the command-line option by default, `FROM_PRETRAINED` for Python callers)."""
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", "")
    return resolve_heads(name, how)
