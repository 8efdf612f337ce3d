"""The regression gate's statistics on known distributions, its refusals, and its fail-closed checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgec.errors import BadInputError
from edgec.report import regression
from edgec.report.regression import RegressionThresholds, ratio_interval
from edgec.report.types import BenchReport, read_bench_report

HOST = {"cpu_model": "Test CPU", "machine": "x86_64"}


def _report(samples: np.ndarray, **extra: object) -> dict:
    return {"schema": "edgec.bench/1", "target": "cpu-x86-fp32", "threads": 1, "batch": 1, "input_shapes": ["x=1x3"],
            "host": dict(HOST), "latency_ms": {"samples": [round(float(v), 6) for v in samples]},
            "size_bytes": 1000, "drift": {"accuracy": 0.95}, **extra}


def compare_reports(new: dict, old: dict, thresholds: RegressionThresholds, **options: bool) -> list:
    return regression.compare_reports(BenchReport.from_dict(new), BenchReport.from_dict(old), thresholds, **options)


def comparability(new: dict, old: dict) -> list[str]:
    return regression.comparability(BenchReport.from_dict(new), BenchReport.from_dict(old))


def _lognormal(seed: int, scale: float = 1.0, n: int = 400) -> np.ndarray:
    """Right-skewed latencies around 2 ms with a 10% spread, like a quiet CPU's."""
    return scale * 2.0 * np.random.default_rng(seed).lognormal(0.0, 0.1, n)


def test_interval_covers_the_true_ratio_and_is_deterministic() -> None:
    old, new = _lognormal(1), _lognormal(2, scale=1.10)
    found = ratio_interval(new, old, 0.5)
    assert found.low < 0.10 < found.high and found.low < found.change < found.high
    assert found == ratio_interval(new, old, 0.5)


def test_no_regression_passes_across_many_seeds() -> None:
    """Same distribution: the 95% interval's lower bound exceeds +5% on none of 40 pairs."""
    fired = 0
    for seed in range(40):
        checks = compare_reports(_report(_lognormal(2 * seed)), _report(_lognormal(2 * seed + 1)),
                                 RegressionThresholds(max_latency_regression=5.0))
        fired += not all(check.passed for check in checks)
    assert fired == 0


def test_ten_percent_regression_is_caught_with_one_line_verdicts() -> None:
    caught = 0
    for seed in range(20):
        checks = compare_reports(_report(_lognormal(2 * seed, scale=1.10)), _report(_lognormal(2 * seed + 1)),
                                 RegressionThresholds(max_latency_regression=5.0))
        caught += not all(check.passed for check in checks)
    assert caught >= 19
    p50, p90 = checks
    assert p50.name == "latency_p50_regression" and p90.name == "latency_p90_regression"
    assert p50.message.startswith("p50 +") and "[95% CI +" in p50.message and p50.message.endswith("> 5% allowed: FAIL")
    assert "\n" not in p50.message and p50.unit == "%" and p50.value == pytest.approx(10, abs=3)


def test_a_check_fails_above_the_allowance_only_when_the_interval_clears_half_of_it() -> None:
    thresholds = RegressionThresholds(max_latency_regression=5.0)
    old, new = _lognormal(1, n=1200), _lognormal(2, scale=1.055, n=1200)
    # +5.4%: the estimate is above 5% and the interval above 2.5%, though not wholly above 5%: FAIL.
    found = ratio_interval(new, old, 0.5)
    assert 0.025 < found.low < 0.05 < found.change < found.high
    p50, _ = compare_reports(_report(new), _report(old), thresholds)
    assert not p50.passed and p50.message.endswith("> 5% allowed: FAIL")
    # Above 5% on 40 runs, but the interval reaches below 2.5%: noise, not a verdict.
    new, old = _lognormal(6, scale=1.06, n=40), _lognormal(16, n=40)
    found = ratio_interval(new, old, 0.5)
    assert found.change > 0.05 and found.low < 0.025
    p50, _ = compare_reports(_report(new), _report(old), thresholds)
    assert p50.passed and "within noise of 5% allowed: pass" in p50.message
    assert p50.op == "within noise of"  # the gate's table then reads "+x% | within noise of 5% | PASS", not "<="


