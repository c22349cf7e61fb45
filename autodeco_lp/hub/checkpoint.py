"""Saving and loading heads: the native format, every released variant, and Hub resolution.

Native format (like a PEFT adapter): a folder with
- `autodeco_config.json`: the `AutoDecoConfig`, sorted and indented;
- `autodeco_heads.safetensors`: the head tensors under the released names, with the same
  config JSON in the file's metadata so that weights and config written by different saves
  are detected.

This module knows configs and tensors, never the `nn.Module`: `AutoDecoHeads.save_pretrained` and
`AutoDecoHeads.from_pretrained` (inference/heads.py) call `save_heads` / `read_heads`.

Released variants read by `read_heads` (REFERENCE section 2):
- lightweight: `config.json` (`model_type: "autodeco"`, base config inlined, old keys
  `train_temp` / `train_top_p` accepted) + `model.safetensors` or `autodeco_heads.safetensors`
  (in a local folder every `*.safetensors` is scanned, as the official loader does);
- merged: `model.safetensors.index.json` + shards: only the shards holding head tensors are
  opened (and, from the Hub, downloaded), and only the head tensors are read;
- Megatron exports: keys prefixed `module.adapter.` or `adapter.`, usually bf16;
- legacy `autodeco_heads.bin`: read with `torch.load(weights_only=True)` only (no pickle code runs).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from autodeco_lp.hub.atomic import Writer, write_files_atomically, write_text
from autodeco_lp.hub.config import DEFAULT_MLP_HIDDEN_SIZE, NUM_STATISTICS, AutoDecoConfig

CONFIG_NAME = "autodeco_config.json"
WEIGHTS_NAME = "autodeco_heads.safetensors"
OFFICIAL_CONFIG_NAME = "config.json"
OFFICIAL_WEIGHTS_NAME = "model.safetensors"
OFFICIAL_INDEX_NAME = "model.safetensors.index.json"
LEGACY_BIN_NAME = "autodeco_heads.bin"
# Safetensors metadata key holding the config JSON of the same save.
METADATA_CONFIG_KEY = "autodeco_config"

HEAD_PREFIXES = ("temp_head.", "top_p_head.")
# Wrappers seen in the wild around the head names, stripped (repeatedly) before matching.
WRAPPER_PREFIXES = ("module.", "adapter.", "model.")


# ----------------------------------------------------------------------------- saving


def _save_target(path: str | os.PathLike, names: tuple[str, ...]) -> Path:
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


def save_heads(config: AutoDecoConfig, state_dict: dict[str, torch.Tensor], save_directory: str | os.PathLike) -> Path:
    """Write heads (`config` + their `state_dict`) in the native format. Never leaves a half-written
    file in place of a good one (see `atomic.write_files_atomically`)."""
    folder = _save_target(save_directory, (WEIGHTS_NAME, CONFIG_NAME))
    _refuse_other_layouts(folder, (OFFICIAL_INDEX_NAME, LEGACY_BIN_NAME), "native")
    official = folder / OFFICIAL_CONFIG_NAME
    if official.is_file():
        if _is_autodeco_config(official):
            _refuse_other_layouts(folder, (OFFICIAL_CONFIG_NAME,), "native")
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
    folder = _save_target(out_dir, (OFFICIAL_WEIGHTS_NAME, OFFICIAL_CONFIG_NAME))
    _refuse_foreign_release_files(folder)
    config: dict[str, Any] = dict(base_config or {})
    config.update(
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
        config["vocab_size"] = cfg.vocab_size
    tensors = {name: t.detach().to("cpu", dtype).contiguous() for name, t in state_dict.items()}
    text = json.dumps(config, indent=2, sort_keys=True, default=str) + "\n"
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


def _refuse_other_layouts(folder: Path, names: tuple[str, ...], layout: str) -> None:
    """Saving one layout next to another would leave a folder that no longer loads (ambiguous)."""
    present = [name for name in names if (folder / name).exists() or (folder / name).is_symlink()]
    if present:
        raise ValueError(
            f"{folder} already holds another checkpoint layout ({', '.join(present)}); writing the {layout} "
            "layout next to it would make the folder ambiguous. Write into another folder."
        )


def _is_autodeco_config(path: Path) -> bool:
    """Whether the JSON file at `path` is an AutoDeco export's `config.json` (`model_type` autodeco);
    unreadable or not a mapping: False."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("model_type") == "autodeco"
    except (ValueError, AttributeError):
        return False


