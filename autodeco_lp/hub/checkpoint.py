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

from autodeco_lp.hub.atomic import write_files_atomically, write_text
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


def save_heads(config: AutoDecoConfig, state_dict: dict[str, torch.Tensor], save_directory: str | os.PathLike) -> Path:
    """Write heads (`config` + their `state_dict`) in the native format. Never leaves a half-written
    file in place of a good one (see `atomic.write_files_atomically`)."""
    config_json = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    # Contiguous CPU copies: safetensors refuses views and device tensors.
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state_dict.items()}
    metadata = {"format": "pt", METADATA_CONFIG_KEY: config_json}
    # Weights first: a crash between the two renames leaves a config that disagrees with the
    # weights' embedded copy, which `read_heads` reports instead of loading a mix.
    return write_files_atomically(
        Path(save_directory),
        {
            WEIGHTS_NAME: lambda tmp: save_file(tensors, str(tmp), metadata=metadata),
            CONFIG_NAME: lambda tmp: write_text(tmp, config_json),
        },
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
    return write_files_atomically(
        Path(out_dir),
        {
            OFFICIAL_WEIGHTS_NAME: lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}),
            OFFICIAL_CONFIG_NAME: lambda tmp: write_text(tmp, text),
        },
    )


# ----------------------------------------------------------------------------- file sources


class _LocalFolder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = f"folder {str(root)!r}"

    def get(self, name: str) -> Path | None:
        path = self.root / name
        return path if path.is_file() else None

    def safetensors_files(self) -> list[Path]:
        return sorted(self.root.glob("*.safetensors"))


