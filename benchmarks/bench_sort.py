"""The nucleus filter's sort: `features.rank_order` against `torch.sort`, and the whole filter against
transformers' `TopPLogitsWarper`, side by side in one run.

    .venv/bin/python benchmarks/bench_sort.py [--vocab 49152] [--batch-sizes 1 8 64] [--repeats 50]

Rows of Gaussian logits (std 3) of width `--vocab`; each timing is the median over `--repeats`
calls after a warm-up, the calls of the compared pair interleaved. Prints milliseconds per call and
the ratio torch / ours.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import TopPLogitsWarper

from autodeco_lp.inference.features import hard_top_p_filter, rank_order


def paired_medians(first, second, repeats: int) -> tuple[float, float]:
    """Median ms per call of two callables, interleaved call by call."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print(f"vocab={args.vocab} repeats={args.repeats} threads={torch.get_num_threads()} torch={torch.__version__}")
    header = f"{'batch':>5} {'torch.sort ms':>14} {'rank_order ms':>14} {'x':>6}"
    print(header + f" {'TopP warper ms':>15} {'our filter ms':>14} {'x':>6}")
    gen = torch.Generator().manual_seed(0)
    warper = TopPLogitsWarper(0.9)
    for batch in args.batch_sizes:
        scores = torch.randn(batch, args.vocab, generator=gen) * 3
        sort_ms, rank_ms = paired_medians(
            lambda s=scores: torch.sort(s, dim=-1, descending=True, stable=True), lambda s=scores: rank_order(s),
            args.repeats,
        )  # fmt: skip
        warp_ms, filter_ms = paired_medians(
            lambda s=scores: warper(None, s), lambda s=scores: hard_top_p_filter(s, 0.9), args.repeats
        )
        print(
            f"{batch:>5} {sort_ms:>14.2f} {rank_ms:>14.2f} {sort_ms / rank_ms:>6.1f} "
            f"{warp_ms:>15.2f} {filter_ms:>14.2f} {warp_ms / filter_ms:>6.1f}"
        )


if __name__ == "__main__":
    main()
