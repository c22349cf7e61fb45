"""The decoding policy that outcome training samples from and differentiates (docs/outcome.md).

Inference applies `hard_top_p_filter(logits / T, P)`: a token distribution that is piecewise constant
in P, so its log-probability gives the top-p head no gradient. During outcome training the policy
draws P per token from a logit-normal around the head's prediction,

    logit(P) ~ Normal(logit(P_head), sigma^2),

then applies the same hard nucleus as inference. Its exact token probability marginalises P:
with q = softmax(l / T) sorted descending, C_k the inclusive cumulative mass of the k most
probable tokens (C_0 = 0) and F the CDF of P, the nucleus keeps exactly the top k tokens with
probability Pr(k) = F(C_k) - F(C_{k-1}), so a token of rank r has

    pi(a) = q_a * sum_{k >= r} Pr(k) / C_k.

This is differentiable in T (through q and C) and in P_head (through F), uses no sample of P
(Rao-Blackwellised: lower variance than a score function on P), and tends to the inference
policy `q_a / C_{k*}` as sigma -> 0. `sample_top_p` draws the P that the rollouts apply.
"""

from __future__ import annotations

import torch

from autodeco_lp.inference.features import MIN_TEMPERATURE, rank_order, scale_by_temperature

# logit(P) is taken of P clamped to [LOGIT_EPS, 1 - LOGIT_EPS] (|logit| <= 13.8): a head saturated at P = 1.0
# in fp32 would give an infinite logit, and its gradient is then 0 instead of 0 / 0.
LOGIT_EPS = 1e-6
_TINY = 1e-30


def top_p_logit(top_p: torch.Tensor) -> torch.Tensor:
    """`logit(P)` of P clamped to [LOGIT_EPS, 1 - LOGIT_EPS]. Shapes: `(...)` -> `(...)`."""
    return torch.logit(top_p.float(), eps=LOGIT_EPS)


def sample_top_p(top_p: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """P drawn from the training policy: `sigmoid(logit(top_p) + sigma * N(0, 1))`; sigma 0 returns `top_p`.

    Shapes: `(rows,)` -> `(rows,)` fp32."""
    if sigma == 0:
        return top_p.float()
    noise = torch.randn(top_p.shape, generator=generator, device="cpu").to(top_p.device)
    return torch.sigmoid(top_p_logit(top_p) + sigma * noise)


def _log_cdf_pieces(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(F, 1 - F)` of a standard normal at `x`, each computed directly (no cancellation near 0 or 1)."""
    return torch.special.ndtr(x), torch.special.ndtr(-x)


def nucleus_size_probs(sorted_probs: torch.Tensor, top_p: torch.Tensor, sigma: float) -> torch.Tensor:
    """`Pr(k)`, k = 1..V: the probability that the nucleus keeps exactly the top k tokens.

    sorted_probs: `(N, V)` descending; top_p: `(N,)` the head's P (the centre of the logit-normal).
    Returns `(N, V)`; each row sums to 1. Differentiable in both inputs.
    """
    # C_k and the tail mass 1 - C_k, the tail summed from the end so logit(C_k) stays exact near 1.
    cumulative = sorted_probs.cumsum(dim=-1)  # (N, V): C_1 .. C_V
    tail = sorted_probs.flip(-1).cumsum(dim=-1).flip(-1) - sorted_probs  # (N, V): sum_{j > k} q_(j)
    logit_c = cumulative.clamp_min(_TINY).log() - tail.clamp_min(_TINY).log()  # (N, V); the last is ~+69
    x = (logit_c - top_p_logit(top_p).unsqueeze(-1)) / sigma  # (N, V) standardised
    below, above = _log_cdf_pieces(x)  # F(C_k), 1 - F(C_k)
    # The last nucleus keeps every token: F(C_V) = 1 exactly, whatever fp32 made of C_V.
    below = torch.cat([below[:, :-1], torch.ones_like(below[:, -1:])], dim=-1)
    above = torch.cat([above[:, :-1], torch.zeros_like(above[:, -1:])], dim=-1)
    zero, one = torch.zeros_like(below[:, :1]), torch.ones_like(above[:, :1])
    prev_below = torch.cat([zero, below[:, :-1]], dim=-1)  # F(C_{k-1}), F(C_0) = 0
    prev_above = torch.cat([one, above[:, :-1]], dim=-1)
    # Differences of whichever side is small: upper tail where x_{k-1} > 0 (both F near 1), else lower.
    prev_x = torch.cat([torch.full_like(x[:, :1], -float("inf")), x[:, :-1]], dim=-1)
    probs = torch.where(prev_x > 0, prev_above - above, below - prev_below)
    return probs.clamp_min(0.0)


def policy_log_prob(
    logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, tokens: torch.Tensor, sigma: float
) -> torch.Tensor:
    """log pi(token) of the training policy (module docstring), per position.

    logits: `(N, V)` raw logits (no gradient needed); temperature, top_p: `(N,)` the heads' outputs
    (gradients flow to both); tokens: `(N,)` int64, the sampled tokens. sigma 0 gives the hard
    nucleus' log-probability (no gradient to P). Returns `(N,)` fp32.
    """
    with torch.no_grad():  # the descending order does not depend on T > 0
        _, order = rank_order(logits)  # (N, V)
        rank = (order == tokens.unsqueeze(-1)).int().argmax(dim=-1)  # (N,) 0-based rank of each token
    scaled = scale_by_temperature(logits, temperature, MIN_TEMPERATURE)  # (N, V)
    log_q = torch.log_softmax(scaled, dim=-1)
    sorted_probs = log_q.exp().gather(-1, order)  # (N, V) descending
    token_log_q = log_q.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (N,)
    cumulative = sorted_probs.cumsum(dim=-1)  # (N, V)
    if sigma == 0:  # the inference rule: k* = the first k with C_k >= P
        with torch.no_grad():
            kept = (cumulative - sorted_probs) < top_p.unsqueeze(-1)  # exclusive cumsum < P
            kept[:, 0] = True
            size = kept.sum(dim=-1)  # (N,)
        mass = cumulative.gather(-1, (size - 1).unsqueeze(-1)).squeeze(-1)
        inside = rank < size
        return torch.where(inside, token_log_q - mass.log(), torch.full_like(token_log_q, -float("inf")))
    weights = nucleus_size_probs(sorted_probs, top_p, sigma) / cumulative.clamp_min(_TINY)  # Pr(k) / C_k
    suffix = weights.flip(-1).cumsum(dim=-1).flip(-1)  # (N, V): sum_{k >= r}
    return token_log_q + suffix.gather(-1, rank.unsqueeze(-1)).squeeze(-1).clamp_min(_TINY).log()


def policy_distribution(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, sigma: float):
    """The whole token distribution pi `(N, V)` (vocabulary order) of the policy: for tests and small
    vocabularies (it evaluates `policy_log_prob` at every token)."""
    rows, vocab = logits.shape
    tokens = torch.arange(vocab, device=logits.device).repeat(rows)  # (N * V,)
    expand = lambda t: t.repeat_interleave(vocab)  # noqa: E731 - (N,) -> (N * V,)
    log_pi = policy_log_prob(logits.repeat_interleave(vocab, dim=0), expand(temperature), expand(top_p), tokens, sigma)
    return log_pi.exp().view(rows, vocab)
