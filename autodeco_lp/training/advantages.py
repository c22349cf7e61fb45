"""Per-sample advantages for a group of G samples of one problem with binary rewards.

`pass@1` (GRPO-style group baseline): `A_i = r_i - mean(r)`, optionally divided by the group's
standard deviation (`normalise`).

`pass@k` (k >= 2): the unbiased estimator of the pass@k gradient of Walder & Karkhanis, "Pass@K
Policy Optimization" (arXiv 2505.15201, 2025), for binary rewards, with a leave-one-out baseline.
The gradient of pass@k = E[max of k i.i.d. rewards] is estimated without bias from G >= k samples
by `sum_i s_i grad log pi(x_i)` with `s_i` = the mean over all k-subsets of the G samples that
contain i of the subset's max reward, over C(G, k) / C(G - 1, k - 1) = G / k. Counting subsets:

    correct i:   s_i = k / G
    incorrect i: s_i = (k / G) * rho_{k-1}(others)

where `rho_m(others) = 1 - C(G - 1 - c_i, m) / C(G - 1, m)` is the unbiased pass@m estimate over
the G - 1 other samples (c_i of them correct). Any baseline that does not depend on sample i keeps
the estimator unbiased; we subtract `(k / G) * rho_k(others)` (needs G - 1 >= k), which for k = 1
is the leave-one-out (RLOO) mean. So

    A_i = (k / G) * (r_i + (1 - r_i) * rho_{k-1}(others) - rho_k(others)),

positive for a correct sample unless the others already solve the problem at k, negative for an
incorrect one, and 0 for the whole group when every sample (or none) is correct.
"""

from __future__ import annotations

import math

import torch


def _pass_at(n: int, correct: torch.Tensor, m: int) -> torch.Tensor:
    """Unbiased pass@m from `correct` successes among `n` samples, elementwise: `1 - C(n - c, m) / C(n, m)`."""
    if m == 0:
        return torch.zeros_like(correct, dtype=torch.float64)
    total = math.comb(n, m)
    fails = [math.comb(n - c, m) / total for c in range(n + 1)]
    return 1.0 - torch.tensor(fails, dtype=torch.float64)[correct.long()]


def group_advantages(rewards: torch.Tensor, k: int = 1, normalise: bool = False) -> torch.Tensor:
    """Advantages of one problem's samples.

    rewards: `(G,)` in {0, 1}; k: 1 for pass@1 (group mean baseline), >= 2 for the leave-one-out
    pass@k estimator (module docstring; needs G > k); normalise: divide by the rewards' standard
    deviation (pass@1 only, GRPO's scaling; a group with one reward value gets advantage 0).
    Returns `(G,)` fp32.
    """
    rewards = rewards.to(torch.float64)
    g = rewards.numel()
    if k < 1:
        raise ValueError(f"`k` has to be a positive int, but is {k}")
    if not bool(((rewards == 0) | (rewards == 1)).all()):
        raise ValueError(f"`rewards` have to be 0 or 1, but are {rewards.tolist()}")
    if normalise and k > 1:
        raise ValueError("`normalise` applies to pass@1 advantages only; pass@k advantages are not std-scaled")
    if k == 1:
        advantages = rewards - rewards.mean()
        if normalise:
            std = rewards.std(unbiased=False)
            advantages = advantages / std if std > 0 else torch.zeros_like(advantages)
        return advantages.float()
    if g <= k:
        raise ValueError(f"pass@{k} advantages need a group of more than {k} samples, but the group has {g}")
    others = rewards.sum() - rewards  # (G,) correct samples among the other G - 1
    with_k_minus_1 = _pass_at(g - 1, others, k - 1)
    with_k = _pass_at(g - 1, others, k)
    return ((k / g) * (rewards + (1 - rewards) * with_k_minus_1 - with_k)).float()


def round_weights(rewards: torch.Tensor, k: int = 1, normalise: bool = False) -> torch.Tensor:
    """Each sample's weight in a round's loss, `A_i / samples` (the REINFORCE estimate averages over the
    round's samples): rewards `(problems, G)` in {0, 1} -> `(problems * G,)` fp32, problem-major."""
    advantages = torch.stack([group_advantages(group, k, normalise) for group in rewards])  # (problems, G)
    return (advantages / rewards.numel()).flatten()
