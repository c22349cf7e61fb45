"""AutoDeco training losses, computed in chunks of positions so memory stays O(chunk x V).

The objective (REFERENCE section 1; defaults = the released heads' objective):

- temperature loss, per supervised position i with gold token y_i and raw logits l_i (V,):
  `w_i * -log softmax(l_i / max(T_i, 1e-2))[y_i]`, over the positions that survive the
  easy-token drop (a position whose base argmax already equals y_i is dropped with probability
  `easy_token_drop`); averaged over the surviving positions.
- top-p loss, per supervised position: `w_i * -log p~_i[y_i]` with
  `p = softmax(l_i / T_i)`, `m = exp(-alpha * relu(cumsum_desc(p) - P_i))`,
  `p~ = p * m / (sum(p * m) + eps)`; averaged over all supervised positions. As released, T is
  not detached here, so the temperature head also learns from this loss.
- `w_i` is the DFT weight `softmax(l_i)[y_i]` (detached), or 1 with DFT off.
- total = `temperature_weight * loss_T + top_p_weight * loss_P`; a head that is not trained
  contributes no loss at all (the released code still added loss_P for "temperature only").

Sequence importance weighting (`sequence_weighting="importance"`, off in the released objective):
rejection-sampled rows are draws from the base model at T = 1 conditioned on success, so the
plain likelihood gradient `sum_rows grad log q(y)` is the gradient of the expected success rate
`sum_x P_x` only where the heads' decoding distribution q equals the base one. Once the heads
move T and P, the off-policy policy-gradient estimator (importance sampling: Precup et al. 2000;
the data are RAFT/ReST-style rejection samples: Dong et al. 2023, Gulcehre et al. 2023) weights
each sequence by `w = prod_t q_t[y_t] / p_t[y_t]` (detached, `q` = the heads' warped distribution
`p~`, or `softmax(l/T)` when only the temperature head trains; `p` = the base softmax), so the
objective follows task success instead of token likelihood: sequences the heads make more likely
count more, which is what sharpens T where the model is usually right, while a correct sequence
the heads make unlikely loses weight, and with it the objective loses that problem's success.
`w` is clipped at `importance_clip` (variance control) and replaces the DFT weight; both losses
use it. "importance-normalised" divides `w` by its mean over the step's sequences first; that
removes the cost of losing a problem and collapses T towards greedy (measured, docs/results.md).

`log p~[y]` is computed as `log p[y] - alpha * relu(c[y] - P) - log(sum(p * m) + eps)`, which is
the same number as `log(p~[y])` but never underflows to `-inf`.

Two implementations of the soft top-p term (`LossConfig.soft_top_p`):

- "exact" (default): a full-width stable sort of p (equal probabilities ordered by token id), its
  cumsum, the mask, the sum. The sort (`features.rank_order`: integer keys, numpy's SIMD sort on a
  CPU, the same order as torch's stable sort) was a third of the loss's time with `torch.sort`.
- "topk": sort-free. Write c_i for token i's inclusive cumulative mass in that order, S = sum_i
  p_i m_i with m_i = exp(-alpha relu(c_i - P)), and ell = -log p_y + alpha relu(c_y - P) + log(S + e0)
  (e0 = SOFT_TOP_P_EPS).
  * c_y is a masked O(V) sum: c_y = sum_i p_i [p_i > p_y or (p_i = p_y and i <= y)], exactly the
    stable sort's order, so p_y and the mask term are the exact path's (up to fp32 summation order).
  * S: `torch.topk` gives the k most probable tokens; their cumulative masses C_1 <= ... <= C_k are
    exact (equal probabilities may come in any order there: permuting equal p_i permutes the c_i
    among them, which leaves sum p_i m_i unchanged), so A = sum_{j <= k} p_(j) m(C_j) is exact.
    Every other token has c_i in [C_k, 1] and m is non-increasing in c, so its mask lies in
    [a, b] = [exp(-alpha relu(1 - P)), exp(-alpha relu(C_k - P))], and the tail's share
    B = sum_tail p_i m_i lies in [R a, R b] with R = 1 - C_k its mass. We use the midpoint
    S^ = A + R (a + b) / 2.
  * Bound. |log(S^ + e0) - log(S + e0)| <= log(1 + R (b - a) / (2 (A + R a + e0))) <= rho / 2 with
    rho = R b / (A + e0), because both S and S^ lie in [A + R a, A + R b] and log is concave
    (the distance of the midpoint to either end, relative to the lower end). Only this term
    differs, so per position |ell^ - ell| <= rho / 2, and the weighted loss obeys
    |loss^ - loss| <= top_p_weight * mean_i(w_i rho_i / 2) <= top_p_weight * max(w) * eps / 2.
  * k, per row: `TOPK_START`, then x4 (capped at V) for the rows still above the bound, until every
    row has rho <= eps (`LossConfig.topk_eps`). Every top-k token has m >= b (its c <= C_k), so
    A >= C_k b and rho <= R / C_k: covering mass 1 - eps gives rho <= eps / (1 - eps) whatever P
    and alpha, and rho usually falls below eps much earlier, since b decays like exp(-alpha (C_k - P))
    once the top-k passes P. With eps = 0, k = V and the result is the exact loss.
  * Gradients: only d log S differs. For P: d log S/dP = alpha (G + D) / S with G the top-k part
    (exact in both) and the tail part D, D^ both in [0, R b], so |d ell^/dP - d ell/dP| <=
    alpha (R b / S + |S^ - S| / S) <= 2 alpha rho. For T the error is of the same relative order
    (tested, tests/test_losses_topk.py), not bounded here.
  * eps = 1e-3 (`DEFAULT_TOPK_EPS`): the loss moves by at most 5e-4 nats per position (w <= 1 with
    DFT), against per-position losses of ~0.1-3 nats, and the P-gradient by at most 2e-3 alpha, 0.1%
    of its range [-alpha, alpha]. On SmolLM2-135M with the shipped heads (T ~ 0.4, P ~ 0.998) it
    needs k <= 16 for half the positions, <= 256 for 99% (max 2048); eps = 1e-4 doubles those.
    No (C, V) int64 tensor is built (the token-id order is an int32 (V,) row; top-k ids are (C, k));
    the (C, V) passes left are the softmax, the masked sum and the top-k selection.

Memory: the base model is frozen, so only the heads need gradients. For each chunk of C
positions we run forward and backward at once and keep only the gradients, so at most one
chunk's `(C, V)` intermediates (about 15 fp32 copies: logits, softmaxes, sort values and
indices, cumsum, mask, statistics) are alive: C = 256, V = 49152 -> ~0.75 GB, against ~12 GB
for N = 4096 positions done in one piece. Gradients never flow to the hidden states or `lm_head`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.inference.features import DEFAULT_ALPHA, MIN_TEMPERATURE, SOFT_TOP_P_EPS, rank_order

DEFAULT_EASY_TOKEN_DROP = 0.6
DEFAULT_CHUNK_SIZE = 256
SEQUENCE_WEIGHTINGS = ("none", "importance", "importance-normalised")
SOFT_TOP_P_METHODS = ("exact", "topk")
# Bound on the tail's relative share rho of the soft top-p normaliser in the "topk" method (module docstring).
DEFAULT_TOPK_EPS = 1e-3
# First k tried by the "topk" method; multiplied by 4 (capped at V) until every row of a chunk meets the bound.
TOPK_START = 256


@dataclass(frozen=True)
class LossConfig:
    """Switches of the AutoDeco objective. Defaults reproduce the released heads' objective.

    Args:
        alpha: sharpness of the soft top-p mask.
        easy_token_drop: probability of dropping an "easy" position (base argmax == gold) from
            the temperature loss.
        dft: weight each position's loss by the base model's probability of the gold token.
        temperature_weight / top_p_weight: weights of the two losses in the total.
        train_temperature / train_top_p: which heads learn. A head that does not learn adds no loss.
        top_p_loss_trains_temperature: let the top-p loss move the temperature head through T
            (released behaviour); off detaches T inside the top-p loss.
        chunk_size: positions per chunk; peak memory grows linearly with it.
        control_weight: weight of the plain-language control ranking loss (autodeco_lp.training.ranking),
            when the caller adds one to the sums.
        sequence_weighting: "none" (released), "importance" or "importance-normalised": weight
            every position of a sequence by the clipped ratio of its probability under the heads to
            the base model's (see the module docstring); needs `sequence_ids`.
        importance_clip: upper bound of that weight.
        soft_top_p: "exact" (full sort) or "topk" (sort-free, within a proven bound of the exact
            loss; module docstring).
        topk_eps: the "topk" method's bound: per position the top-p loss is within `topk_eps / 2`
            (times its weight) of the exact one. 0 makes k = V: the exact loss.
    """

    alpha: float = DEFAULT_ALPHA
    easy_token_drop: float = DEFAULT_EASY_TOKEN_DROP
    dft: bool = True
    temperature_weight: float = 1.0
    top_p_weight: float = 1.0
    train_temperature: bool = True
    train_top_p: bool = True
    top_p_loss_trains_temperature: bool = True
    chunk_size: int = DEFAULT_CHUNK_SIZE
    sequence_weighting: str = "none"
    importance_clip: float = 10.0
    control_weight: float = 1.0
    soft_top_p: str = "exact"
    topk_eps: float = DEFAULT_TOPK_EPS

    def __post_init__(self) -> None:
        if self.soft_top_p not in SOFT_TOP_P_METHODS:
            raise ValueError(f"`soft_top_p` has to be one of {SOFT_TOP_P_METHODS}, but is {self.soft_top_p!r}")
        if not 0.0 <= self.topk_eps < 1.0:
            raise ValueError(f"`topk_eps` has to be in [0, 1), but is {self.topk_eps}")
        if self.sequence_weighting not in SEQUENCE_WEIGHTINGS:
            raise ValueError(
                f"`sequence_weighting` has to be one of {SEQUENCE_WEIGHTINGS}, but is {self.sequence_weighting!r}"
            )
        if not self.importance_clip >= 1.0:
            raise ValueError(f"`importance_clip` has to be >= 1, but is {self.importance_clip}")
        if not self.alpha > 0:
            raise ValueError(f"`alpha` has to be a positive float, but is {self.alpha}")
        if not 0.0 <= self.easy_token_drop <= 1.0:
            raise ValueError(f"`easy_token_drop` has to be in [0, 1], but is {self.easy_token_drop}")
        if self.chunk_size < 1:
            raise ValueError(f"`chunk_size` has to be a positive int, but is {self.chunk_size}")
        for name in ("temperature_weight", "top_p_weight", "control_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` has to be >= 0, but is {getattr(self, name)}")
        if not (self.train_temperature or self.train_top_p):
            raise ValueError("nothing to train: set `train_temperature` or `train_top_p`.")


@dataclass
class LossSums:
    """Unnormalised sums over the positions of one call, plus the gradients of the two sums.

    `temperature_grads` / `top_p_grads` map parameter name -> gradient of the corresponding
    sum (missing names got no gradient). Dividing by counts happens in the caller, so batches
    split across chunks, micro-batches or processes normalise exactly like one big batch.
    """

    temperature_sum: torch.Tensor  # () fp32
    temperature_count: torch.Tensor  # () positions kept after the easy-token drop
    top_p_sum: torch.Tensor  # () fp32; normalised by `positions`
    positions: torch.Tensor  # () supervised positions seen
    predicted_temperature_sum: torch.Tensor  # () for diagnostics: mean T = sum / positions
    predicted_top_p_sum: torch.Tensor  # ()
    control_sum: torch.Tensor | None = None  # () ranking loss of plain-language control (autodeco_lp.training.ranking)
    control_count: torch.Tensor | None = None  # () rows it was summed over
    temperature_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    top_p_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    control_grads: dict[str, torch.Tensor] = field(default_factory=dict)

    SCALARS = (
        "temperature_sum",
        "temperature_count",
        "top_p_sum",
        "positions",
        "predicted_temperature_sum",
        "predicted_top_p_sum",
        "control_sum",
        "control_count",
    )
    GRADS = ("temperature_grads", "top_p_grads", "control_grads")

    def __post_init__(self) -> None:
        zero = torch.zeros_like(self.top_p_sum)
        self.control_sum = zero if self.control_sum is None else self.control_sum
        self.control_count = zero if self.control_count is None else self.control_count

    @classmethod
    def zeros(cls, device: torch.device | str | None = None) -> LossSums:
        zero = torch.zeros((), dtype=torch.float32, device=device)
        return cls(*(zero for _ in cls.SCALARS))

    def add_(self, other: LossSums) -> LossSums:
        for name in self.SCALARS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in self.GRADS:
            mine, theirs = getattr(self, name), getattr(other, name)
            for key, grad in theirs.items():
                mine[key] = mine[key] + grad if key in mine else grad.clone()
        return self


def trainable_parameters(heads: nn.Module, config: LossConfig) -> dict[str, nn.Parameter]:
    """The head parameters the objective updates, by name."""
    params: dict[str, nn.Parameter] = {}
    for name, param in heads.named_parameters():
        if name.startswith("temp_head.") and config.train_temperature:
            params[name] = param
        elif name.startswith("top_p_head.") and config.train_top_p:
            params[name] = param
    return params


def _chunk_losses(
    heads: nn.Module,
    hidden: torch.Tensor,  # (C, H)
    labels: torch.Tensor,  # (C,)
    projection: OutputProjection,  # lm_head (V, H) + bias + softcap
    uniforms: torch.Tensor,  # (C,) in [0, 1): drop an easy position when u < easy_token_drop
    config: LossConfig,
    sequence_weight: torch.Tensor | None = None,  # (C,) detached; replaces the DFT weight
) -> tuple[torch.Tensor, ...]:
    """Per-position values for one chunk: (loss_T, keep_T, loss_P, T, P, log q[y] - log p[y]), each (C,).

    The last is the log importance ratio of the heads' warped distribution to the base model's
    (the one that counts for the trained heads: p~ with the top-p head, softmax(l/T) without).
    """
    with torch.no_grad():
        logits = projection(hidden)  # (C, V) fp32: the logits the heads see at inference
        # log softmax(l)[y] without writing a (C, V) log-softmax: l[y] - logsumexp(l).
        gold_base = logits.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (C,)
        dft_weight = gold_base.exp() if config.dft else torch.ones_like(gold_base)
        if sequence_weight is not None:
            dft_weight = sequence_weight
        easy = logits.argmax(dim=-1) == labels  # (C,)
        keep_t = ~(easy & (uniforms < config.easy_token_drop))

    temperature, top_p = heads(hidden, logits)  # (C,), (C,) fp32
    t = temperature.clamp_min(MIN_TEMPERATURE)[:, None]  # (C, 1)
    # One (C, V) log-softmax serves both losses unless the top-p loss must not move T.
    scaled_log_probs = torch.log_softmax(logits / t, dim=-1)  # (C, V)

    gold_scaled = scaled_log_probs.gather(-1, labels[:, None]).squeeze(-1)  # (C,)
    log_ratio = (gold_scaled - gold_base).detach()
    loss_t = torch.zeros_like(gold_base)
    if config.train_temperature:
        loss_t = -gold_scaled * dft_weight * keep_t

    loss_p = torch.zeros_like(gold_base)
    if config.train_top_p:
        log_probs = scaled_log_probs
        if not config.top_p_loss_trains_temperature:
            log_probs = torch.log_softmax(logits / t.detach(), dim=-1)  # (C, V)
        log_soft = soft_top_p_gold_log_prob(
            log_probs, top_p, labels, config.alpha, method=config.soft_top_p, eps=config.topk_eps
        )
        loss_p = -log_soft * dft_weight
        log_ratio = (log_soft - gold_base).detach()
    return loss_t, keep_t, loss_p, temperature, top_p, log_ratio


def soft_top_p_gold_log_prob(
    log_probs: torch.Tensor,
    top_p: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    method: str = "exact",
    eps: float = DEFAULT_TOPK_EPS,
) -> torch.Tensor:
    """`log p~[y]` of the soft top-p distribution, per row, as
    `log p[y] - alpha * relu(c[y] - P) - log(sum(p * m) + e0)` (never underflows to -inf).

    Shapes: log_probs `(C, V)` (a log-softmax), top_p `(C,)`, labels `(C,)` -> `(C,)`.
    `method` "exact" sorts; "topk" is within `eps / 2` of it in every row (module docstring).
    """
    if method == "topk":
        gold_excess, log_normaliser = _soft_top_p_topk(log_probs, top_p, labels, alpha, eps)
    elif method == "exact":
        gold_excess, log_normaliser = _soft_top_p_exact(log_probs, top_p, labels, alpha)
    else:
        raise ValueError(f"`method` has to be one of {SOFT_TOP_P_METHODS}, but is {method!r}")
    gold_log_prob = log_probs.gather(-1, labels[:, None]).squeeze(-1)  # (C,)
    return gold_log_prob - alpha * gold_excess - log_normaliser


def _soft_top_p_exact(
    log_probs: torch.Tensor, top_p: torch.Tensor, labels: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(relu(c_y - P), log(S + e0))`, each (C,), with a full-width sort. log_probs (C, V), top_p and labels (C,).

    The sort is stable: equal probabilities are ranked by token id, which fixes the gold token's c_y.
    """
    probs = log_probs.exp()
    sorted_probs, order = rank_order(probs)  # (C, V) each: torch's stable descending sort, faster on a CPU
    cumulative = sorted_probs.cumsum(dim=-1)  # (C, V) inclusive
    excess = torch.relu(cumulative - top_p[:, None])  # (C, V) sorted order
    normaliser = (sorted_probs * torch.exp(-alpha * excess)).sum(dim=-1) + SOFT_TOP_P_EPS  # (C,)
    # c[y]: the cumulative sum at the gold token's rank, read back through the sort order.
    gold_rank = (order == labels[:, None]).to(torch.int8).argmax(dim=-1, keepdim=True)  # (C, 1)
    return excess.gather(-1, gold_rank).squeeze(-1), torch.log(normaliser)


