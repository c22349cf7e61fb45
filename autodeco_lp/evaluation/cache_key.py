"""The name of an `autodeco eval` result cache: `cache-<digest>.jsonl` in `--out`.

The digest is the first 12 hex digits of the sha256 of every `EvalArgs` setting that changes the
completions (model, heads, task, problems, samples, dataset seed, new tokens, chat, shots, excluded
data, dtype, backend), the task options and the evaluated questions, so runs with other settings
never share records, and a rerun of the same command finds its cache. Left out, so that changing
them keeps the cache: what only selects or reports (methods, seeds, out, oracle_from; records are
keyed by decoding and seed inside the file), and batch size and device. On the hf engine the batch
size changes which rows share a random stream, so records written at two batch sizes are two valid
draws of the same decodings and may mix; on vllm every sample has its own seed and the batch size
changes nothing. AutoDeco records name the heads' weights in their key (`Evaluator.key`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

from autodeco_lp.evaluation.args import EvalArgs

NOT_IN_KEY = ("methods", "seeds", "out", "batch_size", "device", "oracle_from")
KEYED = tuple(f.name for f in fields(EvalArgs) if f.name not in NOT_IN_KEY)


def cache_digest(settings: Mapping, task_options: dict | None, questions: list[str]) -> str:
    """`settings`: `asdict(EvalArgs)` or a results.json's `settings` (extra entries are ignored);
    `questions`: the evaluated problems' questions, in order."""
    missing = [name for name in KEYED if name not in settings]
    if missing:
        raise KeyError(f"settings lack {', '.join(missing)}: not the settings of an `autodeco eval` run")
    fingerprint = {name: settings[name] for name in KEYED}
    fingerprint.update(task_options=task_options or {}, questions=questions)
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]


def cache_path(out: str | Path, settings: Mapping, task_options: dict | None, questions: list[str]) -> Path:
    return Path(out) / f"cache-{cache_digest(settings, task_options, questions)}.jsonl"
