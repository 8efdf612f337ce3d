"""Tests for edgec.quant.observers: MinMax, the streaming histogram, percentile, entropy and MSE observers.

References are hand-computed ranges, `numpy.quantile` over the same samples, a brute-force loop
over TensorRT's KL-divergence search on the same histogram, and the real quantize/dequantize
error of every range on a grid of candidates.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgec.errors import TargetError
from edgec.quant.observers import (
    EntropyObserver,
    MinMaxObserver,
    MseObserver,
    PercentileObserver,
    StreamingHistogram,
    kl_divergences,
    make_observer,
)
from edgec.quant.qparams import dequantize, qparams_from_range, quantize

#: Where samples are dense (several per bin), a histogram quantile and `np.quantile` differ by at most
#: the bin holding the quantile plus numpy's interpolation into a neighbouring one.
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
    """The quantile lies in the bin holding the ceil(q*n)-th smallest sample, so within one bin of it.

    Comparing with `np.quantile` instead is wrong in sparse tails: numpy interpolates between order
    statistics that can lie several bins apart (seed 431582, q=0.01: 2.3 bins), which says nothing
    about the histogram.
    """
    data = np.random.default_rng(seed).standard_normal(4000) * spread
    hist = StreamingHistogram(bins=256)
    for chunk in np.array_split(data, chunks):
        hist.add(chunk)
    width = 2 * hist.limit / hist.bins
    rank = int(np.ceil(q * data.size))  # the histogram's own rule: the first bin whose cumulative count reaches q*n
    order_statistic = float(np.sort(data)[rank - 1])
    assert abs(hist.quantile(q) - order_statistic) <= width * (1 + 1e-9)
    assert -hist.limit <= hist.quantile(q) <= hist.limit


def test_histogram_quantile_sparse_tail_case_that_numpy_comparison_got_wrong() -> None:
    """The example hypothesis found: 2.3 bins from `np.quantile`, yet within one bin of its order statistic."""
    data = np.random.default_rng(431582).standard_normal(4000)
    hist = StreamingHistogram(bins=256)
    hist.add(data)
    width = 2 * hist.limit / hist.bins
    assert abs(hist.quantile(0.01) - float(np.quantile(data, 0.01))) > QUANTILE_TOL_BINS * width
    assert abs(hist.quantile(0.01) - float(np.sort(data)[39])) <= width


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


# --------------------------------------------------------------------------------------------
# EntropyObserver
# --------------------------------------------------------------------------------------------


def reference_kl(counts: np.ndarray, n_quant: int) -> list[float]:
    """KL(P || Q) for each threshold bin i = n_quant .. len(counts), built bin by bin as TensorRT describes."""
    divergences = []
    for i in range(n_quant, len(counts) + 1):
        if counts[:i].sum() == 0:  # everything clipped: Q would be the pseudo-count alone
            divergences.append(np.inf)
            continue
        p = counts[:i].astype(np.float64)
        p[-1] += counts[i:].sum()
        width = i // n_quant
        q = np.zeros(i)
        for j in range(n_quant):
            start, stop = j * width, (i if j == n_quant - 1 else (j + 1) * width)
            nonzero = p[start:stop] > 0
            mass = counts[start:stop].sum()
            if mass == 0 and nonzero.any():
                mass = 0.5  # an empty group that must carry clipped mass
            if nonzero.any():
                q[start:stop][nonzero] = mass / nonzero.sum()
        p, q = p / p.sum(), q / q.sum()
        keep = p > 0
        divergences.append(float(np.sum(p[keep] * np.log(p[keep] / q[keep]))))
    return divergences


def reference_entropy_range(obs: EntropyObserver, n_quant: int) -> tuple[float, float]:
    """Brute-force threshold search on the observer's |x| histogram, from n_quant bins above the lowest data."""
    half = obs.histogram.bins // 2
    counts = obs.histogram.counts[half:] + obs.histogram.counts[:half][::-1]
    counts[0] = min(counts[0], counts[1])  # exact zeros cost nothing on any grid: their spike is flattened
    width = obs.histogram.limit / half
    occupied = np.flatnonzero(counts)
    first, counts = int(occupied[0]), counts[: occupied[-1] + 1]
    best_kl, best_stop = np.inf, len(counts)
    for stop, kl in zip(range(n_quant, len(counts) + 1), reference_kl(counts, n_quant)):
        if stop >= first + n_quant and kl < best_kl:
            best_kl, best_stop = kl, stop
    lo, hi = obs.minmax.range()
    return max(lo, -best_stop * width), min(hi, best_stop * width)


@settings(max_examples=80, deadline=None)
@given(counts=st.lists(st.integers(0, 6) | st.just(0), min_size=12, max_size=60), n_quant=st.sampled_from([2, 3, 5, 8]),
       outlier=st.integers(0, 3))
