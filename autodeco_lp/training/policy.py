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
# policy_log_prob(top_k=K) uses the top K tokens of a row only when they hold at least 1 - TOP_K_TAIL of its mass.
TOP_K_TAIL = 1e-4


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


def nucleus_size_probs(
    sorted_probs: torch.Tensor, top_p: torch.Tensor, sigma: float, rest: torch.Tensor | None = None
) -> torch.Tensor:
    """`Pr(k)`, k = 1..K: the probability that the nucleus keeps exactly the top k tokens.

    sorted_probs: `(N, K)` the K most probable tokens' probabilities, descending (K = V: all of them);
    top_p: `(N,)` the head's P (the centre of the logit-normal); rest: `(N,)` the probability mass
    beyond the K tokens (None: K = V, every row sums to 1). Returns `(N, K)`; with `rest` the row
    sums to `1 - Pr(k > K)`. Differentiable in `sorted_probs` and `top_p`.
    """
    # C_k and the tail mass 1 - C_k, the tail summed from the end so logit(C_k) stays exact near 1.
    cumulative = sorted_probs.cumsum(dim=-1)  # (N, K): C_1 .. C_K
    tail = sorted_probs.flip(-1).cumsum(dim=-1).flip(-1) - sorted_probs  # (N, K): sum_{k < j <= K} q_(j)
    if rest is not None:
        tail = tail + rest.unsqueeze(-1)
    logit_c = cumulative.clamp_min(_TINY).log() - tail.clamp_min(_TINY).log()  # (N, K); the last is ~+69 at K = V
    x = (logit_c - top_p_logit(top_p).unsqueeze(-1)) / sigma  # (N, K) standardised
    below, above = _log_cdf_pieces(x)  # F(C_k), 1 - F(C_k)
    if rest is None:  # the last nucleus keeps every token: F(C_V) = 1 exactly, whatever fp32 made of C_V
        below = torch.cat([below[:, :-1], torch.ones_like(below[:, -1:])], dim=-1)
        above = torch.cat([above[:, :-1], torch.zeros_like(above[:, -1:])], dim=-1)
    zero, one = torch.zeros_like(below[:, :1]), torch.ones_like(above[:, :1])
    prev_below = torch.cat([zero, below[:, :-1]], dim=-1)  # F(C_{k-1}), F(C_0) = 0
    prev_above = torch.cat([one, above[:, :-1]], dim=-1)
    # Differences of whichever side is small: upper tail where x_{k-1} > 0 (both F near 1), else lower.
    prev_x = torch.cat([torch.full_like(x[:, :1], -float("inf")), x[:, :-1]], dim=-1)
    probs = torch.where(prev_x > 0, prev_above - above, below - prev_below)
    return probs.clamp_min(0.0)


def _hard_log_prob(sorted_probs, top_p, rank, token_log_q) -> torch.Tensor:
    """sigma = 0: the inference rule, k* = the first k with C_k >= P (`(N, K)` sorted, K covering the nucleus)."""
    cumulative = sorted_probs.cumsum(dim=-1)
    with torch.no_grad():
        kept = (cumulative - sorted_probs) < top_p.unsqueeze(-1)  # exclusive cumsum < P
        kept[:, 0] = True
        size = kept.sum(dim=-1)  # (N,)
    mass = cumulative.gather(-1, (size - 1).unsqueeze(-1)).squeeze(-1)
    inside = rank < size
    return torch.where(inside, token_log_q - mass.log(), torch.full_like(token_log_q, -float("inf")))


def policy_log_prob(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    tokens: torch.Tensor,
    sigma: float,
    top_k: int | None = None,
) -> torch.Tensor:
    """log pi(token) of the training policy (module docstring), per position.

    logits: `(N, V)` raw logits (no gradient needed); temperature, top_p: `(N,)` the heads' outputs
    (gradients flow to both); tokens: `(N,)` int64, the sampled tokens. sigma 0 gives the hard
    nucleus' log-probability (no gradient to P). Returns `(N,)` fp32.

    top_k: None sorts the whole vocabulary (exact). K > 0 works on the K most probable tokens only
    (`torch.topk`, no sort of V): the sum over nucleus sizes k > K, whose mass is `1 - F(C_K)` and
    whose `1 / C_k` lies in [1, 1 / C_K], is taken at the midpoint, so log pi is off by at most
    `log(1 + (1 - C_K) / (2 C_K))`, below 5e-5: rows whose top K hold less than `1 - TOP_K_TAIL` of the
    mass, whose token ranks below K, or (sigma 0) whose nucleus reaches beyond K take the exact path.
    """
    vocab = logits.shape[-1]
    if top_k is not None and top_k < vocab:
        return _policy_log_prob_top_k(logits, temperature, top_p, tokens, sigma, top_k)
    with torch.no_grad():  # the descending order does not depend on T > 0
        _, order = rank_order(logits)  # (N, V)
        rank = (order == tokens.unsqueeze(-1)).int().argmax(dim=-1)  # (N,) 0-based rank of each token
    scaled = scale_by_temperature(logits, temperature, MIN_TEMPERATURE)  # (N, V)
    log_q = torch.log_softmax(scaled, dim=-1)
    sorted_probs = log_q.exp().gather(-1, order)  # (N, V) descending
    token_log_q = log_q.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (N,)
    if sigma == 0:
        return _hard_log_prob(sorted_probs, top_p, rank, token_log_q)
    cumulative = sorted_probs.cumsum(dim=-1)  # (N, V)
    weights = nucleus_size_probs(sorted_probs, top_p, sigma) / cumulative.clamp_min(_TINY)  # Pr(k) / C_k
    suffix = weights.flip(-1).cumsum(dim=-1).flip(-1)  # (N, V): sum_{k >= r}
    return token_log_q + suffix.gather(-1, rank.unsqueeze(-1)).squeeze(-1).clamp_min(_TINY).log()


