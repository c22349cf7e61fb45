"""`autodeco push`: publish heads to the Hugging Face Hub."""

from __future__ import annotations

import click
from huggingface_hub.errors import HfHubHTTPError

from autodeco_lp.cli.options import dataclass_options
from autodeco_lp.hub.publish import PushArgs, push


@click.command("push")
@dataclass_options(PushArgs)
def push_command(**options) -> None:
    """Upload heads (autodeco_config.json + autodeco_heads.safetensors) and their model card to a Hub repo.

    Log in first (`hf auth login`) or set HF_TOKEN.
    """
    try:
        info = push(PushArgs(**options))
    except (ValueError, TypeError, OSError, HfHubHTTPError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"pushed {options['heads']} to {info.pr_url or info.commit_url}")
