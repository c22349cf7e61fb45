"""The outcome objective's loss: REINFORCE with group advantages on the training policy (`policy.py`).

For a round of samples x_i (one problem's group shares a baseline, `advantages.py`), the policy
gradient of the expected reward is estimated by `mean_i A_i * sum_t grad log pi(a_it | h_it)`: each
sample's advantage on every token it chose, summed over its tokens, averaged over the round's
samples (no per-token length normalisation, so the estimate stays unbiased). Positions are given
flat with one weight each (`A_i / samples`); the loss is processed in chunks of positions so that
only one chunk's `(C, V)` tensors exist at a time (`--loss-chunk-size`, else `default_chunk_size`).

The optional reference term keeps the heads near reference heads (e.g. the likelihood-trained
ones): per position `KL(softmax(l / T) || softmax(l / T_ref))` for the temperature and
`(logit P - logit P_ref)^2 / (2 sigma^2)`, the KL between the two logit-normal P distributions the
policies draw from, averaged over positions and scaled by `kl_weight`.
"""

from __future__ import annotations

import torch

from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.inference.features import scale_by_temperature
from autodeco_lp.inference.heads import AutoDecoHeads
from autodeco_lp.training.policy import policy_log_prob, top_p_logit

# Positions x vocabulary entries per loss chunk when `--loss-chunk-size` is not given: 256 positions of SmolLM2's
# 49,152-token vocabulary. Rows whose top 256 tokens miss the mass take the exact path, whose backward pass keeps
# ~100 bytes per entry (measured: a 256 x 262,144 chunk, Gemma3's vocabulary, peaked 6.7 GB above the model), so a
# budget in entries rather than positions keeps that ~1.3 GB for any vocabulary.
CHUNK_ENTRIES = 256 * 49152


def default_chunk_size(vocab_size: int) -> int:
    """Positions per loss chunk for a vocabulary of `vocab_size` tokens (`CHUNK_ENTRIES`)."""
    return max(1, CHUNK_ENTRIES // vocab_size)


def _reference_kl(logits, temperature, top_p, reference: AutoDecoHeads, hidden, sigma: float) -> torch.Tensor:
    """`(C,)` per-position KL terms towards `reference` (module docstring)."""
    with torch.no_grad():
        ref_t, ref_p = reference(hidden, logits)
    log_q = torch.log_softmax(scale_by_temperature(logits, temperature), dim=-1)  # (C, V)
    log_ref = torch.log_softmax(scale_by_temperature(logits, ref_t), dim=-1)
    kl = (log_q.exp() * (log_q - log_ref)).sum(dim=-1)  # (C,)
    if sigma > 0:
        kl = kl + (top_p_logit(top_p) - top_p_logit(ref_p)).square() / (2 * sigma**2)
    return kl


def outcome_backward(
    heads: AutoDecoHeads,
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    weights: torch.Tensor,
    projection: OutputProjection,
    *,
    sigma: float,
    chunk_size: int | None = None,
    reference: AutoDecoHeads | None = None,
    kl_weight: float = 0.0,
    top_k: int | None = 256,
) -> dict[str, float]:
    """Accumulate the gradient of `-sum_n weights_n log pi(tokens_n)` (+ the reference term) into the
    heads' `.grad`, chunk by chunk; returns the loss parts and the mean T and P as floats.

    hidden: `(N, H)` the positions' final hidden states; tokens: `(N,)` the tokens the policy chose;
    weights: `(N,)` each position's sample advantage / number of samples; projection: the base
    model's `lm_head` (the logits are recomputed from `hidden`, no gradient); top_k: see
    `policy.policy_log_prob` (256: 3-5x faster than sorting V = 49152, log pi within 5e-5); chunk_size:
    positions per chunk (None: `default_chunk_size` of the vocabulary).
    """
    n = hidden.shape[0]
    chunk_size = chunk_size or default_chunk_size(projection.vocab_size)
    device = heads.device
    totals = {"policy_loss": 0.0, "kl": 0.0, "mean_temperature": 0.0, "mean_top_p": 0.0}
    projection = projection.to_float()
    for start in range(0, n, chunk_size):
        h = hidden[start : start + chunk_size].to(device)  # (C, H)
        with torch.no_grad():
            logits = projection(h)  # (C, V) fp32
        temperature, top_p = heads(h, logits)  # (C,) each, with gradients
        log_pi = policy_log_prob(
            logits, temperature, top_p, tokens[start : start + chunk_size].to(device), sigma, top_k=top_k
        )
        policy = -(weights[start : start + chunk_size].to(device) * log_pi).sum()
        loss = policy
        if reference is not None and kl_weight > 0:
            kl = _reference_kl(logits, temperature, top_p, reference, h, sigma).sum()
            loss = loss + kl_weight * kl / n
            totals["kl"] += float(kl) / n
        loss.backward()
        totals["policy_loss"] += float(policy.detach())
        totals["mean_temperature"] += float(temperature.detach().sum()) / n
        totals["mean_top_p"] += float(top_p.detach().sum()) / n
    return totals
