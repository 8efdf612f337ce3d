"""Tests for edgec.gating: thresholds, fail-closed behaviour, file loading and renderers.

Reports are built inline as plain dicts; expected verdicts follow from the threshold definitions
(inclusive <= / >=), never from running the gate on itself.
"""

from __future__ import annotations

import copy
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgec.errors import BadInputError, EdgecError
from edgec.gating import (
    THRESHOLD_NAMES,
    CheckResult,
    GateResult,
    evaluate,
    format_table,
    load_policy,
    load_report,
    to_junit,
    to_markdown,
)

MIB = 2**20


def make_report(**overrides: Any) -> dict[str, Any]:
    """A complete edgec.bench/1 report with round numbers; keyword args replace top-level keys."""
    latency = {
        "p50": 1.0, "p90": 1.5, "p95": 1.75, "p99": 2.0,
        "mean": 1.1, "std": 0.2, "min": 0.9, "max": 2.5, "runs": 100,
    }
    report: dict[str, Any] = {
        "schema": "edgec.bench/1",
        "target": "cpu-x86",
        "threads": 4,
        "latency_ms": latency,
        "throughput_per_s": 900.0,
        "load_ms": 12.0,
        "peak_rss_mb": 80.0,
        "size_bytes": 3 * MIB,
        "baseline": {
            "latency_ms": {**latency, "p50": 2.5},
            "peak_rss_mb": 120.0,
            "size_bytes": 12 * MIB,
            "load_ms": 20.0,
        },
        "speedup_p50": 2.5,
        "drift": {
            "outputs": {
                "logits": {
                    "max_abs": 0.05, "mean_abs": 0.01, "cosine_mean": 0.999,
                    "cosine_min": 0.995, "sqnr_db": 35.0,
                },
                "embedding": {
                    "max_abs": 0.1, "mean_abs": 0.02, "cosine_mean": 0.998,
                    "cosine_min": 0.98, "sqnr_db": 30.0,
                },
            },
            "top1_agreement": 0.97,
            "accuracy": 0.755,
            "baseline_accuracy": 0.76,
            "accuracy_drop_pp": 0.5,
        },
    }
    report.update(overrides)
    return report


def with_drift(**overrides: Any) -> dict[str, Any]:
    report = make_report()
    report["drift"].update(overrides)
    return report


# The value each threshold measures in make_report(), and its comparison.
MEASURED = {
    "max_accuracy_drop_pp": (0.5, "<="),
    "min_top1_agreement": (0.97, ">="),
    "min_cosine": (0.98, ">="),  # the embedding output's worst sample
    "max_latency_p90_ms": (1.5, "<="),
    "min_speedup": (2.5, ">="),
    "max_size_mb": (3.0, "<="),
    "max_peak_rss_mb": (80.0, "<="),
}


def only(result: GateResult) -> CheckResult:
    assert len(result.checks) == 1
    return result.checks[0]


# --------------------------------------------------------------------------- thresholds


def test_threshold_names_are_the_documented_seven() -> None:
    assert THRESHOLD_NAMES == tuple(MEASURED)


@pytest.mark.parametrize("name", THRESHOLD_NAMES)
def test_boundary_is_inclusive(name: str) -> None:
    value, op = MEASURED[name]
    check = only(evaluate(make_report(), {name: value}))
    assert check.passed
    assert check.value == pytest.approx(value)
    assert check.op == op
    assert check.message.endswith(": pass")


@pytest.mark.parametrize("name", THRESHOLD_NAMES)
def test_just_past_the_boundary_fails(name: str) -> None:
    value, op = MEASURED[name]
    # A max_ limit just below the value, or a min_ limit just above it, must fail.
    limit = math.nextafter(value, -math.inf if op == "<=" else math.inf)
    check = only(evaluate(make_report(), {name: limit}))
    assert not check.passed
    assert check.message.endswith(": fail")
    # Rounded display must not make a failing boundary look like equality.
    measured, shown_limit = check.message.split(" = ", 1)[1].split(f" {op} ")
    assert measured.split()[0] != shown_limit.split(":")[0].split()[0]


