"""The sort-free ("topk") soft top-p loss against the exact (sorted) one.

The bound under test (derived in docs/design.md, "The training objective"): per row,
`|ell_topk - ell_exact| <= rho / 2 <= eps / 2`, plus fp32 rounding; the P-gradient differs by at
most `2 alpha eps`; the T-gradient is checked against the tolerance `TEMPERATURE_GRAD_RTOL * eps`
relative to `1 + |exact gradient|` (measured worst case ~17 eps over 12000 random rows; not derived).
Gradients are compared only on rows where no cumulative mass c_i lies within 1e-4 of P: at such a
kink `relu(c - P)` switches its derivative between 0 and 1, and the two implementations sum c in a
different order, so they may take different sides (both are valid subgradients).
"""

from __future__ import annotations

import contextlib
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from autodeco_lp.inference.features import soft_top_p_probs
from autodeco_lp.training import losses
from autodeco_lp.training.losses import LossConfig, autodeco_loss, autodeco_loss_sums, soft_top_p_gold_log_prob
from tests.conftest import random_heads
from tests.test_losses import _inputs, lm_head

TEMPERATURE_GRAD_RTOL = 25.0
KINK = 1e-4


def fp32_slack(exact: torch.Tensor, alpha: float) -> torch.Tensor:
    """Rounding allowance: c_y summed in another order (times alpha), and fp32 on |ell| itself."""
    return 1e-5 + 2e-6 * alpha + 1e-6 * exact.abs()


def small_start(k: int = 2):
    """Start the top-k search at k (the default 256 covers these small vocabularies at once)."""
    return mock.patch.object(losses, "TOPK_START", k)


def both(logits, temperature, top_p, labels, alpha, eps, start=2):
    """(exact, topk) per-row `log p~[y]` and their gradients w.r.t. T and P."""
    out = []
    for method in ("exact", "topk"):
        t = temperature.clone().requires_grad_()
        p = top_p.clone().requires_grad_()
        log_probs = torch.log_softmax(logits / t[:, None], dim=-1)
        with small_start(start) if method == "topk" else contextlib.nullcontext():
            value = soft_top_p_gold_log_prob(log_probs, p, labels, alpha, method=method, eps=eps)
        grad_t, grad_p = torch.autograd.grad(value.sum(), [t, p])
        out.append((value.detach(), grad_t, grad_p))
    return out


def away_from_kinks(logits, temperature, top_p) -> torch.Tensor:
    """(C,) rows whose cumulative masses (float64, stable order) all stay KINK away from P."""
    probs = torch.softmax(logits.double() / temperature.double()[:, None], dim=-1)
    cumulative = torch.sort(probs, dim=-1, descending=True, stable=True).values.cumsum(-1)
    return ~((cumulative - top_p.double()[:, None]).abs() < KINK).any(-1)


@st.composite
def soft_top_p_cases(draw):
    rows = draw(st.integers(1, 6))
    vocab = draw(st.integers(2, 300))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=gen) * draw(st.floats(0.1, 10.0))
    if draw(st.booleans()):
        logits = logits.round()  # many exact ties
    temperature = torch.tensor(draw(st.lists(st.floats(0.01, 2.0), min_size=rows, max_size=rows)))
    top_p = torch.tensor(draw(st.lists(st.floats(0.0, 1.0), min_size=rows, max_size=rows)))
    labels = torch.randint(0, vocab, (rows,), generator=gen)
    alpha = draw(st.floats(0.5, 200.0))
    return logits, temperature, top_p, labels, alpha


@settings(max_examples=150, deadline=None)
@given(case=soft_top_p_cases(), eps=st.sampled_from([1e-3, 1e-2, 0.1]), start=st.sampled_from([1, 2, 16]))
def test_topk_loss_is_within_the_bound_and_gradients_agree(case, eps, start):
    logits, temperature, top_p, labels, alpha = case
    (exact, gt, gp), (fast, ft, fp) = both(logits, temperature, top_p, labels, alpha, eps, start)
    assert ((fast - exact).abs() <= eps / 2 + fp32_slack(exact, alpha)).all(), (fast - exact).abs().max()
    ok = away_from_kinks(logits, temperature, top_p)
    assert ((fp - gp).abs()[ok] <= 2 * alpha * eps + 1e-4 * alpha).all()
    assert ((ft - gt).abs()[ok] <= TEMPERATURE_GRAD_RTOL * eps * (1 + gt.abs()[ok]) + 1e-4).all()