class _HubRepo:
    """A Hub repo read through huggingface_hub: honours `revision`, its cache and `HF_HUB_OFFLINE`.

    Files are fetched one by one by name (never a whole snapshot), so a merged checkpoint costs
    its index and the shards that hold head tensors, never the base weights.
    """

    def __init__(self, repo_id: str, revision: str | None, cache_dir: str | None, token: str | bool | None) -> None:
        self.repo_id, self.revision, self.cache_dir, self.token = repo_id, revision, cache_dir, token
        self.description = f"Hub repo {repo_id!r}" + (f" at revision {revision!r}" if revision else "")

    def get(self, name: str) -> Path | None:
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
    path = Path(path_or_repo_id)
    if path.is_dir():
        return _LocalFolder(path)
    if path.is_file():
        raise ValueError(
            f"`path_or_repo_id` {str(path)!r} is a file; pass the folder that holds the heads "
            f"({CONFIG_NAME} + {WEIGHTS_NAME}, or a released layout)."
        )
    text = str(path_or_repo_id)
    # A Hub id is `name` or `org/name`; anything else that does not exist is a mistyped path.
    if not text or text.count("/") > 1 or text.startswith((".", "/", "~")):
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

    The tensors are exactly `config.tensor_shapes()` (names and shapes), finite, in the dtype
    stored on disk; `AutoDecoHeads.from_pretrained` builds the module from them.

    Args:
        path_or_repo_id: a local folder, or a Hub repo id resolved with huggingface_hub.
        revision: Hub branch, tag or commit.
        cache_dir: huggingface_hub cache folder (defaults to `HF_HUB_CACHE`).
        token: Hub token for private repos.
        base_model_name_or_path: overrides the base model recorded in the checkpoint (released
            configs often record a private path of the trainer).

    Raises:
        ValueError: naming the file and what to do when nothing loadable is found, tensors are
            missing or unexpected, weights hold NaN/inf, a file is truncated, or config and
            weights disagree.
    """
    source = _open_source(path_or_repo_id, revision, cache_dir, token)
    native_config = source.get(CONFIG_NAME)
    if native_config is not None:
        config, tensors = _load_native(source, native_config)
        strict = True
    else:
        config, tensors = _load_released(source)
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
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a JSON {type(data).__name__}, expected an object.")
    return data


def _read_safetensors(
    path: Path, keep: Callable[[str], bool] = lambda key: True
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read the tensors of `path` whose names pass `keep` (others are never read), and its metadata."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            return {key: f.get_tensor(key) for key in f.keys() if keep(key)}, metadata
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ValueError(
            f"cannot read {path}: {exc}. The file is truncated or not a safetensors file; save or download it again."
        ) from exc


def _load_native(source, config_path: Path) -> tuple[AutoDecoConfig, dict[str, torch.Tensor]]:
    config = AutoDecoConfig.from_dict(_read_json(config_path), source=str(config_path))
    weights = source.get(WEIGHTS_NAME)
    if weights is None:
        raise ValueError(
            f"{source.description} has {CONFIG_NAME} but no {WEIGHTS_NAME}; the save was incomplete. "
            "Save the heads again."
        )
    tensors, metadata = _read_safetensors(weights)
    saved = metadata.get(METADATA_CONFIG_KEY)
    if saved is not None:
        saved_config = json.loads(saved)
        on_disk = config.to_dict()
        differing = sorted(k for k in on_disk if k != "library_version" and saved_config.get(k) != on_disk[k])
        if differing:
            raise ValueError(
                f"{config_path} and {weights} come from different saves (they disagree on {differing}); "
                "save the heads again."
            )
    return config, tensors


def _normalise_key(key: str) -> str | None:
    """`module.adapter.temp_head.mlp.0.weight` -> `temp_head.mlp.0.weight`; None for non-head keys."""
    changed = True
    while changed and not key.startswith(HEAD_PREFIXES):
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key if key.startswith(HEAD_PREFIXES) else None


def _head_tensors_from(path: Path) -> dict[str, torch.Tensor]:
    tensors, _ = _read_safetensors(path, keep=lambda key: _normalise_key(key) is not None)
    return {_normalise_key(key): value for key, value in tensors.items()}


def _load_released(source) -> tuple[AutoDecoConfig, dict[str, torch.Tensor]]:
    config_path = source.get(OFFICIAL_CONFIG_NAME)
    raw = _read_json(config_path) if config_path is not None else {}

    tensors: dict[str, torch.Tensor] = {}
    index_path = source.get(OFFICIAL_INDEX_NAME)
    if index_path is not None:
        weight_map = _read_json(index_path).get("weight_map", {})
        shards = sorted({shard for key, shard in weight_map.items() if _normalise_key(key) is not None})
        for shard in shards:
            shard_path = source.get(shard)
            if shard_path is None:
                raise ValueError(
                    f"{source.description}: {OFFICIAL_INDEX_NAME} places head tensors in {shard!r}, "
                    "which cannot be found (offline and not cached?). Download it or go online."
                )
            tensors.update(_head_tensors_from(shard_path))
    if not tensors:
        for path in source.safetensors_files():
            tensors.update(_head_tensors_from(path))
    if not tensors:
        legacy = source.get(LEGACY_BIN_NAME)
        if legacy is not None:
            tensors = _load_legacy_bin(legacy)
    if not tensors:
        raise ValueError(
            f"nothing loadable in {source.description}: expected {CONFIG_NAME} + {WEIGHTS_NAME} (native), "
            f"{OFFICIAL_CONFIG_NAME} + {OFFICIAL_WEIGHTS_NAME} or {WEIGHTS_NAME} (released), "
            f"{OFFICIAL_INDEX_NAME} + shards (merged), or {LEGACY_BIN_NAME}, holding tensors named "
            "temp_head.* / top_p_head.*. If this is a Hub repo and you are offline, download it first."
        )
    return _config_from_released(raw, tensors, source.description), tensors


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
    return {k: v for key, v in state.items() if (k := _normalise_key(key)) is not None and torch.is_tensor(v)}


def _config_from_released(raw: dict[str, Any], tensors: dict[str, torch.Tensor], where: str) -> AutoDecoConfig:
    """Build an `AutoDecoConfig` for a released checkpoint: switches from its config, shapes from tensors."""
    text_config = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else {}

    def flag(*names: str, default: bool) -> bool:
        for name in names:
            if name in raw:
                return bool(raw[name])
        return default

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
        hidden_size, mlp_hidden = raw.get("hidden_size") or text_config.get("hidden_size"), DEFAULT_MLP_HIDDEN_SIZE
    if hidden_size is None:
        raise ValueError(f"{where}: cannot tell the hidden size (no temp_head/top_p_head first-layer weight).")
    declared = raw.get("hidden_size") or text_config.get("hidden_size")
    if declared is not None and int(declared) != int(hidden_size):
        raise ValueError(
            f"{where}: config.json says hidden_size={declared} but the head tensors have width {hidden_size}; "
            "config and weights come from different models."
        )
    vocab = raw.get("vocab_size") or text_config.get("vocab_size")
    return AutoDecoConfig(
        hidden_size=int(hidden_size),
        vocab_size=int(vocab) if vocab is not None else None,
        enable_temperature_head=enable_temp,
        enable_top_p_head=enable_top_p,
        use_enhanced_features=use_enhanced,
        mlp_hidden_size=int(mlp_hidden),
        base_model_name_or_path=raw.get("base_model_name_or_path") or raw.get("_name_or_path") or None,
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
