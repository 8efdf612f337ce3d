"""Is a new build worse than an earlier one on the same device, beyond noise? Checks of a bench report against an older one.

Latency is judged on the raw timed runs both reports keep (`latency_ms.samples`), not on their
summaries: a p90 that grew 6% means nothing until we know how much it moves by chance. For each
statistic (p50, p90) the change is `r = q(new) / q(old) - 1`, and its confidence interval comes from
a percentile bootstrap: resample each report's runs with replacement `BOOTSTRAP_RESAMPLES` times,
recompute `r` on every resample, and take the `(1-c)/2` and `(1+c)/2` quantiles of those ratios.
A check fails only when the whole interval lies above the allowed growth (its lower bound exceeds
it), so under the null "no more than the allowed growth" it fires with probability at most
`(1-c)/2`. The generator is seeded, so one pair of reports always gets one verdict.

The bootstrap treats the runs of one report as independent draws; drift between two bench
invocations (another tenant, a frequency change) is not in it, which is what the allowed growth
absorbs. `bench/gate_stats.py` measures how often the gate cries wolf and how often it catches a
real slowdown.

The verdicts are `edgec.gating.CheckResult`s, so the gate's table, JUnit and Markdown render them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgec.errors import BadInputError
from edgec.gating import MIN_LATENCY_RUNS, CheckResult, load_report

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "DEFAULT_CONFIDENCE",
    "KNOWN_SCHEMA",
    "RegressionThresholds",
    "Interval",
    "ratio_interval",
    "comparability",
    "compare_reports",
    "read_report",
]

#: The bench report schema this edgec writes; a reader refuses newer ones, whose keys may mean other things.
KNOWN_SCHEMA = "edgec.bench/1"
DEFAULT_CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
_SEED = 20260101
#: Latency statistics the latency threshold applies to, as (name, quantile).
_QUANTILES = (("p50", 0.5), ("p90", 0.9))


@dataclass(frozen=True)
class RegressionThresholds:
    """Limits of `edgec gate NEW --against OLD`; None means "not checked".

    Attributes:
        max_latency_regression: Allowed growth of p50 and p90, in percent of the old value.
        max_accuracy_regression_pp: Allowed drop of top-1 accuracy, in percentage points.
        max_size_growth: Allowed growth of the artifact's size on disk, in percent.
        confidence: Two-sided confidence of the latency intervals (0.5..1, exclusive).
    """

    max_latency_regression: float | None = None
    max_accuracy_regression_pp: float | None = None
    max_size_growth: float | None = None
    confidence: float = DEFAULT_CONFIDENCE

    def __post_init__(self) -> None:
        for name in ("max_latency_regression", "max_accuracy_regression_pp", "max_size_growth"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise BadInputError(f"--{name.replace('_', '-')} must be a finite number, got {value!r}")
        if not 0.5 <= self.confidence < 1:
            raise BadInputError(f"--confidence must be in [0.5, 1), got {self.confidence!r}")

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_latency_regression, self.max_accuracy_regression_pp,
                                           self.max_size_growth))


@dataclass(frozen=True)
class Interval:
    """A relative change `new / old - 1` (as a fraction) with its bootstrap confidence interval."""

    change: float
    low: float
    high: float
    confidence: float


def ratio_interval(new: np.ndarray, old: np.ndarray, quantile: float, *, confidence: float = DEFAULT_CONFIDENCE,
                   resamples: int = BOOTSTRAP_RESAMPLES, seed: int = _SEED) -> Interval:
    """`q(new) / q(old) - 1` and its percentile-bootstrap interval (see the module docstring).

    Quantiles are numpy's "linear" ones, as in the report's summary. Each resample draws
    `len(new)` runs from `new` and `len(old)` from `old`, with replacement, from one seeded generator.
    """
    new, old = np.asarray(new, dtype=np.float64), np.asarray(old, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boot_new = np.quantile(new[rng.integers(0, new.size, (resamples, new.size))], quantile, axis=1)
    boot_old = np.quantile(old[rng.integers(0, old.size, (resamples, old.size))], quantile, axis=1)
    ratios = boot_new / np.maximum(boot_old, np.finfo(np.float64).tiny) - 1.0
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    change = float(np.quantile(new, quantile) / max(float(np.quantile(old, quantile)), np.finfo(np.float64).tiny) - 1.0)
    return Interval(change, float(low), float(high), confidence)


#: What must match for two reports' latencies to be comparable: (label, path into the report).
_SAME_DEVICE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CPU", ("host", "cpu_model")),
    ("architecture", ("host", "machine")),
    ("target", ("target",)),
    ("threads", ("threads",)),
    ("batch", ("batch",)),
    ("input shapes", ("input_shapes",)),
)


def read_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A bench report from disk, refusing one written under a newer schema than `KNOWN_SCHEMA`."""
    report = load_report(path)
    if report["schema"] != KNOWN_SCHEMA:
        raise BadInputError(f"report {path} has schema {report['schema']!r}, newer than this edgec reads"
                            f" ({KNOWN_SCHEMA}): upgrade edgec")
    return report


