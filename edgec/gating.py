"""Release gate: thresholds in, verdicts out, as pure functions over an ``edgec.bench/*`` report.

The gate never runs a model. ``edgec bench --json`` measures once; the gate can then be re-run
against any policy (locally, in CI, per target) without re-measuring, and its verdict depends
only on the report and the thresholds, so it is trivially testable.

Vocabulary. Every threshold is named ``<min|max>_<metric>_<unit>`` and is inclusive: a ``max_``
threshold passes when the measured value is ``<=`` it, a ``min_`` one when it is ``>=``. The
relative goals Olive calls *max-degradation* and *min-improvement* are already expressed through
report fields that compare against the baseline (``accuracy_drop_pp``, ``speedup_p50``), so one
absolute comparison per threshold covers both kinds.

Units. edgec's "mb" means MiB (2**20 bytes) everywhere: in ``peak_rss_mb`` in the report and in the
``max_size_mb`` / ``max_peak_rss_mb`` thresholds. ``max_size_mb`` compares ``size_bytes / 2**20``.

Fail closed. A metric the policy asks about but the report lacks (key absent, ``null``, an empty
``drift.outputs``, or a value that is not a number) fails its check, with a message naming the
missing field and how to get it; a NaN value fails too. A release gate that silently passes
because nothing was measured is worse than none.

Impossible is an error. A report whose metrics cannot be measured values (a cosine above 1, a
negative latency, an infinite speedup), that repeats a key or lacks the bench schema, and a
threshold no measurement could meet or miss (``min_cosine = 1.5``) are refused with exit 2: a
corrupt or edited report must not reach a verdict at all.

The result is usable as a boolean (as Polygraphy's comparator results are): ``if evaluate(...):``
reads as "the gate passed".
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec.artifact import DuplicateKeyError, strict_loads
from edgec.errors import BadInputError, EdgecError, first_line
from edgec.limits import regular_file
from edgec.report.types import BenchReport

__all__ = [
    "THRESHOLD_NAMES",
    "GATE_SCHEMA",
    "MIN_LATENCY_RUNS",
    "REPORT_SCHEMA_PREFIX",
    "CheckResult",
    "GateResult",
    "default_thresholds",
    "load_report",
    "load_policy",
    "evaluate",
    "format_table",
    "to_junit",
    "to_markdown",
]

#: Every threshold the gate understands, in the order checks are evaluated and reported.
THRESHOLD_NAMES: tuple[str, ...] = (
    "max_accuracy_drop_pp",
    "min_top1_agreement",
    "min_cosine",
    "max_latency_p90_ms",
    "min_speedup",
    "max_size_mb",
    "max_peak_rss_mb",
)

#: Fewest timed runs a latency or speedup threshold accepts: a median of a handful of runs moves by
#: tens of percent between runs on a shared machine.
MIN_LATENCY_RUNS = 20
#: Schema tag of `GateResult.to_dict`; bump the number only if a key changes meaning.
GATE_SCHEMA = "edgec.gate/1"
#: Reports the gate accepts carry a ``schema`` starting with this.
REPORT_SCHEMA_PREFIX = "edgec.bench/"

_REGENERATE = "re-run `edgec bench --json` to regenerate the report"
_NEED_BASELINE = "bench a compile output dir, or pass --baseline MODEL.onnx, to get it"

#: How to obtain a report field when it is missing; looked up by the dotted field path, most
#: specific first, so ``drift`` being null and ``drift.accuracy_drop_pp`` being null get
#: different advice.
_HINTS: dict[str, str] = {
    "drift": _NEED_BASELINE,
    "drift.outputs": _NEED_BASELINE,
    "speedup_p50": _NEED_BASELINE,
    "drift.accuracy_drop_pp": "run edgec bench with --data and --labels so accuracy is measured",
    "drift.degenerate": "check the model and its inputs: real data, and weights with a sane initialization",
    "latency_ms.runs": "re-run edgec bench with more --runs",
    "drift.top1_agreement": (
        "it is measured only for class-score outputs; drop min_top1_agreement for this model"
    ),
}


class _Missing(Exception):
    """Raised by metric readers: ``field`` (dotted path) is ``state`` ("absent", "null", ...)."""

    def __init__(self, field: str, state: str) -> None:
        super().__init__(f"{field} is {state}")
        self.field = field
        self.state = state


#: The values each metric (and so its threshold) can physically take, in the threshold's unit.
_POSSIBLE: dict[str, tuple[float, float]] = {
    "max_accuracy_drop_pp": (-100.0, 100.0),
    "min_top1_agreement": (0.0, 1.0),
    "min_cosine": (-1.0, 1.0),
    "max_latency_p90_ms": (0.0, math.inf),
    "min_speedup": (0.0, math.inf),
    "max_size_mb": (0.0, math.inf),
    "max_peak_rss_mb": (0.0, math.inf),
}
#: Float rounding lets a measured cosine of identical outputs come out a hair above 1.
_ROUNDING = 1e-6


def _impossible(field: str, value: Any, valid: tuple[float, float]) -> BadInputError:
    low, high = valid
    return BadInputError(f"report: {field} = {value!r} is impossible (a measured value lies in [{low:g}, {high:g}]"
                         f" and is finite); the report is corrupt or edited: {_REGENERATE}")


def _number(value: Any, field: str, valid: tuple[float, float] = (-math.inf, math.inf)) -> float:
    """Return ``value`` as a float; raise `_Missing` for null and non-numbers (bools included), and
    `BadInputError` for a number no measurement can give (NaN passes: its check fails closed)."""
    if value is None:
        raise _Missing(field, "null")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Missing(field, f"not a number ({value!r})")
    try:
        number = float(value)
    except OverflowError:
        raise _impossible(field, f"<{len(str(value))}-digit integer>", valid) from None
    if math.isnan(number):
        return number
    if not math.isfinite(number) or not valid[0] - _ROUNDING <= number <= valid[1] + _ROUNDING:
        raise _impossible(field, value, valid)
    return number


def _walk(report: BenchReport, path: tuple[str, ...]) -> Any:
    """Follow ``path`` through the typed report's attributes, raising `_Missing` at the first absent/null step."""
    node: Any = report
    for depth, name in enumerate(path):
        state = node.missing(name)
        if state is not None:
            raise _Missing(".".join(path[: depth + 1]), state)
        node = getattr(node, name)
    return node


