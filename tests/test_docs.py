"""The result tables of README.md and docs/results.md are the numbers docs/results/**/results.json hold (no
hand-copied drift)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _row(task: str) -> list[str]:
    readme = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    match = re.search(rf"^\| {task} \(.*$", readme, re.M)
    assert match, f"docs/results.md's 24-problem table has no row for {task}"
    return [cell.strip() for cell in match.group(0).strip("|").split("|")][1:]


@pytest.mark.parametrize("task", ["products", "chain_sum", "basic_arithmetic"])
def test_readme_headline_row_matches_results_json(task):
    methods = json.loads((ROOT / "docs" / "results" / task / "results.json").read_text())["methods"]
    greedy, default, autodeco, meanshift, oracle = _row(task)
    assert greedy == f"{methods['greedy']['pass@1']:.3f}"
    assert default == f"{methods['default']['pass@1']:.3f}"
    assert autodeco == f"{methods['autodeco']['pass@1']:.3f} ± {methods['autodeco']['pass@1_std']:.3f}"
    assert meanshift == f"{methods['meanshift']['pass@1']:.3f}"
    grid = methods["oracle-grid"]
    assert oracle == f"{grid['pass@1']:.3f} (T={grid['temperature']:.1f}, P={grid['top_p']:.1f})"


@pytest.mark.parametrize(
    ("page", "marker", "task"),
    [
        ("README.md", "<!-- scale-table -->", "products"),
        ("docs/results.md", "<!-- scale-table -->", "products"),
        ("docs/results.md", "<!-- scale-table chain_sum -->", "chain_sum"),
        ("docs/results.md", "<!-- scale-table products-long -->", "products-long"),
        ("docs/results.md", "<!-- scale-table gemma3-products -->", "gemma3-products"),
        ("docs/results.md", "<!-- scale-table basic_arithmetic-long -->", "basic_arithmetic-long"),
    ],
)
def test_scale_table_matches_results_json(page, marker, task):
    """Each at-scale table (between its markers) is docs/results/scale/TASK/results.json."""
    report = json.loads((ROOT / "docs" / "results" / "scale" / task / "results.json").read_text())
    methods, comparisons = report["methods"], report["comparisons"]
    readme = (ROOT / page).read_text(encoding="utf-8")
    assert readme.count(marker) == 2, marker
    block = readme.split(marker)[1]
    rows = [line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert len(rows) >= 5, block
    for row in rows:
        label, pass1, pass16, versus = (cell.strip() for cell in row.strip("|").split("|"))
        name = label.split(" (")[0].strip("`")
        m = methods[name]
        setting = re.search(r"\(T=([\d.]+), P=([\d.]+)", label)  # e.g. "meanshift (T=0.36, P=1)"
        if setting:  # the label's rounded T and P are the method's
            assert abs(float(setting[1]) - m["temperature"]) < 0.005, row
            assert abs(float(setting[2]) - m["top_p"]) < 0.005, row
        assert pass1 == f"{m['pass@1']:.3f}", row
        assert pass16 == (f"{m['pass@k']['16']:.3f}" if "16" in m["pass@k"] else "-"), row
        if name == "autodeco":
            assert versus == "-", row
        else:
            c = comparisons[f"autodeco - {name}"]
            assert versus == f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]", row


def test_results_page_verdict_table_matches_results_json():
    """docs/results.md's verdict table (between its markers): each row's intervals and frontier verdict are
    docs/results/scale/RUN/results.json's, and its "goal" cell follows from them by the goal's rule: in domain,
    AutoDeco > MeanShift (interval above 0), >= the validation-chosen static - 1 point and above the static
    frontier; out of domain, no significant loss to the validation-chosen static or to default sampling."""
    page = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    marker = "<!-- verdict-table -->"
    assert page.count(marker) == 2, marker
    rows = [line for line in page.split(marker)[1].splitlines() if line.startswith("| `")]
    assert len(rows) >= 5, rows

    def interval(c: dict) -> str:
        return f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"

    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        run, task, pass1, meanshift, best, greedy, default, frontier, goal = cells
        report = json.loads((ROOT / "docs" / "results" / "scale" / run.strip("`") / "results.json").read_text())
        comparisons = report["comparisons"]
        assert pass1 == f"{report['methods']['autodeco']['pass@1']:.3f}", row
        assert meanshift == interval(comparisons["autodeco - meanshift"]), row
        assert best == interval(comparisons["autodeco - oracle-validation"]), row
        assert greedy == interval(comparisons["autodeco - greedy"]), row
        assert default == interval(comparisons["autodeco - default"]), row
        verdict = report["frontier"]["candidates"]["autodeco"]["verdict"]
        assert frontier == verdict, row
        versus_ms, versus_best = comparisons["autodeco - meanshift"], comparisons["autodeco - oracle-validation"]
        if "out of domain" in task:
            met = versus_best["high"] >= 0 and comparisons["autodeco - default"]["high"] >= 0
        else:
            met = versus_ms["low"] > 0 and versus_best["mean"] >= -0.01 and verdict.startswith("above")
        assert goal.startswith("yes" if met else "no"), row


@pytest.mark.parametrize(
    ("task", "added", "validation_static"),
    [
        ("products", "static:0.2,1.0", (0.1, 1.0)),
        ("chain_sum", "static:0.2,1.0", (0.1, 1.0)),
        ("gemma3-products", "static:1.25,1.0", (1.0, 1.0)),
    ],
)
def test_outcome_scale_table_matches_results_json(task, added, validation_static):
    """docs/outcome.md's table of heads at scale on TASK: each row's numbers are its run's results.json, the paired
    intervals against the shipped heads, the validation-chosen static (VALIDATION_STATIC) and the heads' own MeanShift
    are recomputed from the per-problem results, and the two frontier verdicts are `static_frontier` over the TASK
    run's statics, then with the static ADDED of the `TASK-outcome-pass4` run added (nearest deciding static named)."""
    from autodeco_lp.evaluation.compare import paired
    from autodeco_lp.evaluation.frontier import static_frontier

    page = (ROOT / "docs" / "outcome.md").read_text(encoding="utf-8")
    marker = f"<!-- outcome-scale-table {task} -->"
    assert page.count(marker) == 2, marker
    rows = [line for line in page.split(marker)[1].splitlines() if line.startswith("| ") and "`" in line]
    runs = [row.split("`")[1] for row in rows]
    assert runs[0] == task and f"{task}-outcome-pass4" in runs, runs
    scale = ROOT / "docs" / "results" / "scale"
    # One row per run: the chosen heads' row exactly when their test run exists (none when the shipped heads won).
    expected = (
        [task] + [f"{task}-outcome"] * (scale / f"{task}-outcome" / "results.json").exists() + [f"{task}-outcome-pass4"]
    )
    assert runs == expected, runs
    # The chosen row names the checkpoint `docs/results.sh` chose on validation problems (its chosen.txt).
    ablation = ROOT / "docs" / "ablation" / ("outcome" if task == "products" else f"outcome-{task}")
    chosen = (ablation / "chosen.txt").read_text().splitlines()[-1].removeprefix("chosen: ")
    if f"{task}-outcome" in runs:
        assert f"{_fit_label(chosen)} (the validation choice)" in rows[1].split("|")[1], (rows[1], chosen)
    else:
        assert chosen == "shipped", chosen
    # The secondary row names the checkpoint its run evaluated (the heads in its results.json's settings).
    heads = json.loads((scale / f"{task}-outcome-pass4" / "results.json").read_text())["settings"]["heads"]
    name = Path(heads).relative_to(ablation.relative_to(ROOT)).as_posix()
    assert f"{_fit_label(name)} (secondary)" in rows[-1].split("|")[1], (rows[-1], name)
    base = _methods(scale / task)
    finer = {**base, added: _methods(scale / f"{task}-outcome-pass4")[added]}
    assert (base["oracle-validation"]["temperature"], base["oracle-validation"]["top_p"]) == validation_static
    # Paired intervals need the same problems, samples and decoding budget in every run.
    same = (
        "task",
        "task_options",
        "dataset_seed",
        "problems_evaluated",
        "samples",
        "max_new_tokens",
        "dtype",
        "backend",
    )
    settings = json.loads((scale / task / "results.json").read_text())["settings"]
    for run in runs[1:]:
        other = json.loads((scale / run / "results.json").read_text())["settings"]
        assert {k: other.get(k) for k in same} == {k: settings.get(k) for k in same}, run

    def interval(c: dict) -> str:
        return f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"

    for row, run in zip(rows, runs):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 13, row
        vs_shipped, vs_static1, vs_static16, vs_ms1, vs_ms16, frontier, finer_frontier = cells[6:]
        methods = _methods(scale / run)
        m = methods["autodeco"]
        assert cells[2:6] == [
            f"{m['pass@1']:.3f}",
            f"{m['pass@k']['4']:.3f}",
            f"{m['pass@k']['16']:.3f}",
            f"{m['mean_temperature']:.3f}",
        ], row
        shipped, static, own = (
            paired(m, base["autodeco"]),
            paired(m, base["oracle-validation"]),
            paired(m, methods["meanshift"]),
        )
        assert vs_shipped == ("-" if run == task else interval(shipped["pass@1"])), row
        assert [vs_static1, vs_static16] == [interval(static["pass@1"]), interval(static["pass@k"]["16"])], row
        assert [vs_ms1, vs_ms16] == [interval(own["pass@1"]), interval(own["pass@k"]["16"])], row
        assert frontier == static_frontier({**base, "autodeco": m}, 16)["candidates"]["autodeco"]["verdict"], row
        v = static_frontier({**finer, "autodeco": m}, 16)["candidates"]["autodeco"]
        assert finer_frontier == f"{v['verdict']} ({v['nearest']})", row


