"""Observers collect statistics of a tensor over calibration samples and turn them into a range.

Statistics (`update`) and the range choice (`range`) are separate, so a calibrator can be swapped
without re-running the model. Memory is bounded by the observer, never by the number of samples.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edgec.errors import TargetError

__all__ = ["Observer", "MinMaxObserver", "StreamingHistogram", "PercentileObserver", "ChannelStatsObserver",
           "make_observer", "OBSERVERS"]


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


class PercentileObserver:
    """Range from the (100 - p)th and p-th percentiles, clipping rare outliers out of the scale."""

    def __init__(self, percentile: float = 99.99, bins: int = 2048) -> None:
        self.percentile = percentile
        self.histogram = StreamingHistogram(bins)
        self.minmax = MinMaxObserver()

    def update(self, x: np.ndarray) -> None:
        self.histogram.add(x)
        self.minmax.update(x)

    def range(self) -> tuple[float, float]:
        """Percentile range, never wider than the observed min/max."""
        lo, hi = self.minmax.range()
        fraction = self.percentile / 100.0
        return max(lo, self.histogram.quantile(1.0 - fraction)), min(hi, self.histogram.quantile(fraction))


OBSERVERS = {"minmax": MinMaxObserver, "percentile": PercentileObserver}


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
    if calibrator == "percentile":
        return PercentileObserver(percentile)
    if calibrator == "minmax":
        return MinMaxObserver()
    raise TargetError(f"calibrator '{calibrator}' is not implemented yet (available: {', '.join(OBSERVERS)})")
