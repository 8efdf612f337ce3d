"""Tests for edgec.passes.layout: NHWC conversion with transposes sunk to the region's edges.

Structure is checked by counting Transposes and ``edgec.nhwc`` nodes; numerics compare ONNX Runtime
on the converted model (whose model-local functions it inlines) with ONNX Runtime on the ORIGINAL
model, and ``onnx.reference`` on both where the check should not lean on ORT at all.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgec.passes.layout import NHWC_DOMAIN, TO_NCHW, TO_NHWC, ConvertToNHWCPass

#: The rewrite only moves data (transposes, permuted constants): the same fp32 ops run on the same
#: values, so only kernel choice (NCHW vs NHWC inner loops) may differ.
LAYOUT_RTOL = 1e-5
LAYOUT_ATOL = 1e-6


def _weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    """Normal weights scaled by 1/sqrt(fan-in), as trained layers are: activations stay O(1), so the
    absolute tolerance is not eaten by the growth of untrained magnitudes through the layers."""
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)


def _input(*shape: int) -> np.ndarray:
    return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


def _ints(name: str, *values: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _build(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, list[int | str]],
    outputs: list[str],
    initializers: list[onnx.TensorProto],
    opset: int = 17,
) -> onnx.ModelProto:
    """A checked, shape-inferred model (the pass reads ranks from inferred shapes)."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def _convert(proto: onnx.ModelProto, nhwc_io: bool = False) -> tuple[onnx.ModelProto, ir.Model, bool]:
    model = ir.serde.deserialize_model(proto)
    result = ConvertToNHWCPass(nhwc_io=nhwc_io)(model)
    converted = ir.serde.serialize_model(result.model)
    onnx.checker.check_model(converted, full_check=True)
    return converted, result.model, result.modified


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _count(model: ir.Model, op_type: str) -> int:
    """Default-domain nodes of one type (``edgec.nhwc`` twins share op types with the originals)."""
    return sum(1 for node in model.graph if node.op_type == op_type and node.domain == "")


def _nhwc_ops(model: ir.Model) -> list[str]:
    return sorted(node.op_type for node in model.graph if node.domain == NHWC_DOMAIN)