def test_confidence_widens_the_interval() -> None:
    old, new = _lognormal(3), _lognormal(4)
    narrow, wide = ratio_interval(new, old, 0.9, confidence=0.8), ratio_interval(new, old, 0.9, confidence=0.99)
    assert wide.low < narrow.low and wide.high > narrow.high


def test_missing_or_short_samples_fail_closed() -> None:
    thresholds = RegressionThresholds(max_latency_regression=5.0)
    old = _report(_lognormal(1))
    no_samples = _report(_lognormal(2))
    del no_samples["latency_ms"]["samples"]
    for new, needle in ((no_samples, "no raw latency samples"), (_report(_lognormal(2, n=5)), "only 5 timed runs")):
        checks = compare_reports(new, old, thresholds)
        assert not any(check.passed for check in checks) and all(check.value is None for check in checks)
        assert needle in checks[0].message and checks[0].message.endswith(": fail")


def test_accuracy_and_size_checks() -> None:
    old = _report(_lognormal(1))
    new = _report(_lognormal(2), size_bytes=1200, drift={"accuracy": 0.93})
    accuracy, size = compare_reports(new, old, RegressionThresholds(max_accuracy_regression_pp=1.0, max_size_growth=25))
    assert not accuracy.passed and accuracy.value == pytest.approx(2.0) and "> 1 pp allowed: FAIL" in accuracy.message
    assert size.passed and size.value == pytest.approx(20.0)
    del new["drift"]
    accuracy, = compare_reports(new, old, RegressionThresholds(max_accuracy_regression_pp=1.0))
    assert not accuracy.passed and "not in the new report" in accuracy.message


@pytest.mark.parametrize("change", [{"threads": 2}, {"batch": 8}, {"host": {"cpu_model": "Other", "machine": "x86_64"}},
                                    {"target": "cpu-arm64-int8"}, {"host": {}}])
def test_different_devices_or_settings_are_refused(change: dict) -> None:
    old, new = _report(_lognormal(1)), _report(_lognormal(2), **change)
    assert comparability(new, old)
    with pytest.raises(BadInputError, match="cannot be compared"):
        compare_reports(new, old, RegressionThresholds(max_latency_regression=5.0))
    assert compare_reports(new, old, RegressionThresholds(max_latency_regression=5.0), allow_different_device=True)


def test_bad_thresholds_are_refused() -> None:
    with pytest.raises(BadInputError, match="no regression thresholds"):
        compare_reports(_report(_lognormal(1)), _report(_lognormal(2)), RegressionThresholds())
    with pytest.raises(BadInputError, match="--confidence"):
        RegressionThresholds(max_latency_regression=5, confidence=1.0)
    with pytest.raises(BadInputError, match="finite"):
        RegressionThresholds(max_size_growth=float("nan"))


def test_newer_schema_and_truncated_json_are_refused(tmp_path) -> None:
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"schema": "edgec.bench/3"}))
    with pytest.raises(BadInputError, match="newer than this edgec reads"):
        read_bench_report(newer)
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps(_report(_lognormal(1)))[:50])
    with pytest.raises(BadInputError, match="not valid JSON"):
        read_bench_report(truncated)


def _with_baseline(report: dict, samples: np.ndarray, sha: str = "ab" * 32) -> dict:
    return {**report, "provenance": {"baseline_sha256": sha},
            "baseline": {"latency_ms": {"samples": [round(float(v), 6) for v in samples]}}}


