"""The decode step itself: operators dispatched and host-device syncs per step, then the step's time.

    .venv/bin/python benchmarks/bench_step.py [--preset small] [--batch-sizes 1 8 64] [--steps 8] [--repeats 30]

A random-init Qwen2 model at the preset's dimensions (`--hidden`, `--layers`, `--vocab` override them;
no weights needed: the step's cost depends on the shapes, not the values) and random-init heads of the
released architecture. Arms, each a logits processor in `generate` (do_sample, T = P = 1, top_k None):
- static: transformers' `TemperatureLogitsWarper(0.8)` + `TopPLogitsWarper(0.9)`;
- same-filter: the same constant T and P through AutoDeco's nucleus filter (`StaticNucleus`);
- autodeco / autodeco+trace: the heads' per-token T and P, `record_trace` off / on;
- autodeco compiled: `AutoDeco(..., compile_step=True)` (inductor), trace on.

Counts (torch.profiler, CPU activity): the top-level `aten::` operators of a whole `generate` of
`--steps` tokens with the arm, minus those of the same `generate` without a processor, divided by the
steps; so the capture hook's slicing counts too. "ops" counts every dispatch, "compute" leaves out
those that only make views or no-op casts (what launches no kernel on a GPU). "syncs" counts reads of a
device value by the host (`aten::_local_scalar_dense`: `.item()`, `if tensor:`; `aten::nonzero`); on
CUDA each processor call also runs under `torch.cuda.set_sync_debug_mode("error")`. On a CPU the rank order's
numpy sort is no operator; on CUDA (and compiled) the same step calls `torch.sort` instead.

Timing: median ms per call of each arm's step alone (interleaved, after a warm-up) on captured rows of
the model, next to the model's own decode forward; "x" is each arm over same-filter.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import Qwen2Config, Qwen2ForCausalLM, TemperatureLogitsWarper, TopPLogitsWarper

from autodeco_lp import AutoDeco, AutoDecoConfig, AutoDecoHeads
from autodeco_lp.inference.processor import autodeco_step
from autodeco_lp.inference.sampling import StaticNucleus
from autodeco_lp.inference.settings import DecodingSettings

STATIC_T, STATIC_P = 0.8, 0.9
# Model dimensions: R1-Distill-Qwen-7B and Qwen2.5-1.5B (the GPU measurements), and a CPU-sized model
# with a real vocabulary width (the processor's cost grows with V, the model's with H and the layers).
PRESETS = {
    "r1-distill-qwen-7b": dict(
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, vocab_size=152064,
    ),
    "qwen2.5-1.5b": dict(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, vocab_size=151936,
    ),
    "small": dict(
        hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=49152,
    ),
}  # fmt: skip
# Operators that only make a view or alias, or return their input: no kernel on a GPU.
NO_KERNEL = {
    "aten::view", "aten::unsqueeze", "aten::squeeze", "aten::detach", "aten::slice", "aten::select",
    "aten::expand", "aten::as_strided", "aten::t", "aten::transpose", "aten::resolve_conj", "aten::resolve_neg",
    "aten::lift_fresh", "aten::alias", "aten::reshape", "aten::contiguous", "aten::empty", "aten::empty_like",
}  # fmt: skip
SYNCS = {"aten::_local_scalar_dense", "aten::nonzero"}
SYNC = "<host reads a device value>"  # the counter key of SYNCS events


def add_model_options(parser: argparse.ArgumentParser, preset: str) -> None:
    parser.add_argument("--preset", default=preset, choices=sorted(PRESETS))
    parser.add_argument("--hidden", type=int, default=None, help="override the preset's hidden size")
    parser.add_argument("--layers", type=int, default=None, help="override the preset's number of layers")
    parser.add_argument("--vocab", type=int, default=None, help="override the preset's vocabulary width")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="default: bf16 on CUDA")


def random_model(args: argparse.Namespace, device: str) -> tuple[Qwen2ForCausalLM, AutoDecoHeads]:
    """A random-init Qwen2 at the chosen dimensions (built on `device` directly) and random heads."""
    dims = dict(PRESETS[args.preset])
    if args.hidden:
        # keep the head width (hidden / heads) of the preset when only the hidden size changes
        head_dim = dims["hidden_size"] // dims["num_attention_heads"]
        dims.update(hidden_size=args.hidden, num_attention_heads=max(1, args.hidden // head_dim))
        dims["num_key_value_heads"] = min(dims["num_key_value_heads"], dims["num_attention_heads"])
    dims.update({k: v for k, v in (("num_hidden_layers", args.layers), ("vocab_size", args.vocab)) if v})
    dtype = getattr(torch, args.dtype or ("bfloat16" if device == "cuda" else "float32"))
    config = Qwen2Config(**dims, max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(dtype).eval()
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, None
    heads = AutoDecoHeads(AutoDecoConfig(hidden_size=config.hidden_size, vocab_size=config.vocab_size))
    return model, heads.to(device)


def prompt_batch(model, batch: int, length: int = 16) -> dict[str, torch.Tensor]:
    """`batch` random prompts of `length` tokens (ids >= 3: no pad, BOS or EOS)."""
    gen = torch.Generator().manual_seed(batch)
    ids = torch.randint(3, model.config.vocab_size, (batch, length), generator=gen).to(model.device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class Warpers:
    """transformers' Temperature + TopP warpers as one processor (what `generate` adds at T = 0.8, P = 0.9)."""

    def __init__(self) -> None:
        self.temperature, self.top_p = TemperatureLogitsWarper(STATIC_T), TopPLogitsWarper(STATIC_P)

    def __call__(self, input_ids, scores):
        return self.top_p(input_ids, self.temperature(input_ids, scores))


