"""The README's headline table is the numbers docs/results/*/results.json hold (no hand-copied drift)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _row(task: str) -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^\| {task} \(.*$", readme, re.M)
    assert match, f"README headline table has no row for {task}"
    return [cell.strip() for cell in match.group(0).strip("|").split("|")][1:]


@pytest.mark.parametrize("task", ["products", "chain_sum", "basic_arithmetic"])
def test_readme_headline_row_matches_results_json(task):
    methods = json.loads((ROOT / "docs" / "results" / task / "results.json").read_text())["methods"]
    greedy, default, autodeco, meanshift, oracle = _row(task)
    assert greedy == f"{methods['greedy']['pass@1']:.3f}"
    assert default == f"{methods['default']['pass@1']:.3f}"
    assert autodeco == f"{methods['autodeco']['pass@1']:.3f} ± {methods['autodeco']['pass@1_std']:.3f}"
    assert meanshift == f"{methods['meanshift']['pass@1']:.3f}"
    grid = methods["oracle-grid"]
    assert oracle == f"{grid['pass@1']:.3f} (T={grid['temperature']:.1f}, P={grid['top_p']:.1f})"
