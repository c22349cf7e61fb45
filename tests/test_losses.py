"""The chunked loss against a naive full-tensor implementation of the same formulas."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.inference.features import soft_top_p_probs
from autodeco_lp.training.losses import (
    LossConfig,
    autodeco_loss,
    autodeco_loss_sums,
    combine_gradients,
    normalised_loss,
    trainable_parameters,
)
from tests.conftest import HIDDEN, VOCAB, random_heads


def lm_head(weight, softcap=None) -> OutputProjection:
    return OutputProjection(weight=weight, bias=None, softcap=softcap)


def naive_loss(heads, hidden, labels, weight, uniforms, config: LossConfig, softcap=None) -> torch.Tensor:
    """The AutoDeco loss written out over the full (N, V) tensors, no chunks, no log tricks."""
    logits = hidden.float() @ weight.float().T  # (N, V)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    base = torch.softmax(logits, -1)
    w = base.gather(-1, labels[:, None]).squeeze(-1) if config.dft else torch.ones(len(labels))
    keep = ~((base.argmax(-1) == labels) & (uniforms < config.easy_token_drop))
    temperature, top_p = heads(hidden, logits)
    t = temperature.clamp_min(1e-2)[:, None]
    total = torch.zeros(())
    if config.train_temperature:
        ce = torch.nn.functional.cross_entropy(logits / t, labels, reduction="none")
        total = total + config.temperature_weight * (ce * w * keep).sum() / keep.sum().clamp_min(1)
    if config.train_top_p:
        tp = t if config.top_p_loss_trains_temperature else t.detach()
        soft = soft_top_p_probs(logits, tp.squeeze(-1), top_p, config.alpha)  # the reference in features.py
        nll = -torch.log(soft.gather(-1, labels[:, None]).squeeze(-1))
        total = total + config.top_p_weight * (nll * w).mean()
    return total


def _inputs(n=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, HIDDEN, generator=gen)
    weight = torch.randn(VOCAB, HIDDEN, generator=gen) * 0.3
    labels = torch.randint(0, VOCAB, (n,), generator=gen)
    # Make a third of the positions "easy" so the drop has something to act on.
    labels[: n // 3] = (hidden[: n // 3] @ weight.T).argmax(-1)
    uniforms = torch.rand(n, generator=gen)
    return hidden, labels, weight, uniforms


def _grads(heads, params):
    return {k: p.grad.clone() for k, p in params.items()}


CONFIGS = [
    LossConfig(),
    LossConfig(chunk_size=7),
    LossConfig(dft=False, easy_token_drop=0.0, alpha=5.0, chunk_size=1),
    LossConfig(train_top_p=False, chunk_size=9),
    LossConfig(train_temperature=False, chunk_size=13),
    LossConfig(top_p_loss_trains_temperature=False, temperature_weight=0.3, top_p_weight=2.0, chunk_size=16),
    LossConfig(easy_token_drop=1.0, chunk_size=11),  # with a softcap (below)
]
SOFTCAPS = [None] * (len(CONFIGS) - 1) + [3.0]


@pytest.mark.parametrize(
    "config, softcap",
    list(zip(CONFIGS, SOFTCAPS)),
    ids=[f"chunk{c.chunk_size}-T{c.train_temperature}-P{c.train_top_p}-cap{s}" for c, s in zip(CONFIGS, SOFTCAPS)],
)
def test_chunked_loss_and_gradients_match_naive_reference(config, softcap):
    hidden, labels, weight, uniforms = _inputs()
    heads = random_heads()
    params = trainable_parameters(heads, config)

    expected = naive_loss(heads, hidden, labels, weight, uniforms, config, softcap)
    expected.backward()
    expected_grads = _grads(heads, params)
    heads.zero_grad()

    loss = autodeco_loss(heads, hidden, labels, lm_head(weight, softcap), config=config, uniforms=uniforms)
    loss.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    for name, grad in _grads(heads, params).items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_temperature_only_adds_no_top_p_loss_and_leaves_top_p_head_alone():
    hidden, labels, weight, uniforms = _inputs()
    heads = random_heads()
    config = LossConfig(train_top_p=False)
    sums = autodeco_loss_sums(heads, hidden, labels, lm_head(weight), config=config, uniforms=uniforms)
    assert sums.top_p_sum.item() == 0.0 and sums.top_p_grads == {}
    assert all(k.startswith("temp_head.") for k in sums.temperature_grads)
    autodeco_loss(heads, hidden, labels, lm_head(weight), config=config, uniforms=uniforms).backward()
    assert all(p.grad is None for p in heads.top_p_head.parameters())
    assert all(p.grad is not None for p in heads.temp_head.parameters())


def test_sums_split_across_calls_normalise_like_one_call():
    """Micro-batches and processes add sums, then normalise once: same loss and gradient."""
    hidden, labels, weight, uniforms = _inputs(n=30)
    heads = random_heads()
    config = LossConfig(chunk_size=4)
    whole = autodeco_loss_sums(heads, hidden, labels, lm_head(weight), config=config, uniforms=uniforms)
    parts = autodeco_loss_sums(heads, hidden[:11], labels[:11], lm_head(weight), config=config, uniforms=uniforms[:11])
    parts.add_(
        autodeco_loss_sums(heads, hidden[11:], labels[11:], lm_head(weight), config=config, uniforms=uniforms[11:])
    )
    torch.testing.assert_close(normalised_loss(parts, config), normalised_loss(whole, config))
    for name, grad in combine_gradients(whole, config).items():
        torch.testing.assert_close(combine_gradients(parts, config)[name], grad, rtol=1e-5, atol=1e-7)


def test_easy_token_drop_counts_and_is_seeded():
    hidden, labels, weight, _ = _inputs(n=60)
    heads = random_heads()
    easy = ((hidden @ weight.T).argmax(-1) == labels).sum().item()
    keep_all = autodeco_loss_sums(
        heads, hidden, labels, lm_head(weight), config=LossConfig(easy_token_drop=0.0), compute_grads=False
    )
    drop_all = autodeco_loss_sums(
        heads, hidden, labels, lm_head(weight), config=LossConfig(easy_token_drop=1.0), compute_grads=False
    )
    assert keep_all.temperature_count.item() == 60
    assert drop_all.temperature_count.item() == 60 - easy and easy >= 20
    runs = [
        autodeco_loss_sums(
            heads, hidden, labels, lm_head(weight), generator=torch.Generator().manual_seed(3), compute_grads=False
        )
        for _ in range(2)
    ]
    assert runs[0].temperature_count == runs[1].temperature_count
    assert 60 - easy < runs[0].temperature_count.item() < 60


def test_loss_is_finite_when_top_p_is_below_the_top_token():
    """The naive log(p~) underflows when P sits far below the top token's probability."""
    hidden, labels, weight, uniforms = _inputs(n=8)
    heads = random_heads()
    with torch.no_grad():
        heads.top_p_head.mlp[2].weight.zero_()
        heads.top_p_head.mlp[2].bias.fill_(-20.0)  # P ~ 2e-9
    loss = autodeco_loss(
        heads, hidden * 30, labels, lm_head(weight), config=LossConfig(alpha=1000.0), uniforms=uniforms
    )
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in heads.parameters() if p.grad is not None)


