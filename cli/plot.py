"""`autodeco plot ...`: figures (needs matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from autodeco_lp.evaluation.compare import read_report
from autodeco_lp.evaluation.diagnose import head_statistics, top_p_loss_curve, training_positions
from autodeco_lp.evaluation.plots import plot_frontier, plot_grid, plot_passk, plot_top_p_diagnosis, plot_trace
from autodeco_lp.hub.models import load_model
from autodeco_lp.hub.registry import resolve_heads_for_model
from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.inference.heads import AutoDecoHeads
from autodeco_lp.inference.processor import AutoDeco
from autodeco_lp.inference.textgen import generate_text


def _report(results: str) -> dict:
    try:
        return read_report(results, "--results")[1]
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("plot")
def plot_group() -> None:
    """Figures from generations and `autodeco eval` results."""


@plot_group.command("trace")
@click.option("--model", default="smollm2", show_default=True)
@click.option("--heads", default=None, help="Heads folder or Hub id; default: the registry entry for --model.")
@click.option("--max-new-tokens", default=40, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Image file (.png, .svg, .pdf).")
@click.argument("prompt")
def trace(model: str, heads: str | None, max_new_tokens: int, seed: int, out: str, prompt: str) -> None:
    """Per-token T and P along one generation (the paper's Figure 5)."""
    try:
        loaded, tokenizer = load_model(model)
        with AutoDeco.from_pretrained(loaded, heads) as processor:
            completion = generate_text(
                loaded, tokenizer, [prompt], processor, max_new_tokens=max_new_tokens, seed=seed
            )[0]
        plot_trace(completion, Path(out))
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out} ({len(completion.tokens)} tokens)")


def _plot_results(kind: str, results: str, out: str, k: int | None = None) -> None:
    report = _report(results)
    if kind == "grid" and "oracle-grid" not in report["methods"]:
        raise click.ClickException(
            "these results have no oracle-grid; run autodeco eval with --methods ...,oracle-grid"
        )
    try:
        if kind == "frontier":
            plot_frontier(report, Path(out), k)
        else:
            (plot_grid if kind == "grid" else plot_passk)(report, Path(out))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out}")


@plot_group.command("grid")
@click.option(
    "--results", required=True, help="An `autodeco eval --out` folder (or its results.json) with oracle-grid."
)
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def grid(results: str, out: str) -> None:
    """The oracle grid's sweeps against AutoDeco and MeanShift (the paper's Figure 3)."""
    _plot_results("grid", results, out)


@plot_group.command("passk")
@click.option("--results", required=True, help="An `autodeco eval --out` folder (or its results.json).")
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def passk(results: str, out: str) -> None:
    """pass@k curves of every method."""
    _plot_results("passk", results, out)


@plot_group.command("frontier")
@click.option(
    "--results",
    required=True,
    help="An `autodeco eval --out` folder (or its results.json) with static decodings (default, static:T,P, "
    "oracle-grid).",
)
@click.option("--k", default=None, type=int, help="The pass@k axis; default: 16, else the largest k there.")
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def frontier(results: str, k: int | None, out: str) -> None:
    """pass@1 against pass@k: the static decodings, their Pareto frontier, AutoDeco and the baselines."""
    _plot_results("frontier", results, out, k)


@plot_group.command("top-p")
@click.option("--model", default="smollm2", show_default=True)
@click.option("--heads", default=None, help="Heads folder or Hub id; default: the registry entry for --model.")
@click.option("--data", required=True, help="Training JSONL (the rows the heads were fitted on).")
@click.option("--max-length", default=512, show_default=True)
@click.option("--max-rows", default=None, type=int, help="Use only the first N rows.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Image file; a .json with the numbers is written beside it.",
)
def top_p(model: str, heads: str | None, data: str, max_length: int, max_rows: int | None, out: str) -> None:
    """Diagnose the top-p head: P against the base entropy, and the loss for a constant P."""
    try:
        loaded, tokenizer = load_model(model)
        fitted = AutoDecoHeads.from_pretrained(heads or resolve_heads_for_model(loaded)).eval()
        hidden, labels = training_positions(loaded, tokenizer, data, max_length, max_rows)
        lm_head = OutputProjection.from_model(loaded)
        stats = head_statistics(fitted, hidden, labels, lm_head)
        values = [round(0.1 * i, 1) for i in range(3, 11)] + [0.95, 0.99, 1.0]
        values = sorted(set(values))
        losses = top_p_loss_curve(fitted, hidden, labels, lm_head, values)
        plot_top_p_diagnosis(stats, values, losses, Path(out), f"{model}: top-p head on {Path(data).name}")
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    low = stats.entropy < 0.5
    summary = {
        "positions": int(labels.numel()),
        "mean_top_p": stats.top_p.mean().item(),
        "mean_temperature": stats.temperature.mean().item(),
        "share_gold_is_argmax": (stats.gold_rank == 0).float().mean().item(),
        "mean_top_p_entropy_below_0.5": stats.top_p[low].mean().item() if low.any() else None,
        "mean_top_p_entropy_above_0.5": stats.top_p[~low].mean().item() if (~low).any() else None,
        "constant_top_p_loss": dict(zip(map(str, values), losses)),
        "best_constant_top_p": values[min(range(len(values)), key=losses.__getitem__)],
    }
    Path(out).with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    click.echo(json.dumps(summary, indent=2))
    click.echo(f"wrote {out}")
