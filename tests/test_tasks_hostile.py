"""Hostile JSONL task files: clear errors naming file and line, never a silently wrong gold answer."""

from __future__ import annotations

import json

import pytest

from autodeco_lp.tasks.problems import JsonlTask


def _write(tmp_path, data: bytes):
    path = tmp_path / "task.jsonl"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "row, match",
    [
        ({"question": "q", "answer": None}, "`answer` has to be a string or a number, but is None"),
        ({"question": "q", "answer": float("nan")}, "`answer` has to be finite, but is nan"),
        ({"question": "q", "answer": {"x": 1}}, "`answer` has to be a string or a number"),
        ({"question": "q", "answer": [1]}, "`answer` has to be a string or a number"),
        ({"question": "q", "answer": True}, "`answer` has to be a string or a number, but is True"),
        ({"question": "q", "answer": "A", "choices": [{"a": 1}]}, "non-empty list of strings"),
    ],
)
def test_answers_that_would_score_as_their_python_spelling_are_refused(tmp_path, row, match):
    path = _write(tmp_path, (json.dumps({"question": "ok", "answer": "1"}) + "\n" + json.dumps(row) + "\n").encode())
    with pytest.raises(ValueError, match=rf"task\.jsonl:2: .*{match}"):
        JsonlTask(path, size=10)


def test_non_utf8_names_file_and_line(tmp_path):
    path = _write(tmp_path, b'{"question": "a", "answer": "1"}\n{"question": "\xff", "answer": "2"}\n')
    with pytest.raises(ValueError, match=r"task\.jsonl:2: not UTF-8 \(byte 0xff\)"):
        JsonlTask(path, size=10)


def test_byte_order_mark_is_accepted(tmp_path):
    path = _write(tmp_path, b'\xef\xbb\xbf{"question": "a", "answer": 3}\n')
    assert JsonlTask(path, size=10).problems[0].answer == "3"


def test_deep_nesting_is_a_clear_error(tmp_path):
    path = _write(tmp_path, b"[" * 100_000 + b"]" * 100_000 + b"\n")
    with pytest.raises(ValueError, match=r"task\.jsonl:1: "):
        JsonlTask(path, size=10)
