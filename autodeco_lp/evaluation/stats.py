"""Paired comparisons of two decodings over the same problems: a bootstrap interval of the mean difference.

Every decoding in `autodeco eval` runs on the same problems, so a comparison is paired: per problem
`d_i = a_i - b_i` with `a_i`, `b_i` that problem's pass@1 (its share of correct samples, averaged
over seeds) under each decoding. The interval is the percentile bootstrap over problems: resample
the n problems with replacement `resamples` times (a fixed seed, so reports are reproducible), take
the mean of the resampled `d`, and report the `(1 - level) / 2` and `(1 + level) / 2` quantiles. It
treats problems as the random unit (the population the reported numbers generalise to); the
sampling noise within a problem is inside each `d_i`. A difference is called significant when the
interval excludes 0. With few distinct problems (a small task space) the interval is too narrow for
the population and the docs must say how many problems were distinct.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

DEFAULT_RESAMPLES = 10_000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class PairedInterval:
    mean: float  # mean of a - b over problems
    low: float
    high: float
    problems: int
    level: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def paired_bootstrap(
    a: list[float], b: list[float], resamples: int = DEFAULT_RESAMPLES, level: float = DEFAULT_LEVEL, seed: int = 0
) -> PairedInterval:
    """Percentile-bootstrap interval of `mean(a - b)` over paired problems.

    Args:
        a, b: per-problem scores of two decodings on the same problems, in the same order.
        resamples: bootstrap resamples (>= 100).
        level: coverage of the interval, in (0, 1).
        seed: seed of the resampling (same inputs and seed -> same interval).

    Example:
        >>> interval = paired_bootstrap([1.0, 0.5, 1.0, 0.75], [0.5, 0.5, 0.75, 0.5])
        >>> round(interval.mean, 4), interval.significant
        (0.25, True)
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"`a` and `b` have to be non-empty and paired, but have {len(a)} and {len(b)} problems")
    if resamples < 100:
        raise ValueError(f"`resamples` has to be >= 100, but is {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"`level` has to be in (0, 1), but is {level}")
    diff = torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)  # (n,)
    n = diff.shape[0]
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, n, (resamples, n), generator=gen)  # (resamples, n)
    means = diff[picks].mean(dim=1)  # (resamples,)
    quantiles = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return PairedInterval(float(diff.mean()), float(quantiles[0]), float(quantiles[1]), n, level)
