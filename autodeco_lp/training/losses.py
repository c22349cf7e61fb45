"""AutoDeco training losses, computed in chunks of positions so memory stays O(chunk x V).

`LossConfig` holds every option of the objective (the `autodeco-fit` flags are built from its fields).
The objective, sequence importance weighting, the exact and the sort-free ("topk") soft top-p with its
error bound and measurements, and the memory budget are derived in docs/design.md ("The training
objective"); the names below (c_y, S, A, R, a, b, rho) are that page's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn

from autodeco_lp.hub.options_file import flag
from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.inference.features import DEFAULT_ALPHA, MIN_TEMPERATURE, SOFT_TOP_P_EPS, rank_order
from autodeco_lp.training.ranking import DEFAULT_P_MARGIN, DEFAULT_T_MARGIN

DEFAULT_EASY_TOKEN_DROP = 0.6
DEFAULT_CHUNK_SIZE = 256
SEQUENCE_WEIGHTINGS = ("none", "importance", "importance-normalised")
SOFT_TOP_P_METHODS = ("exact", "topk")
# Bound on the tail's relative share rho of the soft top-p normaliser in the "topk" method (docs/design.md).
DEFAULT_TOPK_EPS = 1e-3
# First k tried by the "topk" method; multiplied by 4 (capped at V) until every row of a chunk meets the bound.
TOPK_START = 256


def _option(default: Any, help_text: str, flag: str | None = None, cli: bool = True) -> Any:
    """A `LossConfig` field: its default, its `autodeco-fit` help, and its flag where that differs from the
    field's name (the flags are older than the fields, and command lines and config files use them)."""
    metadata: dict[str, Any] = {"help": help_text, "cli": cli}
    if flag is not None:
        metadata["flag"] = flag
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class LossConfig:
    """Every option of the AutoDeco objective; the defaults are the released heads' objective.

    The `autodeco-fit` flags are built from these fields (help in each field's metadata); `--recipe`
    overrides some of them, and a flag or `--config` entry overrides the recipe. Derivations: docs/design.md.
    """

    alpha: float = _option(DEFAULT_ALPHA, "Sharpness of the soft top-p mask exp(-alpha * relu(c - P)).")
    easy_token_drop: float = _option(
        DEFAULT_EASY_TOKEN_DROP,
        "Probability of dropping a position whose base argmax is already the gold token from the temperature loss.",
    )
    dft: bool = _option(
        True, "Weight each token's loss by the base model's probability of it (Dynamic Fine-Tuning, detached)."
    )
    temperature_weight: float = _option(
        1.0, "Weight of the temperature loss in the total.", flag="temperature-loss-weight"
    )
    top_p_weight: float = _option(1.0, "Weight of the soft top-p loss in the total.", flag="top-p-loss-weight")
    # Which heads learn (a head that does not learn adds no loss); `autodeco-fit` sets them from --train-heads.
    train_temperature: bool = _option(True, "Train the temperature head (from --train-heads).", cli=False)
    train_top_p: bool = _option(True, "Train the top-p head (from --train-heads).", cli=False)
    top_p_loss_trains_temperature: bool = _option(
        True, "Let the top-p loss also move the temperature head through T (released behaviour; off detaches T)."
    )
    chunk_size: int = _option(
        DEFAULT_CHUNK_SIZE,
        "Positions per loss chunk; peak loss memory is about 60 bytes x chunk x vocab.",
        flag="loss-chunk-size",
    )
    sequence_weighting: str = _option(
        "none",
        "none (released objective), importance (weight each sequence by its clipped probability ratio heads/base, "
        "so training follows task success rather than token likelihood) or "
        "importance-normalised (the same, self-normalised per step); see docs/design.md.",
    )
    importance_clip: float = _option(10.0, "Upper bound (>= 1) of a sequence's importance weight.")
    control_weight: float = _option(
        1.0, "Weight of the plain-language control ranking loss in the total (with --control-commands)."
    )
    control_t_margin: float = _option(DEFAULT_T_MARGIN, "Margin of the control ranking loss on the mean temperature.")
    control_p_margin: float = _option(DEFAULT_P_MARGIN, "Margin of the control ranking loss on the mean top-p.")
    soft_top_p: str = _option(
        "exact",
        "Soft top-p loss: exact (sorts the vocabulary) or topk (sort-free, within --topk-eps / 2 nats per position "
        "of exact; bound derived in docs/design.md).",
    )
    topk_eps: float = _option(
        DEFAULT_TOPK_EPS,
        "Bound of --soft-top-p topk, in [0, 1): per position its loss is within topk-eps / 2 (times the DFT "
        "weight) of the exact one; 0 gives the exact loss.",
    )

    def __post_init__(self) -> None:
        checks = (
            ("soft_top_p", self.soft_top_p in SOFT_TOP_P_METHODS, f"one of {', '.join(SOFT_TOP_P_METHODS)}"),
            ("topk_eps", 0.0 <= self.topk_eps < 1.0, "in [0, 1)"),
            (
                "sequence_weighting",
                self.sequence_weighting in SEQUENCE_WEIGHTINGS,
                f"one of {', '.join(SEQUENCE_WEIGHTINGS)}",
            ),
            ("importance_clip", self.importance_clip >= 1.0, ">= 1"),
            ("alpha", self.alpha > 0, "a positive float"),
            ("easy_token_drop", 0.0 <= self.easy_token_drop <= 1.0, "in [0, 1]"),
            ("chunk_size", self.chunk_size >= 1, "a positive int"),
            *((name, getattr(self, name) >= 0, ">= 0") for name in self.NON_NEGATIVE),
        )
        for name, ok, requirement in checks:
            if not ok:
                raise ValueError(f"{self.named(name)} has to be {requirement}, but is {getattr(self, name)!r}")
        if not (self.train_temperature or self.train_top_p):
            raise ValueError("nothing to train: set `train_temperature` or `train_top_p` (`--train-heads`).")

    NON_NEGATIVE = ("temperature_weight", "top_p_weight", "control_weight", "control_t_margin", "control_p_margin")

    @classmethod
    def named(cls, name: str) -> str:
        """How messages name field `name`: the field and its `autodeco-fit` flag, e.g.
        "`chunk_size` (--loss-chunk-size)"."""
        return f"`{name}` ({flag(next(f for f in fields(cls) if f.name == name))})"


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
    `method` "exact" sorts; "topk" is within `eps / 2` of it in every row (docs/design.md).
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
    rho <= eps in every row (derivation in docs/design.md). Shapes as there."""
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
