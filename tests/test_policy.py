"""The training policy's exact token probability (training/policy.py) against sampling and its fast path."""

import pytest
import torch

from autodeco_lp.inference.features import hard_top_p_filter
from autodeco_lp.training.policy import policy_distribution, policy_log_prob, sample_top_p


@pytest.mark.parametrize("sigma", [0.0, 0.5, 1.5])
def test_policy_probabilities_are_what_sampling_p_then_the_nucleus_draws(sigma):
    torch.manual_seed(0)
    rows, vocab, draws = 3, 7, 100_000
    logits = torch.randn(rows, vocab) * 2
    temperature, top_p = torch.tensor([0.5, 1.0, 1.5]), torch.tensor([0.6, 0.9, 0.3])
    pi = policy_distribution(logits, temperature, top_p, sigma)
    assert torch.allclose(pi.sum(dim=-1), torch.ones(rows), atol=1e-5)
    generator = torch.Generator().manual_seed(1)
    p = sample_top_p(top_p.repeat(draws), sigma, generator).view(draws, rows)
    scores = hard_top_p_filter((logits / temperature[:, None]).expand(draws, rows, vocab), p)
    tokens = torch.distributions.Categorical(logits=scores).sample()  # (draws, rows)
    freq = torch.stack([torch.bincount(tokens[:, i], minlength=vocab).float() / draws for i in range(rows)])
    assert (freq - pi).abs().max() < 0.006  # 3.5 standard errors of a frequency near 0.5


def test_small_sigma_tends_to_the_inference_rule():
    torch.manual_seed(1)
    logits, temperature, top_p = torch.randn(4, 9) * 2, torch.full((4,), 0.8), torch.tensor([0.5, 0.7, 0.9, 0.95])
    hard = policy_distribution(logits, temperature, top_p, 0.0)
    assert torch.allclose(policy_distribution(logits, temperature, top_p, 1e-3), hard, atol=1e-3)


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_top_k_path_matches_the_exact_path_with_gradients(sigma):
    torch.manual_seed(2)
    rows, vocab = 64, 4096
    logits = torch.randn(rows, vocab) * 8
    temperature, top_p = torch.rand(rows) * 0.8 + 0.2, torch.rand(rows) * 0.3 + 0.7
    tokens = torch.distributions.Categorical(logits=logits / temperature[:, None]).sample()
    tokens[0] = logits[0].argsort()[100]  # far down the ranking: the exact fallback
    results = []
    for k in (None, 64):
        t, p = temperature.clone().requires_grad_(), top_p.clone().requires_grad_()
        value = policy_log_prob(logits, t, p, tokens, sigma, top_k=k)
        value[value.isfinite()].sum().backward()
        results.append((value.detach(), t.grad, p.grad if p.grad is not None else torch.zeros(rows)))
    (exact, t_exact, p_exact), (fast, t_fast, p_fast) = results
    assert torch.equal(exact.isfinite(), fast.isfinite())
    finite = exact.isfinite()
    assert torch.allclose(exact[finite], fast[finite], atol=5e-5)
    assert torch.allclose(t_exact, t_fast, atol=1e-3, rtol=1e-3)
    assert torch.allclose(p_exact, p_fast, atol=1e-3, rtol=1e-3)


def test_outcome_loss_chunks_by_vocabulary_and_any_chunk_gives_the_same_gradient():
    from autodeco_lp.inference.capture import OutputProjection
    from autodeco_lp.inference.heads import AutoDecoConfig, AutoDecoHeads
    from autodeco_lp.training.outcome_loss import default_chunk_size, outcome_backward

    # The default holds positions x vocabulary fixed: SmolLM2's 256 positions, fewer for Gemma3's 262,144 tokens.
    assert default_chunk_size(49152) == 256 and default_chunk_size(262144) == 48 and default_chunk_size(10**9) == 1
    torch.manual_seed(3)
    n, hidden_size, vocab = 37, 16, 50
    projection = OutputProjection(torch.randn(vocab, hidden_size), None, None)
    hidden, tokens, weights = torch.randn(n, hidden_size), torch.randint(0, vocab, (n,)), torch.randn(n)
    grads = []
    for chunk in (None, 5, n):
        heads = AutoDecoHeads(AutoDecoConfig(hidden_size=hidden_size, vocab_size=vocab))
        torch.manual_seed(4)
        for p in heads.parameters():
            torch.nn.init.normal_(p, std=0.1)
        totals = outcome_backward(heads, hidden, tokens, weights, projection, sigma=0.5, chunk_size=chunk, top_k=None)
        grads.append((totals["policy_loss"], [p.grad.clone() for p in heads.parameters()]))
    for loss, grad in grads[1:]:
        assert loss == pytest.approx(grads[0][0], rel=1e-5)
        assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(grad, grads[0][1]))
