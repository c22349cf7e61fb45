"""The benchmark scripts still run (tiny sizes; their numbers are never asserted: timings live in
benchmarks, not in tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_loss_runs_at_a_tiny_size():
    args = ["--positions", "32", "--vocab", "128", "300", "--hidden", "16", "--chunk", "8", "--repeats", "1"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_loss.py"), *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for line in ("naive: peak", "exact: peak", "topk: peak", "topk vs exact:", "exact vs naive:"):
        assert line in out.stdout, out.stdout
