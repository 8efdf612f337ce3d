"""Tests for edgec.quant.observers: MinMax, the streaming histogram and the percentile observer.

References are hand-computed ranges and `numpy.quantile` over the same samples.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgec.errors import TargetError
from edgec.quant.observers import MinMaxObserver, PercentileObserver, StreamingHistogram, make_observer

#: A histogram quantile may be off by the width of the bins it interpolates across.
QUANTILE_TOL_BINS = 2


# --------------------------------------------------------------------------------------------
# MinMaxObserver
# --------------------------------------------------------------------------------------------


def test_minmax_over_several_updates() -> None:
    obs = MinMaxObserver()
    obs.update(np.array([0.5, 1.0, 2.0], np.float32))
    assert obs.range() == (0.5, 2.0)
    obs.update(np.array([[-3.0, 1.5]], np.float32))
    assert obs.range() == (-3.0, 2.0)
    obs.update(np.array([7.25], np.float32))
    assert obs.range() == (-3.0, 7.25)
    obs.update(np.array([0.0], np.float32))  # inside: no change
    assert obs.range() == (-3.0, 7.25)


def test_minmax_ignores_nan_and_inf() -> None:
    obs = MinMaxObserver()
    obs.update(np.array([np.nan, 1.0, np.inf, -2.0, -np.inf], np.float32))
    assert obs.range() == (-2.0, 1.0)
    obs.update(np.array([np.nan, np.nan], np.float32))
    assert obs.range() == (-2.0, 1.0)


def test_minmax_nothing_finite_is_zero_range() -> None:
    obs = MinMaxObserver()
    assert obs.range() == (0.0, 0.0)
    obs.update(np.array([np.nan, np.inf], np.float32))
    obs.update(np.zeros((0, 3), np.float32))
    assert obs.range() == (0.0, 0.0)


def test_minmax_accepts_integer_tensors() -> None:
    obs = MinMaxObserver()
    obs.update(np.array([3, -4, 9], np.int64))
    assert obs.range() == (-4.0, 9.0)


@settings(max_examples=100, deadline=None)
@given(chunks=st.lists(st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=10),
                       min_size=1, max_size=6))
def test_minmax_property_equals_global_min_max(chunks: list[list[float]]) -> None:
    obs = MinMaxObserver()
    for chunk in chunks:
        obs.update(np.array(chunk, np.float32))
    everything = np.concatenate([np.array(c, np.float32) for c in chunks])
    assert obs.range() == (float(everything.min()), float(everything.max()))


# --------------------------------------------------------------------------------------------
# StreamingHistogram
# --------------------------------------------------------------------------------------------


def test_histogram_bins_must_be_multiple_of_4() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        StreamingHistogram(bins=10)


def test_histogram_memory_stays_bins_counters_as_range_grows() -> None:
    hist = StreamingHistogram(bins=64)
    rng = np.random.default_rng(0)
    total = 0
    for step in range(40):
        chunk = rng.standard_normal(500) * (1.5**step)  # range grows by ~1e7 over the run
        hist.add(chunk)
        total += chunk.size
        assert hist.counts.shape == (64,)
    assert hist.counts.sum() == total  # merging bins never loses a count
    assert hist.limit >= np.abs(chunk).max()


def test_histogram_doubling_keeps_counts_in_place() -> None:
    hist = StreamingHistogram(bins=8)
    hist.add(np.array([-1.0, 0.1, 0.9]))  # limit 1, width 0.25
    assert hist.limit == 1.0
    hist.add(np.array([1.5]))  # limit doubles to 2, width 0.5
    assert hist.limit == 2.0
    # hand-binned: [-1, -0.5) holds -1.0, [0, 0.5) holds 0.1, [0.5, 1) holds 0.9, [1.5, 2] holds 1.5
    assert hist.counts.tolist() == [0, 0, 1, 0, 1, 1, 0, 1]
    np.testing.assert_allclose(hist.edges(), np.linspace(-2, 2, 9))
    assert hist.counts.sum() == 4


def test_histogram_ignores_non_finite_and_empty() -> None:
    hist = StreamingHistogram(bins=16)
    hist.add(np.array([np.nan, np.inf]))
    hist.add(np.zeros(0))
    assert hist.counts.sum() == 0 and hist.quantile(0.5) == 0.0
    hist.add(np.array([np.nan, 1.0, -np.inf]))
    assert hist.counts.sum() == 1


def test_histogram_quantile_matches_numpy_on_chunked_normal() -> None:
    rng = np.random.default_rng(42)
    data = rng.standard_normal(200_000)
    hist = StreamingHistogram(bins=2048)
    for chunk in np.array_split(data, 37):
        hist.add(chunk)
    width = 2 * hist.limit / hist.bins
    for q in (0.0001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.9999):
        assert abs(hist.quantile(q) - float(np.quantile(data, q))) <= QUANTILE_TOL_BINS * width, q


def test_histogram_quantile_after_growth_matches_numpy() -> None:
    """Chunks with growing spread force several doublings; quantiles stay within bin widths."""
    rng = np.random.default_rng(7)
    chunks = [rng.standard_normal(20_000) * scale for scale in (0.01, 0.1, 1.0, 3.0)]
    hist = StreamingHistogram(bins=512)
    for chunk in chunks:
        hist.add(chunk)
    data = np.concatenate(chunks)
    width = 2 * hist.limit / hist.bins
    for q in (0.01, 0.25, 0.5, 0.75, 0.99):
        assert abs(hist.quantile(q) - float(np.quantile(data, q))) <= QUANTILE_TOL_BINS * width, q


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), spread=st.floats(1e-3, 1e3), q=st.floats(0.01, 0.99),
       chunks=st.integers(1, 8))
def test_histogram_quantile_property(seed: int, spread: float, q: float, chunks: int) -> None:
    data = np.random.default_rng(seed).standard_normal(4000) * spread
    hist = StreamingHistogram(bins=256)
    for chunk in np.array_split(data, chunks):
        hist.add(chunk)
    width = 2 * hist.limit / hist.bins
    assert abs(hist.quantile(q) - float(np.quantile(data, q))) <= QUANTILE_TOL_BINS * width
    assert -hist.limit <= hist.quantile(q) <= hist.limit


# --------------------------------------------------------------------------------------------
# PercentileObserver
# --------------------------------------------------------------------------------------------


def test_percentile_clips_rare_outlier_that_minmax_keeps() -> None:
    rng = np.random.default_rng(3)
    data = rng.standard_normal(100_000).astype(np.float32)
    data[12345] = 1000.0
    minmax, pct = MinMaxObserver(), PercentileObserver(99.99)
    for chunk in np.array_split(data, 10):
        minmax.update(chunk)
        pct.update(chunk)
    assert minmax.range()[1] == 1000.0
    lo, hi = pct.range()
    # the histogram's resolution after growing to cover 1000 is limit / (bins / 2) ~ 1
    width = 2 * pct.histogram.limit / pct.histogram.bins
    assert hi < 10.0
    assert abs(hi - float(np.quantile(data, 0.9999))) <= QUANTILE_TOL_BINS * width
    assert abs(lo - float(np.quantile(data, 0.0001))) <= QUANTILE_TOL_BINS * width
    assert lo < 0 < hi


def test_percentile_100_equals_minmax() -> None:
    rng = np.random.default_rng(4)
    pct, minmax = PercentileObserver(100.0, bins=128), MinMaxObserver()
    for _ in range(5):
        x = rng.uniform(-2.0, 5.0, 1000)
        pct.update(x)
        minmax.update(x)
    assert pct.range() == minmax.range()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), percentile=st.floats(90.0, 100.0), shift=st.floats(-5, 5),
       chunks=st.integers(1, 5))
def test_percentile_never_wider_than_minmax(seed: int, percentile: float, shift: float, chunks: int) -> None:
    data = np.random.default_rng(seed).standard_normal(2000) + shift
    pct, minmax = PercentileObserver(percentile, bins=256), MinMaxObserver()
    for chunk in np.array_split(data, chunks):
        pct.update(chunk)
        minmax.update(chunk)
    lo, hi = pct.range()
    mlo, mhi = minmax.range()
    assert mlo <= lo <= hi <= mhi


def test_percentile_of_nothing_is_zero_range() -> None:
    assert PercentileObserver().range() == (0.0, 0.0)


def test_make_observer() -> None:
    assert isinstance(make_observer("minmax"), MinMaxObserver)
    obs = make_observer("percentile", 99.5)
    assert isinstance(obs, PercentileObserver) and obs.percentile == 99.5
    with pytest.raises(TargetError, match="entropy.*minmax"):
        make_observer("entropy")
