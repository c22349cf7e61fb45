"""`autodeco serve`: `vllm serve` for a model with its AutoDeco heads (a convenience; vLLM does the serving).

autodeco serve --model smollm2                      # the embedded model + its registered heads
autodeco serve --model BASE --heads DIR -- --tensor-parallel-size 2   # anything after -- goes to vllm serve
"""

from __future__ import annotations

import os
import shlex

import click

from autodeco_lp.cli.options import dataclass_options
from autodeco_lp.vllm.serving import ServeArgs, serve_command_line, server_environment


@click.command("serve", context_settings={"ignore_unknown_options": True})
@dataclass_options(ServeArgs)
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
def serve_command(vllm_args: tuple[str, ...], **options) -> None:
    """Serve MODEL with AutoDeco heads through vLLM's OpenAI-compatible server (extra args go to `vllm serve`)."""
    try:
        args = ServeArgs(**options)
        argv = serve_command_line(args, vllm_args)
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    added = server_environment(vllm_args, os.environ)
    if args.print_command:
        click.echo(" ".join([f"{key}={shlex.quote(value)}" for key, value in added.items()] + [shlex.join(argv)]))
        return
    for key, value in added.items():
        click.echo(f"autodeco serve: {key}={value} (KV cache GiB on a CPU; set it to choose)", err=True)
    # The server replaces this process: signals and exit code are vLLM's.
    os.execve(argv[0], argv, {**os.environ, **added})
