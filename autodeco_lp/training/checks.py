"""What a fit warns about: a schedule that cannot change the heads, and heads that ended pinned at a bound."""

from __future__ import annotations

import math

from autodeco_lp.training.args import FitArgs


def no_op_warning(scheduler, start: int, total: int, warmup_ratio: float) -> str | None:
    """A message when every step from `start` to `total` runs at learning rate 0 (e.g. one step, all warm-up)."""
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if not lambdas or start >= total or not all(fn(s) == 0 for s in range(start, total) for fn in lambdas):
        return None
    warmup = math.ceil(warmup_ratio * total)
    return (
        f"every remaining optimizer step ({total - start} of {total}) runs at learning rate 0 "
        f"(--warmup-ratio {warmup_ratio} makes {warmup} of {total} steps warm-up, which starts "
        "at 0), so the heads will not change. Raise --max-steps or lower --warmup-ratio."
    )


# A head whose mean output at the end of a fit is this close to a bound decodes greedily: T at its floor or P at
# its floor keeps only the argmax, and T at its ceiling of 2 flattens the distribution. (P at its ceiling of 1 is
# not a collapse: it means "do not truncate", what the shipped SmolLM2 heads learned; docs/results.md.)
COLLAPSE_MARGIN = 0.02


def collapse_warning(mean_temperature: float, mean_top_p: float, args: FitArgs) -> str | None:
    """A message when a trained head ended pinned at a bound of its range, else None.

    Saturated sigmoids pass no gradient, so such heads never recover. Where we saw it (Gemma3-270m at lr 1e-3,
    effective batch 32; docs/results.md, second family) a lower learning rate kept both heads inside their range.
    """
    pinned = []
    if args.train_heads in ("both", "temperature"):
        if mean_temperature >= 2.0 - 2 * COLLAPSE_MARGIN:
            pinned.append(f"mean T {mean_temperature:.3f} is at the ceiling of 2")
        elif mean_temperature <= 2 * COLLAPSE_MARGIN:
            pinned.append(f"mean T {mean_temperature:.3f} is at the floor of 0")
    if args.train_heads in ("both", "top_p") and mean_top_p <= COLLAPSE_MARGIN:
        pinned.append(f"mean P {mean_top_p:.3f} is at the floor of 0 (only the argmax survives)")
    if not pinned:
        return None
    return (
        f"the heads collapsed: {'; '.join(pinned)}, so decoding with them is greedy (or uniform) and a saturated "
        f"head gets no gradient to recover. Lower --learning-rate (it was {args.learning_rate:g}; the first "
        "Gemma3-270m heads collapsed at 1e-3, the registry's were fitted at 3e-5) and check the fit's metrics.jsonl."
    )
