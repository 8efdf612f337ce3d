"""Observers collect statistics of a tensor over calibration samples and turn them into a range.

Statistics (`update`) and the range choice (`range`) are separate, so a calibrator can be swapped
without re-running the model. Memory is bounded by the observer, never by the number of samples.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from edgec.errors import TargetError

__all__ = ["Observer", "MinMaxObserver", "StreamingHistogram", "PercentileObserver", "EntropyObserver", "MseObserver",
           "ChannelStatsObserver", "kl_divergences", "make_observer", "OBSERVERS"]


class Observer(Protocol):
    def update(self, x: np.ndarray) -> None: ...

    def range(self) -> tuple[float, float]: ...


class MinMaxObserver:
    """Running minimum and maximum over every value seen (NaN/inf ignored)."""

    def __init__(self) -> None:
        self.lo = np.inf
        self.hi = -np.inf

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        mask = np.isfinite(x)
        finite = x if mask.all() else x[mask]
        if finite.size:
            self.lo = min(self.lo, float(finite.min()))
            self.hi = max(self.hi, float(finite.max()))

    def range(self) -> tuple[float, float]:
        """The observed [min, max]; (0, 0) when nothing finite was seen."""
        if self.lo > self.hi:
            return 0.0, 0.0
        return self.lo, self.hi


class StreamingHistogram:
    """Fixed-size histogram over the symmetric interval [-limit, limit] that grows as data arrives.

    When a value falls outside, `limit` doubles and adjacent bins merge pairwise into the middle
    half, so memory stays `bins` counters whatever the data; resolution is limit / (bins / 2).
    """

    def __init__(self, bins: int = 2048) -> None:
        if bins % 4:
            raise ValueError("bins must be a multiple of 4")
        self.bins = bins
        self.counts = np.zeros(bins, dtype=np.int64)
        self.limit = 0.0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        x = x[np.isfinite(x)]
        if not x.size:
            return
        peak = float(np.abs(x).max())
        if self.limit == 0.0:
            self.limit = peak if peak > 0 else 1e-8
        while peak > self.limit:
            self._double()
        index = np.floor((x + self.limit) * (self.bins / (2 * self.limit))).astype(np.int64)
        self.counts += np.bincount(np.clip(index, 0, self.bins - 1), minlength=self.bins)

    def _double(self) -> None:
        merged = self.counts.reshape(-1, 2).sum(axis=1)
        self.counts = np.zeros_like(self.counts)
        quarter = self.bins // 4
        self.counts[quarter : quarter + self.bins // 2] = merged
        self.limit *= 2

    def edges(self) -> np.ndarray:
        return np.linspace(-self.limit, self.limit, self.bins + 1)

    def quantile(self, q: float) -> float:
        """Value below which a fraction `q` of the samples lie, interpolated linearly inside a bin."""
        total = self.counts.sum()
        if total == 0:
            return 0.0
        cumulative = np.cumsum(self.counts)
        target = q * total
        index = int(np.searchsorted(cumulative, target, side="left"))
        index = min(index, self.bins - 1)
        before = cumulative[index - 1] if index else 0
        fraction = (target - before) / self.counts[index] if self.counts[index] else 0.0
        edges = self.edges()
        return float(edges[index] + fraction * (edges[index + 1] - edges[index]))


class _HistogramObserver:
    """Histogram plus exact min/max: what every histogram calibrator needs to search a range."""

    def __init__(self, bins: int) -> None:
        self.histogram = StreamingHistogram(bins)
        self.minmax = MinMaxObserver()

    def update(self, x: np.ndarray) -> None:
        self.histogram.add(x)
        self.minmax.update(x)


class PercentileObserver(_HistogramObserver):
    """Range from the (100 - p)th and p-th percentiles, clipping rare outliers out of the scale."""

    def __init__(self, percentile: float = 99.99, bins: int = 2048) -> None:
        super().__init__(bins)
        self.percentile = percentile

    def range(self) -> tuple[float, float]:
        """Percentile range, never wider than the observed min/max."""
        lo, hi = self.minmax.range()
        fraction = self.percentile / 100.0
        return max(lo, self.histogram.quantile(1.0 - fraction)), min(hi, self.histogram.quantile(fraction))


class EntropyObserver(_HistogramObserver):
    """TensorRT's entropy calibration: the |x| threshold whose clipped, quantized histogram stays closest
    (in KL divergence) to the observed one, so rare outliers stop stretching the scale of the bulk.

    The histogram needs far more bins than the grid has levels: with as many bins as levels (ONNX
    Runtime's 128 for 128) the only candidate threshold is the full range, i.e. min-max. 8192 bins
    keep at least 2048 bins of |x| over the observed range, TensorRT's resolution, after any growth.
    """

    def __init__(self, levels: int = 256, symmetric: bool = False, bins: int = 8192) -> None:
        super().__init__(bins)
        self.levels = levels
        self.symmetric = symmetric

    def range(self) -> tuple[float, float]:
        """[-T, T] cut to the observed min/max, T the upper edge of the divergence-minimizing bin."""
        lo, hi = self.minmax.range()
        counts, width = _abs_histogram(self.histogram)
        # exact zeros (ReLU floors, padding) are represented exactly on every grid; left in, their spike
        # makes any wide first group look lossy, and the search clips far too hard (digits CNN:
        # post-ReLU ranges cut to a quarter, -2.6 pp accuracy). Flattened to its neighbour, as NVIDIA's
        # pytorch-quantization entropy calibrator does.
        counts = counts.copy()
        counts[0] = min(counts[0], counts[1]) if counts.size > 1 else counts[0]
        occupied = np.flatnonzero(counts)
        if not occupied.size:
            return lo, hi
        first, counts = int(occupied[0]), counts[: occupied[-1] + 1]
        n_quant = self._quantized_bins(lo, hi)
        if len(counts) - first <= n_quant:
            return lo, hi
        # TensorRT starts at n_quant bins, fewer than the levels losing nothing to merging; counted here
        # from the lowest occupied bin, or data away from zero would collapse into one bin at no cost.
        divergences = kl_divergences(counts, n_quant)[first:]
        threshold = (first + n_quant + int(np.argmin(divergences))) * width
        return max(lo, -threshold), min(hi, threshold)

    def _quantized_bins(self, lo: float, hi: float) -> int:
        """Grid levels on one side of zero: all of them when an asymmetric grid sees one-signed data."""
        one_signed = lo >= 0.0 or hi <= 0.0
        return self.levels if one_signed and not self.symmetric else self.levels // 2


def _abs_histogram(histogram: StreamingHistogram) -> tuple[np.ndarray, float]:
    """Counts of |x| over [0, limit] and their bin width: the negative half folded onto the positive."""
    half = histogram.bins // 2
    return histogram.counts[half:] + histogram.counts[:half][::-1], histogram.limit / half


def _cumulative(values: np.ndarray) -> np.ndarray:
    """Prefix sums with a leading 0, so the sum over bins [a, b) is c[b] - c[a]."""
    return np.concatenate(([0.0], np.cumsum(values, dtype=np.float64)))


def _mass_log_density(mass: np.ndarray, bins: np.ndarray | float = 1.0) -> np.ndarray:
    """mass * log(mass / bins), with 0 log 0 = 0."""
    return mass * np.log(np.where(mass > 0, mass, 1.0) / np.maximum(bins, 1.0))


def kl_divergences(counts: np.ndarray, n_quant: int) -> np.ndarray:
    """KL(P || Q) for every threshold bin i = n_quant .. len(counts) (TensorRT's entropy calibration).

    P is counts[:i] with the clipped mass (counts[i:]) added to bin i - 1. Q merges counts[:i]
    (clipped mass excluded, as TensorRT does: that is what makes clipping cost something) into
    `n_quant` groups of i // n_quant bins, the last taking the remainder, and spreads each group's
    mass uniformly over its bins where P is non-zero. Zero bins of P contribute nothing. Q is zero
    where P is not only when the clipped mass lands in an empty last group; that group then gets a
    pseudo-count of 1/2 (the Krichevsky-Trofimov estimate of an unseen bin), rather than an epsilon
    added everywhere (which would bias every candidate) or an infinite divergence (which would forbid
    clipping outliers separated from the bulk by empty bins, the case calibration is for). A
    threshold below every count leaves Q nothing but that pseudo-count: its divergence is infinite.
    `counts` must hold at least n_quant bins and not be all zero.

    Groups before the last depend only on the group width, which up to n_quant thresholds share, so
    the whole search costs O(len(counts)) rather than O(len(counts) * n_quant).
    """
    h = np.asarray(counts, dtype=np.float64)
    total = h.sum()
    cum, cum_nonzero, cum_xlogx = _cumulative(h), _cumulative(h > 0), _cumulative(_mass_log_density(h))
    stops = np.arange(n_quant, len(h) + 1)
    widths = stops // n_quant
    head_cross = _head_cross_terms(cum, cum_nonzero, int(widths[-1]), n_quant)[widths - 1]
    last_start = widths * (n_quant - 1)
    last_bin, clipped = h[stops - 1], total - cum[stops]
    q_last = cum[stops] - cum[last_start]
    pseudo = np.where((q_last == 0) & (clipped > 0), 0.5, 0.0)
    nonzero_last = cum_nonzero[stops] - cum_nonzero[last_start] + ((last_bin == 0) & (clipped > 0))
    p_last = q_last + clipped
    cross = head_cross + p_last * np.log(np.where(p_last > 0, q_last + pseudo, 1.0) / np.maximum(nonzero_last, 1))
    p_log_p = cum_xlogx[stops - 1] + _mass_log_density(last_bin + clipped)
    divergence = (p_log_p - cross) / total + np.log((cum[stops] + pseudo) / total)
    return np.where(cum[stops] > 0, divergence, np.inf)


def _head_cross_terms(cum: np.ndarray, cum_nonzero: np.ndarray, max_width: int, n_quant: int) -> np.ndarray:
    """Sum of P log Q (unnormalized) over all groups but the last, for each group width 1 .. max_width.

    There P equals the counts, so a group's P mass is its Q mass and its non-zero bins are the counts'.
    """
    widths = np.arange(1, max_width + 1)[:, None]
    starts = widths * np.arange(n_quant - 1)
    mass = cum[starts + widths] - cum[starts]
    return _mass_log_density(mass, cum_nonzero[starts + widths] - cum_nonzero[starts]).sum(axis=1)


class MseObserver(_HistogramObserver):
    """The clipping range with the least expected squared quantize-dequantize error on the target grid.

    Each bin's count is spread uniformly over the bin (cut to the observed min/max, so a lone value
    stays a point) and its squared error integrated exactly on the grid `qparams_from_range` would
    build: rounding error inside the range, clipping error outside, zero-point rounding included.
    Evaluating at bin centers instead aliases when the scale is only a few bins wide.
    """

    def __init__(self, levels: int = 256, symmetric: bool = False, bins: int = 2048) -> None:
        super().__init__(bins)
        self.levels = levels
        self.symmetric = symmetric

    def range(self) -> tuple[float, float]:
        """Least-error range, never wider than the observed min/max."""
        lo, hi = self.minmax.range()
        if lo == hi:
            return lo, hi
        density = _PiecewiseUniform(*self._occupied_bins(lo, hi))

        def error(low: np.ndarray, high: np.ndarray) -> np.ndarray:
            return density.sq_error(low, high, self.levels, self.symmetric)

        if self.symmetric:
            peak = _best_point(lambda t: error(-t, t), max(-lo, hi))
            return max(lo, -peak), min(hi, peak)
        low, high = min(lo, 0.0), max(hi, 0.0)
        # Shrink both ends together first (outliers on both sides), then each end alone (one heavy tail).
        factor = _best_point(lambda f: error(f * low, f * high), 1.0)
        best_high = _best_point(lambda h: error(np.full_like(h, factor * low), h), high)
        best_low = _best_point(lambda l: error(l, np.full_like(l, best_high)), low)
        return max(lo, best_low), min(hi, best_high)

    def _occupied_bins(self, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Starts, ends (cut to [lo, hi]) and counts of the non-empty bins."""
        occupied = np.flatnonzero(self.histogram.counts)
        edges = np.clip(self.histogram.edges(), lo, hi)
        return edges[occupied], edges[occupied + 1], self.histogram.counts[occupied].astype(np.float64)


class _PiecewiseUniform:
    """The histogram as a density: uniform inside each bin, a point mass where a bin was cut to nothing.

    The squared error integrated over bin [a, b] is F(b) - F(a) for an antiderivative F of the error,
    so the total is a weighted sum of F over the distinct bin edges ("knots"); the weights depend
    only on the histogram and are computed once for all candidate ranges.
    """

    def __init__(self, starts: np.ndarray, ends: np.ndarray, counts: np.ndarray) -> None:
        spread = ends > starts
        density = counts[spread] / (ends - starts)[spread]
        self.knots, inverse = np.unique(np.concatenate((starts[spread], ends[spread])), return_inverse=True)
        self.weights = np.bincount(inverse, np.concatenate((-density, density)), minlength=len(self.knots))
        self._above = _tail_moments(self.knots, self.weights)
        self._below = _tail_moments(-self.knots[::-1], self.weights[::-1])
        self.points, self.point_counts = starts[~spread], counts[~spread]

    def sq_error(self, lo: np.ndarray, hi: np.ndarray, levels: int, symmetric: bool) -> np.ndarray:
        """Total squared quantize-dequantize error for each candidate range (lo[k], hi[k]).

        Inside the grid's ends the error is that of rounding to a multiple of the scale s, with
        antiderivative s^3 (round(u) / 12 + ((u - round(u))^3 + 1/8) / 3) at u = x / s (the constant
        drops out, the weights summing to 0); outside, the squared distance to the nearest end.
        """
        scale, zero_point, qmin, qmax = _grid(lo, hi, levels, symmetric)
        low, high = (qmin - zero_point) * scale, (qmax - zero_point) * scale
        steps = np.clip(self.knots, low, high) / scale
        nearest = np.round(steps)
        rounding = scale[:, 0] ** 3 * (nearest @ self.weights / 12 + (steps - nearest) ** 3 @ self.weights / 3)
        clipping = (_cubed_excess(self._above, self.knots, high[:, 0])
                    - _cubed_excess(self._below, -self.knots[::-1], -low[:, 0])) / 3
        q = np.clip(np.round(self.points / scale) + zero_point, qmin, qmax)
        return rounding + clipping + ((q - zero_point) * scale - self.points) ** 2 @ self.point_counts


def _tail_moments(knots: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """m[j, i] = sum over k >= i of weights[k] * knots[k]^j, j = 0..3, with a zero column at the end."""
    terms = weights * knots ** np.arange(4)[:, None]
    return np.concatenate((np.cumsum(terms[:, ::-1], axis=1)[:, ::-1], np.zeros((4, 1))), axis=1)


def _cubed_excess(moments: np.ndarray, knots: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """sum of weights * max(knots - cut, 0)^3 for each cut (knots ascending), expanded over the moments."""
    m0, m1, m2, m3 = moments[:, np.searchsorted(knots, cut, side="right")]
    return m3 - 3 * cut * m2 + 3 * cut**2 * m1 - cut**3 * m0


def _grid(lo: np.ndarray, hi: np.ndarray, levels: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Scales and zero points (columns, one row per candidate) and the integer range, as qparams_from_range.

    The range is widened to include 0; a symmetric grid is int8's [-(levels/2 - 1), levels/2 - 1]
    with zero point 0, an asymmetric one [0, levels - 1] with the zero point rounded and clamped.
    """
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)[:, None]
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)[:, None]
    if symmetric:
        qmax = levels // 2 - 1
        return np.maximum(-lo, hi) / qmax, np.zeros_like(lo), -qmax, qmax
    scale = (hi - lo) / (levels - 1)
    return scale, np.clip(np.round(-lo / scale), 0, levels - 1), 0, levels - 1


#: Candidate clipping points as fractions of the observed extent; geometric, so an optimum far inside
#: (heavy tails) is found with the same relative resolution as one near the edge.
_COARSE_FRACTIONS = np.geomspace(1e-3, 1.0, 48)
_FINE_STEPS = 24


def _best_point(error_of: Callable[[np.ndarray], np.ndarray], extent: float) -> float:
    """Point in (0, extent] (or [extent, 0)) with the least error: a geometric sweep, then a linear one
    between the best point's neighbours. Ties go to the widest point, which clips least of unseen data."""
    coarse = extent * _COARSE_FRACTIONS
    best = _widest_argmin(error_of(coarse))
    fine = np.linspace(coarse[max(best - 1, 0)], coarse[min(best + 1, len(coarse) - 1)], _FINE_STEPS)
    return float(fine[_widest_argmin(error_of(fine))])


def _widest_argmin(errors: np.ndarray) -> int:
    """Index of the last minimum: candidates are sorted by growing width."""
    return len(errors) - 1 - int(np.argmin(errors[::-1]))


OBSERVERS = {"minmax": MinMaxObserver, "percentile": PercentileObserver, "entropy": EntropyObserver,
             "mse": MseObserver}


class ChannelStatsObserver:
    """Per-channel mean and maximum |x| along `axis` (the last by default), over every sample.

    SmoothQuant needs each input channel's peak magnitude and bias correction each input channel's
    mean; both are a few floats per channel, whatever the number of samples.
    """

    def __init__(self, axis: int = -1) -> None:
        self.axis = axis
        self.count = 0
        self.sum: np.ndarray | None = None
        self.absmax: np.ndarray | None = None

    def update(self, x: np.ndarray) -> None:
        x = np.moveaxis(np.asarray(x, dtype=np.float64), self.axis, -1)
        rows = x.reshape(-1, x.shape[-1])
        rows = np.where(np.isfinite(rows), rows, 0.0)
        if self.sum is None:
            self.sum = np.zeros(rows.shape[1])
            self.absmax = np.zeros(rows.shape[1])
        self.sum += rows.sum(axis=0)
        self.absmax = np.maximum(self.absmax, np.abs(rows).max(axis=0, initial=0.0))
        self.count += rows.shape[0]

    def mean(self) -> np.ndarray:
        """Per-channel mean (zeros before any update with data)."""
        return np.zeros(0) if self.sum is None else self.sum / max(self.count, 1)

    def max_abs(self) -> np.ndarray:
        """Per-channel maximum magnitude."""
        return np.zeros(0) if self.absmax is None else self.absmax


def make_observer(calibrator: str, percentile: float = 99.99, *, levels: int = 256, symmetric: bool = False) -> Observer:
    """A fresh observer for the named calibrator; `levels` and `symmetric` describe the target grid."""
    if calibrator == "minmax":
        return MinMaxObserver()
    if calibrator == "percentile":
        return PercentileObserver(percentile)
    if calibrator == "entropy":
        return EntropyObserver(levels, symmetric)
    if calibrator == "mse":
        return MseObserver(levels, symmetric)
    raise TargetError(f"unknown calibrator '{calibrator}' (available: {', '.join(OBSERVERS)})")
