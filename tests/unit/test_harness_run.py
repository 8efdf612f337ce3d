"""End-to-end harness runs on tiny real ONNX models in spawned workers.

Timing values are never asserted against thresholds (the machine is shared); only structure,
counts, sizes, and drift against a NumPy oracle are.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import numpy_helper

from edgec.errors import BadInputError, EdgecError, RuntimeUnavailableError
from edgec.harness.run import ModelRef, _round_order, benchmark, measure, model_size_bytes
from edgec.harness.transport import Channel, LocalTransport

#: The test models are ONNX files run by ONNX Runtime.
_onnx = functools.partial(ModelRef, runtime="onnxruntime")

IN, OUT, SAMPLES = 8, 4, 6
SECTION_KEYS = {"latency_ms", "latency_by_shape_ms", "throughput_per_s", "load_ms", "peak_rss_mb", "rss_before_load_mb",
                "size_bytes"}


class RecordingTransport(LocalTransport):
    """Local workers, remembered so a test can see (or kill) their processes."""

    def __init__(self) -> None:
        self.channels: list[Channel] = []

    def open(self, who: str) -> Channel:
        self.channels.append(super().open(who))
        return self.channels[-1]


def linear_model(weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """y = x @ W + b with x of shape [1, IN]."""
    model = onnx.parser.parse_model(
        f"""<ir_version: 8, opset_import: ["": 17]>
        linear (float[1,{IN}] x) => (float[1,{OUT}] y) {{
            t = MatMul(x, W)
            y = Add(t, B)
        }}"""
    )
    model.graph.initializer.extend([numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")])
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((IN, OUT)).astype(np.float32)
    bias = rng.standard_normal(OUT).astype(np.float32)
    root = tmp_path_factory.mktemp("harness")
    paths = {"fp32": root / "fp32.onnx", "copy": root / "copy.onnx", "perturbed": root / "perturbed.onnx"}
    onnx.save(linear_model(weight, bias), paths["fp32"])
    onnx.save(linear_model(weight, bias), paths["copy"])
    onnx.save(linear_model(weight + np.float32(0.05), bias), paths["perturbed"])
    samples = [{"x": rng.standard_normal((1, IN)).astype(np.float32)} for _ in range(SAMPLES)]
    # Labels from a NumPy oracle of the fp32 model, so the baseline must score 100%.
    labels = np.array([int(np.argmax(s["x"] @ weight + bias)) for s in samples], dtype=np.int64)
    return {"paths": paths, "samples": samples, "labels": labels, "weight": weight, "bias": bias}


@pytest.fixture(scope="module")
def perturbed_report(models: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    messages: list[str] = []
    report = benchmark(
        _onnx(models["paths"]["perturbed"], label="int8"),
        _onnx(models["paths"]["fp32"], label="fp32"),
        models["samples"],
        threads=1,
        warmup=2,
        runs=20,
        labels=models["labels"],
        progress=messages.append,
    )
    return report, messages


def test_report_structure(perturbed_report: tuple[dict[str, Any], list[str]], models: dict[str, Any]) -> None:
    report, _ = perturbed_report
    assert set(report) == SECTION_KEYS | {"threads", "baseline", "speedup_p50", "drift", "framework_baseline"}
    assert report["framework_baseline"] is None
    assert set(report["baseline"]) == SECTION_KEYS
    assert report["threads"] == 1
    for section in (report, report["baseline"]):
        assert section["latency_ms"]["runs"] == 20
        assert section["latency_ms"]["min"] > 0
        assert section["throughput_per_s"] > 0
        assert section["load_ms"] > 0
        assert section["peak_rss_mb"] >= section["rss_before_load_mb"] > 0
    assert report["size_bytes"] == models["paths"]["perturbed"].stat().st_size
    assert report["baseline"]["size_bytes"] == models["paths"]["fp32"].stat().st_size
    assert report["speedup_p50"] > 0
    assert report["speedup_p50"] == pytest.approx(
        report["baseline"]["latency_ms"]["p50"] / report["latency_ms"]["p50"]
    )
    # throughput = runs / sum of latencies; the mean times runs is that sum.
    assert report["throughput_per_s"] == pytest.approx(1e3 / report["latency_ms"]["mean"], rel=1e-6)


def test_perturbed_model_drifts(perturbed_report: tuple[dict[str, Any], list[str]], models: dict[str, Any]) -> None:
    report, _ = perturbed_report
    drift = report["drift"]
    y = drift["outputs"]["y"]
    # W + 0.05 shifts each output by 0.05 * sum(x): an oracle for the error's size.
    expected_max = max(abs(0.05 * float(np.sum(s["x"]))) for s in models["samples"])
    assert y["max_abs"] == pytest.approx(expected_max, rel=1e-4, abs=1e-5)
    assert y["max_abs"] > 0
    assert y["sqnr_db"] < 200.0
    assert drift["baseline_accuracy"] == 1.0
    assert drift["accuracy"] is not None and drift["top1_agreement"] is not None
    assert drift["accuracy_drop_pp"] == pytest.approx((1.0 - drift["accuracy"]) * 100)


def test_progress_messages(perturbed_report: tuple[dict[str, Any], list[str]]) -> None:
    _, messages = perturbed_report
    assert "loading artifact 'int8'" in messages
    assert "loading baseline 'fp32'" in messages
    assert "round 2/2" in messages and "computing drift" in messages


def test_identical_models_do_not_drift(models: dict[str, Any]) -> None:
    report = benchmark(
        _onnx(models["paths"]["copy"]),
        _onnx(models["paths"]["fp32"]),
        models["samples"],
        threads=1,
        warmup=1,
        runs=5,
    )
    y = report["drift"]["outputs"]["y"]
    assert y["max_abs"] <= 1e-6
    assert y["cosine_min"] == pytest.approx(1.0)
    assert report["drift"]["top1_agreement"] == 1.0
    assert report["latency_ms"]["runs"] == report["baseline"]["latency_ms"]["runs"] == 5


def test_framework_reference_is_timed_in_the_same_rounds_and_never_used_for_drift(models: dict[str, Any]) -> None:
    report = benchmark(_onnx(models["paths"]["copy"]), _onnx(models["paths"]["fp32"]), models["samples"],
                       threads=1, warmup=0, runs=15, framework=_onnx(models["paths"]["perturbed"]))
    framework = report["framework_baseline"]
    assert framework["latency_ms"]["runs"] == report["latency_ms"]["runs"] == 15
    assert framework["speedup_p50"] == pytest.approx(framework["latency_ms"]["p50"] / report["latency_ms"]["p50"])
    assert report["speedup_p50"] == pytest.approx(report["baseline"]["latency_ms"]["p50"] / report["latency_ms"]["p50"])
    assert "speedup_p50" not in report["baseline"]
    assert report["drift"]["outputs"]["y"]["max_abs"] <= 1e-6  # against the baseline, not the perturbed framework


def test_without_baseline(models: dict[str, Any]) -> None:
    # Ballast in the parent: a spawned worker must not report the parent's memory as its own
    # peak (ru_maxrss does after fork+exec on Linux; the harness reads VmHWM there).
    ballast = np.ones(384 * 2**20 // 8)
    report = benchmark(_onnx(models["paths"]["fp32"]), None, models["samples"], threads=1, warmup=0, runs=3)
    assert report["baseline"] is None and report["drift"] is None and report["speedup_p50"] is None
    assert report["latency_ms"]["runs"] == 3
    if Path("/proc/self/status").exists():
        assert report["peak_rss_mb"] < ballast.nbytes / 2**20
    del ballast


def test_corrupt_model_raises_bad_input(tmp_path: Path, models: dict[str, Any]) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    transport = RecordingTransport()
    with pytest.raises(BadInputError, match="cannot load"):
        benchmark(_onnx(corrupt), _onnx(models["paths"]["fp32"]), models["samples"], threads=1, runs=2,
                  transport=transport)
    assert len(transport.channels) == 2
    assert all(channel.process.poll() is not None for channel in transport.channels)  # type: ignore[attr-defined]
    assert not any(channel.exchange.exists() for channel in transport.channels)  # type: ignore[attr-defined]


def test_worker_error_keeps_its_class(models: dict[str, Any]) -> None:
    ref = _onnx(models["paths"]["fp32"], options={"provider": "NoSuchExecutionProvider"})
    with pytest.raises(RuntimeUnavailableError, match="NoSuchExecutionProvider"):
        benchmark(ref, None, models["samples"], threads=1, runs=2)
    wrong_dtype = [{"x": s["x"].astype(np.float64)} for s in models["samples"]]
    with pytest.raises(BadInputError, match="dtype float64"):
        benchmark(_onnx(models["paths"]["fp32"]), None, wrong_dtype, threads=1, warmup=1, runs=2)


def test_dead_worker_surfaces_as_error(models: dict[str, Any]) -> None:
    transport = RecordingTransport()

    def kill_artifact_worker(message: str) -> None:
        if message == "round 1/3":
            (channel,) = [c for c in transport.channels if c.who == "artifact"]
            channel.process.kill()  # type: ignore[attr-defined]
            channel.process.wait()  # type: ignore[attr-defined]

    with pytest.raises(EdgecError, match=r"exited unexpectedly \(exit code -9\)"):
        benchmark(
            _onnx(models["paths"]["fp32"]), None, models["samples"], threads=1, warmup=0, runs=30,
            progress=kill_artifact_worker, transport=transport,
        )


def test_bad_arguments_fail_before_spawning(tmp_path: Path, models: dict[str, Any]) -> None:
    ref = _onnx(models["paths"]["fp32"])
    with pytest.raises(BadInputError, match="not found"):
        benchmark(_onnx(tmp_path / "missing.onnx"), None, models["samples"], threads=1)
    with pytest.raises(BadInputError, match="no samples"):
        benchmark(ref, None, [], threads=1)
    with pytest.raises(BadInputError, match="runs"):
        benchmark(ref, None, models["samples"], threads=1, runs=0)
    with pytest.raises(BadInputError, match="threads"):
        benchmark(ref, None, models["samples"], threads=-1)
    with pytest.raises(BadInputError, match="one label per sample"):
        benchmark(ref, ref, models["samples"], threads=1, labels=np.zeros(SAMPLES + 1, np.int64))


def test_size_counts_external_data_and_directories(tmp_path: Path) -> None:
    weight = np.ones((IN, OUT), np.float32)
    model = linear_model(weight, np.zeros(OUT, np.float32))
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(
        model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0
    )
    data = path.parent / "weights.bin"
    assert data.stat().st_size >= weight.nbytes
    assert model_size_bytes(path) == path.stat().st_size + data.stat().st_size
    (path.parent / "manifest.json").write_text("{}")
    assert model_size_bytes(path.parent) == path.stat().st_size + data.stat().st_size + 2


def test_measure_three_models_side_by_side(models: dict[str, Any]) -> None:
    paths = models["paths"]
    refs = [_onnx(paths["fp32"], label="fp32"), _onnx(paths["copy"], label="copy"),
            _onnx(paths["perturbed"], label="perturbed")]
    messages: list[str] = []
    sections = measure(refs, models["samples"], threads=1, warmup=1, runs=25, collect_outputs=True,
                       progress=messages.append)
    assert list(sections) == ["fp32", "copy", "perturbed"]
    for ref in refs:
        section = sections[ref.label]
        assert set(section) == SECTION_KEYS | {"outputs"}
        assert section["latency_ms"]["runs"] == 25
        assert section["throughput_per_s"] == pytest.approx(1e3 / section["latency_ms"]["mean"], rel=1e-6)
        assert section["load_ms"] > 0
        assert section["peak_rss_mb"] >= section["rss_before_load_mb"] > 0
        assert section["size_bytes"] == ref.path.stat().st_size
        assert len(section["outputs"]) == SAMPLES
    # Outputs against a NumPy oracle of each model, in sample order.
    for label, shift in (("fp32", 0.0), ("copy", 0.0), ("perturbed", 0.05)):
        for sample, out in zip(models["samples"], sections[label]["outputs"]):
            expected = sample["x"] @ (models["weight"] + np.float32(shift)) + models["bias"]
            np.testing.assert_allclose(out["y"], expected, rtol=1e-5, atol=1e-5)
    assert [m for m in messages if m.startswith("loading")] == ["loading fp32", "loading copy", "loading perturbed"]
    assert "round 3/3" in messages and "collecting outputs" in messages


def test_measure_without_outputs_and_bad_refs(models: dict[str, Any]) -> None:
    ref = _onnx(models["paths"]["fp32"], label="a")
    sections = measure([ref], models["samples"], threads=1, warmup=0, runs=2)
    assert set(sections["a"]) == SECTION_KEYS
    with pytest.raises(BadInputError, match="no models"):
        measure([], models["samples"], threads=1)
    with pytest.raises(BadInputError, match="unique"):
        measure([ref, _onnx(models["paths"]["copy"], label="a")], models["samples"], threads=1)


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_round_order_rotates_every_model_through_every_position(count: int) -> None:
    orders = [_round_order(count, index) for index in range(2 * count)]
    for order in orders:
        assert sorted(order) == list(range(count))
    for position in range(count):
        assert sorted(order[position] for order in orders[:count]) == list(range(count))
    assert orders[:count] == orders[count:]
    if count == 2:
        assert orders[:2] == [[0, 1], [1, 0]]  # plain alternation


def test_unguarded_script_just_works(tmp_path: Path, models: dict[str, Any]) -> None:
    """Workers are `python -m edgec.harness.worker` processes: they never re-run the caller's script, so a
    script without an `if __name__ == "__main__":` guard benchmarks once and succeeds."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import sys, edgec\n"
        "try:\n"
        f"    edgec.bench({str(models['paths']['fp32'])!r}, runs=2, warmup=0, threads=1)\n"
        "except edgec.EdgecError as exc:\n"
        "    sys.exit(f'EdgecError: {exc}')\n"
        "print('benchmarked')\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("benchmarked") == 1


def test_samples_of_different_shapes_get_latency_per_shape(tmp_path: Path) -> None:
    """Token sequences of different lengths must not blur into one latency distribution."""
    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[1, seq] x) => (float[1] y) <int64[1] axes = {1}> { y = ReduceSum <keepdims = 0> (x, axes) }""")
    path = tmp_path / "sum.onnx"
    onnx.save_model(model, path)
    samples = [{"x": np.ones((1, n), np.float32)} for n in (4, 64, 4)]
    section = measure([_onnx(path)], samples, threads=1, warmup=1, runs=12)["artifact"]
    by_shape = section["latency_by_shape_ms"]
    assert list(by_shape) == ["x=1x64", "x=1x4"]  # timing starts after one warm-up run: sample 1 first
    assert [summary["runs"] for summary in by_shape.values()] == [4, 8]
    uniform = measure([_onnx(path)], samples[:1], threads=1, warmup=0, runs=3)["artifact"]
    assert uniform["latency_by_shape_ms"] is None
