"""Is a new build worse than an earlier one on the same device, beyond noise? Checks of a bench report against an older one.

Latency is judged on the raw timed runs both reports keep (`latency_ms.samples`), not on their
summaries: a p90 that grew 6% means nothing until we know how much it moves by chance. For each
statistic (p50, p90) the change is `r = q(new) / q(old) - 1`, and its confidence interval comes from
a percentile bootstrap: resample each report's runs with replacement `BOOTSTRAP_RESAMPLES` times,
recompute `r` on every resample, and take the `(1-c)/2` and `(1+c)/2` quantiles of those ratios.
A check fails when the estimate exceeds the allowed growth `a` and the interval lies wholly above
`a/2` (`change > a` and `low > a/2`): a regression the data says is larger than allowed and, with
confidence `c`, larger than half of it. So a true growth of at most `a/2` fails with probability at
most `(1-c)/2`, and one of about `a` half the time. Why not "the whole interval above `a`": that rule
passes most true growths up to `1.5a`; `bench/gate_stats.py` measured it (allowed 5%, 1200 runs, 20
pairs, 2-core shared AMD EPYC) catching an exact +10% in 18 of 20 pairs, this rule in 19, each with at
most 1 false alarm in 20 same-model pairs (the margin `a/2` was picked on an earlier measurement, the
rates come from a later one). The generator is seeded, so one pair of reports always gets one verdict.

The bootstrap treats the runs of one report as independent draws, so drift between two bench
invocations (another tenant, a frequency change: on a shared machine medians move by tens of
percent) is not in it. When both reports timed the same float baseline file (equal
`provenance.baseline_sha256`) in interleaved rounds with the artifact, `s = q(artifact) / q(baseline)`
replaces `q(artifact)`: the machine's state of the moment divides out, and the baseline's run i is
resampled together with the artifact's run i (they shared a round). Otherwise the absolute
quantiles are compared, and the verdict line says which. `bench/gate_stats.py` measures how often
the gate cries wolf and how often it catches a real slowdown.

The verdicts are `edgec.gating.CheckResult`s, so the gate's table, JUnit and Markdown render them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgec.errors import BadInputError
from edgec.gating import MIN_LATENCY_RUNS, CheckResult
from edgec.harness.accuracy import COSINE_DIGITS
from edgec.report.types import BenchReport, LatencyStats, OutputDrift

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "DEFAULT_CONFIDENCE",
    "RegressionThresholds",
    "Interval",
    "ratio_interval",
    "comparability",
    "compare_reports",
    "cosine_bound",
]

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
        min_cosine_vs_old: Least cosine between the new and the old artifact's outputs on any sample,
            as bounded by `cosine_bound` (both reports need drift against the same baseline file).
        confidence: Two-sided confidence of the latency intervals (0.5..1, exclusive).
    """

    max_latency_regression: float | None = None
    max_accuracy_regression_pp: float | None = None
    max_size_growth: float | None = None
    min_cosine_vs_old: float | None = None
    confidence: float = DEFAULT_CONFIDENCE

    def __post_init__(self) -> None:
        for name in ("max_latency_regression", "max_accuracy_regression_pp", "max_size_growth", "min_cosine_vs_old"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise BadInputError(f"--{name.replace('_', '-')} must be a finite number, got {value!r}")
        if not 0.5 <= self.confidence < 1:
            raise BadInputError(f"--confidence must be in [0.5, 1), got {self.confidence!r}")

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.max_latency_regression, self.max_accuracy_regression_pp,
                                           self.max_size_growth, self.min_cosine_vs_old))


@dataclass(frozen=True)
class Interval:
    """A relative change `new / old - 1` (as a fraction) with its bootstrap confidence interval."""

    change: float
    low: float
    high: float
    confidence: float


def _statistic(runs: np.ndarray, reference: np.ndarray | None, quantile: float, rng: np.random.Generator,
               resamples: int) -> tuple[float, np.ndarray]:
    """`q(runs)`, or `q(runs) / q(reference)` with a reference, on the data and on each bootstrap resample.

    A reference's runs are resampled at the same indices as `runs` (its i-th run was timed in the
    same interleaved round as theirs), so noise both share stays paired in every resample.
    """
    index = rng.integers(0, runs.size, (resamples, runs.size))
    point, boot = float(np.quantile(runs, quantile)), np.quantile(runs[index], quantile, axis=1)
    if reference is not None:
        point /= float(np.quantile(reference, quantile))
        boot = boot / np.quantile(reference[index], quantile, axis=1)
    return point, boot