@settings(max_examples=60, deadline=None)
@given(case=soft_top_p_cases())
def test_eps_zero_takes_the_whole_vocabulary_and_equals_the_exact_loss(case):
    logits, temperature, top_p, labels, alpha = case
    (exact, gt, gp), (fast, ft, fp) = both(logits, temperature, top_p, labels, alpha, eps=0.0)
    assert ((fast - exact).abs() <= fp32_slack(exact, alpha)).all()
    ok = away_from_kinks(logits, temperature, top_p)
    torch.testing.assert_close(fp[ok], gp[ok], rtol=1e-4, atol=1e-4 * alpha)
    torch.testing.assert_close(ft[ok], gt[ok], rtol=1e-4, atol=1e-3)


def _case(logits, top_p, labels, temperature=1.0, alpha=30.0):
    logits = torch.as_tensor(logits, dtype=torch.float32).reshape(len(labels), -1)
    rows = logits.shape[0]
    return (
        logits,
        torch.full((rows,), temperature),
        torch.as_tensor(top_p).float().reshape(rows),
        torch.tensor(labels),
        alpha,
    )


def test_p_one_leaves_the_distribution_alone():
    """P = 1: every mask is 1 (c <= 1), so log p~[y] = log p[y] in both."""
    gen = torch.Generator().manual_seed(0)
    logits, t, p, labels, alpha = _case(torch.randn(4, 500, generator=gen) * 3, [1.0] * 4, [0, 7, 99, 499])
    (exact, *_), (fast, *_) = both(logits, t, p, labels, alpha, eps=1e-3)
    plain = torch.log_softmax(logits, -1).gather(-1, labels[:, None]).squeeze(-1)
    torch.testing.assert_close(exact, plain, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)


def test_p_below_the_top_token():
    """P far below the top token's probability (every mask underflows; the e0 in S decides): finite, equal."""
    logits = torch.zeros(3, 400)
    logits[:, 5] = 8.0  # p(top) ~ 0.88
    logits, t, p, labels, alpha = _case(logits, [0.05, 0.05, 1e-4], [5, 6, 5], alpha=1000.0)
    (exact, *_), (fast, *_) = both(logits, t, p, labels, alpha, eps=1e-3)
    assert torch.isfinite(exact).all() and torch.isfinite(fast).all()
    assert ((fast - exact).abs() <= 5e-4 + fp32_slack(exact, alpha)).all()
    assert exact[0] > exact[1]  # the top token keeps more than one beyond it