@pytest.mark.parametrize("name", THRESHOLD_NAMES)
def test_comfortable_margin_passes_and_wrong_side_fails(name: str) -> None:
    value, op = MEASURED[name]
    higher = (value + 1) / 2 if name in ("min_top1_agreement", "min_cosine") else value * 2  # both at most 1
    good, bad = (value * 2, value / 2) if op == "<=" else (value / 2, higher)
    assert evaluate(make_report(), {name: good})
    assert not evaluate(make_report(), {name: bad})


def test_size_is_measured_in_mib() -> None:
    report = make_report(size_bytes=5 * MIB + 1)
    check = only(evaluate(report, {"max_size_mb": 5.0}))
    assert not check.passed
    assert check.value == pytest.approx(5 + 1 / MIB)
    assert check.unit == "MiB"
    assert only(evaluate(make_report(size_bytes=5 * MIB), {"max_size_mb": 5})).passed


def test_min_cosine_is_worst_sample_over_all_outputs() -> None:
    report = make_report()
    # logits alone (0.995) would pass a 0.99 floor; the embedding output (0.98) must fail it.
    check = only(evaluate(report, {"min_cosine": 0.99}))
    assert check.value == pytest.approx(0.98)
    assert not check.passed
    report["drift"]["outputs"]["embedding"]["cosine_min"] = 0.999
    check = only(evaluate(report, {"min_cosine": 0.99}))
    assert check.value == pytest.approx(0.995)
    assert check.passed


def test_min_cosine_nan_in_any_output_fails_regardless_of_order() -> None:
    for first in ("logits", "embedding"):
        report = make_report()
        outputs = report["drift"]["outputs"]
        outputs[first]["cosine_min"] = math.nan
        report["drift"]["outputs"] = {first: outputs[first], **outputs}
        check = only(evaluate(report, {"min_cosine": 0.5}))
        assert not check.passed
        assert check.value is not None and math.isnan(check.value)


def test_degenerate_output_fails_every_drift_threshold_but_not_the_others() -> None:
    report = with_drift(degenerate={"logits": "artifact output all zero; baseline output all zero"})
    result = evaluate(report, {"min_cosine": 0.9, "min_top1_agreement": 0.9, "max_accuracy_drop_pp": 1.0,
                               "max_latency_p90_ms": 10.0})
    verdicts = {check.name: check.passed for check in result.checks}
    assert verdicts == {"min_cosine": False, "min_top1_agreement": False, "max_accuracy_drop_pp": False,
                        "max_latency_p90_ms": True}
    assert "measures nothing: output 'logits': artifact output all zero" in result.checks[0].message
    assert evaluate(with_drift(degenerate={}), {"min_cosine": 0.9}).passed


def test_latency_verdicts_need_enough_runs() -> None:
    report = make_report()
    report["latency_ms"] = {**report["latency_ms"], "runs": 1}
    result = evaluate(report, {"min_speedup": 1.0, "max_latency_p90_ms": 10.0, "max_size_mb": 10.0})
    assert [check.passed for check in result.checks] == [False, False, True]
    assert "only 1 timed runs, fewer than the 20 a latency verdict needs" in result.checks[0].message
    report["latency_ms"]["runs"] = 20
    assert evaluate(report, {"min_speedup": 1.0, "max_latency_p90_ms": 10.0}).passed


def test_checks_come_in_threshold_names_order_one_per_threshold() -> None:
    given_ = {name: MEASURED[name][0] for name in reversed(THRESHOLD_NAMES)}
    result = evaluate(make_report(), given_)
    assert [c.name for c in result.checks] == list(THRESHOLD_NAMES)
    assert result.passed


def test_message_format() -> None:
    check = only(evaluate(make_report(), {"max_latency_p90_ms": 2}))
    assert check.message == "latency_ms.p90 = 1.5 ms <= 2.0 ms: pass"
    assert check.metric == "latency_ms.p90"
    assert check.threshold == 2.0
    assert "\n" not in check.message