def _field(threshold: str, *path: str, scale: float = 1.0) -> Callable[[BenchReport], float]:
    """Reader for one numeric report field of `threshold`'s metric, optionally scaled (e.g. bytes -> MiB)."""

    def read(report: BenchReport) -> float:
        return _number(_walk(report, path), ".".join(path), _POSSIBLE[threshold]) * scale

    return read


def _min_cosine(report: BenchReport) -> float:
    """Worst ``cosine_min`` over all outputs: the single worst sample of any output.

    Every output must carry a number: skipping one we cannot read would let it hide the worst
    sample. Any NaN makes the result NaN (plain ``min`` would depend on element order).
    """
    outputs = _walk(report, ("drift", "outputs"))
    if not outputs:
        raise _Missing("drift.outputs", "empty")
    values = []
    for name, stats in outputs.items():
        field = f"drift.outputs.{name}.cosine_min"
        state = stats.missing("cosine_min")
        if state is not None:
            raise _Missing(field, state)
        values.append(_number(stats.cosine_min, field, _POSSIBLE["min_cosine"]))
    return math.nan if any(math.isnan(v) for v in values) else min(values)


@dataclass(frozen=True)
class _Metric:
    """How one threshold is measured: report label, reader, comparison and display unit."""

    metric: str
    read: Callable[[BenchReport], float]
    op: str
    unit: str  # carries its own leading space where one is wanted ("x" for speedups has none)