def _top_level_ops(prof) -> collections.Counter:
    """Top-level `aten::` events (an operator called by another operator is its implementation), with a
    no-op `aten::to` (no `_to_copy` below it) counted as a view, and under `SYNC` the SYNCS events at any
    depth."""
    counts: collections.Counter = collections.Counter()
    for event in prof.events():
        if event.name in SYNCS:  # at any depth: `aten::is_nonzero` (an `if tensor:`) reads the value below it
            counts[SYNC] += 1
        parent = event.cpu_parent
        if not event.name.startswith("aten::") or (parent is not None and parent.name.startswith("aten::")):
            continue
        copies = any(child.name == "aten::_to_copy" for child in event.cpu_children)
        counts["view" if event.name in ("aten::to", "aten::type_as") and not copies else event.name] += 1
    return counts


class SyncGuard:
    """A processor run under `torch.cuda.set_sync_debug_mode("error")`: a host-device sync inside it raises.
    Only around the processor: `generate` itself syncs once per step (its stopping check)."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, input_ids, scores):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return self.processor(input_ids, scores)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def _profiled_generate(model, batch, processor, steps: int) -> collections.Counter:
    kwargs = dict(do_sample=True, top_k=None, temperature=1.0, top_p=1.0, max_new_tokens=steps, min_new_tokens=steps)
    processors = [processor] if processor is not None else None
    model.generate(**batch, **kwargs, logits_processor=processors)  # warm-up (and compile, if any), unguarded
    if processor is not None and model.device.type == "cuda":
        processors = [SyncGuard(processor)]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.generate(**batch, **kwargs, logits_processor=processors)
    return _top_level_ops(prof)


def count_step(model, batch, processor, steps: int, baseline: collections.Counter) -> dict[str, float]:
    """Per decode step of `generate`: operators ("ops", "compute") and syncs the processor adds."""
    extra = _profiled_generate(model, batch, processor, steps)
    extra.subtract(baseline)
    syncs = extra.pop(SYNC, 0)
    ops = sum(extra.values())
    return {
        "ops": ops / steps,
        "compute": (ops - sum(n for name, n in extra.items() if name in NO_KERNEL or name == "view")) / steps,
        "syncs": syncs / steps,
    }


def arms(model, heads) -> dict[str, object]:
    """Each compared processor as a function that builds it (AutoDeco attaches its hook when built)."""
    return {
        "static": Warpers,
        "same-filter": lambda: StaticNucleus(STATIC_T, STATIC_P),
        "autodeco": lambda: AutoDeco(model, heads, record_trace=False),
        "autodeco+trace": lambda: AutoDeco(model, heads, record_trace=True),
        "autodeco compiled": lambda: AutoDeco(model, heads, record_trace=True, compile_step=True),
    }


def count_table(model, heads, batch_sizes: list[int], steps: int, names: list[str]) -> list[str]:
    """One line per (batch, arm in `names`): ops, compute ops and syncs per decode step."""
    lines = [f"{'batch':>5} {'arm':>18} {'ops/step':>9} {'compute/step':>13} {'syncs/step':>11}"]
    builders = arms(model, heads)
    for size in batch_sizes:
        batch = prompt_batch(model, size)
        baseline = _profiled_generate(model, batch, None, steps)
        for name in names:
            build = builders[name]
            processor = build()  # one at a time: another AutoDeco's hook would add its operators
            try:
                c = count_step(model, batch, processor, steps, baseline)
            finally:
                if isinstance(processor, AutoDeco):
                    processor.close()
            lines.append(f"{size:>5} {name:>18} {c['ops']:>9.1f} {c['compute']:>13.1f} {c['syncs']:>11.1f}")
    return lines


def interleaved_medians(calls: dict[str, object], repeats: int, sync) -> dict[str, float]:
    """Median ms per call of each callable, called in turn `repeats` times after one warm-up each."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        fn()
    for _ in range(repeats):
        for name, fn in calls.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