# --------------------------------------------------------------------------- fail closed


@pytest.mark.parametrize(
    ("report", "name", "field", "advice"),
    [
        (make_report(drift=None), "max_accuracy_drop_pp", "drift", "baseline"),
        (make_report(drift=None), "min_top1_agreement", "drift", "baseline"),
        (make_report(drift=None), "min_cosine", "drift", "baseline"),
        (with_drift(accuracy=None, accuracy_drop_pp=None), "max_accuracy_drop_pp",
         "drift.accuracy_drop_pp", "--labels"),
        (with_drift(top1_agreement=None), "min_top1_agreement", "drift.top1_agreement", ""),
        (with_drift(outputs={}), "min_cosine", "drift.outputs", "baseline"),
        (make_report(speedup_p50=None, baseline=None), "min_speedup", "speedup_p50", "baseline"),
    ],
)
def test_null_metric_fails_closed_with_advice(
    report: dict[str, Any], name: str, field: str, advice: str
) -> None:
    check = only(evaluate(report, {name: 0.0}))
    assert not check.passed
    assert check.value is None
    # Names the field that is missing: the metric itself, or the parent that is null/empty.
    assert check.message.startswith(f"{check.metric} missing from report (")
    assert field == check.metric or f"({field} is " in check.message
    assert "missing from report" in check.message
    assert advice in check.message
    assert check.message.endswith(": fail")


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("max_latency_p90_ms", ("latency_ms", "p90")),
        ("max_latency_p90_ms", ("latency_ms",)),
        ("max_size_mb", ("size_bytes",)),
        ("max_peak_rss_mb", ("peak_rss_mb",)),
        ("min_speedup", ("speedup_p50",)),
        ("max_accuracy_drop_pp", ("drift", "accuracy_drop_pp")),
        ("max_accuracy_drop_pp", ("drift",)),
        ("min_cosine", ("drift", "outputs", "logits", "cosine_min")),
    ],
)
def test_absent_key_fails_closed(name: str, path: tuple[str, ...]) -> None:
    report = make_report()
    node = report
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    # A limit the full report passes comfortably, so only the absence can fail it.
    limit = 100.0 if name.startswith("max_") else (-1.0 if name == "min_cosine" else 0.0)  # the loosest possible
    check = only(evaluate(report, {name: limit}))
    assert not check.passed
    assert check.value is None
    field = ".".join(path)
    if field == check.metric:
        assert f"{field} missing from report (key absent;" in check.message
    else:
        assert f"({field} is absent;" in check.message


@pytest.mark.parametrize("bad", ["fast", True, [1.0], {"v": 1}])
def test_non_number_metric_fails_closed(bad: Any) -> None:
    report = make_report()
    report["latency_ms"]["p90"] = bad
    check = only(evaluate(report, {"max_latency_p90_ms": 1e9}))
    assert not check.passed
    assert check.value is None
    assert "not a number" in check.message


def test_a_section_that_is_not_an_object_is_refused() -> None:
    # The typed report cannot hold a list where a section belongs: the report is corrupt, not merely partial.
    with pytest.raises(BadInputError, match="latency_ms is a JSON list, not an object"):
        evaluate(make_report(latency_ms=[1, 2]), {"max_latency_p90_ms": 1e9})


