"""`edgec compile` / `edgec bench` on TensorFlow SavedModels and `.tflite` files, and their one-line errors.

The model here is a plain `tf.Module` (no Keras) saved with an explicit serving signature, and the
`.tflite` is converted from that SavedModel; outputs are checked against the module run directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

pytest.importorskip("tensorflow", reason="TensorFlow frontends need edgec[tensorflow]")
pytest.importorskip("tf2onnx", reason="TensorFlow frontends need edgec[tensorflow]")
pytest.importorskip("ai_edge_litert", reason="the TFLite runtime needs edgec[tflite]")

#: fp32 artifact vs the TensorFlow module: same float math, different kernels.
FP32_RTOL, FP32_ATOL = 1e-4, 1e-5

#: The `cli` fixture of conftest.py: runs `edgec ARGS...`, returns its CliResult (code, out, err, error_line).
Cli = Callable[..., Any]


@dataclass(frozen=True)
class ModuleAssets:
    module: Any
    savedmodel: Path
    tflite: Path
    calib: Path


@pytest.fixture(scope="session")
def affine(tmp_path_factory: pytest.TempPathFactory) -> ModuleAssets:
    """softmax(features @ w + b) as a tf.Module with a `serving_default` signature, and its .tflite."""
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class Affine(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(rng.standard_normal((6, 3)).astype(np.float32))
            self.b = tf.Variable(rng.standard_normal(3).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec((None, 6), tf.float32)])
        def __call__(self, features: Any) -> dict[str, Any]:
            return {"probs": tf.nn.softmax(tf.matmul(features, self.w) + self.b)}

    root = tmp_path_factory.mktemp("affine")
    module = Affine()
    tf.saved_model.save(module, str(root / "affine"), signatures=module.__call__)
    (root / "affine.tflite").write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(root / "affine")).convert())
    np.savez(root / "calib.npz", features=rng.standard_normal((16, 6)).astype(np.float32))
    return ModuleAssets(module, root / "affine", root / "affine.tflite", root / "calib.npz")


def _one_line_error(result: Any, expected: str) -> None:
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    assert result.error_line.startswith("edgec: error: model: ")
    assert expected in result.error_line
    assert [line for line in result.err.splitlines() if "error" in line] == [result.error_line]


@pytest.mark.parametrize("fmt", ["savedmodel", "tflite"])
def test_compile_fp32(fmt: str, affine: ModuleAssets, cli: Cli, tmp_path: Path) -> None:
    import onnxruntime as ort

    result = cli("compile", getattr(affine, fmt), "--target", "cpu-x86-fp32", "--trust-source", "-o", tmp_path / "out")
    assert result.code == 0, result.err
    assert f"imported from {fmt} in" in result.out and "cosine min" in result.out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["source"]["format"] == fmt
    assert manifest["source"]["import_verification"]["max_abs"] <= FP32_ATOL
    artifact = tmp_path / "out" / manifest["artifact"]["file"]
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["features"]
    assert [o.name for o in session.get_outputs()] == ["probs"]
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    (actual,) = session.run(None, {"features": x})
    np.testing.assert_allclose(actual, affine.module(x)["probs"].numpy(), rtol=FP32_RTOL, atol=FP32_ATOL)


def test_input_declares_a_static_shape(affine: ModuleAssets, cli: Cli, tmp_path: Path) -> None:
    result = cli("compile", affine.savedmodel, "--target", "cpu-x86-fp32", "-o", tmp_path / "out",
                 "--input", "features:1x6", "--trust-source")
    assert result.code == 0, result.err
    (value,) = onnx.load(str(tmp_path / "out" / "model.onnx")).graph.input
    assert [d.dim_value for d in value.type.tensor_type.shape.dim] == [1, 6]


def test_int8_tflite_bench_compares_with_float_onnx_and_litert(affine: ModuleAssets, cli: Cli, tmp_path: Path) -> None:
    from edgec.target import host_target

    out = tmp_path / "int8"
    target = host_target("onnxruntime", "int8").name
    result = cli("compile", affine.tflite, "--target", target, "--calib", affine.calib, "-o", out)
    assert result.code == 0, result.err
    result = cli("bench", out, "--data", affine.calib, "--runs", 5, "--warmup", 0, "--threads", 1,
                 "--source", affine.tflite, "--json", tmp_path / "r.json")
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["baseline"]["model"]["path"] == str(out / "source.onnx")
    assert report["framework_baseline"]["model"]["runtime"] == "tflite"
    assert Path(report["framework_baseline"]["model"]["path"]).resolve() == affine.tflite.resolve()
    assert "baseline: fp32 source.onnx" in result.out and "also vs the source in its framework" in result.out
    assert report["drift"]["outputs"]["probs"]["cosine_min"] > 0.99


def test_savedmodel_without_serving_signature(cli: Cli, tmp_path: Path) -> None:
    import tensorflow as tf

    module = tf.Module()
    module.scale = tf.Variable(2.0)
    tf.saved_model.save(module, str(tmp_path / "plain"))
    _one_line_error(cli("compile", tmp_path / "plain", "--target", "cpu-x86-fp32", "--trust-source", "-o", tmp_path / "out"),
                    "has no 'serving_default' signature; save it with one")


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_corrupt_tflite(damage: str, affine: ModuleAssets, cli: Cli, tmp_path: Path) -> None:
    good = affine.tflite.read_bytes()
    junk = bytearray(np.random.default_rng(2).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    junk[4:8] = b"TFL3"
    path = tmp_path / "model.tflite"
    path.write_bytes(good[: len(good) // 2] if damage == "truncated" else bytes(junk))
    _one_line_error(cli("compile", path, "--target", "cpu-x86-fp32", "-o", tmp_path / "out"),
                    "is not a valid TFLite model")
