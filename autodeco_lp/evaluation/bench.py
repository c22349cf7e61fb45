"""`autodeco bench generate`: decode overhead of AutoDeco against transformers' own warpers.

Same model, prompts, seeds and number of new tokens (min = max, so every run generates exactly
N tokens) for three arms, repeats interleaved (static, same-filter, autodeco, static, ...) so
machine noise hits them alike:
- static: transformers' Temperature + TopP warpers (T = 0.8, P = 0.9), what users run today;
- same-filter (HF only): the same constant T and P through AutoDeco's own nucleus filter
  (`features.hard_top_p_filter`), so `autodeco / same-filter` is what the heads themselves cost
  (hook, MLPs, statistics), while `autodeco / static` also counts our faster top-p sort;
- autodeco: the heads' per-token T and P.
Reports tokens/s, the per-repeat time ratios (median, min-max), and peak CUDA memory of the
static and autodeco arms on a GPU (on a CPU there is no per-arm allocator peak: "n/a").
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

import torch

from autodeco_lp.engines.hf_sampler import sequence_bytes
from autodeco_lp.inference.processor import AutoDeco
from autodeco_lp.inference.sampling import StaticNucleus, format_prompts, uses_chat_template
from autodeco_lp.vllm import hf_overrides, in_process_engines

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


@dataclass
class BenchRow:
    batch: int
    static_tokens_per_second: float
    autodeco_tokens_per_second: float
    ratio_median: float
    ratio_min: float
    ratio_max: float
    static_peak_bytes: int | None
    autodeco_peak_bytes: int | None
    # The same-filter arm (HF only): constant T and P through AutoDeco's nucleus filter.
    same_filter_tokens_per_second: float | None = None
    heads_ratio_median: float | None = None  # autodeco / same-filter, per repeat
    heads_ratio_min: float | None = None
    heads_ratio_max: float | None = None

    @classmethod
    def from_times(
        cls,
        batch: int,
        new_tokens: int,
        static_times: list[float],
        autodeco_times: list[float],
        peaks=(None, None),
        same_filter_times: list[float] | None = None,
    ) -> BenchRow:
        """Tokens/s from the median times; the ratios autodeco/static (and autodeco/same-filter) per
        interleaved repeat (median, min, max)."""
        tokens = batch * new_tokens
        ratios = [a / s for a, s in zip(autodeco_times, static_times)]
        extra = {}
        if same_filter_times:
            heads = [a / f for a, f in zip(autodeco_times, same_filter_times)]
            extra = dict(
                same_filter_tokens_per_second=tokens / statistics.median(same_filter_times),
                heads_ratio_median=statistics.median(heads),
                heads_ratio_min=min(heads),
                heads_ratio_max=max(heads),
            )
        return cls(
            batch,
            tokens / statistics.median(static_times),
            tokens / statistics.median(autodeco_times),
            statistics.median(ratios),
            min(ratios),
            max(ratios),
            *peaks,
            **extra,
        )


STATIC_TEMPERATURE, STATIC_TOP_P = 0.8, 0.9


def timed_generate(model, enc, processor, new_tokens: int, seed: int, **generate_kwargs) -> tuple[float, int | None]:
    """One generate call; `processor` None = transformers' warpers at the static T and P.
    `generate_kwargs` go to `generate` as they are (e.g. a static cache and its compile config)."""
    if processor is None:
        sampling = dict(temperature=STATIC_TEMPERATURE, top_p=STATIC_TOP_P)
    else:
        sampling = dict(temperature=1.0, top_p=1.0)
    cuda = next(model.parameters()).is_cuda
    if cuda:
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
        **generate_kwargs,
    )
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() if cuda else None


def bench_generate(
    model, tokenizer, heads, new_tokens: int = 32, repeats: int = 7, batch_sizes=(1, 8)
) -> list[BenchRow]:
    if repeats < 1 or new_tokens < 1:
        raise ValueError(f"`repeats` and `new_tokens` have to be positive, but are {repeats} and {new_tokens}")
    check_batches_fit(model, tokenizer, new_tokens, batch_sizes)
    rows = []
    tokenizer.padding_side = "left"
    same_filter = StaticNucleus(STATIC_TEMPERATURE, STATIC_TOP_P)
    with AutoDeco(model, heads, record_trace=False) as autodeco:
        for batch in batch_sizes:
            texts = format_prompts(tokenizer, (PROMPTS * batch)[:batch])
            raw = not uses_chat_template(tokenizer)  # a base model: raw prompts need BOS
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=raw).to(model.device)
            for processor in (None, same_filter, autodeco):  # warm-up every path
                timed_generate(model, enc, processor, 4, 0)
            static_times, filter_times, autodeco_times = [], [], []
            peaks: list[int | None] = [None, None]
            for repeat in range(repeats):
                s, ps = timed_generate(model, enc, None, new_tokens, repeat)
                f, _ = timed_generate(model, enc, same_filter, new_tokens, repeat)
                a, pa = timed_generate(model, enc, autodeco, new_tokens, repeat)
                static_times.append(s)
                filter_times.append(f)
                autodeco_times.append(a)
                if ps is not None:
                    peaks = [max(peaks[0] or 0, ps), max(peaks[1] or 0, pa)]
            rows.append(BenchRow.from_times(batch, new_tokens, static_times, autodeco_times, peaks, filter_times))
    return rows


def available_bytes(device: torch.device) -> int:
    """Memory a new allocation can take: free CUDA memory on a GPU; on a CPU the kernel's MemAvailable
    (free pages plus the caches it can drop), else the free pages."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the file counts kB
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_batches_fit(model, tokenizer, new_tokens: int, batch_sizes) -> None:
    """Refuse, before any batch is built, a batch size whose generate cannot be allocated: its sequences'
    KV cache and logits (`hf_sampler.sequence_bytes`, longest prompt plus `new_tokens`) against the
    device's available memory, with the largest batch that would fit."""
    raw = not uses_chat_template(tokenizer)
    prompt_tokens = max(
        len(ids) for ids in tokenizer(format_prompts(tokenizer, PROMPTS), add_special_tokens=raw)["input_ids"]
    )
    per_sequence = sequence_bytes(model, prompt_tokens, new_tokens)
    available = available_bytes(model.device)
    largest = max(batch_sizes)
    if largest * per_sequence > available:
        raise ValueError(
            f"`--batch-sizes` holds {largest}, whose generate needs about {largest * per_sequence / 2**30:.1f} GiB "
            f"(KV cache and logits of {largest} sequences of {prompt_tokens + new_tokens} tokens) but "
            f"{available / 2**30:.1f} GiB is available on {model.device}; pass batch sizes of at most "
            f"{max(1, available // per_sequence)}"
        )


