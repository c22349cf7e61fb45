"""`autodeco bench ...`: speed benchmarks (never timed tests)."""

from __future__ import annotations

import platform

import click
import torch

from autodeco_lp.cli.options import dataclass_options
from autodeco_lp.engines import torch_device
from autodeco_lp.evaluation.bench import (
    STATIC_TEMPERATURE,
    STATIC_TOP_P,
    bench_generate,
    bench_generate_vllm,
    format_rows,
)
from autodeco_lp.evaluation.bench_args import BenchArgs
from autodeco_lp.hub.models import load_model, model_source
from autodeco_lp.hub.registry import resolve_heads, resolve_heads_for_model
from autodeco_lp.inference.heads import AutoDecoHeads

STATIC = f"T={STATIC_TEMPERATURE}, P={STATIC_TOP_P}"  # the static arm of both backends


@click.group("bench")
def bench_group() -> None:
    """Speed and memory benchmarks."""


@bench_group.command("generate")
@dataclass_options(BenchArgs)
def generate(**options) -> None:
    """Decode overhead of AutoDeco against static sampling (the paper's Table 3), in transformers or vLLM."""
    try:
        args = BenchArgs(**options)
    except (ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from exc
    if args.backend == "vllm":
        _generate_vllm(args)
        return

    try:
        device = torch_device(args.device)
        loaded, tokenizer = load_model(args.model, device=device)
        heads_id = args.heads or resolve_heads_for_model(loaded)
        heads = AutoDecoHeads.from_pretrained(heads_id)
        rows = bench_generate(loaded, tokenizer, heads, args.new_tokens, args.repeats, args.sizes)
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
        f"model={loaded.name_or_path} heads={heads_id}"
    )
    click.echo(f"new_tokens={args.new_tokens} repeats={args.repeats}; static = transformers' warpers at {STATIC}")
    click.echo(format_rows(rows))


def _generate_vllm(args: BenchArgs) -> None:
    try:
        source = model_source(args.model)
        heads_id = args.heads or resolve_heads(source.name)
        rows = bench_generate_vllm(source.path, heads_id, args.new_tokens, args.repeats, args.sizes)
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    import vllm  # noqa: PLC0415 (optional dependency)

    click.echo(
        f"backend=vllm {vllm.__version__} torch={torch.__version__} cpu={platform.processor() or platform.machine()} "
        f"torch_threads={torch.get_num_threads()} model={args.model} heads={heads_id}"
    )
    click.echo(
        f"new_tokens={args.new_tokens} repeats={args.repeats}; static = vLLM at {STATIC}; AutoDeco at request T=P=1; "
        "fp32, eager"
    )
    click.echo(format_rows(rows))
