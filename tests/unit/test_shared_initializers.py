"""Tests that candidate builds and their ONNX Runtime sessions share the float weights instead of copying them.

A budget search builds and runs dozens of variants of one model that differ in a few nodes; each
used to serialize every weight (MiniLM: 90 MB) into a proto, a string and ORT's parser. Now a build
is a clone that shares the tensors it leaves alone, and a session gets the large ones as OrtValues
over the same memory. These tests pin both, and that nothing writes into the shared tensors.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from edgec.backends.onnxruntime.session import SHARED_MIN_BYTES, cpu_session, ir_session, lean_proto
from edgec.quant.quantizer import Quantizer
from edgec.target import load_target, override_target

WIDTH = 96  # 96 x 96 float32 = 36 KiB: above SHARED_MIN_BYTES
TOKENS = 8


def _model() -> ir.Model:
    """x @ W1 -> Relu -> @ W2 + B: two large weights, one small bias."""
    rng = np.random.default_rng(0)
    inits = {"W1": (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32),
             "W2": (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32),
             "B": rng.standard_normal(WIDTH).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "W2"], ["m"], name="mm2"),
             helper.make_node("Add", ["m", "B"], ["y"], name="add")]
    spec = [TOKENS, WIDTH]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, spec)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, spec)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _feeds(count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((TOKENS, WIDTH)).astype(np.float32)} for _ in range(count)]


def test_large_initializers_reach_the_session_as_shared_memory_not_serialized_bytes() -> None:
    model = _model()
    tensors = {name: value.const_value for name, value in model.graph.initializers.items()}
    proto, shared = lean_proto(model)
    by_name = {tensor.name: tensor for tensor in proto.graph.initializer}
    assert WIDTH * WIDTH * 4 >= SHARED_MIN_BYTES and sorted(shared) == ["W1", "W2"]
    for name in ("W1", "W2"):
        assert by_name[name].data_location == TensorProto.EXTERNAL and not by_name[name].raw_data
    assert by_name["B"].data_location == TensorProto.DEFAULT  # small: serialized as before
    assert proto.ByteSize() < WIDTH * WIDTH * 4  # neither large weight is in the proto
    assert all(model.graph.initializers[name].const_value is tensor for name, tensor in tensors.items())
    feeds = _feeds(2)[0]
    full = cpu_session(ir.serde.serialize_model(model), 1).run(None, feeds)
    lean = ir_session(model, 1).run(None, feeds)
    np.testing.assert_array_equal(lean[0], full[0])


def test_a_session_can_expose_intermediate_tensors_next_to_shared_weights() -> None:
    model = _model()
    session = ir_session(model, 1, outputs=[helper.make_tensor_value_info("h", TensorProto.FLOAT, None)])
    feeds = _feeds(1)[0]
    y, h = session.run(["y", "h"], feeds)
    weights = {name: value.const_value.numpy() for name, value in model.graph.initializers.items()}
    np.testing.assert_allclose(h, feeds["x"] @ weights["W1"], rtol=1e-5, atol=1e-5)
    expected = np.maximum(h, 0) @ weights["W2"] + weights["B"]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_builds_share_the_weights_they_leave_float_and_never_write_into_them() -> None:
    target = override_target(load_target("cpu-x86-int8"), {"quant": {"ops": ["MatMul", "Add"]}})
    quantizer = Quantizer(_model(), target.quant, _feeds(8), source="data", dynamic_alternatives=True)
    prepared = {name: value.const_value for name, value in quantizer.model.graph.initializers.items()}
    before = {name: tensor.numpy().copy() for name, tensor in prepared.items()}
    variants = [{}, {"keep_float": ["mm2", "add"]}, {"dynamic": ["mm1", "mm2"]},
                {"dynamic": ["mm1"], "per_token": ["mm1"], "keep_float": ["add"]}]
    for variant in variants:
        model, _ = quantizer.build(**variant)
        onnx.checker.check_model(ir.serde.serialize_model(model))
    kept = quantizer.build(keep_float=["mm2", "add"])[0].graph.initializers
    assert kept["W2"].const_value is prepared["W2"]  # left float: the same tensor, no copy
    for name, tensor in prepared.items():
        assert quantizer.model.graph.initializers[name].const_value is tensor
        np.testing.assert_array_equal(tensor.numpy(), before[name])


def test_evaluation_sessions_let_idle_threads_sleep() -> None:
    """Search sessions compute and are never timed: spinning threads would only take CPU from the search."""
    session = ir_session(_model(), 2)
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
