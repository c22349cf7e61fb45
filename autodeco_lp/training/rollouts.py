"""On-policy rollouts for outcome training: HF `generate` with the heads being trained in the loop.

`PolicyProcessor` is a logits processor that decodes with the training policy (`policy.py`: the
heads' T, a P drawn around the head's P, the hard nucleus) and keeps the final hidden state of
every step, which the capture hook sees anyway: the loss recomputes the logits from them with the
model's `lm_head` (`OutputProjection`, one matmul) instead of running the base model a second time.
The engine stays loaded between rounds and the heads are the live module, so nothing restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import LogitsProcessor

from autodeco_lp.inference.capture import LMHeadCapture
from autodeco_lp.inference.features import hard_top_p_filter, scale_by_temperature
from autodeco_lp.inference.heads import AutoDecoHeads
from autodeco_lp.inference.sampling import Sample, sample_completions
from autodeco_lp.training.policy import sample_top_p


class PolicyProcessor(LogitsProcessor):
    """Decode with the training policy and record each step's hidden states.

    After a `generate` call, `calls[-1]` is a list with one `(rows, H)` fp32 CPU tensor per step.
    sigma: spread of logit(P) around the head's P (0: exactly the inference rule).
    """

    def __init__(self, model: nn.Module, heads: AutoDecoHeads, sigma: float, generator: torch.Generator) -> None:
        self.heads, self.sigma, self.generator = heads, sigma, generator
        self.calls: list[list[torch.Tensor]] = []
        self._capture = LMHeadCapture(model)
        self._capture.attach()

    def close(self) -> None:
        self._capture.detach()

    @torch.no_grad()
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._capture.take_prefill() or not self.calls:
            self.calls.append([])
        hidden, logits = self._capture.take()  # (rows, H), (rows, V)
        temperature, top_p = self.heads(hidden, logits)  # (rows,) each
        applied = sample_top_p(top_p, self.sigma, self.generator) if self.heads.top_p_head is not None else top_p
        self.calls[-1].append(hidden.float().cpu())
        out = scale_by_temperature(scores, temperature)  # (rows, V), a new tensor
        return hard_top_p_filter(out, applied) if self.heads.top_p_head is not None else out


@dataclass
class Rollouts:
    """One round's samples: `samples[i][j]` is problem i's j-th completion; `hidden[i][j]` its
    `(len(sampled_ids), H)` hidden states, one per token the policy chose."""

    samples: list[list[Sample]]
    hidden: list[list[torch.Tensor]]

    @property
    def tokens(self) -> int:
        return sum(len(s.sampled_ids) for group in self.samples for s in group)


def collect_rollouts(
    model,
    tokenizer,
    heads: AutoDecoHeads,
    texts: list[str],
    *,
    group_size: int,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
    sigma: float,
    add_special_tokens: bool = False,
    stop_strings=(),
) -> Rollouts:
    """`group_size` completions per prompt text, sampled with the training policy (seeded by `seed`)."""
    generator = torch.Generator().manual_seed(seed)
    processor = PolicyProcessor(model, heads, sigma, generator)
    was_training = heads.training
    heads.eval()
    try:
        samples = sample_completions(
            model,
            tokenizer,
            texts,
            num_samples=group_size,
            max_new_tokens=max_new_tokens,
            seed=seed,
            batch_size=batch_size,
            logits_processor=[processor],
            add_special_tokens=add_special_tokens,
            stop_strings=stop_strings,
        )
    finally:
        processor.close()
        heads.train(was_training)
    # sample_completions runs prompts `per_call` at a time, each call's rows prompt-major (row = prompt * G + j).
    per_call = max(1, batch_size // group_size)
    if len(processor.calls) != -(-len(texts) // per_call):
        raise RuntimeError(f"expected one generate call per {per_call} prompts, saw {len(processor.calls)} calls")
    hidden = []
    for i, group in enumerate(samples):
        steps = torch.stack(processor.calls[i // per_call])  # (steps, rows, H)
        first_row = (i % per_call) * group_size
        hidden.append([steps[: len(s.sampled_ids), first_row + j] for j, s in enumerate(group)])
    return Rollouts(samples, hidden)
