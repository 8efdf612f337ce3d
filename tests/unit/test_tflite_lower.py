"""The TFLite lowering in float: edgec's IR -> `.tflite` runs in LiteRT and computes what ONNX Runtime computes.

The `light` zoo models bundled with onnx hold every weight as ConstantOfShape(0.02); with such
weights every class gets the same score and almost any wrong lowering would pass. Each weight is
replaced by seeded random values (He-scaled, positive variances) first, so the logits differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.backends.tflite.lower import lower
from edgec.errors import BadInputError
from tflite_lowering import (encoder_block, lower_fp32, mobilenet_v3_block, onnx_model, optimized, random_init,
                             run_onnx, run_tflite, tflite_ops)

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
#: The large fully connected nets (0.25-0.55 GB of weights each) take most of this file's time.
_LARGE = {"bvlc_alexnet", "vgg19", "zfnet512"}


def _random_weights(proto: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Every ConstantOfShape weight replaced by a random initializer of its shape."""
    rng = np.random.default_rng(seed)
    shapes = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    readers = {name: (node.op_type, i) for node in proto.graph.node for i, name in enumerate(node.input)}
    kept, weights = [], []
    for node in proto.graph.node:
        if node.op_type != "ConstantOfShape":
            kept.append(node)
            continue
        shape = tuple(int(d) for d in shapes[node.input[0]])
        op_type, slot = readers.get(node.output[0], ("", 0))
        if op_type == "BatchNormalization" and slot == 4:  # running variance
            array = rng.uniform(0.5, 1.5, shape)
        elif op_type == "BatchNormalization" and slot == 1:  # scale
            array = 1.0 + 0.1 * rng.standard_normal(shape)
        elif len(shape) >= 2:
            array = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        else:
            array = 0.1 * rng.standard_normal(shape)
        weights.append(numpy_helper.from_array(array.astype(np.float32), node.output[0]))
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    proto.graph.initializer.extend(weights)
    # IR version 3 lists every initializer among the graph inputs too
    proto.graph.input.extend(helper.make_tensor_value_info(w.name, TensorProto.FLOAT, list(w.dims)) for w in weights)
    return proto


def _light(name: str) -> onnx.ModelProto:
    return _random_weights(onnx.load(LIGHT / f"light_{name}.onnx"))


def _light_cases() -> list[object]:
    names = sorted(path.stem.removeprefix("light_") for path in LIGHT.glob("light_*.onnx"))
    return [pytest.param(name, marks=[pytest.mark.slow] if name in _LARGE else []) for name in names]


