"""Hostile files, round two: deeply nested JSON in every reader of a user's file, and merged checkpoints
that are incomplete, ambiguous or claim another base model (checked on the weight stream, no engine)."""

from __future__ import annotations

import json

import pytest

from autodeco_lp.evaluation.records import read_cache
from autodeco_lp.hub.jsonl import MAX_NESTING, nesting_depth, parse_json
from autodeco_lp.hub.options_file import read_mapping
from autodeco_lp.tasks.problems import JsonlTask
from autodeco_lp.training.data import load_jsonl
from tests.conftest import tiny_char_tokenizer

# 100,000 levels: json and PyYAML recurse once per level, far past Python's stack.
DEEP = {
    "closed list": "[" * 100_000 + "]" * 100_000,
    "open list": "[" * 100_000,
    "objects": '{"a":' * 100_000 + "1" + "}" * 100_000,
}


def _read(kind: str, tmp_path, deep: str):
    """Read a file whose second line (or value) is `deep` with the reader of `kind`."""
    if kind == "training data":
        path = tmp_path / "d.jsonl"
        path.write_text('{"prompt": "a", "completion": "b"}\n' + deep + "\n")
        return path, lambda: load_jsonl(path, tiny_char_tokenizer(), 64)
    if kind == "task":
        path = tmp_path / "t.jsonl"
        path.write_text('{"question": "a", "answer": "b"}\n' + deep + "\n")
        return path, lambda: JsonlTask(path, 10)
    if kind == "eval cache":
        path = tmp_path / "cache-x.jsonl"
        path.write_text("\n" + deep + "\n")
        return path, lambda: read_cache(path)
    path = tmp_path / ("c.yaml" if kind == "yaml config" else "c.json")
    path.write_text("a: 1\nb: " + deep + "\n" if kind == "yaml config" else '{"a": 1,\n"b": ' + deep + "}\n")
    return path, lambda: read_mapping(path, f"`--config` {str(path)!r}")


@pytest.mark.parametrize("deep", list(DEEP), ids=list(DEEP))
@pytest.mark.parametrize("kind", ["training data", "task", "eval cache", "yaml config", "json config"])
def test_deep_nesting_is_refused_naming_file_and_line(tmp_path, kind, deep):
    """Training data used to end in a RecursionError; the configs named no line."""
    path, read = _read(kind, tmp_path, DEEP[deep])
    with pytest.raises(ValueError, match="nested") as info:
        read()
    assert f"{path}:2" in str(info.value)


def test_nesting_depth_ignores_brackets_inside_strings():
    text = json.dumps({"completion": "[" * 500, "messages": [{"content": "{{"}]})
    assert nesting_depth(text) == 3
    assert parse_json(text, "f:1")["completion"] == "[" * 500  # a completion full of brackets still reads
    limit = "[" * MAX_NESTING + "]" * MAX_NESTING
    assert nesting_depth(limit) == MAX_NESTING and parse_json(limit, "f:1") is not None
    with pytest.raises(ValueError, match=rf"^f:7: JSON nested {MAX_NESTING + 1} levels deep"):
        parse_json("[" + limit + "]", "f:7")
    with pytest.raises(ValueError, match=r"^f:3: not JSON \(Expecting") as info:
        parse_json("{not json", "f:3")
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


def test_a_torn_deep_last_cache_line_is_still_skipped(tmp_path):
    """A killed writer's last line (no newline) is regenerated, whatever it holds."""
    path = tmp_path / "cache-x.jsonl"
    path.write_text("[" * 100_000)
    assert read_cache(path) == {}
