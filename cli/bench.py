"""`autodeco bench ...`: speed benchmarks (never timed tests)."""

from __future__ import annotations

import platform

import click
import torch

from autodeco_lp.engines import torch_device
from autodeco_lp.evaluation.bench import (
    STATIC_TEMPERATURE,
    STATIC_TOP_P,
    bench_generate,
    bench_generate_vllm,
    format_rows,
)
from autodeco_lp.hub.models import load_model, model_source
from autodeco_lp.hub.registry import resolve_heads, resolve_heads_for_model
from autodeco_lp.inference.heads import AutoDecoHeads

STATIC = f"T={STATIC_TEMPERATURE}, P={STATIC_TOP_P}"  # the static arm of both backends


@click.group("bench")
def bench_group() -> None:
    """Speed and memory benchmarks."""


@bench_group.command("generate")
@click.option("--model", default="smollm2", show_default=True, help="Hub id, folder, or `smollm2`.")
@click.option("--heads", default=None, help="Heads folder or Hub id; default: the registry entry for --model.")
@click.option("--new-tokens", default=32, show_default=True, help="Tokens generated per run (min = max).")
@click.option("--repeats", default=7, show_default=True, help="Interleaved static/AutoDeco pairs per batch size.")
@click.option("--batch-sizes", default="1,8", show_default=True, help="Comma-separated batch sizes.")
@click.option("--device", default=None, help="torch device; default: CUDA if available.")
@click.option(
    "--backend",
    type=click.Choice(["hf", "vllm"]),
    default="hf",
    show_default=True,
    help=f"hf: transformers generate; vllm: plain vLLM at static {STATIC} vs AutoDeco in vLLM.",
)
def generate(
    model: str,
    heads: str | None,
    new_tokens: int,
    repeats: int,
    batch_sizes: str,
    device: str | None,
    backend: str,
) -> None:
    """Decode overhead of AutoDeco against static sampling (the paper's Table 3), in transformers or vLLM."""
    if backend == "vllm":
        _generate_vllm(model, heads, new_tokens, repeats, batch_sizes)
        return

    try:
        sizes = _batch_sizes(batch_sizes)
        device = torch_device(device)
        loaded, tokenizer = load_model(model, device=device)
        heads_id = heads or resolve_heads_for_model(loaded)
        rows = bench_generate(loaded, tokenizer, AutoDecoHeads.from_pretrained(heads_id), new_tokens, repeats, sizes)
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"model={loaded.name_or_path} heads={heads_id}"
    )
    click.echo(f"new_tokens={new_tokens} repeats={repeats}; static = transformers' warpers at {STATIC}")
    click.echo(format_rows(rows))


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"`--batch-sizes` has to list positive ints, but is {text!r}")
    return sizes


def _generate_vllm(model: str, heads: str | None, new_tokens: int, repeats: int, batch_sizes: str) -> None:
    try:
        sizes = _batch_sizes(batch_sizes)
        source = model_source(model)
        heads_id = heads or resolve_heads(source.name)
        rows = bench_generate_vllm(source.path, heads_id, new_tokens, repeats, sizes)
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    import vllm  # noqa: PLC0415 (optional dependency)

    click.echo(
        f"backend=vllm {vllm.__version__} torch={torch.__version__} cpu={platform.processor() or platform.machine()} "
        f"torch_threads={torch.get_num_threads()} model={model} heads={heads_id}"
    )
    click.echo(
        f"new_tokens={new_tokens} repeats={repeats}; static = vLLM at {STATIC}; AutoDeco at request T=P=1; fp32, eager"
    )
    click.echo(format_rows(rows))
