"""Hostile inputs to `autodeco eval`'s files and `autodeco data sample`'s output: every hand-edited or
impossible record is refused naming file:line (or the JSON path) and the fix; nothing is replaced or
dropped silently. Each case failed (traceback, silent trust or data loss) before the checked reader."""

from __future__ import annotations

import json
import logging
import re

import pytest

from autodeco_lp.engines.vllm_sampler import quiet_vllm_logs
from autodeco_lp.evaluation.args import EvalArgs
from autodeco_lp.evaluation.compare import read_report
from autodeco_lp.evaluation.merge import earlier_methods, merged_names
from autodeco_lp.evaluation.oracle import validation_choice
from autodeco_lp.evaluation.problems import training_questions
from autodeco_lp.evaluation.rejection import SampleArgs
from autodeco_lp.evaluation.runner import Evaluator, engine_order
from autodeco_lp.evaluation.store import ResultStore
from autodeco_lp.tasks.problems import load_task

GOOD = {"key": "greedy", "seed": 0, "index": 0, "correct": [0], "tokens": [3], "mean_t": [None], "mean_p": [None]}
GOOD["texts"] = ["5"]


def _cache(tmp_path, *lines: str | bytes):
    path = tmp_path / "cache-x.jsonl"
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"x": 1}', "no 'key'"),
        ("[1, 2]", "JSON object, not list"),
        (json.dumps({**GOOD, "correct": "abc"}), "'correct' has to be a non-empty list"),
        (json.dumps({**GOOD, "correct": [2]}), "'correct' holds 2"),
        (json.dumps({**GOOD, "correct": [True]}), "'correct' holds True"),
        (json.dumps({**GOOD, "seed": "0"}), "'seed' has to be a non-negative int"),
        (json.dumps({**GOOD, "texts": ["a", "b"]}), "lists differ in length"),
        ("{not json", "not a JSON record"),
        (b'{"key": "\xff"}', "not UTF-8"),
    ],
)
def test_a_malformed_cache_line_is_refused_naming_file_and_line(tmp_path, line, match):
    path = _cache(tmp_path, json.dumps(GOOD), line, json.dumps({**GOOD, "seed": 1}))
    with pytest.raises(ValueError, match=match) as info:
        ResultStore(path)
    assert f"{path}:2" in str(info.value) and "delete that line" in str(info.value)


def test_a_torn_last_line_is_skipped_and_cut_before_the_next_append(tmp_path):
    path = tmp_path / "cache-x.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD)[:20])
    store = ResultStore(path)
    assert store.get("greedy", 0, 0) == GOOD
    store.add([{**GOOD, "seed": 1}])
    again = ResultStore(path)  # the torn fragment is gone, both records read back
    assert again.get("greedy", 1, 0) == {**GOOD, "seed": 1} and len(path.read_text().splitlines()) == 2


@pytest.fixture
def evaluator(tmp_path):
    """An Evaluator's cache side only (no model): two problems of a JSONL task."""
    task_file = tmp_path / "t.jsonl"
    task_file.write_text('{"question": "2+3?", "answer": "5"}\n{"question": "1+1?", "answer": "2"}\n')
    ev = Evaluator.__new__(Evaluator)
    ev.task = load_task(str(task_file), size=2)
    ev.problems = ev.task.problems
    ev.store = ResultStore(tmp_path / "cache-x.jsonl")
    return ev


def test_a_hand_edited_all_correct_claim_is_refused(evaluator):
    evaluator.store.add([{**GOOD, "index": 1, "correct": [1], "texts": ["7"]}])  # "7" is not 2
    evaluator.store = ResultStore(evaluator.store.path)
    with pytest.raises(ValueError, match=r"cache-x.jsonl:1: .* claims correct \[1\], but the task's verifier"):
        evaluator._cached("greedy", 0, 1, samples=1)


def test_a_record_with_another_sample_count_is_refused(evaluator):
    evaluator.store.add([{**GOOD, "correct": [1], "texts": ["5"]}])
    evaluator.store = ResultStore(evaluator.store.path)
    assert evaluator._cached("greedy", 0, 0, samples=1)["correct"] == [1]  # consistent: used
    with pytest.raises(ValueError, match=r"cache-x.jsonl:1: .* has 1 samples, but this run takes 4"):
        evaluator._cached("greedy", 0, 0, samples=4)


def _report(tmp_path, methods, settings=None):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"methods": methods, "settings": settings if settings is not None else {}}))
    return path


METHOD = {"pass@1": 0.5, "pass@k": {"4": 0.7}, "per_problem": [0.5, 0.5], "temperature": 1.0, "top_p": 1.0}


@pytest.mark.parametrize(
    ("methods", "settings", "match"),
    [
        ({"autodeco": {**METHOD, "per_problem": [5.0, 0.5]}}, None, r"methods.autodeco.per_problem\[0\] .* \[0, 1\]"),
        ({"autodeco": 3}, None, "methods.autodeco has to be an object"),
        ({"autodeco": METHOD}, [], "'settings' has to be an object"),
        ({"default": {**METHOD, "pass@1": "high"}}, None, "methods.default.pass@1 has to be a number"),
        ({"default": {**METHOD, "pass@k": {"x": 0.3}}}, None, "pass@k has a key 'x'"),
        ({"default": {**METHOD, "pass@1": float("nan")}}, None, "pass@1 has to be a number"),
        ({"default": {**METHOD, "per_problem_pass@k": {"4": "a"}}}, None, "has to be a list"),
    ],
)
def test_an_impossible_results_json_is_refused_naming_the_field(tmp_path, methods, settings, match):
    path = _report(tmp_path, methods, settings)
    with pytest.raises(ValueError, match=match) as info:
        read_report(path, "--results")
    assert "`--results" in str(info.value) and str(path) in str(info.value)


