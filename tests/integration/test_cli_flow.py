"""compile -> bench -> gate through the CLI on a real trained model, checked against independent oracles."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgec.artifact import sha256_file
from edgec.target import host_target, load_target

#: int8 on a trained, well-conditioned CNN: the worst test image's logits stay this close to fp32.
INT8_MIN_COSINE = 0.98
#: and the accuracy on the held-out split drops by at most this many points.
INT8_MAX_ACCURACY_DROP_PP = 1.0

REQUIRED_REPORT_KEYS = {"schema", "target", "threads", "latency_ms", "throughput_per_s", "load_ms", "peak_rss_mb",
                        "size_bytes", "baseline", "speedup_p50", "drift", "framework_baseline", "artifact_model"}
LATENCY_KEYS = {"p50", "p90", "p95", "p99", "mean", "std", "min", "max", "runs", "samples"}


def _ort_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime, one sample at a time: the oracle for what an artifact computes."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


@pytest.fixture(scope="module")
def int8_target() -> str:
    return host_target("onnxruntime", "int8").name


def test_compile_fp32_matches_source(cli, digits, tmp_path) -> None:
    out = tmp_path / "fp32"
    result = cli("compile", digits.model, "--target", "cpu-x86-fp32", "-o", out)
    assert result.code == 0, result.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema"] == "edgec.manifest/1"
    assert manifest["target"]["name"] == "cpu-x86-fp32"
    assert manifest["source"]["sha256"] == sha256_file(digits.model)
    assert manifest["artifact"]["sha256"] == sha256_file(out / "model.onnx")
    assert [p["name"] for p in manifest["passes"]] == list(load_target("cpu-x86-fp32").passes)
    assert manifest["calibration"] is None
    onnx.checker.check_model(str(out / "model.onnx"))
    x = np.load(digits.test)["pixels"][:64]
    np.testing.assert_allclose(_ort_outputs(out / "model.onnx", x), _ort_outputs(digits.model, x), rtol=1e-4, atol=1e-5)


def test_compile_int8_keeps_accuracy(cli, digits, tmp_path, int8_target) -> None:
    out = tmp_path / "int8"
    result = cli("compile", digits.model, "-t", int8_target, "--calib", digits.calib, "-o", out)
    assert result.code == 0, result.err
    manifest = json.loads((out / "manifest.json").read_text())
    calibration = manifest["calibration"]
    assert calibration["calibrator"] == "minmax" and calibration["source"] == "data" and calibration["samples"] == 180
    assert calibration["data_sha256"] == sha256_file(digits.calib)
    assert manifest["quantization"]["quantized_nodes"]["Conv"] == 3
    model = onnx.load(out / "model.onnx")
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("QuantizeLinear") >= 4 and "Relu" not in ops  # ReLUs folded into u8 quantization
    assert {init.data_type for init in model.graph.initializer} >= {onnx.TensorProto.INT8, onnx.TensorProto.INT32}
    x, labels = np.load(digits.test)["pixels"], np.load(digits.labels)
    int8, fp32 = _ort_outputs(out / "model.onnx", x), _ort_outputs(digits.model, x)
    cosine = (int8 * fp32).sum(1) / np.linalg.norm(int8, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cosine.min() >= INT8_MIN_COSINE
    drop_pp = 100 * ((fp32.argmax(1) == labels).mean() - (int8.argmax(1) == labels).mean())
    assert drop_pp <= INT8_MAX_ACCURACY_DROP_PP


def test_bench_then_gate(cli, digits, tmp_path, int8_target) -> None:
    out = tmp_path / "artifact"
    assert cli("compile", digits.model, "-t", int8_target, "--calib", digits.calib, "-o", out).code == 0
    report_path = tmp_path / "report.json"
    result = cli("bench", out, "--data", digits.test, "--labels", digits.labels, "--threads", 1,
                 "--warmup", 2, "--runs", 20, "--json", report_path)
    assert result.code == 0, result.err
    assert "speedup" in result.out and "accuracy" in result.out
    report = json.loads(report_path.read_text())
    assert REQUIRED_REPORT_KEYS <= set(report)
    assert report["schema"] == "edgec.bench/2" and report["target"] == int8_target and report["threads"] == 1
    assert set(report["latency_ms"]) == LATENCY_KEYS and report["latency_ms"]["runs"] == 20
    assert set(report["baseline"]["latency_ms"]) == LATENCY_KEYS
    assert report["size_bytes"] == os.path.getsize(out / "model.onnx")
    assert report["baseline"]["size_bytes"] == os.path.getsize(digits.model)
    assert report["size_bytes"] < report["baseline"]["size_bytes"]  # int8 weights
    drift = report["drift"]
    assert set(drift["outputs"]) == {"logits"}
    assert drift["outputs"]["logits"]["cosine_min"] >= INT8_MIN_COSINE
    assert drift["accuracy_drop_pp"] <= INT8_MAX_ACCURACY_DROP_PP
    assert drift["top1_agreement"] >= 0.97

    junit, markdown = tmp_path / "gate.xml", tmp_path / "gate.md"
    passing = cli("gate", report_path, "--max-accuracy-drop-pp", 1.0, "--min-cosine", INT8_MIN_COSINE,
                  "--junit", junit, "--markdown", markdown)
    assert passing.code == 0, passing.out
    assert ET.parse(junit).getroot().get("failures") == "0"
    assert "min_cosine" in markdown.read_text()

    failing = cli("gate", report_path, "--min-speedup", 1000)
    assert failing.code == 1 and "FAIL" in failing.out

    policy = tmp_path / "policy.toml"
    policy.write_text("max_accuracy_drop_pp = 1.0\nmax_size_mb = 0.0001\n")
    assert cli("gate", report_path, "--policy", policy).code == 1
    assert cli("gate", report_path, "--policy", policy, "--max-size-mb", 10).code == 0  # CLI overrides policy


def test_gate_fails_closed_on_missing_metric(cli, tiny, tmp_path) -> None:
    report_path = tmp_path / "report.json"
    assert cli("bench", tiny.model, "--runs", 5, "--warmup", 0, "--threads", 1, "--json", report_path).code == 0
    report = json.loads(report_path.read_text())
    assert report["baseline"] is None and report["drift"] is None and report["data"] == "random"
    result = cli("gate", report_path, "--max-accuracy-drop-pp", 5)
    assert result.code == 1 and "missing" in result.out


def test_bench_plain_onnx_against_explicit_baseline(cli, tiny, tmp_path) -> None:
    result = cli("bench", tiny.model, "--baseline", tiny.model, "--runs", 5, "--warmup", 0, "--threads", 1)
    assert result.code == 0, result.err
    assert "cosine min 1.00000" in result.out


def test_passes_override_and_skip(cli, tiny, tmp_path) -> None:
    out = tmp_path / "skip"
    assert cli("compile", tiny.model, "-t", "cpu-x86-fp32", "-o", out, "--skip-passes", "fold_batchnorm").code == 0
    ops = [node.op_type for node in onnx.load(out / "model.onnx").graph.node]
    assert "BatchNormalization" in ops
    out2 = tmp_path / "only"
    assert cli("compile", tiny.model, "-t", "cpu-x86-fp32", "-o", out2, "--passes", "fold_batchnorm").code == 0
    manifest = json.loads((out2 / "manifest.json").read_text())
    assert [p["name"] for p in manifest["passes"]] == ["fold_batchnorm"]
    assert manifest["passes"][0]["nodes_before"] == manifest["passes"][0]["nodes_after"] + 1


def test_random_calibration_is_recorded(cli, tiny, tmp_path, int8_target) -> None:
    out = tmp_path / "random"
    assert cli("compile", tiny.model, "-t", int8_target, "--calib", "random", "-o", out).code == 0
    calibration = json.loads((out / "manifest.json").read_text())["calibration"]
    assert calibration["source"] == "random" and calibration["data"] == "random"


def test_force_replaces_existing_output(cli, tiny, tmp_path) -> None:
    out = tmp_path / "out"
    assert cli("compile", tiny.model, "-t", "cpu-x86-fp32", "-o", out).code == 0
    (out / "stale.txt").write_text("old")
    assert cli("compile", tiny.model, "-t", "cpu-x86-fp32", "-o", out, "--force").code == 0
    assert not (out / "stale.txt").exists() and (out / "manifest.json").is_file()


def test_targets_listing(cli) -> None:
    result = cli("targets", "--json")
    rows = {row["name"]: row for row in json.loads(result.out)}
    assert {"cpu-x86-fp32", "cpu-x86-int8", "cpu-arm64-int8", "cuda-fp16", "tensorrt-fp16", "tensorrt-int8",
            "tflite-int8", "tflite-fp16", "tflite-fp32"} <= set(rows)
    assert rows["tensorrt-int8"]["runs_here"] is False and "tensorrt" in rows["tensorrt-int8"]["why"]
    # building and running are told apart: an Arm target builds here but does not run here
    assert rows["cpu-arm64-int8"]["builds"] is True and rows["cpu-arm64-int8"]["runs_here"] is False
    assert all(rows[name]["builds"] is True for name in ("tflite-fp32", "tflite-fp16", "tflite-int8"))  # cross-compiled
    assert "builds: yes; runs on this host: no (built for aarch64" in cli("targets").out
    shown = json.loads(cli("target", "cpu-x86-int8").out)
    assert shown["quant"]["activations"]["dtype"] == "uint8" and shown["quant"]["weights"]["granularity"] == "per_channel"
    assert "fold_batchnorm" in cli("passes").out
    assert cli("targets", "--verbose").code == 0 and cli("passes", "-v").code == 0  # after the subcommand too


def test_console_script_and_module_entry_point(tiny) -> None:
    """The installed `edgec` command works outside pytest's process (spawned bench workers included)."""
    for command in (["edgec"], [sys.executable, "-m", "edgec"]):
        result = subprocess.run([*command, "bench", str(tiny.model), "--runs", "3", "--warmup", "0", "--threads", "1"],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "latency p50" in result.stdout


@pytest.mark.slow
def test_demo_end_to_end(tmp_path) -> None:
    """`edgec demo` on a fresh cache: trains, compiles, benchmarks, gates and says where files went.

    By default it writes under the user cache dir, never into the current directory."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = subprocess.run(["edgec", "demo", "--runs", "20"], capture_output=True, text=True, timeout=900, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gate: PASS" in result.stdout
    workdir = tmp_path / "cache" / "edgec" / "demo-run"
    assert (workdir / "report.json").is_file() and f"files written to {workdir}" in result.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cache"]
    assert any((tmp_path / "cache").rglob("*.onnx"))
    # the speed question is answered, not skipped: int8 is kept only if it pays here, and the output says which
    assert "precision auto: int8 measured" in result.stdout
    manifest = json.loads(next(workdir.glob("digits_cnn-*/manifest.json")).read_text())
    auto = manifest["quantization"]["auto"]
    assert manifest["artifact"]["precision"] == auto["chosen"] == ("int8" if auto["speedup"] >= 1.10 else "fp32")


def _input_dims(path: Path) -> list[int | str]:
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]


def test_fix_shape_and_target_fix_dims(cli, tiny, tmp_path) -> None:
    assert _input_dims(tiny.model) == ["N", 3, 8, 8]
    out = tmp_path / "fixed"
    assert cli("compile", tiny.model, "-t", "cpu-x86-fp32", "-o", out, "--fix-shape", "x:4x3x8x8").code == 0
    assert _input_dims(out / "model.onnx") == [4, 3, 8, 8]
    bad = cli("compile", tiny.model, "-t", "cpu-x86-fp32", "-o", tmp_path / "bad", "--fix-shape", "y:4x3x8x8")
    assert bad.code == 2 and "'x'" in bad.error_line or "['x']" in bad.error_line

    board = tmp_path / "board.toml"
    board.write_text('inherits = "cpu-x86-fp32"\n[options]\nfix_dims = {N = 1}\n')
    out2 = tmp_path / "board"
    assert cli("compile", tiny.model, "-t", board, "-o", out2).code == 0
    assert _input_dims(out2 / "model.onnx") == [1, 3, 8, 8]


def test_onnx_with_external_data_compiles_for_fp32_and_int8(cli, tiny, tmp_path, int8_target) -> None:
    """Weights in a side file (as exporters write large models) are found, and the artifact is self-contained."""
    source_dir = tmp_path / "external"
    source_dir.mkdir()
    model = onnx.load(tiny.model)
    onnx.save_model(model, source_dir / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (source_dir / "weights.bin").stat().st_size > 0
    x = np.load(tiny.calib)["x"]
    for target, tolerance in (("cpu-x86-fp32", 1e-5), (int8_target, None)):
        out = tmp_path / target
        result = cli("compile", source_dir / "model.onnx", "-t", target, "--calib", tiny.calib, "-o", out)
        assert result.code == 0, result.err
        got, want = _ort_outputs(out / "model.onnx", x), _ort_outputs(tiny.model, x)
        if tolerance is not None:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=tolerance)
        else:
            cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
            assert cosine.min() >= INT8_MIN_COSINE


def test_input_declarations_are_refused_for_onnx(cli, tiny, tmp_path) -> None:
    result = cli("compile", tiny.model, "-t", "cpu-x86-fp32", "-o", tmp_path / "out", "--input", "x:1x3x8x8")
    assert result.code == 2 and "--fix-shape" in result.error_line


def test_default_output_dir_for_a_relative_dot_path(cli, tiny, tmp_path, monkeypatch) -> None:
    """`edgec compile .` (e.g. inside a SavedModel dir) must not crash on an empty name."""
    from edgec.compiler import _default_output_dir

    monkeypatch.chdir(tiny.model.parent)
    target = load_target("cpu-x86-fp32")
    assert _default_output_dir(Path("."), target) == tiny.model.parent.parent / f"{tiny.model.parent.name}-cpu-x86-fp32"
    assert _default_output_dir(Path("tiny.onnx"), target) == tiny.model.parent / "tiny-cpu-x86-fp32"


# --- int8 options: sensitivity report, accuracy budget, precision auto, overrides -------------


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _compile_int8(cli, assets, target: str, out: Path, *options: object):
    """`edgec compile` of a fixture's model for an int8 target on its calibration data, plus `options`."""
    return cli("compile", assets.model, "-t", target, "--calib", assets.calib, "-o", out, *options)


def test_report_writes_sensitivity_and_prints_the_worst_layers(cli, digits, tmp_path, int8_target) -> None:
    out = tmp_path / "report"
    result = _compile_int8(cli, digits, int8_target, out, "--report")
    assert result.code == 0, result.err
    quantization = _manifest(out)["quantization"]
    assert quantization["sensitivity"] == "sensitivity.json" and "fallback" not in quantization
    report = json.loads((out / "sensitivity.json").read_text())
    assert report["schema"] == "edgec.sensitivity/2"
    layers = report["layers"]
    assert len(layers) == sum(quantization["quantized_nodes"].values())
    sqnr = [layer["model_alone"]["sqnr_db"] for layer in layers]
    assert sqnr == sorted(sqnr)  # most harmful first
    table = result.out[result.out.index("most sensitive layers"):].splitlines()
    assert "model out, only it int8" in table[1] and "(SQNR dB)" in table[1]
    assert [row.split()[0] for row in table[2:2 + len(layers)]] == [layer["node"] for layer in layers]


def test_accuracy_budget_met(cli, digits, tmp_path, int8_target) -> None:
    out = tmp_path / "budget"
    result = _compile_int8(cli, digits, int8_target, out, "--max-accuracy-drop", 0.5, "--labels", digits.labels,
                           "--eval", digits.test)
    assert result.code == 0, result.err
    labels = np.load(digits.labels)
    fallback = _manifest(out)["quantization"]["fallback"]
    assert fallback["met"] is True and fallback["budget"] == {"max_accuracy_drop_pp": 0.5, "min_cosine": None}
    assert fallback["eval_samples"] == len(labels)
    assert fallback["evaluation"]["accuracy_drop_pp"] <= 0.5
    assert fallback["attempts"][-1]["kept_float"] == len(fallback["kept_float"])
    timed = {"fp32", "int8 (chosen)"} | ({"int8 (all nodes)"} if fallback["kept_float"] else set())
    assert set(fallback["latency_ms"]) == timed  # the all-int8 model is timed apart only when not chosen
    assert "accuracy budget met" in result.out and (out / "sensitivity.json").is_file()
    # the oracle: the artifact itself, run by ONNX Runtime on the evaluation data
    x = np.load(digits.test)["pixels"]
    int8, fp32 = _ort_outputs(out / "model.onnx", x), _ort_outputs(digits.model, x)
    assert 100 * ((fp32.argmax(1) == labels).mean() - (int8.argmax(1) == labels).mean()) <= 0.5


def test_keep_float_takes_the_full_node_names_the_report_prints(cli, digits, tmp_path, int8_target) -> None:
    report = json.loads((_compile_report(cli, digits, int8_target, tmp_path)).read_text())
    worst = report["layers"][0]["node"]
    out = tmp_path / "kept"
    result = _compile_int8(cli, digits, int8_target, out, "--keep-float", worst)
    assert result.code == 0, result.err
    manifest = _manifest(out)
    assert worst in manifest["target"]["descriptor"]["quant"]["keep_float"]
    assert sum(manifest["quantization"]["quantized_nodes"].values()) == len(report["layers"]) - 1


def _compile_report(cli, assets, target: str, tmp_path: Path) -> Path:
    result = _compile_int8(cli, assets, target, tmp_path / "with-report", "--report")
    assert result.code == 0, result.err
    return tmp_path / "with-report" / "sensitivity.json"


def test_unmeetable_budget_exits_1_and_keeps_the_best_attempt(cli, digits, tmp_path, int8_target) -> None:
    out = tmp_path / "missed"
    result = _compile_int8(cli, digits, int8_target, out, "--min-cosine", 1.0)
    assert result.code == 1, result.err
    assert "Traceback" not in result.err
    assert [line for line in result.err.splitlines() if line.startswith("edgec: error:")] == [result.error_line]
    assert "no int8 model met" in result.error_line and str(out) in result.error_line
    assert {"model.onnx", "manifest.json", "sensitivity.json"} <= {path.name for path in out.iterdir()}
    manifest = _manifest(out)
    assert manifest["artifact"]["sha256"] == sha256_file(out / "model.onnx")
    fallback = manifest["quantization"]["fallback"]
    assert fallback["met"] is False and fallback["budget"]["min_cosine"] == 1.0
    cosines = [attempt["min_cosine"] for attempt in fallback["attempts"]]
    assert max(cosines) < 1.0 and fallback["evaluation"]["min_cosine"] == max(cosines)
    report = json.loads((out / "sensitivity.json").read_text())
    # the search measures only the nodes holding most of the float time (which ones depends on the timing);
    # the rest are counted as unmeasured
    candidates = len(report["layers"]) + report.get("unmeasured", 0)
    assert len(fallback["kept_float"]) < candidates  # never every node: that would be the float model


def test_precision_auto_records_the_measured_speedup(cli, digits, tmp_path, int8_target) -> None:
    out = tmp_path / "auto"
    result = _compile_int8(cli, digits, int8_target, out, "--precision", "auto")
    assert result.code == 0, result.err
    manifest = _manifest(out)
    auto = manifest["quantization"]["auto"]
    assert manifest["target"]["descriptor"]["precision"] == "auto"
    assert manifest["artifact"]["precision"] == manifest["quantization"]["precision"] == auto["chosen"]
    assert {"fp32", "int8"} <= set(auto["latency_ms"]) and min(auto["latency_ms"].values()) > 0
    variant = auto["variant"]
    assert auto["chosen"] == ("fp32" if variant == "fp32" else "int8")
    if variant != "fp32":
        assert auto["speedup"] == pytest.approx(auto["latency_ms"]["fp32"] / auto["latency_ms"][variant], rel=1e-2)
        assert auto["speedup"] >= auto["min_speedup"] - 1e-3
    assert all("lost" in option for label, option in auto["options"].items() if label != variant)
    ops = {node.op_type for node in onnx.load(out / "model.onnx").graph.node}
    # "int8 dynamic" quantizes MatMul/Gemm per call and keeps the Convs static (QuantizeLinear too)
    assert bool({"QuantizeLinear", "DynamicQuantizeLinear"} & ops) == (variant != "fp32")
    assert ("DynamicQuantizeLinear" in ops) == (variant == "int8 dynamic")
    assert f"-> {auto['chosen']}" in result.out


@pytest.mark.parametrize("option", [("--calibrator", "percentile"), ("--set", "quant.calibrator=percentile")],
                         ids=["calibrator", "set"])
def test_calibrator_override_reaches_the_manifest(cli, tiny, tmp_path, int8_target, option) -> None:
    out = tmp_path / "calibrator"
    result = _compile_int8(cli, tiny, int8_target, out, *option)
    assert result.code == 0, result.err
    manifest = _manifest(out)
    assert manifest["calibration"]["calibrator"] == "percentile"
    assert json.loads((out / "calibration.json").read_text())["calibrator"] == "percentile"
    assert manifest["target"]["descriptor"]["quant"]["calibrator"] == "percentile"
    assert manifest["target"]["source"] == f"builtin:{int8_target} (overridden)"


@pytest.mark.parametrize("target, options, needle", [
    (None, ("--set", "quant.calibrater=mse"), "quant.calibrater"),
    (None, ("--set", "quant.smoothquant_alpha=2"), "quant.smoothquant_alpha"),
    (None, ("--set", "quant"), "KEY=VALUE"),
    (None, ("--max-accuracy-drop", 1.0), "--labels"),
    ("cpu-x86-fp32", ("--report",), "fp32"),
    (None, ("--keep-float", "Comv"), "Comv names no node or op type of the optimized model; did you mean Conv?"),
], ids=["unknown-key", "bad-value", "malformed", "drop-without-labels", "report-fp32", "keep-float-typo"])
def test_int8_option_errors_exit_2(cli, tiny, tmp_path, int8_target, target, options, needle) -> None:
    """Refused before any work: exit 2, one line naming the problem, no output directory."""
    result = _compile_int8(cli, tiny, target or int8_target, tmp_path / "out", *options)
    assert result.code == 2, (result.out, result.err)
    assert "Traceback" not in result.err and result.error_line.startswith("edgec: error: ")
    assert needle in result.error_line, result.error_line
    assert not (tmp_path / "out").exists()


def test_inspect_onnx_and_an_artifact(cli, tiny, tmp_path) -> None:
    result = cli("inspect", tiny.model, "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    model = onnx.load(tiny.model)
    assert [spec["name"] for spec in info["inputs"]] == [value.name for value in model.graph.input]
    assert info["ops"] == dict(collections.Counter(node.op_type for node in model.graph.node))
    assert info["size_bytes"] == os.path.getsize(tiny.model) and info["artifact"] is None
    out = tmp_path / "art"
    assert cli("compile", tiny.model, "-t", "cpu-x86-fp32", "-o", out).code == 0
    text = cli("inspect", out).out
    assert "edgec artifact for cpu-x86-fp32 (fp32)" in text and "inputs:" in text
    bad = cli("inspect", tmp_path / "missing.onnx")
    assert bad.code == 2 and bad.error_line.startswith("edgec: error: model: no such file")


def test_input_map_on_compile_and_bench(cli, tiny, tmp_path) -> None:
    renamed = tmp_path / "renamed.npz"
    np.savez(renamed, pixels=np.load(tiny.calib)["x"])
    out = tmp_path / "int8"
    result = cli("compile", tiny.model, "-t", "cpu-x86-avx2-int8", "--calib", renamed, "--input-map", "pixels=x", "-o", out)
    assert result.code == 0, result.err
    assert cli("bench", out, "--data", renamed, "--input-map", "pixels=x", "--runs", 3, "--warmup", 0).code == 0
    unmapped = cli("bench", out, "--data", renamed, "--runs", 3, "--warmup", 0)
    assert unmapped.code == 2 and "x" in unmapped.error_line


def test_bench_shape_sets_the_dynamic_dims_of_random_feeds(cli, tmp_path) -> None:
    model = tmp_path / "dyn.onnx"
    onnx.save_model(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        agraph (float[batch, 4] x) => (float[batch, 4] y) { y = Relu (x) }"""), model)
    report_path = tmp_path / "r.json"
    result = cli("bench", model, "--shape", "x:8x4", "--runs", 3, "--warmup", 0, "--json", report_path)
    assert result.code == 0, result.err
    assert json.loads(report_path.read_text())["input_shapes"] == ["x=8x4"] and "inputs x=8x4" in result.out
    for shape, needle in (("x:8x5", "dim 1 is fixed at 4"), ("y:8x4", "--shape names ['y']"), ("x:8", "give 2 positive")):
        bad = cli("bench", model, "--shape", shape, "--runs", 3)
        assert bad.code == 2 and needle in bad.error_line, bad.error_line


def test_gate_help_explains_every_threshold(capsys) -> None:
    from edgec.cli import main
    from edgec.gating import THRESHOLD_NAMES

    with pytest.raises(SystemExit) as exit_info:
        main(["gate", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in THRESHOLD_NAMES:
        option = f"--{name.replace('_', '-')} X "
        assert option in text and not text.split(option, 1)[1].startswith("--"), name  # each has its own help