@pytest.mark.parametrize("name", THRESHOLD_NAMES)
def test_nan_fails(name: str) -> None:
    report = make_report()
    setters = {
        "max_accuracy_drop_pp": lambda r: r["drift"].__setitem__("accuracy_drop_pp", math.nan),
        "min_top1_agreement": lambda r: r["drift"].__setitem__("top1_agreement", math.nan),
        "min_cosine": lambda r: r["drift"]["outputs"]["logits"].__setitem__("cosine_min", math.nan),
        "max_latency_p90_ms": lambda r: r["latency_ms"].__setitem__("p90", math.nan),
        "min_speedup": lambda r: r.__setitem__("speedup_p50", math.nan),
        "max_size_mb": lambda r: r.__setitem__("size_bytes", math.nan),
        "max_peak_rss_mb": lambda r: r.__setitem__("peak_rss_mb", math.nan),
    }
    setters[name](report)
    limit = 100.0 if name.startswith("max_") else (-1.0 if name == "min_cosine" else 0.0)  # the loosest possible
    check = only(evaluate(report, {name: limit}))
    assert not check.passed
    assert "nan" in check.message and check.message.endswith(": fail")
    # Strict JSON has no NaN: the dict form carries null and keeps the message.
    dumped = json.dumps(evaluate(report, {name: limit}).to_dict(), allow_nan=False)
    assert json.loads(dumped)["checks"][0]["value"] is None


def test_one_missing_metric_fails_the_gate_but_others_still_report() -> None:
    result = evaluate(make_report(drift=None), {"max_latency_p90_ms": 2.0, "min_cosine": 0.9})
    assert [c.passed for c in result.checks] == [False, True]
    assert not result
    assert [c.name for c in result.failures] == ["min_cosine"]


# --------------------------------------------------------------------------- bad thresholds


def test_no_thresholds_is_an_error() -> None:
    with pytest.raises(BadInputError, match="no thresholds given: pass --policy"):
        evaluate(make_report(), {})


def test_all_none_thresholds_count_as_none_given() -> None:
    with pytest.raises(BadInputError, match="no thresholds given"):
        evaluate(make_report(), {"max_size_mb": None, "min_cosine": None})
    result = evaluate(make_report(), {"max_size_mb": None, "min_cosine": 0.9})
    assert [c.name for c in result.checks] == ["min_cosine"]


def test_unknown_threshold_is_an_error_listing_valid_names() -> None:
    with pytest.raises(BadInputError, match="max_latency_p99_ms") as info:
        evaluate(make_report(), {"max_latency_p99_ms": 2.0})
    for name in THRESHOLD_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize("bad", ["2", True, math.nan, math.inf, [2.0]])
def test_threshold_must_be_a_finite_number(bad: Any) -> None:
    with pytest.raises(BadInputError, match="max_latency_p90_ms"):
        evaluate(make_report(), {"max_latency_p90_ms": bad})


def test_report_must_be_a_mapping() -> None:
    with pytest.raises(BadInputError, match="JSON object"):
        evaluate([make_report()], {"max_size_mb": 1.0})  # type: ignore[arg-type]


def test_errors_are_user_errors() -> None:
    assert issubclass(BadInputError, EdgecError)


def test_evaluate_does_not_modify_report() -> None:
    report = make_report(drift=None)
    before = copy.deepcopy(report)
    evaluate(report, {name: 1.0 for name in THRESHOLD_NAMES})
    assert report == before


# --------------------------------------------------------------------------- GateResult


def test_gate_result_truthiness() -> None:
    good = evaluate(make_report(), {"max_size_mb": 4.0, "min_speedup": 2.0})
    bad = evaluate(make_report(), {"max_size_mb": 4.0, "min_speedup": 3.0})
    assert good and good.passed is True and bool(good) is True
    assert not bad and bad.passed is False
    assert [c.name for c in bad.failures] == ["min_speedup"]
    # A gate that checked nothing releases nothing.
    assert not GateResult(())


def test_gate_result_is_frozen_and_checks_are_a_tuple() -> None:
    check = evaluate(make_report(), {"max_size_mb": 4.0}).checks[0]
    result = GateResult([check])  # type: ignore[arg-type]
    assert isinstance(result.checks, tuple)
    with pytest.raises(AttributeError):
        result.checks = ()  # type: ignore[misc]