def ratio_interval(new: np.ndarray, old: np.ndarray, quantile: float, *, new_reference: np.ndarray | None = None,
                   old_reference: np.ndarray | None = None, confidence: float = DEFAULT_CONFIDENCE,
                   resamples: int = BOOTSTRAP_RESAMPLES, seed: int = _SEED) -> Interval:
    """`s(new) / s(old) - 1` and its percentile-bootstrap interval (see the module docstring), where `s` is
    the quantile, or the quantile relative to the reference timed alongside when both references are given.

    Quantiles are numpy's "linear" ones, as in the report's summary. Each resample draws `len(new)`
    runs from `new` and `len(old)` from `old`, with replacement, from one seeded generator.
    """
    rng = np.random.default_rng(seed)
    paired = new_reference is not None and old_reference is not None
    point_new, boot_new = _statistic(np.asarray(new, dtype=np.float64), np.asarray(new_reference, dtype=np.float64)
                                     if paired else None, quantile, rng, resamples)
    point_old, boot_old = _statistic(np.asarray(old, dtype=np.float64), np.asarray(old_reference, dtype=np.float64)
                                     if paired else None, quantile, rng, resamples)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot_new / boot_old - 1.0, [tail, 1.0 - tail])
    return Interval(point_new / point_old - 1.0, float(low), float(high), confidence)


#: What must match for two reports' latencies to be comparable: (label, reader).
_SAME_DEVICE: tuple[tuple[str, Callable[[BenchReport], Any]], ...] = (
    ("CPU", lambda r: r.host.cpu_model if r.host else None),
    ("architecture", lambda r: r.host.machine if r.host else None),
    ("target", lambda r: r.target),
    ("threads", lambda r: r.threads),
    ("batch", lambda r: r.batch),
    ("input shapes", lambda r: r.input_shapes),
)


def comparability(new: BenchReport, old: BenchReport) -> list[str]:
    """What differs between the devices and settings two reports were measured with (empty: comparable).

    A fact either report lacks counts as a difference: a gate cannot vouch for a device it cannot name.
    """
    problems = []
    for label, read in _SAME_DEVICE:
        a, b = read(new), read(old)
        if a is None or b is None:
            problems.append(f"{label} not recorded in the {'new' if a is None else 'old'} report")
        elif a != b:
            problems.append(f"{label} {b!r} -> {a!r}")
    return problems


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def _runs(stats: LatencyStats | None, which: str) -> np.ndarray | str:
    """A section's raw timed runs, or why they cannot be judged."""
    samples = stats.samples if stats else None
    if not isinstance(samples, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in samples):
        return f"the {which} report has no raw latency samples (re-run `edgec bench --json` with this edgec)"
    if len(samples) < MIN_LATENCY_RUNS:
        return f"the {which} report has only {len(samples)} timed runs (bench with --runs {MIN_LATENCY_RUNS} or more)"
    if not all(math.isfinite(v) for v in samples):
        return f"the {which} report's latency samples are not all finite numbers"
    return np.asarray(samples, dtype=np.float64)


def _baseline_sha(report: BenchReport) -> str | None:
    return report.provenance.baseline_sha256 if report.provenance else None


