"""Peak memory and time of the AutoDeco loss: naive full-tensor vs chunked exact vs chunked top-k.

    .venv/bin/python benchmarks/bench_loss.py [--positions 4096] [--vocab 49152 262144] [--hidden 576] \\
        [--chunk 256] [--repeats 3] [--logits flat|smollm2] [--variants naive exact topk]

All variants compute the same objective (temperature CE + soft top-p NLL, DFT, easy-token drop),
forward and backward, for N supervised positions: "naive" materialises every `(N, V)` tensor at
once, as the authors' training code does for `(B, S, V)`; "exact" is `autodeco_lp.training.losses`
chunk by chunk with the full sort (`--soft-top-p exact`); "topk" the same with the sort-free soft
top-p term (`--soft-top-p topk`, within `topk_eps / 2` per position of "exact").

Inputs (`--logits`):
- "flat": random hidden states, random `lm_head` and random heads (T ~ 1, P ~ 0.45): logits with
  std ~1.9 over the whole vocabulary, entropy ~9 nats. No language model is this flat; it is the
  worst case for "topk" (k grows towards V).
- "smollm2": the real thing at V = 49152: SmolLM2-135M-Instruct's final hidden states over the
  shipped heads' training rows (`heads/smollm2-135m-instruct/train.jsonl`, every position of the
  chat, rows repeated to N), its `lm_head`, and the shipped heads. For V != 49152, `lm_head`'s rows
  are resampled (with replacement, plus 10% Gaussian noise) to V rows and the labels mapped into
  range: a larger vocabulary with SmolLM2's logit distribution, not a real model's.

Peak memory: on CUDA `max_memory_allocated`; on CPU each variant runs in its own subprocess and
reports its peak RSS above the RSS it had with the inputs ready. "naive" is skipped where its
estimated peak (14 fp32 `(N, V)` copies, measured) exceeds `--naive-max-gib`. Time: the variants
interleaved in one process per vocabulary, median over repeats, and per-pair ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from autodeco_lp import AutoDecoConfig, AutoDecoHeads
from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.inference.features import soft_top_p_probs
from autodeco_lp.training.losses import DEFAULT_TOPK_EPS, LossConfig, autodeco_loss

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2_HEADS = ROOT / "heads" / "smollm2-135m-instruct"
VARIANTS = ("naive", "exact", "topk")
NAIVE_COPIES = 14  # fp32 (N, V) tensors alive at the naive loss's peak (10796 MiB at N = 4096, V = 49152)


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


def _smollm2_hidden(positions: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hidden (N, 576), labels (N,), lm_head weight (49152, 576)) from the real model and data."""
    from autodeco_lp.hub.models import load_model

    model, tokenizer = load_model("smollm2")
    rows = [json.loads(line) for line in (SMOLLM2_HEADS / "train.jsonl").read_text().splitlines()]
    hidden, labels, count = [], [], 0
    with torch.no_grad():
        for row in rows:
            ids = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
            ids = torch.tensor([ids])
            out = model(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-1][0, :-1].float())
            labels.append(ids[0, 1:])
            count += ids.shape[1] - 1
            if count >= positions:
                break
    hidden, labels = torch.cat(hidden), torch.cat(labels)
    repeat = -(-positions // hidden.shape[0])
    return (
        hidden.repeat(repeat, 1)[:positions],
        labels.repeat(repeat)[:positions],
        model.lm_head.weight.detach().float(),
    )


def smollm2_states(args, vocab: int) -> Path:
    """The file holding (hidden, labels, lm_head weight) for `vocab`; built on first use."""
    path = Path(args.states) / f"smollm2_{args.positions}_{vocab}.pt"
    if not path.exists():
        gen = torch.Generator().manual_seed(1)
        hidden, labels, weight = _smollm2_hidden(args.positions)
        if vocab != weight.shape[0]:
            rows = torch.randint(0, weight.shape[0], (vocab,), generator=gen)
            rows[: min(vocab, weight.shape[0])] = torch.arange(min(vocab, weight.shape[0]))
            weight = weight[rows] + 0.1 * weight.std() * torch.randn(vocab, weight.shape[1], generator=gen)
            labels = labels % vocab
        torch.save((hidden, labels, weight), path)
    return path


def make_inputs(args, vocab: int, device):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if args.logits == "flat":
        heads = AutoDecoHeads(AutoDecoConfig(hidden_size=args.hidden, vocab_size=vocab))
        hidden = torch.randn(args.positions, args.hidden, generator=gen)
        weight = torch.randn(vocab, args.hidden, generator=gen) * 0.08
        labels = torch.randint(0, vocab, (args.positions,), generator=gen)
    else:
        heads = AutoDecoHeads.from_pretrained(SMOLLM2_HEADS)
        # Built once by the parent (model forward, lm_head resampling), so a memory child's peak RSS
        # is the loss's, not the set-up's.
        hidden, labels, weight = torch.load(smollm2_states(args, vocab))
    uniforms = torch.rand(args.positions, generator=gen)
    return heads.to(device), hidden.to(device), labels.to(device), weight.to(device), uniforms.to(device)


def run_once(variant, heads, hidden, labels, weight, uniforms, args) -> float:
    heads.zero_grad()
    if hidden.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    soft_top_p = "topk" if variant == "topk" else "exact"
    config = LossConfig(chunk_size=args.chunk, soft_top_p=soft_top_p, topk_eps=args.topk_eps)
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


def _available_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def memory_child(args) -> None:
    """Runs in a subprocess: peak RSS growth of one forward + backward."""
    inputs = make_inputs(args, args.vocab[0], "cpu")
    try:  # reset the peak RSS (VmHWM), so set-up transients (loading, imports) do not count
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    before = _rss_bytes()
    run_once(args.variant, *inputs, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    print(json.dumps({"peak_bytes": peak - before}))


def peak_memory(args, variant: str, vocab: int, device: str) -> int:
    if device == "cuda":
        inputs = make_inputs(args, vocab, device)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run_once(variant, *inputs, args)
        return torch.cuda.max_memory_allocated() - base
    cmd = [sys.executable, __file__, *_child_argv(args), "--variant", variant, "--vocab", str(vocab)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)["peak_bytes"]


def _child_argv(args) -> list[str]:
    return [
        "--positions", str(args.positions), "--hidden", str(args.hidden), "--chunk", str(args.chunk),
        "--logits", args.logits, "--topk-eps", str(args.topk_eps), "--states", args.states,
    ]  # fmt: skip


def bench_vocab(args, vocab: int, device: str) -> None:
    print(
        f"N={args.positions} V={vocab} chunk={args.chunk} logits={args.logits} topk_eps={args.topk_eps} device={device}"
    )
    variants = list(args.variants)
    naive_gib = NAIVE_COPIES * 4 * args.positions * vocab / 2**30
    if "naive" in variants and naive_gib > args.naive_max_gib:
        print(f"   naive: skipped (needs ~{naive_gib:.0f} GiB, --naive-max-gib {args.naive_max_gib:.0f})")
        variants.remove("naive")
    peak = {variant: peak_memory(args, variant, vocab, device) for variant in variants}
    inputs = make_inputs(args, vocab, device)
    times = {variant: [] for variant in variants}
    for variant in variants:
        if variant != "naive" and args.repeats > 1:
            run_once(variant, *inputs, args)  # warm-up (seconds-long runs: skipped for a single repeat)
    for _ in range(args.repeats):
        for variant in variants:
            times[variant].append(run_once(variant, *inputs, args))
    for variant in variants:
        print(
            f"{variant:>8}: peak {peak[variant] / 2**20:9.0f} MiB   time {statistics.median(times[variant]):7.3f} s "
            f"(median of {args.repeats})"
        )
    for fast, slow in (("topk", "exact"), ("exact", "naive"), ("topk", "naive")):
        if fast in times and slow in times:
            ratios = [s / f for s, f in zip(times[slow], times[fast])]
            print(
                f"{fast} vs {slow}: {statistics.median(ratios):.2f}x faster "
                f"(min {min(ratios):.2f}, max {max(ratios):.2f}), "
                f"peak memory {peak[fast] / max(peak[slow], 1):.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--positions", type=int, default=4096)
    parser.add_argument("--vocab", type=int, nargs="+", default=[49152])
    parser.add_argument("--hidden", type=int, default=576, help="flat logits only (smollm2: 576)")
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--logits", choices=["flat", "smollm2"], default="flat")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--topk-eps", type=float, default=DEFAULT_TOPK_EPS)
    parser.add_argument("--naive-max-gib", type=float, default=0.8 * _available_gib())
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--states", help=argparse.SUPPRESS)  # folder of smollm2's inputs, built once per run
    args = parser.parse_args()
    if args.logits == "smollm2":
        args.hidden = 576
    if args.variant:
        return memory_child(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        args.states = tmp
        for vocab in args.vocab:
            if args.logits == "smollm2":
                smollm2_states(args, vocab)
            bench_vocab(args, vocab, device)


if __name__ == "__main__":
    main()
