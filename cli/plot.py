"""`autodeco plot ...`: figures (needs matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from autodeco_lp.cli.options import dataclass_options
from autodeco_lp.evaluation.compare import read_report
from autodeco_lp.evaluation.diagnose import head_statistics, top_p_loss_curve, training_positions
from autodeco_lp.evaluation.plot_args import FrontierPlotArgs, ResultsPlotArgs, TopPPlotArgs, TracePlotArgs
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
@dataclass_options(TracePlotArgs)
@click.argument("prompt")
def trace(prompt: str, **options) -> None:
    """Per-token T and P along one generation (the paper's Figure 5)."""
    try:
        args = TracePlotArgs(**options)
        loaded, tokenizer = load_model(args.model)
        with AutoDeco.from_pretrained(loaded, args.heads) as processor:
            completion = generate_text(
                loaded, tokenizer, [prompt], processor, max_new_tokens=args.max_new_tokens, seed=args.seed
            )[0]
        plot_trace(completion, Path(args.out))
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {args.out} ({len(completion.tokens)} tokens)")


def _plot_results(kind: str, args: ResultsPlotArgs | FrontierPlotArgs) -> None:
    report = _report(args.results)
    if kind == "grid" and "oracle-grid" not in report["methods"]:
        raise click.ClickException(
            "these results have no oracle-grid; run autodeco eval with --methods ...,oracle-grid"
        )
    try:
        if kind == "frontier":
            plot_frontier(report, Path(args.out), args.k)
        else:
            (plot_grid if kind == "grid" else plot_passk)(report, Path(args.out))
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {args.out}")


def _args(config_cls: type, options: dict):
    try:
        return config_cls(**options)
    except (ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from exc


@plot_group.command("grid")
@dataclass_options(ResultsPlotArgs)
def grid(**options) -> None:
    """The oracle grid's sweeps against AutoDeco and MeanShift (the paper's Figure 3); the results need
    an oracle-grid."""
    _plot_results("grid", _args(ResultsPlotArgs, options))


@plot_group.command("passk")
@dataclass_options(ResultsPlotArgs)
def passk(**options) -> None:
    """pass@k curves of every method (the results need 2 or more samples per problem)."""
    _plot_results("passk", _args(ResultsPlotArgs, options))


@plot_group.command("frontier")
@dataclass_options(FrontierPlotArgs)
def frontier(**options) -> None:
    """pass@1 against pass@k: the static decodings, their Pareto frontier, AutoDeco and the baselines."""
    _plot_results("frontier", _args(FrontierPlotArgs, options))


@plot_group.command("top-p")
@dataclass_options(TopPPlotArgs)
def top_p(**options) -> None:
    """Diagnose the top-p head: P against the base entropy, and the loss for a constant P."""
    try:
        args = TopPPlotArgs(**options)
        loaded, tokenizer = load_model(args.model)
        fitted = AutoDecoHeads.from_pretrained(args.heads or resolve_heads_for_model(loaded)).eval()
        hidden, labels = training_positions(loaded, tokenizer, args.data, args.max_length, args.max_rows)
        lm_head = OutputProjection.from_model(loaded)
        stats = head_statistics(fitted, hidden, labels, lm_head)
        values = [round(0.1 * i, 1) for i in range(3, 11)] + [0.95, 0.99, 1.0]
        values = sorted(set(values))
        losses = top_p_loss_curve(fitted, hidden, labels, lm_head, values)
        title = f"{args.model}: top-p head on {Path(args.data).name}"
        plot_top_p_diagnosis(stats, values, losses, Path(args.out), title)
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
    Path(args.out).with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    click.echo(json.dumps(summary, indent=2))
    click.echo(f"wrote {args.out}")
