"""Pure tensor math shared by the heads, the processor, the vLLM plugin and the losses. No model code here.

- `final_logits` / `apply_softcap`: the one way from final hidden states to the logits the heads see.
- `distribution_statistics`: the top-p head's four features.
- `hard_top_p_filter`: the nucleus applied at decoding time.
- `rank_order`: the stable descending sort the filter and the exact loss share (fast on CPU).
- `soft_top_p_mask` / `soft_top_p_probs`: the paper's soft top-p written plainly over `(..., V)`. This
  is the *reference*: `training/losses.py` computes the same quantity in log space, chunk by chunk,
  and the tests and `benchmarks/bench_loss.py` compare it with this function.

Every function takes logits of shape `(..., V)` and per-row parameters of shape `(...)` (or a
Python float), computes in fp32 whatever the input dtype, and never returns NaN or inf for
finite parameters: `+inf` logits count as the largest float, `NaN` logits as `-inf`, and a row
whose logits are all `-inf` (everything masked) gives an all-zero distribution instead of NaN.

Conventions (the AutoDeco paper's method):
- temperature scaling divides by `max(T, MIN_TEMPERATURE)`;
- the hard nucleus filter is transformers' `TopPLogitsWarper` with a per-row p;
- the soft top-p mask is `exp(-alpha * relu(c - P))` with `c` the inclusive cumulative sum of
  the probabilities sorted in descending order. As alpha grows it keeps exactly the tokens whose
  inclusive cumulative probability is <= P (the "strict nucleus"); the hard filter also keeps the
  one token that crosses P. They agree whenever P falls on a cumulative boundary.
"""

from __future__ import annotations

import functools

import torch

from autodeco_lp.inference.row_sort import sort_rows_inplace

# Floor applied to predicted temperatures before dividing logits. 1e-2 is the floor the
# authors' training loss uses (`clamp_min(T, 1e-2)`); below it sampling is greedy in practice.
MIN_TEMPERATURE = 1e-2
# The soft top-p sharpness used by the paper.
DEFAULT_ALPHA = 30.0
# Added to the soft distribution's normaliser, as in the paper.
SOFT_TOP_P_EPS = 1e-8
# The released heads compute the statistics from softmax(logits / (T + STATS_TEMPERATURE_EPS)).
STATS_TEMPERATURE_EPS = 1e-8

_FP32_MAX = torch.finfo(torch.float32).max


