"""JSONL readers split records at "\\n" only: a completion holding U+2028 (or another Unicode line
boundary that `json.dumps(..., ensure_ascii=False)` leaves raw) stays one record everywhere."""

from __future__ import annotations

import json

import pytest

from autodeco_lp.evaluation.store import ResultStore
from autodeco_lp.hub.jsonl import jsonl_lines
from autodeco_lp.training.data import load_jsonl
from tests.conftest import tiny_char_tokenizer

# The Unicode line boundaries str.splitlines() splits at that json.dumps(ensure_ascii=False) leaves raw
# (the ASCII ones, \x0b \x0c \x1c-\x1e, it escapes as control characters, so they cannot tear a record).
BOUNDARIES = ["\u2028", "\u2029", "\x85"]


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_jsonl_lines_keeps_a_record_with_a_unicode_line_boundary_whole(boundary):
    record = {"text": f"one{boundary}two"}
    text = json.dumps(record, ensure_ascii=False) + "\r\n" + json.dumps({"n": 2}) + "\n"
    assert boundary in text and len(text.splitlines()) > 2  # the case splitlines() gets wrong
    lines = [line for line in jsonl_lines(text) if line]
    assert [json.loads(line) for line in lines] == [record, {"n": 2}]


def test_the_result_cache_reads_back_a_completion_with_u2028(tmp_path):
    path = tmp_path / "cache.jsonl"
    records = [
        {"key": "static", "seed": 0, "index": i, "texts": [f"a\u2028b{i}"], "correct": [i % 2], "tokens": [3]}
        | {"mean_t": [None], "mean_p": [None]}
        for i in range(3)
    ]
    ResultStore(path).add(records)
    assert "\u2028" in path.read_text(encoding="utf-8")  # written raw, as before
    again = ResultStore(path)
    assert [again.get("static", 0, i) for i in range(3)] == records


def test_training_rows_with_u2028_are_one_row_each(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"prompt": "q", "completion": "x\u2028y"}, {"prompt": "r", "completion": "z"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    data = load_jsonl(path, tiny_char_tokenizer(), 64)
    assert data.rows == 2 and len(data.examples) == 2