def format_rows(rows: list[BenchRow]) -> str:
    """A fixed-width table; the same-filter columns only when that arm ran."""
    same_filter = any(r.heads_ratio_median is not None for r in rows)
    header = f"{'batch':>5} {'static tok/s':>13} {'autodeco tok/s':>15} {'ratio median':>13} {'ratio min-max':>15}"
    if same_filter:
        header += f" {'same-filter tok/s':>18} {'heads ratio median':>19} {'heads min-max':>15}"
    lines = [header + f" {'peak MiB static/autodeco':>25}"]
    for r in rows:
        peak = (
            "n/a (CPU)"
            if r.static_peak_bytes is None
            else f"{r.static_peak_bytes / 2**20:.0f}/{r.autodeco_peak_bytes / 2**20:.0f}"
        )
        line = (
            f"{r.batch:>5} {r.static_tokens_per_second:>13.1f} {r.autodeco_tokens_per_second:>15.1f} "
            f"{r.ratio_median:>13.3f} {r.ratio_min:>7.3f}-{r.ratio_max:<7.3f}"
        )
        if same_filter:
            line += (
                f" {r.same_filter_tokens_per_second:>18.1f} {r.heads_ratio_median:>19.3f} "
                f"{r.heads_ratio_min:>7.3f}-{r.heads_ratio_max:<7.3f}"
            )
        lines.append(line + f" {peak:>25}")
    return "\n".join(lines)


def bench_generate_vllm(
    model_dir: str,
    heads: str,
    new_tokens: int = 32,
    repeats: int = 5,
    batch_sizes=(1, 8, 64),
    static_temperature: float = STATIC_TEMPERATURE,
    static_top_p: float = STATIC_TOP_P,
    dtype: str = "float32",
    seed: int = 0,
) -> list[BenchRow]:
    """Plain vLLM sampling at a static (T, P < 1) against AutoDeco in vLLM (request T = P = 1).

    Two in-process engines on the same folder and engine seed; per batch size the same chat
    prompts and exactly `new_tokens` tokens per row (`ignore_eos`), one warm-up each, then
    `repeats` interleaved pairs (static, autodeco). Both arms sort the vocabulary for top-p once.
    """
    in_process_engines()  # both engines in this process, idle when unused
    from vllm import LLM, SamplingParams  # noqa: PLC0415 (optional dependency)

    if repeats < 1 or new_tokens < 1:
        raise ValueError(f"`repeats` and `new_tokens` have to be positive, but are {repeats} and {new_tokens}")
    engine = dict(dtype=dtype, max_model_len=512, enforce_eager=True, seed=seed)
    static = LLM(model_dir, **engine)
    autodeco = LLM(model_dir, hf_overrides=hf_overrides(heads), **engine)
    static_params = SamplingParams(
        temperature=static_temperature, top_p=static_top_p, max_tokens=new_tokens, ignore_eos=True
    )
    autodeco_params = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=new_tokens, ignore_eos=True)

    def timed(llm, chats, params) -> float:
        start = time.perf_counter()
        outs = llm.chat(chats, params, use_tqdm=False)
        elapsed = time.perf_counter() - start
        assert all(len(o.outputs[0].token_ids) == new_tokens for o in outs)
        return elapsed

    rows = []
    for batch in batch_sizes:
        chats = [[{"role": "user", "content": p}] for p in (PROMPTS * batch)[:batch]]
        timed(static, chats, static_params)  # warm-up both engines
        timed(autodeco, chats, autodeco_params)
        static_times, autodeco_times = [], []
        for _ in range(repeats):
            static_times.append(timed(static, chats, static_params))
            autodeco_times.append(timed(autodeco, chats, autodeco_params))
        rows.append(BenchRow.from_times(batch, new_tokens, static_times, autodeco_times))
    return rows