_METRICS: dict[str, _Metric] = {
    "max_accuracy_drop_pp": _Metric(
        "drift.accuracy_drop_pp", _field("max_accuracy_drop_pp", "drift", "accuracy_drop_pp"), "<=", " pp"
    ),
    "min_top1_agreement": _Metric(
        "drift.top1_agreement", _field("min_top1_agreement", "drift", "top1_agreement"), ">=", ""
    ),
    "min_cosine": _Metric("min(drift.outputs.*.cosine_min)", _min_cosine, ">=", ""),
    "max_latency_p90_ms": _Metric("latency_ms.p90", _field("max_latency_p90_ms", "latency_ms", "p90"), "<=", " ms"),
    "min_speedup": _Metric("speedup_p50", _field("min_speedup", "speedup_p50"), ">=", "x"),
    "max_size_mb": _Metric(
        "size_bytes / 2**20", _field("max_size_mb", "size_bytes", scale=1.0 / 2**20), "<=", " MiB"
    ),
    "max_peak_rss_mb": _Metric("peak_rss_mb", _field("max_peak_rss_mb", "peak_rss_mb"), "<=", " MiB"),
}
assert tuple(_METRICS) == THRESHOLD_NAMES


def _fmt(x: float) -> str:
    """Six significant digits, keeping a trailing ``.0`` so a float reads as one (``2.0``)."""
    if not math.isfinite(x):
        return repr(x)
    return repr(float(f"{x:.6g}"))


def _fmt_pair(value: float, threshold: float) -> tuple[str, str]:
    """Format value and threshold, at full precision when rounding would make them look equal.

    Without this a boundary failure could read ``0.999 >= 0.999: fail``.
    """
    v, t = _fmt(value), _fmt(threshold)
    if v == t and value != threshold:
        return repr(value), repr(threshold)
    return v, t


@dataclass(frozen=True)
class CheckResult:
    """Verdict of one threshold against one report.

    Attributes:
        name: Threshold name, one of `THRESHOLD_NAMES`.
        metric: What was measured, as a report field path (``"latency_ms.p90"``).
        value: Measured value in the threshold's unit; None when the report lacks the metric.
        threshold: The limit it was compared with.
        op: ``"<="`` or ``">="``, both inclusive; ``"within noise of"`` for a regression check whose
            estimate is above its allowance but passes because the confidence interval does not clear it.
        passed: False when the comparison fails, the value is None, or the value is NaN.
        message: One line stating measurement, comparison and verdict, for logs and CI output.
        unit: Display unit of ``value`` and ``threshold`` (``"ms"``, ``"MiB"``, ``"pp"``, ``"x"``
            or ``""`` for fractions).
    """

    name: str
    metric: str
    value: float | None
    threshold: float
    op: str
    passed: bool
    message: str
    unit: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; a non-finite ``value`` becomes null (strict JSON has no NaN)."""
        value = self.value if self.value is not None and math.isfinite(self.value) else None
        return {
            "name": self.name,
            "metric": self.metric,
            "value": value,
            "threshold": self.threshold,
            "op": self.op,
            "unit": self.unit,
            "passed": self.passed,
            "message": self.message,
        }


@dataclass(frozen=True)
class GateResult:
    """All checks of one gate run; truthy exactly when the gate passed.

    A result with no checks does not pass: a gate that checked nothing must not release anything.
    """

    checks: tuple[CheckResult, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "checks", tuple(self.checks))

    @property
    def passed(self) -> bool:
        """True when there is at least one check and every check passed."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        """The checks that failed, in evaluation order."""
        return tuple(c for c in self.checks if not c.passed)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form, tagged with `GATE_SCHEMA`."""
        return {
            "schema": GATE_SCHEMA,
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
        }


