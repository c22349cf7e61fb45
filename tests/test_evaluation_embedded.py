"""`autodeco eval` and `autodeco bench generate` on the embedded model (marked `integration`)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from autodeco_lp.cli.main import autodeco as cli
from tests.conftest import require

pytestmark = pytest.mark.integration


def test_eval_cli_on_the_embedded_model(tmp_path):
    require("reasoning_gym")
    args = [
        "eval",
        "--backend",
        "hf",  # in this process (the vllm backend's CLI runs in test_eval_vllm.py, as a subprocess)
        "--task",
        "reasoning_gym:products",
        "--task-option",
        "min_digits=1",
        "--task-option",
        "max_digits=1",
        "--problems",
        "3",
        "--samples",
        "2",
        "--seeds",
        "0",
        "--max-new-tokens",
        "6",
        "--methods",
        "greedy,autodeco,meanshift",
        "--out",
        str(tmp_path),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "| meanshift |" in result.output
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["settings"]["problems_evaluated"] == 3
    assert 0 < report["methods"]["autodeco"]["mean_temperature"] < 2


def test_bench_generate_cli():
    result = CliRunner().invoke(cli, ["bench", "generate", "--new-tokens", "2", "--repeats", "1", "--batch-sizes", "1"])
    assert result.exit_code == 0, result.output
    assert "ratio median" in result.output and "heads=" in result.output


def test_plot_trace_cli(tmp_path):
    require("matplotlib")
    result = CliRunner().invoke(
        cli, ["plot", "trace", "--max-new-tokens", "4", "--out", str(tmp_path / "t.png"), "What is 2 + 2?"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