def _soft_top_p_topk(
    log_probs: torch.Tensor, top_p: torch.Tensor, labels: torch.Tensor, alpha: float, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same pair as `_soft_top_p_exact` without a sort: c_y exact, log S within rho / 2 with
    rho <= eps in every row (derivation in the module docstring). Shapes as there."""
    probs = log_probs.exp()  # (C, V)
    vocab = probs.shape[-1]
    gold_prob = probs.gather(-1, labels[:, None])  # (C, 1)
    with torch.no_grad():
        # The stable sort's order: above the gold token = more probable, or as probable with id <= y.
        token_ids = torch.arange(vocab, device=probs.device, dtype=torch.int32)  # (V,), no (C, V) ids
        above = (probs > gold_prob) | ((probs == gold_prob) & (token_ids <= labels[:, None].to(torch.int32)))
    gold_cumulative = (probs * above).sum(dim=-1)  # (C,) = c_y
    gold_excess = torch.relu(gold_cumulative - top_p)

    # k per row: all rows start at TOPK_START; the rows that miss the bound (few, on LM
    # distributions) are redone alone with 4x the k, until every row meets it or k = V.
    rows = torch.arange(probs.shape[0], device=probs.device)  # (C,)
    k = vocab if eps == 0 else min(TOPK_START, vocab)
    groups = []  # (rows, their top-k ids (r, k))
    with torch.no_grad():
        pending, detached = rows, probs.detach()
        while pending.numel():
            index = detached.topk(k, dim=-1, sorted=True).indices  # (r, k) descending
            done = torch.ones_like(pending, dtype=torch.bool)
            if k < vocab:
                done = _tail_share(detached.gather(-1, index), top_p[pending, None], alpha)[-1] <= eps
            groups.append((pending[done], index[done]))
            pending = pending[~done]
            detached = probs.detach()[pending]  # (r', V), only the rows still missing the bound
            k = min(4 * k, vocab)
    heads, tails, order = [], [], []
    for group_rows, index in groups:
        if not group_rows.numel():
            continue
        flat = group_rows[:, None] * vocab + index  # (r, k) int64: r x k, not C x V
        values = probs.reshape(-1)[flat]  # (r, k), differentiable
        head, tail, _ = _tail_share(values, top_p[group_rows, None], alpha, exact=index.shape[-1] == vocab)
        heads.append(head), tails.append(tail), order.append(group_rows)
    inverse = torch.empty_like(rows).scatter_(0, torch.cat(order), rows)  # group order -> row order
    normaliser = (torch.cat(heads) + torch.cat(tails))[inverse] + SOFT_TOP_P_EPS
    return gold_excess, torch.log(normaliser)


def _tail_share(values: torch.Tensor, p_col: torch.Tensor, alpha: float, exact: bool = False):
    """From the top-k probabilities (C, k), descending: `(A, R (a + b) / 2, rho)`, each (C,).

    A = sum_j v_j exp(-alpha relu(C_j - P)) over the top k; the tail (mass R = 1 - C_k) has masks in
    [a, b] = [exp(-alpha relu(1 - P)), exp(-alpha relu(C_k - P))]; rho = R b / (A + e0) bounds its share.
    `exact` (k = V): no tail.
    """
    cumulative = values.cumsum(dim=-1)  # (C, k)
    head = (values * torch.exp(-alpha * torch.relu(cumulative - p_col))).sum(dim=-1)
    if exact:
        zero = torch.zeros_like(head)
        return head, zero, zero
    covered = cumulative[:, -1]
    rest = (1.0 - covered).clamp_min(0.0)
    p = p_col.squeeze(-1)
    upper = torch.exp(-alpha * torch.relu(covered - p))
    lower = torch.exp(-alpha * torch.relu(1.0 - p))
    return head, rest * (lower + upper) / 2, rest * upper / (head + SOFT_TOP_P_EPS)


@torch.no_grad()
def sequence_importance_weights(
    heads, hidden_states, labels, projection: OutputProjection, config: LossConfig, sequence_ids
) -> torch.Tensor:
    """`(N,)` per-position weights: each sequence's ratio `w_s = prod_t q_t[y_t] / p_t[y_t]`, clipped
    at `importance_clip`; with "importance-normalised" first divided by the mean ratio over the
    sequences of this call (self-normalised importance sampling: then the weights depend on which
    sequences share a call; the training loop passes all of a step's sequences on a process in one
    call when the hidden-state cache is on).
    One extra forward pass of the loss (no graph) over all N positions, chunked like the loss.
    """
    n = hidden_states.shape[0]
    if sequence_ids is None or sequence_ids.shape != (n,):
        raise ValueError(
            "sequence importance weighting needs `sequence_ids` (N,): which sequence each position belongs to"
        )
    device = hidden_states.device
    ids = torch.unique(sequence_ids.to(device), return_inverse=True)[1]  # (N,) in [0, S)
    log_ratio = torch.zeros(n, dtype=torch.float32, device=device)
    no_drop = torch.ones(n, device=device)  # the drop only masks the loss, not the ratio
    for start in range(0, n, config.chunk_size):
        stop = min(start + config.chunk_size, n)
        log_ratio[start:stop] = _chunk_losses(
            heads, hidden_states[start:stop], labels[start:stop], projection, no_drop[start:stop], config
        )[-1]
    count = int(ids.max()) + 1 if n else 0
    log_w = torch.zeros(count, dtype=torch.float32, device=device).index_add_(0, ids, log_ratio)  # (S,) log w_s
    if config.sequence_weighting == "importance-normalised":
        # Mean weight 1 over the call's sequences. Measured: this drives T to its floor (docs/results.md),
        # since a sequence whose weight shrinks no longer costs anything once its share is renormalised.
        log_w = log_w - torch.logsumexp(log_w, dim=0) + math.log(count)
    # Clipped in log space; an unnormalised weight far below 1 just underflows towards 0.
    return log_w.clamp(max=math.log(config.importance_clip)).exp()[ids]


def autodeco_loss_sums(
    heads: nn.Module,
    hidden_states: torch.Tensor,
    labels: torch.Tensor,
    projection: OutputProjection,
    *,
    config: LossConfig = LossConfig(),
    uniforms: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    compute_grads: bool = True,
    sequence_ids: torch.Tensor | None = None,
) -> LossSums:
    """Loss sums (and their gradients w.r.t. the trainable head parameters), chunk by chunk.

    Args:
        heads: an `AutoDecoHeads`.
        hidden_states: `(N, H)` final hidden states of the supervised positions only (the input of
            `lm_head`), any dtype. Treated as constants.
        labels: `(N,)` gold next tokens.
        projection: the base model's `lm_head` as the heads see it (`OutputProjection.from_model(model)`,
            or `OutputProjection(weight (V, H), bias (V,) or None, softcap or None)`).
        config: a `LossConfig`.
        uniforms: `(N,)` draws in [0, 1) for the easy-token drop (a position is dropped when its
            draw is below `easy_token_drop`). Pass them to make the drop independent of batching;
            otherwise they are drawn from `generator`.
        compute_grads: False to evaluate only (no graph is built).
        sequence_ids: `(N,)` which sequence each position belongs to (any integer labels; a
            sequence must not be split across calls). Needed by `sequence_weighting="importance"`.

    Returns:
        `LossSums` with sums, counts and, when `compute_grads`, the gradients of each sum.
    """
    if hidden_states.dim() != 2 or labels.shape != hidden_states.shape[:1]:
        raise ValueError(
            f"expected hidden_states (N, H) and labels (N,), got {tuple(hidden_states.shape)} and {tuple(labels.shape)}"
        )
    device = hidden_states.device
    n = hidden_states.shape[0]
    if uniforms is None:
        uniforms = torch.rand(n, generator=generator, device="cpu" if generator is None else generator.device)
    uniforms = uniforms.to(device)
    labels = labels.to(device=device, dtype=torch.long)
    projection = projection.to_float()  # (V, H) fp32: one copy per call (none when already fp32), not per chunk
    params = trainable_parameters(heads, config) if compute_grads else {}
    temperature_params = {k: v for k, v in params.items() if k.startswith("temp_head.")}

    position_weight = None
    if config.sequence_weighting != "none":
        position_weight = sequence_importance_weights(heads, hidden_states, labels, projection, config, sequence_ids)

    zero = torch.zeros((), dtype=torch.float32, device=device)
    sums = LossSums.zeros(device)
    for start in range(0, n, config.chunk_size):
        stop = min(start + config.chunk_size, n)
        with torch.set_grad_enabled(compute_grads):
            loss_t, keep_t, loss_p, temperature, top_p, _ = _chunk_losses(
                heads,
                hidden_states[start:stop],
                labels[start:stop],
                projection,
                uniforms[start:stop],
                config,
                None if position_weight is None else position_weight[start:stop],
            )
            chunk_t, chunk_p = loss_t.sum(), loss_p.sum()
        chunk = LossSums(
            chunk_t.detach(),
            keep_t.sum().float() if config.train_temperature else zero,
            chunk_p.detach(),
            torch.tensor(float(stop - start), device=device),
            temperature.detach().sum(),
            top_p.detach().sum(),
        )
        if compute_grads and config.train_temperature and temperature_params:
            grads = torch.autograd.grad(
                chunk_t, list(temperature_params.values()), retain_graph=config.train_top_p, allow_unused=True
            )
            chunk.temperature_grads = {k: g for k, g in zip(temperature_params, grads) if g is not None}
        if compute_grads and config.train_top_p and params:
            grads = torch.autograd.grad(chunk_p, list(params.values()), allow_unused=True)
            chunk.top_p_grads = {k: g for k, g in zip(params, grads) if g is not None}
        sums.add_(chunk)
    return sums


def normalised_loss(sums: LossSums, config: LossConfig) -> torch.Tensor:
    """`temperature_weight * mean loss_T + top_p_weight * mean loss_P` from (possibly reduced) sums."""
    total = torch.zeros((), dtype=torch.float32, device=sums.top_p_sum.device)
    if config.train_temperature:
        total = total + config.temperature_weight * sums.temperature_sum / sums.temperature_count.clamp_min(1)
    if config.train_top_p:
        total = total + config.top_p_weight * sums.top_p_sum / sums.positions.clamp_min(1)
    if sums.control_count > 0:
        total = total + config.control_weight * sums.control_sum / sums.control_count
    return total


def combine_gradients(sums: LossSums, config: LossConfig) -> dict[str, torch.Tensor]:
    """The gradient of `normalised_loss`, by parameter name, from the gradients of the sums."""
    scale_t = config.temperature_weight / sums.temperature_count.clamp_min(1)
    scale_p = config.top_p_weight / sums.positions.clamp_min(1)
    grads: dict[str, torch.Tensor] = {}
    for key, grad in sums.temperature_grads.items():
        grads[key] = grad * scale_t
    for key, grad in sums.top_p_grads.items():
        grads[key] = grads[key] + grad * scale_p if key in grads else grad * scale_p
    scale_c = config.control_weight / sums.control_count.clamp_min(1)
    for key, grad in sums.control_grads.items():
        grads[key] = grads[key] + grad * scale_c if key in grads else grad * scale_c
    return grads


class _AutoDecoLossFunction(torch.autograd.Function):
    """Autograd wrapper: the forward already computed the gradients; backward scales them."""

    @staticmethod
    def forward(ctx, loss: torch.Tensor, grads: list[torch.Tensor], *params: torch.Tensor) -> torch.Tensor:
        ctx.grads = grads
        return loss.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return (None, None, *(g * grad_output if g is not None else None for g in ctx.grads))


def autodeco_loss(
    heads: nn.Module,
    hidden_states: torch.Tensor,
    labels: torch.Tensor,
    projection: OutputProjection,
    *,
    config: LossConfig = LossConfig(),
    uniforms: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    sequence_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """The AutoDeco loss as a scalar you can `.backward()`; gradients reach the head parameters.

    Shapes: hidden_states `(N, H)`, labels `(N,)`, projection `(V, H)`. See
    `autodeco_loss_sums` for the arguments.

    Example:
        >>> import torch
        >>> from autodeco_lp import AutoDecoConfig, AutoDecoHeads
        >>> from autodeco_lp.inference.capture import OutputProjection
        >>> heads = AutoDecoHeads(AutoDecoConfig(hidden_size=8, vocab_size=11))
        >>> lm_head = OutputProjection(weight=torch.randn(11, 8), bias=None, softcap=None)
        >>> loss = autodeco_loss(heads, torch.randn(5, 8), torch.randint(0, 11, (5,)), lm_head)
        >>> loss.backward()
    """
    sums = autodeco_loss_sums(
        heads,
        hidden_states,
        labels,
        projection,
        config=config,
        uniforms=uniforms,
        generator=generator,
        compute_grads=torch.is_grad_enabled(),
        sequence_ids=sequence_ids,
    )
    loss = normalised_loss(sums, config)
    if not torch.is_grad_enabled():
        return loss
    params = trainable_parameters(heads, config)
    grads = combine_gradients(sums, config)
    return _AutoDecoLossFunction.apply(loss, [grads.get(k) for k in params], *params.values())