def _degenerate_outputs(report: BenchReport) -> None:
    """Drift of an output that is all zero or constant across samples measures nothing (two all-zero
    models agree at cosine 1 and top-1 1.0): every drift threshold fails on it."""
    degenerate = report.drift.degenerate if report.drift else None
    if isinstance(degenerate, Mapping) and degenerate:
        name, why = next(iter(degenerate.items()))
        raise _Missing("drift.degenerate", f"output '{name}': {why}")


def _enough_runs(report: BenchReport) -> None:
    """A latency verdict from a handful of timed runs is noise: fewer than `MIN_LATENCY_RUNS` fail."""
    runs = _walk(report, ("latency_ms", "runs"))
    if isinstance(runs, (int, float)) and not isinstance(runs, bool) and runs < MIN_LATENCY_RUNS:
        raise _Missing("latency_ms.runs", f"only {runs:g} timed runs, fewer than the {MIN_LATENCY_RUNS} a latency verdict needs")


#: Which readings a metric depends on beyond its own field, checked before it is read.
_PRECONDITIONS: dict[str, Callable[[BenchReport], None]] = {
    "max_accuracy_drop_pp": _degenerate_outputs,
    "min_top1_agreement": _degenerate_outputs,
    "min_cosine": _degenerate_outputs,
    "max_latency_p90_ms": _enough_runs,
    "min_speedup": _enough_runs,
}
#: Fields whose `_Missing` means "measured, but the measurement says nothing", not "absent".
_MEANINGLESS = ("drift.degenerate", "latency_ms.runs")


def _check(name: str, report: BenchReport, threshold: float) -> CheckResult:
    spec = _METRICS[name]
    unit = spec.unit.strip()
    try:
        if name in _PRECONDITIONS:
            _PRECONDITIONS[name](report)
        value: float | None = spec.read(report)
    except _Missing as missing:
        hint = _HINTS.get(missing.field, _REGENERATE)
        # Name the field only when it is not the metric itself ("drift is null" vs "null").
        if missing.field != spec.metric:
            what = str(missing)
        else:
            what = "key absent" if missing.state == "absent" else missing.state
        message = f"{spec.metric} missing from report ({what}; {hint}): fail"
        if missing.field in _MEANINGLESS:
            message = f"{spec.metric} measures nothing: {missing.state} ({hint}): fail"
        return CheckResult(name, spec.metric, None, threshold, spec.op, False, message, unit)

    v, t = _fmt_pair(value, threshold)
    if math.isnan(value):
        passed = False
        message = f"{spec.metric} = {v}{spec.unit} is not a number: fail"
    else:
        passed = value <= threshold if spec.op == "<=" else value >= threshold
        verdict = "pass" if passed else "fail"
        message = f"{spec.metric} = {v}{spec.unit} {spec.op} {t}{spec.unit}: {verdict}"
    return CheckResult(name, spec.metric, value, threshold, spec.op, passed, message, unit)


def _unknown_threshold(name: str) -> BadInputError:
    return BadInputError(
        f"unknown threshold {name!r}: use one of {', '.join(THRESHOLD_NAMES)}"
    )


