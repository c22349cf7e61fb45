"""`autodeco eval`: compare decoding methods on a task; `eval ablation` (recipes) and `eval control`
(commands) hang off it."""

from __future__ import annotations

from pathlib import Path

import click

from autodeco_lp.cli.options import dataclass_options, task_option
from autodeco_lp.evaluation.ablation import ablation_table, read_recipes, run_ablation
from autodeco_lp.evaluation.args import EvalArgs
from autodeco_lp.evaluation.compare import compare_reports, comparison_table, read_report
from autodeco_lp.evaluation.control import ControlArgs, control_table, measure_control
from autodeco_lp.evaluation.methods import split_methods
from autodeco_lp.evaluation.report import markdown_table
from autodeco_lp.evaluation.runner import run_eval
from autodeco_lp.tasks.problems import parse_task_options


@click.group("eval", invoke_without_command=True)
@dataclass_options(EvalArgs)
@task_option
@click.pass_context
def eval_group(ctx: click.Context, task_options: tuple[str, ...], **options) -> None:
    """Evaluate decoding methods on a task with a verifier; results.json + results.md in --out.

    \b
    autodeco eval --task reasoning_gym:basic_arithmetic --problems 200 --samples 16 --seeds 0,1,2,3 \\
        --methods greedy,default,autodeco,meanshift,oracle-grid,temperature-only,top-p-only --out results/

    A killed run resumes from the cache in --out: run the same command again.
    """
    if ctx.invoked_subcommand is not None:
        return

    try:
        args = EvalArgs(**options)
        if options["backend"] == "auto":  # say what auto chose: its completions (and cache) are that engine's
            click.echo(f"--backend auto: {args.backend}", err=True)
        report = run_eval(args, parse_task_options(task_options))
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(markdown_table(report), nl=False)
    click.echo(f"wrote {options['out']}/results.json and results.md")


@eval_group.command("ablation")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="Recipe file (YAML): out, fit, eval, tasks, references, recipes; see autodeco_lp/evaluation/ablation.py.",
)
def ablation_command(config_path: str) -> None:
    """Fit heads for every recipe and score them with the harness; ablation.json + ablation.md in `out`.

    Resumable: run the same command again after a kill.
    """
    try:
        report = run_ablation(read_recipes(Path(config_path)))
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc

    click.echo(ablation_table(report), nl=False)
    click.echo(f"wrote {report['config']['out']}/ablation.json and ablation.md")


@eval_group.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--methods", default=None, help="Comma-separated methods to compare (default: every method in both).")
@click.option(
    "--against",
    default=None,
    help="Comma-separated methods of RUN_B to compare each of RUN_A's --methods with (default: the same ones).",
)
def compare_command(run_a: str, run_b: str, methods: str | None, against: str | None) -> None:
    """A - B for methods of two runs on the same problems, paired over problems.

    \b
    autodeco eval compare results-bf16/ results-fp32/ --methods greedy,autodeco
    autodeco eval compare refit/ results/ --methods autodeco --against autodeco,static:0.1,1.0

    RUN_A and RUN_B are `autodeco eval` --out folders (or their results.json). For changes that
    should not move the numbers (dtype, engine, batch size) or should (refitted heads).
    """
    try:
        (_, a), (_, b) = read_report(run_a, "RUN_A"), read_report(run_b, "RUN_B")
        # Split only: compare_reports checks the names against both runs (oracle-test is no --methods name).
        names = split_methods(methods) if methods else None
        comparison = compare_reports(a, b, names, split_methods(against) if against else None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"A = {run_a}, B = {run_b}: paired over {a['settings'].get('problems_evaluated')} problems")
    click.echo(comparison_table(comparison), nl=False)


@eval_group.command("control")
@dataclass_options(ControlArgs)
def control_command(**options) -> None:
    """Plain-language control (the paper's Table 4): do commands move the heads' T and P?

    \b
    autodeco eval control --model smollm2 --heads heads/smollm2-135m-instruct-control \\
        --prompts 100 --out results-control/
    """
    try:
        report = measure_control(ControlArgs(**options))
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(control_table(report), nl=False)
    click.echo(f"wrote {options['out']}/control.json and control.md")
