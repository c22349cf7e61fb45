"""results.json + results.md for `autodeco eval`."""

from __future__ import annotations

import json
from pathlib import Path

from autodeco_lp.hub.atomic import atomic_write, write_text


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(report: dict) -> str:
    methods = report["methods"]
    ks = sorted({int(k) for m in methods.values() for k in m["pass@k"]})
    header = (
        "| method | T | P | pass@1 (mean ± std over seeds) | "
        + " | ".join(f"pass@{k}" for k in ks)
        + " | mean T | mean P |"
    )
    lines = [header, "|" + "---|" * (6 + len(ks))]
    for name, m in methods.items():
        passk = " | ".join(_fmt(m["pass@k"].get(str(k))) for k in ks)
        lines.append(
            f"| {name} | {_fmt(m['temperature'], 2)} | {_fmt(m['top_p'], 2)} "
            f"| {pass1_text(m)} "
            f"| {passk} | {_fmt(m.get('mean_temperature'))} | {_fmt(m.get('mean_top_p'))} |"
        )
    return "\n".join(lines) + "\n"


def interval_text(c: dict) -> str:
    """A paired difference as `+0.012 [-0.003, +0.027]` (mean [95% interval]), as every table prints it."""
    return f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"


def pass1_text(m: dict) -> str:
    """A method's pass@1 as `0.512 ± 0.004` (mean ± std over seeds)."""
    return f"{m['pass@1']:.3f} ± {m['pass@1_std']:.3f}"


def _setting(m: dict) -> str:
    return f"T = {m['temperature']:g}, P = {m['top_p']:g}"


def oracle_sections(methods: dict) -> str:
    """What oracle-validation and oracle-test chose, and on which problems."""
    text = ""
    chosen = methods.get("oracle-validation")
    if chosen:
        on = {k: "?" if v is None else v for k, v in chosen["chosen_on"].items()}  # a hand-made file may lack settings
        text += (
            f"\noracle-validation: {_setting(chosen)} ({chosen['chosen_method']}), the best pass@1 "
            f"({chosen['validation_pass@1']:.3f}) of {len(chosen['chosen_from'])} static decodings in {on['path']} "
            f"({on['problems']} problems of {on['task']}, dataset seed {on['dataset_seed']}): chosen on other "
            f"problems; pass@1 here {chosen['pass@1']:.3f}.\n"
        )
    best = methods.get("oracle-test")
    if best:
        text += (
            f"\noracle-test: {_setting(best)} ({best['chosen_method']}), the best pass@1 of "
            f"{len(best['chosen_from'])} static decodings ({', '.join(best['chosen_from'])}), chosen on these "
            "problems: optimistic (the choice has seen the problems it is scored on).\n"
        )
    return text


def comparison_tables(comparisons: dict) -> str:
    """The paired pass@1 table (unchanged format) and, where present, the same for each pass@k."""
    if not comparisons:
        return ""
    level = next(iter(comparisons.values()))["level"]
    text = (
        f"\nPaired differences in pass@1 over the same problems, {level:.0%} percentile-bootstrap interval "
        "(problems resampled; significant = the interval excludes 0):\n\n"
        "| comparison | mean difference | interval | significant |\n|---|---|---|---|\n"
    )

    def row(*cells: str, c: dict) -> str:
        interval = f"[{c['low']:+.3f}, {c['high']:+.3f}]"
        return "| " + " | ".join([*cells, f"{c['mean']:+.3f}", interval, "yes" if c["significant"] else "no"]) + " |\n"

    text += "".join(row(name, c=c) for name, c in comparisons.items())
    # Old results.json files have no "pass@k" in their comparisons: then this table is left out.
    rows = [row(name, k, c=i) for name, c in comparisons.items() for k, i in c.get("pass@k", {}).items()]
    if rows:
        text += (
            "\nThe same for per-problem pass@k (unbiased estimator per problem, averaged over seeds):\n\n"
            "| comparison | k | mean difference | interval | significant |\n|---|---|---|---|---|\n" + "".join(rows)
        )
    return text


def frontier_section(frontier: dict | None) -> str:
    """The static frontier: Pareto statics and one verdict row per candidate."""
    if not frontier:
        return ""
    k = frontier["k"]
    statics = frontier["statics"]
    first = next(iter(frontier["candidates"].values()), None)
    level = next(iter(first["versus"].values()))["pass@1"]["level"] if first else 0.95
    text = (
        f"\nStatic frontier, pass@1 against pass@{k}, over {len(statics)} static decodings; Pareto frontier "
        f"(by pass@1): {', '.join(frontier['pareto'])}. Each candidate is compared with every static, paired over "
        f"problems ({level:.0%} bootstrap intervals of candidate - static): below = some static is significantly "
        "better on one axis and not significantly worse on the other; above = significantly better than every "
        "static on at least one axis; otherwise on the frontier (within noise). The static shown is the nearest "
        "(in the pass@1, pass@k plane) of those deciding the verdict.\n\n"
        f"| candidate | pass@1 | pass@{k} | nearest deciding static | candidate - static, pass@1 | "
        f"candidate - static, pass@{k} | verdict |\n|---|---|---|---|---|---|---|\n"
    )
    for name, v in frontier["candidates"].items():
        versus = v["versus"][v["nearest"]]
        text += (
            f"| {name} | {v['pass@1']:.3f} | {v[f'pass@{k}']:.3f} | {v['nearest']} | "
            f"{interval_text(versus['pass@1'])} | {interval_text(versus[f'pass@{k}'])} | {v['verdict']} |\n"
        )
    return text


def write_reports(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    s = report["settings"]
    text = (
        f"# autodeco eval: {s['task']} on {s['model']}\n\n"
        f"{s['problems_evaluated']} problems (dataset seed {s['dataset_seed']}), {s['samples']} samples per problem "
        f"and seed, seeds {s['seeds']}, {s['max_new_tokens']} new tokens.\n\n" + markdown_table(report)
    )
    grid = report["methods"].get("oracle-grid", {}).get("grid")
    if grid:
        text += "\nOracle grid, pass@1: T sweep at P = 1: " + ", ".join(
            f"{g['temperature']:.1f}: {g['pass@1']:.3f}" for g in grid["temperature_sweep"]
        )
        text += (
            f"; P sweep at T = {grid['best_temperature']:.1f}: "
            + ", ".join(f"{g['top_p']:.1f}: {g['pass@1']:.3f}" for g in grid["top_p_sweep"])
            + "\n"
        )
    text += oracle_sections(report["methods"])
    text += comparison_tables(report.get("comparisons") or {})
    text += frontier_section(report.get("frontier"))
    atomic_write(out / "results.json", lambda p: write_text(p, json.dumps(report, indent=2, sort_keys=True) + "\n"))
    atomic_write(out / "results.md", lambda p: write_text(p, text))
