"""Training checkpoints: `output_dir/checkpoint-N/` = heads + optimizer, scheduler, RNG and data position.

A checkpoint is staged under a temporary name and renamed into place only once every file is
flushed, so a run killed mid-save leaves the previous checkpoint as the latest good one (the
stale temporary folder is ignored and removed by the next save).

The training state is stored in a format that cannot run code when read: `training_state.safetensors`
holds every tensor (optimizer moments and steps, RNG states as uint8 tensors) and, in its header
metadata, a JSON document with everything else (step, scheduler, the run's identity, options).
No pickle is ever read.

A checkpoint continues only the run that wrote it: `check_same_run` compares its identity (data,
base model weights, batch, seed, step budget), its options and its heads' shape with this run's and
refuses, naming each difference, before any tensor is loaded.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from autodeco_lp.hub.atomic import staged_directory
from autodeco_lp.hub.checkpoint import CONFIG_NAME, WEIGHTS_NAME, heads_writers
from autodeco_lp.hub.config import AutoDecoConfig

STATE_NAME = "training_state.safetensors"
STATE_FORMAT = "autodeco_lp.training_state"
STATE_VERSION = 1
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_RESTART = "restart without --resume-from-checkpoint (or resume from another checkpoint)"


class TrainingStateError(ValueError):
    """A checkpoint's training state cannot be read safely; the message says which file and what to do."""


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first (a folder counts once its state file exists)."""
    found = []
    if output_dir.is_dir():
        for path in output_dir.iterdir():
            match = _CHECKPOINT.match(path.name)
            if match and (path / STATE_NAME).is_file() and (path / WEIGHTS_NAME).is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


# --- the state <-> (tensors, JSON) conversion -------------------------------------------------


def _encode_rng(rng: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """RNG states as uint8 tensors (their exact bytes) plus the few scalars they carry, in JSON."""
    version, words, gauss = rng["python"]
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    tensors = {
        "rng.python": torch.frombuffer(bytearray(struct.pack(f"<{len(words)}I", *words)), dtype=torch.uint8),
        "rng.numpy": torch.from_numpy(np.ascontiguousarray(keys, dtype="<u4").view(np.uint8).copy()),
        "rng.torch": rng["torch"].clone(),
    }
    for i, cuda in enumerate(rng.get("cuda", [])):
        tensors[f"rng.cuda.{i}"] = cuda.clone()
    meta = {
        "python": {"version": version, "gauss_next": gauss},
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "cuda_devices": len(rng.get("cuda", [])),
    }
    return tensors, meta


def _decode_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    python = tensors["rng.python"].numpy().tobytes()
    words = struct.unpack(f"<{len(python) // 4}I", python)
    keys = tensors["rng.numpy"].numpy().view("<u4").astype(np.uint32)
    n = meta["numpy"]
    state = {
        "python": (meta["python"]["version"], tuple(words), meta["python"]["gauss_next"]),
        "numpy": (n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]),
        "torch": tensors["rng.torch"],
    }
    if meta["cuda_devices"]:
        state["cuda"] = [tensors[f"rng.cuda.{i}"] for i in range(meta["cuda_devices"])]
    return state


def _encode_optimizer(optimizer_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": optimizer_state["param_groups"], "scalars": scalars}


def _decode_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = [{**g, **({"betas": tuple(g["betas"])} if "betas" in g else {})} for g in meta["param_groups"]]
    return {"state": dict(sorted(state.items())), "param_groups": groups}


def write_training_state(path: Path, state: dict[str, Any]) -> None:
    """`state` (step, optimizer, scheduler, rng and JSON-able rest) as one safetensors file."""
    optimizer_tensors, optimizer_meta = _encode_optimizer(state["optimizer"])
    rng_tensors, rng_meta = _encode_rng(state["rng"])
    rest = {k: v for k, v in state.items() if k not in ("optimizer", "rng")}
    document = {"optimizer": optimizer_meta, "rng": rng_meta, **rest}
    metadata = {"format": STATE_FORMAT, "version": str(STATE_VERSION), "state": json.dumps(document)}
    save_file({**optimizer_tensors, **rng_tensors}, str(path), metadata=metadata)


def _read_safetensors_state(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise TrainingStateError(
            f"{path} cannot be read (empty, truncated or not a safetensors file: {exc}); {_RESTART}."
        ) from exc
    if metadata.get("format") != STATE_FORMAT or metadata.get("version") != str(STATE_VERSION):
        raise TrainingStateError(
            f"{path} is not an autodeco_lp training state of version {STATE_VERSION} (header says format "
            f"{metadata.get('format')!r}, version {metadata.get('version')!r}); {_RESTART}."
        )
    try:
        document = json.loads(metadata["state"])
        return {
            **{k: v for k, v in document.items() if k not in ("optimizer", "rng")},
            "optimizer": _decode_optimizer(tensors, document["optimizer"]),
            "rng": _decode_rng(tensors, document["rng"]),
        }
    except (KeyError, ValueError, TypeError, struct.error) as exc:
        raise TrainingStateError(f"{path} is an incomplete training state ({exc!r}); {_RESTART}.") from exc


def load_training_state(folder: Path) -> dict[str, Any]:
    """The training state of checkpoint `folder`, read without running code; TrainingStateError otherwise."""
    path = folder / STATE_NAME
    if not path.is_file():
        raise TrainingStateError(f"{folder} has no {STATE_NAME}; pass a checkpoint-N folder, or {_RESTART}.")
    return _read_safetensors_state(path)


def write_checkpoint_folder(
    output_dir: Path, step: int, heads, training_state: dict[str, Any], total_limit: int | None
) -> Path:
    """`output_dir/checkpoint-<step>`: heads + training state, renamed into place whole; keeps the
    newest `total_limit` checkpoints. (The Trainer's `save_checkpoint` step calls it.)"""
    target = output_dir / f"checkpoint-{step}"
    if target.exists():  # e.g. a resumed run re-reaching a step: replace it as a whole
        shutil.rmtree(target)
    with staged_directory(target) as staging:  # flushes and renames the whole folder: each file is written once
        for name, write in heads_writers(heads.config, heads.state_dict()).items():
            write(staging / name)
        write_training_state(staging / STATE_NAME, training_state)
    if total_limit is not None:
        for _, old in list_checkpoints(output_dir)[:-total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def resolve_resume(output_dir: Path, value: str) -> Path:
    """`value` is a checkpoint folder or "latest"; errors say what exists instead."""
    if value == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise ValueError(
                f"`--resume-from-checkpoint` found no checkpoint-N folder in {str(output_dir)!r}; "
                "start without it, or pass a checkpoint folder."
            )
        return found[-1][1]
    path = Path(value)
    if not (path / STATE_NAME).is_file() or not (path / CONFIG_NAME).is_file():
        raise ValueError(
            f"`--resume-from-checkpoint` {value!r} is not a complete checkpoint folder (needs {STATE_NAME} "
            f"and {CONFIG_NAME}); pass a checkpoint-N folder or the flag alone for the latest."
        )
    return path


# Options a resumed run may change: where and how often it reports and saves, how it splits a step's
# examples into micro-batches and processes (`examples_per_step` in the identity is what counts), where
# it reads the model and data from (their contents are in the identity), and the cache's knobs. Every
# other option changes what a step computes, so it has to match the checkpoint's.
FREE_ON_RESUME = frozenset(
    {
        "model",
        "data",
        "output_dir",
        "init_heads",
        "resume_from_checkpoint",
        "overwrite_output_dir",
        "num_train_epochs",
        "max_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "max_tokens_per_batch",
        "loss.chunk_size",
        "use_cpu",
        "cache",
        "cache_max_gb",
        "cache_batch_size",
        "save_steps",
        "save_total_limit",
        "logging_steps",
        "report_to",
        "disable_tqdm",
    }
)
# The heads' shape and switches; who wrote them and from where may differ.
_HEADS_FREE = frozenset({"base_model_name_or_path", "base_model_revision", "library_version"})
_MISSING = object()


def _shown(value: Any) -> str:
    text = "(not set)" if value is _MISSING else repr(value)
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        text = repr(value[:12] + "...")  # a sha256
    return text if len(text) <= 80 else text[:77] + "..."


def _differences(kind: str, saved: dict[str, Any], current: dict[str, Any], free=frozenset()) -> list[str]:
    """`kind key: saved -> current` for every key whose value differs (JSON round trip: tuples are lists)."""
    current = json.loads(json.dumps(current, default=str))
    keys = sorted((set(saved) | set(current)) - free)
    return [
        f"{kind} {key}: {_shown(saved.get(key, _MISSING))} -> {_shown(current.get(key, _MISSING))}"
        for key in keys
        if saved.get(key, _MISSING) != current.get(key, _MISSING)
    ]


def _flat(options: dict[str, Any]) -> dict[str, Any]:
    """`FitArgs.to_dict()` with its `loss` and `outcome` blocks spread out: {"loss.alpha": 30.0, ...}."""
    flat = {k: v for k, v in options.items() if k not in ("loss", "outcome")}
    for block in ("loss", "outcome"):
        flat.update({f"{block}.{k}": v for k, v in (options.get(block) or {}).items()})
    return flat


def check_same_run(
    path: Path,
    state: dict[str, Any],
    saved_heads: AutoDecoConfig,
    identity: dict[str, Any],
    options: dict[str, Any],
    heads: AutoDecoConfig,
) -> None:
    """Refuse to continue, from checkpoint `path`, a run other than the one that wrote it.

    `state` is its training state, `saved_heads` its heads' config; `identity`, `options` (`FitArgs.to_dict()`)
    and `heads` are this run's. The message lists every difference as "checkpoint -> this run".
    """
    differences = [
        *_differences("run", state.get("data") or {}, identity),
        *_differences("heads", saved_heads.to_dict(), heads.to_dict(), _HEADS_FREE),
        *_differences("option", _flat(state.get("args") or {}), _flat(options), FREE_ON_RESUME),
    ]
    if differences:
        raise ValueError(
            f"cannot resume exactly from {path}: it was written by another run. What differs (checkpoint -> "
            f"this run): {'; '.join(differences)}. Resume with that run's base model, data and options, or "
            "drop --resume-from-checkpoint and start a new run (a new --output-dir, or --overwrite-output-dir)."
        )
