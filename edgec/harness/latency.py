"""Latency statistics: turn per-inference wall times into the numbers a report and a gate read.

Percentiles rather than the mean are what a release gate should compare: one inference stalled by
the scheduler moves the mean, not the median, and tail percentiles (p95/p99) are what an edge
deployment with a deadline cares about.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

__all__ = ["summarize", "PERCENTILES"]

logger = logging.getLogger(__name__)

#: The percentiles every report carries, as (key, q) pairs.
PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0))


def summarize(latencies_ms: Sequence[float]) -> dict[str, float | int]:
    """Summarize per-inference latencies in milliseconds.

    Formulas: `pXX = numpy.percentile(x, XX, method="linear")` (the value at rank `XX/100 * (n-1)`,
    linearly interpolated between neighbours), `mean = sum(x)/n`, `std` is the population standard
    deviation `sqrt(sum((x-mean)^2)/n)` (ddof=0, so a single run gives 0.0 rather than NaN, which
    JSON could not carry). With one value every percentile, min, max and mean equal it.

    Args:
        latencies_ms: One wall time per timed inference, in milliseconds.

    Returns:
        `p50`, `p90`, `p95`, `p99`, `mean`, `std`, `min`, `max` as floats in ms, and `runs` (int),
        the number of latencies summarized.

    Raises:
        ValueError: If `latencies_ms` is empty or holds a non-finite value; both mean the caller
            measured nothing meaningful, which is a bug rather than a user error.
    """
    x = np.asarray(latencies_ms, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("cannot summarize an empty list of latencies")
    if not np.all(np.isfinite(x)):
        raise ValueError("latencies must be finite numbers")
    summary: dict[str, float | int] = {
        key: float(np.percentile(x, q, method="linear")) for key, q in PERCENTILES
    }
    summary.update(
        mean=float(np.mean(x)),
        std=float(np.std(x)),
        min=float(np.min(x)),
        max=float(np.max(x)),
        runs=int(x.size),
    )
    return summary
