"""Training checkpoints: `output_dir/checkpoint-N/` = heads + optimizer, scheduler, RNG and data position.

A checkpoint is staged under a temporary name and renamed into place only once every file is
flushed, so a run killed mid-save leaves the previous checkpoint as the latest good one (the
stale temporary folder is ignored and removed by the next save).
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autodeco_lp.hub.atomic import staged_directory
from autodeco_lp.hub.checkpoint import CONFIG_NAME, WEIGHTS_NAME

STATE_NAME = "training_state.pt"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


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


def save_checkpoint(
    output_dir: Path, step: int, heads, training_state: dict[str, Any], total_limit: int | None
) -> Path:
    target = output_dir / f"checkpoint-{step}"
    for stale in output_dir.glob(".checkpoint-*.tmp-*"):  # left by a run killed mid-save
        shutil.rmtree(stale, ignore_errors=True)
    if target.exists():  # e.g. a resumed run re-reaching a step: replace it as a whole
        shutil.rmtree(target)
    with staged_directory(target) as staging:
        heads.save_pretrained(staging)
        torch.save(training_state, staging / STATE_NAME)
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


def load_training_state(path: Path) -> dict[str, Any]:
    # Our own file, but it holds Python RNG tuples and numpy arrays, so weights_only cannot read it.
    return torch.load(path / STATE_NAME, map_location="cpu", weights_only=False)