def _references(new: BenchReport, old: BenchReport, runs: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """Both reports' float-baseline runs when both timed the same baseline file alongside the artifact, else None."""
    if _baseline_sha(new) is None or _baseline_sha(new) != _baseline_sha(old):
        return None
    found = {which: _runs(report.baseline.latency_ms if report.baseline else None, which)
             for which, report in (("new", new), ("old", old))}
    if any(isinstance(r, str) or r.size != runs[which].size for which, r in found.items()):
        return None
    return found  # type: ignore[return-value]


def _latency_checks(new: BenchReport, old: BenchReport, allowed_pct: float, confidence: float) -> list[CheckResult]:
    """p50 and p90 regression checks on the raw runs; missing or too few runs fail closed."""
    runs = {which: _runs(report.latency_ms, which) for which, report in (("new", new), ("old", old))}
    problem = next((r for r in runs.values() if isinstance(r, str)), None)
    references = None if problem else _references(new, old, runs)
    how = " (relative to the same float baseline timed alongside)" if references else ""
    checks = []
    level = f"{confidence * 100:g}%"
    for key, q in _QUANTILES:
        name, metric = f"latency_{key}_regression", f"latency_ms.{key} new/old - 1"
        if problem:
            checks.append(CheckResult(name, metric, None, allowed_pct, "<=", False, f"{key}: {problem}: fail", "%"))
            continue
        found = ratio_interval(runs["new"], runs["old"], q, confidence=confidence,
                               new_reference=references["new"] if references else None,
                               old_reference=references["old"] if references else None)
        failed = found.change * 100 > allowed_pct and found.low * 100 > allowed_pct / 2
        # A change above the allowance that passes is within noise: the table says so instead of "<=".
        op = "<=" if failed or found.change * 100 <= allowed_pct else "within noise of"
        message = (f"{key} {_pct(found.change)} [{level} CI {_pct(found.low)}, {_pct(found.high)}] {'>' if failed else op} "
                   f"{allowed_pct:g}% allowed: {'FAIL' if failed else 'pass'}{how}")
        checks.append(CheckResult(name, metric, found.change * 100, allowed_pct, op, not failed, message, "%"))
    return checks


def _number(value: Any) -> float | None:
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


def cosine_bound(new_min: float, old_min: float) -> float:
    """Least possible cosine between new and old outputs of one sample, from each one's cosine to the same baseline.

    Angles between vectors obey the triangle inequality, so `angle(new, old) <= acos(new_min) +
    acos(old_min)` on every sample, and `cos(min(pi, that sum))` bounds their cosine from below. The
    reports keep no outputs, so this bound is what they can prove; it is tight when both drifted the
    opposite ways and conservative otherwise.
    """
    angle = math.acos(max(-1.0, min(1.0, new_min))) + math.acos(max(-1.0, min(1.0, old_min)))
    return math.cos(min(math.pi, angle))


def _output_bound(new: OutputDrift, old: OutputDrift) -> float:
    """`cosine_bound` of one output: from each report's worst sample, or, when both kept every sample's cosine
    (`cosines`, same count), the worst of the per-sample bounds, which is tighter when different samples drifted
    most. A recorded cosine is rounded to `COSINE_DIGITS` decimals, so each is lowered by half a unit of the last
    one first: the bound stays a bound. NaN when either worst sample is missing or not finite (fails closed)."""
    pair = [_number(drift.cosine_min) for drift in (new, old)]
    if None in pair:
        return math.nan
    bound = cosine_bound(*pair)  # type: ignore[arg-type]
    samples = [drift.cosines or [] for drift in (new, old)]
    numbers = [[_number(c) for c in cosines] for cosines in samples]
    if samples[0] and len(samples[0]) == len(samples[1]) and None not in numbers[0] + numbers[1]:
        half = 0.5 * 10.0 ** -COSINE_DIGITS
        bound = max(bound, min(cosine_bound(a - half, b - half) for a, b in zip(*numbers)))  # type: ignore[operator]
    return bound


def _cosine_check(new: BenchReport, old: BenchReport, least: float) -> CheckResult:
    """`min_cosine_vs_old`: the worst output's `cosine_bound`; fails closed unless both reports measured drift
    of the same outputs against the same baseline file on the same data."""
    name, metric = "cosine_vs_old", "min cosine new vs old (bound)"
    same = _baseline_sha(new) is not None and _baseline_sha(new) == _baseline_sha(old) \
        and (new.data, new.samples) == (old.data, old.samples)
    outputs = [(report.drift.outputs if report.drift else None) or {} for report in (new, old)]
    bounds = []
    for output in outputs[0] if same and set(outputs[0]) == set(outputs[1]) else ():
        bounds.append(_output_bound(outputs[0][output], outputs[1][output]))
    if not bounds or any(math.isnan(b) for b in bounds):
        why = "both reports need drift against the same baseline file on the same data (bench each with its float baseline)"
        return CheckResult(name, metric, None, least, ">=", False, f"{metric}: {why}: fail", "")
    value = min(bounds)
    passed = value >= least
    message = f"{metric} {value:.6f} {'>=' if passed else '<'} {least:g} required: {'pass' if passed else 'FAIL'}"
    return CheckResult(name, metric, value, least, ">=", passed, message, "")


def compare_reports(new: BenchReport, old: BenchReport, thresholds: RegressionThresholds, *,
                    allow_different_device: bool = False) -> list[CheckResult]:
    """The regression checks of `new` against `old`, in a fixed order: latency p50, p90, accuracy, size, cosine.

    Raises:
        BadInputError: No threshold given, or the reports come from different devices or settings
            (unless `allow_different_device`).
    """
    if not thresholds.any:
        raise BadInputError("no regression thresholds given: pass --max-latency-regression, "
                            "--max-accuracy-regression-pp, --max-size-growth or --min-cosine-vs-old")
    problems = comparability(new, old)
    if problems and not allow_different_device:
        raise BadInputError(f"the reports cannot be compared: {'; '.join(problems)} (--allow-different-device to compare anyway)")
    checks: list[CheckResult] = []
    if thresholds.max_latency_regression is not None:
        checks += _latency_checks(new, old, thresholds.max_latency_regression, thresholds.confidence)
    if thresholds.max_accuracy_regression_pp is not None:
        new_acc, old_acc = (_number(r.drift.accuracy if r.drift else None) for r in (new, old))
        missing = _absent(new_acc, old_acc, "bench with --data and --labels")
        drop = None if missing else (old_acc - new_acc) * 100  # type: ignore[operator]
        checks.append(_growth_check("accuracy_regression_pp", "top-1 accuracy drop", drop, missing,
                                    thresholds.max_accuracy_regression_pp, "pp"))
    if thresholds.max_size_growth is not None:
        new_size, old_size = (_number(r.size_bytes) for r in (new, old))
        missing = _absent(new_size, old_size or None, "re-run `edgec bench --json`")
        growth = None if missing else (new_size / old_size - 1) * 100  # type: ignore[operator]
        checks.append(_growth_check("size_growth", "size growth", growth, missing, thresholds.max_size_growth, "%"))
    if thresholds.min_cosine_vs_old is not None:
        checks.append(_cosine_check(new, old, thresholds.min_cosine_vs_old))
    return checks