def _refuse_foreign_release_files(folder: Path) -> None:
    """`config.json` / `model.safetensors` are common names (a base model's files): replace them only
    when they are an AutoDeco export's."""
    config_path, weights_path = folder / OFFICIAL_CONFIG_NAME, folder / OFFICIAL_WEIGHTS_NAME
    _refuse_other_layouts(folder, (CONFIG_NAME, WEIGHTS_NAME, OFFICIAL_INDEX_NAME, LEGACY_BIN_NAME), "lightweight")
    if config_path.is_file():
        if not _is_autodeco_config(config_path):
            raise ValueError(
                f"{config_path} exists and is not an AutoDeco config (model_type 'autodeco'); exporting here "
                "would replace it. Export into another folder."
            )
    if weights_path.is_file():
        try:
            keys = _safetensors_header(weights_path)[0]
        except ValueError:
            keys = ["?"]
        foreign = [key for key in keys if head_tensor_name(key) is None]
        if foreign:
            raise ValueError(
                f"{weights_path} exists and holds tensors that are not AutoDeco heads ({foreign[:3]}...); "
                "exporting here would replace it. Export into another folder."
            )


# ----------------------------------------------------------------------------- file sources


def _check_member_name(name: str, where: str) -> None:
    """A file name a checkpoint may refer to: relative, inside its folder (no `..`, no absolute path)."""
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise ValueError(
            f"{where} refers to {name!r}, which is outside the checkpoint folder; a checkpoint reads only "
            "files inside its own folder (relative names, no '..')."
        )


class _LocalFolder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.real = root.resolve()
        self.description = f"folder {str(root)!r}"

    def _inside(self, path: Path) -> None:
        """Refuse a file whose real path leaves the folder (a symlink out of it). A Hugging Face cache
        snapshot (`models--org--name/snapshots/<commit>`) links into its repo's `blobs`: allowed."""
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # a dangling link or a symlink loop
            raise ValueError(f"{path} is a broken or looping link ({exc}); fix or remove it.") from exc
        allowed = [self.real]
        if self.real.parent.name == "snapshots" and self.real.parent.parent.name.startswith("models--"):
            allowed.append(self.real.parent.parent / "blobs")
        if not any(real == root or root in real.parents for root in allowed):
            raise ValueError(
                f"{path} points outside {self.description} (to {real}); a checkpoint reads only the files "
                "inside its own folder. Copy the file into the folder instead of linking it."
            )

    def get(self, name: str) -> Path | None:
        _check_member_name(name, self.description)
        path = self.root / name
        if not (path.exists() or path.is_symlink()):
            return None
        self._inside(path)
        if not path.is_file():
            raise ValueError(f"{path} is not a regular file (a folder, a pipe or a device); remove or replace it.")
        return path

    def safetensors_files(self) -> list[Path]:
        found = []
        for path in sorted(self.root.glob("*.safetensors")):
            if path.is_file():
                self._inside(path)
                found.append(path)
        return found


class _HubRepo:
    """A Hub repo read through huggingface_hub: honours `revision`, its cache and `HF_HUB_OFFLINE`.

    Files are fetched one by one by name (never a whole snapshot), so a merged checkpoint costs
    its index and the shards that hold head tensors, never the base weights.
    """

    def __init__(self, repo_id: str, revision: str | None, cache_dir: str | None, token: str | bool | None) -> None:
        self.repo_id, self.revision, self.cache_dir, self.token = repo_id, revision, cache_dir, token
        self.description = f"Hub repo {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
        self._fetched: dict[str, Path | None] = {}  # one request per file name per load

    def get(self, name: str) -> Path | None:
        if name not in self._fetched:
            self._fetched[name] = self._fetch(name)
        return self._fetched[name]

    def _fetch(self, name: str) -> Path | None:
        _check_member_name(name, self.description)
        try:
            return Path(
                hf_hub_download(self.repo_id, name, revision=self.revision, cache_dir=self.cache_dir, token=self.token)
            )
        except RevisionNotFoundError as exc:
            raise ValueError(
                f"`revision` {self.revision!r} does not exist in {self.repo_id!r}; "
                "pass an existing branch, tag or commit."
            ) from exc
        except RepositoryNotFoundError as exc:
            raise ValueError(
                f"{self.repo_id!r} is neither a local folder nor a Hub repo you can access; check the "
                "spelling, or pass `token=` for a private repo."
            ) from exc
        except (EntryNotFoundError, LocalEntryNotFoundError):
            # LocalEntryNotFoundError: offline (or no network) and the file is not in the cache.
            return None

    def safetensors_files(self) -> list[Path]:
        # Listing a repo needs the network; fetch the released file names instead.
        found = [self.get(name) for name in (WEIGHTS_NAME, OFFICIAL_WEIGHTS_NAME)]
        return [path for path in found if path is not None]


