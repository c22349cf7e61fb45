"""The static frontier (autodeco_lp/evaluation/frontier.py): Pareto statics, verdicts with paired
intervals, its results.md section and its plot, on hand-made reports whose answers are known."""

from __future__ import annotations

import json

import pytest

from autodeco_lp.evaluation import frontier
from autodeco_lp.evaluation.frontier import (
    ABOVE,
    BELOW,
    ON,
    available_k,
    best_static,
    pareto_frontier,
    static_decodings,
    static_frontier,
)
from autodeco_lp.evaluation.report import write_reports
from tests.conftest import require

PROBLEMS = 40
# Two zero-mean noise patterns over the problems: paired differences between methods that use
# different patterns vary from problem to problem (std ~0.07, so the 95% interval of a mean
# difference is about +-0.02), while every mean stays exactly the base value.
ALTERNATING = [0.05 if i % 2 else -0.05 for i in range(PROBLEMS)]
BLOCKS = [0.05 if i % 4 < 2 else -0.05 for i in range(PROBLEMS)]


def summary(pass1: float, pass16: float, t: float | None = None, p: float | None = None, noise=ALTERNATING) -> dict:
    """A method summary as summary.summarise writes it, with per-problem lists of the given means."""
    return {
        "temperature": t,
        "top_p": p,
        "pass@1": pass1,
        "pass@1_std": 0.0,
        "pass@k": {"1": pass1, "4": (pass1 + pass16) / 2, "16": pass16},
        "per_problem": [pass1 + e for e in noise],
        "per_problem_pass@k": {"4": [(pass1 + pass16) / 2 + e for e in noise], "16": [pass16 + e for e in noise]},
    }


def statics() -> dict[str, dict]:
    # Pareto frontier: default (0.3, 0.8) and static:0.5,1.0 (0.5, 0.6); static:0.3,1.0 is dominated.
    return {
        "default": summary(0.30, 0.80, 1.0, 1.0),
        "static:0.5,1.0": summary(0.50, 0.60, 0.5, 1.0),
        "static:0.3,1.0": summary(0.20, 0.40, 0.3, 1.0),
    }


def test_pareto_frontier_of_a_hand_made_point_set():
    pts = {
        "a": (0.50, 0.90),  # dominated by e (same pass@k, lower pass@1)
        "b": (0.60, 0.80),
        "c": (0.40, 0.70),  # dominated by a, b, d, e
        "d": (0.60, 0.80),  # equal to b: neither dominates the other, both stay
        "e": (0.55, 0.90),
        "f": (0.70, 0.10),
    }
    assert pareto_frontier(pts) == ["e", "b", "d", "f"]
    assert pareto_frontier({"only": (0.1, 0.2)}) == ["only"]


@pytest.mark.parametrize(
    "candidate, verdict, deciding",
    [
        # Worse than static:0.5,1.0 by 0.1 on both axes. default is better on pass@16 but significantly
        # worse on pass@1: a trade-off, not a domination, so it is not among the deciding statics.
        (summary(0.40, 0.50, noise=BLOCKS), BELOW, ["static:0.5,1.0"]),
        # Better than every static on both axes; deciding: the Pareto statics, nearest first.
        (summary(0.60, 0.85, noise=BLOCKS), ABOVE, ["static:0.5,1.0", "default"]),
        # The same means as static:0.5,1.0, only the per-problem noise differs: within noise of it.
        (summary(0.50, 0.60, noise=BLOCKS), ON, ["static:0.5,1.0"]),
        # Significantly better than every static on at least one axis (default still has the better
        # pass@16, but is significantly worse on pass@1): above, by the definition.
        (summary(0.55, 0.70, noise=BLOCKS), ABOVE, ["static:0.5,1.0", "default"]),
    ],
)
def test_verdicts(candidate, verdict, deciding):
    result = frontier.verdict(candidate, statics(), k=16)
    assert result["verdict"] == verdict
    assert result["deciding"] == deciding and result["nearest"] == deciding[0]
    assert set(result["versus"]) == set(statics())
    near = result["versus"][deciding[0]]
    # The stored intervals are candidate - static, on the stated axis.
    assert near["pass@1"]["mean"] == pytest.approx(candidate["pass@1"] - statics()[deciding[0]]["pass@1"])
    assert near["pass@16"]["mean"] == pytest.approx(candidate["pass@k"]["16"] - statics()[deciding[0]]["pass@k"]["16"])
    assert result["pass@1"] == candidate["pass@1"] and result["pass@16"] == candidate["pass@k"]["16"]


