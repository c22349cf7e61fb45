"""The problems `autodeco eval` scores: the task's, less any question of `--exclude-data`."""

from __future__ import annotations

from pathlib import Path

from autodeco_lp.evaluation.records import read_text
from autodeco_lp.hub.jsonl import jsonl_lines, parse_json
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
    for number, line in enumerate(jsonl_lines(read_text(path, "a training JSONL")), start=1):
        if not line.strip():
            continue
        where = f"`--exclude-data` {path}:{number}"
        row = parse_json(line, where)  # names path:line itself, deep nesting included
        messages = row.get("messages", []) if isinstance(row, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ValueError(f"{where}: not a training row ({{messages: [...]}} or {{prompt, completion}})")
        seen.update(m["content"] for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str))
        if isinstance(row.get("prompt"), str):
            seen.add(row["prompt"])
            # A few-shot prompt (autodeco_lp.tasks.prompting) ends with "Question: <q>\nAnswer:".
            seen.add(row["prompt"].rsplit("Question: ", 1)[-1].removesuffix("\nAnswer:"))
    return seen