def _assert_close(actual: list[np.ndarray], expected: list[np.ndarray], rtol: float, atol: float) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def small_cnn() -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> Add(residual) -> {MaxPool, AveragePool} -> Concat -> Mul(per-channel
    constant) -> GlobalAveragePool -> Flatten -> Gemm, with a symbolic batch."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["c2"], pads=[1, 1, 1, 1]),  # no bias: an empty optional input
        helper.make_node("Add", ["c2", "r"], ["a"]),
        helper.make_node("MaxPool", ["a"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("AveragePool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Concat", ["m", "p"], ["cat"], axis=1),
        helper.make_node("Mul", ["cat", "scale"], ["s"]),
        helper.make_node("GlobalAveragePool", ["s"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1),
    ]
    weights = [
        _weight(rng, "w1", 4, 3, 3, 3),
        _weight(rng, "b1", 4),
        _weight(rng, "w2", 4, 4, 3, 3),
        _weight(rng, "scale", 8, 1, 1),
        _weight(rng, "wg", 5, 8),
        _weight(rng, "bg", 5),
    ]
    return _build(nodes, {"x": ["N", 3, 8, 8]}, ["y"], weights)


def heads() -> onnx.ModelProto:
    """Conv -> Pad -> Clip -> Div(constant over W) -> Softmax(C) feeding three outputs: the softmax
    itself (rank 4), ReduceMean over H, W without keepdims, ReduceSum over C with keepdims (opset 18:
    axes as inputs)."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Pad", ["c", "pads"], ["pd"], mode="reflect"),
        helper.make_node("Clip", ["pd", "lo", "hi"], ["cl"]),
        helper.make_node("Div", ["cl", "width_scale"], ["d"]),
        helper.make_node("Softmax", ["d"], ["sm"], axis=1),
        helper.make_node("ReduceMean", ["sm", "hw"], ["mean"], keepdims=0),
        helper.make_node("ReduceSum", ["sm", "ch"], ["total"], keepdims=1),
    ]
    weights = [
        _weight(rng, "w", 4, 3, 3, 3),
        _ints("pads", 0, 0, 1, 2, 0, 0, 2, 1),
        numpy_helper.from_array(np.array(-1.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(1.5, np.float32), "hi"),
        numpy_helper.from_array(rng.uniform(0.5, 2.0, 7).astype(np.float32), "width_scale"),
        _ints("hw", 2, 3),
        _ints("ch", 1),
    ]
    return _build(nodes, {"x": [1, 3, 6, 6]}, ["sm", "mean", "total"], weights, opset=18)


def test_small_cnn_keeps_only_the_input_transpose() -> None:
    original = small_cnn()
    converted, model, modified = _convert(original)
    assert modified
    assert _nhwc_ops(model) == ["AveragePool", "Conv", "Conv", "GlobalAveragePool", "MaxPool"]
    assert _count(model, "Conv") == _count(model, "MaxPool") == 0
    (transpose,) = [node for node in model.graph if node.op_type == "Transpose"]
    assert transpose.inputs[0] is model.graph.inputs[0]
    assert tuple(transpose.attributes["perm"].as_ints()) == TO_NHWC
    # Flatten reads the pooled NHWC [N, 1, 1, 8] directly; Concat joins along NHWC's channel axis.
    (flatten,) = [node for node in model.graph if node.op_type == "Flatten"]
    assert flatten.inputs[0].producer().domain == NHWC_DOMAIN
    (concat,) = [node for node in model.graph if node.op_type == "Concat"]
    assert concat.attributes["axis"].as_int() == 3
    assert [(v.name, v.shape) for v in model.graph.inputs] == [("x", ir.Shape([ir.SymbolicDim("N"), 3, 8, 8]))]

    x = _input(2, 3, 8, 8)
    _assert_close(_ort(converted, {"x": x}), _ort(original, {"x": x}), LAYOUT_RTOL, LAYOUT_ATOL)
    reference = ReferenceEvaluator(converted).run(None, {"x": x})
    _assert_close(reference, ReferenceEvaluator(original).run(None, {"x": x}), LAYOUT_RTOL, LAYOUT_ATOL)


def test_nhwc_functions_wrap_the_original_op() -> None:
    _, model, _ = _convert(small_cnn())
    assert model.opset_imports[NHWC_DOMAIN] == 1
    assert sorted(name for _, name, _ in model.functions) == [
        "AveragePool",
        "Conv",
        "GlobalAveragePool",
        "MaxPool",
    ]
    for function in model.functions.values():
        assert function.domain == NHWC_DOMAIN
        ops = [node.op_type for node in function]
        assert ops == ["Transpose", function.name, "Transpose"]
        first, op, last = list(function)
        assert tuple(first.attributes["perm"].as_ints()) == TO_NCHW
        assert tuple(last.attributes["perm"].as_ints()) == TO_NHWC
        assert all(attr.is_ref() for attr in op.attributes.values())
    # Call sites keep their attributes and pad left-out optional inputs (Conv's bias) to the arity.
    convs = [node for node in model.graph if node.domain == NHWC_DOMAIN and node.op_type == "Conv"]
    assert [len(node.inputs) for node in convs] == [3, 3]
    assert convs[1].inputs[2] is None
    assert all(node.attributes["pads"].as_ints() == (1, 1, 1, 1) for node in convs)


def test_pushes_through_pad_clip_constants_softmax_and_reduce() -> None:
    original = heads()
    converted, model, _ = _convert(original)
    assert _nhwc_ops(model) == ["Conv"]
    transposes = [node for node in model.graph if node.op_type == "Transpose"]
    # One at the input, one before each rank-4 output; ReduceMean over NHWC's H, W is [N, C] already.
    assert len(transposes) == 3
    assert {node.outputs[0].name for node in transposes} == {"x_nhwc", "sm", "total"}
    assert model.graph.outputs[1].producer().op_type == "ReduceMean"

    x = _input(1, 3, 6, 6)
    _assert_close(_ort(converted, {"x": x}), _ort(original, {"x": x}), LAYOUT_RTOL, LAYOUT_ATOL)


def test_nhwc_io_makes_rank4_interface_channels_last() -> None:
    original = heads()
    converted, model, _ = _convert(original, nhwc_io=True)
    assert _count(model, "Transpose") == 0
    shapes = {value.name: tuple(value.shape) for value in [*model.graph.inputs, *model.graph.outputs]}
    assert shapes == {"x": (1, 6, 6, 3), "sm": (1, 7, 7, 4), "mean": (1, 4), "total": (1, 7, 7, 1)}

    x = _input(1, 3, 6, 6)
    sm, mean, total = _ort(converted, {"x": x.transpose(TO_NHWC)})
    want_sm, want_mean, want_total = _ort(original, {"x": x})
    _assert_close(
        [sm.transpose(TO_NCHW), mean, total.transpose(TO_NCHW)],
        [want_sm, want_mean, want_total],
        LAYOUT_RTOL,
        LAYOUT_ATOL,
    )


def test_nhwc_io_on_small_cnn_needs_no_transpose() -> None:
    original = small_cnn()
    converted, model, _ = _convert(original, nhwc_io=True)
    assert _count(model, "Transpose") == 0
    x = _input(2, 3, 8, 8)
    _assert_close(_ort(converted, {"x": x.transpose(TO_NHWC)}), _ort(original, {"x": x}), LAYOUT_RTOL, LAYOUT_ATOL)


def test_stops_at_ops_it_cannot_pass() -> None:
    """Add with an NCHW input nothing else transposes, and Flatten of a real [N, C, H, W], keep
    their transposes (moving one onto the other operand would not remove any)."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c1", "skip"], ["a"]),
        helper.make_node("Conv", ["a", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c2"], ["y"]),
    ]
    weights = [_weight(rng, "w1", 3, 3, 3, 3), _weight(rng, "w2", 2, 3, 3, 3)]
    original = _build(nodes, {"x": [1, 3, 5, 5], "skip": [1, 3, 5, 5]}, ["y"], weights)
    converted, model, _ = _convert(original)
    perms = sorted(tuple(node.attributes["perm"].as_ints()) for node in model.graph if node.op_type == "Transpose")
    assert perms == [TO_NHWC, TO_NHWC, TO_NCHW, TO_NCHW]
    (flatten,) = [node for node in model.graph if node.op_type == "Flatten"]
    assert flatten.inputs[0].producer().op_type == "Transpose"

    feeds = {"x": _input(1, 3, 5, 5), "skip": _input(1, 3, 5, 5) * 2}
    _assert_close(_ort(converted, feeds), _ort(original, feeds), LAYOUT_RTOL, LAYOUT_ATOL)


def test_residual_from_graph_input_reuses_its_edge_transpose() -> None:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "x"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    original = _build(nodes, {"x": [1, 3, 5, 5]}, ["y"], [_weight(rng, "w", 3, 3, 3, 3)])
    converted, model, _ = _convert(original)
    transposes = [node for node in model.graph if node.op_type == "Transpose"]
    assert [tuple(node.attributes["perm"].as_ints()) for node in transposes] == [TO_NHWC, TO_NCHW]
    (add,) = [node for node in model.graph if node.op_type == "Add"]
    assert add.inputs[1] is transposes[0].outputs[0]

    x = _input(1, 3, 5, 5)
    _assert_close(_ort(converted, {"x": x}), _ort(original, {"x": x}), LAYOUT_RTOL, LAYOUT_ATOL)


def test_batchnorm_converted_and_maxpool_indices_left_alone() -> None:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("BatchNormalization", ["x", "gamma", "beta", "mean", "var"], ["bn"]),
        helper.make_node("MaxPool", ["bn"], ["m", "idx"], kernel_shape=[2, 2]),
        helper.make_node("Cast", ["idx"], ["idx_f"], to=TensorProto.FLOAT),
    ]
    weights = [
        _weight(rng, "gamma", 3),
        _weight(rng, "beta", 3),
        _weight(rng, "mean", 3),
        numpy_helper.from_array(rng.uniform(0.5, 2.0, 3).astype(np.float32), "var"),
    ]
    original = _build(nodes, {"x": [1, 3, 4, 4]}, ["m", "idx_f"], weights)
    converted, model, _ = _convert(original)
    assert _nhwc_ops(model) == ["BatchNormalization"]
    assert _count(model, "MaxPool") == 1
    assert _count(model, "Transpose") == 2

    x = _input(1, 3, 4, 4)
    _assert_close(_ort(converted, {"x": x}), _ort(original, {"x": x}), LAYOUT_RTOL, LAYOUT_ATOL)


@pytest.mark.parametrize(
    "nodes",
    [
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_node("Conv", ["x", "w"], ["y"])],  # Conv1d: rank 3 is not converted
    ],
    ids=["no-conv", "conv1d"],
)
def test_graph_without_rank4_layout_ops_is_unchanged(nodes: list[onnx.NodeProto]) -> None:
    original = _build(nodes, {"x": [1, 3, 8]}, ["y"], [_weight(np.random.default_rng(0), "w", 2, 3, 3)])
    converted, _, modified = _convert(original, nhwc_io=True)
    assert not modified
    assert converted.graph == ir.serde.serialize_model(ir.serde.deserialize_model(original)).graph
    assert not converted.functions


def test_second_run_is_a_no_op() -> None:
    model = ir.serde.deserialize_model(small_cnn())
    assert ConvertToNHWCPass()(model).modified
    before = ir.serde.serialize_model(model)
    assert not ConvertToNHWCPass()(model).modified
    assert ir.serde.serialize_model(model) == before
