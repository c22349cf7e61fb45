"""`autodeco data sample --backend vllm` (the default where vLLM is installed) on the embedded model.

Greedy rows are the hf backend's greedy rows exactly (the engines' greedy completions agree, as in
tests/test_eval_vllm.py); sampled rows are all verified solutions with their metadata. vLLM runs
in a subprocess, as the eval tests do (one in-process engine per process).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tests.vllm_support  # noqa: F401 (skips without vLLM locally, fails under CI)
from autodeco_lp.evaluation.rejection import SampleArgs, sample_training_data
from autodeco_lp.tasks.problems import TRAIN_DATASET_SEED, load_task

pytestmark = [pytest.mark.vllm, pytest.mark.integration]

TASK = "reasoning_gym:products"
OPTIONS = {"min_digits": 1, "max_digits": 1}


def _vllm_sample(out: Path, *extra: str) -> str:
    argv = [str(Path(sys.executable).parent / "autodeco"), "data", "sample", "--task", TASK, "--out", str(out)]
    argv += [arg for k, v in OPTIONS.items() for arg in ("--task-option", f"{k}={v}")]
    done = subprocess.run([*argv, "--max-new-tokens", "24", *extra], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "on vllm" in done.stdout  # --backend auto chose vLLM, and says so
    return done.stdout


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_greedy_rows_equal_the_hf_backends(tmp_path):
    _vllm_sample(tmp_path / "vllm.jsonl", "--problems", "12", "--samples", "1", "--temperature", "0")
    args = SampleArgs(
        task=TASK,
        problems=12,
        samples=1,
        temperature=0.0,
        max_new_tokens=24,
        out=str(tmp_path / "hf.jsonl"),
        backend="hf",
    )
    sample_training_data(args, OPTIONS, progress=False)
    vllm, hf = _rows(tmp_path / "vllm.jsonl"), _rows(tmp_path / "hf.jsonl")
    assert len(hf) >= 3  # the model solves some one-digit products greedily
    assert [r["messages"] for r in vllm] == [r["messages"] for r in hf]


def test_sampled_rows_are_verified_solutions(tmp_path):
    stdout = _vllm_sample(tmp_path / "d.jsonl", "--problems", "10", "--samples", "4", "--temperature", "0.5")
    rows = _rows(tmp_path / "d.jsonl")
    assert f"kept {len(rows)} of 40 samples" in stdout and len(rows) >= 5
    task = load_task(TASK, OPTIONS, dataset_seed=TRAIN_DATASET_SEED, size=10)
    for row in rows:
        problem = task.problems[row["meta"]["index"]]
        assert row["messages"][0]["content"] == problem.question
        assert task.score(problem, row["messages"][1]["content"]) >= 1.0
        assert row["meta"]["temperature"] == 0.5 and 0 <= row["meta"]["sample"] < 4
    # four seeded samples per problem: at T = 0.5 they are not all one completion
    assert len({row["messages"][1]["content"] for row in rows}) > len({row["meta"]["index"] for row in rows})
