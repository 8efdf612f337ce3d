"""Latency summary: percentiles and moments against NumPy as the oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgec.harness.latency import summarize

KEYS = {"p50", "p90", "p95", "p99", "mean", "std", "min", "max", "runs"}


def test_known_values_match_numpy() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.0, 6.0, 9.0, 8.0]
    summary = summarize(values)
    assert set(summary) == KEYS
    x = np.asarray(values)
    for key, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        assert summary[key] == pytest.approx(np.percentile(x, q))
    # Linear interpolation by hand: rank q/100*(n-1); p50 of 1..10 sits halfway between 5 and 6.
    assert summary["p50"] == pytest.approx(5.5)
    assert summary["p90"] == pytest.approx(9.1)
    assert summary["mean"] == pytest.approx(5.5)
    assert summary["std"] == pytest.approx(math.sqrt(8.25))  # population std of 1..10
    assert summary["min"] == 1.0 and summary["max"] == 10.0
    assert summary["runs"] == 10 and isinstance(summary["runs"], int)
    assert all(isinstance(summary[k], float) for k in KEYS - {"runs"})


def test_single_value() -> None:
    summary = summarize([2.5])
    assert summary["runs"] == 1
    assert summary["std"] == 0.0
    for key in ("p50", "p90", "p95", "p99", "mean", "min", "max"):
        assert summary[key] == 2.5


def test_empty_raises() -> None:
    with pytest.raises(ValueError):
        summarize([])


def test_non_finite_raises() -> None:
    with pytest.raises(ValueError):
        summarize([1.0, float("nan")])


@given(
    st.lists(st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=200)
)
def test_percentiles_are_ordered(values: list[float]) -> None:
    s = summarize(values)
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p95"] <= s["p99"] <= s["max"]
    assert s["min"] <= s["mean"] <= s["max"] or math.isclose(s["mean"], s["min"]) or math.isclose(s["mean"], s["max"])
    assert s["runs"] == len(values)
