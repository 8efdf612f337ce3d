"""Tests for edgec.quant.qdq and edgec.quant.calibrator: plan -> calibrate -> apply on tiny float models.

Structure is checked by op counts and producers; weights and biases are dequantized with NumPy and
compared with the float initializers; end-to-end numerics compare the Q/DQ model with the float model,
both run by `onnx.reference.ReferenceEvaluator` (the ONNX spec's own Q/DQ semantics), cross-checked
against ONNX Runtime with graph optimizations disabled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgec.errors import TargetError
from edgec.passes.cleanup import InferShapesPass, RemoveUnusedPass
from edgec.passes.fusion import FuseActivationsPass, MarkAttentionPass, fusion_groups
from edgec.quant import qdq
from edgec.quant.calibrator import calibrate
from edgec.quant.table import CalibrationTable
from edgec.target import DEFAULT_QUANT_OPS, QuantScheme, TensorQuant

#: Cosine between int8 and fp32 outputs, per sample, on He-initialized nets with calibration-like inputs.
#: 8-bit steps of ~1/255 of each range give ~0.9995 here; 0.99 leaves margin without hiding a broken scale.
INT8_MIN_COSINE = 0.99
#: Max |int8 - fp32| relative to the largest |fp32| output, on the CALIBRATION samples only (fresh samples
#: may fall outside the calibrated ranges and are clipped, as static quantization intends); ~0.01-0.04 here.
INT8_MAX_REL_ERR = 0.06
#: Two Q/DQ oracles (ReferenceEvaluator, ORT without graph optimizations) on the same int8 model may
#: differ only where float accumulation order flips a rounding by one step.
ORACLE_MIN_COSINE = 0.9999
#: float32 relative slack when comparing scales computed in float32 by two routes.
SCALE_RTOL = 1e-6

OPSET = 21  # the ReferenceEvaluator implements (De)QuantizeLinear from opset 19 on

U8_ASYM = TensorQuant("uint8", symmetric=False, granularity="per_tensor")
S8_SYM_ACT = TensorQuant("int8", symmetric=True, granularity="per_tensor")
S8_PER_CHANNEL = TensorQuant("int8", symmetric=True, granularity="per_channel")
S8_PER_TENSOR = TensorQuant("int8", symmetric=True, granularity="per_tensor")
U8S8 = QuantScheme(weights=S8_PER_CHANNEL, activations=U8_ASYM)
S8S8 = QuantScheme(weights=S8_PER_CHANNEL, activations=S8_SYM_ACT)
#: 7-bit weights, exact in ONNX Runtime's fused kernels on every x86 host (see cpu-x86-avx2-int8)
U8S8_REDUCED = QuantScheme(weights=TensorQuant("int8", symmetric=True, granularity="per_channel", reduce_range=True),
                           activations=U8_ASYM)


# --------------------------------------------------------------------------------------------
# model builders (float32, He fan-in init so activations stay ~1)
# --------------------------------------------------------------------------------------------


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           initializers: dict[str, np.ndarray], name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _f32(name: str, shape: Sequence[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def cnn_model() -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> Relu -> MaxPool -> Flatten -> Gemm(transB=1)."""
    rng = np.random.default_rng(10)
    inits = {
        "W1": _he(rng, (4, 3, 3, 3), 27), "B1": (rng.standard_normal(4) * 0.1).astype(np.float32),
        "W2": _he(rng, (8, 4, 3, 3), 36), "B2": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "W3": _he(rng, (10, 128), 128), "B3": (rng.standard_normal(10) * 0.1).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "W3", "B3"], ["logits"], name="fc", transB=1),
    ]
    return _model(nodes, [_f32("x", (1, 3, 8, 8))], [_f32("logits", (1, 10))], inits, "cnn")


def matmul_residual_model() -> onnx.ModelProto:
    """y = MatMul(x, W) + x: a weight initializer and a residual Add."""
    rng = np.random.default_rng(11)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]), helper.make_node("Add", ["mm", "x"], ["y"])]
    return _model(nodes, [_f32("x", (2, 16))], [_f32("y", (2, 16))], {"W": _he(rng, (16, 16), 16)}, "matmul_residual")


def concat_model() -> onnx.ModelProto:
    """Concat of two activations and a constant along channels."""
    rng = np.random.default_rng(12)
    const = rng.uniform(-0.5, 2.0, (1, 2, 4, 4)).astype(np.float32)
    nodes = [helper.make_node("Concat", ["a", "b", "c"], ["out"], axis=1)]
    return _model(nodes, [_f32("a", (1, 3, 4, 4)), _f32("b", (1, 1, 4, 4))], [_f32("out", (1, 6, 4, 4))],
                  {"c": const}, "concat")


def gap_gemm_model() -> onnx.ModelProto:
    """Conv -> GlobalAveragePool -> Flatten -> Gemm(transB=0, weight [K, N]) + Add of a constant."""
    rng = np.random.default_rng(14)
    inits = {"W": _he(rng, (6, 3, 3, 3), 27), "B": (rng.standard_normal(6) * 0.1).astype(np.float32),
             "G": _he(rng, (6, 5), 6), "GB": (rng.standard_normal(5) * 0.1).astype(np.float32),
             "shift": rng.uniform(-1.0, 1.0, (1, 5)).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["f"]),
        helper.make_node("Gemm", ["f", "G", "GB"], ["g"]),
        helper.make_node("Add", ["g", "shift"], ["y"]),
    ]
    return _model(nodes, [_f32("x", (1, 3, 6, 6))], [_f32("y", (1, 5))], inits, "gap_gemm")


