"""Tokens/s of the evaluation harness's generate calls per configuration, in one run (HF and vLLM side by side).

    .venv/bin/python benchmarks/bench_eval.py [--model smollm2] [--backends hf vllm] \\
        [--dtypes float32 bfloat16] [--batch-sizes 64 256] [--new-tokens 24] [--repeats 2]

The calls `autodeco eval` makes: chat prompts of one-digit products (the harness's task),
left-padded, sampling at T = 0.7, P = 1 through `StaticNucleus` with no top-k (its static path),
exactly `--new-tokens` tokens per row (min = max, so every configuration does the same work),
timed by `evaluation.bench.timed_generate` (CUDA-synchronised on a GPU). The vllm backend
(`--backends vllm`, needs vLLM) times `autodeco eval --backend vllm`'s own path: its sampler
(`engines.vllm_sampler.VllmSampler`, plain engine, per-sample seeds, no chunked prefill) with
EOS and stop tokens ignored (every call checks it made exactly batch x `--new-tokens` tokens),
one engine per dtype (engines are started once, before timing), at the torch thread
count vLLM chose (it sets 1 for serving unless OMP_NUM_THREADS is set); the hf rows run at the
thread count the process started with. Configurations run interleaved per repeat (backend x dtype
x batch size), after one warm-up call each; reports the median tokens/s and the ratio to the
first configuration. bf16 changes the numbers a model produces:
docs/results.md measures its agreement with fp32 on the task (`autodeco eval --dtype bfloat16`).

`--hf-compile` adds `hf+compile` rows: the same hf calls with a static KV cache
(`cache_implementation="static"`) and the model's forward compiled by `generate` itself
(`CompileConfig`, inductor, mode "default"; on a CPU `generate` compiles only when told to, through
`CompileConfig._compile_all_devices`). Its warm-up makes the full `--new-tokens` (the static
cache's shape is part of the compiled graph) and is where compilation happens, so the timed calls
are steady-state; the compile time itself is printed apart. Before timing, one greedy call per
dtype and batch size checks that compiled and eager decoding produce the same tokens.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import time

import torch

from autodeco_lp.engines import BACKENDS, MODEL_DTYPES, Decoding
from autodeco_lp.evaluation.bench import timed_generate
from autodeco_lp.hub.models import load_model, load_tokenizer, model_source
from autodeco_lp.inference.sampling import StaticNucleus, format_prompts, uses_chat_template

QUESTIONS = [f"What is {a} * {b}?" for a in range(1, 10) for b in range(1, 10)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=["hf"])
    parser.add_argument("--dtypes", nargs="+", choices=list(MODEL_DTYPES), default=list(MODEL_DTYPES))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--hf-compile", action="store_true", help="add hf+compile rows (static cache, torch.compile)")
    args = parser.parse_args()
    hf_threads = torch.get_num_threads()
    source = model_source(args.model).path
    tokenizer = load_tokenizer(source)
    backends = [*args.backends, *(["hf+compile"] if args.hf_compile else [])]
    hf = "hf" in args.backends or args.hf_compile  # the vllm rows need no HF model
    models = {dtype: load_model(args.model, dtype=MODEL_DTYPES[dtype])[0] for dtype in args.dtypes} if hf else {}
    raw = not uses_chat_template(tokenizer)  # a base model: raw prompts need BOS
    samplers, vllm_threads = {}, None
    if "vllm" in args.backends:
        from autodeco_lp.engines.vllm_sampler import VllmSampler  # noqa: PLC0415 (optional dependency)

        longest = max(
            len(ids) for ids in tokenizer(_texts(tokenizer, len(QUESTIONS)), add_special_tokens=raw)["input_ids"]
        )
        # One engine per dtype, all alive while the timed calls interleave: on a GPU they share its memory.
        share = {"gpu_memory_utilization": 0.85 / len(args.dtypes)} if torch.cuda.is_available() else {}
        for dtype in args.dtypes:
            sampler = VllmSampler(
                source, tokenizer, lambda: "", max_model_len=longest + args.new_tokens, dtype=dtype, **share
            )
            sampler.engine(STATIC)  # start it now, not inside the timed calls
            samplers[dtype] = sampler
        vllm_threads = torch.get_num_threads()
    configs = list(itertools.product(backends, args.dtypes, args.batch_sizes))

    def timed(backend: str, dtype: str, batch: int, new_tokens: int) -> float:
        texts = _texts(tokenizer, batch)
        if backend == "vllm":
            torch.set_num_threads(vllm_threads)
            ids, seeds = tokenizer(texts, add_special_tokens=raw)["input_ids"], [[row] for row in range(batch)]
            start = time.perf_counter()
            rows = samplers[dtype].sample_ids(ids, STATIC, seeds, max_new_tokens=new_tokens, ignore_eos=True)
            elapsed = time.perf_counter() - start
            made = sum(sample.num_tokens for row in rows for sample in row)
            assert made == batch * new_tokens, f"vLLM made {made} tokens, not {batch} x {new_tokens}"
            return elapsed
        torch.set_num_threads(hf_threads)
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=raw)
        # The static path `autodeco eval` samples through (sample_completions: StaticNucleus).
        nucleus = StaticNucleus(STATIC.temperature, STATIC.top_p)
        extra = _compiled() if backend == "hf+compile" else {}
        return timed_generate(models[dtype], enc, nucleus, new_tokens, 0, **extra)[0]

    if args.hf_compile:  # compiled and eager greedy decoding agree, token for token
        for dtype, batch in itertools.product(args.dtypes, args.batch_sizes):
            enc = tokenizer(_texts(tokenizer, batch), return_tensors="pt", padding=True, add_special_tokens=raw)
            greedy = dict(do_sample=False, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
            eager = models[dtype].generate(**enc, **greedy)
            with_compile = models[dtype].generate(**enc, **greedy, **_compiled())
            same = int((eager == with_compile).all(dim=1).sum())
            print(f"hf+compile {dtype} batch {batch}: greedy identical to eager in {same} of {batch} rows")
    for backend, dtype, batch in configs:
        compiling = backend == "hf+compile"
        start = time.perf_counter()
        timed(backend, dtype, batch, args.new_tokens if compiling else 2)  # warm-up (and compilation)
        if compiling:
            print(f"hf+compile {dtype} batch {batch}: warm-up with compilation {time.perf_counter() - start:.0f} s")
    times: dict[tuple, list[float]] = {c: [] for c in configs}
    for _ in range(args.repeats):
        for config in configs:
            times[config].append(timed(*config, args.new_tokens))
    threads = f"hf_threads={hf_threads}" + (f" vllm_threads={vllm_threads}" if vllm_threads else "")
    print(f"model={args.model} new_tokens={args.new_tokens} repeats={args.repeats} {threads}")
    base = None
    for (backend, dtype, batch), ts in times.items():
        rate = batch * args.new_tokens / statistics.median(ts)
        base = base or rate
        print(f"{backend:>10} {dtype:>9} batch {batch:>4}: {rate:7.1f} tok/s   x{rate / base:.2f}")


STATIC = Decoding("static", 0.7, 1.0)


@functools.cache
def _compiled() -> dict:
    """`generate` options for a static KV cache with a compiled forward, on any device (built once, and
    only when --hf-compile asks: one CompileConfig object, so generate reuses its compiled forward)."""
    from transformers import CompileConfig  # noqa: PLC0415

    config = CompileConfig(mode="default")  # "reduce-overhead" means CUDA graphs
    config._compile_all_devices = True  # generate compiles on a CPU only when told to (transformers 5.x)
    return {"cache_implementation": "static", "compile_config": config}


def _texts(tokenizer, batch: int) -> list[str]:
    return format_prompts(tokenizer, (QUESTIONS * (batch // len(QUESTIONS) + 1))[:batch])


if __name__ == "__main__":
    main()
