"""Tests for edgec.quant.dynamic: MatMul/Gemm rewritten into DynamicQuantizeLinear + MatMulInteger.

One float model holds every case (MatMul on a 3-D activation, Gemm transB=0 and transB=1 with
bias, and a MatMul of two activations that must stay float); after the rewrite it must pass the
checker, keep its output names, stay close to float under ONNX Runtime, and be fused by ORT's
optimizer into its com.microsoft kernels.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.errors import TargetError
from edgec.quant.dynamic import TOKEN_BLOCK, is_dynamic_candidate, quantize_dynamic
from edgec.target import TensorQuant

#: Cosine between dynamic-int8 and fp32 outputs with 7-bit weights on He-init weights (~0.9999 here).
MIN_COSINE = 0.999
OPSET = 21
B, S, K, H, N = 2, 5, 32, 48, 16

S8_7BIT = TensorQuant("int8", symmetric=True, granularity="per_channel", reduce_range=True)
S8_7BIT_PER_TENSOR = TensorQuant("int8", symmetric=True, granularity="per_tensor", reduce_range=True)
U8_ASYM = TensorQuant("uint8", symmetric=False, granularity="per_channel")
_FUSED_OPS = {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def float_model() -> onnx.ModelProto:
    """x [B,S,K] -MatMul W1-> h; h[0] -Gemm W2-> g; g -Gemm W3^T-> y; y -MatMul y^T-> gram (not constant)."""
    rng = np.random.default_rng(0)
    inits = {
        "W1": _he(rng, (K, H), K),
        "W2": _he(rng, (H, H), H), "C2": (rng.standard_normal(H) * 0.1).astype(np.float32),
        "W3": _he(rng, (N, H), H), "C3": (rng.standard_normal(N) * 0.1).astype(np.float32),
        "first": np.array([0], np.int64),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm"),
        helper.make_node("Relu", ["h"], ["h_relu"], name="relu"),
        helper.make_node("Gather", ["h_relu", "first"], ["h0_3d"], name="take_first", axis=0),
        helper.make_node("Squeeze", ["h0_3d", "first"], ["h0"], name="squeeze"),
        helper.make_node("Gemm", ["h0", "W2", "C2"], ["g"], name="gemm"),
        helper.make_node("Gemm", ["g", "W3", "C3"], ["y"], name="gemm_t", transB=1),
        helper.make_node("Transpose", ["y"], ["y_t"], name="transpose"),
        helper.make_node("MatMul", ["y", "y_t"], ["gram"], name="mm_activations"),
    ]
    graph = helper.make_graph(
        nodes, "dynamic", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, K])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, [B, S, H]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [S, N]),
         helper.make_tensor_value_info("gram", TensorProto.FLOAT, [S, S])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _ir_model() -> ir.Model:
    """The float model with inferred value types: candidates need a known float activation."""
    return ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(float_model()))


def _rewritten(weights: TensorQuant) -> tuple[onnx.ModelProto, dict[str, object]]:
    model = _ir_model()
    nodes = [node for node in model.graph if node.op_type in ("MatMul", "Gemm")]
    stats = quantize_dynamic(model, nodes, weights)
    proto = ir.serde.serialize_model(model)
    onnx.checker.check_model(proto, full_check=True)
    return proto, stats


def _session(model: onnx.ModelProto, optimized: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    session = _session(model)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


@pytest.fixture(scope="module")
def rewritten() -> tuple[onnx.ModelProto, dict[str, object]]:
    return _rewritten(S8_7BIT)


def test_counts_and_graph_structure(rewritten):
    model, stats = rewritten
    assert stats == {"dynamic_nodes": {"MatMul": 1, "Gemm": 2}, "skipped": 1}
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["DynamicQuantizeLinear"] == ops["MatMulInteger"] == ops["Cast"] == 3
    assert ops["Gemm"] == 0 and ops["MatMul"] == 1
    assert ops["Add"] == 2  # the two Gemm biases


def test_output_names_and_consumers_kept(rewritten):
    model, _ = rewritten
    assert [o.name for o in model.graph.output] == ["h", "y", "gram"]
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    assert producers["h"] == "Mul" and producers["g"] == producers["y"] == "Add"
    relu = next(node for node in model.graph.node if node.name == "relu")
    assert list(relu.input) == ["h"]


def test_non_qualifying_matmul_untouched(rewritten):
    model, _ = rewritten
    node = next(node for node in model.graph.node if node.name == "mm_activations")
    assert node.op_type == "MatMul" and list(node.input) == ["y", "y_t"] and list(node.output) == ["gram"]


def test_close_to_float_under_onnxruntime(rewritten):
    model, _ = rewritten
    x = np.random.default_rng(1).standard_normal((B, S, K)).astype(np.float32)
    expected, actual = _run(float_model(), x), _run(model, x)
    for name in ("h", "y", "gram"):
        assert _cosine(actual[name], expected[name]) > MIN_COSINE, name


def test_onnxruntime_fuses_the_pattern(rewritten, tmp_path):
    model, _ = rewritten
    optimized = tmp_path / "optimized.onnx"
    _session(model, optimized)
    ops = Counter(node.op_type for node in onnx.load(optimized).graph.node)
    assert sum(ops[op] for op in _FUSED_OPS) == 3
    assert ops["MatMulInteger"] == ops["DynamicQuantizeLinear"] == 0


def test_transposed_gemm_weight_is_stored_k_by_n(rewritten):
    model, _ = rewritten
    q = _initializer(model, "y_w_quantized").astype(np.float32)
    scale = _initializer(model, "y_w_scale")
    w3 = _initializer(float_model(), "W3")
    assert q.shape == (H, N)
    np.testing.assert_allclose(q * scale, w3.T, atol=float(scale.max()) / 2 + 1e-7)
    assert np.abs(q).max() <= 63  # reduce_range


@pytest.mark.parametrize(("weights", "scale_shape"), [(S8_7BIT, (H,)), (S8_7BIT_PER_TENSOR, ())])
def test_scale_shape_follows_granularity(weights, scale_shape):
    model, _ = _rewritten(weights)
    assert _initializer(model, "g_w_scale").shape == scale_shape
    assert _initializer(model, "g_w_zero_point").shape == scale_shape


def test_uint8_asymmetric_weights():
    model, _ = _rewritten(U8_ASYM)
    assert _initializer(model, "h_w_quantized").dtype == np.uint8
    assert _initializer(model, "h_w_zero_point").dtype == np.uint8
    x = np.random.default_rng(2).standard_normal((B, S, K)).astype(np.float32)
    assert _cosine(_run(model, x)["y"], _run(float_model(), x)["y"]) > MIN_COSINE


def test_candidates():
    model = _ir_model()
    by_name = {node.name: node for node in model.graph}
    assert [name for name, node in by_name.items() if is_dynamic_candidate(node)] == ["mm", "gemm", "gemm_t"]
    by_name["gemm"].attributes["alpha"] = ir.AttrFloat32("alpha", 0.5)
    by_name["gemm_t"].attributes["transA"] = ir.AttrInt64("transA", 1)
    assert not is_dynamic_candidate(by_name["gemm"]) and not is_dynamic_candidate(by_name["gemm_t"])


def test_old_opset_rejected():
    model = _ir_model()
    model.opset_imports[""] = 10
    with pytest.raises(TargetError, match="opset"):
        quantize_dynamic(model, [next(iter(model.graph))], S8_7BIT)


S8_FULL = TensorQuant("int8", symmetric=True, granularity="per_channel")


def _rows_of_every_magnitude(seed: int) -> np.ndarray:
    """Tokens (rows) whose magnitudes span 1e-3..1e2: one per-call scale leaves the quiet rows a step or two."""
    x = np.random.default_rng(seed).standard_normal((B, S, K)).astype(np.float32)
    return (x * np.logspace(-3, 2, S, dtype=np.float32)[None, :, None]).astype(np.float32)


def _rowwise_cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    return min(_cosine(a[i, j], b[i, j]) for i in range(a.shape[0]) for j in range(a.shape[1]))


@pytest.mark.parametrize("weights", [S8_FULL, U8_ASYM])
def test_per_token_keeps_every_row_accurate_where_one_scale_per_call_cannot(weights):
    """Rows of 1e-3 next to rows of 1e2: per token, each row keeps its own 8-bit grid (zero point folded out)."""
    per_call, per_token = _ir_model(), _ir_model()
    quantize_dynamic(per_call, [n for n in per_call.graph if n.name == "mm"], weights)
    stats = quantize_dynamic(per_token, [n for n in per_token.graph if n.name == "mm"], weights, per_token={"mm"})
    assert stats == {"dynamic_nodes": {"MatMul": 1}, "skipped": 0, "per_token": 1}
    proto = ir.serde.serialize_model(per_token)
    onnx.checker.check_model(proto, full_check=True)
    ops = Counter(node.op_type for node in proto.graph.node)
    assert ops["MatMulInteger"] == 1 and ops["DynamicQuantizeLinear"] == 0 and ops["MatMul"] == 1  # mm_activations
    x = _rows_of_every_magnitude(3)
    expected = _run(float_model(), x)["h"]
    assert _rowwise_cosine_min(_run(proto, x)["h"], expected) > 0.999
    with np.errstate(invalid="ignore"):  # quiet rows come back all zero (cosine NaN) or far off
        assert not _rowwise_cosine_min(_run(ir.serde.serialize_model(per_call), x)["h"], expected) > 0.9


def test_per_token_nodes_share_one_set_of_constants():
    """Two nodes reading one activation build identical row quantizations, which ORT's CSE merges."""
    model = _ir_model()
    nodes = [n for n in model.graph if n.name in ("gemm", "gemm_t")]
    quantize_dynamic(model, nodes, S8_FULL, per_token={"gemm", "gemm_t"})
    names = [name for name in model.graph.initializers if name.startswith("per_token_")]
    axes = ["per_token_axes"] if OPSET >= 18 else []  # ReduceMin/Max take axes as an input from opset 18
    assert sorted(names) == [*axes, "per_token_levels", "per_token_min_scale", "per_token_zero"]