def test_to_dict_is_json_with_schema() -> None:
    result = evaluate(make_report(drift=None), {"max_size_mb": 4.0, "min_cosine": 0.9})
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["schema"] == "edgec.gate/1"
    assert data["passed"] is False
    assert [c["name"] for c in data["checks"]] == ["min_cosine", "max_size_mb"]
    first = data["checks"][0]
    assert first["value"] is None and first["passed"] is False and first["op"] == ">="
    assert set(first) >= {"name", "metric", "value", "threshold", "op", "passed", "message"}


# --------------------------------------------------------------------------- load_policy


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_policy_top_level(tmp_path: Path) -> None:
    path = write(tmp_path, "p.toml", "max_size_mb = 4\nmin_cosine = 0.99\n")
    policy = load_policy(path)
    assert policy == {"min_cosine": 0.99, "max_size_mb": 4.0}
    assert all(type(v) is float for v in policy.values())
    assert list(policy) == ["min_cosine", "max_size_mb"]  # THRESHOLD_NAMES order


def test_load_policy_thresholds_table(tmp_path: Path) -> None:
    path = write(
        tmp_path, "p.toml",
        "[thresholds]\nmax_latency_p90_ms = 2.5\nmin_speedup = 1.5\n",
    )
    assert load_policy(str(path)) == {"max_latency_p90_ms": 2.5, "min_speedup": 1.5}


def test_load_policy_both_forms_merge_but_not_twice(tmp_path: Path) -> None:
    path = write(tmp_path, "p.toml", "max_size_mb = 4\n[thresholds]\nmin_cosine = 0.9\n")
    assert load_policy(path) == {"min_cosine": 0.9, "max_size_mb": 4.0}
    path = write(tmp_path, "q.toml", "max_size_mb = 4\n[thresholds]\nmax_size_mb = 5\n")
    with pytest.raises(BadInputError, match="given twice"):
        load_policy(path)


@pytest.mark.parametrize(
    "text", ["max_sise_mb = 4\n", "[thresholds]\nmax_sise_mb = 4\n"]
)
def test_load_policy_unknown_key(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "p.toml", text)
    with pytest.raises(BadInputError, match="unknown key .*max_sise_mb") as info:
        load_policy(path)
    for name in THRESHOLD_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "text",
    ['max_size_mb = "4"\n', "max_size_mb = true\n", "max_size_mb = nan\n",
     "max_size_mb = [4]\n", "[thresholds.max_size_mb]\nvalue = 4\n"],
)
def test_load_policy_non_number(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "p.toml", text)
    with pytest.raises(BadInputError, match="max_size_mb"):
        load_policy(path)


def test_load_policy_thresholds_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, "p.toml", "thresholds = 3\n")
    with pytest.raises(BadInputError, match=r"\[thresholds\]"):
        load_policy(path)


def test_load_policy_bad_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "p.toml", "max_size_mb = = 4\n")
    with pytest.raises(BadInputError, match="not valid TOML"):
        load_policy(path)


def test_load_policy_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_bytes(b"# \xff\xfe\nmax_size_mb = 4\n")
    with pytest.raises(BadInputError):
        load_policy(path)


def test_load_policy_missing_or_unreadable(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found"):
        load_policy(tmp_path / "nope.toml")
    with pytest.raises(BadInputError, match="cannot read policy"):
        load_policy(tmp_path)  # a directory


def test_load_policy_empty_file_then_evaluate_says_nothing_given(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "p.toml", "# no thresholds yet\n"))
    assert policy == {}
    with pytest.raises(BadInputError, match="no thresholds given"):
        evaluate(make_report(), policy)


# --------------------------------------------------------------------------- load_report


def test_load_report_roundtrip_with_nan_and_infinity(tmp_path: Path) -> None:
    report = make_report()
    report["drift"]["outputs"]["logits"]["sqnr_db"] = math.inf
    path = write(tmp_path, "r.json", json.dumps(report))
    loaded = load_report(path)
    assert loaded["latency_ms"]["p90"] == 1.5
    assert loaded["drift"]["outputs"]["logits"]["sqnr_db"] == math.inf
    assert evaluate(loaded, {"max_latency_p90_ms": 2.0})


