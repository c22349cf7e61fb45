"""The README's main job runs as printed and shows a correct answer with its per-token trace."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from autodeco_lp.cli.main import autodeco

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_readme_main_command_answers_correctly_with_a_trace():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"\.venv/bin/autodeco (generate [^\n]+)", readme)
    assert match, "the README's first command no longer runs `autodeco generate`"
    args = shlex.split(match.group(1))
    assert "--show-trace" in args and "--model" in args
    result = CliRunner().invoke(autodeco, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "### What is 5 * 3?"
    completion = lines[1]
    assert "15" in completion, completion
    rows = [line.split() for line in lines if re.match(r'^\s+".*"\s+[\d.]+\s+[\d.]+$', line)]
    temperatures = [float(row[-2]) for row in rows]
    assert len(temperatures) >= 20 and min(temperatures) < 0.3 < max(temperatures)  # T moves per token
    # What the README says of this trace: T between ~0.20 and ~0.50, mean ~0.35, P in (0, 1].
    assert min(temperatures) < 0.25 and max(temperatures) > 0.45
    t, p = map(float, next(line for line in lines if line.strip().startswith("mean")).split()[1:])
    assert 0.3 < t < 0.4 and 0 < p <= 1
