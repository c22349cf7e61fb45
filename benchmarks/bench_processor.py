"""Decode overhead of AutoDeco against transformers' own Temperature + TopP warpers.

    .venv/bin/python benchmarks/bench_processor.py [--heads DIR] [--new-tokens 32] [--repeats 7]

Same model, prompts, seeds and number of new tokens (min = max, so every run generates
exactly N tokens) for both methods; batch 1 and 8; runs interleaved (static, autodeco,
static, ...) so that machine noise hits both alike. Reports tokens/s and the per-pair time
ratio autodeco/static (median, min-max), and peak CUDA memory when on a GPU.
Without --heads, random-init heads of the released architecture are used: the cost of the
heads does not depend on their weights.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autodeco_lp import AutoDeco, AutoDecoConfig, AutoDecoHeads
from autodeco_lp.models import load_model

PROMPTS = [
    "What is 17 + 25?",
    "Write a haiku about the sea.",
    "Explain what a prime number is.",
    "List three colours.",
    "What is the capital of France?",
    "Give me a word that rhymes with cat.",
    "How many legs does a spider have?",
    "Say hello in Spanish.",
]


def _timed_generate(model, enc, processor, new_tokens: int, seed: int) -> tuple[float, int]:
    sampling = dict(temperature=1.0, top_p=1.0) if processor is not None else dict(temperature=0.8, top_p=0.9)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(seed)
    start = time.perf_counter()
    model.generate(
        **enc,
        do_sample=True,
        top_k=None,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        logits_processor=[processor] if processor is not None else None,
        **sampling,
    )
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    return time.perf_counter() - start, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--heads", default=None)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-sizes", default="1,8")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model(args.model, device=device)
    if args.heads:
        heads = AutoDecoHeads.from_pretrained(args.heads)
    else:
        torch.manual_seed(0)
        heads = AutoDecoHeads(AutoDecoConfig(hidden_size=model.config.hidden_size, vocab_size=model.config.vocab_size))
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} model={model.name_or_path}")
    print(f"new_tokens={args.new_tokens} repeats={args.repeats} heads={'random-init' if not args.heads else args.heads}")
    print(f"{'batch':>5} {'static tok/s':>13} {'autodeco tok/s':>15} {'ratio median':>13} {'ratio min-max':>15} {'peak MB s/a':>14}")
    with AutoDeco(model, heads, record_trace=False) as autodeco:
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            texts = [
                tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                for p in (PROMPTS * batch)[:batch]
            ]
            enc = tokenizer(texts, return_tensors="pt", padding=True).to(device)
            _timed_generate(model, enc, None, 4, 0)  # warm-up both paths
            _timed_generate(model, enc, autodeco, 4, 0)
            static_times, autodeco_times, ratios, peaks = [], [], [], [0, 0]
            for repeat in range(args.repeats):
                s, ps = _timed_generate(model, enc, None, args.new_tokens, repeat)
                a, pa = _timed_generate(model, enc, autodeco, args.new_tokens, repeat)
                static_times.append(s)
                autodeco_times.append(a)
                ratios.append(a / s)
                peaks = [max(peaks[0], ps), max(peaks[1], pa)]
            tokens = batch * args.new_tokens
            peak_text = f"{peaks[0] / 2**20:.0f}/{peaks[1] / 2**20:.0f}" if device == "cuda" else "n/a (CPU)"
            print(
                f"{batch:>5} {tokens / statistics.median(static_times):>13.1f} {tokens / statistics.median(autodeco_times):>15.1f}"
                f" {statistics.median(ratios):>13.3f} {min(ratios):>7.3f}-{max(ratios):<7.3f}"
                f" {peak_text:>14}"
            )


if __name__ == "__main__":
    main()