def test_load_report_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="not found.*edgec bench --json"):
        load_report(tmp_path / "missing.json")


def test_load_report_directory(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="cannot read report"):
        load_report(tmp_path)


@pytest.mark.parametrize("text", ["{not json", "", "\x00"])
def test_load_report_bad_json(tmp_path: Path, text: str) -> None:
    with pytest.raises(BadInputError, match="not valid JSON"):
        load_report(write(tmp_path, "r.json", text))


def test_load_report_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(b'{"schema": "\xff"}')
    with pytest.raises(BadInputError, match="cannot read report"):
        load_report(path)


@pytest.mark.parametrize(
    "payload",
    [[1, 2], "edgec.bench/1", {"target": "x"}, {"schema": "edgec.gate/1"},
     {"schema": 1}, {"schema": None}],
)
def test_load_report_wrong_shape_or_schema(tmp_path: Path, payload: Any) -> None:
    with pytest.raises(BadInputError, match="edgec bench --json"):
        load_report(write(tmp_path, "r.json", json.dumps(payload)))


def test_load_report_accepts_later_bench_schema(tmp_path: Path) -> None:
    path = write(tmp_path, "r.json", json.dumps(make_report(schema="edgec.bench/2")))
    assert load_report(path)["schema"] == "edgec.bench/2"


def test_bad_input_messages_are_one_line(tmp_path: Path) -> None:
    cases = [
        lambda: load_report(write(tmp_path, "a.json", "{\n\n bad")),
        lambda: load_policy(write(tmp_path, "b.toml", "a = \n= b\n[[x\n")),
        lambda: evaluate(make_report(), {}),
        lambda: evaluate(make_report(), {"nope": 1.0}),
    ]
    for case in cases:
        with pytest.raises(BadInputError) as info:
            case()
        assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- renderers


def mixed_result() -> GateResult:
    report = make_report()
    report["drift"]["accuracy_drop_pp"] = None
    return evaluate(
        report,
        {
            "max_accuracy_drop_pp": 1.0,  # missing -> fail
            "min_cosine": 0.99,  # 0.98 -> fail
            "max_latency_p90_ms": 2.0,  # pass
            "max_size_mb": 4.0,  # pass
        },
    )


def test_format_table() -> None:
    result = mixed_result()
    text = format_table(result)
    lines = text.splitlines()
    assert lines[0].split() == ["check", "measured", "threshold", "result"]
    for check in result.checks:
        row = next(line for line in lines if line.startswith(check.name))
        assert row.endswith("PASS" if check.passed else "FAIL")
    assert "missing" in text and "--labels" in text
    assert "1.5 ms" in text and "<= 2.0 ms" in text and "MiB" in text
    assert lines[-1] == "gate: FAIL (2 of 4 checks failed: max_accuracy_drop_pp, min_cosine)"
    # Aligned: every table row has the result column at the same offset.
    table = [line for line in lines[:6] if line.endswith(("PASS", "FAIL", "result"))]
    assert len({line.rfind(" ") for line in table}) == 1


def test_format_table_pass_verdict() -> None:
    text = format_table(evaluate(make_report(), {"max_size_mb": 4.0}))
    assert text.splitlines()[-1] == "gate: PASS (1 of 1 checks passed)"
    assert "failed:" not in text


def test_to_junit_parses_and_counts_failures() -> None:
    result = mixed_result()
    xml = to_junit(result)
    root = ET.fromstring(xml.encode("utf-8"))
    assert root.tag == "testsuite"
    assert root.get("name") == "edgec.gate"
    cases = root.findall("testcase")
    assert [c.get("name") for c in cases] == [c.name for c in result.checks]
    failures = root.findall("testcase/failure")
    assert len(failures) == 2 == int(root.get("failures", "-1"))
    assert int(root.get("tests", "-1")) == 4
    messages = {f.get("message") for f in failures}
    assert {c.message for c in result.failures} == messages