def test_kl_divergences_match_bin_by_bin_reference(counts: list[int], n_quant: int, outlier: int) -> None:
    counts = np.array(counts + [0] * 20 + [outlier])  # a gap, then maybe an outlier, to exercise empty groups
    if not counts.any():
        counts[0] = 1
    np.testing.assert_allclose(kl_divergences(counts, n_quant), reference_kl(counts, n_quant), rtol=1e-9, atol=1e-12)


def _observed(obs: EntropyObserver | MseObserver, data: np.ndarray, chunks: int = 10) -> EntropyObserver | MseObserver:
    for chunk in np.array_split(data, chunks):
        obs.update(chunk)
    return obs


GAUSSIAN_WITH_OUTLIERS = np.concatenate([np.random.default_rng(5).standard_normal(100_000),
                                         [40.0, -35.0, 38.0, 30.0, -39.0]])
RELU_GAUSSIAN = np.maximum(np.random.default_rng(6).standard_normal(50_000), 0.0)


@pytest.mark.parametrize(("data", "symmetric", "n_quant"), [
    (GAUSSIAN_WITH_OUTLIERS, False, 128),  # both signs: half the levels on each side
    (RELU_GAUSSIAN, False, 256),  # non-negative data on an asymmetric grid: every level is positive
    (RELU_GAUSSIAN, True, 128),
    (-RELU_GAUSSIAN, False, 256),
])
def test_entropy_equals_brute_force_search(data: np.ndarray, symmetric: bool, n_quant: int) -> None:
    obs = _observed(EntropyObserver(symmetric=symmetric, bins=2048), data)
    assert obs.range() == pytest.approx(reference_entropy_range(obs, n_quant), rel=1e-12)


def test_entropy_clips_rare_outliers_to_a_few_sigma() -> None:
    lo, hi = _observed(EntropyObserver(), GAUSSIAN_WITH_OUTLIERS).range()
    assert 2.5 < hi < 6.0 and lo == -hi  # the max is 40


def test_entropy_ignores_the_spike_of_exact_zeros() -> None:
    """Post-ReLU data is half zeros; the spike must not push the threshold down (it did: 4.7 -> 1.2 on a CNN)."""
    bulk = np.random.default_rng(9).uniform(0.0, 4.0, 20_000)
    with_zeros = np.concatenate([bulk, np.zeros(60_000)])
    _, hi_bulk = _observed(EntropyObserver(), bulk).range()
    _, hi_zeros = _observed(EntropyObserver(), with_zeros).range()
    assert hi_zeros == pytest.approx(hi_bulk, rel=0.02) and hi_zeros > 3.9


def test_entropy_keeps_the_full_range_of_uniform_data() -> None:
    data = np.random.default_rng(8).uniform(-3.0, 3.0, 100_000)
    lo, hi = _observed(EntropyObserver(), data).range()
    assert lo == pytest.approx(data.min(), rel=0.01) and hi == pytest.approx(data.max(), rel=0.01)


def test_entropy_on_data_away_from_zero_does_not_collapse() -> None:
    """All data in one bin below the threshold would make P and Q the same delta (KL 0)."""
    data = np.random.default_rng(9).uniform(1.0, 2.0, 20_000)
    lo, hi = _observed(EntropyObserver(), data).range()
    assert lo == data.min() and hi == pytest.approx(data.max(), rel=0.01)


# --------------------------------------------------------------------------------------------
# MseObserver
# --------------------------------------------------------------------------------------------

#: (levels, symmetric) -> (dtype, reduce_range) of the grid qparams_from_range builds for it.
GRIDS = {(256, False): ("uint8", False), (256, True): ("int8", False), (128, False): ("uint8", True),
         (128, True): ("int8", True)}


def real_mse(x: np.ndarray, lo: float, hi: float, levels: int, symmetric: bool) -> float:
    dtype, reduce_range = GRIDS[levels, symmetric]
    params = qparams_from_range(lo, hi, dtype, symmetric, reduce_range=reduce_range)
    return float(np.mean((dequantize(quantize(x, params), params).astype(np.float64) - x) ** 2))


def brute_force_mse(x: np.ndarray, levels: int, symmetric: bool) -> float:
    """Least real error over a grid of ranges: |x| thresholds, or independent ends for asymmetric grids."""
    fractions = np.linspace(0.05, 1.0, 30) ** 2
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    if symmetric:
        peak = max(-lo, hi)
        return min(real_mse(x, -peak * f, peak * f, levels, symmetric) for f in fractions)
    return min(real_mse(x, lo * f, hi * g, levels, symmetric) for f in fractions for g in fractions)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(0.7978845608 * (x + 0.044715 * x**3)))


_rng = np.random.default_rng(11)
MSE_CASES = {
    "student_t": _rng.standard_t(3, 10_000),
    "gelu_with_outliers": np.concatenate([_gelu(_rng.standard_normal(10_000)), [30.0, 25.0]]),
    "one_heavy_tail": np.concatenate([_rng.standard_normal(10_000), -_rng.exponential(20.0, 20)]),
    "all_negative": -np.abs(_rng.laplace(size=10_000)) - 1.0,
}


