"""`autodeco bench generate --backend vllm` (README, Serving): runs end to end at a tiny size, in its own
process (it starts two engines; deleting in-process engines breaks the others in this process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import tests.vllm_support  # noqa: F401 (skips without vLLM locally, fails under CI)
from tests.conftest import run_bench

pytestmark = [pytest.mark.vllm, pytest.mark.integration]


def test_bench_generate_vllm_backend_runs_and_reports_ratios():
    autodeco = Path(sys.executable).parent / "autodeco"
    args = ["bench", "generate", "--backend", "vllm", "--model", "smollm2", "--batch-sizes", "1,2"]
    args += ["--repeats", "1", "--new-tokens", "4"]
    out = subprocess.run([str(autodeco), *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["1", "2"], out.stdout
    for row in rows:  # static tok/s, autodeco tok/s, ratio median: positive numbers
        assert all(float(value) > 0 for value in row[1:4]), row
    assert "backend=vllm" in out.stdout and "heads=" in out.stdout


def test_bench_eval_times_the_vllm_backend_beside_hf():
    args = ["--model", "smollm2", "--backends", "hf", "vllm", "--dtypes", "float32", "--batch-sizes", "2"]
    out = run_bench("bench_eval.py", *args, "--new-tokens", "3", "--repeats", "1", timeout=600)
    rates = [float(line.split()[4]) for line in out.stdout.splitlines() if " batch " in line]
    assert len(rates) == 2 and min(rates) > 0, out.stdout
    assert "hf   float32 batch    2:" in out.stdout and "vllm   float32 batch    2:" in out.stdout, out.stdout
    assert "vllm_threads=" in out.stdout, out.stdout