def _open_source(path_or_repo_id: str | os.PathLike, revision, cache_dir, token) -> _LocalFolder | _HubRepo:
    text = os.fspath(path_or_repo_id) if isinstance(path_or_repo_id, (str, os.PathLike)) else None
    if not isinstance(text, str):
        raise TypeError(f"`path_or_repo_id` has to be a folder path or a Hub repo id, but is {path_or_repo_id!r}")
    if not text.strip():
        raise ValueError(
            "`path_or_repo_id` is empty; pass the folder that holds the heads ('.' for the current folder) "
            "or a Hub repo id (`org/name`)."
        )
    if "\x00" in text:
        raise ValueError(f"`path_or_repo_id` {text!r} contains a NUL character.")
    path = Path(text)
    if path.is_dir():
        return _LocalFolder(path)
    if path.is_file():
        raise ValueError(
            f"`path_or_repo_id` {str(path)!r} is a file; pass the folder that holds the heads "
            f"({CONFIG_NAME} + {WEIGHTS_NAME}, or a released layout)."
        )
    # A Hub id is `name` or `org/name`; anything else that does not exist is a mistyped path.
    if text.count("/") > 1 or text.startswith((".", "/", "~")) or "\\" in text or ".." in text:
        raise ValueError(
            f"`path_or_repo_id` {text!r}: no such folder. Pass an existing folder or a Hub repo id (`org/name`)."
        )
    return _HubRepo(text, revision, cache_dir, token)


# ----------------------------------------------------------------------------- loading


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

    Only the files of one layout are read, all inside the folder (see `_layouts`); a folder holding
    two layouts, or two candidate weight files, is refused with the candidates listed.

    Args:
        path_or_repo_id: a local folder, or a Hub repo id resolved with huggingface_hub.
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
    source = _open_source(path_or_repo_id, revision, cache_dir, token)
    layout, files = _layout_of(source)
    if layout == "native":
        config, tensors = _load_native(source, *files)
        strict = True
    else:
        config, tensors = _load_released(source, layout, files)
        strict = False
    if base_model_name_or_path is not None:
        config.base_model_name_or_path = base_model_name_or_path
    return config, _checked_tensors(config, tensors, source.description, strict=strict)


def _read_json(path: Path) -> dict[str, Any]:
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


def _safetensors_header(path: Path) -> tuple[list[str], dict[str, str]]:
    """Tensor names and metadata of `path`, reading its header only."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys()), f.metadata() or {}
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(
            f"cannot read {path}: {exc}. The file is truncated or not a safetensors file; save or download it again."
        ) from exc


def _read_safetensors(
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
    _check_floating(tensors, path)
    return tensors, metadata


def _check_floating(tensors: dict[str, Any], path: Path) -> None:
    for key, value in tensors.items():
        if torch.is_tensor(value) and not value.is_floating_point():
            raise ValueError(
                f"{path}: tensor {key} has dtype {value.dtype}; head weights are floating point. The file is "
                "not an AutoDeco checkpoint or was written wrongly; save or download it again."
            )


def _embedded_config(path: Path) -> str | None:
    """The config JSON our saves embed in the weights' metadata, or None."""
    return _safetensors_header(path)[1].get(METADATA_CONFIG_KEY)


def _holds_heads(path: Path) -> bool:
    return any(head_tensor_name(key) is not None for key in _safetensors_header(path)[0])


def _ambiguous(where: str, what: str, candidates: list[str]) -> ValueError:
    listed = "\n".join(f"  {c}" for c in candidates)
    return ValueError(
        f"{where} is ambiguous: it holds {what}:\n{listed}\nMove all but one of them out of the folder "
        "(or load the one you mean from a folder of its own)."
    )


