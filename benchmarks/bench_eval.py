"""Tokens/s of the evaluation harness's generate calls per configuration, in one run (issue 13 part 1).

    .venv/bin/python benchmarks/bench_eval.py [--model smollm2] [--dtypes float32 bfloat16] \\
        [--batch-sizes 64 256] [--new-tokens 24] [--repeats 2]

The calls `autodeco eval` makes: chat prompts of one-digit products (the harness's task),
left-padded, sampling at T = 0.7, P = 1 through `StaticNucleus` with no top-k (its static path),
exactly `--new-tokens` tokens per row (min = max, so every configuration does the same work),
timed by `evaluation.bench.timed_generate` (CUDA-synchronised on a GPU). Configurations run
interleaved per repeat (dtype x batch size), after one warm-up call each; reports the median
tokens/s and the ratio to the first configuration. bf16 changes the numbers a model produces:
docs/results.md measures its agreement with fp32 on the task (`autodeco eval --dtype bfloat16`).
"""

from __future__ import annotations

import argparse
import itertools
import statistics

import torch

from autodeco_lp.evaluation.bench import timed_generate
from autodeco_lp.evaluation.runner import MODEL_DTYPES
from autodeco_lp.hub.models import load_model
from autodeco_lp.inference.sampling import StaticNucleus, format_prompts, uses_chat_template

QUESTIONS = [f"What is {a} * {b}?" for a in range(1, 10) for b in range(1, 10)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--dtypes", nargs="+", choices=list(MODEL_DTYPES), default=list(MODEL_DTYPES))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    models = {dtype: load_model(args.model, dtype=MODEL_DTYPES[dtype]) for dtype in args.dtypes}
    configs = list(itertools.product(args.dtypes, args.batch_sizes))

    def timed(dtype: str, batch: int, new_tokens: int) -> float:
        model, tokenizer = models[dtype]
        texts = format_prompts(tokenizer, (QUESTIONS * (batch // len(QUESTIONS) + 1))[:batch])
        raw = not uses_chat_template(tokenizer)  # a base model: raw prompts need BOS
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=raw)
        # The static path `autodeco eval` samples through (sample_completions: StaticNucleus).
        return timed_generate(model, enc, StaticNucleus(0.7, 1.0), new_tokens, seed=0)[0]

    for config in configs:
        timed(*config, 2)  # warm-up
    times: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    for _ in range(args.repeats):
        for config in configs:
            times[config].append(timed(*config, args.new_tokens))
    print(f"model={args.model} new_tokens={args.new_tokens} repeats={args.repeats} threads={torch.get_num_threads()}")
    base = None
    for (dtype, batch), ts in times.items():
        rate = batch * args.new_tokens / statistics.median(ts)
        base = base or rate
        print(f"{dtype:>9} batch {batch:>4}: {rate:7.1f} tok/s   x{rate / base:.2f}")


if __name__ == "__main__":
    main()