def test_static_frontier_section():
    methods = {
        **statics(),
        "autodeco": summary(0.40, 0.50, noise=BLOCKS),
        "meanshift": summary(0.60, 0.85, 0.6, 0.9, noise=BLOCKS),  # static, but a candidate
        "greedy": {**summary(0.35, 0.35), "pass@k": {"1": 0.35}, "per_problem_pass@k": {}},
    }
    section = static_frontier(methods)
    assert section["k"] == 16
    assert set(section["statics"]) == {"default", "static:0.5,1.0", "static:0.3,1.0"}
    assert section["statics"]["default"] == {"temperature": 1.0, "top_p": 1.0, "pass@1": 0.30, "pass@16": 0.80}
    assert section["pareto"] == ["default", "static:0.5,1.0"]
    assert {n: c["verdict"] for n, c in section["candidates"].items()} == {"autodeco": BELOW, "meanshift": ABOVE}
    assert static_frontier(methods, k=4)["k"] == 4
    # Not enough statics, or results written before per-problem pass@k existed: no section.
    assert static_frontier({n: m for n, m in methods.items() if n != "default"}) is None
    old = {n: {k: v for k, v in m.items() if k != "per_problem_pass@k"} for n, m in methods.items()}
    assert static_frontier(old) is None
    # Candidates of other runs on the same problems: judged exactly as the run's own, under their labels.
    other = {"other heads": methods["autodeco"], "other meanshift": methods["meanshift"]}
    mine = {n: m for n, m in methods.items() if n not in ("autodeco", "meanshift")}
    joined = static_frontier(mine, extra=other)["candidates"]
    assert joined == {
        "other heads": section["candidates"]["autodeco"],
        "other meanshift": section["candidates"]["meanshift"],
    }
    with pytest.raises(ValueError, match=r"\['default'\] have the names of methods"):
        static_frontier(methods, extra={"default": methods["autodeco"]})


def test_statics_are_collected_once_per_setting_from_every_source():
    grid_point = summary(0.1, 0.2, 0.3, 1.0)
    methods = {
        "static:1,1": summary(0.3, 0.8, 1.0, 1.0),  # the same setting as default: counted once, as default
        "default": summary(0.3, 0.8, 1.0, 1.0),
        "oracle-validation": summary(0.4, 0.7, 0.7, 0.9),
        "oracle-grid": {"grid": {"temperature_sweep": [grid_point], "top_p_sweep": [grid_point]}},
        "meanshift": summary(0.5, 0.5, 0.6, 0.9),
        "oracle-test": summary(0.4, 0.7, 0.7, 0.9),  # a copy of a static, never a static of its own
    }
    assert list(static_decodings(methods)) == ["default", "static:0.7,0.9", "static:0.3,1.0"]


def test_best_static_breaks_ties_towards_the_lower_t_then_the_lower_p():
    pool = {
        "static:0.7,0.9": summary(0.6, 0.8, 0.7, 0.9),
        "static:0.5,1.0": summary(0.6, 0.8, 0.5, 1.0),
        "static:0.5,0.9": summary(0.6, 0.8, 0.5, 0.9),
        "default": summary(0.4, 0.9, 1.0, 1.0),
    }
    assert best_static(pool) == "static:0.5,0.9"
    pool["default"]["pass@1"] = 0.1 + 0.2 + 0.3  # 0.6000000000000001: float noise is a tie, not a win
    assert best_static(pool) == "static:0.5,0.9"
    pool["default"]["pass@1"] = 0.61
    assert best_static(pool) == "default"
    with pytest.raises(ValueError, match="no static"):
        best_static({})


