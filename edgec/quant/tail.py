"""The worst output cosine an int8 model is expected to reach on more data than it was measured on.

A budget searched on n samples ends at a model whose worst sample sits just inside the bar, and the
worst of more unseen samples is worse: the minimum of a larger set is lower. How much lower depends
on the tail of the per-sample drift (1 - cosine). When every sample drifts alike the minimum barely
moves; when one kind of input stands out (MiniLM's 4-5 token sentences drift 2-3x more than the
rest) the next such input can be worse still. That growth is measured on the samples themselves:
the expected worst of a random half of them (exact, from the order statistics) against the worst of
all of them. Assuming the same growth for every further doubling (exact for a power-law tail, an
overestimate for lighter ones), the worst of `EXTRAPOLATION` times as many samples is expected at
`d_max * growth ** log2(EXTRAPOLATION)`. A budget search sees half the user's evaluation data (the
other half is held out), so 4x its samples is twice all the data it was given. Measured on MiniLM
with five splits of 150 sentences (search on 25, check on 100 unseen), one doubling still left the
unseen minimum below a 0.99 bar on two splits, where short sentences were rarer in the searched part.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["EXTRAPOLATION", "MIN_SAMPLES", "WHAT", "describe", "expected_worst_cosine", "half_sample_growth"]

#: Below this many samples the growth of the worst sample cannot be measured (a half of one sample).
MIN_SAMPLES = 4
#: How many times the measured samples the expected worst is extrapolated to.
EXTRAPOLATION = 4
#: How reports name the figure.
WHAT = f"expected worst over {EXTRAPOLATION}x the samples"


def half_sample_growth(drifts: Sequence[float]) -> float:
    """How much worse the worst of all `drifts` is than the expected worst of a random half of them (>= 1).

    For drifts sorted d(1) >= ... >= d(n) and halves of k = n // 2 samples, the worst of a random
    half is d(i) with probability C(n - i, k - 1) / C(n, k); the weights are built by recurrence
    (w(1) = k / n, w(i + 1) = w(i) (n - i - k + 1) / (n - i)) so any n stays exact in floats.
    """
    ordered = sorted(drifts, reverse=True)
    n, k = len(ordered), len(ordered) // 2
    if n < MIN_SAMPLES or ordered[0] <= 0:
        return 1.0
    weight, expected_half = k / n, 0.0
    for i, drift in enumerate(ordered[: n - k + 1], start=1):
        expected_half += weight * drift
        weight *= (n - i - k + 1) / (n - i)  # i <= n - k + 1 < n, as k >= 2
    return ordered[0] / expected_half


def expected_worst_cosine(cosines: Sequence[float]) -> float | None:
    """The cosine the worst of EXTRAPOLATION times as many samples like `cosines` is expected at (at most their minimum).

    None below MIN_SAMPLES samples; NaN when any cosine is not finite (the model is broken on some input).
    """
    if len(cosines) < MIN_SAMPLES:
        return None
    if not all(math.isfinite(cosine) for cosine in cosines):
        return math.nan
    drifts = [max(0.0, 1.0 - cosine) for cosine in cosines]
    growth = half_sample_growth(drifts) ** math.log2(EXTRAPOLATION)
    return min(min(cosines), 1.0 - max(drifts) * growth)


def describe(min_cosine: float, expected_worst: float | None) -> str:
    """How progress lines, reports and errors state a candidate's cosine: the seen minimum, then the expected worst."""
    return f"min cosine {min_cosine:.6f}" + ("" if expected_worst is None else f" ({WHAT} {expected_worst:.6f})")
