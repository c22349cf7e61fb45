"""Properties of the scaling, nucleus and soft-mask math, and agreement with transformers' warpers."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import assume, given, settings
from transformers import TemperatureLogitsWarper, TopPLogitsWarper

from autodeco_lp.inference.features import (
    MIN_TEMPERATURE,
    SOFT_TOP_P_EPS,
    distribution_statistics,
    hard_top_p_filter,
    safe_softmax,
    scale_by_temperature,
    soft_top_p_mask,
    soft_top_p_probs,
)

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def distinct_logits(draw, min_vocab: int = 2, max_vocab: int = 40):
    """A row of logits with pairwise-distinct probabilities (ties make 'the' sorted order ambiguous)."""
    size = draw(st.integers(min_vocab, max_vocab))
    values = draw(st.lists(st.integers(-400, 400), min_size=size, max_size=size, unique=True))
    return torch.tensor(values, dtype=torch.float32) / 40.0  # spacing 0.025 in logit space


top_ps = st.floats(0.05, 0.999)
temperatures = st.floats(0.2, 2.0)


def _sorted_cumsum(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    sorted_probs, order = probs.sort(descending=True)
    return sorted_probs.cumsum(-1), order


@SETTINGS
@given(distinct_logits(), top_ps, temperatures)
def test_mask_in_unit_interval_and_one_exactly_inside_nucleus(logits, p, t):
    probs = safe_softmax(logits / t)
    mask = soft_top_p_mask(probs, p)
    assert torch.all(mask > 0) and torch.all(mask <= 1)
    cumulative, order = _sorted_cumsum(probs)
    inside = cumulative <= p
    assert torch.all(mask[order][inside] == 1)
    assert torch.all(mask[order][~inside] < 1)


@SETTINGS
@given(distinct_logits(), top_ps)
def test_mask_non_increasing_along_sorted_order(logits, p):
    probs = safe_softmax(logits)
    mask = soft_top_p_mask(probs, p)
    _, order = _sorted_cumsum(probs)
    sorted_mask = mask[order]
    assert torch.all(sorted_mask[1:] <= sorted_mask[:-1])


@SETTINGS
@given(distinct_logits(), top_ps, temperatures, st.floats(1.0, 200.0))
def test_soft_distribution_sums_to_one(logits, p, t, alpha):
    soft = soft_top_p_probs(logits, t, p, alpha=alpha)
    assert torch.all(soft >= 0)
    # The eps in the normaliser is the only departure from 1: the sum is S / (S + eps) with
    # S = sum(p * m). (When the mask all but removes the top token, S is small and so is the sum.)
    probs = safe_softmax(logits / t)
    kept = (probs * soft_top_p_mask(probs, p, alpha)).sum().item()
    assert soft.sum().item() == pytest.approx(kept / (kept + SOFT_TOP_P_EPS), rel=1e-5)
    if kept > 1e-3:
        assert soft.sum().item() == pytest.approx(1.0, abs=1e-5)


@SETTINGS
@given(distinct_logits(min_vocab=3), top_ps)
def test_soft_approaches_strict_nucleus_as_alpha_grows(logits, p):
    probs = safe_softmax(logits)
    cumulative, order = _sorted_cumsum(probs)
    # Keep P away from every cumulative boundary so the limit is reached at alpha = 1e5.
    assume(torch.all((cumulative - p).abs() > 1e-3))
    assume(bool((cumulative <= p).any()))
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[cumulative <= p]] = True
    strict = torch.where(keep, probs, torch.zeros_like(probs))
    strict = strict / strict.sum()
    errors = [(soft_top_p_probs(logits, 1.0, p, alpha=a) - strict).abs().max().item() for a in (10.0, 1e3, 1e5)]
    assert errors[-1] < 1e-4
    assert errors[-1] <= errors[0] + 1e-7


@SETTINGS
@given(distinct_logits(min_vocab=3))
def test_strict_nucleus_equals_hard_filter_on_a_cumulative_boundary(logits):
    """With P on a boundary c_k the hard filter (ours and transformers') keeps exactly the top k."""
    probs = safe_softmax(logits)
    cumulative, order = _sorted_cumsum(probs)
    k = len(probs) // 2
    # Token k must carry mass far above fp32 resolution near 1, or "the boundary" is ambiguous.
    assume(float(probs[order[k - 1]]) > 1e-3)
    p = float(cumulative[k - 1]) - 1e-6  # just below c_k: the top k reach it, the top k-1 do not
    ours = torch.isfinite(hard_top_p_filter(logits[None], p))[0]
    theirs = torch.isfinite(TopPLogitsWarper(p)(None, logits[None].clone()))[0]
    expected = torch.zeros_like(ours)
    expected[order[:k]] = True
    assert torch.equal(ours, expected) and torch.equal(theirs, expected)
    limit = soft_top_p_probs(logits, 1.0, float(cumulative[k - 1]), alpha=1e6)
    assert torch.equal(limit > 1e-6, expected)


@SETTINGS
@given(distinct_logits(), top_ps, temperatures, st.randoms(use_true_random=False))
def test_soft_distribution_invariant_to_vocabulary_permutation(logits, p, t, rnd):
    perm = list(range(len(logits)))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    direct = soft_top_p_probs(logits, t, p)
    permuted = soft_top_p_probs(logits[perm], t, p)
    torch.testing.assert_close(permuted, direct[perm], atol=1e-6, rtol=1e-5)


@SETTINGS
@given(distinct_logits())
def test_identity_at_p_one_and_t_one(logits):
    soft = soft_top_p_probs(logits, 1.0, 1.0)
    torch.testing.assert_close(soft, torch.softmax(logits, -1), atol=1e-5, rtol=1e-4)


@SETTINGS
@given(distinct_logits(min_vocab=3), st.floats(0.3, 0.95), temperatures)
def test_gradients_reach_t_and_p_and_are_finite(logits, p, t):
    # When the top token alone already exceeds P, every token sits beyond the nucleus and the
    # mask exp(-alpha * (c - P)) scales them all by the same factor in P: the normalised
    # distribution, hence the loss, does not depend on P (see the next test). Keep the top
    # token inside the nucleus, with a margin above fp32 noise.
    assume(float(torch.softmax(logits / t, -1).max()) < p - 1e-3)
    temperature = torch.tensor(t, requires_grad=True)
    top_p = torch.tensor(p, requires_grad=True)
    soft = soft_top_p_probs(logits, temperature, top_p)
    gold = int(torch.argmin(logits))  # a token outside the nucleus feels both T and P
    loss = -torch.log(soft[gold] + 1e-12)
    loss.backward()
    assert torch.isfinite(temperature.grad) and torch.isfinite(top_p.grad)
    assert temperature.grad != 0 and top_p.grad != 0


@SETTINGS
@given(distinct_logits(min_vocab=3), st.floats(0.05, 0.95), temperatures)
def test_p_below_the_top_token_mass_has_no_gradient(logits, p, t):
    assume(float(torch.softmax(logits / t, -1).max()) > p + 1e-3)
    top_p = torch.tensor(p, requires_grad=True)
    # eps = 0: the normaliser's eps is the only thing that ties the loss to P here, and it
    # matters once every mask is tiny (P far below the top token's mass).
    soft = soft_top_p_probs(logits, t, top_p, eps=0.0)
    loss = -torch.log(soft[int(torch.argmin(logits))] + 1e-12)
    loss.backward()
    assert abs(float(top_p.grad)) < 1e-3


@SETTINGS
@given(
    st.integers(1, 4),
    st.integers(2, 60),
    st.lists(st.floats(0.01, 1.0), min_size=4, max_size=4),
    st.integers(0, 2**16),
)
def test_hard_filter_agrees_with_transformers_top_p(rows, vocab, ps, seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, vocab, generator=gen) * 3
    per_row = torch.tensor(ps[:rows])
    ours = hard_top_p_filter(scores, per_row)
    for r in range(rows):
        theirs = TopPLogitsWarper(float(per_row[r]))(None, scores[r : r + 1].clone())
        assert torch.equal(ours[r : r + 1], theirs)


def test_filter_and_scaling_do_not_modify_input():
    scores = torch.randn(2, 10)
    before = scores.clone()
    hard_top_p_filter(scores, 0.5)
    scale_by_temperature(scores, 0.5)
    assert torch.equal(scores, before)


def test_temperature_is_floored():
    logits = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(scale_by_temperature(logits, 0.0), logits / MIN_TEMPERATURE)


def test_extreme_and_masked_rows_stay_finite():
    logits = torch.tensor(
        [
            [float("-inf")] * 5,  # everything masked
            [1e38, -1e38, 0.0, float("inf"), float("nan")],
            [float("-inf"), 3.0, float("-inf"), float("-inf"), float("-inf")],
        ]
    )
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = logits.to(dtype)
        probs = safe_softmax(x)
        assert torch.isfinite(probs).all()
        assert probs[0].sum() == 0 and probs[2, 1] == 1
        assert torch.isfinite(soft_top_p_probs(x, torch.full((3,), 0.5), torch.full((3,), 0.9))).all()
        assert torch.isfinite(distribution_statistics(x, torch.full((3,), 1e-9))).all()
        filtered = hard_top_p_filter(x, 0.9)
        assert filtered.dtype == torch.float32
        assert torch.isfinite(filtered[2]).sum() == 1


def test_statistics_match_a_plain_reference():
    logits = torch.randn(3, 50, dtype=torch.bfloat16)
    t = torch.tensor([0.5, 1.0, 1.7])
    q = torch.softmax(logits.float() / (t[:, None] + 1e-8), -1)
    expected = torch.stack(
        [q.max(-1).values, -(q * torch.log(q + 1e-8)).sum(-1), q.var(-1), q.topk(5, -1).values.sum(-1)], -1
    )
    torch.testing.assert_close(distribution_statistics(logits, t), expected)


def test_any_leading_shape():
    logits = torch.randn(2, 3, 4, 17)
    t = torch.rand(2, 3, 4) + 0.5
    p = torch.rand(2, 3, 4)
    assert soft_top_p_probs(logits, t, p).shape == logits.shape
    assert distribution_statistics(logits, t).shape == (2, 3, 4, 4)
    assert hard_top_p_filter(logits, p).shape == logits.shape


def test_temperature_then_top_p_matches_transformers_warpers():
    scores = torch.randn(4, 30) * 2
    t, p = 0.7, 0.8
    expected = TopPLogitsWarper(p)(None, TemperatureLogitsWarper(t)(None, scores.clone()))
    ours = hard_top_p_filter(scale_by_temperature(scores, t), p)
    assert torch.equal(torch.isfinite(ours), torch.isfinite(expected))
    torch.testing.assert_close(ours[torch.isfinite(ours)], expected[torch.isfinite(expected)])
