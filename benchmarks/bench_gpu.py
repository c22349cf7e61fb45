"""AutoDeco's decode cost at real model dimensions, without weights: for a lent GPU, and runnable on a CPU.

    .venv/bin/python benchmarks/bench_gpu.py                       # CUDA: R1-Distill-Qwen-7B dims, bf16
    .venv/bin/python benchmarks/bench_gpu.py --preset small --batch-sizes 1 8 --new-tokens 16 --repeats 3

A random-init Qwen2 at the preset's dimensions (`benchmarks/bench_step.py`'s presets: r1-distill-qwen-7b,
qwen2.5-1.5b, small; built on the device directly, so 7.6B parameters take seconds) and random-init
heads: the cost of a decode step depends on the shapes only. Three parts, one run:
1. operators and host-device syncs per decode step of each arm (bench_step's counts; on CUDA under
   `torch.cuda.set_sync_debug_mode("error")`, so a sync in the step fails the run);
2. each arm's step alone, median ms per call, next to the model's decode forward, with the compiled
   step (`AutoDeco(compile_step=True)`'s function);
3. HF `generate`, the three arms of `autodeco_lp.evaluation.bench.bench_generate` (static warpers,
   same-filter, autodeco), repeats interleaved; the per-repeat ratios autodeco / static and
   autodeco / same-filter (the heads' own cost) as median and min-max. Prompts are random ids (16 per row).
"""

from __future__ import annotations

import argparse

import torch
from bench_step import add_model_options, count_table, prompt_batch, random_model, time_table
from transformers import BatchEncoding

from autodeco_lp.evaluation.bench import bench_generate, format_rows


class RandomPrompts:
    """Stands in for the tokenizer `bench_generate` expects: no chat template, and every prompt text
    becomes 16 random token ids (a random-init model has no vocabulary to read text with)."""

    chat_template = None
    padding_side = "left"

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, texts: list[str], **kwargs) -> BatchEncoding:
        return BatchEncoding(prompt_batch(self.model, len(texts)))  # (rows, 16) ids and mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    add_model_options(parser, "r1-distill-qwen-7b" if cuda else "small")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved generate repeats per arm")
    parser.add_argument("--count-steps", type=int, default=4, help="decode steps profiled per arm (0: no counts)")
    parser.add_argument("--step-repeats", type=int, default=30, help="timed step calls per arm (0: no step times)")
    args = parser.parse_args()
    device = "cuda" if cuda else "cpu"
    model, heads = random_model(args, device)
    config = model.config
    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(
        f"device={name} torch={torch.__version__} threads={torch.get_num_threads()} dtype={model.dtype} "
        f"preset={args.preset} hidden={config.hidden_size} layers={config.num_hidden_layers} "
        f"vocab={config.vocab_size} params={sum(p.numel() for p in model.parameters()) / 1e9:.2f}B"
    )
    if args.count_steps:
        names = ["static", "same-filter", "autodeco", "autodeco+trace"]
        print("\n".join(count_table(model, heads, args.batch_sizes, args.count_steps, names)))
    if args.step_repeats:
        print("\n".join(time_table(model, heads, args.batch_sizes, args.step_repeats)))
    print(f"generate: new_tokens={args.new_tokens} repeats={args.repeats} (ratios per repeat: median, min-max)")
    rows = bench_generate(model, RandomPrompts(model), heads, args.new_tokens, args.repeats, args.batch_sizes)
    print(format_rows(rows))


if __name__ == "__main__":
    main()
