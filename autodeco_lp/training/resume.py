"""Training checkpoints: `output_dir/checkpoint-N/` = heads + optimizer, scheduler, RNG and data position.

A checkpoint is staged under a temporary name and renamed into place only once every file is
flushed, so a run killed mid-save leaves the previous checkpoint as the latest good one (the
stale temporary folder is ignored and removed by the next save).

The training state is stored in a format that cannot run code when read: `training_state.safetensors`
holds every tensor (optimizer moments and steps, RNG states as uint8 tensors) and, in its header
metadata, a JSON document with everything else (step, scheduler, data identity, options). Checkpoints
written before this format (`training_state.pt`, a pickle) are read only through
`torch.load(weights_only=True)`, which refuses any object it does not know; a file that needs more
than that is refused with the way to go on.
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

STATE_NAME = "training_state.safetensors"
LEGACY_STATE_NAME = "training_state.pt"  # pickled, written before the safetensors format; read-only
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


def state_file(folder: Path) -> Path | None:
    """The training state file of a checkpoint folder (current format first), or None."""
    for name in (STATE_NAME, LEGACY_STATE_NAME):
        if (folder / name).is_file():
            return folder / name
    return None


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first (a folder counts once its state file exists)."""
    found = []
    if output_dir.is_dir():
        for path in output_dir.iterdir():
            match = _CHECKPOINT.match(path.name)
            if match and state_file(path) is not None and (path / WEIGHTS_NAME).is_file():
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


def _read_legacy_state(path: Path) -> dict[str, Any]:
    """A `training_state.pt` of an older version: tensors, plain containers and numpy RNG arrays only."""
    # These numpy names rebuild a plain array and its dtype (numpy's legacy RNG state); torch's
    # weights-only unpickler still refuses every other global, so nothing in the file can run code.
    # `numpy._core` from numpy 2, `numpy.core` before; the file may name either (pickled under either).
    reconstruct = (getattr(np, "_core", None) or np.core).multiarray._reconstruct
    allowed = [
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        type(np.dtype(np.uint32)),
    ]
    try:
        with torch.serialization.safe_globals(allowed):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle and zip readers raise many kinds; all mean the same here
        raise TrainingStateError(
            f"{path} (an older pickled training state) cannot be read safely: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'empty or truncated file'}. Only tensors and plain values "
            f"are loaded from it, never code; {_RESTART}."
        ) from exc
    needed = ("step", "optimizer", "scheduler", "rng", "data", "elapsed_seconds")
    if not isinstance(state, dict) or any(key not in state for key in needed):
        raise TrainingStateError(f"{path} is not a training state written by autodeco_lp; {_RESTART}.")
    return state


def load_training_state(folder: Path) -> dict[str, Any]:
    """The training state of checkpoint `folder`, read without running code; TrainingStateError otherwise."""
    path = state_file(folder)
    if path is None:
        raise TrainingStateError(
            f"{folder} has no {STATE_NAME} (or older {LEGACY_STATE_NAME}); pass a checkpoint-N folder, or {_RESTART}."
        )
    return _read_safetensors_state(path) if path.name == STATE_NAME else _read_legacy_state(path)


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
    if state_file(path) is None or not (path / CONFIG_NAME).is_file():
        raise ValueError(
            f"`--resume-from-checkpoint` {value!r} is not a complete checkpoint folder (needs {STATE_NAME} "
            f"and {CONFIG_NAME}); pass a checkpoint-N folder or the flag alone for the latest."
        )
    return path
