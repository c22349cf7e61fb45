"""examples/vllm_trace.py, the documented `vllm.LLM` path, runs as a plain script: an engine in the process,
no insecure serialization, one (T, P) per sampled token, the heads' T inside their range."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require

pytestmark = [pytest.mark.vllm, pytest.mark.integration]


def test_the_vllm_trace_example_runs_as_a_plain_script():
    require("vllm")
    script = Path(__file__).resolve().parents[1] / "examples" / "vllm_trace.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}  # nothing set for it
    env["VLLM_CPU_KVCACHE_SPACE"] = "1"  # beside the test run (the script's own default is 4 GiB)
    result = subprocess.run(
        [sys.executable, str(script), "What is 5 * 3?"], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "INSECURE_SERIALIZATION" not in result.stderr
    rows = re.findall(r"T=(\d\.\d{3})  P=(\d\.\d{3})", result.stdout)
    assert 1 <= len(rows) <= 32, result.stdout
    temperatures = [float(t) for t, _ in rows]
    assert all(0.01 <= t <= 2.0 for t in temperatures), temperatures  # the shipped head's range
    assert len(set(temperatures)) > 1, temperatures  # per token, not one value
