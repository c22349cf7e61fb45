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
            f"| {m['pass@1']:.3f} ± {m['pass@1_std']:.3f} "
            f"| {passk} | {_fmt(m.get('mean_temperature'))} | {_fmt(m.get('mean_top_p'))} |"
        )
    return "\n".join(lines) + "\n"


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
    comparisons = report.get("comparisons") or {}
    if comparisons:
        level = next(iter(comparisons.values()))["level"]
        text += (
            f"\nPaired differences in pass@1 over the same problems, {level:.0%} percentile-bootstrap interval "
            "(problems resampled; significant = the interval excludes 0):\n\n"
            "| comparison | mean difference | interval | significant |\n|---|---|---|---|\n"
        )
        for name, c in comparisons.items():
            text += (
                f"| {name} | {c['mean']:+.3f} | [{c['low']:+.3f}, {c['high']:+.3f}] | "
                f"{'yes' if c['significant'] else 'no'} |\n"
            )
    atomic_write(out / "results.json", lambda p: write_text(p, json.dumps(report, indent=2, sort_keys=True) + "\n"))
    atomic_write(out / "results.md", lambda p: write_text(p, text))