def test_fused_per_token_nodes_become_matmulnbits_with_8_bit_blocks_and_int8_compute():
    """ONNX Runtime's fused per-token form: every row of 1e-3..1e2 keeps its accuracy, as with the portable form.

    The Gemms read K = H = 48, not a whole number of TOKEN_BLOCK blocks: the last block is zero-padded.
    """
    model = _ir_model()
    names = {"mm", "gemm", "gemm_t"}
    stats = quantize_dynamic(model, [n for n in model.graph if n.name in names], S8_7BIT, per_token=names,
                             fused_tokens=True)
    assert stats == {"dynamic_nodes": {"MatMul": 1, "Gemm": 2}, "skipped": 0, "per_token": 3}
    proto = ir.serde.serialize_model(model)
    onnx.checker.check_model(proto)
    fused = {node.name: node for node in proto.graph.node if node.op_type == "MatMulNBits"}
    assert len(fused) == 3 and all(node.domain == "com.microsoft" for node in fused.values())
    for node, (k, n) in zip(fused.values(), ((K, H), (H, H), (H, N))):
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert attributes == {"K": k, "N": n, "bits": 8, "block_size": TOKEN_BLOCK, "accuracy_level": 4}
        blocks = -(-k // TOKEN_BLOCK)
        weight = _initializer(proto, node.input[1])
        assert weight.shape == (n, blocks, TOKEN_BLOCK) and weight.dtype == np.uint8
        assert 1 <= weight.min() and weight.max() <= 255  # symmetric: q + 128 with q in [-127, 127]
        assert _initializer(proto, node.input[2]).shape == (n * blocks,)
    ops = Counter(node.op_type for node in proto.graph.node)
    assert ops["Add"] == 2 and ops["MatMul"] == 1 and ops["MatMulInteger"] == 0  # biases; mm_activations stays
    x = _rows_of_every_magnitude(3)
    expected, got = _run(float_model(), x), _run(proto, x)
    assert _rowwise_cosine_min(got["h"], expected["h"]) > 0.999
    assert _cosine(got["y"], expected["y"]) > MIN_COSINE and _cosine(got["gram"], expected["gram"]) > MIN_COSINE
