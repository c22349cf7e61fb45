"""Paired bootstrap intervals over problems (evaluation/stats.py) and their place in `autodeco eval`'s report."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autodeco_lp.evaluation.stats import paired_bootstrap
from autodeco_lp.evaluation.summary import paired_comparisons


def test_identical_decodings_give_a_zero_interval_and_a_constant_shift_is_exact():
    a = [0.1, 0.5, 0.9, 0.25]
    same = paired_bootstrap(a, a)
    assert (same.mean, same.low, same.high, same.significant) == (0.0, 0.0, 0.0, False)
    shifted = paired_bootstrap([x + 0.125 for x in a], a)
    assert shifted.mean == pytest.approx(0.125)
    assert shifted.low == pytest.approx(0.125) and shifted.high == pytest.approx(0.125) and shifted.significant


def test_interval_is_reproducible_and_covers_the_truth_about_as_often_as_stated():
    rng = random.Random(0)
    covered = 0
    for trial in range(60):
        # Per-problem pass rates of two decodings that differ by +0.05 on average, noisy per problem.
        base = [rng.random() for _ in range(200)]
        other = [min(1.0, max(0.0, x + 0.05 + rng.gauss(0, 0.2))) for x in base]
        true_mean = sum(o - b for o, b in zip(other, base)) / 200  # the population here is these problems
        interval = paired_bootstrap(other, base, resamples=2000, seed=trial)
        assert interval == paired_bootstrap(other, base, resamples=2000, seed=trial)
        covered += interval.low <= true_mean <= interval.high
    assert covered == 60  # the sample mean always lies inside its own percentile interval
    # And against a fresh sample of problems, coverage of the population mean (+0.05 before clipping) is ~95%.
    hits = 0
    for trial in range(200):
        base = [rng.random() * 0.8 for _ in range(200)]
        other = [x + 0.05 + rng.gauss(0, 0.2) for x in base]
        interval = paired_bootstrap(other, base, resamples=1000, seed=trial)
        hits += interval.low <= 0.05 <= interval.high
    assert 0.88 <= hits / 200 <= 0.99


@given(st.lists(st.floats(0, 1), min_size=1, max_size=30), st.floats(-0.5, 0.5))
def test_interval_contains_the_mean_difference(scores, shift):
    other = [s + shift * (i % 2) for i, s in enumerate(scores)]
    interval = paired_bootstrap(other, scores, resamples=200)
    assert interval.low - 1e-12 <= interval.mean <= interval.high + 1e-12


@pytest.mark.parametrize(
    "a, b, kwargs, match",
    [
        ([1.0], [1.0, 0.0], {}, "paired, but have 1 and 2 problems"),
        ([], [], {}, "non-empty"),
        ([1.0], [0.0], {"resamples": 10}, "`resamples` has to be >= 100, but is 10"),
        ([1.0], [0.0], {"level": 1.0}, r"`level` has to be in \(0, 1\), but is 1.0"),
    ],
)
def test_bad_arguments_are_refused(a, b, kwargs, match):
    with pytest.raises(ValueError, match=match):
        paired_bootstrap(a, b, **kwargs)


def test_report_compares_autodeco_with_every_other_method():
    results = {
        "autodeco": {"per_problem": [1.0, 1.0, 0.5, 1.0]},
        "greedy": {"per_problem": [0.0, 0.0, 0.0, 0.0]},
        "meanshift": {"per_problem": [1.0, 1.0, 0.5, 1.0]},
    }
    comparisons = paired_comparisons(results)
    assert set(comparisons) == {"autodeco - greedy", "autodeco - meanshift"}
    assert comparisons["autodeco - greedy"]["mean"] == pytest.approx(0.875)
    assert comparisons["autodeco - greedy"]["significant"] is True
    assert comparisons["autodeco - meanshift"]["significant"] is False
    assert paired_comparisons({"greedy": results["greedy"]}) == {}
