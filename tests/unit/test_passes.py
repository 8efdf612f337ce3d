"""Tests for edgec.passes: each registered pass on a tiny graph, the pipeline registry and the manager.

Numerics are compared with `onnx.reference.ReferenceEvaluator` running the ORIGINAL model.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx_ir.passes import InPlacePass, PassResult

from edgec.errors import EdgecError, TargetError, VerificationError
from edgec.passes.cleanup import FoldConstantsPass, InferShapesPass, RemoveUnusedPass
from edgec.passes.fold import FoldBatchNormPass
from edgec.passes.manager import PassRecord, StatsInstrument, count_nodes, run_passes
from edgec.passes.pipeline import PASSES, build_pipeline, optimize
from edgec.target import DEFAULT_PASSES

#: fp32 tolerance for a rewrite that reassociates arithmetic (BN folded into weights).
FOLD_RTOL = 1e-4
FOLD_ATOL = 1e-5


def _ir(text: str) -> ir.Model:
    proto = onnx.parser.parse_model(text)
    onnx.checker.check_model(proto)
    return ir.serde.deserialize_model(proto)


def _proto(model: ir.Model) -> onnx.ModelProto:
    return ir.serde.serialize_model(model)


def _ops(model: ir.Model) -> list[str]:
    return [node.op_type for node in model.graph]


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, feeds)


CONSTANT_CHAIN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 3] x) => (float[2, 3] y) {
    c1 = Constant <value = float[3] {1.0, 2.0, 3.0}> ()
    c2 = Constant <value = float[3] {10.0, 20.0, 30.0}> ()
    s = Add(c1, c2)
    m = Mul(s, c1)
    y = Add(x, m)
}
"""


# --------------------------------------------------------------------------------------------
# cleanup passes
# --------------------------------------------------------------------------------------------


def test_fold_constants_collapses_constant_chain() -> None:
    original = onnx.parser.parse_model(CONSTANT_CHAIN)
    model = _ir(CONSTANT_CHAIN)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    result = FoldConstantsPass()(model)
    assert result.modified
    RemoveUnusedPass()(result.model)
    assert _ops(result.model) == ["Add"]
    (folded,) = [v for v in result.model.graph.node(0).inputs if v.name != "x"]
    # (c1 + c2) * c1 computed by hand
    np.testing.assert_array_equal(folded.const_value.numpy(), np.array([11.0, 44.0, 99.0], np.float32))
    onnx.checker.check_model(_proto(result.model))
    np.testing.assert_array_equal(_run(_proto(result.model), {"x": x})[0], _run(original, {"x": x})[0])


def test_fold_constants_leaves_non_constant_graph_alone() -> None:
    model = _ir("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y) { r = Relu(x)  y = Neg(r) }
    """)
    result = FoldConstantsPass()(model)
    assert not result.modified
    assert _ops(result.model) == ["Relu", "Neg"]


def test_remove_unused_drops_dead_nodes_and_initializers() -> None:
    model = _ir("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x, float[2] unused_input) => (float[2] y) <float[2] dead_w = {1.0, 2.0}, float[2] w = {3.0, 4.0}> {
            dead1 = Mul(x, dead_w)
            dead2 = Relu(dead1)
            y = Add(x, w)
        }
    """)
    result = RemoveUnusedPass()(model)
    assert result.modified
    assert _ops(result.model) == ["Add"]
    assert set(result.model.graph.initializers) == {"w"}
    assert [v.name for v in result.model.graph.inputs] == ["x", "unused_input"]  # inputs stay
    assert RemoveUnusedPass()(result.model).modified is False


def test_remove_unused_keeps_everything_used() -> None:
    model = _ir(CONSTANT_CHAIN)
    assert RemoveUnusedPass()(model).modified is False
    assert len(model.graph) == 5


def test_infer_shapes_fills_value_shapes() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1]),
            helper.make_node("Flatten", ["t"], ["f"], axis=1),
            helper.make_node("Relu", ["f"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],  # output shape unknown
    )
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    values = {v.name: v for node in model.graph for v in node.outputs}
    assert values["t"].shape is None and values["f"].shape is None and values["y"].shape is None
    result = InferShapesPass()(model)
    assert result.modified
    values = {v.name: v for node in result.model.graph for v in node.outputs}
    assert list(values["t"].shape) == [4, 2, 3]
    assert list(values["f"].shape) == [4, 6]
    assert values["f"].dtype == ir.DataType.FLOAT
    assert list(result.model.graph.outputs[0].shape) == [4, 6]


def test_infer_shapes_tolerates_unknown_custom_op() -> None:
    model = _ir("""
        <ir_version: 8, opset_import: ["" : 17, "custom.domain" : 1]>
        g (float[2, 3] x) => (float y) {
            r = Relu(x)
            y = custom.domain.Mystery(r)
        }
    """)
    result = InferShapesPass()(model)
    values = {v.name: v for node in result.model.graph for v in node.outputs}
    assert list(values["r"].shape) == [2, 3]


# --------------------------------------------------------------------------------------------
# a Conv + BatchNormalization model for the pipeline tests (the folds: test_passes_fold.py)
# --------------------------------------------------------------------------------------------


def _bn_params(rng: np.random.Generator, channels: int, prefix: str) -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(rng.uniform(0.5, 2.0, channels).astype(np.float32), f"{prefix}_gamma"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), f"{prefix}_beta"),
        numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), f"{prefix}_mean"),
        numpy_helper.from_array(rng.uniform(0.1, 3.0, channels).astype(np.float32), f"{prefix}_var"),
    ]