def _per_row(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A per-row parameter as an fp32 tensor of shape `(..., 1)` that broadcasts against `(..., V)`.

    Differentiable: a tensor that needs grad keeps its graph through the dtype/device cast.
    """
    return torch.as_tensor(value, dtype=torch.float32, device=like.device).unsqueeze(-1)


def apply_softcap(logits: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """The final logit soft-capping some models apply (Gemma 2/3: `tanh(l / c) * c`); identity without one."""
    return torch.tanh(logits / softcap) * softcap if softcap else logits


def final_logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, softcap: float | None = None
) -> torch.Tensor:
    """The logits the heads see for final hidden states: `lm_head` (weight and bias), then the softcap.

    The one hidden-to-logits function: inference (for rows the hook did not capture), the losses, the
    ranking loss, the diagnostics and the evaluation all call it, so the top-p head's statistics are
    computed from the same logits everywhere.

    Shapes: hidden `(..., H)`, weight `(V, H)`, bias `(V,)` -> `(..., V)` fp32.
    """
    logits = torch.nn.functional.linear(
        hidden.float(), weight.float(), bias.float() if bias is not None else None
    )  # (..., V)
    return apply_softcap(logits, softcap)


def sanitize_logits(logits: torch.Tensor) -> torch.Tensor:
    """fp32 copy of `logits` (..., V) with NaN -> -inf and +inf -> the largest finite float."""
    return torch.nan_to_num(logits.float(), nan=-float("inf"), posinf=_FP32_MAX, neginf=-float("inf"))


def safe_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim in fp32 that returns zeros (not NaN) for an all `-inf` row.

    Shapes: `(..., V) -> (..., V)`.
    """
    # torch.softmax gives NaN only for a row with no finite maximum (all -inf): zero it.
    return torch.softmax(sanitize_logits(logits), dim=-1).nan_to_num(nan=0.0)


def scale_by_temperature(
    logits: torch.Tensor, temperature: torch.Tensor | float, min_temperature: float = MIN_TEMPERATURE
) -> torch.Tensor:
    """`logits / max(T, min_temperature)` in fp32. Shapes: logits `(..., V)`, T `(...)` -> `(..., V)`."""
    t = _per_row(temperature, logits).clamp_min(min_temperature)
    return logits.float() / t


_ID_BITS = 31  # token ids below 2**31 (any vocabulary); the float's 32 order bits sit above them
_ID_MASK = (1 << _ID_BITS) - 1


def rank_order(values: torch.Tensor, descending: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.sort(values, dim=-1, descending=True, stable=True)`, 4-12x faster on a CPU.

    Ranks every row from largest to smallest; equal values are ranked by token id (the lower id
    first), NaN above +inf and -0.0 equal to +0.0, exactly as the stable torch sort. Returns
    `(sorted_values, order)`: fp32 `(..., V)` and int64 `(..., V)` with
    `sorted_values == values.gather(-1, order)`; gradients flow through the gather.
    `descending=False` returns the exact reverse (smallest first; equal values by decreasing id).

    Two paths, one result (the same permutation, bit for bit):
    - on a CPU: `torch.sort` with indices is the most expensive step of nucleus filtering and of the
      exact soft top-p loss there (about 3 ms per row at V = 49152, ten times the top-p head), so each
      value becomes one int64 key, `(reversed order of the float's bits) << 31 | token id`, and numpy's
      SIMD integer sort orders the keys in place, blocks of rows on a pool sized like torch's threads
      (`row_sort.py`), through a custom operator, so that `torch.compile` keeps it in its graph;
    - on any other device (CUDA): `torch.sort(stable=True)` itself. Measured on an H200 at
      64 x 152064, the integer keys took 1.73 ms against 0.73 ms for the stable sort.
    Neither path branches on the values (no host-device synchronisation).
    """
    values = values.float()
    if values.device.type != "cpu":
        return _torch_rank_order(values, descending)
    vocab = values.shape[-1]
    if vocab > _ID_MASK:
        raise ValueError(f"rank_order supports up to {_ID_MASK} values per row, but got {vocab}")
    with torch.no_grad():
        # Work on a copy we own, in place where possible: each (..., V) temporary costs page faults at this size.
        canonical = values + 0.0  # -0.0 + 0.0 = +0.0, so the zeros tie
        # One positive NaN bit pattern, so every NaN ranks above +inf as in torch.sort. Unconditional:
        # testing `isnan().any()` first would read a device value back to Python at every call.
        canonical.masked_fill_(canonical.isnan(), float("nan"))
        bits = canonical.view(torch.int32)  # (..., V)
        bits ^= (bits >> 31) & 0x7FFFFFFF  # signed int32 now ordered like the floats
        if descending:
            bits.bitwise_not_()  # reversed: larger float -> smaller int
        keys = bits.to(torch.int64).bitwise_left_shift_(_ID_BITS)  # the token id goes in the low 31 bits
        # ascending: the exact reverse, ties by decreasing id. Built once per width eagerly; a compiled graph
        # builds it inside (dynamo does not trace through a cache).
        keys |= _token_ids(vocab, descending) if torch.compiler.is_compiling() else _cached_token_ids(vocab, descending)
        _sort_int64_rows(keys)  # in place
        order = keys.bitwise_and_(_ID_MASK)  # (..., V) int64
        if not descending:
            order ^= _ID_MASK  # back from MASK - id (= MASK ^ id, as id <= MASK) to the token id
    return values.gather(-1, order), order


def _token_ids(vocab: int, descending: bool) -> torch.Tensor:
    """The low 31 bits of the CPU keys: `id` (descending) or `MASK - id` (ascending), `(V,)` int64."""
    ids = torch.arange(vocab, dtype=torch.int64)
    return ids if descending else _ID_MASK - ids


_cached_token_ids = functools.cache(_token_ids)  # read-only: `keys |= ids` never writes it


@torch.library.custom_op("autodeco_lp::sort_int64_rows", mutates_args=("keys",), device_types="cpu")
def _sort_int64_rows(keys: torch.Tensor) -> None:
    """Sort each row of a CPU int64 tensor `(..., V)` in place with numpy (its SIMD integer sort).

    A custom operator rather than a plain call: `torch.compile` cannot trace into numpy, but it keeps an
    operator in its graph (functionalised: the compiled graph sorts a copy), so the compiled step sorts
    the same keys as the eager one with no graph break.
    """
    sort_rows_inplace(keys.numpy())  # on the tensor's memory, rows spread over torch's threads


def _torch_rank_order(values: torch.Tensor, descending: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`rank_order` off the CPU, with `torch.sort(stable=True)`: fp32 `(..., V)` -> (sorted values, order).

    The stable descending sort already ranks NaN first, ties -0.0 with +0.0 and keeps equal values in
    increasing id order; the ascending order is its exact reverse (equal values by decreasing id), which
    a stable ascending sort is not, hence the flip.
    """
    sorted_values, order = torch.sort(values, dim=-1, descending=True, stable=True)  # (..., V) each
    if descending:
        return sorted_values, order
    return sorted_values.flip(-1), order.flip(-1)


def hard_top_p_filter(
    scores: torch.Tensor,
    top_p: torch.Tensor | float,
    min_tokens_to_keep: int = 1,
    filter_value: float = -float("inf"),
) -> torch.Tensor:
    """Nucleus filtering with a per-row p, identical to transformers' `TopPLogitsWarper`.

    Keeps the smallest set of most probable tokens whose probabilities add up to at least p
    (and at least `min_tokens_to_keep` tokens); the others get `filter_value`. Returns a new
    tensor; `scores` is never modified. Equal scores at the nucleus boundary: the lower token id
    is kept (as the losses rank them); transformers' unstable sort leaves that order unspecified.
    The softmax and cumulative sum run over the same ascending values as transformers', so every
    other decision is bit-for-bit its own. Callers that know P = 1 in advance (a static P = 1,
    AutoDeco without its top-p head) skip the call, as `generate` adds no top-p warper at 1.

    Shapes: scores `(..., V)`, top_p `(...)` or a float -> `(..., V)` (fp32).
    """
    scores = scores.float()
    p = _per_row(top_p, scores)
    # ascending, as transformers: the same values in the same order (ties aside), so the same softmax and sums
    sorted_logits, sorted_indices = rank_order(scores, descending=False)
    # Plain softmax, as transformers: an all -inf row gives NaN sums, removes nothing, stays -inf.
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_remove = cumulative <= (1 - p)
    sorted_remove[..., -min_tokens_to_keep:] = False
    remove = sorted_remove.scatter(-1, sorted_indices, sorted_remove)
    return scores.masked_fill(remove, filter_value)


def soft_top_p_mask(probs: torch.Tensor, top_p: torch.Tensor | float, alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """Differentiable nucleus mask `exp(-alpha * relu(c - P))`, returned in vocabulary order.

    `c` is the inclusive cumulative sum of `probs` sorted in descending order. The mask is in
    (0, 1], equals 1 on tokens whose cumulative probability is <= P and decays beyond.
    Gradients flow to `probs` and `top_p`.

    Shapes: probs `(..., V)`, top_p `(...)` or a float -> `(..., V)` (fp32).
    """
    # stable: equal probabilities ordered by token id, as the losses rank them
    sorted_probs, sorted_indices = rank_order(probs)
    cumulative = sorted_probs.cumsum(dim=-1)  # (..., V), inclusive
    sorted_mask = torch.exp(-alpha * torch.relu(cumulative - _per_row(top_p, probs)))
    # scatter (not gather) back to vocabulary order; differentiable in sorted_mask.
    return torch.empty_like(sorted_mask).scatter(-1, sorted_indices, sorted_mask)


def soft_top_p_probs(
    logits: torch.Tensor,
    temperature: torch.Tensor | float,
    top_p: torch.Tensor | float,
    alpha: float = DEFAULT_ALPHA,
    eps: float = SOFT_TOP_P_EPS,
    min_temperature: float = MIN_TEMPERATURE,
) -> torch.Tensor:
    """The paper's soft top-p distribution `p * m / (sum(p * m) + eps)` with `p = softmax(l / T)`.

    Shapes: logits `(..., V)`, temperature and top_p `(...)` or floats -> `(..., V)` (fp32).
    """
    probs = safe_softmax(scale_by_temperature(logits, temperature, min_temperature))
    weighted = probs * soft_top_p_mask(probs, top_p, alpha)
    return weighted / (weighted.sum(dim=-1, keepdim=True) + eps)


def distribution_statistics(logits: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    """The top-p head's four statistics of `q = softmax(logits / (T + 1e-8))`, as released.

    Columns, in order: `max_prob`, `entropy = -(q * log(q + 1e-8)).sum()`, `prob_var = q.var()`
    (unbiased, over the full width V), `top5_sum`.

    Shapes: logits `(..., V)`, temperature `(...)` or a float -> `(..., 4)` (fp32).
    """
    t = _per_row(temperature, logits)
    # The plain formulas below, computed in place where it is free: every (rows, V) temporary
    # costs page faults at V = 49k (values are bit-for-bit those of the plain expressions).
    scratch = logits.float() / (t + STATS_TEMPERATURE_EPS)  # (..., V)
    scratch.nan_to_num_(nan=-float("inf"), posinf=_FP32_MAX, neginf=-float("inf"))  # = sanitize_logits
    q = torch.softmax(scratch, dim=-1).nan_to_num_(nan=0.0)  # = safe_softmax(logits / (T + 1e-8))
    max_prob = q.amax(dim=-1)
    entropy = -torch.add(q, 1e-8, out=scratch).log_().mul_(q).sum(dim=-1)  # -(q * log(q + 1e-8)).sum()
    # Unbiased variance from sums (3x faster than q.var on CPU at V = 49k; same value to ~1e-12).
    width = q.shape[-1]
    square_sum = torch.mul(q, q, out=scratch).sum(dim=-1)
    prob_var = (square_sum - q.sum(dim=-1).square() / width) / max(width - 1, 1)
    top5_sum = q.topk(min(5, q.shape[-1]), dim=-1).values.sum(dim=-1)
    return torch.stack([max_prob, entropy, prob_var, top5_sum], dim=-1)