@pytest.mark.parametrize("case", sorted(MSE_CASES))
@pytest.mark.parametrize(("levels", "symmetric"), sorted(GRIDS))
def test_mse_range_is_as_good_as_brute_force(case: str, levels: int, symmetric: bool) -> None:
    x = MSE_CASES[case].astype(np.float32)
    lo, hi = _observed(MseObserver(levels, symmetric), x, chunks=7).range()
    assert real_mse(x, lo, hi, levels, symmetric) <= 1.01 * brute_force_mse(x, levels, symmetric)


@pytest.mark.parametrize("symmetric", [False, True])
def test_mse_beats_minmax_on_heavy_tails(symmetric: bool) -> None:
    x = np.random.default_rng(12).standard_t(2, 20_000).astype(np.float32)
    lo, hi = _observed(MseObserver(symmetric=symmetric), x).range()
    assert real_mse(x, lo, hi, 256, symmetric) < real_mse(x, float(x.min()), float(x.max()), 256, symmetric)


def test_mse_keeps_exact_zeros_and_a_lone_maximum_exact() -> None:
    """Point masses at 0 and at the max are quantized with no error by the min-max grid: nothing beats it."""
    x = np.array([0.0] * 500 + [3.0] * 500)
    assert _observed(MseObserver(), x).range() == (0.0, 3.0)


# --------------------------------------------------------------------------------------------
# Entropy and MSE: edge cases
# --------------------------------------------------------------------------------------------

SEARCHING = [("entropy", False), ("entropy", True), ("mse", False), ("mse", True)]


@pytest.mark.parametrize(("name", "symmetric"), SEARCHING)
def test_search_observers_edge_cases(name: str, symmetric: bool) -> None:
    def observed(*chunks: list[float]) -> tuple[float, float]:
        obs = make_observer(name, symmetric=symmetric)
        for chunk in chunks:
            obs.update(np.array(chunk, np.float32))
        return obs.range()

    assert observed() == (0.0, 0.0)
    assert observed([np.nan, np.inf], []) == (0.0, 0.0)
    assert observed([0.0] * 10, [0.0, 0.0]) == (0.0, 0.0)
    assert observed([2.5]) == (2.5, 2.5)
    assert observed([-1.5] * 3, [np.nan]) == (-1.5, -1.5)
    data = np.random.default_rng(13).standard_normal(2000).tolist()
    assert observed(data + [np.nan, np.inf, -np.inf]) == observed(data)


@pytest.mark.parametrize(("name", "symmetric"), SEARCHING)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_search_observers_on_one_signed_data(name: str, symmetric: bool, sign: float) -> None:
    data = sign * np.random.default_rng(14).uniform(0.5, 2.0, 20_000)
    lo, hi = _observed(make_observer(name, symmetric=symmetric), data).range()
    assert data.min() <= lo <= hi <= data.max()
    assert hi - lo > 0.9 * (data.max() - data.min())  # a uniform distribution has nothing worth clipping


@pytest.mark.parametrize(("name", "symmetric"), SEARCHING)
def test_search_observers_over_growing_ranges(name: str, symmetric: bool) -> None:
    rng = np.random.default_rng(15)
    chunks = [rng.standard_normal(1000) * 1.5**step for step in range(30)]
    obs = make_observer(name, symmetric=symmetric)
    for chunk in chunks:
        obs.update(chunk)
    data = np.concatenate(chunks)
    lo, hi = obs.range()
    assert data.min() <= lo < np.quantile(data, 0.1) and np.quantile(data, 0.9) < hi <= data.max()
    assert obs.histogram.counts.sum() == data.size


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), spread=st.floats(1e-3, 1e3), shift=st.floats(-3, 3),
       chunks=st.integers(1, 5), searching=st.sampled_from(SEARCHING))
def test_search_observers_never_wider_than_minmax(seed: int, spread: float, shift: float, chunks: int,
                                                  searching: tuple[str, bool]) -> None:
    data = (np.random.default_rng(seed).standard_t(3, 2000) + shift) * spread
    name, symmetric = searching
    lo, hi = _observed(make_observer(name, symmetric=symmetric), data, chunks).range()
    assert data.min() <= lo <= hi <= data.max()


def test_make_observer() -> None:
    assert isinstance(make_observer("minmax"), MinMaxObserver)
    obs = make_observer("percentile", 99.5)
    assert isinstance(obs, PercentileObserver) and obs.percentile == 99.5
    for name, kind in (("entropy", EntropyObserver), ("mse", MseObserver)):
        obs = make_observer(name, levels=128, symmetric=True)
        assert isinstance(obs, kind) and obs.levels == 128 and obs.symmetric
    with pytest.raises(TargetError, match="minmax, percentile, entropy, mse"):
        make_observer("kl")
