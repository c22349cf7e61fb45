"""Answer extraction, task options, and the data builder's guards."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from autodeco_lp.tasks.problems import extract_answer, load_task, parse_task_options
from tests.conftest import require


@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        ("The answer is 42.", "42", "42"),
        ("6 * 7 = 42", "42", "42"),
        ("<answer>1,234</answer> and then 9", "1234", "1234"),
        ("First 3, then 5. Answer: -12 because", "-12", "-12"),
        ("Paris.", "Paris", "Paris"),
        ("Let me think.\nThe capital\nParis.\n", "Paris", "Paris"),
        ("no digits here", "7", "no digits here"),
        ("", "7", ""),
    ],
)
def test_extract_answer(completion, gold, expected):
    assert extract_answer(completion, gold) == expected


def test_parse_task_options():
    assert parse_task_options(["min_digits=1", "name=x", "flag=true"]) == {"min_digits": 1, "name": "x", "flag": True}
    with pytest.raises(ValueError, match="KEY=VALUE, but is 'oops'"):
        parse_task_options(["oops"])


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="not a known task"):
        load_task("gsm8k")


def test_reasoning_gym_task_scores_with_its_verifier():
    require("reasoning_gym")
    task = load_task("reasoning_gym:products", {"min_digits": 1, "max_digits": 1}, dataset_seed=3, size=5)
    problem = task.problems[0]
    assert task.score(problem, f"The result is {problem.answer}.") == 1.0
    assert task.score(problem, "I do not know") == 0.0
    assert (
        load_task("reasoning_gym:products", {"min_digits": 1, "max_digits": 1}, dataset_seed=3, size=5).problems
        == task.problems
    )


def test_data_sample_refuses_the_evaluation_seed():
    from autodeco_lp.cli.main import autodeco

    result = CliRunner().invoke(
        autodeco, ["data", "sample", "--task", "reasoning_gym:products", "--out", "x.jsonl", "--dataset-seed", "0"]
    )
    assert result.exit_code != 0 and "evaluation seed" in result.output


def test_data_sample_keeps_only_verified_solutions(tiny_model_dir, tmp_path, monkeypatch):
    """With a verifier that accepts answers ending in a digit, every kept row ends in one and none is lost."""
    require("reasoning_gym")
    from autodeco_lp.evaluation.rejection import SampleArgs, sample_training_data
    from autodeco_lp.tasks.problems import ReasoningGymTask

    seen = []

    def score(self, problem, completion):
        seen.append(completion)
        return 1.0 if completion.strip()[-1:].isdigit() else 0.0

    monkeypatch.setattr(ReasoningGymTask, "score", score)
    args = SampleArgs(
        model=str(tiny_model_dir),
        task="reasoning_gym:products",
        problems=6,
        samples=3,
        max_new_tokens=6,
        out=str(tmp_path / "d.jsonl"),
        batch_size=9,
        backend="hf",
    )
    summary = sample_training_data(args, {"min_digits": 1, "max_digits": 1}, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert summary.sampled == 18 and 0 < len(seen) <= 18  # empty completions are rejected unscored
    expected = [s for s in seen if s.strip()[-1:].isdigit()]
    assert [r["messages"][1]["content"] for r in rows] == expected and summary.accepted == len(rows)
    assert all(r["meta"]["dataset_seed"] == 1000 and r["meta"]["task"] == "reasoning_gym:products" for r in rows)


def test_data_sample_at_temperature_zero_keeps_greedy_solutions(tiny_model_dir, tmp_path, monkeypatch):
    """--temperature 0 is greedy: the kept completions are exactly the model's greedy outputs."""
    require("reasoning_gym")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autodeco_lp.evaluation.rejection import SampleArgs, sample_training_data
    from autodeco_lp.inference.sampling import sample_completions
    from autodeco_lp.tasks.problems import ReasoningGymTask

    monkeypatch.setattr(ReasoningGymTask, "score", lambda self, problem, completion: 1.0)
    with pytest.raises(ValueError, match="--samples 1"):
        SampleArgs(task="reasoning_gym:products", out="x.jsonl", temperature=0.0, samples=4)
    with pytest.raises(ValueError, match=r"`--dtype` has to be one of float32, bfloat16, but is 'fp16'"):
        SampleArgs(task="reasoning_gym:products", out="x.jsonl", dtype="fp16", backend="hf")
    args = SampleArgs(
        model=str(tiny_model_dir),
        task="reasoning_gym:products",
        problems=4,
        samples=1,
        temperature=0.0,
        max_new_tokens=6,
        out=str(tmp_path / "g.jsonl"),
        seed=1,
        backend="hf",
    )
    sample_training_data(args, {"min_digits": 1, "max_digits": 1}, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "g.jsonl").read_text().splitlines()]
    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )
    tokenizer.padding_side = "left"
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": r["messages"][0]["content"]}], tokenize=False, add_generation_prompt=True
        )
        for r in rows
    ]
    greedy = sample_completions(model, tokenizer, prompts, max_new_tokens=6, greedy=True, add_special_tokens=False)
    assert len(rows) == 4 and [r["messages"][1]["content"] for r in rows] == [s[0].text for s in greedy]
    assert all(r["meta"]["temperature"] == 0.0 for r in rows)