def test_a_machine_wide_slowdown_divides_out_against_the_same_baseline() -> None:
    """The new bench ran while the machine was 30% slower for both models: relative to the baseline, no regression."""
    thresholds = RegressionThresholds(max_latency_regression=5.0)
    old = _with_baseline(_report(_lognormal(1)), _lognormal(2))
    new = _with_baseline(_report(_lognormal(3, scale=1.3)), _lognormal(4, scale=1.3))
    checks = compare_reports(new, old, thresholds)
    assert all(check.passed for check in checks) and checks[0].message.endswith("(relative to the same float baseline timed alongside)")
    slower = _with_baseline(_report(_lognormal(3, scale=1.3 * 1.1)), _lognormal(4, scale=1.3))
    assert not all(check.passed for check in compare_reports(slower, old, thresholds))
    other_baseline = _with_baseline(_report(_lognormal(3, scale=1.3)), _lognormal(4, scale=1.3), sha="cd" * 32)
    absolute = compare_reports(other_baseline, old, thresholds)
    assert not any(check.passed for check in absolute) and "relative" not in absolute[0].message


def test_cosine_bound_follows_the_angle_triangle_inequality() -> None:
    from edgec.report.regression import cosine_bound

    assert cosine_bound(1.0, 1.0) == pytest.approx(1.0)
    assert cosine_bound(0.0, 0.0) == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    for _ in range(200):  # real vectors: the bound never exceeds their actual cosine
        base, new, old = rng.normal(size=(3, 8))
        cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
        assert cos(new, old) >= cosine_bound(cos(new, base), cos(old, base)) - 1e-12


def test_min_cosine_vs_old_needs_the_same_baseline_and_data() -> None:
    def drifted(cosine: float, sha: str = "ab" * 32) -> dict:
        report = _report(_lognormal(1), provenance={"baseline_sha256": sha}, data="random",
                         drift={"outputs": {"y": {"cosine_min": cosine}}})
        return {**report, "samples": 16}

    check, = compare_reports(drifted(0.9995), drifted(0.9995), RegressionThresholds(min_cosine_vs_old=0.99))
    assert check.passed and check.value == pytest.approx(np.cos(2 * np.arccos(0.9995)))
    check, = compare_reports(drifted(0.95), drifted(0.9995), RegressionThresholds(min_cosine_vs_old=0.99))
    assert not check.passed and "< 0.99 required: FAIL" in check.message
    check, = compare_reports(drifted(1.0, sha="cd" * 32), drifted(1.0), RegressionThresholds(min_cosine_vs_old=0.99))
    assert not check.passed and check.value is None and "same baseline file" in check.message


def test_min_cosine_vs_old_bounds_each_sample_when_both_reports_kept_them() -> None:
    # The worst samples differ: new drifted on sample 0, old on sample 1. From the worst of each alone the
    # bound is cos(2 acos 0.99) = 0.9602; sample by sample it is cos(acos 0.99 + acos 0.999999) (less rounding).
    def drifted(cosines: list[float]) -> dict:
        report = _report(_lognormal(1), provenance={"baseline_sha256": "ab" * 32}, data="random",
                         drift={"outputs": {"y": {"cosine_min": min(cosines), "cosines": cosines}}})
        return {**report, "samples": 2}

    new, old = drifted([0.99, 0.999999]), drifted([0.999999, 0.99])
    check, = compare_reports(new, old, RegressionThresholds(min_cosine_vs_old=0.98))
    half = 5e-7  # each recorded cosine is rounded to 6 decimals
    expected = np.cos(np.arccos(0.99 - half) + np.arccos(0.999999 - half))
    assert check.passed and check.value == pytest.approx(expected, abs=1e-12) and check.value < 0.99
    coarse, = compare_reports(drifted([0.99, 0.99]), drifted([0.99, 0.99]), RegressionThresholds(min_cosine_vs_old=0.98))
    assert not coarse.passed and coarse.value == pytest.approx(np.cos(2 * np.arccos(0.99)), abs=1e-6)
    # Different sample counts: only the worst samples can be combined.
    fewer, = compare_reports(new, {**old, "drift": {"outputs": {"y": {"cosine_min": 0.99, "cosines": [0.99]}}}},
                             RegressionThresholds(min_cosine_vs_old=0.98))
    assert fewer.value == pytest.approx(np.cos(2 * np.arccos(0.99)))
