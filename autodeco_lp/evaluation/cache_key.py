"""The name of an `autodeco eval` result cache: `cache-<digest>.jsonl` in `--out`.

The digest is the first 12 hex digits of the sha256 of what changes the completions or their scores,
by content, not by name:

- every `EvalArgs` setting that does (heads, task, problems, samples, dataset seed, new tokens, chat,
  shots, excluded data, dtype, backend) and the task options;
- the base model's config and weights (`hub.digest.weights_sha256` of the folder `--model` names, so a
  folder overwritten with another model, or a fine-tune, never reuses old completions, and `smollm2`
  and its converted folder share a cache); the `--model` string itself is left out;
- every loaded problem's question, gold answer and entry (a file's choices, a generator's metadata
  its verifier reads) and which of them are evaluated (`problems_sha256`), so corrected gold answers
  are scored afresh.

Left out, so that changing them keeps the cache: what only selects or reports (methods, seeds, out,
oracle_from; records are keyed by decoding and seed inside the file), and batch size and device. On
the hf engine the batch size changes which rows share a random stream, so records written at two batch
sizes are two valid draws of the same decodings and may mix; on vllm every sample has its own seed and
the batch size changes nothing. AutoDeco records name the heads' weights in their key (`Evaluator.key`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path

from autodeco_lp.evaluation.args import EvalArgs
from autodeco_lp.hub.digest import weights_sha256
from autodeco_lp.hub.models import model_source
from autodeco_lp.tasks.problems import Problem

NOT_IN_KEY = ("model", "methods", "seeds", "out", "batch_size", "device", "oracle_from")
KEYED = tuple(f.name for f in fields(EvalArgs) if f.name not in NOT_IN_KEY)


def problems_sha256(loaded: Sequence[Problem], evaluated: Sequence[Problem]) -> str:
    """sha256 of the task's loaded problems (question, gold answer, entry; few-shot prompts of a file
    draw on its other rows) and the indices of those evaluated (after `--exclude-data`)."""
    content = {
        "problems": [[p.question, p.answer, p.entry] for p in loaded],
        "evaluated": [p.index for p in evaluated],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def model_sha256_of(model: str) -> str:
    """The content digest of the base model `--model` names (a packaged name, folder or Hub id)."""
    return weights_sha256(model_source(model).path)


def cache_digest(settings: Mapping, task_options: dict | None, problems: str, model: str) -> str:
    """`settings`: `asdict(EvalArgs)` or a results.json's `settings` (extra entries are ignored);
    `problems`: `problems_sha256` of the run's problems; `model`: `model_sha256_of` its base model."""
    missing = [name for name in KEYED if name not in settings]
    if missing:
        raise KeyError(f"settings lack {', '.join(missing)}: not the settings of an `autodeco eval` run")
    fingerprint = {name: settings[name] for name in KEYED}
    fingerprint.update(task_options=task_options or {}, problems_sha256=problems, model_sha256=model)
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]


def cache_path(out: str | Path, settings: Mapping, task_options: dict | None, problems: str, model: str) -> Path:
    return Path(out) / f"cache-{cache_digest(settings, task_options, problems, model)}.jsonl"
