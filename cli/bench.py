"""`autodeco bench ...`: speed benchmarks (never timed tests)."""

from __future__ import annotations

import click


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
def generate(
    model: str, heads: str | None, new_tokens: int, repeats: int, batch_sizes: str, device: str | None
) -> None:
    """Decode overhead of AutoDeco against transformers' Temperature + TopP warpers (the paper's Table 3)."""
    import torch

    from autodeco_lp.evaluation.bench import bench_generate, format_rows
    from autodeco_lp.hub.models import load_model
    from autodeco_lp.hub.registry import resolve_heads_for_model
    from autodeco_lp.inference.heads import AutoDecoHeads

    try:
        sizes = [int(b) for b in batch_sizes.split(",") if b.strip()]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"`--batch-sizes` has to list positive ints, but is {batch_sizes!r}")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        loaded, tokenizer = load_model(model, device=device)
        heads_id = heads or resolve_heads_for_model(loaded)
        rows = bench_generate(loaded, tokenizer, AutoDecoHeads.from_pretrained(heads_id), new_tokens, repeats, sizes)
    except (ValueError, TypeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} model={loaded.name_or_path} heads={heads_id}"
    )
    click.echo(f"new_tokens={new_tokens} repeats={repeats}; static = transformers' warpers at T=0.8, P=0.9")
    click.echo(format_rows(rows))