def _layout_of(source) -> tuple[str, tuple]:
    """Which layout `source` holds and the files it owns, reading nothing else.

    - native: `autodeco_config.json` + `autodeco_heads.safetensors` (or the weights alone, whose
      metadata embeds the config: what a save killed between its renames leaves);
    - lightweight: `config.json` (`model_type: "autodeco"`) + `model.safetensors` or
      `autodeco_heads.safetensors` (else the folder's one `*.safetensors` holding head tensors);
      or `model.safetensors` alone with the config embedded by `export_official`;
    - merged: `model.safetensors.index.json` (+ `config.json`) and the shards it names;
    - legacy: `autodeco_heads.bin`;
    - loose (Megatron exports): no config, the folder's one `*.safetensors` holding head tensors.
    """
    native_config = source.get(CONFIG_NAME)
    native_weights = source.get(WEIGHTS_NAME)
    official_config = source.get(OFFICIAL_CONFIG_NAME)
    raw = _read_json(official_config) if official_config is not None else {}
    autodeco_config_json = official_config is not None and raw.get("model_type") == "autodeco"
    official_weights = source.get(OFFICIAL_WEIGHTS_NAME)
    index = source.get(OFFICIAL_INDEX_NAME)
    legacy = source.get(LEGACY_BIN_NAME)

    found: dict[str, str] = {}
    if native_config is not None or (native_weights is not None and _embedded_config(native_weights) is not None):
        found["native"] = f"{CONFIG_NAME} + {WEIGHTS_NAME}"
    if index is not None:
        found["merged"] = f"{OFFICIAL_INDEX_NAME} + its shards"
    elif autodeco_config_json or (
        official_weights is not None and "native" not in found and _embedded_config(official_weights) is not None
    ):
        found["lightweight"] = f"{OFFICIAL_CONFIG_NAME} (model_type autodeco) + weights"
    if legacy is not None:
        found["legacy"] = LEGACY_BIN_NAME
    if len(found) > 1:
        raise _ambiguous(source.description, "several checkpoint layouts", [f"{k}: {v}" for k, v in found.items()])
    layout = next(iter(found), "loose")
    if layout == "native":
        return layout, (native_config, native_weights)
    if layout == "merged":
        return layout, (raw, index)
    if layout == "legacy":
        return layout, (raw, legacy)
    if layout == "lightweight":
        named = [p for p in (native_weights, official_weights) if p is not None and _holds_heads(p)]
        if len(named) > 1:
            raise _ambiguous(source.description, "two weight files with head tensors", [p.name for p in named])
        return layout, (raw if autodeco_config_json else None, named[0] if named else _single_heads_file(source))
    # loose: no config of ours (so none to return); exactly one safetensors file with head tensors.
    return layout, ({}, _single_heads_file(source))


def _single_heads_file(source) -> Path | None:
    """The one `*.safetensors` file of `source` that holds head tensors (None without one)."""
    weights = [p for p in source.safetensors_files() if _holds_heads(p)]
    if len(weights) > 1:
        raise _ambiguous(source.description, "several weight files with head tensors", [p.name for p in weights])
    return weights[0] if weights else None


def _config_from_json(text: str, where: str) -> AutoDecoConfig:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: the embedded config is not valid JSON ({exc}); save the heads again.") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{where}: the embedded config is not a JSON object; save the heads again.")
    return AutoDecoConfig.from_dict(data, source=where)


def _load_native(
    source, config_path: Path | None, weights: Path | None
) -> tuple[AutoDecoConfig, dict[str, torch.Tensor]]:
    if weights is None:
        raise ValueError(
            f"{source.description} has {CONFIG_NAME} but no {WEIGHTS_NAME}; the save was incomplete. "
            "Save the heads again."
        )
    tensors, metadata = _read_safetensors(weights)
    saved = metadata.get(METADATA_CONFIG_KEY)
    if config_path is None:
        # A save killed between moving the old config away and writing the new one: the weights
        # carry their own config.
        return _config_from_json(saved, f"{weights} (embedded config)"), tensors
    config = AutoDecoConfig.from_dict(_read_json(config_path), source=str(config_path))
    if saved is not None:
        saved_config = _config_from_json(saved, f"{weights} (embedded config)").to_dict()
        on_disk = config.to_dict()
        differing = sorted(k for k in on_disk if k != "library_version" and saved_config.get(k) != on_disk[k])
        if differing:
            raise ValueError(
                f"{config_path} and {weights} come from different saves (they disagree on {differing}); "
                "save the heads again."
            )
    return config, tensors


