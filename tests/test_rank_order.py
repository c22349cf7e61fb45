"""`features.rank_order` is torch's stable descending sort (order, values and gradients), and the
nucleus filter built on it keeps transformers' decisions (ties: the lower token id is kept)."""

from __future__ import annotations

import hypothesis.strategies as st
import torch
from hypothesis import given, settings
from transformers import TopPLogitsWarper

from autodeco_lp.inference.features import _torch_rank_order, hard_top_p_filter, rank_order

SPECIAL = [float("nan"), -float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38]


@st.composite
def rows_with_ties_and_specials(draw):
    """(rows, V) fp32: few distinct values (many ties), sprinkled with NaN of both signs, +-inf, +-0, denormals."""
    rows, vocab = draw(st.integers(1, 4)), draw(st.integers(1, 200))
    pool = draw(st.lists(st.floats(-50, 50, width=32) | st.sampled_from(SPECIAL), min_size=1, max_size=12))
    picks = draw(st.lists(st.integers(0, len(pool) - 1), min_size=rows * vocab, max_size=rows * vocab))
    return torch.tensor([pool[i] for i in picks], dtype=torch.float32).reshape(rows, vocab)


def _stable_torch_sort(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # -nan is a NaN to torch.sort as well; -0.0 and +0.0 tie there.
    return torch.sort(x, dim=-1, descending=True, stable=True)


@settings(max_examples=200, deadline=None)
@given(rows_with_ties_and_specials())
def test_rank_order_is_torchs_stable_descending_sort(x):
    values, order = rank_order(x)
    expected_values, expected_order = _stable_torch_sort(x)
    assert torch.equal(order, expected_order)
    assert torch.equal(values.isnan(), expected_values.isnan())
    finite = ~values.isnan()
    assert torch.equal(values[finite], expected_values[finite])
    torch.testing.assert_close(values, x.gather(-1, order), rtol=0, atol=0, equal_nan=True)
    ascending_values, ascending_order = rank_order(x, descending=False)  # the exact reverse
    assert torch.equal(ascending_order, order.flip(-1))
    torch.testing.assert_close(ascending_values, values.flip(-1), rtol=0, atol=0, equal_nan=True)


@settings(max_examples=100, deadline=None)
@given(rows_with_ties_and_specials())
def test_the_cuda_and_compiled_path_ranks_exactly_as_the_cpu_path(x):
    """Off the CPU (CUDA) `rank_order` calls torch.sort(stable=True); checked here on the CPU against the
    integer-key path, both directions (NaN first, ties by id, -0.0 tied with +0.0)."""
    for descending in (True, False):
        values, order = _torch_rank_order(x.float(), descending)
        expected_values, expected_order = rank_order(x, descending)
        assert torch.equal(order, expected_order)
        torch.testing.assert_close(values, expected_values, rtol=0, atol=0, equal_nan=True)


def test_compiled_rank_order_sorts_the_same_integer_keys_in_one_graph():
    """Under torch.compile the CPU path keeps numpy's sort as a custom operator: no graph break, same order."""
    x = torch.tensor([[0.0, -0.0, float("nan"), 1.0, -float("inf"), 1.0, float("inf"), -float("nan")]] * 2)
    x = torch.cat([x, torch.randn(3, 8)])
    for descending in (True, False):
        compiled = torch.compile(lambda v, d=descending: rank_order(v, d), fullgraph=True, backend="aot_eager")
        values, order = compiled(x)
        assert torch.equal(order, rank_order(x, descending)[1])
        torch.testing.assert_close(values, rank_order(x, descending)[0], rtol=0, atol=0, equal_nan=True)


def test_rank_order_on_any_layout_dtype_and_shape():
    x = torch.randn(6, 5, 33)
    for view in (x, x.transpose(0, 1), x[:, ::2], x[0, 0]):  # non-contiguous views and a 1-D row
        assert torch.equal(rank_order(view)[1], torch.sort(view, dim=-1, descending=True, stable=True).indices)
    half = torch.randn(3, 40).to(torch.bfloat16)  # bf16: ranked as its fp32 values, returned in fp32
    values, order = rank_order(half)
    assert values.dtype == torch.float32
    assert torch.equal(order, torch.sort(half.float(), dim=-1, descending=True, stable=True).indices)
    assert rank_order(torch.empty(2, 0))[1].shape == (2, 0)


def test_rank_order_gradients_equal_torch_sort():
    x = torch.randn(4, 50, requires_grad=True)
    weights = torch.randn(4, 50)
    (rank_order(x)[0].cumsum(-1) * weights).sum().backward()
    ours, x.grad = x.grad, None
    (torch.sort(x, dim=-1, descending=True, stable=True).values.cumsum(-1) * weights).sum().backward()
    assert torch.equal(ours, x.grad)


def test_nucleus_ties_keep_the_lower_token_id():
    # Three equal logits after a dominant one: with p just above the top token's mass, one of the
    # tied tokens completes the nucleus; the lowest id among them is the one kept.
    scores = torch.tensor([[0.0, 5.0, 0.0, 0.0, -9.0]])
    top = torch.softmax(scores, -1)[0, 1].item()
    kept = torch.isfinite(hard_top_p_filter(scores, top + 1e-4))[0]
    assert kept.tolist() == [True, True, False, False, False]


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**16), st.integers(2, 3000), st.floats(0.0, 1.0), st.sampled_from([0.3, 1.0, 4.0]))
def test_nucleus_equals_transformers_at_large_vocabularies(seed, vocab, p, spread):
    scores = torch.randn(1, vocab, generator=torch.Generator().manual_seed(seed)) * spread
    assert torch.equal(hard_top_p_filter(scores, p), TopPLogitsWarper(p)(None, scores.clone()))


def test_nucleus_at_p_one_removes_only_tokens_of_probability_zero():
    # Callers that know P = 1 skip the filter (tests/test_static_sampling.py), as `generate` adds
    # no top-p warper at 1. Called anyway, it is transformers' warper: only tokens whose
    # probability underflows to exactly 0 go (they could never be sampled either way).
    scores = torch.tensor([[0.0, -200.0, 3.0], [1.0, 1.0, -1e4]])
    out = hard_top_p_filter(scores, torch.ones(2))
    assert torch.equal(out, TopPLogitsWarper(1.0)(None, scores.clone()))
    assert torch.isinf(out).tolist() == [[False, True, False], [False, False, True]]
    assert torch.equal(out.softmax(-1), scores.softmax(-1))  # the sampling distribution is unchanged
