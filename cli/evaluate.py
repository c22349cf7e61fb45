"""`autodeco eval`: compare decoding methods on a task (the control measurement hangs off it later)."""

from __future__ import annotations

import click

from autodeco_lp.cli.options import dataclass_options, task_option
from autodeco_lp.evaluation.runner import EvalArgs


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
    from autodeco_lp.evaluation.report import markdown_table
    from autodeco_lp.evaluation.runner import run_eval
    from autodeco_lp.tasks import parse_task_options

    try:
        report = run_eval(EvalArgs(**options), parse_task_options(task_options))
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(markdown_table(report), nl=False)
    click.echo(f"wrote {options['out']}/results.json and results.md")