def test_gold_token_in_the_tail():
    """The gold token far outside the top k: c_y comes from the masked sum, exactly."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 2000, generator=gen) * 4
    labels = logits.argsort(-1)[:, 3].tolist()  # 4th least probable
    logits, t, p, labels, alpha = _case(logits, [0.7, 0.95], labels)
    (exact, *_), (fast, *_) = both(logits, t, p, labels, alpha, eps=1e-3, start=4)
    assert ((fast - exact).abs() <= 5e-4 + fp32_slack(exact, alpha)).all()
    assert (exact < -20).all()  # deep in the suppressed tail: the mask term matters


def test_ties_rank_the_gold_token_by_token_id():
    """Equal probabilities count in token-id order: with p = softmax([1, 2, 2, 2, 0]) and gold 2, c_y is
    p_1 + p_2 (token 3, as probable but a larger id, comes after); both implementations agree."""
    logits = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0]] * 3)
    probs = torch.softmax(logits[0], -1)
    labels = [1, 2, 3]
    sorted_probs = torch.sort(probs, descending=True, stable=True).values
    for gold, expected_c in zip(labels, [probs[1], probs[1] + probs[2], probs[1] + probs[2] + probs[3]]):
        top_p = float(expected_c) - 0.1  # so the gold's own mask is exp(-alpha * 0.1) iff c_y = expected_c
        (exact, *_), (fast, *_) = both(*_case(logits[:1], [top_p], [gold], alpha=10.0), eps=1e-3, start=1)
        # S does not depend on how ties are ordered (equal p_i swap their c_i), so it is read off the sort.
        log_s = torch.log((sorted_probs * torch.exp(-10.0 * torch.relu(sorted_probs.cumsum(-1) - top_p))).sum() + 1e-8)
        expected = (torch.log(probs[gold]) - 10.0 * 0.1 - log_s).reshape(1)
        torch.testing.assert_close(exact, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(fast, expected, atol=5e-4, rtol=0)


def test_whole_loss_with_topk_is_within_the_bound_of_the_exact_loss():
    hidden, labels, weight, uniforms = _inputs(n=40)
    heads = random_heads()
    eps = 1e-3
    with small_start(4):
        fast = autodeco_loss_sums(
            heads,
            hidden * 3,
            labels,
            lm_head(weight),
            config=LossConfig(soft_top_p="topk", topk_eps=eps),
            uniforms=uniforms,
        )
    exact = autodeco_loss_sums(heads, hidden * 3, labels, lm_head(weight), config=LossConfig(), uniforms=uniforms)
    # |sum_i w_i (ell^_i - ell_i)| <= sum_i w_i eps / 2 <= positions * eps / 2 (DFT weights <= 1).
    assert abs(fast.top_p_sum - exact.top_p_sum) <= 40 * eps / 2
    torch.testing.assert_close(fast.temperature_sum, exact.temperature_sum)
    for name, grad in exact.top_p_grads.items():
        torch.testing.assert_close(fast.top_p_grads[name], grad, rtol=0.05, atol=1e-3, msg=name)
    # Through autodeco_loss as well (the training loop's path), default eps and k search: the mean loss
    # moves by at most eps / 2 (a weighted mean of per-position differences each within eps / 2).
    fast_loss = autodeco_loss(
        heads, hidden, labels, lm_head(weight), config=LossConfig(soft_top_p="topk"), uniforms=uniforms
    )
    exact_loss = autodeco_loss(heads, hidden, labels, lm_head(weight), config=LossConfig(), uniforms=uniforms)
    assert abs(float(fast_loss) - float(exact_loss)) <= LossConfig().topk_eps / 2 + 1e-6
    fast_loss.backward()
    grads = [p.grad for p in heads.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


class _Int64Watch(TorchDispatchMode):
    """Records every op output that is an int64 tensor with at least `limit` elements."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.hits = limit, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor) and tensor.dtype == torch.int64 and tensor.numel() >= self.limit:
                self.hits.append(str(func))
        return out


def test_topk_builds_no_int64_chunk_by_vocabulary_tensor():
    rows, vocab = 16, 3000
    logits = torch.randn(rows, vocab) * 3
    labels = torch.randint(0, vocab, (rows,))
    for method, expect_hits in (("exact", True), ("topk", False)):
        t = torch.ones(rows, requires_grad=True)
        p = torch.full((rows,), 0.9, requires_grad=True)
        with _Int64Watch(rows * vocab) as watch:
            value = soft_top_p_gold_log_prob(torch.log_softmax(logits / t[:, None], -1), p, labels, 30.0, method)
            value.sum().backward()
        assert bool(watch.hits) == expect_hits, (method, watch.hits)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"soft_top_p": "sorted"}, r"`soft_top_p` \(--soft-top-p\) has to be one of exact, topk"),
        ({"topk_eps": 1.0}, r"`topk_eps` \(--topk-eps\) has to be in \[0, 1\)"),
        ({"topk_eps": -0.1}, r"`topk_eps` \(--topk-eps\) has to be in \[0, 1\)"),
    ],
)
def test_bad_soft_top_p_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LossConfig(**kwargs)


def test_reference_agrees_with_both_on_continuous_logits():
    """features.soft_top_p_probs (the plain reference) agrees with both where there are no ties."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 700, generator=gen) * 2
    t, p = torch.rand(5, generator=gen) + 0.3, torch.rand(5, generator=gen)
    labels = torch.randint(0, 700, (5,), generator=gen)
    reference = torch.log(soft_top_p_probs(logits, t, p, 30.0).gather(-1, labels[:, None]).squeeze(-1))
    (exact, *_), (fast, *_) = both(logits, t, p, labels, 30.0, eps=1e-3, start=8)
    torch.testing.assert_close(exact, reference, atol=1e-4, rtol=1e-5)
    assert ((fast - reference).abs() <= 5e-4 + 1e-4).all()
