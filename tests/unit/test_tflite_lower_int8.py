"""The TFLite lowering in int8: the flatbuffer carries edgec's calibration, on TFLite's int8 spec.

The readback parses the written `.tflite` with LiteRT's schema and checks every int8 activation
against the parameters `qparams_from_range` derives from the calibration table (int8 asymmetric,
per tensor), weights against symmetric per-channel parameters on TFLite's channel axis, and biases
against input scale x weight scale.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from ai_edge_litert import schema_py_generated as schema
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec.backends.tflite.lower import lower
from edgec.quant import qdq
from edgec.quant.dynamic import is_dynamic_candidate, quantize_dynamic
from edgec.quant.qparams import qparams_from_range, weight_qparams
from edgec.quant.table import CalibrationTable
from edgec.target import load_target
from tflite_lowering import encoder_block, optimized, quantized, run_onnx, run_tflite, tflite_ops

_RNG = np.random.default_rng(11)


def _init(name: str, *shape: int, scale: float = 0.3, offset: float = 0.0) -> onnx.TensorProto:
    return numpy_helper.from_array((offset + _RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _cnn(head: str = "gemm") -> onnx.ModelProto:
    """MobileNetV2-like: Conv-BN-ReLU6, depthwise-ReLU, projection with a residual Add, a MaxPool and an
    AveragePool branch joined by Concat, global pooling, then a Gemm head (float logits) or none (int8 output)."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["n1"]),
        helper.make_node("Clip", ["n1", "lo", "hi"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=16),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"]),
        helper.make_node("Add", ["c3", "r1"], ["res"]),
        helper.make_node("MaxPool", ["res"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["res"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Concat", ["mp", "ap"], ["cat"], axis=1),
        helper.make_node("GlobalAveragePool", ["cat"], ["pool"]),
    ]
    inits = [_init("w1", 16, 3, 3, 3), _init("b1", 16), _init("g", 16, scale=0.1, offset=1.0), _init("beta", 16),
             _init("mean", 16, scale=0.1), numpy_helper.from_array(np.full(16, 1.2, np.float32), "var"),
             numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi"),
             _init("w2", 16, 1, 3, 3), _init("b2", 16), _init("w3", 16, 16, 1, 1, scale=0.2), _init("b3", 16)]
    output = helper.make_tensor_value_info("pool", f, [1, 32, 1, 1])
    if head == "gemm":
        nodes += [helper.make_node("Flatten", ["pool"], ["flat"]),
                  helper.make_node("Gemm", ["flat", "w4", "b4"], ["logits"], transB=1)]
        inits += [_init("w4", 10, 32), _init("b4", 10)]
        output = helper.make_tensor_value_info("logits", f, [1, 10])
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", f, [1, 3, 32, 32])], [output], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    return proto


def _samples(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(count)]


@pytest.fixture(scope="module")
def built() -> tuple[onnx.ModelProto, ir.Model, ir.Model, object, bytes]:
    proto = _cnn()
    model, table = quantized(proto, _samples(16))
    return proto, optimized(proto, "tflite-int8"), model, table, lower(model, table=table, precision="int8")


def _tensors(flatbuffer: bytes) -> tuple[schema.SubGraphT, list[schema.BufferT]]:
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    return model.subgraphs[0], model.buffers


def _name(tensor: schema.TensorT) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name


def _is_constant(tensor: schema.TensorT, buffers: list[schema.BufferT]) -> bool:
    return tensor.buffer > 0 and buffers[tensor.buffer].data is not None and len(buffers[tensor.buffer].data) > 0


def _range_names(float_model: ir.Model) -> dict[str, str]:
    """Activation -> the calibration-table entry its parameters come from, as the quantizer plans it: itself,
    a folded ReLU's output, or (MaxPool, Reshape, ...) the entry of the value whose parameters it shares."""
    target = load_target("tflite-int8")
    plan = qdq.plan(float_model, target.quant.ops, asymmetric_activations=True)
    return {value.name: plan.range_of[plan.shares.get(value, value)] for value in plan.activations}


def _op_name(model_codes: list[schema.OperatorCodeT], op: schema.OperatorT) -> str:
    code = model_codes[op.opcodeIndex].builtinCode
    return next(name for name, value in vars(schema.BuiltinOperator).items() if value == code)


def test_activation_params_come_from_the_calibration_table(built) -> None:
    _, float_model, _, table, flatbuffer = built
    assert _check_activations(flatbuffer, table, float_model) >= 8  # x, conv outputs, residual, pools, concat, pool


def test_compiled_artifact_carries_its_calibration_json(tmp_path: Path) -> None:
    """Through `edgec.compile`: the `.tflite` holds exactly the parameters of the artifact's calibration.json."""
    proto = _cnn()
    onnx.save_model(proto, tmp_path / "cnn.onnx")
    np.savez(tmp_path / "calib.npz", x=np.concatenate([s["x"] for s in _samples(16)]))
    result = edgec.compile(tmp_path / "cnn.onnx", "tflite-int8", calib=tmp_path / "calib.npz",
                           output_dir=tmp_path / "out", verify_import=False)
    assert result.model_path.name == "model.tflite"
    table = CalibrationTable.from_dict(json.loads((result.output_dir / "calibration.json").read_text()))
    assert _check_activations(result.model_path.read_bytes(), table, optimized(proto, "tflite-int8")) >= 8


def _check_activations(flatbuffer: bytes, table: CalibrationTable, float_model: ir.Model) -> int:
    """Assert every int8 activation's parameters come from `table` (or TFLite's per-op rules); how many were checked."""
    subgraph, buffers = _tensors(flatbuffer)
    range_of = _range_names(float_model)
    checked = 0
    pool_kept: list[str] = []
    by_name = {_name(t): t for t in subgraph.tensors}
    table_params = []
    for lo, hi in table.ranges.values():
        params = qparams_from_range(lo, hi, "int8", symmetric=False)
        table_params.append(([float(params.scale)], [int(params.zero_point)]))
    for tensor in subgraph.tensors:
        name = _name(tensor)
        if tensor.type != schema.TensorType.INT8 or _is_constant(tensor, buffers):
            continue
        if name.endswith("_input_params"):  # pooling writes its input's params (TFLite's spec), then requantizes
            pool_kept.append(name)
            continue
        if name.endswith("_padded"):  # PAD keeps its input's parameters
            assert tensor.quantization.scale == by_name[name.removesuffix("_padded")].quantization.scale
            continue
        if name.endswith("_requantized"):  # an input moved onto its consumer's parameters (Concat): table-derived too
            assert (tensor.quantization.scale, tensor.quantization.zeroPoint) in table_params, name
            continue
        lo, hi = table.ranges[range_of[name]]
        expected = qparams_from_range(lo, hi, "int8", symmetric=False)
        assert tensor.quantization.scale == pytest.approx([float(expected.scale)], rel=1e-6), name
        assert tensor.quantization.zeroPoint == [int(expected.zero_point)], name
        checked += 1
    assert pool_kept == ["ap_nhwc_input_params"]  # AveragePool: calibrated output differs from its input's
    return checked


def test_weights_are_symmetric_per_channel_on_tflite_axes_and_bias_is_int32(built) -> None:
    _, float_model, _, _, flatbuffer = built
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    subgraph, buffers = model.subgraphs[0], model.buffers
    floats = {v.name: v.const_value.numpy() for v in float_model.graph.initializers.values()}
    kinds = []
    for op in subgraph.operators:
        kind = _op_name(model.operatorCodes, op)
        if kind not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        kinds.append(kind)
        x, w, b = (subgraph.tensors[i] for i in op.inputs)
        assert x.type == w.type == schema.TensorType.INT8 and b.type == schema.TensorType.INT32
        axis = 0 if kind == "CONV_2D" else 3
        assert w.quantization.quantizedDimension == axis
        assert set(w.quantization.zeroPoint) == {0}
        weight = floats[_name(w).removesuffix("_quantized")]  # ONNX OIHW, before the lowering
        expected = weight_qparams(weight, "int8", True, 0)
        assert w.quantization.scale == pytest.approx(expected.scale.tolist(), rel=1e-6)
        assert len(w.quantization.scale) == w.shape[axis]
        assert np.abs(np.frombuffer(buffers[w.buffer].data, np.int8)).max() <= 127
        product = float(x.quantization.scale[0]) * np.asarray(w.quantization.scale, np.float64)
        assert b.quantization.scale == pytest.approx(product.tolist(), rel=1e-5)
        assert set(b.quantization.zeroPoint) == {0}
    assert sorted(kinds) == ["CONV_2D", "CONV_2D", "DEPTHWISE_CONV_2D"]


def test_integer_kernels_chain_without_float_round_trips(built) -> None:
    *_, flatbuffer = built
    ops = tflite_ops(flatbuffer)
    # float input quantized once; dequantized once, for the float logits of the Gemm head
    assert ops["DEQUANTIZE"] == 1 and ops["QUANTIZE"] >= 1
    assert "RELU" not in ops and "RELU6" not in ops  # folded into the convolutions' output ranges
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    subgraph = model.subgraphs[0]
    for op in subgraph.operators:
        kind = _op_name(model.operatorCodes, op)
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MAX_POOL_2D", "AVERAGE_POOL_2D", "CONCATENATION", "MEAN"):
            assert all(subgraph.tensors[i].type == schema.TensorType.INT8 for i in op.inputs[:1]), kind
        if kind == "CONCATENATION":  # TFLite's int8 concatenation: inputs on the output's parameters
            params = [subgraph.tensors[i].quantization for i in [*op.inputs, *op.outputs]]
            assert all(p.scale == params[-1].scale and p.zeroPoint == params[-1].zeroPoint for p in params)


def test_int8_logits_stay_close_to_float(built, tmp_path: Path) -> None:
    proto, _, _, _, flatbuffer = built
    cosines = []
    for feeds in _samples(8, seed=1):
        got = run_tflite(flatbuffer, tmp_path, feeds)["logits"].ravel()
        want = run_onnx(proto, feeds)["logits"].ravel()
        cosines.append(float(got @ want / np.linalg.norm(got) / np.linalg.norm(want)))
    assert min(cosines) > 0.99


def test_integer_io_feeds_and_returns_int8(tmp_path: Path) -> None:
    proto = _cnn(head="none")
    model, table = quantized(proto, _samples(16))
    float_io = lower(model, table=table, precision="int8")
    integer_io = lower(model, table=table, precision="int8", integer_io=True)
    path = tmp_path / "int.tflite"
    path.write_bytes(integer_io)
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (x_detail,), (y_detail,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert x_detail["dtype"] == np.int8 and y_detail["dtype"] == np.int8
    feeds = _samples(1, seed=2)[0]
    x_scale, x_zero = x_detail["quantization"]
    x_nhwc = feeds["x"]  # the model's input stays NCHW, as in ONNX
    interpreter.set_tensor(x_detail["index"], np.clip(np.round(x_nhwc / x_scale) + x_zero, -128, 127).astype(np.int8))
    interpreter.invoke()
    y_scale, y_zero = y_detail["quantization"]
    y = (interpreter.get_tensor(y_detail["index"]).astype(np.float32) - y_zero) * y_scale
    float_out = run_tflite(float_io, tmp_path, feeds, "float_io")["pool"]
    np.testing.assert_allclose(y, float_out, atol=2 * y_scale)
    assert tflite_ops(integer_io)["QUANTIZE"] < tflite_ops(float_io)["QUANTIZE"]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_static_int8_encoder_keeps_attention_float(tmp_path: Path) -> None:
    """Static int8 of a transformer block: projections become int8 FULLY_CONNECTED, the two-activation
    attention products (no constant weight for an int8 kernel) stay float BATCH_MATMULs."""
    proto = encoder_block()
    rng = np.random.default_rng(4)
    samples = [{"ids": rng.integers(0, 50, (1, 6)).astype(np.int64), "mask": np.zeros((1, 6), np.int64)}
               for _ in range(16)]
    model, table = quantized(proto, samples)
    flatbuffer = lower(model, table=table, precision="int8")
    subgraph, _ = _tensors(flatbuffer)
    model_t = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    kinds = {}
    for op in subgraph.operators:
        kinds.setdefault(_op_name(model_t.operatorCodes, op), []).append(subgraph.tensors[op.inputs[0]].type)
    assert schema.TensorType.INT8 in kinds["FULLY_CONNECTED"]
    assert set(kinds["BATCH_MATMUL"]) == {schema.TensorType.FLOAT32}
    for feeds in samples[:4]:
        assert _cosine(run_tflite(flatbuffer, tmp_path, feeds)["pooled"], run_onnx(proto, feeds)["pooled"]) > 0.98


def test_grouped_conv_runs_as_one_int8_conv_2d_with_grouped_filters(tmp_path: Path) -> None:
    """ResNeXt/ShuffleNet-style: a 4-group Conv is one int8 CONV_2D whose OHWI filter holds each group's
    input depth (LiteRT infers the groups), per-channel weights on axis 0; LiteRT's output stays close to float."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w", "b"], ["c"], pads=[1, 1, 1, 1], group=4),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2", "b2"], ["y"])]
    inits = [numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)
             for name, shape, scale in (("w1", (16, 3, 3, 3), 0.4), ("b1", (16,), 0.2), ("w", (32, 4, 3, 3), 0.4),
                                        ("b", (32,), 0.2), ("w2", (8, 32, 1, 1), 0.3), ("b2", (8,), 0.2))]
    graph = helper.make_graph(nodes, "grouped", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rng_samples = np.random.default_rng(5)
    samples = [{"x": rng_samples.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(16)]
    model, table = quantized(proto, samples)
    flatbuffer = lower(model, table=table, precision="int8")
    # NCHW graph edges transposed; no SPLIT/CONCATENATION, no float island
    assert set(tflite_ops(flatbuffer)) == {"TRANSPOSE", "QUANTIZE", "CONV_2D", "DEQUANTIZE"}
    model_t = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    subgraph = model_t.subgraphs[0]
    grouped = [op for op in subgraph.operators
               if len(op.inputs) == 3 and subgraph.tensors[op.inputs[1]].shape.tolist() == [32, 3, 3, 4]]
    assert len(grouped) == 1
    x, w, b = (subgraph.tensors[i] for i in grouped[0].inputs)
    assert x.type == w.type == schema.TensorType.INT8 and b.type == schema.TensorType.INT32
    assert w.quantization.quantizedDimension == 0 and len(w.quantization.scale) == 32
    for feeds in samples[:8]:
        got, want = run_tflite(flatbuffer, tmp_path, feeds)["y"], run_onnx(proto, feeds)["y"]
        assert _cosine(got, want) > 0.999


@pytest.mark.parametrize("per_token", [False, True], ids=["per-call", "per-token"])
def test_dynamic_range_matmuls_become_hybrid_fully_connected(per_token: bool, tmp_path: Path) -> None:
    """edgec's dynamic int8 MatMul patterns (one scale per call, or per token) -> TFLite's hybrid
    FULLY_CONNECTED, which quantizes each input row itself: the row arithmetic leaves the model."""
    proto = encoder_block()
    model = optimized(proto, "tflite-int8")
    nodes = [node for node in model.graph if is_dynamic_candidate(node)]
    names = {node.name or node.outputs[0].name for node in nodes}
    quantize_dynamic(model, nodes, load_target("tflite-int8").quant.weights, per_token=names if per_token else ())
    flatbuffer = lower(model, table=CalibrationTable("minmax", 0, "data"), precision="int8")
    model_t = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    subgraph = model_t.subgraphs[0]
    hybrid = [op for op in subgraph.operators if _op_name(model_t.operatorCodes, op) == "FULLY_CONNECTED"]
    assert len(hybrid) == len(nodes) == 4
    for op in hybrid:
        assert subgraph.tensors[op.inputs[1]].type == schema.TensorType.INT8 and op.builtinOptions.asymmetricQuantizeInputs
    ops = tflite_ops(flatbuffer)
    assert "REDUCE_MIN" not in ops and "ROUND" not in ops
    feeds = {"ids": np.array([[3, 17, 42, 8, 0, 0]], np.int64), "mask": np.array([[0, 0, 0, 0, 1, 1]], np.int64)}
    assert _cosine(run_tflite(flatbuffer, tmp_path, feeds)["pooled"], run_onnx(proto, feeds)["pooled"]) > 0.99
