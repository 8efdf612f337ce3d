"""The expected worst sample over twice the data: the margin a cosine budget keeps for unseen samples."""

from __future__ import annotations

import itertools
import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgec.quant.fallback import Budget, Evaluation
from edgec.quant.tail import EXTRAPOLATION, MIN_SAMPLES, expected_worst_cosine, half_sample_growth


def _brute_force_growth(drifts: list[float]) -> float:
    """The worst of all drifts over the mean worst of every half (k = n // 2), by enumeration."""
    halves = itertools.combinations(drifts, len(drifts) // 2)
    return max(drifts) / statistics.fmean(max(half) for half in halves)


@given(st.lists(st.floats(min_value=1e-6, max_value=1.0), min_size=MIN_SAMPLES, max_size=11))
def test_growth_is_the_worst_over_the_expected_worst_of_a_random_half(drifts: list[float]) -> None:
    assert half_sample_growth(drifts) == pytest.approx(_brute_force_growth(drifts), rel=1e-9)
    assert half_sample_growth(drifts) >= 1.0 - 1e-12


def test_samples_that_drift_alike_keep_their_minimum() -> None:
    cosines = [0.995] * 40
    assert half_sample_growth([1 - c for c in cosines]) == pytest.approx(1.0)
    assert expected_worst_cosine(cosines) == pytest.approx(0.995)


def test_one_sample_that_stands_out_moves_the_expected_worst_below_the_seen_minimum() -> None:
    """MiniLM's shape: the bulk drifts ~0.002, one short sentence 0.0095; seen minimum 0.9905 meets 0.99."""
    cosines = [0.998] * 25 + [0.9905]
    expected = expected_worst_cosine(cosines)
    assert expected < 0.99 < min(cosines)
    # the worst of a random half of 26 holds the outlier with probability 1/2; the same growth per doubling
    growth = 0.0095 / (0.5 * 0.0095 + 0.5 * 0.002)
    assert expected == pytest.approx(1 - 0.0095 * growth ** math.log2(EXTRAPOLATION), abs=1e-9)


def test_too_few_samples_measure_no_growth_and_broken_outputs_are_nan() -> None:
    assert expected_worst_cosine([0.99] * (MIN_SAMPLES - 1)) is None
    assert half_sample_growth([0.5] * (MIN_SAMPLES - 1)) == 1.0
    assert half_sample_growth([0.0] * 8) == 1.0
    assert math.isnan(expected_worst_cosine([0.99, 0.98, math.nan, 0.97]))


def test_an_evaluation_meets_a_cosine_bar_on_its_expected_worst_when_measured() -> None:
    bar = Budget(min_cosine=0.99)
    assert Evaluation(0.995, None).meets(bar)
    assert not Evaluation(0.995, None, expected_worst_cosine=0.989).meets(bar)
    assert Evaluation(0.995, None, expected_worst_cosine=0.991).meets(bar)
    assert Evaluation(0.995, None, 0.989).score(bar) < Evaluation(0.993, None, 0.991).score(bar)
    assert Evaluation(0.995, None, 0.989).to_dict()["expected_worst_cosine"] == 0.989
    assert "expected_worst_cosine" not in Evaluation(0.995, None).to_dict()
    # an accuracy bar is the samples' own figure: nothing is extrapolated
    assert Evaluation(0.5, 0.4, 0.4).meets(Budget(max_accuracy_drop_pp=0.5))
