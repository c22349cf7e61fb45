"""The hf engine's sampler: transformers' `generate` in this process, AutoDeco as a logits processor.

Static and greedy decodings go through `inference.sampling.sample_completions` as they are; an AutoDeco
decoding adds an `AutoDeco` processor (with its trace, so each `Sample` carries the T and P applied),
kept while consecutive calls use the same heads setting, as the vllm sampler keeps its engine.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from autodeco_lp.engines.base import Sampler, Seeding, prompt_token_ids
from autodeco_lp.engines.decoding import Decoding
from autodeco_lp.inference.heads import AutoDecoHeads
from autodeco_lp.inference.processor import AutoDeco
from autodeco_lp.inference.sampling import Sample, sample_completions
from autodeco_lp.tasks.prompting import Prompts

CPU_BATCH_SIZE = 64  # sequences per generate call on a CPU, where memory does not bound it


def torch_device(device: str | None) -> str:
    """`--device` as given, else CUDA when torch sees a GPU, else the CPU."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def auto_batch_size(model, prompt_tokens: int, new_tokens: int) -> int:
    """Sequences per generate call: on CUDA, what the KV cache and logits of 60% of free memory hold
    for the longest prompt (`prompt_tokens`) plus `new_tokens`; CPU_BATCH_SIZE elsewhere."""
    if not torch.cuda.is_available() or next(model.parameters()).device.type != "cuda":
        return CPU_BATCH_SIZE
    free, _ = torch.cuda.mem_get_info()
    return int(max(1, min(1024, 0.6 * free // sequence_bytes(model, prompt_tokens, new_tokens))))


def sequence_bytes(model, prompt_tokens: int, new_tokens: int) -> int:
    """Bytes one sequence of `generate` holds: its KV cache (2 x layers x KV heads x head_dim per token, in the
    model's dtype) for `prompt_tokens + new_tokens` tokens, plus a few `(V,)` fp32 rows (logits, warped scores)."""
    config = model.config.get_text_config()
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * heads * head_dim * next(model.parameters()).element_size()
    return per_token * (prompt_tokens + new_tokens) + 8 * config.vocab_size * 4


class HfSampler(Sampler):
    """`Sampler` on an HF model. heads: returns the heads' folder or Hub id, called when the first
    AutoDeco decoding runs (a run without one needs no heads)."""

    def __init__(self, model, tokenizer, heads: Callable[[], str | None]) -> None:
        self.model, self.tokenizer, self.heads = model, tokenizer, heads
        self._loaded: AutoDecoHeads | None = None
        self._processor: AutoDeco | None = None
        self._processor_key: tuple[bool, bool] | None = None

    def default_batch_size(self, prompts: Prompts, max_new_tokens: int) -> int:
        longest = max(map(len, prompt_token_ids(self.tokenizer, prompts)))
        return auto_batch_size(self.model, longest, max_new_tokens)

    def processor(self, decoding: Decoding) -> AutoDeco | None:
        """The AutoDeco processor `decoding` samples with (None for greedy and static decodings)."""
        want = decoding.heads_setting
        if want is None:
            self.close()  # its hooks would capture hidden states for nothing
            return None
        if self._processor is None or self._processor_key != want:
            self.close()
            if self._loaded is None:
                self._loaded = AutoDecoHeads.from_pretrained(self.heads())
            self._processor = AutoDeco(self.model, self._loaded, use_temperature_head=want[0], use_top_p_head=want[1])
            self._processor_key = want
        return self._processor

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
        """`Sampler.sample`: one `sample_completions` call, torch seeded once from `seeding.call`."""
        processor = self.processor(decoding)
        return sample_completions(
            self.model,
            self.tokenizer,
            prompts.texts[start:stop],
            num_samples=samples,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            greedy=decoding.kind == "greedy",
            max_new_tokens=max_new_tokens,
            seed=seeding.call,
            batch_size=batch_size,
            logits_processor=[processor] if processor is not None else None,
            add_special_tokens=prompts.add_special_tokens,
            stop_strings=prompts.stop_strings,
            progress=progress,
        )

    def close(self) -> None:
        """Remove the AutoDeco processor's hooks from the model (the next AutoDeco call adds them again)."""
        if self._processor is not None:
            self._processor.close()
            self._processor = self._processor_key = None
