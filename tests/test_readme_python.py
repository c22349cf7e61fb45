"""Every Python block of the README runs as printed (offline, on the embedded model)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def test_the_readme_has_python_blocks():
    assert BLOCKS


@pytest.mark.integration
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, capsys):
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    if "What is 5 * 3?" in BLOCKS[index]:  # the quick-start example: an answer and a per-token trace
        assert "15" in printed, printed
        assert "tensor(" in printed
