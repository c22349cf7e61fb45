"""The problems `autodeco eval` scores: the task's, less any question of `--exclude-data`."""

from __future__ import annotations

import json
from pathlib import Path

from autodeco_lp.hub.jsonl import jsonl_lines
from autodeco_lp.tasks.problems import load_task


def eval_problems(task: str, task_options: dict | None, dataset_seed: int, problems: int, exclude_data: str | None):
    """`(task, problems)`: `problems` problems of `task` from generator seed `dataset_seed`, without
    those whose question is in the training JSONL `exclude_data`."""
    loaded = load_task(task, task_options or {}, dataset_seed=dataset_seed, size=problems)
    kept = loaded.problems
    if exclude_data:
        seen = training_questions(Path(exclude_data))
        kept = [p for p in kept if p.question not in seen]
        if not kept:
            raise ValueError(f"every problem appears in `--exclude-data` {exclude_data}; change --dataset-seed.")
    return loaded, kept


def training_questions(path: Path) -> set[str]:
    """The questions of a training JSONL: chat rows' user turns, and prompt rows' prompts and the
    question inside a few-shot prompt."""
    seen = set()
    for line in jsonl_lines(path.read_text(encoding="utf-8")):
        if line.strip():
            row = json.loads(line)
            for message in row.get("messages", []):
                if message.get("role") == "user":
                    seen.add(message["content"])
            if "prompt" in row:
                seen.add(row["prompt"])
                # A few-shot prompt (autodeco_lp.tasks.prompting) ends with "Question: <q>\nAnswer:".
                seen.add(row["prompt"].rsplit("Question: ", 1)[-1].removesuffix("\nAnswer:"))
    return seen