def test_bf16_hidden_states_use_fp32_math():
    hidden, labels, weight, uniforms = _inputs()
    heads = random_heads()
    low = autodeco_loss(heads, hidden.bfloat16(), labels, lm_head(weight.bfloat16()), uniforms=uniforms)
    ref = naive_loss(heads, hidden.bfloat16().float(), labels, weight.bfloat16().float(), uniforms, LossConfig())
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, ref, rtol=1e-5, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(chunk=st.integers(1, 50), n=st.integers(1, 40), seed=st.integers(0, 1000))
def test_chunking_never_changes_the_result(chunk, n, seed):
    hidden, labels, weight, uniforms = _inputs(n=n, seed=seed)
    heads = random_heads()
    one = autodeco_loss_sums(heads, hidden, labels, lm_head(weight), config=LossConfig(chunk_size=n), uniforms=uniforms)
    many = autodeco_loss_sums(
        heads, hidden, labels, lm_head(weight), config=LossConfig(chunk_size=chunk), uniforms=uniforms
    )
    torch.testing.assert_close(
        normalised_loss(many, LossConfig()), normalised_loss(one, LossConfig()), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 0}, r"`alpha` \(--alpha\) has to be a positive float, but is 0"),
        ({"easy_token_drop": 1.5}, r"`easy_token_drop` \(--easy-token-drop\) has to be in \[0, 1\], but is 1.5"),
        ({"chunk_size": 0}, r"`chunk_size` \(--loss-chunk-size\) has to be a positive int, but is 0"),
        ({"temperature_weight": -1.0}, r"`temperature_weight` \(--temperature-loss-weight\) has to be >= 0"),
        ({"control_t_margin": -0.1}, r"`control_t_margin` \(--control-t-margin\) has to be >= 0"),
        ({"train_temperature": False, "train_top_p": False}, "nothing to train"),
    ],
)
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LossConfig(**kwargs)


def _naive_importance_weights(heads, hidden, labels, weight, config, sequence_ids):
    """Per-position weights written out: w_s = prod q/p over sequence s (self-normalised for
    "importance-normalised"), clipped."""
    logits = hidden.float() @ weight.float().T
    base = torch.log_softmax(logits, -1).gather(-1, labels[:, None]).squeeze(-1)
    temperature, top_p = heads(hidden, logits)
    probs = torch.softmax(logits / temperature.clamp_min(1e-2)[:, None], -1)
    if config.train_top_p:
        sorted_probs, order = probs.sort(-1, descending=True)
        mask = torch.empty_like(probs).scatter(
            -1, order, torch.exp(-config.alpha * torch.relu(sorted_probs.cumsum(-1) - top_p[:, None]))
        )
        probs = probs * mask / ((probs * mask).sum(-1, keepdim=True) + 1e-8)
    q = torch.log(probs.gather(-1, labels[:, None]).squeeze(-1))
    sequences = sorted(set(sequence_ids.tolist()))
    ratio = torch.stack([torch.exp((q - base)[sequence_ids == s].sum()) for s in sequences]).double()
    if config.sequence_weighting == "importance-normalised":
        ratio = ratio / ratio.mean()
    w = ratio.clamp(max=config.importance_clip)
    return torch.stack([w[sequences.index(s)] for s in sequence_ids.tolist()]).float()


