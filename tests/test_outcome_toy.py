"""The outcome objective learns per-token adaptation where the optimum is known (training/toy_task.py).

Exact expected pass@4 (no sampling noise in the judgement): copy positions want greedy decoding,
the guess position wants its four candidates spread evenly, so no static (T, P) is optimal.
"""

import pytest
import torch

from autodeco_lp.training.advantages import group_advantages
from autodeco_lp.training.toy_task import ToyTask, fit_likelihood_toy, fit_outcome_toy

GRID_T = [round(0.05 * i, 2) for i in range(1, 41)]  # 0.05 .. 2.0
GRID_P = [round(0.05 * i, 2) for i in range(1, 21)]  # 0.05 .. 1.0
OPTIMUM = 1 - 0.75**4  # greedy copies, the guess uniform over its 4 candidates


@pytest.fixture(scope="module")
def task():
    return ToyTask()


@pytest.fixture(scope="module")
def best_static(task):
    return task.best_static(GRID_T, GRID_P)


def test_no_static_setting_reaches_the_per_position_optimum(task, best_static):
    reward, _, _ = best_static
    assert task.static_reward(0.01, 1.0) == pytest.approx(0.25, abs=1e-6)  # greedy: one guess per problem
    assert reward < OPTIMUM - 0.15


def test_outcome_heads_beat_the_best_static_setting(task, best_static):
    heads = fit_outcome_toy(task, task.heads(seed=0), seed=0)
    reward, temperature, top_p = task.heads_reward(heads)
    assert reward > best_static[0] + 0.1
    assert reward > OPTIMUM - 0.02
    # per position: sharp on the copies (T or the nucleus makes them greedy), spread on the guess
    assert temperature[1] > 2 * temperature[0]
    assert top_p[1] > top_p[0]


def test_likelihood_heads_on_rejection_samples_also_adapt_here(task, best_static):
    """The released objective on rejection samples (base at T = 1, kept when correct): the gold token
    of a copy is always the argmax, so T falls there; a guess's gold follows the base at T = 1."""
    heads = fit_likelihood_toy(task, task.heads(seed=0))
    reward, temperature, _ = task.heads_reward(heads)
    assert temperature[0] < 0.2 < temperature[1]
    assert reward > best_static[0]


def test_pass_at_k_advantages_are_unbiased_and_signed():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    adv = group_advantages(rewards, k=4)
    assert (adv[rewards == 1] > 0).all() and (adv[rewards == 0] < 0).all()
    assert torch.equal(group_advantages(torch.ones(8), k=4), torch.zeros(8))
    assert torch.allclose(group_advantages(rewards, k=1), rewards - rewards.mean())
    # k = 1 through the pass@k formula is the leave-one-out baseline scaled by 1/G
    with pytest.raises(ValueError, match="more than 8"):
        group_advantages(rewards, k=8)
    with pytest.raises(ValueError, match="0 or 1"):
        group_advantages(torch.tensor([0.5, 1.0, 0.0]), k=1)


def test_pass_at_k_advantages_estimate_the_pass_at_k_gradient_exactly():
    """Enumerate every group of G = 5 samples of a Bernoulli(p) policy with logit theta: the expected
    `sum_i A_i d/dtheta log pi(x_i)` equals d/dtheta pass@k = d/dtheta (1 - (1 - p)^k)."""
    import itertools

    g, k, theta = 5, 2, torch.tensor(-0.7)
    p = torch.sigmoid(theta)
    expected = 0.0
    for outcome in itertools.product((0.0, 1.0), repeat=g):
        rewards = torch.tensor(outcome)
        probability = torch.prod(torch.where(rewards == 1, p, 1 - p))
        score = rewards - p  # d/dtheta log pi(x) for a Bernoulli with logit theta
        expected += probability * (group_advantages(rewards, k=k).double() * score).sum()
    exact = k * (1 - p) ** (k - 1) * p * (1 - p)  # d/dtheta (1 - (1 - p)^k)
    assert float(expected) == pytest.approx(float(exact), rel=1e-6)
