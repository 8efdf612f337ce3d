"""Release evidence through the CLI: raw latencies and provenance in the bench report, regression gate, history, compare."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from edgec.harness.latency import summarize
from edgec.report.host import cpu_model


def test_bench_report_keeps_raw_latencies_and_provenance(cli, tiny, tmp_path) -> None:
    report_path = tmp_path / "r.json"
    assert cli("bench", tiny.model, "--baseline", tiny.model, "--runs", 12, "--warmup", 0, "--threads", 1,
               "--json", report_path).code == 0
    report = json.loads(report_path.read_text())
    assert report["schema"] == "edgec.bench/2" and report["thresholds"] is None  # a plain .onnx has no target
    for section in (report, report["baseline"]):
        samples = section["latency_ms"]["samples"]
        assert len(samples) == section["latency_ms"]["runs"] == 12
        summary = summarize(samples)
        assert all(section["latency_ms"][key] == pytest.approx(summary[key], rel=1e-9) for key in ("p50", "p90", "mean"))
    assert report["batch"] == 1 and report["threads"] == 1
    assert report["host"]["cpu_model"] == cpu_model()
    provenance = report["provenance"]
    assert provenance["artifact_sha256"] == hashlib.sha256(tiny.model.read_bytes()).hexdigest()
    assert provenance["source_sha256"] is None  # a plain .onnx has no manifest naming a source
    assert provenance["baseline_sha256"] == provenance["artifact_sha256"]  # benched against itself
    assert np.isfinite(report["latency_ms"]["p50"])


@pytest.fixture(scope="module")
def reports(tmp_path_factory, tiny) -> tuple:
    """Two bench reports of the tiny model (40 runs each), and a copy of the second made 10x slower."""
    from edgec.cli import main

    root = tmp_path_factory.mktemp("reports")
    old, new = root / "old.json", root / "new.json"
    for path in (old, new):
        assert main(["bench", str(tiny.model), "--baseline", str(tiny.model), "--runs", "40", "--warmup", "2",
                     "--threads", "1", "--json", str(path)]) == 0
    slow = root / "slow.json"
    report = json.loads(new.read_text())
    report["latency_ms"]["samples"] = [10 * v for v in report["latency_ms"]["samples"]]
    report["size_bytes"] *= 2
    slow.write_text(json.dumps(report))
    return old, new, slow


def test_gate_against_an_old_report(cli, reports, tmp_path) -> None:
    old, new, slow = reports
    result = cli("gate", new, "--against", old, "--max-latency-regression", 1000, "--max-size-growth", 0,
                 "--min-cosine-vs-old", 0.999)
    assert result.code == 0, result.out + result.err
    assert "p50 " in result.out and "[95% CI " in result.out and "1000% allowed: pass" in result.out
    assert "min cosine new vs old (bound) 1.000000 >= 0.999 required: pass" in result.out
    junit, markdown = tmp_path / "g.xml", tmp_path / "g.md"
    result = cli("gate", slow, "--against", old, "--max-latency-regression", 5, "--max-size-growth", 50,
                 "--min-cosine", 0.99, "--junit", junit, "--markdown", markdown)
    assert result.code == 1
    assert "> 5% allowed: FAIL" in result.out and "size growth +100.00 % > 50 % allowed: FAIL" in result.out
    assert "min_cosine" in result.out  # absolute thresholds are checked alongside
    assert 'name="latency_p90_regression"' in junit.read_text() and "latency_p50_regression" in markdown.read_text()


def test_gate_against_refuses_what_cannot_be_compared(cli, reports, tmp_path) -> None:
    old, new, _ = reports
    other = tmp_path / "other.json"
    report = json.loads(new.read_text())
    report["threads"] = 2
    other.write_text(json.dumps(report))
    result = cli("gate", other, "--against", old, "--max-latency-regression", 5)
    assert result.code == 2 and "cannot be compared: threads 1 -> 2" in result.error_line
    assert cli("gate", other, "--against", old, "--max-latency-regression", 1000, "--allow-different-device").code == 0
    result = cli("gate", new, "--max-latency-regression", 5)
    assert result.code == 2 and "add --against OLD.json" in result.error_line
    truncated = tmp_path / "truncated.json"
    truncated.write_text(old.read_text()[:100])
    result = cli("gate", new, "--against", truncated, "--max-latency-regression", 5, "--junit", tmp_path / "j.xml")
    assert result.code == 2 and "not valid JSON" in result.error_line and not (tmp_path / "j.xml").exists()


def test_history_add_list_show_and_gate_against_history(cli, reports, tmp_path) -> None:
    old, new, slow = reports
    db = tmp_path / "history.sqlite"
    result = cli("history", "add", old, "--tag", "v1.2", "--db", db)
    assert result.code == 0 and result.out.startswith("added #1: tiny for unspecified on ") and "tagged v1.2" in result.out
    assert cli("history", "add", new, "--db", db).code == 0
    listed = cli("history", "list", "--model", "tiny", "--db", db)
    assert listed.code == 0 and "v1.2" in listed.out and len(listed.out.strip().splitlines()) == 3
    assert "(no reports match)" in cli("history", "list", "--target", "nope", "--db", db).out
    shown = cli("history", "show", 1, "--json", "--db", db)
    assert json.loads(shown.out) == json.loads(old.read_text())
    assert "latency p50 (ms)" in cli("history", "show", 2, "--db", db).out
    gated = cli("gate", slow, "--against-history", "--tag", "v1.2", "--db", db, "--max-latency-regression", 5)
    assert gated.code == 1 and "history #1 (v1.2)" in gated.out and "> 5% allowed: FAIL" in gated.out
    newest = cli("gate", slow, "--against-history", "--db", db, "--max-latency-regression", 5)
    assert newest.code == 1 and "history #2 from" in newest.out


def test_history_bad_input_exits_2(cli, reports, tmp_path) -> None:
    old, new, _ = reports
    db = tmp_path / "history.sqlite"
    assert cli("history", "add", old, "--db", db).code == 0
    unknown = cli("gate", new, "--against-history", "--tag", "v0.9", "--db", db, "--max-latency-regression", 5)
    assert unknown.code == 2 and "no report tagged 'v0.9'" in unknown.error_line
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"garbage" * 1000)
    for args in (("history", "add", old), ("history", "list"), ("gate", new, "--against-history", "--max-latency-regression", 5)):
        result = cli(*args, "--db", corrupt)
        assert result.code == 2 and "is not an SQLite database or is corrupt" in result.error_line
    assert cli("history", "show", 7, "--db", db).code == 2
    assert cli("gate", new, "--tag", "v1", "--max-latency-regression", 5).error_line.endswith("add --against-history")
    both = cli("gate", new, "--against", old, "--against-history", "--max-latency-regression", 5)
    assert both.code == 2 and "not both" in both.error_line


def test_compare_side_by_side(cli, reports, tmp_path) -> None:
    old, new, slow = reports
    result = cli("compare", old, new, slow)
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split() == ["old.json", "new.json", "slow.json"]
    p50 = next(line for line in lines if line.startswith("latency p50"))
    first = json.loads(old.read_text())["latency_ms"]["p50"]
    assert f"{first:.3f}" in p50 and p50.count("%)") == 2
    assert "size (MiB)" in result.out and "threads" in result.out
    markdown = cli("compare", old, new, "--markdown").out
    assert markdown.startswith("|  | old.json | new.json |\n|---|---:|---:|\n") and "| latency p90 (ms) |" in markdown
    assert cli("compare", old).code == 2
    truncated = tmp_path / "t.json"
    truncated.write_text("{")
    assert cli("compare", old, truncated).code == 2


def _v1_report(tmp_path, **change: object):
    """The saved `edgec.bench/1` report of a one-MatMul model on cpu-x86-fp32 (tests/unit/data), with `change` applied."""
    from pathlib import Path

    report = json.loads((Path(__file__).parents[1] / "unit" / "data" / "bench-report-v1.json").read_text())
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**report, **change}))
    return path


def test_gate_without_thresholds_uses_the_targets(cli, tmp_path) -> None:
    recorded = cli("gate", _v1_report(tmp_path, schema="edgec.bench/2", thresholds={"min_cosine": 0.9, "max_size_mb": 1e-9}))
    assert recorded.code == 1 and "using the [thresholds] of target 'cpu-x86-fp32' (recorded in the report)" in recorded.out
    assert "min_cosine 0.9, max_size_mb 1e-09" in recorded.out and "max_size_mb" in recorded.out.splitlines()[-1]
    built_in = cli("gate", _v1_report(tmp_path))  # /1 records none: the built-in descriptor's min_cosine 0.999
    assert built_in.code == 0 and "the built-in target 'cpu-x86-fp32'" in built_in.out and "min_cosine 0.999" in built_in.out
    explicit = cli("gate", _v1_report(tmp_path), "--max-size-mb", 1e-9)
    assert explicit.code == 1 and "using the [thresholds]" not in explicit.out and "min_cosine" not in explicit.out
    none = cli("gate", _v1_report(tmp_path, target="unspecified"))
    assert none.code == 2 and none.error_line.endswith("the report names no target (a plain .onnx was benched): pass --policy"
                                                       " gate.toml or --max-/--min- options")
    empty = cli("gate", _v1_report(tmp_path, schema="edgec.bench/2", thresholds={}))
    assert empty.code == 2 and "sets no [thresholds]" in empty.error_line


def test_quiet_and_json_to_stdout_show_no_progress(cli, tiny) -> None:
    common = (tiny.model, "--runs", 20, "--warmup", 0, "--threads", 1)
    piped = cli("bench", *common)
    assert piped.code == 0 and "round 1/2" in piped.err.splitlines()  # not a terminal: one plain line per step
    quiet = cli("bench", *common, "--quiet")
    assert quiet.code == 0 and quiet.err == "" and "latency p50" in quiet.out
    printed = cli("bench", *common, "--json", "-")
    assert printed.code == 0 and printed.err == "" and json.loads(printed.out)["latency_ms"]["runs"] == 20