def test_oracle_from_with_a_non_numeric_pass_at_1_is_refused(tmp_path):
    path = _report(tmp_path, {"default": {**METHOD, "pass@1": "high"}}, {"task": "a", "dataset_seed": 1})
    with pytest.raises(ValueError, match="--oracle-from .*pass@1 has to be a number"):
        validation_choice(str(path), "b", 0)


def test_results_json_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "results.json"
    path.write_bytes(b'{"methods": {}, "x": "\xff"}')
    with pytest.raises(ValueError, match=r"results.json:1: not UTF-8"):
        read_report(path, "RUN_A")


def test_data_sample_refuses_to_replace_an_existing_out(tmp_path):
    out = tmp_path / "train.jsonl"
    out.write_text('{"messages": []}\n')
    with pytest.raises(ValueError, match="exists and would be replaced; pass --overwrite"):
        SampleArgs(task="reasoning_gym:products", out=str(out), backend="hf")
    assert SampleArgs(task="reasoning_gym:products", out=str(out), backend="hf", overwrite=True).overwrite
    with pytest.raises(ValueError, match="is a folder"):
        SampleArgs(task="reasoning_gym:products", out=str(tmp_path), backend="hf", overwrite=True)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"problems": 0}, "`--problems` has to be a positive int, but is 0"),
        ({"samples": -1}, "`--samples` has to be a positive int, but is -1"),
        ({"max_new_tokens": True}, "`--max-new-tokens` has to be a positive int, but is True"),
        ({"batch_size": 0}, "`--batch-size` has to be a positive int, but is 0; leave it out"),
        ({"device": "gpu0"}, "`--device` has to be a torch device such as cpu or cuda:0, but is 'gpu0'"),
    ],
)
@pytest.mark.parametrize("command", ["eval", "data sample"])
def test_eval_and_data_sample_refuse_bad_counts_and_devices_before_loading(tmp_path, command, bad, match):
    options = {"task": "reasoning_gym:products", "backend": "hf", **bad}
    make = EvalArgs if command == "eval" else SampleArgs
    out = tmp_path if command == "eval" else tmp_path / "train.jsonl"
    with pytest.raises(ValueError, match=re.escape(match)):
        make(**options, out=str(out))


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{not json", r"d.jsonl:2: not JSON"),
        ("[" * 200 + "]" * 200, r"d.jsonl:2: JSON nested 200 levels deep"),
        ('["a"]', r"d.jsonl:2: not a training row"),
        ('{"messages": "hi"}', r"d.jsonl:2: not a training row"),
        (b'{"prompt": "\xff"}', r"d.jsonl:2: not UTF-8"),
    ],
)
def test_exclude_data_refuses_a_malformed_line_naming_file_and_line(tmp_path, line, match):
    path = tmp_path / "d.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "q?"}, {"role": "assistant", "content": "a"}]})
    path.write_bytes(good.encode() + b"\n" + (line if isinstance(line, bytes) else line.encode()) + b"\n")
    with pytest.raises(ValueError, match=match):
        training_questions(path)
    path.write_text(good + "\n\n" + json.dumps({"prompt": "Question: 1+1?\nAnswer:", "completion": " 2"}) + "\n")
    assert training_questions(path) == {"q?", "Question: 1+1?\nAnswer:", "1+1?"}


def test_each_engine_runs_once_whatever_the_method_order():
    names = ["default", "autodeco", "greedy", "top-p-only", "meanshift", "static:0.5,0.9", "temperature-only"]
    order = engine_order(names)
    assert order == ["autodeco", "top-p-only", "temperature-only", "greedy", "default", "meanshift", "static:0.5,0.9"]


def test_an_earlier_runs_methods_are_kept_when_its_settings_match(tmp_path):
    settings = {"task": "t", "seeds": "0", "model_sha256": "m", "problems_sha256": "p"}
    _report(tmp_path, {"greedy": METHOD, "oracle-test": METHOD, "static:0.5,0.9": METHOD}, settings)
    earlier = earlier_methods(tmp_path, settings)
    assert merged_names(["autodeco"], earlier) == ["autodeco", "greedy", "static:0.5,0.9"]
    assert earlier_methods(tmp_path, {**settings, "model_sha256": "other"}) == {}  # another model: replaced
    (tmp_path / "results.json").write_text('{"methods": {"a": 3}}')
    with pytest.raises(ValueError, match="not an `autodeco eval` results.json .*move it away"):
        earlier_methods(tmp_path, settings)


def test_vllm_logs_are_quiet_unless_the_user_set_the_level(monkeypatch):
    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    monkeypatch.setattr(logging.getLogger("vllm"), "level", logging.NOTSET)
    quiet_vllm_logs()
    import os

    assert os.environ["VLLM_LOGGING_LEVEL"] == "WARNING" and logging.getLogger("vllm").level == logging.WARNING
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "INFO")
    monkeypatch.setattr(logging.getLogger("vllm"), "level", logging.NOTSET)
    quiet_vllm_logs()
    assert os.environ["VLLM_LOGGING_LEVEL"] == "INFO" and logging.getLogger("vllm").level == logging.NOTSET
