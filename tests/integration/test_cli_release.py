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
    assert report["schema"] == "edgec.bench/1"
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
    assert np.isfinite(report["latency_ms"]["p50"])
