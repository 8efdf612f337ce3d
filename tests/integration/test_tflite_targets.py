"""The TFLite targets end to end through the CLI: ONNX, Keras and `.pt2` sources to `.tflite`, run in LiteRT.

Each test compiles with `edgec compile -t tflite-*` and reads the `.tflite` back with LiteRT's own
interpreter (not edgec's runtime), so what is checked is the file a phone would get. The Keras test
converts the same Keras model with TensorFlow's converter, calibrated on the same samples, and both
`.tflite` files must agree with Keras and with each other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tensorflow", reason="the TF converter reference needs edgec[tflite]")
pytest.importorskip("tf2onnx", reason="Keras sources need edgec[tflite]")
pytest.importorskip("ai_edge_litert", reason="running .tflite needs edgec[tflite]")

from edgec.cli import main  # noqa: E402

#: tflite-int8's own threshold (targets/tflite-int8.toml `min_cosine`): int8 vs the float model, worst sample.
INT8_MIN_COSINE = 0.98
#: edgec's int8 .tflite vs the converter's int8 .tflite: two int8 roundings of the same float model.
INT8_PAIR_MIN_COSINE = 0.97
FP16_MIN_COSINE = 0.999
CALIB, EVAL = 32, 16

Cli = Callable[..., Any]


def litert_outputs(path: Path, images: np.ndarray) -> np.ndarray:
    """The first output of `path` on each image (batch 1 each), run in LiteRT's own interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    (feed,), fetch = interpreter.get_input_details(), interpreter.get_output_details()[0]
    results = []
    for image in images:
        interpreter.set_tensor(feed["index"], image[None].astype(feed["dtype"]))
        interpreter.invoke()
        results.append(interpreter.get_tensor(fetch["index"]).ravel().astype(np.float64))
    return np.stack(results)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The worst per-sample cosine between two stacks of flattened outputs."""
    return float(np.min(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def int8_tensors(path: Path) -> int:
    """How many tensors of a `.tflite` are int8: a full-int8 model has one per quantized weight and activation."""
    from ai_edge_litert.interpreter import Interpreter

    return sum(detail["dtype"] == np.int8 for detail in Interpreter(model_path=str(path)).get_tensor_details())


@dataclass(frozen=True)
class KerasAssets:
    keras: Path
    calib: Path
    eval_npz: Path
    eval: np.ndarray
    float_outputs: np.ndarray
    converter_int8: Path
    edgec_int8: Path


@pytest.fixture(scope="module")
def keras_cnn(tmp_path_factory: pytest.TempPathFactory) -> KerasAssets:
    """A small Keras CNN (random weights, NHWC, batch 1), its data, the converter's full-int8 `.tflite` of it
    calibrated on the same samples, and edgec's `tflite-int8` artifact of it."""
    import keras
    import tensorflow as tf

    root = tmp_path_factory.mktemp("keras-cnn")
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((16, 16, 3), batch_size=1, name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    model = keras.Model(inputs, layers.Dense(10, name="logits")(x))
    model.save(root / "cnn.keras")

    images = np.random.default_rng(0).standard_normal((CALIB + EVAL, 16, 16, 3)).astype(np.float32)
    np.savez(root / "calib.npz", image=images[:CALIB])
    np.savez(root / "eval.npz", image=images[CALIB:])

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([image[None]] for image in images[:CALIB])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    (root / "converter-int8.tflite").write_bytes(converter.convert())

    out = root / "edgec-int8"
    assert main(["compile", str(root / "cnn.keras"), "-t", "tflite-int8", "--calib", str(root / "calib.npz"),
                 "--trust-source", "-o", str(out)]) == 0
    return KerasAssets(root / "cnn.keras", root / "calib.npz", root / "eval.npz", images[CALIB:],
                       np.asarray(model(images[CALIB:])).astype(np.float64), root / "converter-int8.tflite",
                       out / "model.tflite")


def _mlp(width: int = 256) -> onnx.ModelProto:
    """x[1, width] -> Gemm -> Relu -> Gemm -> y[1, 10]: weights dominate the file, so fp16 must halve it."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.normal(0, width ** -0.5, (width, width)).astype(np.float32),
        "b1": rng.normal(0, 0.1, width).astype(np.float32),
        "w2": rng.normal(0, width ** -0.5, (width, 10)).astype(np.float32),
        "b2": rng.normal(0, 0.1, 10).astype(np.float32),
    }
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(array, name) for name, array in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_targets_lists_the_tflite_targets_as_buildable(cli: Cli) -> None:
    result = cli("targets")
    assert result.code == 0, result.err
    for name in ("tflite-fp32", "tflite-fp16", "tflite-int8"):
        assert re.search(rf"^{name}\s+tflite\s+\w+\s+builds: yes", result.out, re.MULTILINE), result.out


@pytest.mark.slow
def test_onnx_to_tflite_int8_then_bench(cli: Cli, tiny: Any, tmp_path: Path) -> None:
    """`compile model.onnx -t tflite-int8 --calib` writes model.tflite + manifest + calibration; `bench` runs it."""
    out = tmp_path / "out"
    compiled = cli("compile", tiny.model, "-t", "tflite-int8", "--calib", tiny.calib, "-o", out)  # batch dim dynamic
    assert compiled.code == 0, compiled.err
    assert {"model.tflite", "manifest.json", "calibration.json"} <= {path.name for path in out.iterdir()}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifact"]["file"] == "model.tflite" and manifest["artifact"]["runtime"] == "tflite"
    assert int8_tensors(out / "model.tflite") > 0

    report_path = tmp_path / "report.json"
    result = cli("bench", out, "--data", tiny.calib, "--threads", 1, "--warmup", 2, "--runs", 20,
                 "--json", report_path)
    assert result.code == 0, result.err
    assert "latency p50" in result.out and "speedup" in result.out
    report = json.loads(report_path.read_text())
    assert report["target"] == "tflite-int8" and report["latency_ms"]["runs"] == 20
    assert report["size_bytes"] == (out / "model.tflite").stat().st_size
    assert report["baseline"] is not None
    assert report["drift"]["outputs"]["scores"]["cosine_min"] >= INT8_MIN_COSINE
    # the descriptor's device is an Arm phone: benching on x86 works, and says so
    assert any("aarch64" in warning for warning in report["warnings"]), report["warnings"]


@pytest.mark.slow
def test_keras_compiled_by_edgec_and_converted_by_tf_agree_in_litert(keras_cnn: KerasAssets) -> None:
    """The same Keras model, edgec's int8 vs the converter's int8 (same calibration samples), both in LiteRT."""
    edgec_out = litert_outputs(keras_cnn.edgec_int8, keras_cnn.eval)
    converter_out = litert_outputs(keras_cnn.converter_int8, keras_cnn.eval)
    assert int8_tensors(keras_cnn.edgec_int8) > 0
    assert min_cosine(edgec_out, keras_cnn.float_outputs) >= INT8_MIN_COSINE
    assert min_cosine(converter_out, keras_cnn.float_outputs) >= INT8_MIN_COSINE
    assert min_cosine(edgec_out, converter_out) >= INT8_PAIR_MIN_COSINE


@pytest.mark.slow
def test_bench_takes_the_converters_tflite_as_baseline(cli: Cli, keras_cnn: KerasAssets, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    result = cli("bench", keras_cnn.edgec_int8.parent, "--baseline", keras_cnn.converter_int8, "--data",
                 keras_cnn.eval_npz, "--baseline-from", "onnx", "--threads", 1, "--warmup", 2, "--runs", 20,
                 "--json", report_path)
    assert result.code == 0, result.err
    assert "speedup" in result.out
    report = json.loads(report_path.read_text())
    assert report["baseline"]["size_bytes"] == keras_cnn.converter_int8.stat().st_size
    assert report["speedup_p50"] > 0
    first = next(iter(report["drift"]["outputs"].values()))
    assert first["cosine_min"] >= INT8_PAIR_MIN_COSINE


@pytest.mark.slow
def test_pt2_to_tflite_int8_then_bench(cli: Cli, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="the PyTorch frontend needs torch (install edgec[torch])")
    from torch import nn

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                           nn.Flatten(), nn.Linear(8, 4)).eval()
    pt2 = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(module, (torch.zeros(1, 3, 8, 8),)), pt2)
    images = np.random.default_rng(0).standard_normal((CALIB, 3, 8, 8)).astype(np.float32)
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=images)
    out = tmp_path / "out"
    compiled = cli("compile", pt2, "-t", "tflite-int8", "--calib", calib, "-o", out)
    assert compiled.code == 0, compiled.err
    with torch.no_grad():
        expected = module(torch.from_numpy(images)).numpy().astype(np.float64)
    assert min_cosine(litert_outputs(out / "model.tflite", images), expected) >= INT8_MIN_COSINE
    result = cli("bench", out, "--data", calib, "--baseline-from", "onnx", "--threads", 1, "--warmup", 2,
                 "--runs", 20)
    assert result.code == 0, result.err
    assert "latency p50" in result.out


def test_fp16_is_about_half_the_fp32_size(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "mlp.onnx"
    onnx.save_model(_mlp(), source)
    paths = {}
    for precision in ("fp32", "fp16"):
        out = tmp_path / precision
        result = cli("compile", source, "-t", f"tflite-{precision}", "-o", out)
        assert result.code == 0, result.err
        paths[precision] = out / "model.tflite"
    ratio = paths["fp16"].stat().st_size / paths["fp32"].stat().st_size
    assert 0.45 <= ratio <= 0.6, ratio
    x = np.random.default_rng(1).standard_normal((EVAL, 256)).astype(np.float32)
    assert min_cosine(litert_outputs(paths["fp16"], x), litert_outputs(paths["fp32"], x)) >= FP16_MIN_COSINE
