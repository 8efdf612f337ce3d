"""Typed reports and manifests: the previous schema still loads, JSON round-trips whole, bad input is one error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgec.errors import BadInputError
from edgec.report.types import (BENCH_SCHEMA, BenchReport, Drift, LatencyStats, Manifest, Measurement,
                                read_bench_report)

DATA = Path(__file__).parent / "data"
#: Written by `edgec bench --json --runs 20` of edgec before `edgec.bench/2` (a one-MatMul model, cpu-x86-fp32).
V1_REPORT = DATA / "bench-report-v1.json"
#: Written by `edgec compile` of the same edgec for that model.
V1_MANIFEST = DATA / "manifest-v1.json"


def test_a_previous_schema_report_loads_typed() -> None:
    report = read_bench_report(V1_REPORT)
    assert report.schema == "edgec.bench/1" and report.target == "cpu-x86-fp32" and report.thresholds is None
    assert isinstance(report.latency_ms, LatencyStats) and report.latency_ms.runs == 20
    assert len(report.latency_ms.samples) == 20 and report.latency_ms.p50 > 0
    assert isinstance(report.baseline, Measurement) and report.baseline.model.precision == "fp32"
    assert isinstance(report.drift, Drift) and report.drift.outputs["y"].cosine_min == pytest.approx(1.0)
    assert report.drift.min_cosine == report.drift.outputs["y"].cosine_min
    assert report.host.cpu_model and report.device_name == report.host.cpu_model
    assert report.model_name == "tiny" and report.provenance.artifact_sha256


def test_round_trip_keeps_every_key_and_value() -> None:
    data = json.loads(V1_REPORT.read_text())
    data["added_by_a_newer_edgec"] = {"kept": [1, 2]}
    data["latency_ms"]["p999"] = 1.5
    assert BenchReport.from_dict(data).to_dict() == data
    manifest = json.loads(V1_MANIFEST.read_text())
    assert Manifest.from_dict(manifest).to_dict() == manifest


def test_todays_manifest_loads_typed(tmp_path) -> None:
    (tmp_path / "manifest.json").write_text(V1_MANIFEST.read_text())
    data = json.loads(V1_MANIFEST.read_text())
    manifest = Manifest.from_dict(data)
    assert manifest.target.name == "cpu-x86-fp32" and manifest.artifact.file == "model.onnx"
    assert manifest.artifact.precision == "fp32" and manifest.nodes.artifact == 1
    assert manifest.target.descriptor["thresholds"] == {"min_cosine": 0.999}


def test_a_partial_report_loads_with_nones() -> None:
    report = BenchReport.from_dict({"schema": "edgec.bench/1"})
    assert report.latency_ms is None and report.drift is None and report.device_name == "unknown"
    assert report.to_dict() == {"schema": "edgec.bench/1"}
    assert BenchReport().to_dict()["latency_ms"] is None  # a report built here writes every key


def test_a_new_report_is_written_under_the_current_schema() -> None:
    assert BenchReport().schema == BENCH_SCHEMA == "edgec.bench/2"


@pytest.mark.parametrize(("data", "needle"), [
    ({"schema": "edgec.bench/3"}, "newer than this edgec reads"),
    ({"schema": "edgec.gate/1"}, "not an edgec bench report"),
    ({}, "not an edgec bench report"),
    ([1, 2], "not an edgec bench report"),
    ({"schema": "edgec.bench/1", "drift": 5}, "report.drift is a JSON int, not an object"),
    ({"schema": "edgec.bench/1", "drift": {"outputs": {"y": [1]}}}, r"report.drift.outputs.y is a JSON list"),
    ({"schema": "edgec.bench/1", "latency_by_shape_ms": [1]}, "latency_by_shape_ms is a JSON list"),
])
def test_bad_reports_are_one_error(data: object, needle: str) -> None:
    with pytest.raises(BadInputError, match=needle):
        BenchReport.from_dict(data)


def test_a_manifest_of_another_schema_is_refused() -> None:
    with pytest.raises(BadInputError, match="not 'edgec.manifest/1'"):
        Manifest.from_dict({"schema": "edgec.manifest/9"})


def test_read_bench_report_refuses_truncated_json(tmp_path) -> None:
    truncated = tmp_path / "r.json"
    truncated.write_text(V1_REPORT.read_text()[:100])
    with pytest.raises(BadInputError, match="not valid JSON"):
        read_bench_report(truncated)


def test_missing_tells_an_absent_key_from_a_null_one() -> None:
    report = BenchReport.from_dict({"schema": "edgec.bench/2", "drift": None, "latency_ms": {"p50": 1.0}})
    assert report.missing("drift") == "null" and report.missing("speedup_p50") == "absent"
    assert report.missing("latency_ms") is None and report.latency_ms.missing("p90") == "absent"


def test_an_int8_manifest_with_a_budget_search_loads_typed_and_round_trips(tmp_path) -> None:
    """A real int8 compile with an accuracy budget: its source, calibration, quantization and search are records."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgec.compiler import compile as compile_model

    rng = np.random.default_rng(0)
    nodes, weights, last = [], [], "x"
    for k in range(3):
        weights.append(numpy_helper.from_array(rng.normal(0, 0.3, (16, 16)).astype(np.float32), f"w{k}"))
        nodes += [helper.make_node("MatMul", [last, f"w{k}"], [f"m{k}"]), helper.make_node("Tanh", [f"m{k}"], [f"t{k}"])]
        last = f"t{k}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, 16])], weights)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(32, 1, 16)).astype(np.float32))
    result = compile_model(tmp_path / "m.onnx", "cpu-x86-int8", calib=tmp_path / "calib.npz", output_dir=tmp_path / "out",
                           min_cosine=0.9)
    manifest = Manifest.read(tmp_path / "out")
    assert manifest.to_dict() == result.manifest
    assert manifest.source.size_bytes > 0 and manifest.source.format == "onnx"
    assert manifest.calibration.samples == 32 and manifest.calibration.calibrator == "minmax"
    quantization = manifest.quantization
    search = quantization.fallback
    assert set(quantization.quantized_nodes) == {"MatMul"} and quantization.precision == "int8"
    dynamic = quantization.dynamic.dynamic_nodes.get("MatMul", 0) if quantization.dynamic else 0
    # every MatMul is int8 static, int8 dynamic or kept float, as the search's scheme counts say
    assert quantization.quantized_nodes["MatMul"] + dynamic + len(search.kept_float) == 3
    assert sum(search.schemes.values()) == quantization.quantized_nodes["MatMul"] + dynamic
    assert search.met is True and search.evaluation.min_cosine >= 0.9 and set(search.latency_ms) >= {"fp32"}
    assert [entry.name for entry in manifest.passes] and all(entry.nodes_before is not None for entry in manifest.passes)