@pytest.mark.parametrize(
    "train_top_p, weighting", [(True, "importance"), (False, "importance"), (True, "importance-normalised")]
)
def test_importance_weighted_loss_matches_naive_reference(train_top_p, weighting):
    from autodeco_lp.training.losses import sequence_importance_weights

    config = LossConfig(sequence_weighting=weighting, importance_clip=3.0, train_top_p=train_top_p, chunk_size=7)
    scale = 1.0 if weighting == "importance-normalised" else 3.0  # unnormalised: make some weights reach the clip
    hidden, labels, weight, uniforms = _inputs(n=30)
    weight = weight * (scale if weighting == "importance" else 1.0)
    sequence_ids = torch.tensor([5] * 4 + [2] * 9 + [7] * 3 + [1] * 14)
    heads = random_heads()
    with torch.no_grad():
        expected_w = _naive_importance_weights(heads, hidden, labels, weight, config, sequence_ids)
    got_w = sequence_importance_weights(heads, hidden, labels, lm_head(weight), config, sequence_ids)
    torch.testing.assert_close(got_w, expected_w, rtol=1e-4, atol=1e-6)
    assert got_w.max() <= 3.0 + 1e-6 and len(set(got_w.tolist())) > 1  # clipped, and not all equal
    # The loss is the ordinary one with the weights in place of DFT's (and DFT's weight is gone).
    sums = autodeco_loss_sums(
        heads, hidden, labels, lm_head(weight), config=config, uniforms=uniforms, sequence_ids=sequence_ids
    )
    plain = LossConfig(dft=False, train_top_p=train_top_p)
    logits = hidden @ weight.T
    t = heads(hidden, logits)[0].clamp_min(1e-2)
    keep = ~((logits.argmax(-1) == labels) & (uniforms < config.easy_token_drop))
    ce = torch.nn.functional.cross_entropy(logits / t[:, None], labels, reduction="none")
    torch.testing.assert_close(sums.temperature_sum, (ce * got_w * keep).sum().detach(), rtol=1e-4, atol=1e-4)
    assert plain.dft is False  # sanity of the comparison above


def test_importance_weights_favour_sequences_the_heads_make_likelier():
    """Two sequences: one of base-argmax tokens, one of tail tokens. Sharp heads (low T) raise the
    first's probability and lower the second's, so the first gets the larger weight; with the
    margin met (both equally likely) the weights are 1."""
    from autodeco_lp.training.losses import sequence_importance_weights
    from tests.conftest import constant_heads

    hidden, _, weight, _ = _inputs(n=12)
    logits = hidden @ weight.T
    labels = torch.cat([logits[:6].argmax(-1), logits[6:].argmin(-1)])
    ids = torch.tensor([0] * 6 + [1] * 6)
    config = LossConfig(sequence_weighting="importance", importance_clip=100.0, train_top_p=False)
    sharp = sequence_importance_weights(constant_heads(0.3, 0.9), hidden, labels, lm_head(weight), config, ids)
    assert sharp[0] > 1.0 > sharp[-1] and torch.allclose(sharp[:6], sharp[:1].expand(6))
    neutral = sequence_importance_weights(constant_heads(1.0 - 1e-6, 0.9), hidden, labels, lm_head(weight), config, ids)
    torch.testing.assert_close(neutral, torch.ones(12), atol=1e-3, rtol=0)


def test_importance_weighting_needs_sequence_ids_and_a_valid_clip():
    hidden, labels, weight, _ = _inputs(n=8)
    with pytest.raises(ValueError, match="needs `sequence_ids`"):
        autodeco_loss_sums(
            random_heads(), hidden, labels, lm_head(weight), config=LossConfig(sequence_weighting="importance")
        )
    with pytest.raises(ValueError, match=r"`importance_clip` \(--importance-clip\) has to be >= 1, but is 0.5"):
        LossConfig(sequence_weighting="importance", importance_clip=0.5)
    with pytest.raises(ValueError, match="has to be one of none, importance, importance-normalised"):
        LossConfig(sequence_weighting="reward")


def test_autodeco_loss_passes_sequence_ids_for_importance_weighting():
    """The scalar API takes the same `sequence_ids` as the sums (it raised for importance weighting)."""
    hidden, labels, weight, uniforms = _inputs(n=12)
    config = LossConfig(sequence_weighting="importance", importance_clip=3.0)
    ids = torch.arange(12) // 4
    heads = random_heads()
    loss = autodeco_loss(heads, hidden, labels, lm_head(weight), config=config, uniforms=uniforms, sequence_ids=ids)
    sums = autodeco_loss_sums(
        heads, hidden, labels, lm_head(weight), config=config, uniforms=uniforms, sequence_ids=ids, compute_grads=False
    )
    torch.testing.assert_close(loss, normalised_loss(sums, config))