def _policy_log_prob_top_k(logits, temperature, top_p, tokens, sigma: float, k: int) -> torch.Tensor:
    """`policy_log_prob` on the K most probable tokens (its docstring); shapes as there."""
    with torch.no_grad():
        order = logits.float().topk(k, dim=-1).indices  # (N, K) descending; T > 0 keeps the order
        hit = order == tokens.unsqueeze(-1)
        rank = hit.int().argmax(dim=-1)
        scaled = scale_by_temperature(logits, temperature, MIN_TEMPERATURE)
        covered = (scaled.gather(-1, order).logsumexp(dim=-1) - scaled.logsumexp(dim=-1)).exp()  # (N,) C_K
        # The exact path where the top K miss the token, hold less than 1 - TOP_K_TAIL of the mass, or (sigma 0)
        # do not reach P.
        usable = hit.any(dim=-1) & (covered >= 1 - TOP_K_TAIL) & ((sigma > 0) | (covered >= top_p))
    out = torch.empty(tokens.shape, dtype=torch.float32, device=logits.device)
    if not bool(usable.all()):
        missed = ~usable
        out = out.masked_scatter(
            missed, policy_log_prob(logits[missed], temperature[missed], top_p[missed], tokens[missed], sigma)
        )
    rows = usable.nonzero().squeeze(-1)
    scaled = scale_by_temperature(logits[rows], temperature[rows], MIN_TEMPERATURE)  # (n, V)
    log_z = torch.logsumexp(scaled, dim=-1, keepdim=True)  # (n, 1)
    sorted_probs = (scaled.gather(-1, order[rows]) - log_z).exp()  # (n, K) descending
    token_log_q = (scaled.gather(-1, tokens[rows].unsqueeze(-1)) - log_z).squeeze(-1)  # (n,)
    rank, p = rank[rows], top_p[rows]
    if sigma == 0:
        result = _hard_log_prob(sorted_probs, p, rank, token_log_q)
    else:
        # (n,) the mass beyond the top K, summed directly (1 - sum(top K) would lose the digits logit(C_k) needs)
        rest = (scaled.scatter(-1, order[rows], -float("inf")).logsumexp(dim=-1) - log_z.squeeze(-1)).exp()
        cumulative = sorted_probs.cumsum(dim=-1)  # (n, K)
        size_probs = nucleus_size_probs(sorted_probs, p, sigma, rest)  # (n, K)
        weights = size_probs / cumulative.clamp_min(_TINY)
        suffix = weights.flip(-1).cumsum(dim=-1).flip(-1)  # (n, K): sum_{r <= k <= K}
        beyond = (1 - size_probs.sum(dim=-1)).clamp_min(0.0)  # Pr(k > K)
        c_k = cumulative[:, -1].clamp_min(_TINY)
        suffix = suffix + (beyond * (1 + 1 / c_k) / 2).unsqueeze(-1)  # sum over k > K at the midpoint
        result = token_log_q + suffix.gather(-1, rank.unsqueeze(-1)).squeeze(-1).clamp_min(_TINY).log()
    return out.index_put((rows,), result)


def policy_distribution(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, sigma: float):
    """The whole token distribution pi `(N, V)` (vocabulary order) of the policy: for tests and small
    vocabularies (it evaluates `policy_log_prob` at every token)."""
    rows, vocab = logits.shape
    tokens = torch.arange(vocab, device=logits.device).repeat(rows)  # (N * V,)
    expand = lambda t: t.repeat_interleave(vocab)  # noqa: E731 - (N,) -> (N * V,)
    log_pi = policy_log_prob(logits.repeat_interleave(vocab, dim=0), expand(temperature), expand(top_p), tokens, sigma)
    return log_pi.exp().view(rows, vocab)