def test_available_k_prefers_16_then_the_largest():
    methods = statics()
    assert available_k(methods) == 16
    for m in methods.values():
        del m["pass@k"]["16"]
    assert available_k(methods) == 4
    with pytest.raises(ValueError, match="asked for k = 16.*k = 4"):
        available_k(methods, 16)
    with pytest.raises(ValueError, match="0 statics have k = none"):
        available_k({"autodeco": summary(0.5, 0.5)})


def _report(methods: dict) -> dict:
    settings = dict(
        task="t.jsonl", model="m", problems_evaluated=PROBLEMS, dataset_seed=0, samples=16, seeds="0", max_new_tokens=8
    )
    return {"settings": settings, "methods": methods, "comparisons": {}, "frontier": static_frontier(methods)}


def test_results_md_has_the_frontier_verdicts(tmp_path):
    methods = {**statics(), "autodeco": summary(0.40, 0.50, noise=BLOCKS)}
    write_reports(tmp_path, _report(methods))
    text = (tmp_path / "results.md").read_text()
    assert "Static frontier, pass@1 against pass@16, over 3 static decodings" in text
    assert "Pareto frontier (by pass@1): default, static:0.5,1.0" in text
    assert "| autodeco | 0.400 | 0.500 | static:0.5,1.0 | -0.100 [" in text
    assert text.rstrip().endswith(f"| {BELOW} |")
    assert json.loads((tmp_path / "results.json").read_text())["frontier"]["candidates"]["autodeco"]["verdict"] == BELOW


def test_plot_frontier_writes_an_image(tmp_path):
    require("matplotlib")
    from click.testing import CliRunner

    from autodeco_lp.cli.main import autodeco as cli

    methods = {
        **statics(),
        "autodeco": summary(0.40, 0.50, noise=BLOCKS),
        "meanshift": summary(0.45, 0.55, 0.6, 0.9, noise=BLOCKS),
        "oracle-validation": summary(0.5, 0.6, 0.5, 1.0),
        "greedy": {**summary(0.35, 0.35), "pass@k": {"1": 0.35}, "per_problem_pass@k": {}},
    }
    (tmp_path / "results.json").write_text(json.dumps(_report(methods)))
    for extra in ([], ["--k", "4"]):
        out = tmp_path / f"frontier{len(extra)}.png"
        result = CliRunner().invoke(cli, ["plot", "frontier", "--results", str(tmp_path), "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        assert out.read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(cli, ["plot", "frontier", "--results", str(tmp_path), "--k", "8", "--out", "x.png"])
    assert bad.exit_code != 0 and "asked for k = 8" in bad.output


def test_plot_frontier_draws_candidates_of_other_runs(tmp_path, monkeypatch):
    require("matplotlib")
    import pytest

    from autodeco_lp.evaluation import plots
    from autodeco_lp.evaluation.plots import plot_frontier

    report = _report({**statics(), "autodeco": summary(0.40, 0.50, noise=BLOCKS)})
    other = summary(0.45, 0.55, noise=BLOCKS)
    out = plot_frontier(report, tmp_path / "f.png", extra={"refit heads": other})
    assert out.read_bytes()[:4] == b"\x89PNG"
    # With the extra candidate's verdict in the report's frontier, its legend entry says it.
    report["frontier"] = static_frontier(report["methods"], extra={"refit heads": other})
    figures = []
    monkeypatch.setattr(plots, "_save", lambda plt, fig, out: figures.append(fig) or out)  # keep the figure
    plot_frontier(report, tmp_path / "h.png", extra={"refit heads": other})
    legend = [t.get_text() for t in figures[0].axes[0].get_legend().get_texts()]
    assert f"refit heads: {report['frontier']['candidates']['refit heads']['verdict']}" in legend
    with pytest.raises(ValueError, match="'refit heads' has no pass@16"):
        plot_frontier(report, tmp_path / "g.png", extra={"refit heads": {**other, "pass@k": {"1": 0.45}}})
