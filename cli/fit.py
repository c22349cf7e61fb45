"""`autodeco-fit` (also `autodeco fit`, `python -m autodeco_lp.training`): parse options, call `fit`."""

from __future__ import annotations

import shlex
import sys

import click
from click.core import ParameterSource

from autodeco_lp.cli.options import dataclass_options, task_option
from autodeco_lp.tasks.problems import parse_task_options
from autodeco_lp.training import fit
from autodeco_lp.training.args import FitArgs, read_config_file
from autodeco_lp.training.losses import LossConfig
from autodeco_lp.training.outcome_config import OutcomeConfig


@click.command("fit", context_settings={"show_default": True, "max_content_width": 120})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML (or JSON) file of the same options (snake_case or dash names; `loss:` and `outcome:` blocks may "
    "hold those options by field name); flags given on the command line win.",
)
@dataclass_options(FitArgs)
@dataclass_options(LossConfig, defaults_unset=True)  # unset: left to --recipe, then LossConfig's default
@dataclass_options(OutcomeConfig, skip=("task_options",))
@task_option
@click.pass_context
def fit_command(ctx: click.Context, config_file: str | None, task_options: tuple[str, ...], **options) -> None:
    """Train AutoDeco heads on a frozen causal LM and write them to --output-dir.

    \b
    autodeco-fit --model smollm2 --data train.jsonl --output-dir out/
    accelerate launch --num_processes 8 -m autodeco_lp.training --data train.jsonl --output-dir out/
    autodeco-fit ... --resume-from-checkpoint      # continue from the latest checkpoint-N
    autodeco-fit --objective outcome --task reasoning_gym:products --init-heads HEADS --output-dir out/
    """
    try:
        values = dict(options)
        if task_options:
            values["task_options"] = parse_task_options(task_options)
        if config_file:
            from_file = read_config_file(config_file)
            for name, value in from_file.items():
                if ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None):
                    values[name] = value
        args = FitArgs.from_options(values)
        result = fit(args, command=shlex.join(["autodeco-fit", *sys.argv[1:]]))
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if args.objective == "outcome":
        click.echo(
            f"trained {result.rounds} rounds in {result.seconds:.0f} s ({result.tokens_per_round:.0f} sampled tokens "
            f"and {result.rollout_seconds_per_round:.1f} s of sampling per round): last round's reward "
            f"{result.mean_reward:.3f}, mean T {result.mean_temperature:.3f}, mean P {result.mean_top_p:.3f}; heads "
            f"in {result.output_dir}"
        )
        return
    click.echo(
        f"trained {result.steps} steps in {result.seconds:.0f} s: loss {result.loss:.4f} "
        f"(T {result.temperature_loss:.4f}, P {result.top_p_loss:.4f}), mean T {result.mean_temperature:.3f}, "
        f"mean P {result.mean_top_p:.3f}; heads in {result.output_dir}"
    )


def main() -> None:  # pragma: no cover - console entry point
    fit_command(prog_name="autodeco-fit")


if __name__ == "__main__":  # pragma: no cover
    main()
