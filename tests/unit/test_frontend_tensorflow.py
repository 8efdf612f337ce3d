"""Tests for the TensorFlow (SavedModel, Keras) and TFLite frontends and their source runtimes.

One small Keras CNN is built per session and saved three ways (`.keras`, `model.export` SavedModel,
`TFLiteConverter` flatbuffer). Oracles are the frameworks themselves run directly here (Keras, the
SavedModel's signature, LiteRT's interpreter), never edgec's own runtimes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import pytest

pytest.importorskip("tensorflow", reason="TensorFlow frontends need edgec[tensorflow]")
pytest.importorskip("tf2onnx", reason="TensorFlow frontends need edgec[tensorflow]")
pytest.importorskip("ai_edge_litert", reason="the TFLite runtime needs edgec[tflite]")

import edgec  # noqa: E402
from edgec.errors import BadInputError, RuntimeUnavailableError  # noqa: E402
from edgec.frontends import FORMATS, ImportOptions, import_model  # noqa: E402
from edgec.backends import runtime_class  # noqa: E402
from edgec.tensors import TensorSpec  # noqa: E402
from edgec.target import host_target  # noqa: E402

#: fp32 artifact vs source framework: same float math, different kernels.
FP32_RTOL, FP32_ATOL = 1e-4, 1e-5
#: int8 drift floor for a random-weight CNN on standard-normal inputs (observed 0.986).
INT8_MIN_COSINE = 0.95
#: SavedModels run code when loaded (edgec.trust); these tests made them.
TRUSTED = ImportOptions(trust_source=True)
SOURCE_FORMATS = ("keras", "savedmodel", "tflite")


@dataclass(frozen=True)
class TfAssets:
    keras_model: Any
    paths: dict[str, Path]
    calib: Path
    test: Path
    x: np.ndarray


def _cnn(keras: Any) -> Any:
    """Conv -> BatchNorm (non-trivial statistics) -> ReLU -> MaxPool -> Dense, input pixels[N,8,8,1]."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    norm = keras.layers.BatchNormalization()
    x = keras.layers.MaxPooling2D()(keras.layers.ReLU()(norm(x)))
    model = keras.Model(inputs, keras.layers.Dense(3, name="scores")(keras.layers.Flatten()(x)))
    rng = np.random.default_rng(0)
    norm.set_weights([rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.1, 4), rng.normal(0, 0.1, 4), rng.uniform(0.5, 1.5, 4)])
    return model


