"""`autodeco eval compare`: paired A - B intervals for the same methods of two runs on the same problems."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from autodeco_lp.cli.main import autodeco as cli
from autodeco_lp.evaluation.compare import compare_reports, read_report


def _report(per_problem: dict[str, list[float]], seed: int = 0, passk: dict | None = None) -> dict:
    settings = {"task": "reasoning_gym:products", "dataset_seed": seed, "problems_evaluated": 40}
    methods = {
        name: {"per_problem": values, "per_problem_pass@k": (passk or {}).get(name, {})}
        for name, values in per_problem.items()
    }
    return {"settings": settings, "methods": methods}


def test_a_clear_gain_is_significant_and_equal_runs_are_not():
    better = _report({"autodeco": [1.0] * 30 + [0.0] * 10, "greedy": [1.0] * 20 + [0.0] * 20})
    worse = _report({"autodeco": [0.0] * 30 + [0.0] * 10, "greedy": [1.0] * 20 + [0.0] * 20})
    result = compare_reports(better, worse)
    assert list(result) == ["autodeco", "greedy"]
    assert result["autodeco"]["pass@1"]["significant"] and result["autodeco"]["pass@1"]["mean"] == pytest.approx(0.75)
    assert not result["greedy"]["pass@1"]["significant"] and result["greedy"]["pass@1"]["mean"] == 0


def test_pass_at_k_is_compared_where_both_runs_have_it():
    a = _report({"autodeco": [0.5] * 40}, passk={"autodeco": {"4": [0.9] * 40, "16": [1.0] * 40}})
    b = _report({"autodeco": [0.5] * 40}, passk={"autodeco": {"4": [0.6] * 40}})
    result = compare_reports(a, b)["autodeco"]
    assert list(result["pass@k"]) == ["4"] and result["pass@k"]["4"]["mean"] == pytest.approx(0.3)


def test_different_problems_or_missing_methods_are_refused():
    with pytest.raises(ValueError, match="different problems .dataset_seed: 0 vs 7"):
        compare_reports(_report({"greedy": [1.0] * 40}), _report({"greedy": [1.0] * 40}, seed=7))
    with pytest.raises(ValueError, match="`--methods` autodeco not in both runs; both have: greedy"):
        compare_reports(_report({"greedy": [1.0] * 40, "autodeco": [1.0] * 40}), _report({"greedy": [1.0] * 40}),
                        ["autodeco"])  # fmt: skip


def test_cli_prints_the_table_and_names_bad_arguments(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps(_report({"greedy": [1.0] * 30 + [0.0] * 10})))
    (tmp_path / "b.json").write_text(json.dumps(_report({"greedy": [0.0] * 40})))
    runner = CliRunner()
    out = runner.invoke(cli, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b.json")])
    assert out.exit_code == 0, out.output
    assert "| greedy | pass@1 | +0.750 |" in out.output and "| yes |" in out.output
    # static:T,P keeps its comma in --methods
    for folder in (tmp_path / "a", tmp_path / "c"):
        folder.mkdir(exist_ok=True)
        (folder / "results.json").write_text(json.dumps(_report({"static:0.5,1.0": [1.0] * 40, "greedy": [0.0] * 40})))
    static = runner.invoke(
        cli, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "c"), "--methods", "static:0.5,1.0"]
    )
    assert static.exit_code == 0, static.output
    assert "| static:0.5,1.0 | pass@1 | +0.000 |" in static.output and "| greedy |" not in static.output
    (tmp_path / "bad.json").write_text("[1, 2]")
    bad = runner.invoke(cli, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "bad.json")])
    assert bad.exit_code != 0 and "`RUN_B" in bad.output and "is not an `autodeco eval` results.json" in bad.output
    with pytest.raises(ValueError, match="`RUN_A nowhere`: nowhere does not exist"):
        read_report("nowhere", "RUN_A")


def test_old_results_and_other_task_options_are_refused():
    # Results written before per-problem lists existed: a clear error, not a KeyError.
    old = {"settings": _report({})["settings"], "methods": {"greedy": {"pass@1": 0.5}}}
    with pytest.raises(ValueError, match="greedy: no per-problem results in one of the runs"):
        compare_reports(old, _report({"greedy": [1.0] * 40}))
    # Same task, seed and count but other --task-option values: other problems.
    a, b = _report({"greedy": [1.0] * 40}), _report({"greedy": [1.0] * 40})
    a["settings"]["task_options"], b["settings"]["task_options"] = {"min_digits": 1}, {"min_digits": 2}
    with pytest.raises(ValueError, match="different problems .task_options"):
        compare_reports(a, b)


def test_cli_compares_methods_eval_adds_by_itself(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(_report({"oracle-test": [0.5] * 40})))
    out = CliRunner().invoke(
        cli, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--methods", "oracle-test"]
    )
    assert out.exit_code == 0, out.output
    assert "| oracle-test | pass@1 | +0.000 |" in out.output


def test_against_pairs_each_method_of_a_with_other_methods_of_b(tmp_path):
    refit = _report({"autodeco": [1.0] * 30 + [0.0] * 10})
    base = _report({"autodeco": [1.0] * 20 + [0.0] * 20, "static:0.1,1.0": [1.0] * 30 + [0.0] * 10})
    result = compare_reports(refit, base, ["autodeco"], ["autodeco", "static:0.1,1.0"])
    assert list(result) == ["autodeco - autodeco", "autodeco - static:0.1,1.0"]
    assert result["autodeco - autodeco"]["pass@1"]["mean"] == pytest.approx(0.25)
    assert result["autodeco - static:0.1,1.0"]["pass@1"]["mean"] == 0
    with pytest.raises(ValueError, match=r"`--against` meanshift not in run B; it has: autodeco, static:0.1,1.0"):
        compare_reports(refit, base, ["autodeco"], ["meanshift"])
    for name, report in (("a", refit), ("b", base)):
        (tmp_path / f"{name}.json").write_text(json.dumps(report))
    argv = ["eval", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--methods", "autodeco"]
    out = CliRunner().invoke(cli, [*argv, "--against", "static:0.1,1.0,autodeco"])
    assert out.exit_code == 0, out.output
    assert "| autodeco - static:0.1,1.0 | pass@1 | +0.000 |" in out.output
    assert "| autodeco - autodeco | pass@1 | +0.250 |" in out.output
