"""Which examples each optimizer step, process and micro-batch sees; all pure functions of the seed.

Everything here depends only on (seed, epoch, step, rank, world size), never on hidden RNG state,
so a resumed run and a run split over several processes see exactly the same positions, and the
easy-token drop draws the same numbers for the same example whatever the batching.
"""

from __future__ import annotations

import math

import torch

_MIX = 1_000_003  # odd multiplier to derive independent seeds from (seed, epoch, example)


def epoch_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    """A permutation of the example ids, fixed by (seed, epoch)."""
    gen = torch.Generator().manual_seed((seed * _MIX + epoch) % 2**63)
    return torch.randperm(num_examples, generator=gen).tolist()


def steps_per_epoch(num_examples: int, examples_per_step: int) -> int:
    """The last, smaller step of an epoch is kept: the loss is normalised per token anyway."""
    return math.ceil(num_examples / examples_per_step)


def step_examples(
    order: list[int], step_in_epoch: int, examples_per_step: int, rank: int, world_size: int
) -> list[int]:
    """This process's share of one optimizer step's examples (round-robin over processes)."""
    chosen = order[step_in_epoch * examples_per_step : (step_in_epoch + 1) * examples_per_step]
    return chosen[rank::world_size]


def micro_batches(ids: list[int], lengths: list[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Split `ids` into consecutive groups of at most `batch_size` examples whose padded size
    (longest length x count) stays within `max_tokens`; an example longer than the budget runs alone."""
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in ids:
        new_longest = max(longest, lengths[i])
        too_many = len(current) >= batch_size
        too_big = max_tokens is not None and current and new_longest * (len(current) + 1) > max_tokens
        if too_many or too_big:
            groups.append(current)
            current, new_longest = [], lengths[i]
        current.append(i)
        longest = new_longest
    if current:
        groups.append(current)
    return groups


def drop_uniforms(seed: int, epoch: int, example_id: int, count: int) -> torch.Tensor:
    """`(count,)` draws in [0, 1) for the easy-token drop of one example in one epoch."""
    gen = torch.Generator().manual_seed(((seed * _MIX + epoch) * _MIX + example_id) % 2**63)
    return torch.rand(count, generator=gen)
