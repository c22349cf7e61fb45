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
    completion = result.output.splitlines()[1]
    assert "15" in completion, completion  # "What is 5 * 3?"
    rows = [line.split() for line in result.output.splitlines() if re.match(r'^\s+".*"\s+[\d.]+\s+[\d.]+$', line)]
    temperatures = [float(row[-2]) for row in rows]
    assert len(temperatures) >= 20 and min(temperatures) < 0.3 < max(temperatures)  # T moves per token