def single_layer_model(op: str) -> onnx.ModelProto:
    """x -> one Conv, Gemm(transB=1) or MatMul with a weight initializer -> y, the graph output."""
    rng = np.random.default_rng(18)
    if op == "Conv":
        node = helper.make_node("Conv", ["x", "W", "B"], ["y"], pads=[1, 1, 1, 1])
        inits = {"W": _he(rng, (4, 3, 3, 3), 27), "B": (rng.standard_normal(4) * 0.1).astype(np.float32)}
        return _model([node], [_f32("x", (1, 3, 6, 6))], [_f32("y", (1, 4, 6, 6))], inits, "conv")
    if op == "Gemm":
        node = helper.make_node("Gemm", ["x", "W", "B"], ["y"], transB=1)
        inits = {"W": _he(rng, (8, 16), 16), "B": (rng.standard_normal(8) * 0.1).astype(np.float32)}
    else:
        node = helper.make_node("MatMul", ["x", "W"], ["y"])
        inits = {"W": _he(rng, (16, 8), 16)}
    return _model([node], [_f32("x", (2, 16))], [_f32("y", (2, 8))], inits, op.lower())


def conv_clip_model(lo: float = 0.0, hi: float = 6.0) -> onnx.ModelProto:
    """Conv -> Clip(lo, hi) (Relu6 when lo=0, hi=6) as the graph output; weights scaled so outputs exceed 6."""
    rng = np.random.default_rng(13)
    inits = {"W": _he(rng, (4, 3, 3, 3), 27) * 4.0, "B": np.array([0.5, -0.5, 1.0, 0.0], np.float32),
             "lo": np.array(lo, np.float32), "hi": np.array(hi, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
    return _model(nodes, [_f32("x", (1, 3, 6, 6))], [_f32("y", (1, 4, 6, 6))], inits, "conv_clip")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _samples(model: onnx.ModelProto, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for value in model.graph.input:
            shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
            feed[value.name] = rng.standard_normal(shape).astype(np.float32)
        feeds.append(feed)
    return feeds


def _quantize(model: onnx.ModelProto, scheme: QuantScheme, samples: list[dict[str, np.ndarray]],
              keep_float: Collection[str] = (),
              ) -> tuple[onnx.ModelProto, qdq.QuantPlan, CalibrationTable, dict[str, object]]:
    """What the compiler does after its passes: shapes inferred, plan, calibrate, apply."""
    graph = ir.serde.deserialize_model(model)
    InferShapesPass()(graph)  # plan needs element types of intermediate values
    plan = qdq.plan(graph, scheme.ops, asymmetric_activations=not scheme.activations.symmetric, keep_float=keep_float)
    table = calibrate(graph, plan.calibration_tensors, samples, calibrator=scheme.calibrator,
                      percentile=scheme.percentile)
    stats = qdq.apply(graph, plan, table, scheme)
    proto = ir.serde.serialize_model(graph)
    onnx.checker.check_model(proto, full_check=True)
    return proto, plan, table, stats


def _ops(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node)


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _axis(node: onnx.NodeProto) -> int | None:
    for attr in node.attribute:
        if attr.name == "axis":
            return attr.i
    return None


def _dq_params(model: onnx.ModelProto, dq: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None]:
    """(quantized initializer, scale, zero point, axis) of a DequantizeLinear reading initializers."""
    inits = _inits(model)
    assert dq.op_type == "DequantizeLinear"
    return inits[dq.input[0]], inits[dq.input[1]], inits[dq.input[2]], _axis(dq)


def _np_dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None) -> np.ndarray:
    """ONNX DequantizeLinear written out in NumPy: (q - zero_point) * scale, per axis when set."""
    if axis is None:
        assert scale.ndim == 0 and zero_point.ndim == 0
        return (q.astype(np.float64) - zero_point.astype(np.float64)) * scale.astype(np.float64)
    shape = [1] * q.ndim
    shape[axis] = -1
    zero_point, scale = zero_point.reshape(shape), scale.reshape(shape)
    return (q.astype(np.float64) - zero_point.astype(np.float64)) * scale.astype(np.float64)


def _input_dq(model: onnx.ModelProto, node: onnx.NodeProto, index: int) -> onnx.NodeProto:
    producer = _producers(model).get(node.input[index])
    assert producer is not None and producer.op_type == "DequantizeLinear", (node.name, index, node.input[index])
    return producer


def _activation_scale(model: onnx.ModelProto, dq: onnx.NodeProto) -> float:
    inits = _inits(model)
    return float(inits[dq.input[1]])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _assert_close_to_float(float_model: onnx.ModelProto, int8_model: onnx.ModelProto,
                           fresh: list[dict[str, np.ndarray]],
                           calibration: list[dict[str, np.ndarray]] | None = None) -> None:
    """Cosine on fresh calibration-like samples; max error also on samples the ranges came from."""
    ref_float, ref_int8 = ReferenceEvaluator(float_model), ReferenceEvaluator(int8_model)
    for feed in fresh + (calibration or []):
        for want, got in zip(ref_float.run(None, feed), ref_int8.run(None, feed)):
            assert got.shape == want.shape and got.dtype == np.float32
            assert _cosine(got, want) > INT8_MIN_COSINE
    for feed in calibration or []:
        for want, got in zip(ref_float.run(None, feed), ref_int8.run(None, feed)):
            assert np.abs(got - want).max() <= INT8_MAX_REL_ERR * np.abs(want).max()


def _assert_weights_within_half_step(float_model: onnx.ModelProto, int8_model: onnx.ModelProto,
                                     node: onnx.NodeProto, weight_name: str, expected_axis: int | None) -> None:
    q, scale, zero_point, axis = _dq_params(int8_model, _input_dq(int8_model, node, 1))
    assert axis == expected_axis
    assert q.dtype == np.int8
    w = _inits(float_model)[weight_name].astype(np.float64)
    assert q.shape == w.shape
    deq = _np_dequantize(q, scale, zero_point, axis)
    if axis is None:
        bound = float(scale) / 2
    else:
        shape = [1] * w.ndim
        shape[axis] = -1
        bound = scale.reshape(shape).astype(np.float64) / 2
        assert scale.shape == (w.shape[axis],)
    assert (np.abs(deq - w) <= bound * (1 + SCALE_RTOL)).all()


def _assert_int32_bias(float_model: onnx.ModelProto, int8_model: onnx.ModelProto, node: onnx.NodeProto,
                       bias_name: str) -> None:
    q_bias, b_scale, b_zp, b_axis = _dq_params(int8_model, _input_dq(int8_model, node, 2))
    assert q_bias.dtype == np.int32 and b_zp.dtype == np.int32 and (b_zp == 0).all()
    input_scale = _activation_scale(int8_model, _input_dq(int8_model, node, 0))
    _, w_scale, _, _ = _dq_params(int8_model, _input_dq(int8_model, node, 1))
    expected = input_scale * np.broadcast_to(w_scale.astype(np.float64), q_bias.shape)
    np.testing.assert_allclose(np.broadcast_to(b_scale, q_bias.shape), expected, rtol=SCALE_RTOL)
    bias = _inits(float_model)[bias_name].astype(np.float64)
    deq = _np_dequantize(q_bias, b_scale, b_zp, b_axis)
    assert (np.abs(deq - bias) <= np.broadcast_to(b_scale, bias.shape) / 2 * (1 + SCALE_RTOL)).all()


# --------------------------------------------------------------------------------------------
# CNN: Conv -> Relu -> Conv -> Relu -> MaxPool -> Flatten -> Gemm
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn() -> onnx.ModelProto:
    return cnn_model()


@pytest.fixture(scope="module")
def cnn_u8s8(cnn: onnx.ModelProto) -> tuple[onnx.ModelProto, qdq.QuantPlan, CalibrationTable, dict[str, object]]:
    return _quantize(cnn, U8S8, _samples(cnn, 32, seed=0))


@pytest.fixture(scope="module")
def cnn_s8s8(cnn: onnx.ModelProto) -> tuple[onnx.ModelProto, qdq.QuantPlan, CalibrationTable, dict[str, object]]:
    return _quantize(cnn, S8S8, _samples(cnn, 32, seed=0))


def test_cnn_plan_asymmetric(cnn: onnx.ModelProto) -> None:
    plan = qdq.plan(_shaped(cnn), DEFAULT_QUANT_OPS, asymmetric_activations=True)
    assert [n.op_type for n in plan.quantized_nodes] == ["Conv", "Conv", "Gemm"]
    assert [n.op_type for n in plan.folded] == ["Relu", "Relu"]
    # conv outputs use their folded ReLU's range; MaxPool/Flatten share c2's parameters
    # logits: a Gemm's graph output stays float (QGemm writes float directly)
    assert plan.calibration_tensors == ["x", "r1", "r2"]
    assert sorted(v.name for v in plan.activations) == sorted(["x", "c1", "c2", "p", "f"])
    assert {k.name: v.name for k, v in plan.shares.items()} == {"p": "c2", "f": "c2"}


def test_cnn_plan_symmetric(cnn: onnx.ModelProto) -> None:
    plan = qdq.plan(_shaped(cnn), DEFAULT_QUANT_OPS, asymmetric_activations=False)
    assert plan.folded == [] and plan.shares == {}
    assert plan.calibration_tensors == ["x", "c1", "r1", "c2", "f"]


def test_plan_does_not_change_the_graph(cnn: onnx.ModelProto) -> None:
    graph = _shaped(cnn)
    before = onnx.printer.to_text(ir.serde.serialize_model(graph))
    qdq.plan(graph, DEFAULT_QUANT_OPS, asymmetric_activations=True)
    assert onnx.printer.to_text(ir.serde.serialize_model(graph)) == before


def test_cnn_structure_asymmetric_folds_relu(cnn: onnx.ModelProto, cnn_u8s8) -> None:
    model, _, _, stats = cnn_u8s8
    ops = _ops(model)
    # Q on x, c1, c2, p, f (not on logits: a Gemm graph output stays float); DQ on those 5 + 3 weights + 3 int32 biases
    assert ops["QuantizeLinear"] == 5
    assert ops["DequantizeLinear"] == 11
    assert ops["Relu"] == 0
    assert ops["Conv"] == 2 and ops["Gemm"] == 1 and ops["MaxPool"] == 1 and ops["Flatten"] == 1
    assert stats["folded_activations"] == 2
    assert stats["inserted"] == {"QuantizeLinear": 5, "DequantizeLinear": 11}
    assert stats["quantized_nodes"] == {"Conv": 2, "Gemm": 1}
    assert [o.name for o in model.graph.output] == [o.name for o in cnn.graph.output]
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert _producers(model)["logits"].op_type == "Gemm"
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            for i in range(3):
                _input_dq(model, node, i)
        if node.op_type in ("MaxPool", "Flatten"):
            _input_dq(model, node, 0)
    # the folded ReLU floor: every activation after a Conv has zero point = qmin
    inits = _inits(model)
    for name in ("c1", "c2"):
        assert inits[f"{name}_zero_point"].dtype == np.uint8 and int(inits[f"{name}_zero_point"]) == 0


def test_cnn_structure_symmetric_keeps_relu(cnn: onnx.ModelProto, cnn_s8s8) -> None:
    model, plan, _, stats = cnn_s8s8
    ops = _ops(model)
    assert ops["Relu"] == 2
    assert plan.folded == [] and stats["folded_activations"] == 0
    # Q on x, c1, r1, c2, f (r2 is not an input of a quantized op, so MaxPool/Flatten stay float; logits
    # is a Gemm graph output and stays float)
    assert ops["QuantizeLinear"] == 5
    assert ops["DequantizeLinear"] == 11
    assert [o.name for o in model.graph.output] == [o.name for o in cnn.graph.output]
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            for i in range(3):
                _input_dq(model, node, i)
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = _inits(model)[node.input[2]]
            if zp.dtype == np.int8 and zp.ndim == 0:
                assert int(zp) == 0  # symmetric int8 activations


@pytest.mark.parametrize("fixture", ["cnn_u8s8", "cnn_s8s8"])
def test_cnn_weights_and_biases(cnn: onnx.ModelProto, fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)[0]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    (gemm,) = [n for n in model.graph.node if n.op_type == "Gemm"]
    for node, weight, bias in ((convs[0], "W1", "B1"), (convs[1], "W2", "B2"), (gemm, "W3", "B3")):
        _assert_weights_within_half_step(cnn, model, node, weight, expected_axis=0)
        _assert_int32_bias(cnn, model, node, bias)


@pytest.mark.parametrize("fixture", ["cnn_u8s8", "cnn_s8s8"])
def test_cnn_int8_output_close_to_float(cnn: onnx.ModelProto, fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)[0]
    _assert_close_to_float(cnn, model, _samples(cnn, 8, seed=1), _samples(cnn, 32, seed=0)[:4])


def test_cnn_two_oracles_agree(cnn_u8s8) -> None:
    """ReferenceEvaluator and ORT (no graph optimizations) read the same Q/DQ graph the same way."""
    model = cnn_u8s8[0]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    reference = ReferenceEvaluator(model)
    for feed in _samples(model, 4, seed=2):
        got = session.run(None, feed)[0]
        want = reference.run(None, feed)[0]
        assert _cosine(got, want) > ORACLE_MIN_COSINE


def test_cnn_per_tensor_weights(cnn: onnx.ModelProto) -> None:
    scheme = QuantScheme(weights=S8_PER_TENSOR, activations=U8_ASYM)
    calib = _samples(cnn, 16, seed=0)
    model, _, _, _ = _quantize(cnn, scheme, calib)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    (gemm,) = [n for n in model.graph.node if n.op_type == "Gemm"]
    for node, weight, bias in ((convs[0], "W1", "B1"), (convs[1], "W2", "B2"), (gemm, "W3", "B3")):
        dq = _input_dq(model, node, 1)
        assert _axis(dq) is None
        _assert_weights_within_half_step(cnn, model, node, weight, expected_axis=None)
        _assert_int32_bias(cnn, model, node, bias)
    _assert_close_to_float(cnn, model, _samples(cnn, 4, seed=1), calib[:4])


def test_cnn_reduce_range_weights(cnn: onnx.ModelProto) -> None:
    calib = _samples(cnn, 16, seed=0)
    model, _, _, _ = _quantize(cnn, U8S8_REDUCED, calib)
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            q, scale, _, axis = _dq_params(model, _input_dq(model, node, 1))
            assert q.min() >= -63 and q.max() <= 63
            # every channel's largest |w| lands on +-63: scale = max|w| / 63
            per_channel_peak = np.abs(q.astype(np.int32)).reshape(q.shape[0], -1).max(axis=1)
            assert (per_channel_peak == 63).all()
            assert axis == 0
    _assert_close_to_float(cnn, model, _samples(cnn, 4, seed=1), calib[:4])


def test_cnn_percentile_calibration(cnn: onnx.ModelProto) -> None:
    samples = _samples(cnn, 16, seed=0)
    scheme = QuantScheme(weights=S8_PER_CHANNEL, activations=U8_ASYM, calibrator="percentile", percentile=99.9)
    model, _, table, _ = _quantize(cnn, scheme, samples)
    minmax = calibrate(_shaped(cnn), list(table.ranges), samples, calibrator="minmax")
    for name, (lo, hi) in table.ranges.items():
        mlo, mhi = minmax.ranges[name]
        assert mlo <= lo <= hi <= mhi
    assert table.calibrator == "percentile"
    # cosine only: percentile ranges clip the calibration samples' own extremes by design
    _assert_close_to_float(cnn, model, _samples(cnn, 4, seed=1))


# --------------------------------------------------------------------------------------------
# MatMul + residual Add
# --------------------------------------------------------------------------------------------


def test_matmul_residual() -> None:
    float_model = matmul_residual_model()
    calib = _samples(float_model, 32, seed=0)
    model, plan, _, _ = _quantize(float_model, U8S8, calib)
    assert [n.op_type for n in plan.quantized_nodes] == ["MatMul", "Add"]
    ops = _ops(model)
    assert ops["QuantizeLinear"] == 3  # x, mm, y
    assert ops["DequantizeLinear"] == 4  # + the weight
    assert [o.name for o in model.graph.output] == ["y"]
    (matmul,) = [n for n in model.graph.node if n.op_type == "MatMul"]
    (add,) = [n for n in model.graph.node if n.op_type == "Add"]
    _input_dq(model, matmul, 0)
    _input_dq(model, add, 0)
    _input_dq(model, add, 1)
    # both consumers of x read the same dequantized x
    assert matmul.input[0] == add.input[1]
    _assert_weights_within_half_step(float_model, model, matmul, "W", expected_axis=1)  # B is [K, N]
    _assert_close_to_float(float_model, model, _samples(float_model, 8, seed=1), calib[:4])


def test_matmul_per_tensor_weight() -> None:
    float_model = matmul_residual_model()
    scheme = QuantScheme(weights=S8_PER_TENSOR, activations=U8_ASYM)
    calib = _samples(float_model, 16, seed=0)
    model, _, _, _ = _quantize(float_model, scheme, calib)
    (matmul,) = [n for n in model.graph.node if n.op_type == "MatMul"]
    _assert_weights_within_half_step(float_model, model, matmul, "W", expected_axis=None)
    _assert_close_to_float(float_model, model, _samples(float_model, 4, seed=1), calib[:4])


def test_gap_gemm_trans_b0_and_constant_add() -> None:
    float_model = gap_gemm_model()
    calib = _samples(float_model, 32, seed=0)
    model, plan, _, _ = _quantize(float_model, U8S8, calib)
    assert [n.op_type for n in plan.quantized_nodes] == ["Conv", "GlobalAveragePool", "Gemm", "Add"]
    ops = _ops(model)
    # Q on x, c, gap, f (shares gap), g, y; DQ on those + W, B, G, GB, shift
    assert ops["QuantizeLinear"] == 6
    assert ops["DequantizeLinear"] == 11
    (gemm,) = [n for n in model.graph.node if n.op_type == "Gemm"]
    _assert_weights_within_half_step(float_model, model, gemm, "G", expected_axis=1)  # transB=0: N is axis 1
    _assert_int32_bias(float_model, model, gemm, "GB")
    (add,) = [n for n in model.graph.node if n.op_type == "Add"]
    q, scale, zero_point, axis = _dq_params(model, _input_dq(model, add, 1))
    shift = _inits(float_model)["shift"].astype(np.float64)
    assert q.dtype == np.uint8 and axis is None
    assert (np.abs(_np_dequantize(q, scale, zero_point, axis) - shift) <= float(scale) / 2 * (1 + SCALE_RTOL)).all()
    _assert_close_to_float(float_model, model, _samples(float_model, 8, seed=1), calib[:4])


def test_weight_shared_by_matmul_and_gemm_gets_per_node_channels() -> None:
    """One initializer read as MatMul's [K, N] and as Gemm transB=1's [N, K]: each needs its own channel axis."""
    rng = np.random.default_rng(15)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"]),
             helper.make_node("Gemm", ["x", "W", "B"], ["b"], transB=1),
             helper.make_node("Add", ["a", "b"], ["y"])]
    float_model = _model(nodes, [_f32("x", (2, 8))], [_f32("y", (2, 8))],
                         {"W": _he(rng, (8, 8), 8), "B": (rng.standard_normal(8) * 0.1).astype(np.float32)}, "shared")
    calib = _samples(float_model, 16, seed=0)
    model, _, _, _ = _quantize(float_model, U8S8, calib)
    (matmul,) = [n for n in model.graph.node if n.op_type == "MatMul"]
    (gemm,) = [n for n in model.graph.node if n.op_type == "Gemm"]
    _assert_weights_within_half_step(float_model, model, matmul, "W", expected_axis=1)
    _assert_weights_within_half_step(float_model, model, gemm, "W", expected_axis=0)
    _assert_int32_bias(float_model, model, gemm, "B")
    _assert_close_to_float(float_model, model, _samples(float_model, 8, seed=1), calib[:4])


# --------------------------------------------------------------------------------------------
# Concat (with a constant input)
# --------------------------------------------------------------------------------------------


def test_concat() -> None:
    float_model = concat_model()
    calib = _samples(float_model, 32, seed=0)
    model, plan, _, _ = _quantize(float_model, U8S8, calib)
    assert [n.op_type for n in plan.quantized_nodes] == ["Concat"]
    ops = _ops(model)
    assert ops["QuantizeLinear"] == 3  # a, b, out
    assert ops["DequantizeLinear"] == 4  # + the constant, quantized offline
    (concat,) = [n for n in model.graph.node if n.op_type == "Concat"]
    for i in range(3):
        _input_dq(model, concat, i)
    q, scale, zero_point, axis = _dq_params(model, _input_dq(model, concat, 2))
    assert q.dtype == np.uint8 and axis is None
    const = _inits(float_model)["c"].astype(np.float64)
    assert (np.abs(_np_dequantize(q, scale, zero_point, axis) - const) <= float(scale) / 2 * (1 + SCALE_RTOL)).all()
    assert [o.name for o in model.graph.output] == ["out"]
    _assert_close_to_float(float_model, model, _samples(float_model, 8, seed=1), calib[:4])


# --------------------------------------------------------------------------------------------
# Clip(0, 6) folding
# --------------------------------------------------------------------------------------------


def test_relu6_folded_for_asymmetric_activations() -> None:
    float_model = conv_clip_model(0.0, 6.0)
    calib = _samples(float_model, 32, seed=0)
    # the raw Conv output goes below 0 and above 6 on these samples, so both clamps matter
    raw = np.stack([ReferenceEvaluator(float_model).run(["c"], feed)[0] for feed in calib])
    assert raw.min() < 0.0 and raw.max() > 6.0
    model, plan, table, _ = _quantize(float_model, U8S8, calib)
    assert [n.op_type for n in plan.folded] == ["Clip"]
    ops = _ops(model)
    assert ops["Clip"] == 0
    assert ops["QuantizeLinear"] == 2  # x and the conv output (which now is the graph output)
    assert [o.name for o in model.graph.output] == ["y"]
    # the range is the Clip output's: [0, 6], so scale = 6 / 255 and zero point = qmin = 0
    assert table.ranges["y"] == (0.0, 6.0)
    inits = _inits(model)
    (q_out,) = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] != "x"]
    assert int(inits[q_out.input[2]]) == 0
    np.testing.assert_allclose(float(inits[q_out.input[1]]), 6.0 / 255.0, rtol=SCALE_RTOL)
    evaluator = ReferenceEvaluator(model)
    for feed in _samples(float_model, 6, seed=1):
        out = evaluator.run(None, feed)[0]
        assert out.min() == 0.0 and out.max() <= 6.0 * (1 + SCALE_RTOL)  # the quantizer's clamp is the Clip
    _assert_close_to_float(float_model, model, _samples(float_model, 8, seed=1), calib[:4])