def _get(report: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = report
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node


def comparability(new: Mapping[str, Any], old: Mapping[str, Any]) -> list[str]:
    """What differs between the devices and settings two reports were measured with (empty: comparable).

    A fact either report lacks counts as a difference: a gate cannot vouch for a device it cannot name.
    """
    problems = []
    for label, path in _SAME_DEVICE:
        a, b = _get(new, path), _get(old, path)
        if a is None or b is None:
            problems.append(f"{label} not recorded in the {'new' if a is None else 'old'} report")
        elif a != b:
            problems.append(f"{label} {b!r} -> {a!r}")
    return problems


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def _latency_checks(new: Mapping[str, Any], old: Mapping[str, Any], allowed_pct: float,
                    confidence: float) -> list[CheckResult]:
    """p50 and p90 regression checks on the raw runs; missing or too few runs fail closed."""
    runs = {}
    for which, report in (("new", new), ("old", old)):
        samples = _get(report, ("latency_ms", "samples"))
        if not isinstance(samples, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in samples):
            runs[which] = f"the {which} report has no raw latency samples (re-run `edgec bench --json` with this edgec)"
        elif len(samples) < MIN_LATENCY_RUNS:
            runs[which] = f"the {which} report has only {len(samples)} timed runs (bench with --runs {MIN_LATENCY_RUNS} or more)"
        elif not all(math.isfinite(v) for v in samples):
            runs[which] = f"the {which} report's latency samples are not all finite numbers"
        else:
            runs[which] = np.asarray(samples, dtype=np.float64)
    checks = []
    level = f"{confidence * 100:g}%"
    for key, q in _QUANTILES:
        name, metric = f"latency_{key}_regression", f"latency_ms.{key} new/old - 1"
        problem = next((r for r in runs.values() if isinstance(r, str)), None)
        if problem:
            checks.append(CheckResult(name, metric, None, allowed_pct, "<=", False, f"{key}: {problem}: fail", "%"))
            continue
        found = ratio_interval(runs["new"], runs["old"], q, confidence=confidence)
        failed = found.low * 100 > allowed_pct
        judged = "> " if failed else ("<= " if found.change * 100 <= allowed_pct else "within noise of ")
        message = (f"{key} {_pct(found.change)} [{level} CI {_pct(found.low)}, {_pct(found.high)}] {judged}"
                   f"{allowed_pct:g}% allowed: {'FAIL' if failed else 'pass'}")
        checks.append(CheckResult(name, metric, found.change * 100, allowed_pct, "<=", not failed, message, "%"))
    return checks


def _number(report: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    value = _get(report, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _growth_check(name: str, metric: str, change: float | None, missing: str | None, allowed: float,
                  unit: str) -> CheckResult:
    """One "grew by at most `allowed` (in `unit`)" check; `missing` says which reading is absent (fails closed)."""
    if change is None:
        return CheckResult(name, metric, None, allowed, "<=", False, f"{metric}: {missing}: fail", unit)
    passed = change <= allowed
    message = f"{metric} {change:+.2f} {unit} {'<=' if passed else '>'} {allowed:g} {unit} allowed: {'pass' if passed else 'FAIL'}"
    return CheckResult(name, metric, change, allowed, "<=", passed, message, unit)


def _absent(new: float | None, old: float | None, how: str) -> str | None:
    """Which report lacks a reading, and how to get it; None when both have it."""
    if new is not None and old is not None:
        return None
    return f"not in the {'new' if new is None else 'old'} report ({how})"


def compare_reports(new: Mapping[str, Any], old: Mapping[str, Any], thresholds: RegressionThresholds, *,
                    allow_different_device: bool = False) -> list[CheckResult]:
    """The regression checks of `new` against `old`, in a fixed order: latency p50, p90, accuracy, size.

    Raises:
        BadInputError: No threshold given, or the reports come from different devices or settings
            (unless `allow_different_device`).
    """
    if not thresholds.any:
        raise BadInputError("no regression thresholds given: pass --max-latency-regression, "
                            "--max-accuracy-regression-pp or --max-size-growth")
    problems = comparability(new, old)
    if problems and not allow_different_device:
        raise BadInputError(f"the reports cannot be compared: {'; '.join(problems)} (--allow-different-device to compare anyway)")
    checks: list[CheckResult] = []
    if thresholds.max_latency_regression is not None:
        checks += _latency_checks(new, old, thresholds.max_latency_regression, thresholds.confidence)
    if thresholds.max_accuracy_regression_pp is not None:
        new_acc, old_acc = (_number(r, ("drift", "accuracy")) for r in (new, old))
        missing = _absent(new_acc, old_acc, "bench with --data and --labels")
        drop = None if missing else (old_acc - new_acc) * 100  # type: ignore[operator]
        checks.append(_growth_check("accuracy_regression_pp", "top-1 accuracy drop", drop, missing,
                                    thresholds.max_accuracy_regression_pp, "pp"))
    if thresholds.max_size_growth is not None:
        new_size, old_size = (_number(r, ("size_bytes",)) for r in (new, old))
        missing = _absent(new_size, old_size or None, "re-run `edgec bench --json`")
        growth = None if missing else (new_size / old_size - 1) * 100  # type: ignore[operator]
        checks.append(_growth_check("size_growth", "size growth", growth, missing, thresholds.max_size_growth, "%"))
    return checks
