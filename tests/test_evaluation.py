"""The evaluation harness: pass@k, the oracle procedure, JSONL tasks, and resuming from the cache."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import pytest

from autodeco_lp.engines import hf_sampler
from autodeco_lp.evaluation import oracle
from autodeco_lp.evaluation.args import EvalArgs
from autodeco_lp.evaluation.methods import Decoding, parse_methods
from autodeco_lp.evaluation.passk import mean_std, pass_at_k
from autodeco_lp.evaluation.runner import run_eval
from autodeco_lp.evaluation.summary import summarise
from autodeco_lp.tasks.problems import load_task
from tests.conftest import require


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (4, 0, 1, 0.0),
        (4, 4, 4, 1.0),
        (4, 1, 1, 0.25),
        (4, 2, 2, 1 - 1 / 6),  # 1 of the 6 pairs has no correct sample
        (5, 2, 4, 1.0),  # only 3 wrong: every 4-subset holds a correct one
        (16, 3, 4, 1 - comb(13, 4) / comb(16, 4)),
        (200, 7, 16, 1 - comb(193, 16) / comb(200, 16)),
    ],
)
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="n=4, c=5, k=1"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_summary_averages_problems_then_seeds():
    records = {
        0: [
            {"correct": [1, 0, 0, 0], "tokens": [3] * 4, "mean_t": [0.5] * 4, "mean_p": [0.9] * 4},
            {"correct": [1, 1, 1, 1], "tokens": [1] * 4, "mean_t": [1.0] * 4, "mean_p": [0.5] * 4},
        ],
        1: [
            {"correct": [0, 0, 0, 0], "tokens": [3] * 4, "mean_t": [0.5] * 4, "mean_p": [0.9] * 4},
            {"correct": [1, 1, 0, 0], "tokens": [1] * 4, "mean_t": [1.0] * 4, "mean_p": [0.5] * 4},
        ],
    }
    s = summarise(Decoding("autodeco"), records, samples=4)
    seed0, seed1 = (0.25 + 1.0) / 2, (0.0 + 0.5) / 2
    assert s["pass@1"] == pytest.approx((seed0 + seed1) / 2)
    assert s["pass@1_std"] == pytest.approx(mean_std([seed0, seed1])[1])
    assert s["pass@k"]["4"] == pytest.approx((1.0 + 1.0) / 2 / 2 + (0.0 + 1.0) / 2 / 2)
    assert "16" not in s["pass@k"]
    assert s["mean_temperature"] == pytest.approx((0.5 * 12 + 1.0 * 4) * 2 / 32)  # token-weighted


class _FakeEvaluator:
    """pass@1 of a static (T, P) = a known table, to check the oracle's two-stage search."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def run(self, decoding, label):
        self.calls.append((decoding.temperature, decoding.top_p))
        score = self.table(decoding.temperature, decoding.top_p)
        correct = [1] * round(score * 10) + [0] * (10 - round(score * 10))
        return {0: [{"correct": correct, "tokens": [1] * 10, "mean_t": [None] * 10, "mean_p": [None] * 10}]}


def test_oracle_grid_sweeps_t_at_p1_then_p_at_the_best_t():
    def table(t, p):  # best T at P = 1 is 0.3 (0.6); at T = 0.3 the best P is 0.7 (0.8); T = 0.9, P = 0.2 would be 1.0
        if p == 1.0:
            return {0.3: 0.6}.get(t, 0.2)
        if t == 0.3:
            return 0.8 if p == 0.7 else 0.3
        return 1.0

    fake = _FakeEvaluator(table)
    best = oracle.oracle_grid(fake, samples=10)
    assert [c for c in fake.calls[:10]] == [(round(0.1 * i, 1), 1.0) for i in range(1, 11)]
    assert [c for c in fake.calls[10:]] == [(0.3, round(0.1 * i, 1)) for i in range(1, 11)]
    assert (best["temperature"], best["top_p"], best["pass@1"]) == (0.3, 0.7, pytest.approx(0.8))
    assert best["grid"]["best_temperature"] == 0.3