def test_relu6_kept_for_symmetric_activations() -> None:
    float_model = conv_clip_model(0.0, 6.0)
    calib = _samples(float_model, 32, seed=0)
    model, plan, _, _ = _quantize(float_model, S8S8, calib)
    assert plan.folded == []
    assert _ops(model)["Clip"] == 1
    assert [o.name for o in model.graph.output] == ["y"]
    _assert_close_to_float(float_model, model, _samples(float_model, 8, seed=1), calib[:4])


def test_clip_with_nonzero_floor_not_folded() -> None:
    float_model = conv_clip_model(-1.0, 1.0)
    calib = _samples(float_model, 32, seed=0)
    model, plan, _, _ = _quantize(float_model, U8S8, calib)
    assert plan.folded == []
    assert _ops(model)["Clip"] == 1
    # cosine only: the kept Clip(-1, 1) reads the Conv output quantized over its whole (~[-20, 20]) range,
    # so one step is ~15% of the clipped output's range; no max-error bound is meaningful here
    _assert_close_to_float(float_model, model, _samples(float_model, 8, seed=1))


def test_relu_with_two_consumers_not_folded() -> None:
    """A Conv output read by Relu and by the graph output must keep its negative values."""
    float_model = conv_clip_model(0.0, 6.0)
    float_model.graph.output.append(_f32("c", (1, 4, 6, 6)))
    onnx.checker.check_model(float_model, full_check=True)
    calib = _samples(float_model, 32, seed=0)
    model, plan, _, _ = _quantize(float_model, U8S8, calib)
    assert plan.folded == []
    assert [o.name for o in model.graph.output] == ["y", "c"]
    _assert_close_to_float(float_model, model, _samples(float_model, 8, seed=1), calib[:4])