def _save_three_ways(model: Any, root: Path, stem: str) -> dict[str, Path]:
    import tensorflow as tf

    paths = {"keras": root / f"{stem}.keras", "savedmodel": root / f"{stem}_savedmodel",
             "tflite": root / f"{stem}.tflite"}
    model.save(paths["keras"])
    model.export(paths["savedmodel"], verbose=False)
    paths["tflite"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return paths


@pytest.fixture(scope="session")
def tf_assets(tmp_path_factory: pytest.TempPathFactory) -> TfAssets:
    import keras

    root = tmp_path_factory.mktemp("tf")
    model = _cnn(keras)
    rng = np.random.default_rng(1)
    calib, test = root / "calib.npz", root / "test.npz"
    np.savez(calib, pixels=rng.standard_normal((16, 8, 8, 1)).astype(np.float32))
    x = rng.standard_normal((6, 8, 8, 1)).astype(np.float32)
    np.savez(test, pixels=x)
    return TfAssets(model, _save_three_ways(model, root, "cnn"), calib, test, x)


def _litert(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a .tflite through LiteRT's own signature runner (resizes inputs to the feeds' shapes)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return dict(interpreter.get_signature_runner()(**feeds))


def _savedmodel(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return {k: v.numpy() for k, v in loaded.signatures["serving_default"](**feeds).items()}


def _source_outputs(fmt: str, assets: TfAssets, x: np.ndarray) -> dict[str, np.ndarray]:
    """The source framework's own outputs for `pixels=x`, keyed as the source names them."""
    if fmt == "keras":
        return {"scores": np.asarray(assets.keras_model(x, training=False))}
    runners: dict[str, Callable[[Path, dict[str, np.ndarray]], dict[str, np.ndarray]]] = {
        "savedmodel": _savedmodel, "tflite": _litert}
    return runners[fmt](assets.paths[fmt], {"pixels": x})


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


@pytest.mark.parametrize("fmt", SOURCE_FORMATS)
def test_fp32_artifact_matches_source_framework(fmt: str, tf_assets: TfAssets, tmp_path: Path) -> None:
    result = edgec.compile(tf_assets.paths[fmt], "cpu-x86-fp32", output_dir=tmp_path / "out", trust_source=True)
    proto = onnx.load(str(result.model_path))
    onnx.checker.check_model(proto, full_check=True)
    (graph_input,) = proto.graph.input
    assert graph_input.name == "pixels"
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "batch"  # the batch stays dynamic
    expected = _source_outputs(fmt, tf_assets, tf_assets.x)
    actual = _ort(result.model_path, {"pixels": tf_assets.x})  # batch 6 through the dynamic dim
    assert list(actual) == list(expected)  # same names as the source framework
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=FP32_RTOL, atol=FP32_ATOL)
    source = result.manifest["source"]
    assert source["format"] == fmt
    check = source["import_verification"]
    assert check["samples"] > 0 and check["max_abs"] <= FP32_ATOL and check["cosine_min"] > 0.99999


@pytest.mark.parametrize("fmt", SOURCE_FORMATS)
def test_int8_drift_is_benched_against_the_source_runtime(fmt: str, tf_assets: TfAssets, tmp_path: Path) -> None:
    target = host_target("onnxruntime", "int8").name
    result = edgec.compile(tf_assets.paths[fmt], target, calib=tf_assets.calib, output_dir=tmp_path / "out",
                           trust_source=True)
    assert result.manifest["quantization"]["quantized_nodes"]
    report = edgec.bench(result.output_dir, data=tf_assets.test, runs=5, warmup=0, threads=1, trust_source=True,
                         source=tf_assets.paths[fmt])
    assert report["baseline_model"] == str(result.output_dir / "source.onnx")
    assert Path(report["framework_baseline"]["model"]["path"]).resolve() == tf_assets.paths[fmt].resolve()
    (drift,) = report["drift"]["outputs"].values()
    assert drift["cosine_min"] > INT8_MIN_COSINE
    assert report["baseline"]["latency_ms"]["runs"] == 5


def test_runtimes_name_tensors_like_the_onnx(tf_assets: TfAssets) -> None:
    for fmt, path in tf_assets.paths.items():
        graph = import_model(path, options=TRUSTED).model.graph
        runtime = runtime_class(FORMATS[fmt].runtime)(path, threads=1, options={"trust_source": True})
        assert [s.name for s in runtime.inputs] == [v.name for v in graph.inputs], fmt
        assert [s.name for s in runtime.outputs] == [v.name for v in graph.outputs], fmt
        assert runtime.inputs[0].shape == (None, 8, 8, 1) and runtime.inputs[0].dtype == np.float32


def test_multi_input_output_names_and_order(tmp_path: Path) -> None:
    """Inputs declared zeta, alpha; the SavedModel and TFLite signatures list keys sorted, TFLite's graph
    stores its outputs reversed: every format must still pair each ONNX tensor with the right source one."""
    import keras

    zeta, alpha = keras.Input((4,), name="zeta"), keras.Input((3,), name="alpha")
    both = keras.layers.Concatenate()([zeta, alpha])
    model = keras.Model([zeta, alpha], [keras.layers.Dense(2, name="small")(both),
                                        keras.layers.Dense(5, name="large")(both)])
    paths = _save_three_ways(model, tmp_path, "two")
    rng = np.random.default_rng(2)
    feeds = {"zeta": rng.standard_normal((2, 4)).astype(np.float32),
             "alpha": rng.standard_normal((2, 3)).astype(np.float32)}
    small, large = (np.asarray(t) for t in model([feeds["zeta"], feeds["alpha"]]))
    expected_names = {"keras": (["zeta", "alpha"], ["small", "large"]),
                      "savedmodel": (["alpha", "zeta"], ["output_0", "output_1"]),
                      "tflite": (["alpha", "zeta"], ["output_0", "output_1"])}
    for fmt, path in paths.items():
        proto = ir.serde.serialize_model(import_model(path, options=TRUSTED).model)
        assert ([v.name for v in proto.graph.input], [v.name for v in proto.graph.output]) == expected_names[fmt], fmt
        onnx_path = tmp_path / f"{fmt}.onnx"
        onnx.save_model(proto, onnx_path)
        outputs = list(_ort(onnx_path, feeds).values())
        np.testing.assert_allclose(outputs[0], small, rtol=FP32_RTOL, atol=FP32_ATOL)
        np.testing.assert_allclose(outputs[1], large, rtol=FP32_RTOL, atol=FP32_ATOL)


def test_input_option_overrides_shape_by_name(tf_assets: TfAssets) -> None:
    static = ImportOptions(inputs=(TensorSpec("pixels:0", (2, 8, 8, 1), np.dtype(np.float32)),), trust_source=True)
    graph = import_model(tf_assets.paths["savedmodel"], options=static).model.graph
    assert list(graph.inputs[0].shape) == [2, 8, 8, 1]
    wrong = ImportOptions(inputs=(TensorSpec("image", (2, 8, 8, 1), np.dtype(np.float32)),))
    with pytest.raises(BadInputError, match=r"--input names \['image'\], but the inputs of .* are \['pixels'\]"):
        import_model(tf_assets.paths["keras"], options=wrong)
    rank = ImportOptions(inputs=(TensorSpec("pixels", (2, 64), np.dtype(np.float32)),))
    with pytest.raises(BadInputError, match="rank 2 but the model's input has rank 4"):
        import_model(tf_assets.paths["keras"], options=rank)
    with pytest.raises(BadInputError, match="--fix-shape"):
        import_model(tf_assets.paths["tflite"], options=static)


def test_forced_format_must_fit_the_path(tf_assets: TfAssets) -> None:
    with pytest.raises(BadInputError, match="a SavedModel is a directory"):
        import_model(tf_assets.paths["keras"], fmt="savedmodel", options=TRUSTED)
    with pytest.raises(BadInputError, match="a SavedModel is a directory"):
        import_model(tf_assets.paths["savedmodel"], fmt="keras")


def test_savedmodel_without_serving_signature(tmp_path: Path) -> None:
    import tensorflow as tf

    module = tf.Module()
    module.scale = tf.Variable(2.0)
    tf.saved_model.save(module, str(tmp_path / "plain"))
    expected = r"has no 'serving_default' signature; save it with one: tf\.saved_model\.save"
    with pytest.raises(BadInputError, match=expected) as info:
        import_model(tmp_path / "plain", options=TRUSTED)
    assert "\n" not in str(info.value)


def test_ops_tf2onnx_cannot_convert_are_named(tmp_path: Path) -> None:
    import tensorflow as tf

    module = tf.Module()
    module.f = tf.function(tf.math.lgamma, input_signature=[tf.TensorSpec((None, 4), tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "lgamma"), signatures=module.f.get_concrete_function())
    expected = r"tf2onnx cannot convert these ops of the TensorFlow SavedModel directory: Lgamma \(x1\);"
    with pytest.raises(BadInputError, match=expected):
        import_model(tmp_path / "lgamma", options=TRUSTED)


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_corrupt_tflite(damage: str, tf_assets: TfAssets, tmp_path: Path) -> None:
    good = tf_assets.paths["tflite"].read_bytes()
    junk = bytearray(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    junk[4:8] = b"TFL3"  # the flatbuffer identifier: detection says tflite, the content is not
    path = tmp_path / "bad.tflite"
    path.write_bytes({"truncated": good[: len(good) // 2], "random": bytes(junk), "empty": b""}[damage])
    with pytest.raises(BadInputError, match=r"is not a valid TFLite model .*; re-export it") as info:
        import_model(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("fmt", "extra"),
                         [("keras", "tensorflow"), ("savedmodel", "tensorflow"), ("tflite", "tflite")])
def test_missing_extra_names_the_pip_command(fmt: str, extra: str, tf_assets: TfAssets,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    for module in ("edgec.frontends.tensorflow_frontend", "edgec.frontends.tflite_frontend"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(BadInputError, match=rf"needs tf2onnx: pip install 'edgec\[{extra}\]'"):
        import_model(tf_assets.paths[fmt], options=TRUSTED)


def test_missing_litert_makes_the_tflite_runtime_unavailable(tf_assets: TfAssets,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    tflite = runtime_class("tflite")
    assert not tflite.is_available()
    with pytest.raises(RuntimeUnavailableError, match=r"pip install 'edgec\[tflite\]'"):
        tflite(tf_assets.paths["tflite"])


def test_tflite_runtime_resizes_between_batches(tf_assets: TfAssets) -> None:
    runtime = runtime_class("tflite")(tf_assets.paths["tflite"], threads=1)
    for x in (tf_assets.x, tf_assets.x[:1], tf_assets.x[2:5]):
        expected = _litert(tf_assets.paths["tflite"], {"pixels": x})["output_0"]
        np.testing.assert_array_equal(runtime.infer({"pixels": x})["output_0"], expected)


def test_int8_tflite_keeps_int8_io(tf_assets: TfAssets, tmp_path: Path) -> None:
    """A fully-int8 flatbuffer is imported as is: int8 inputs/outputs on both sides, no dequantization."""
    import tensorflow as tf

    def representative() -> Any:
        for sample in np.load(tf_assets.calib)["pixels"]:
            yield [sample[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(tf_assets.keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path = tmp_path / "int8.tflite"
    path.write_bytes(converter.convert())
    graph = import_model(path).model.graph
    runtime = runtime_class("tflite")(path, threads=1)
    assert [np.dtype(v.dtype.numpy()) for v in (*graph.inputs, *graph.outputs)] == [np.dtype(np.int8)] * 2
    assert [s.dtype for s in (*runtime.inputs, *runtime.outputs)] == [np.dtype(np.int8)] * 2
    x = np.random.default_rng(4).integers(-128, 128, (3, 8, 8, 1)).astype(np.int8)
    np.testing.assert_array_equal(runtime.infer({"pixels": x})["output_0"], _litert(path, {"pixels": x})["output_0"])


def _keras_model_of_each_kind(kind: str) -> Any:
    """The same Dense(8 -> 5, relu) -> Dense(3) network as a Sequential, functional or subclassed model."""
    import keras

    keras.utils.set_random_seed(0)
    if kind == "sequential":
        return keras.Sequential([keras.Input((8,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)])
    if kind == "functional":
        inputs = keras.Input((8,))
        return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(5, activation="relu")(inputs)))
    model = _TwoDense()
    model(np.zeros((1, 8), np.float32))  # builds it, which records the input shape in the .keras file
    return model


def _two_dense_class() -> Any:
    """A subclassed Keras model, registered so that Keras' safe loading can rebuild it."""
    import keras

    @keras.saving.register_keras_serializable(package="edgec_tests")
    class TwoDense(keras.Model):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(5, activation="relu")
            self.head = keras.layers.Dense(3)

        def call(self, features: Any) -> Any:
            return self.head(self.hidden(features))

    return TwoDense


_TwoDense = _two_dense_class()


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_every_kind_of_keras_model_compiles_and_matches_keras(kind: str, tmp_path: Path) -> None:
    model = _keras_model_of_each_kind(kind)
    model.save(tmp_path / "model.keras")
    result = edgec.compile(tmp_path / "model.keras", "cpu-x86-fp32", output_dir=tmp_path / "out")
    proto = onnx.load(str(result.model_path))
    (graph_input,) = proto.graph.input
    if kind == "subclassed":
        assert graph_input.name == "features"  # the argument of its `call`
    x = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    (actual,) = _ort(result.model_path, {graph_input.name: x}).values()
    np.testing.assert_allclose(actual, np.asarray(model(x, training=False)), rtol=FP32_RTOL, atol=FP32_ATOL)
    assert result.manifest["source"]["import_verification"]["cosine_min"] > 0.99999


def test_tensorflow_start_up_lines_stay_off_the_terminal(tf_assets: TfAssets, tmp_path: Path) -> None:
    """oneDNN/absl lines go to file descriptor 2 from C++; a fresh process shows whether any leak."""
    script = ("import sys, edgec; edgec.compile(sys.argv[1], 'cpu-x86-fp32', output_dir=sys.argv[2])")
    for fmt in ("keras", "tflite"):
        result = subprocess.run([sys.executable, "-c", script, str(tf_assets.paths[fmt]), str(tmp_path / fmt)],
                                capture_output=True, text=True, timeout=300,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"})
        assert result.returncode == 0, result.stderr
        assert "oneDNN" not in result.stderr and "absl" not in result.stderr and "XNNPACK" not in result.stderr, result.stderr


@pytest.mark.parametrize("fmt", SOURCE_FORMATS)
def test_inspect_shows_the_names_compile_will_use(fmt: str, tf_assets: TfAssets) -> None:
    from edgec.model_info import format_info, inspect_model

    info = inspect_model(tf_assets.paths[fmt], trust_source=True)  # the SavedModel runs code when loaded
    assert info["format"] == fmt
    (pixels,) = info["inputs"]
    assert pixels == {"name": "pixels", "dtype": "float32", "shape": ["batch", 8, 8, 1], "dynamic": ["batch"]}
    # a SavedModel's and a flatbuffer's signature name the output output_0; Keras keeps the layer's name
    assert [output["name"] for output in info["outputs"]] == ["scores" if fmt == "keras" else "output_0"]
    assert info["parameters"] > 0 and "Conv" in info["ops"]
    assert "keyed by input name: pixels" in format_info(info)