@torch.no_grad()
def time_batch(model, heads, size: int, repeats: int, compiled) -> dict[str, float]:
    """Median ms per call at batch `size`: a decode forward of the model, and each arm's step on its
    last-position logits (random hidden states for the heads: their cost does not depend on the values)."""
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    batch = prompt_batch(model, size)
    out = model(**batch, logits_to_keep=1, use_cache=True)
    cache, one = out.past_key_values, batch["input_ids"][:, -1:]
    hidden = torch.randn(size, model.config.hidden_size, device=model.device, dtype=model.dtype)  # (B, H)
    logits = out.logits[:, -1].float()  # (B, V)
    settings = DecodingSettings()  # AutoDeco's defaults; the step itself needs no hook
    static, same = Warpers(), StaticNucleus(STATIC_T, STATIC_P)
    calls = {
        "forward": lambda: (model(input_ids=one, past_key_values=cache, logits_to_keep=1), cache.crop(-1)),
        "static": lambda: static(None, logits),
        "same-filter": lambda: same(None, logits),
        "autodeco": lambda: autodeco_step(heads, settings, 1, hidden, logits, logits),
        "autodeco compiled": lambda: compiled(heads, settings, 1, hidden, logits, logits),
    }
    return interleaved_medians(calls, repeats, sync)


def time_table(model, heads, batch_sizes: list[int], repeats: int) -> list[str]:
    """One line per batch size: the forward's ms, each arm's ms and its ratio to same-filter."""
    names = ["static", "same-filter", "autodeco", "autodeco compiled"]
    lines = [f"{'batch':>5} {'forward ms':>11}" + "".join(f" {name + ' ms':>20} {'x':>6}" for name in names)]
    compiled = torch.compile(autodeco_step)
    for size in batch_sizes:
        ms = time_batch(model, heads, size, repeats, compiled)
        line = f"{size:>5} {ms['forward']:>11.2f}"
        lines.append(line + "".join(f" {ms[name]:>20.3f} {ms[name] / ms['same-filter']:>6.2f}" for name in names))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(parser, "small")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--steps", type=int, default=8, help="decode steps profiled per arm")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per arm (0: counts only)")
    names = list(arms(None, None))
    parser.add_argument("--arms", nargs="+", default=names, choices=names, help="arms whose operators are counted")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, heads = random_model(args, device)
    config = model.config
    print(
        f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} dtype={model.dtype} "
        f"hidden={config.hidden_size} layers={config.num_hidden_layers} vocab={config.vocab_size}"
    )
    print("\n".join(count_table(model, heads, args.batch_sizes, args.steps, args.arms)))
    if args.repeats:
        print("\n".join(time_table(model, heads, args.batch_sizes, args.repeats)))


if __name__ == "__main__":
    main()
