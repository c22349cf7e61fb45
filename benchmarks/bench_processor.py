"""Decode overhead of AutoDeco against transformers' own Temperature + TopP warpers.

    .venv/bin/python benchmarks/bench_processor.py [--heads DIR] [--new-tokens 32] [--repeats 7]

Same as `autodeco bench generate` (see `autodeco_lp/evaluation/bench.py`), except that without
--heads it uses random-init heads of the released architecture (their cost does not depend on
their weights), so it runs for any model.
"""

from __future__ import annotations

import argparse

import torch

from autodeco_lp import AutoDecoConfig, AutoDecoHeads
from autodeco_lp.evaluation.bench import bench_generate, format_rows
from autodeco_lp.hub.models import load_model


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
    print(f"new_tokens={args.new_tokens} repeats={args.repeats} heads={args.heads or 'random-init'}")
    rows = bench_generate(
        model, tokenizer, heads, args.new_tokens, args.repeats, [int(b) for b in args.batch_sizes.split(",")]
    )
    print(format_rows(rows))


if __name__ == "__main__":
    main()