# --------------------------------------------------------------------------------------------
# fused groups (edgec.passes.fusion): no Q/DQ inside a group, its outputs quantized instead
# --------------------------------------------------------------------------------------------


def _annotated(model: onnx.ModelProto, *passes: object) -> onnx.ModelProto:
    """`model` after fusion annotation passes, back as a proto (the annotations travel as node metadata)."""
    graph = ir.serde.deserialize_model(model)
    for annotate in passes:
        annotate(graph)
    assert fusion_groups(graph.graph)
    return ir.serde.serialize_model(graph)


def conv_activation_model(activation: str) -> onnx.ModelProto:
    """Conv -> activation as the graph output; weights scaled so the Conv output spans ~[-20, 20]."""
    rng = np.random.default_rng(16)
    attributes = {"alpha": 0.1} if activation == "LeakyRelu" else {}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node(activation, ["c"], ["y"], **attributes)]
    inits = {"W": _he(rng, (4, 3, 3, 3), 27) * 4.0, "B": (rng.standard_normal(4) * 0.1).astype(np.float32)}
    return _model(nodes, [_f32("x", (1, 3, 6, 6))], [_f32("y", (1, 4, 6, 6))], inits, "conv_activation")


def attention_model() -> onnx.ModelProto:
    """softmax(Q K^T / sqrt(8) + mask) V, then an output projection; Q, K, V, mask are inputs."""
    rng = np.random.default_rng(17)
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["scores"]),
             helper.make_node("Div", ["scores", "sqrt_d"], ["scaled"]),
             helper.make_node("Add", ["scaled", "mask"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
             helper.make_node("MatMul", ["probs", "v"], ["ctx"]),
             helper.make_node("MatMul", ["ctx", "Wo"], ["y"])]
    inputs = [_f32(n, (1, 2, 4, 8)) for n in ("q", "k", "v")] + [_f32("mask", (1, 1, 4, 4))]
    inits = {"sqrt_d": np.array(np.sqrt(8.0), np.float32), "Wo": _he(rng, (8, 8), 8)}
    return _model(nodes, inputs, [_f32("y", (1, 2, 4, 8))], inits, "attention")


def test_relu_groups_fold_exactly_as_before(cnn: onnx.ModelProto, cnn_u8s8) -> None:
    """Asymmetric activations: a Conv+Relu group is quantized by the ReLU fold, unchanged."""
    calib = _samples(cnn, 32, seed=0)
    model, plan, table, stats = _quantize(_annotated(cnn, FuseActivationsPass()), U8S8, calib)
    want_model, want_plan, want_table, want_stats = cnn_u8s8
    assert [n.op_type for n in plan.folded] == ["Relu", "Relu"]
    assert plan.calibration_tensors == want_plan.calibration_tensors and table.ranges == want_table.ranges
    assert stats == want_stats and _ops(model) == _ops(want_model)
    got, want = ReferenceEvaluator(model), ReferenceEvaluator(want_model)
    for feed in _samples(cnn, 4, seed=1):
        np.testing.assert_array_equal(got.run(None, feed)[0], want.run(None, feed)[0])


def test_relu_groups_with_symmetric_activations_quantize_after_the_relu(cnn: onnx.ModelProto) -> None:
    """s8s8 cannot fold the ReLU into the quantizer: the Q/DQ pair moves after it, none sits between."""
    calib = _samples(cnn, 32, seed=0)
    model, plan, _, _ = _quantize(_annotated(cnn, FuseActivationsPass()), S8S8, calib)
    assert plan.folded == []
    # x, r1, r2 (group outputs instead of c1, c2), p and f (sharing r2's parameters); logits stays float
    assert plan.calibration_tensors == ["x", "r1", "r2"]
    assert {k.name: v.name for k, v in plan.shares.items()} == {"p": "r2", "f": "r2"}
    assert _ops(model)["QuantizeLinear"] == 5
    producers = _producers(model)
    for relu in (n for n in model.graph.node if n.op_type == "Relu"):
        assert producers[relu.input[0]].op_type == "Conv"
        assert {n.op_type for n in model.graph.node if relu.output[0] in n.input} == {"QuantizeLinear"}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    (gemm,) = [n for n in model.graph.node if n.op_type == "Gemm"]
    for node, bias in ((convs[0], "B1"), (convs[1], "B2"), (gemm, "B3")):
        _assert_int32_bias(cnn, model, node, bias)
    _assert_close_to_float(cnn, model, _samples(cnn, 8, seed=1), calib[:4])


@pytest.mark.parametrize("activation", ["Sigmoid", "LeakyRelu", "HardSwish"])
def test_activation_group_quantizes_the_activation_output(activation: str) -> None:
    float_model = conv_activation_model(activation)
    calib = _samples(float_model, 32, seed=0)
    _, ungrouped, _, _ = _quantize(float_model, U8S8, calib)
    assert ungrouped.calibration_tensors == ["x", "c"]  # without the group: between Conv and activation
    model, plan, _, _ = _quantize(_annotated(float_model, FuseActivationsPass()), U8S8, calib)
    assert plan.calibration_tensors == ["x", "y"] and plan.folded == []
    (conv,) = [n for n in model.graph.node if n.op_type == "Conv"]
    (act,) = [n for n in model.graph.node if n.op_type == activation]
    assert act.input[0] == conv.output[0]  # no Q/DQ in between
    assert _producers(model)[model.graph.output[0].name].op_type == "DequantizeLinear"
    _assert_weights_within_half_step(float_model, model, conv, "W", expected_axis=0)
    _assert_int32_bias(float_model, model, conv, "B")
    _assert_close_to_float(float_model, model, _samples(float_model, 8, seed=1), calib[:4])


def test_attention_group_quantizes_only_its_matrix_inputs_and_output() -> None:
    float_model = attention_model()
    calib = _samples(float_model, 32, seed=0)
    model, plan, _, _ = _quantize(_annotated(float_model, MarkAttentionPass()), U8S8, calib)
    assert [n.op_type for n in plan.quantized_nodes] == ["MatMul", "MatMul", "MatMul"]  # not the Div or mask Add
    assert sorted(plan.calibration_tensors) == ["ctx", "kt", "q", "v"]  # y: a MatMul graph output stays float
    producers = _producers(model)
    (add,) = [n for n in model.graph.node if n.op_type == "Add"]
    assert "mask" in add.input  # the mask is read as it is: never calibrated, never quantized
    for node in model.graph.node:
        if node.op_type in ("Div", "Add", "Softmax"):
            assert all(producers.get(name) is None or producers[name].op_type != "DequantizeLinear"
                       for name in node.input), node.op_type
    (second,) = [n for n in model.graph.node if n.op_type == "MatMul" and producers[n.input[0]].op_type == "Softmax"]
    _input_dq(model, second, 1)  # V is quantized, the probabilities are not
    assert producers["y"].op_type == "MatMul"
    _assert_close_to_float(float_model, model, _samples(float_model, 8, seed=1))


# --------------------------------------------------------------------------------------------
# graph outputs of Gemm / MatMul stay float (ORT's QGemm / MatMulIntegerToFloat write float)
# --------------------------------------------------------------------------------------------

#: op -> (tensors calibrated, producer of the graph output `y` in the Q/DQ model)
GRAPH_OUTPUT_CASES = {
    "Gemm": (["x"], "Gemm"),
    "MatMul": (["x"], "MatMul"),
    "Conv": (["x", "y"], "DequantizeLinear"),  # QLinearConv writes int8: its output is quantized as before
}
#: what ONNX Runtime's CPU optimizer fuses DQ -> op (float output) into
ORT_FLOAT_OUTPUT_KERNELS = {"Gemm": "QGemm", "MatMul": "MatMulIntegerToFloat"}


def _ort_optimized(model: onnx.ModelProto, path: Path) -> tuple[ort.InferenceSession, onnx.ModelProto]:
    """A session on `model` and the graph ONNX Runtime's optimizer made of it (extended level: QDQ fusions,
    no hardware-specific layouts)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(path)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, onnx.load(path)


@pytest.mark.parametrize("op", list(GRAPH_OUTPUT_CASES))
def test_graph_output_quantized_only_when_the_op_cannot_write_float(op: str) -> None:
    float_model = single_layer_model(op)
    calib = _samples(float_model, 16, seed=0)
    model, plan, _, stats = _quantize(float_model, U8S8, calib)
    tensors, producer = GRAPH_OUTPUT_CASES[op]
    assert [n.op_type for n in plan.quantized_nodes] == [op]
    assert plan.calibration_tensors == tensors
    assert stats["quantized_activations"] == len(tensors)
    assert [o.name for o in model.graph.output] == ["y"]
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert _producers(model)["y"].op_type == producer
    _input_dq(model, next(n for n in model.graph.node if n.op_type == op), 0)  # the input is still quantized
    _assert_close_to_float(float_model, model, _samples(float_model, 8, seed=1), calib[:4])


@pytest.mark.parametrize("op", list(ORT_FLOAT_OUTPUT_KERNELS))
def test_ort_fuses_a_float_output_matrix_op(op: str, tmp_path: Path) -> None:
    """No Q/DQ after the op does not cost the integer kernel: ORT still fuses it, with a float output.

    7-bit weights: full-range u8 x s8 products saturate in ORT's kernels on x86 hosts without VNNI
    (see targets/cpu-x86-avx2-int8.toml), which would break the comparison with the Q/DQ semantics.
    """
    float_model = single_layer_model(op)
    model, _, _, _ = _quantize(float_model, U8S8_REDUCED, _samples(float_model, 16, seed=0))
    session, optimized = _ort_optimized(model, tmp_path / "optimized.onnx")
    kernel = ORT_FLOAT_OUTPUT_KERNELS[op]
    ops = _ops(optimized)
    assert ops[kernel] == 1 and ops[op] == 0 and ops["DequantizeLinear"] == 0
    assert _producers(optimized)["y"].op_type == kernel
    reference = ReferenceEvaluator(model)
    for feed in _samples(float_model, 4, seed=2):
        assert _cosine(session.run(None, feed)[0], reference.run(None, feed)[0]) > ORACLE_MIN_COSINE


def test_cnn_logits_fuse_into_qgemm(cnn_u8s8, tmp_path: Path) -> None:
    _, optimized = _ort_optimized(cnn_u8s8[0], tmp_path / "optimized.onnx")
    assert _producers(optimized)["logits"].op_type == "QGemm"
    assert _ops(optimized)["DequantizeLinear"] == 0


def test_matrix_op_output_that_is_also_read_stays_quantized() -> None:
    """A Gemm output that is a graph output AND an input of the quantized Add keeps its Q/DQ pair."""
    float_model = gap_gemm_model()
    float_model.graph.output.append(_f32("g", (1, 5)))
    onnx.checker.check_model(float_model, full_check=True)
    calib = _samples(float_model, 32, seed=0)
    model, plan, _, _ = _quantize(float_model, U8S8, calib)
    assert "g" in plan.calibration_tensors and "y" in plan.calibration_tensors
    assert [o.name for o in model.graph.output] == ["y", "g"]
    producers = _producers(model)
    assert producers["g"].op_type == "DequantizeLinear" and producers["y"].op_type == "DequantizeLinear"
    (add,) = [n for n in model.graph.node if n.op_type == "Add"]
    assert add.input[0] == "g"  # the Add reads the dequantized Gemm output, the same tensor the graph returns
    _assert_close_to_float(float_model, model, _samples(float_model, 8, seed=1), calib[:4])


# --------------------------------------------------------------------------------------------
# keep_float: node names or op types left float
# --------------------------------------------------------------------------------------------


def _plan_summary(quant_plan: qdq.QuantPlan) -> dict[str, object]:
    return {"quantized": [n.name for n in quant_plan.quantized_nodes], "folded": [n.name for n in quant_plan.folded],
            "tensors": quant_plan.calibration_tensors, "shares": {k.name: v.name for k, v in quant_plan.shares.items()}}


#: cnn_model plans (asymmetric activations) with one op type kept float
KEEP_FLOAT_OP_PLANS = {
    "Conv": {"quantized": ["fc"], "folded": [], "tensors": ["f"], "shares": {}},
    "Gemm": {"quantized": ["conv1", "conv2"], "folded": ["relu1", "relu2"], "tensors": ["x", "r1", "r2"],
             "shares": {"p": "c2", "f": "c2"}},
    "MaxPool": {"quantized": ["conv1", "conv2", "fc"], "folded": ["relu1", "relu2"], "tensors": ["x", "r1", "r2", "f"],
                "shares": {}},  # the pool runs in float, so Flatten has no quantized input to share
}


@pytest.mark.parametrize("op", list(KEEP_FLOAT_OP_PLANS))
def test_keep_float_op_type_is_like_not_asking_for_it(cnn: onnx.ModelProto, op: str) -> None:
    kept = qdq.plan(_shaped(cnn), DEFAULT_QUANT_OPS, asymmetric_activations=True, keep_float=[op])
    not_asked = qdq.plan(_shaped(cnn), [o for o in DEFAULT_QUANT_OPS if o != op], asymmetric_activations=True)
    assert _plan_summary(kept) == KEEP_FLOAT_OP_PLANS[op] == _plan_summary(not_asked)


def test_keep_float_by_node_name(cnn: onnx.ModelProto) -> None:
    calib = _samples(cnn, 32, seed=0)
    model, plan, _, stats = _quantize(cnn, U8S8, calib, keep_float=["conv2"])
    assert _plan_summary(plan) == {"quantized": ["conv1", "fc"], "folded": ["relu1"],  # relu2 follows a float Conv
                                   "tensors": ["x", "r1", "f"], "shares": {}}
    assert stats["quantized_nodes"] == {"Conv": 1, "Gemm": 1}
    nodes = {n.name: n for n in model.graph.node}
    assert nodes["conv2"].input[1:] == ["W2", "B2"]  # float weight and bias, no DequantizeLinear
    assert _producers(model)[nodes["conv2"].input[0]].op_type == "DequantizeLinear"  # conv1's quantized output
    assert "relu2" in nodes and "relu1" not in nodes
    for name, weight, bias in (("conv1", "W1", "B1"), ("fc", "W3", "B3")):
        _assert_weights_within_half_step(cnn, model, nodes[name], weight, expected_axis=0)
        _assert_int32_bias(cnn, model, nodes[name], bias)
    _assert_close_to_float(cnn, model, _samples(cnn, 8, seed=1), calib[:4])


# --------------------------------------------------------------------------------------------
# calibrate
# --------------------------------------------------------------------------------------------


def _shaped(model: onnx.ModelProto) -> ir.Model:
    graph = ir.serde.deserialize_model(model)
    InferShapesPass()(graph)
    return graph


def test_calibrate_minmax_matches_numpy() -> None:
    float_model = cnn_model()
    samples = _samples(float_model, 12, seed=3)
    calls: list[tuple[int, int]] = []
    table = calibrate(_shaped(float_model), ["x", "r1", "logits"], samples, calibrator="minmax",
                      progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 12) for i in range(1, 13)]
    assert table.samples == 12 and table.calibrator == "minmax" and table.source == "data"
    xs = np.stack([s["x"] for s in samples])
    assert table.ranges["x"] == (float(xs.min()), float(xs.max()))
    # intermediate tensors against the reference evaluator's values (float32 kernels differ slightly)
    reference = ReferenceEvaluator(float_model)
    r1 = np.stack([reference.run(["r1"], s)[0] for s in samples])
    logits = np.stack([reference.run(["logits"], s)[0] for s in samples])
    np.testing.assert_allclose(table.ranges["r1"], (r1.min(), r1.max()), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(table.ranges["logits"], (logits.min(), logits.max()), rtol=1e-5, atol=1e-5)
    assert table.ranges["r1"][0] == 0.0


def test_calibrate_no_tensors_and_unknown_calibrator() -> None:
    float_model = cnn_model()
    table = calibrate(_shaped(float_model), [], _samples(float_model, 2, seed=0), calibrator="minmax",
                      source="random")
    assert table.ranges == {} and table.source == "random"
    with pytest.raises(TargetError, match="bogus"):
        calibrate(_shaped(float_model), ["x"], _samples(float_model, 2, seed=0), calibrator="bogus")


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_plan_rejects_unsupported_op() -> None:
    with pytest.raises(TargetError, match="Erf"):
        qdq.plan(_shaped(cnn_model()), [*DEFAULT_QUANT_OPS, "Erf"], asymmetric_activations=True)


def test_apply_requires_every_range() -> None:
    graph = _shaped(cnn_model())
    plan = qdq.plan(graph, DEFAULT_QUANT_OPS, asymmetric_activations=True)
    table = CalibrationTable("minmax", 1, "data", {"x": (-1.0, 1.0)})
    with pytest.raises(TargetError, match="no range"):
        qdq.apply(graph, plan, table, U8S8)


def test_only_requested_ops_are_quantized() -> None:
    float_model = cnn_model()
    scheme = QuantScheme(weights=S8_PER_CHANNEL, activations=U8_ASYM, ops=("Gemm",))
    calib = _samples(float_model, 8, seed=0)
    model, plan, _, _ = _quantize(float_model, scheme, calib)
    assert [n.op_type for n in plan.quantized_nodes] == ["Gemm"]
    ops = _ops(model)
    assert ops["Relu"] == 2  # nothing folded: the Convs are not quantized
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(c.input[1] in ("W1", "W2") for c in convs)  # float weights untouched
    _assert_close_to_float(float_model, model, _samples(float_model, 4, seed=1), calib[:4])


def test_apply_then_cleanup_drops_float_weights(cnn_u8s8) -> None:
    model = cnn_u8s8[0]
    graph = ir.serde.deserialize_model(model)
    RemoveUnusedPass()(graph)
    names = set(graph.graph.initializers)
    assert not names & {"W1", "W2", "W3", "B1", "B2", "B3"}
    onnx.checker.check_model(ir.serde.serialize_model(graph), full_check=True)