def _threshold_value(name: str, value: Any, where: str) -> float:
    """Validate one threshold value: a finite real number (a NaN limit would fail every check) that a
    measurement could meet or miss."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInputError(f"threshold {name} {where}must be a number, got {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        finite = False
    if not finite:
        raise BadInputError(f"threshold {name} {where}must be a finite number, got {str(value)[:40]}")
    low, high = _POSSIBLE[name]
    if not low <= value <= high:
        valid = f"[{low:g}, {high:g}]" if math.isfinite(high) else f">= {low:g}"
        raise BadInputError(f"threshold {name} {where}must be {valid}, got {value!r}")
    return float(value)


def _typed(report: BenchReport | Mapping[str, Any]) -> BenchReport:
    """The report as a `BenchReport`: a dict must be an object carrying the bench schema."""
    if isinstance(report, BenchReport):
        return report
    if not isinstance(report, Mapping):
        raise BadInputError(
            f"report must be a JSON object, got {type(report).__name__}: "
            "pass the file written by `edgec bench --json`"
        )
    schema = report.get("schema")
    if not isinstance(schema, str) or not schema.startswith(REPORT_SCHEMA_PREFIX):
        raise BadInputError(f"report has schema {schema!r}, expected {REPORT_SCHEMA_PREFIX}*: "
                            "pass the report written by `edgec bench --json`")
    return BenchReport.from_dict(report)


def _refuse_impossible(report: BenchReport) -> None:
    """Read every metric the gate knows, so an impossible one is refused even if no threshold asks for it."""
    for metric in _METRICS.values():
        try:
            metric.read(report)
        except _Missing:
            continue  # a missing metric fails its own check, if asked for


def evaluate(report: BenchReport | Mapping[str, Any], thresholds: Mapping[str, float | None]) -> GateResult:
    """Check a bench report against thresholds.

    A metric's reader tells a key the report lacks (`BenchReport.missing`: "absent") from one measured
    as null or holding no number, to say in its failure how to get it.

    Args:
        report: A typed report, or a report dict as returned by `load_report` (schema ``edgec.bench/*``,
            read as a `BenchReport`).
        thresholds: Threshold name -> limit. A value of None means "not given", so the CLI can
            pass every option straight through whether or not the user set it.

    Returns:
        One `CheckResult` per given threshold, in `THRESHOLD_NAMES` order (stable output no
        matter how the policy was written).

    Raises:
        BadInputError: The report is not a dict, lacks the bench schema (or is of a newer one), has a
            section that is not an object, or holds an impossible metric; no threshold is given, a name is unknown, or a limit is not a finite number a
            measurement could meet.
    """
    typed = _typed(report)
    _refuse_impossible(typed)
    given: dict[str, float] = {}
    for name, value in thresholds.items():
        if name not in _METRICS:
            raise _unknown_threshold(name)
        if value is not None:
            given[name] = _threshold_value(name, value, "")
    if not given:
        raise BadInputError("no thresholds given: pass --policy or a --max-/--min- option")
    return GateResult(
        tuple(_check(name, typed, given[name]) for name in THRESHOLD_NAMES if name in given)
    )


def default_thresholds(report: BenchReport) -> tuple[dict[str, float], str]:
    """The policy `edgec gate` applies when given none: the `[thresholds]` of the report's target, and where they came from.

    A report of `edgec.bench/2` carries its target's thresholds as the artifact was built with them; an
    older one names only the target, whose built-in descriptor's thresholds are then read.

    Raises:
        BadInputError: The report names no target (a plain .onnx was benched) or its target has no thresholds.
    """
    how = "pass --policy gate.toml or --max-/--min- options"
    if report.thresholds is not None:
        thresholds, source = dict(report.thresholds), f"the [thresholds] of target '{report.target}' (recorded in the report)"
    elif report.target and report.target != "unspecified":
        from edgec.target import load_target  # deferred: a gate with explicit thresholds never needs descriptors

        try:
            thresholds = dict(load_target(report.target).thresholds)
        except EdgecError as exc:
            raise BadInputError(f"no thresholds given, and the report's target cannot be read ({exc}): {how}") from None
        source = f"the [thresholds] of the built-in target '{report.target}' (an edgec.bench/1 report does not record them)"
    else:
        raise BadInputError(f"no thresholds given, and the report names no target (a plain .onnx was benched): {how}")
    if not thresholds:
        raise BadInputError(f"no thresholds given, and target '{report.target}' sets no [thresholds]: {how}")
    shown = ", ".join(f"{name} {thresholds[name]:g}" for name in THRESHOLD_NAMES if name in thresholds)
    return {name: thresholds[name] for name in THRESHOLD_NAMES if name in thresholds}, f"{source}: {shown}"


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a report written by ``edgec bench --json``.

    Only the envelope is validated (a JSON object whose ``schema`` starts with ``edgec.bench/``):
    missing metrics are the checks' business, so a partial report still gates, failing closed on
    exactly the checks that need what it lacks. ``NaN`` (and ``Infinity``) tokens are accepted:
    NaN in a model's outputs propagates into the drift metrics bench writes, and the gate must
    read such a report in order to fail it, not refuse it.

    Raises:
        BadInputError: The file is missing or unreadable, not JSON, or not a bench report.
    """
    p = Path(path)
    if p.exists():
        regular_file(p, "cannot read report")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(
            f"report {p} not found: write one with `edgec bench --json`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BadInputError(f"cannot read report {p} ({reason}): pass a readable file") from None
    try:
        data = strict_loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"report {p} is not valid JSON (line {exc.lineno}: {exc.msg}): "
            "pass the file written by `edgec bench --json`"
        ) from None
    except DuplicateKeyError as exc:
        raise BadInputError(f"report {p}: {exc}; {_REGENERATE}") from None
    except (RecursionError, ValueError) as exc:  # nesting too deep; an integer too long to convert
        raise BadInputError(f"report {p} cannot be read ({first_line(exc)}): {_REGENERATE}") from None
    if not isinstance(data, dict):
        raise BadInputError(
            f"report {p} holds a JSON {type(data).__name__}, not an object: "
            "pass the file written by `edgec bench --json`"
        )
    schema = data.get("schema")
    if not isinstance(schema, str) or not schema.startswith(REPORT_SCHEMA_PREFIX):
        raise BadInputError(
            f"report {p} has schema {schema!r}, expected {REPORT_SCHEMA_PREFIX}*: "
            "pass the file written by `edgec bench --json`"
        )
    return data


def load_policy(path: str | os.PathLike[str]) -> dict[str, float]:
    """Read thresholds from a TOML policy file.

    Thresholds may sit at the top level or in a ``[thresholds]`` table (so a policy can live in
    a larger config file); both may be used together, but a name may appear only once. Keys are
    the exact `THRESHOLD_NAMES`: a typo must be an error, since a silently ignored threshold is
    a gate that checks less than its author believes.

    Returns:
        Threshold name -> limit, in `THRESHOLD_NAMES` order; empty when the file sets none
        (`evaluate` then reports that nothing was given).

    Raises:
        BadInputError: The file is missing, unreadable or not TOML; a key is unknown; a name is
            given twice; a value is not a finite number.
    """
    p = Path(path)
    if p.exists():
        regular_file(p, "cannot read policy")
    try:
        with p.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise BadInputError(f"policy {p} not found: pass an existing TOML file") from None
    except OSError as exc:
        raise BadInputError(
            f"cannot read policy {p} ({exc.strerror or exc}): pass a readable TOML file"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"policy {p} is not valid TOML ({reason}): fix its syntax") from None

    entries: list[tuple[str, Any, str]] = []
    for key, value in doc.items():
        if key == "thresholds":
            if not isinstance(value, dict):
                raise BadInputError(
                    f"policy {p}: 'thresholds' must be a table, e.g. [thresholds]"
                )
            entries.extend((k, v, "thresholds.") for k, v in value.items())
        else:
            entries.append((key, value, ""))

    found: dict[str, float] = {}
    for key, value, prefix in entries:
        if key not in _METRICS:
            raise BadInputError(
                f"policy {p}: unknown key {prefix}{key!r}: use one of {', '.join(THRESHOLD_NAMES)}"
            )
        if key in found:
            raise BadInputError(
                f"policy {p}: threshold {key} given twice: keep it either at top level "
                "or under [thresholds]"
            )
        found[key] = _threshold_value(key, value, f"in policy {p} ")
    return {name: found[name] for name in THRESHOLD_NAMES if name in found}


# ---------------------------------------------------------------------------------------------
# Renderers. Each shows the same columns so a human, a JUnit viewer and a CI summary agree.


def _cells(c: CheckResult) -> tuple[str, str, str, str]:
    """(check, measured, threshold, result) display strings for one check."""
    unit = f" {c.unit}" if c.unit and c.unit != "x" else c.unit
    if c.value is None:
        measured = "missing"
        limit = _fmt(c.threshold)
    else:
        v, limit = _fmt_pair(c.value, c.threshold)
        measured = f"{v}{unit}"
    return c.name, measured, f"{c.op} {limit}{unit}", "PASS" if c.passed else "FAIL"


def _verdict(result: GateResult) -> str:
    total = len(result.checks)
    failed = result.failures
    if result.passed:
        return f"gate: PASS ({total} of {total} checks passed)"
    if not failed:
        return "gate: FAIL (no checks were run)"
    names = ", ".join(c.name for c in failed)
    return f"gate: FAIL ({len(failed)} of {total} checks failed: {names})"


def format_table(result: GateResult) -> str:
    """Aligned plain-text table for terminals, then each failure's message, then the verdict.

    Failure messages are repeated under the table because only they say *why* a metric is
    missing and how to get it.
    """
    header = ("check", "measured", "threshold", "result")
    rows = [header, *(_cells(c) for c in result.checks)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    # Names left-aligned, numbers right-aligned so their units line up, verdict last.
    w_name, w_measured, w_limit, _ = widths
    lines = [
        f"{name:<{w_name}}  {measured:>{w_measured}}  {limit:>{w_limit}}  {verdict}"
        for name, measured, limit, verdict in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failures = [f"  {c.name}: {c.message}" for c in result.failures]
    if failures:
        lines += ["", "failed:", *failures]
    lines += ["", _verdict(result)]
    return "\n".join(line.rstrip() for line in lines)


# Characters XML 1.0 cannot hold at all; ElementTree would write them and produce invalid XML.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(s: str) -> str:
    return _XML_INVALID.sub("?", s)


def to_junit(result: GateResult) -> str:
    """JUnit XML, one ``<testcase>`` per check, so CI systems show each threshold as a test.

    The root is a single ``<testsuite name="edgec.gate">``; failures carry the check's message
    in ``<failure message=...>`` and passes carry it in ``<system-out>``. Built with ElementTree
    so quoting and escaping are right whatever an output is called.
    """
    failures = result.failures
    suite = ET.Element(
        "testsuite",
        {
            "name": "edgec.gate",
            "tests": str(len(result.checks)),
            "failures": str(len(failures)),
            "errors": "0",
            "skipped": "0",
        },
    )
    for c in result.checks:
        case = ET.SubElement(suite, "testcase", {"classname": "edgec.gate", "name": c.name})
        message = _xml_text(c.message)
        if c.passed:
            ET.SubElement(case, "system-out").text = message
        else:
            failure = ET.SubElement(case, "failure", {"message": message, "type": "GateFailure"})
            failure.text = message
    ET.indent(suite)
    body = ET.tostring(suite, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def _md(s: str) -> str:
    """Escape a table cell: pipes end cells and newlines end rows in GitHub markdown."""
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def to_markdown(result: GateResult) -> str:
    """GitHub-flavoured markdown for CI job summaries (e.g. ``$GITHUB_STEP_SUMMARY``).

    A table with one row per check (including the report field it read), then the failures'
    messages, then a bold verdict line.
    """
    lines = [
        "| check | metric | measured | threshold | result |",
        "|---|---|---:|---:|:---:|",
    ]
    for c in result.checks:
        name, measured, limit, verdict = _cells(c)
        mark = "✅ PASS" if c.passed else "❌ FAIL"
        lines.append(
            f"| `{name}` | `{_md(c.metric)}` | {_md(measured)} | {_md(limit)} | {mark} |"
        )
    failures = result.failures
    if failures:
        lines.append("")
        lines += [f"- `{c.name}`: {_md(c.message)}" for c in failures]
    lines += ["", f"**{_verdict(result)}**"]
    return "\n".join(lines) + "\n"