def test_oracle_grid_breaks_ties_towards_the_lowest_value():
    best = oracle.oracle_grid(_FakeEvaluator(lambda t, p: 0.5), samples=10)
    assert (best["temperature"], best["top_p"]) == (0.1, 0.1)


def test_jsonl_task_scoring(tmp_path):
    path = tmp_path / "task.jsonl"
    rows = [
        {"question": "2+2?", "answer": 4},
        {"question": "Capital of France?", "answer": "Paris"},
        {"question": "Pick the even one.", "choices": ["three", "four"], "answer": "four"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(str(path))
    numeric, exact, choice = task.problems
    assert task.score(numeric, "It is 4.0") == 1.0 and task.score(numeric, "5") == 0.0
    assert task.score(exact, "The answer is paris.") == 1.0 and task.score(exact, "Lyon") == 0.0
    assert "B. four" in choice.question and choice.answer == "B"
    assert task.score(choice, "B") == 1.0 and task.score(choice, "A") == 0.0 and task.score(choice, "It is four") == 1.0
    path.write_text('{"question": "x"}\n')
    with pytest.raises(ValueError, match="task.jsonl:1"):
        load_task(str(path))


def test_parse_methods():
    assert parse_methods("greedy, static:0.5,0.9,greedy,autodeco") == ["greedy", "static:0.5,0.9", "autodeco"]
    with pytest.raises(ValueError, match="unknown method 'beam'"):
        parse_methods("greedy,beam")


def test_eval_reproduces_its_numbers_from_the_cache(small_eval, monkeypatch):
    methods = "greedy,default,autodeco,meanshift,temperature-only,top-p-only,static:0.5,0.9"
    first = run_eval(EvalArgs(**small_eval, methods=methods), progress=False)
    assert set(first["methods"]) == {
        "greedy",
        "default",
        "autodeco",
        "meanshift",
        "temperature-only",
        "top-p-only",
        "static:0.5,0.9",
    }
    auto, shift = first["methods"]["autodeco"], first["methods"]["meanshift"]
    assert len(auto["per_problem"]) == 6 and all(0 <= x <= 1 for x in auto["per_problem"])
    assert sum(auto["per_problem"]) / 6 == pytest.approx(auto["pass@1"])  # seeds weigh equally
    assert set(first["comparisons"]) == {f"autodeco - {m}" for m in first["methods"] if m != "autodeco"}
    assert "Paired differences in pass@1" in (Path(small_eval["out"]) / "results.md").read_text()
    assert shift["temperature"] == pytest.approx(round(auto["mean_temperature"], 3))
    assert first["methods"]["temperature-only"]["mean_top_p"] == pytest.approx(1.0)
    assert first["methods"]["top-p-only"]["mean_temperature"] == pytest.approx(1.0)
    # A second run (e.g. after a kill) must not generate anything and must give the same numbers.
    monkeypatch.setattr(hf_sampler, "sample_completions", lambda *a, **k: pytest.fail("regenerated"))
    second = run_eval(EvalArgs(**small_eval, methods=methods), progress=False)
    assert second["methods"] == first["methods"]


def test_eval_resumes_a_killed_run_exactly(small_eval, tmp_path):
    """Drop the last half of the cache (a kill mid-run, plus a torn line): the rerun regenerates
    the missing batches with the same seeds and lands on the same numbers."""
    args = EvalArgs(**small_eval, methods="default,autodeco")
    first = run_eval(args, progress=False)
    cache = next((tmp_path / "out").glob("cache-*.jsonl"))
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[: len(lines) // 2]) + "\n" + lines[-1][:20])
    second = run_eval(args, progress=False)
    assert second["methods"] == first["methods"]
    assert (tmp_path / "out" / "results.md").read_text().count("| autodeco |") == 1


def test_bench_generate_runs_both_arms(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autodeco_lp.evaluation.bench import bench_generate, format_rows
    from tests.conftest import random_heads

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = bench_generate(
        model, tokenizer, random_heads(hidden=32, vocab=104), new_tokens=3, repeats=2, batch_sizes=(1, 2)
    )
    assert [r.batch for r in rows] == [1, 2]
    assert all(r.ratio_min <= r.ratio_median <= r.ratio_max and r.static_tokens_per_second > 0 for r in rows)
    assert all(r.heads_ratio_min <= r.heads_ratio_median <= r.heads_ratio_max for r in rows)
    assert all(r.same_filter_tokens_per_second > 0 for r in rows)
    table = format_rows(rows)
    assert "n/a (CPU)" in table and "heads ratio median" in table


def test_plots_write_images(tmp_path):
    require("matplotlib")
    from click.testing import CliRunner

    from autodeco_lp.cli.main import autodeco as cli
    from autodeco_lp.evaluation.plots import plot_trace
    from autodeco_lp.inference.textgen import Completion

    grid = oracle.oracle_grid(_FakeEvaluator(lambda t, p: t * p), samples=10)
    line = {
        "pass@1": 0.4,
        "pass@1_std": 0.0,
        "pass@k": {"1": 0.4, "4": 0.7, "16": 0.9},
        "temperature": None,
        "top_p": None,
    }
    report = {
        "settings": {"task": "t"},
        "methods": {"oracle-grid": grid, "autodeco": line, "meanshift": {**line, "pass@1": 0.3}},
    }
    (tmp_path / "results.json").write_text(json.dumps(report))
    for kind in ("grid", "passk"):
        result = CliRunner().invoke(
            cli, ["plot", kind, "--results", str(tmp_path), "--out", str(tmp_path / f"{kind}.png")]
        )
        assert result.exit_code == 0, result.output
        assert (tmp_path / f"{kind}.png").read_bytes()[:4] == b"\x89PNG"
    completion = Completion("p", "ab", ["a", "b"], [0.5, 0.7], [0.9, 1.0])
    assert plot_trace(completion, tmp_path / "trace.png").stat().st_size > 1000
    missing = CliRunner().invoke(cli, ["plot", "grid", "--results", str(tmp_path / "nope"), "--out", "x.png"])
    assert missing.exit_code != 0 and "`--results" in missing.output and "does not exist" in missing.output


def test_refitted_heads_in_the_same_folder_are_not_served_from_the_cache(small_eval):
    from tests.conftest import constant_heads

    first = run_eval(EvalArgs(**small_eval, methods="default,autodeco"), progress=False)
    constant_heads(0.3, 0.9, hidden=32, vocab=104).save_pretrained(small_eval["heads"])  # new weights, same path
    second = run_eval(EvalArgs(**small_eval, methods="default,autodeco"), progress=False)
    assert second["methods"]["default"] == first["methods"]["default"]  # untouched by the heads
    assert second["methods"]["autodeco"]["mean_temperature"] == pytest.approx(0.3, abs=1e-4)
    assert first["methods"]["autodeco"]["mean_temperature"] != pytest.approx(0.3, abs=1e-2)


def test_summary_keeps_each_problems_pass_at_k():
    def record(correct):
        return {
            "correct": correct,
            "tokens": [1] * len(correct),
            "mean_t": [None] * len(correct),
            "mean_p": [None] * len(correct),
        }

    # 5 samples: pass@4 of one problem with c correct is 1 - C(5 - c, 4) / C(5, 4).
    per_seed = {
        0: [record([1, 0, 0, 0, 0]), record([1, 1, 0, 0, 0])],
        1: [record([0, 0, 0, 0, 0]), record([1, 1, 1, 1, 1])],
    }
    s = summarise(Decoding("static", 0.5, 1.0), per_seed, samples=5)
    assert s["per_problem_pass@k"]["4"] == pytest.approx([(1 - 1 / 5 + 0.0) / 2, (1.0 + 1.0) / 2])
    assert set(s["per_problem_pass@k"]) == {"4"}  # k = 1 is `per_problem`; 16 > 5 samples
    assert sum(s["per_problem_pass@k"]["4"]) / 2 == pytest.approx(s["pass@k"]["4"])
    # 16 samples with 3 correct: both k = 4 and k = 16, one seed.
    sixteen = summarise(Decoding("static", 0.5, 1.0), {0: [record([1] * 3 + [0] * 13)]}, samples=16)
    assert sixteen["per_problem_pass@k"] == {"4": [pytest.approx(1 - comb(13, 4) / comb(16, 4))], "16": [1.0]}
    assert summarise(Decoding("greedy"), {0: [record([1])]}, samples=16)["per_problem_pass@k"] == {}


def _validation_file(folder: Path, methods: dict, dataset_seed: int = 1, task: str = "task.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"task": task, "dataset_seed": dataset_seed, "problems_evaluated": 50}
    (folder / "results.json").write_text(json.dumps({"settings": settings, "methods": methods}))
    return folder


def _static(t, p, pass1):
    return {"temperature": t, "top_p": p, "pass@1": pass1}


def test_oracle_validation_takes_the_best_static_of_the_validation_run(tmp_path):
    methods = {
        "default": _static(1.0, 1.0, 0.4),
        "static:0.5,1.0": _static(0.5, 1.0, 0.6),
        "static:0.3,1.0": _static(0.3, 1.0, 0.6),  # tie: the lower T wins over 0.5 ...
        "static:0.3,0.9": _static(0.3, 0.9, 0.6),  # ... and at that T the lower P
        "static:0.4,0.8": _static(0.4, 0.8, 0.6),  # a lower P, but a higher T: T decides first
        "autodeco": {"temperature": None, "top_p": None, "pass@1": 0.9},  # not static: never chosen
    }
    folder = _validation_file(tmp_path / "val", methods)
    for where in (folder, folder / "results.json"):
        chosen = oracle.validation_choice(str(where), "task.jsonl", 0)
        assert chosen["decoding"] == Decoding("static", 0.3, 0.9)
        assert (chosen["chosen_method"], chosen["validation_pass@1"]) == ("static:0.3,0.9", 0.6)
        assert chosen["chosen_on"] == {
            "path": str(folder / "results.json"),
            "task": "task.jsonl",
            "dataset_seed": 1,
            "problems": 50,
        }
        assert len(chosen["chosen_from"]) == 5
    methods["default"]["pass@1"] = 0.7
    _validation_file(folder, methods)
    assert oracle.validation_choice(str(folder), "task.jsonl", 0)["decoding"] == Decoding("static", 1.0, 1.0)


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing", r"--oracle-from .*nope.*does not exist; pass the --out folder"),
        ("not json", r"--oracle-from .* is not an `autodeco eval` results.json"),
        ("no statics", r"--oracle-from .* has no static decoding to choose from \(it has greedy, autodeco\)"),
        ("same problems", r"--oracle-from .* was run on this run's problems \(task task.jsonl, dataset seed 0\)"),
    ],
)
def test_oracle_validation_refuses_bad_validation_runs(tmp_path, case, match):
    folder = tmp_path / "val"
    if case == "missing":
        folder = tmp_path / "nope"
    elif case == "not json":
        folder.mkdir()
        (folder / "results.json").write_text("{not json")
    elif case == "no statics":
        _validation_file(folder, {"greedy": _static(None, None, 0.5), "autodeco": _static(None, None, 0.6)})
    else:
        _validation_file(folder, {"default": _static(1.0, 1.0, 0.5)}, dataset_seed=0)
    with pytest.raises(ValueError, match=match):
        oracle.validation_choice(str(folder), "task.jsonl", 0)


def test_oracle_validation_needs_oracle_from_and_the_other_way_round(small_eval):
    with pytest.raises(ValueError, match="oracle-validation but `--oracle-from` is None: pass --oracle-from"):
        EvalArgs(**small_eval, methods="default,oracle-validation")
    with pytest.raises(ValueError, match="`--oracle-from val/` is only read for method oracle-validation"):
        EvalArgs(**small_eval, methods="default", oracle_from="val/")


def test_oracle_test_is_the_best_static_of_these_problems():
    from types import SimpleNamespace

    results = {
        "default": _static(1.0, 1.0, 0.4),
        "static:0.5,1.0": _static(0.5, 1.0, 0.7),
        "static:0.2,1.0": _static(0.2, 1.0, 0.7),  # ties with 0.5: the lower T
        "autodeco": _static(None, None, 0.9),
        "meanshift": _static(0.6, 0.9, 0.95),  # static, but read off AutoDeco: not a candidate
    }
    args = SimpleNamespace(task="task.jsonl", dataset_seed=0)
    best = oracle.oracle_test(results, args, problems=6)
    assert (best["temperature"], best["top_p"], best["pass@1"]) == (0.2, 1.0, 0.7)
    assert best["chosen_method"] == "static:0.2,1.0" and best["optimistic"] is True
    assert best["chosen_from"] == ["default", "static:0.5,1.0", "static:0.2,1.0"]
    assert best["chosen_on"] == {"path": None, "task": "task.jsonl", "dataset_seed": 0, "problems": 6}
    del results["default"]
    assert oracle.oracle_test(results, args, problems=6) is None  # 2 statics: no oracle-test


def test_eval_reports_oracles_pass_at_k_intervals_and_the_frontier(small_eval, tmp_path):
    out = Path(small_eval["out"])
    run_eval(EvalArgs(**small_eval, methods="default"), progress=False)
    validation = _validation_file(
        tmp_path / "val",
        {"default": _static(1.0, 1.0, 0.1), "static:0.3,0.8": _static(0.3, 0.8, 0.5)},
        task=small_eval["task"],
    )
    methods = "greedy,default,autodeco,meanshift,static:0.5,1.0,oracle-validation"
    report = run_eval(EvalArgs(**small_eval, methods=methods, oracle_from=str(validation)), progress=False)
    # --oracle-from changes what is reported, never a completion: the cache is the same file.
    assert len(list(out.glob("cache-*.jsonl"))) == 1
    chosen = report["methods"]["oracle-validation"]
    assert (chosen["decoding"], chosen["validation_pass@1"]) == ("static:0.300,0.800", 0.5)
    assert chosen["chosen_on"]["dataset_seed"] == 1
    statics = ["default", "static:0.5,1.0", "static:0.3,0.8"]  # oracle-validation runs static:0.3,0.8 here
    best = report["methods"]["oracle-test"]
    assert best["chosen_from"] == statics
    assert best["pass@1"] == max(
        report["methods"][n]["pass@1"] for n in ("default", "static:0.5,1.0", "oracle-validation")
    )
    auto = report["methods"]["autodeco"]
    assert len(auto["per_problem_pass@k"]["4"]) == 6 and set(auto["per_problem_pass@k"]) == {"4"}
    comparisons = report["comparisons"]
    assert set(comparisons["autodeco - default"]["pass@k"]) == {"4"}
    assert comparisons["autodeco - greedy"]["pass@k"] == {}  # greedy has one sample: pass@1 only
    assert {"autodeco - oracle-test", "autodeco - oracle-validation"} <= set(comparisons)
    assert report["frontier"]["k"] == 4 and set(report["frontier"]["candidates"]) == {"autodeco", "meanshift"}
    assert set(report["frontier"]["statics"]) == set(statics)
    text = (out / "results.md").read_text()
    assert "Paired differences in pass@1" in text and "The same for per-problem pass@k" in text
    assert "oracle-validation: T = 0.3, P = 0.8 (static:0.3,0.8), the best pass@1 (0.500) of 2" in text
    assert "chosen on these problems: optimistic" in text
    assert "Static frontier, pass@1 against pass@4, over 3 static decodings" in text
    assert text.count("| oracle-test |") == 1