def _bn(inp: str, out: str, prefix: str) -> onnx.NodeProto:
    return helper.make_node("BatchNormalization", [inp, f"{prefix}_gamma", f"{prefix}_beta", f"{prefix}_mean",
                                                   f"{prefix}_var"], [out], epsilon=1e-3)


def _conv_bn_model(with_bias: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3, "W")]
    conv_inputs = ["x", "W"]
    if with_bias:
        weights.append(numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "B"))
        conv_inputs.append("B")
    graph = helper.make_graph(
        [helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1]), _bn("c", "y", "bn")],
        "conv_bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 6, 6])],
        weights + _bn_params(rng, 4, "bn"),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------------------------
# manager and pipeline
# --------------------------------------------------------------------------------------------


def test_stats_instrument_records_node_counts() -> None:
    model = _ir(CONSTANT_CHAIN)
    optimized, records = optimize(model, ["infer_shapes", "fold_constants", "remove_unused"])
    assert [r.name for r in records] == ["infer_shapes", "fold_constants", "remove_unused"]
    assert all(isinstance(r, PassRecord) for r in records)
    assert records[0].nodes_before == 5 and records[0].nodes_after == 5  # shapes only, no node change
    assert records[1].nodes_before == 5
    assert records[2].nodes_after == 1 and records[2].modified is True
    for before, after in zip(records, records[1:]):
        assert after.nodes_before == before.nodes_after
    assert all(r.seconds >= 0 for r in records)
    assert set(records[0].to_dict()) == {"name", "nodes_before", "nodes_after", "modified", "seconds"}
    assert count_nodes(optimized) == 1


def test_stats_instrument_directly() -> None:
    stats = StatsInstrument()
    model = run_passes(_ir(CONSTANT_CHAIN), [("fold", FoldConstantsPass()), ("clean", RemoveUnusedPass()),
                                             ("clean_again", RemoveUnusedPass())], [stats])
    fold, clean, again = stats.records
    assert (fold.name, fold.nodes_before, fold.modified) == ("fold", 5, True)
    assert 1 <= fold.nodes_after < 5  # folded nodes gone; dead Constants may wait for the cleanup
    assert (clean.name, clean.nodes_before, clean.nodes_after) == ("clean", fold.nodes_after, 1)
    assert clean.modified == (fold.nodes_after > 1)
    assert (again.name, again.nodes_before, again.nodes_after, again.modified) == ("clean_again", 1, 1, False)
    assert count_nodes(model) == 1


def test_count_nodes_includes_subgraphs() -> None:
    model = _ir("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (bool c, float[2] x) => (float[2] y) {
            y = If (c) <then_branch = t () => (float[2] a) { a = Relu(x) },
                        else_branch = e () => (float[2] b) { n = Neg(x)  b = Relu(n) }>
        }
    """)
    assert count_nodes(model) == 4


def test_unknown_pass_lists_known_ones() -> None:
    with pytest.raises(TargetError) as info:
        build_pipeline(["fold_constants", "make_it_fast"])
    message = str(info.value)
    assert "make_it_fast" in message
    for name in PASSES:
        assert name in message
    with pytest.raises(TargetError):
        optimize(_ir(CONSTANT_CHAIN), ["nope"])


def test_build_pipeline_instantiates_in_order() -> None:
    names = list(PASSES)
    pipeline = build_pipeline(names)
    assert [name for name, _ in pipeline] == names
    assert isinstance(pipeline[names.index("fold_batchnorm")][1], FoldBatchNormPass)


class _Boom(InPlacePass):
    def call(self, model: ir.Model) -> PassResult:
        raise ValueError("kaboom")


class _EdgecBoom(InPlacePass):
    def call(self, model: ir.Model) -> PassResult:
        raise TargetError("a user-facing problem")


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def before_pass(self, name: str, model: ir.Model) -> None:
        self.events.append(("before", name))

    def after_pass(self, name: str, result: PassResult) -> None:
        self.events.append(("after", name))


def test_failing_pass_is_reported_by_name() -> None:
    recorder = _Recorder()
    with pytest.raises(VerificationError, match=r"pass 'exploder' failed: ValueError: kaboom") as info:
        run_passes(_ir(CONSTANT_CHAIN), [("remove_unused", RemoveUnusedPass()), ("exploder", _Boom())], [recorder])
    assert isinstance(info.value.__cause__, ValueError)
    assert recorder.events == [("before", "remove_unused"), ("after", "remove_unused"), ("before", "exploder")]


def test_edgec_errors_from_a_pass_propagate_unchanged() -> None:
    with pytest.raises(TargetError, match="a user-facing problem"):
        run_passes(_ir(CONSTANT_CHAIN), [("p", _EdgecBoom())])


def test_instrument_errors_propagate() -> None:
    class Verifier:
        def before_pass(self, name: str, model: ir.Model) -> None:
            pass

        def after_pass(self, name: str, result: PassResult) -> None:
            raise VerificationError(f"{name} changed the output")

    with pytest.raises(VerificationError, match="remove_unused changed the output"):
        run_passes(_ir(CONSTANT_CHAIN), [("remove_unused", RemoveUnusedPass())], [Verifier()])
    assert issubclass(VerificationError, EdgecError)


def test_optimize_full_pipeline_preserves_numerics() -> None:
    original = _conv_bn_model(with_bias=True)
    optimized, records = optimize(ir.serde.deserialize_model(original), list(DEFAULT_PASSES))
    assert _ops(optimized) == ["Conv"]
    assert [record.name for record in records] == list(DEFAULT_PASSES)
    proto = _proto(optimized)
    onnx.checker.check_model(proto)
    x = np.random.default_rng(6).standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_run(proto, {"x": x})[0], _run(original, {"x": x})[0], rtol=FOLD_RTOL, atol=FOLD_ATOL)
