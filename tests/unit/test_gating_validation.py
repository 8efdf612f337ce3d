"""The gate refuses what no measurement can produce, and edgec writes only strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from edgec.artifact import strict_json
from edgec.errors import BadInputError
from edgec.gating import evaluate, load_report


def make_report(**overrides):
    """A plausible bench report; keyword args replace top-level keys."""
    report = {"schema": "edgec.bench/1", "latency_ms": {"p90": 1.5}, "size_bytes": 1024, "peak_rss_mb": 80.0,
              "speedup_p50": 2.0, "drift": {"outputs": {"y": {"cosine_min": 0.99}}, "top1_agreement": 0.97,
                                            "accuracy_drop_pp": 0.5}}
    report.update(overrides)
    return report


def with_drift(**overrides):
    report = make_report()
    report["drift"] = {**report["drift"], **overrides}
    return report


@pytest.mark.parametrize("report, threshold", [
    (with_drift(outputs={"y": {"cosine_min": 7.5}, "z": {"cosine_min": 0.9}}), "min_cosine"),
    (with_drift(outputs={"y": {"cosine_min": math.inf}}), "min_cosine"),
    (with_drift(top1_agreement=3.0), "min_top1_agreement"),
    (with_drift(accuracy_drop_pp=-math.inf), "max_accuracy_drop_pp"),
    (make_report(latency_ms={"p90": -1.0}), "max_latency_p90_ms"),
    (make_report(size_bytes=-5), "max_size_mb"),
    (make_report(peak_rss_mb=-0.5), "max_peak_rss_mb"),
    (make_report(speedup_p50=1e400), "min_speedup"),
    (make_report(speedup_p50=10 ** 400), "min_speedup"),
], ids=["cosine-7.5", "cosine-inf", "top1-3", "drop-neg-inf", "neg-latency", "neg-size", "neg-rss",
        "speedup-1e400", "400-digit-int"])
def test_impossible_values_are_refused_even_if_not_gated(report, threshold) -> None:
    with pytest.raises(BadInputError, match="is impossible"):
        evaluate(report, {threshold: 0.5 if "cosine" in threshold or "top1" in threshold else 1.0})
    with pytest.raises(BadInputError, match="is impossible"):  # a check on another metric does not let it through
        evaluate(report, {"max_latency_p90_ms": 1e9} if threshold != "max_latency_p90_ms" else {"min_cosine": -1})


def test_a_dict_without_the_bench_schema_is_refused() -> None:
    report = make_report()
    del report["schema"]
    with pytest.raises(BadInputError, match="schema"):
        evaluate(report, {"max_latency_p90_ms": 1e9})


@pytest.mark.parametrize("text, needle", [
    ('{"schema": "edgec.bench/1", "speedup_p50": 9.0, "speedup_p50": 0.1}', "twice"),
    ('{"schema": "edgec.bench/1", "speedup_p50": ' + "9" * 5000 + "}", "cannot be read"),
    ("[" * 100000 + "]" * 100000, "cannot be read"),
], ids=["duplicate-key", "huge-int", "deep-nesting"])
def test_reports_that_cannot_be_read_one_way(tmp_path, text, needle) -> None:
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(BadInputError, match=needle):
        load_report(path)


@pytest.mark.parametrize("name, value, valid", [
    ("min_cosine", 1.5, r"\[-1, 1\]"), ("min_top1_agreement", -0.1, r"\[0, 1\]"),
    ("max_latency_p90_ms", -3.0, ">= 0"), ("min_speedup", -1.0, ">= 0"), ("max_accuracy_drop_pp", 101.0, r"\[-100, 100\]"),
])
def test_impossible_thresholds_name_the_valid_range(name, value, valid) -> None:
    with pytest.raises(BadInputError, match=rf"{name} must be {valid}"):
        evaluate(make_report(), {name: value})


def test_impossible_threshold_on_the_command_line_is_exit_2(tmp_path, capsys) -> None:
    from edgec.cli import main

    path = tmp_path / "r.json"
    path.write_text(json.dumps(make_report()))
    assert main(["gate", str(path), "--min-cosine", "1.5"]) == 2
    assert "min_cosine must be [-1, 1]" in capsys.readouterr().err


def test_strict_json_writes_null_for_undefined_numbers() -> None:
    text = strict_json({"a": math.nan, "b": [math.inf, 1.5], "c": {"d": -math.inf}})
    assert json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} token written")) == {
        "a": None, "b": [None, 1.5], "c": {"d": None}}


def test_a_strict_report_with_an_undefined_metric_fails_closed(tmp_path) -> None:
    report = with_drift(outputs={"y": {"cosine_min": math.nan}})
    path = tmp_path / "r.json"
    path.write_text(strict_json(report))
    assert not evaluate(load_report(Path(path)), {"min_cosine": 0.5})


def test_a_policy_number_beyond_any_float_is_refused(tmp_path) -> None:
    from edgec.gating import load_policy

    path = tmp_path / "gate.toml"
    path.write_text(f"min_speedup = {10**400}\n")
    with pytest.raises(BadInputError, match="must be a finite number"):
        load_policy(path)