def _input(proto: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    initializers = {init.name for init in proto.graph.initializer}
    feeds = {}
    for value in proto.graph.input:
        if value.name not in initializers:
            shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
            feeds[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


@pytest.mark.parametrize("name", _light_cases())
def test_light_zoo_fp32_matches_onnx_runtime(name: str, tmp_path: Path) -> None:
    proto = _light(name)
    flatbuffer = lower_fp32(proto)
    ops = tflite_ops(flatbuffer)
    # NHWC between the edges: a transpose at the input and at a 4-D output (ShuffleNet's channel shuffle adds its own)
    assert ops["CONV_2D"] > 0 and (ops["TRANSPOSE"] <= 2 or name == "shufflenet"), ops
    for seed in range(2):
        feeds = _input(proto, np.random.default_rng(seed))
        expected = run_onnx(proto, feeds)
        got = run_tflite(flatbuffer, tmp_path, feeds, name)
        assert list(got) == list(expected)  # the signature gives the ONNX output names
        for key, want in expected.items():
            # softmax outputs: relative to the largest probability, 1e-4
            np.testing.assert_allclose(got[key].reshape(want.shape), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_light_zoo_outputs_are_not_degenerate() -> None:
    """The randomized weights make the zoo test meaningful: classes get different scores."""
    proto = _light("squeezenet")
    out = next(iter(run_onnx(proto, _input(proto, np.random.default_rng(0))).values()))
    assert np.ptp(out) > 10 * np.abs(out).mean() * 1e-3 and np.unique(out.round(6)).size > 100


def test_encoder_block_fp32_matches_onnx_runtime(tmp_path: Path) -> None:
    proto = encoder_block()
    flatbuffer = lower_fp32(proto)
    ops = tflite_ops(flatbuffer)
    assert {"GATHER", "FULLY_CONNECTED", "BATCH_MATMUL", "SOFTMAX", "SELECT_V2", "GELU"} <= set(ops), ops
    feeds = {"ids": np.array([[3, 17, 42, 8, 0, 0]], np.int64), "mask": np.array([[0, 0, 0, 0, 1, 1]], np.int64)}
    got = run_tflite(flatbuffer, tmp_path, feeds)
    np.testing.assert_allclose(got["pooled"], run_onnx(proto, feeds)["pooled"], rtol=1e-4, atol=1e-5)


def _conv_model(pads: list[int], strides: list[int], group: int = 1, pool: str | None = None,
                ceil_mode: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=pads, strides=strides, group=group)]
    out = "c"
    if pool is not None:
        nodes.append(helper.make_node(pool, ["c"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                      ceil_mode=ceil_mode))
        out = "p"
    nodes.append(helper.make_node("Relu", [out], ["y"]))
    proto = onnx_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 15, 16])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12, None, None])],
                   [random_init(rng, "w", 12, 6 // group, 3, 3), random_init(rng, "b", 12)])
    return proto


@pytest.mark.parametrize(("pads", "strides", "group", "pool", "ceil_mode"), [
    ([1, 1, 1, 1], [1, 1], 1, None, 0),       # SAME
    ([0, 0, 0, 0], [2, 2], 1, None, 0),       # VALID
    ([1, 1, 1, 1], [2, 2], 1, None, 0),       # PyTorch's stride-2 padding: not SAME, an explicit PAD
    ([2, 0, 1, 1], [1, 1], 1, None, 0),       # asymmetric
    ([1, 1, 1, 1], [1, 1], 3, None, 0),       # grouped
    ([1, 1, 1, 1], [1, 1], 6, None, 0),       # depthwise, multiplier 2
    ([1, 1, 1, 1], [1, 1], 1, "MaxPool", 1),  # ceil mode
    ([1, 1, 1, 1], [1, 1], 1, "AveragePool", 0),  # padding excluded from the mean
    ([1, 1, 1, 1], [1, 1], 1, "AveragePool", 1),
])
def test_convolution_and_pooling_padding(pads, strides, group, pool, ceil_mode, tmp_path: Path) -> None:
    proto = _conv_model(pads, strides, group, pool, ceil_mode)
    flatbuffer = lower_fp32(proto)
    ops = tflite_ops(flatbuffer)
    assert "RELU" not in ops  # fused into the convolution (or the pool's producer)
    if group == 6:
        assert ops["DEPTHWISE_CONV_2D"] == 1
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 6, 15, 16)).astype(np.float32)}
    got, want = run_tflite(flatbuffer, tmp_path, feeds)["y"], run_onnx(proto, feeds)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fp16_halves_the_file_and_stays_close(tmp_path: Path) -> None:
    proto = _light("squeezenet")
    model = optimized(proto)
    fp32 = lower(model, table=None, precision="fp32")
    fp16 = lower(model, table=None, precision="fp16")
    assert 0.45 < len(fp16) / len(fp32) < 0.55
    assert tflite_ops(fp16)["DEQUANTIZE"] > 0
    feeds = _input(proto, np.random.default_rng(0))
    got = next(iter(run_tflite(fp16, tmp_path, feeds).values()))
    want = next(iter(run_onnx(proto, feeds).values()))
    cosine = float(got.ravel() @ want.ravel() / np.linalg.norm(got) / np.linalg.norm(want))
    assert cosine > 0.999


def test_unsupported_op_names_op_node_and_supported_ops() -> None:
    proto = onnx_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Det", ["r"], ["y"], name="the_det")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [])
    with pytest.raises(BadInputError, match=r"no converter for Det \(node 'the_det'\).*supported ops: .*Conv"):
        lower_fp32(proto)


def test_unknown_precision_is_a_target_error() -> None:
    from edgec.errors import TargetError

    proto = _conv_model([1, 1, 1, 1], [1, 1])
    with pytest.raises(TargetError, match="fp32, fp16, int8"):
        lower(optimized(proto), table=None, precision="int4")


def test_mobilenet_v3_block_fp32(tmp_path: Path) -> None:
    proto = mobilenet_v3_block()
    flatbuffer = lower_fp32(proto)
    ops = tflite_ops(flatbuffer)
    assert {"HARD_SWISH", "RELU_0_TO_1", "LOGISTIC", "DEPTHWISE_CONV_2D", "MEAN"} <= set(ops), ops
    assert ops["TRANSPOSE"] == 1  # at the input only: SE, residual and the final mean stay NHWC
    feeds = {"x": np.random.default_rng(2).standard_normal((1, 3, 24, 24)).astype(np.float32)}
    np.testing.assert_allclose(run_tflite(flatbuffer, tmp_path, feeds)["y"], run_onnx(proto, feeds)["y"],
                               rtol=1e-4, atol=1e-5)


def test_erf_alone_lowers_within_float_precision(tmp_path: Path) -> None:
    """An Erf that is not part of a GELU (TFLite has no Erf op) is computed from elementwise ops."""
    proto = onnx_model([helper.make_node("Erf", ["x"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 801])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 801])], [])
    x = np.linspace(-4, 4, 801, dtype=np.float32).reshape(1, -1)
    got = run_tflite(lower_fp32(proto), tmp_path, {"x": x})["y"]
    np.testing.assert_allclose(got, run_onnx(proto, {"x": x})["y"], atol=3e-7)