def head_tensor_name(key: str) -> str | None:
    """`module.adapter.temp_head.mlp.0.weight` -> `temp_head.mlp.0.weight`; None for non-head keys."""
    changed = True
    while changed and not key.startswith(HEAD_PREFIXES):
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key if key.startswith(HEAD_PREFIXES) else None


def _head_tensors_from(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The head tensors of `path` under their plain names, and the file's metadata (one read)."""
    tensors, metadata = _read_safetensors(path, keep=lambda key: head_tensor_name(key) is not None)
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        name = head_tensor_name(key)
        if name in out:
            raise ValueError(f"{path} holds head tensor {name} twice (as {key!r} and another wrapped name).")
        out[name] = value
    return out, metadata


# Fields of the config that describe the tensors (what a lightweight config.json and the config
# embedded by `export_official` must agree on).
_STRUCTURAL = (
    "hidden_size",
    "vocab_size",
    "enable_temperature_head",
    "enable_top_p_head",
    "use_enhanced_features",
    "mlp_hidden_size",
)


def _load_released(source, layout: str, files: tuple) -> tuple[AutoDecoConfig, dict[str, torch.Tensor]]:
    raw, path = files
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {}  # of the lightweight weights file, read with its tensors
    if layout == "merged":
        index = _read_json(path)
        weight_map = index.get("weight_map", {})
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(f"{path}: `weight_map` has to map tensor names to shard file names.")
        shards = sorted({shard for key, shard in weight_map.items() if head_tensor_name(key) is not None})
        for shard in shards:
            _check_member_name(shard, str(path))
        for shard in shards:
            shard_path = source.get(shard)
            if shard_path is None:
                raise ValueError(
                    f"{source.description}: {OFFICIAL_INDEX_NAME} places head tensors in {shard!r}, "
                    "which cannot be found (offline and not cached?). Download it or go online."
                )
            for name, value in _head_tensors_from(shard_path)[0].items():
                if name in tensors:
                    raise ValueError(f"{path}: head tensor {name} is stored in two shards.")
                tensors[name] = value
    elif layout == "legacy":
        tensors = _load_legacy_bin(path)
    elif path is not None:
        tensors, metadata = _head_tensors_from(path)
    if not tensors:
        raise ValueError(
            f"nothing loadable in {source.description}: expected {CONFIG_NAME} + {WEIGHTS_NAME} (native), "
            f"{OFFICIAL_CONFIG_NAME} + {OFFICIAL_WEIGHTS_NAME} or {WEIGHTS_NAME} (released), "
            f"{OFFICIAL_INDEX_NAME} + shards (merged), or {LEGACY_BIN_NAME}, holding tensors named "
            "temp_head.* / top_p_head.*. If this is a Hub repo and you are offline, download it first."
        )
    embedded = metadata.get(METADATA_CONFIG_KEY) if layout == "lightweight" else None
    saved = _config_from_json(embedded, f"{path} (embedded config)") if embedded is not None else None
    if saved is not None and raw is None:  # config.json moved away by a save that was killed: the weights carry it
        return saved, tensors
    config = _config_from_released(raw or {}, tensors, source.description)
    differing = [k for k in _STRUCTURAL if saved is not None and getattr(config, k) != getattr(saved, k)]
    if differing:
        raise ValueError(
            f"{OFFICIAL_CONFIG_NAME} and {path} in {source.description} come from different saves "
            f"(they disagree on {differing}); export the heads again."
        )
    return config, tensors


def _load_legacy_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError / RuntimeError variants
        raise ValueError(
            f"{path} cannot be read with torch.load(weights_only=True) ({type(exc).__name__}). It may hold "
            "pickled code, which is never run here; convert it to safetensors in a trusted environment."
        ) from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a dict of tensors.")
    tensors = {k: v for key, v in state.items() if (k := head_tensor_name(key)) is not None and torch.is_tensor(v)}
    _check_floating(tensors, path)
    return tensors


def _config_from_released(raw: dict[str, Any], tensors: dict[str, torch.Tensor], where: str) -> AutoDecoConfig:
    """Build an `AutoDecoConfig` for a released checkpoint: switches from its config, shapes from tensors."""
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
