"""`autodeco data ...`: build training data."""

from __future__ import annotations

import click

from autodeco_lp.cli.options import dataclass_options, task_option
from autodeco_lp.evaluation.rejection import SampleArgs, sample_training_data
from autodeco_lp.tasks.problems import parse_task_options


@click.group("data")
def data_group() -> None:
    """Build training data for autodeco-fit."""


@data_group.command("sample")
@dataclass_options(SampleArgs)
@task_option
def sample(task_options: tuple[str, ...], **options) -> None:
    """Rejection sampling: solutions from the model itself that the task's verifier accepts, as JSONL."""
    try:
        summary = sample_training_data(SampleArgs(**options), parse_task_options(task_options))
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"kept {summary.accepted} of {summary.sampled} samples ({summary.accepted / max(summary.sampled, 1):.1%}); "
        f"{summary.problems_solved} of {summary.problems} problems have at least one; "
        f"{summary.seconds:.0f} s on {summary.backend}; wrote {summary.out}"
    )