def test_to_junit_escapes_hostile_output_names() -> None:
    report = make_report()
    report["drift"]["outputs"] = {
        '<out&"1">\x01': {"cosine_min": 0.5, "max_abs": 0, "mean_abs": 0,
                          "cosine_mean": 0.5, "sqnr_db": 1.0},
    }
    del report["drift"]["outputs"]['<out&"1">\x01']["cosine_min"]
    result = evaluate(report, {"min_cosine": 0.9})
    root = ET.fromstring(to_junit(result))
    message = root.find("testcase/failure").get("message")  # type: ignore[union-attr]
    assert '<out&"1">' in message


def test_to_junit_all_pass() -> None:
    root = ET.fromstring(to_junit(evaluate(make_report(), {"max_size_mb": 4.0})))
    assert root.get("failures") == "0"
    assert root.find("testcase/failure") is None


def test_to_markdown_contains_every_check() -> None:
    result = mixed_result()
    md = to_markdown(result)
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(rows) == len(result.checks)
    for check, row in zip(result.checks, rows):
        assert f"`{check.name}`" in row
        assert ("PASS" if check.passed else "FAIL") in row
        assert row.count("|") == 6  # five cells, no stray pipes
    assert md.splitlines()[1].startswith("|---")
    assert md.rstrip().splitlines()[-1] == (
        "**gate: FAIL (2 of 4 checks failed: max_accuracy_drop_pp, min_cosine)**"
    )


def test_to_markdown_escapes_pipes_in_messages() -> None:
    report = make_report()
    report["drift"]["outputs"] = {"a|b": {"max_abs": 0}}
    md = to_markdown(evaluate(report, {"min_cosine": 0.9}))
    assert "a\\|b" in md and "a|b" not in md.replace("a\\|b", "")


# --------------------------------------------------------------------------- properties

#: The thresholds a measurement could meet or miss (others are refused).
POSSIBLE = {"max_accuracy_drop_pp": (-100, 100), "min_top1_agreement": (0, 1), "min_cosine": (-1, 1)}


def possible(name: str) -> st.SearchStrategy[float]:
    low, high = POSSIBLE.get(name, (0, 1e12))
    return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)


@given(value=st.floats(min_value=0, max_value=1e6, allow_nan=False), limit=possible("max_latency_p90_ms"))
def test_latency_passes_iff_value_at_most_threshold(value: float, limit: float) -> None:
    report = make_report()
    report["latency_ms"]["p90"] = value
    check = only(evaluate(report, {"max_latency_p90_ms": limit}))
    assert check.passed is (value <= limit)
    assert check.message.endswith(": pass" if value <= limit else ": fail")


@given(
    cosines=st.lists(st.floats(min_value=-1, max_value=1, allow_nan=False), min_size=1,
                     max_size=5),
    limit=st.floats(min_value=-1, max_value=1, allow_nan=False),
)
def test_min_cosine_passes_iff_every_output_meets_floor(cosines: list[float], limit: float) -> None:
    report = make_report()
    report["drift"]["outputs"] = {f"out{i}": {"cosine_min": c} for i, c in enumerate(cosines)}
    check = only(evaluate(report, {"min_cosine": limit}))
    assert check.passed is all(c >= limit for c in cosines)
    assert check.value == min(cosines)


@given(
    values=st.fixed_dictionaries({name: possible(name) for name in THRESHOLD_NAMES}),
    subset=st.sets(st.sampled_from(THRESHOLD_NAMES), min_size=1),
)
def test_gate_passes_iff_every_check_passes(values: dict[str, float], subset: set[str]) -> None:
    result = evaluate(make_report(), {name: values[name] for name in subset})
    assert len(result.checks) == len(subset)
    assert bool(result) is all(c.passed for c in result.checks)
    for check in result.checks:
        measured, op = MEASURED[check.name]
        expected = measured <= check.threshold if op == "<=" else measured >= check.threshold
        assert check.passed is expected
