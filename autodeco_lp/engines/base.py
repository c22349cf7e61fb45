"""The sampler interface both engines implement, and how a call's randomness is given to them.

A sampler turns prompts (`tasks.prompting.Prompts`: formatted texts, whether the tokenizer adds BOS,
stop strings) into `inference.sampling.Sample`s, `samples` per prompt, under one `Decoding`. The
engines take randomness differently, so a call carries both forms (`Seeding`):

- hf (transformers' `generate`): torch is seeded once, from `Seeding.call`, before the call's first
  `generate`; a completion depends on the batch it ran in (the rows share one random stream).
- vllm: every request has its own seed, `Seeding.sample_seed(problem, sample)`; a completion does not
  depend on the batch, so any batch size (and a resumed run) gives the same completions.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass

from autodeco_lp.engines.decoding import Decoding
from autodeco_lp.inference.sampling import Sample
from autodeco_lp.tasks.prompting import Prompts


@dataclass(frozen=True)
class Seeding:
    """The randomness of one `Sampler.sample` call.

    call: the torch seed set once before the call (hf); label, seed: the per-request seeds
    `crc32("{label}|{seed}|{problem}|{sample}")` (vllm; the same for any heads and any batch size).
    Greedy decoding ignores both."""

    call: int
    label: str
    seed: int

    def sample_seed(self, problem: int, sample: int) -> int:
        return zlib.crc32(f"{self.label}|{self.seed}|{problem}|{sample}".encode())


def prompt_token_ids(tokenizer, prompts: Prompts) -> list[list[int]]:
    """Each prompt's token ids, as `generate` gets them (BOS added for raw few-shot text)."""
    return [tokenizer(t, add_special_tokens=prompts.add_special_tokens)["input_ids"] for t in prompts.texts]


class Sampler(ABC):
    """Completions from one engine. `tokenizer`: the model's (left padding, a pad token); `model`: the HF
    model where the engine holds one in this process (hf), else None (vLLM loads its own)."""

    tokenizer = None
    model = None

    @abstractmethod
    def default_batch_size(self, prompts: Prompts, max_new_tokens: int) -> int:
        """Sequences per generate call for these prompts when the user gave none."""

    @abstractmethod
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
        """For prompts `[start, stop)` of `prompts`, `samples` completions each (greedy: one), in
        generate calls of at most `batch_size` sequences; `progress` (a tqdm bar) is advanced by the
        prompts each call finished. Problem indices in `seeding` count from 0 over all of `prompts`."""

    @abstractmethod
    def close(self) -> None:
        """Release what the engine holds (an engine process, hooks on the model); `sample` restarts it."""

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
