"""Peak memory and time of the chunked AutoDeco loss against a naive full-tensor implementation.

    .venv/bin/python benchmarks/bench_loss.py [--positions 4096] [--vocab 49152] [--hidden 576] \\
        [--chunk 256] [--repeats 3]

Both variants compute the same objective (temperature CE + soft top-p NLL, DFT, easy-token
drop), forward and backward, for N supervised positions: the naive one materialises every
`(N, V)` tensor at once, as the authors' training code does for `(B, S, V)`; ours goes chunk by
chunk (`autodeco_lp.training.losses`). Peak memory: on CUDA `max_memory_allocated`; on CPU each variant
runs in its own subprocess and reports its peak RSS above the RSS it had with the inputs ready.
Time: both variants in one process, interleaved, median over repeats, and the per-pair ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from autodeco_lp import AutoDecoConfig, AutoDecoHeads
from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.inference.features import soft_top_p_probs
from autodeco_lp.training.losses import LossConfig, autodeco_loss


def naive_loss(heads, hidden, labels, weight, uniforms, config: LossConfig) -> torch.Tensor:
    logits = hidden.float() @ weight.float().T  # (N, V)
    base = torch.softmax(logits, -1)
    w = base.gather(-1, labels[:, None]).squeeze(-1) if config.dft else torch.ones_like(labels, dtype=torch.float32)
    keep = ~((base.argmax(-1) == labels) & (uniforms < config.easy_token_drop))
    temperature, top_p = heads(hidden, logits)
    t = temperature.clamp_min(1e-2)[:, None]
    ce = torch.nn.functional.cross_entropy(logits / t, labels, reduction="none")
    loss_t = (ce * w * keep).sum() / keep.sum().clamp_min(1)
    soft = soft_top_p_probs(logits, t.squeeze(-1), top_p, config.alpha)  # (N, V): the reference in features.py
    loss_p = (-torch.log(soft.gather(-1, labels[:, None]).squeeze(-1) + 1e-30) * w).mean()
    return loss_t + loss_p


def make_inputs(args, device):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    heads = AutoDecoHeads(AutoDecoConfig(hidden_size=args.hidden, vocab_size=args.vocab)).to(device)
    hidden = torch.randn(args.positions, args.hidden, generator=gen).to(device)
    weight = (torch.randn(args.vocab, args.hidden, generator=gen) * 0.08).to(device)
    labels = torch.randint(0, args.vocab, (args.positions,), generator=gen).to(device)
    uniforms = torch.rand(args.positions, generator=gen).to(device)
    return heads, hidden, labels, weight, uniforms


def run_once(variant, heads, hidden, labels, weight, uniforms, chunk) -> float:
    heads.zero_grad()
    if hidden.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    config = LossConfig(chunk_size=chunk)
    if variant == "naive":
        loss = naive_loss(heads, hidden, labels, weight, uniforms, config)
    else:
        lm_head = OutputProjection(weight=weight, bias=None, softcap=None)
        loss = autodeco_loss(heads, hidden, labels, lm_head, config=config, uniforms=uniforms)
    loss.backward()
    if hidden.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def memory_child(args) -> None:
    """Runs in a subprocess: peak RSS growth of one forward + backward."""
    inputs = make_inputs(args, "cpu")
    before = _rss_bytes()
    run_once(args.variant, *inputs, args.chunk)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak_bytes": peak - before}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--positions", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        return memory_child(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"N={args.positions} V={args.vocab} H={args.hidden} chunk={args.chunk} device={device}")
    peak = {}
    for variant in ("naive", "chunked"):
        if device == "cuda":
            inputs = make_inputs(args, device)
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            run_once(variant, *inputs, args.chunk)
            peak[variant] = torch.cuda.max_memory_allocated() - base
            del inputs
        else:
            cmd = [sys.executable, __file__, "--variant", variant, *sys.argv[1:]]
            peak[variant] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)[
                "peak_bytes"
            ]
    inputs = make_inputs(args, device)
    times = {"naive": [], "chunked": []}
    run_once("chunked", *inputs, args.chunk)  # warm-up
    for _ in range(args.repeats):
        for variant in ("naive", "chunked"):
            times[variant].append(run_once(variant, *inputs, args.chunk))
    ratios = [c / n for c, n in zip(times["chunked"], times["naive"])]
    for variant in ("naive", "chunked"):
        print(
            f"{variant:>8}: peak {peak[variant] / 2**20:9.0f} MiB   time {statistics.median(times[variant]):7.3f} s "
            f"(median of {args.repeats})"
        )
    print(f"memory: chunked uses {peak['naive'] / max(peak['chunked'], 1):.1f}x less")
    print(f"time ratio chunked/naive: {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