def _fit_label(checkpoint: str) -> str:
    """How docs/outcome.md names a fit's checkpoint: `lr-1e-4/pass4/checkpoint-10` -> "pass@4 reward, lr 1e-4,
    round 10" (the learning rate only for fits outside the first learning rate's folders)."""
    fit, round_ = checkpoint.split("/checkpoint-")
    lr = fit.split("/")[0].removeprefix("lr-") if "/" in fit else None
    reward = {"pass1": "pass@1 reward", "pass4": "pass@4 reward"}[fit.split("/")[-1]]
    return f"{reward}{f', lr {lr}' if lr else ''}, round {round_}"


def _methods(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())["methods"]


@pytest.mark.parametrize(
    ("folder", "grid"),
    [("outcome", "products"), ("outcome-chain_sum", "chain_sum"), ("outcome-gemma3-products", "gemma3-products")],
)
def test_outcome_choice_files_match_the_validation_runs(folder, grid):
    """`outcome_choice` in docs/results.sh: chosen.txt lists each candidate's validation pass@1 and names the best
    (ties: the earlier), secondary.txt the best-validating last pass@4 checkpoint, and validation/compare.md's paired
    intervals (the chosen heads minus each other candidate and minus the grid's best validation static) recompute."""
    from autodeco_lp.evaluation.compare import paired

    out = ROOT / "docs" / "ablation" / folder
    lines = (out / "chosen.txt").read_text().splitlines()
    scores = {}
    for line in lines[:-1]:
        value, name = line.removeprefix("validation pass@1 ").split("  ")
        m = _methods(out / "validation" / name.replace("/", "-"))["autodeco"]
        assert value == f"{m['pass@1']:.4f}", line
        scores[name] = m
    names = list(scores)
    best = max(names, key=lambda c: (round(scores[c]["pass@1"], 12), -names.index(c)))
    assert lines[-1] == f"chosen: {best}", lines[-1]
    last = {
        n
        for n in names
        if "pass4/checkpoint-" in n
        and int(n.rsplit("-", 1)[1]) == max(int(c.rsplit("-", 1)[1]) for c in names if "pass4/checkpoint-" in c)
    }
    secondary = (out / "secondary.txt").read_text().split()[-1]
    assert secondary in last and scores[secondary]["pass@1"] == max(scores[c]["pass@1"] for c in last), secondary
    statics = {
        n: m
        for n, m in _methods(ROOT / "docs" / "results" / "scale" / f"{grid}-validation").items()
        if n.startswith("static:")
    }
    static = max(statics, key=lambda n: statics[n]["pass@1"])
    rows = [r for r in (out / "validation" / "compare.md").read_text().splitlines() if r.startswith("| ")][1:]
    against = {**{c: scores[c] for c in names if c != best}, f"{static} ({grid}-validation)": statics[static]}
    assert [r.split(" | ")[0].removeprefix("| ") for r in rows] == list(against), rows
    for row, m in zip(rows, against.values()):
        c = paired(scores[best], m)["pass@1"]
        assert row.endswith(f"| {c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] |"), row
