"""Tests for edgec.passes.fold: each fold on a tiny model, and each reason a fold must not happen.

A fold must keep the graph's inputs and outputs, pass `onnx.checker`, and compute what the ORIGINAL
model computes under `onnx.reference.ReferenceEvaluator` (the oracle; ONNX Runtime only for the
grouped ConvTranspose the reference cannot run) on random inputs. A refused fold must leave the model
untouched (`modified` False, same ops).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx_ir.passes import PassBase

from edgec.passes.cleanup import RemoveUnusedPass
from edgec.passes.fold import FoldAffinePass, FoldBatchNormPass, FoldPadPass, MatMulAddToGemmPass

#: fp32 tolerance for a rewrite that reassociates arithmetic (scales folded into weights).
FOLD_RTOL = 1e-4
FOLD_ATOL = 1e-5

FLOAT = TensorProto.FLOAT


def _model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, Sequence[int]],
    outputs: dict[str, Sequence[int]],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    elem_type: int = FLOAT,
    types: dict[str, int] | None = None,
) -> onnx.ModelProto:
    """A checked model of `elem_type` inputs and outputs (`types` overrides some by name)."""
    types = types or {}
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info(name, types.get(name, elem_type), shape) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(name, types.get(name, elem_type), shape) for name, shape in outputs.items()],
        [numpy_helper.from_array(array, name) for name, array in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _random(*shape: int, seed: int = 0, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def _io_names(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    return [v.name for v in model.graph.input], [v.name for v in model.graph.output]


def _apply(original: onnx.ModelProto, fold: PassBase) -> tuple[bool, onnx.ModelProto]:
    model = ir.serde.deserialize_model(original)
    result = fold(model)
    RemoveUnusedPass()(result.model)
    return result.modified, ir.serde.serialize_model(result.model)


Feeds = dict[str, np.ndarray]


def _reference(model: onnx.ModelProto, feeds: Feeds) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, feeds)


def _onnxruntime(model: onnx.ModelProto, feeds: Feeds) -> list[np.ndarray]:
    """The oracle where onnx.reference is wrong: it cannot run a grouped ConvTranspose (onnx 1.23)."""
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _assert_folds(
    original: onnx.ModelProto,
    fold: PassBase,
    ops: list[str],
    oracle: Callable[[onnx.ModelProto, Feeds], list[np.ndarray]] = _reference,
) -> onnx.ModelProto:
    """`fold` turns `original` into `ops`, a valid model with the same IO and outputs on random inputs."""
    modified, folded = _apply(original, fold)
    assert modified
    assert _ops(folded) == ops
    onnx.checker.check_model(folded, full_check=True)
    assert _io_names(folded) == _io_names(original)
    rng = np.random.default_rng(42)
    feeds = {
        v.name: rng.standard_normal([d.dim_value for d in v.type.tensor_type.shape.dim]).astype(np.float32)
        for v in original.graph.input
    }
    for got, want in zip(oracle(folded, feeds), oracle(original, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=FOLD_RTOL, atol=FOLD_ATOL)
    return folded


def _assert_kept(original: onnx.ModelProto, fold: PassBase) -> None:
    modified, kept = _apply(original, fold)
    assert not modified
    assert _ops(kept) == _ops(original)


def _attribute(model: onnx.ModelProto, op_type: str, name: str) -> object:
    (node,) = [n for n in model.graph.node if n.op_type == op_type]
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}.get(name)


# --------------------------------------------------------------------------------------------
# BatchNormalization
# --------------------------------------------------------------------------------------------


def _bn_params(channels: int, seed: int = 1) -> dict[str, np.ndarray]:
    return {
        "gamma": _random(channels, seed=seed, low=0.5, high=2.0),
        "beta": _random(channels, seed=seed + 1),
        "mean": _random(channels, seed=seed + 2),
        "var": _random(channels, seed=seed + 3, low=0.1, high=3.0),
    }


def _bn(inp: str = "c", out: str = "y", **attributes: object) -> onnx.NodeProto:
    # training mode also outputs the updated running mean and var
    outputs = [out, "running_mean", "running_var"] if attributes.get("training_mode") else [out]
    return helper.make_node("BatchNormalization", [inp, "gamma", "beta", "mean", "var"], outputs, epsilon=1e-3,
                            **attributes)


def _conv_bn(with_bias: bool = True, **bn_attributes: object) -> onnx.ModelProto:
    conv_inputs = ["x", "W", "B"] if with_bias else ["x", "W"]
    initializers = {"W": _random(4, 3, 3, 3), "B": _random(4, seed=2)} if with_bias else {"W": _random(4, 3, 3, 3)}
    return _model([helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1]), _bn(**bn_attributes)],
                  {"x": [2, 3, 6, 6]}, {"y": [2, 4, 6, 6]}, initializers | _bn_params(4))


@pytest.mark.parametrize("with_bias", [True, False])
def test_fold_batchnorm_into_conv(with_bias: bool) -> None:
    folded = _assert_folds(_conv_bn(with_bias), FoldBatchNormPass(), ["Conv"])
    assert len(folded.graph.node[0].input) == 3


@pytest.mark.parametrize("group", [1, 2])
def test_fold_batchnorm_into_conv_transpose(group: int) -> None:
    # W: [C_in=4, C_out/group=3, 3, 3] -> 3*group output channels
    channels = 3 * group
    original = _model(
        [helper.make_node("ConvTranspose", ["x", "W", "B"], ["c"], group=group, strides=[2, 2]), _bn()],
        {"x": [1, 4, 5, 5]}, {"y": [1, channels, 11, 11]},
        {"W": _random(4, 3, 3, 3), "B": _random(channels, seed=2)} | _bn_params(channels),
    )
    _assert_folds(original, FoldBatchNormPass(), ["ConvTranspose"], _reference if group == 1 else _onnxruntime)


@pytest.mark.parametrize(("trans_b", "bias_shape"), [(0, [5]), (1, [5]), (0, [3, 5]), (1, [3, 1])])
def test_fold_batchnorm_into_gemm(trans_b: int, bias_shape: list[int]) -> None:
    original = _model(
        [helper.make_node("Gemm", ["x", "W", "B"], ["c"], transB=trans_b, alpha=0.7, beta=1.3), _bn()],
        {"x": [3, 8]}, {"y": [3, 5]},
        {"W": _random(*([5, 8] if trans_b else [8, 5])), "B": _random(*bias_shape, seed=2)} | _bn_params(5),
    )
    folded = _assert_folds(original, FoldBatchNormPass(), ["Gemm"])
    assert _attribute(folded, "Gemm", "beta") is None  # beta is inside the folded bias now


def test_fold_batchnorm_into_matmul_makes_a_gemm() -> None:
    original = _model([helper.make_node("MatMul", ["x", "W"], ["c"]), _bn()], {"x": [3, 8]}, {"y": [3, 5]},
                      {"W": _random(8, 5)} | _bn_params(5))
    _assert_folds(original, FoldBatchNormPass(), ["Gemm"])


def test_fold_batchnorm_rank3_matmul_is_kept() -> None:
    """[2, 3, 8] @ [8, 5]: BN's axis 1 is the 3 rows, not W's columns."""
    original = _model([helper.make_node("MatMul", ["x", "W"], ["c"]), _bn()], {"x": [2, 3, 8]}, {"y": [2, 3, 5]},
                      {"W": _random(8, 5)} | _bn_params(3))
    _assert_kept(original, FoldBatchNormPass())


def test_fold_batchnorm_matmul_of_unknown_rank_is_kept() -> None:
    """Without shape inference the Relu output's rank is unknown: it may not be 2."""
    original = _model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "W"], ["c"]), _bn()],
                      {"x": [3, 8]}, {"y": [3, 5]}, {"W": _random(8, 5)} | _bn_params(5))
    _assert_kept(original, FoldBatchNormPass())


def test_fold_batchnorm_training_mode_is_kept() -> None:
    """training_mode=1 normalizes with the batch's statistics; the stored ones must not be folded."""
    _assert_kept(_conv_bn(training_mode=1), FoldBatchNormPass())


def test_fold_batchnorm_training_mode_0_folds() -> None:
    _assert_folds(_conv_bn(training_mode=0), FoldBatchNormPass(), ["Conv"])


def test_fold_batchnorm_before_opset_7_is_kept() -> None:
    """BatchNormalization-6 trains unless is_test=1; edgec folds from opset 7 on only."""
    original = _model([helper.make_node("Conv", ["x", "W"], ["c"]), _bn(is_test=1)], {"x": [1, 3, 4, 4]},
                      {"y": [1, 4, 2, 2]}, {"W": _random(4, 3, 3, 3)} | _bn_params(4), opset=6)
    _assert_kept(original, FoldBatchNormPass())


def test_fold_batchnorm_non_constant_scale_is_kept() -> None:
    params = _bn_params(4)
    del params["gamma"]
    original = _model([helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), _bn()],
                      {"x": [2, 3, 6, 6], "gamma": [4]}, {"y": [2, 4, 6, 6]}, {"W": _random(4, 3, 3, 3)} | params)
    _assert_kept(original, FoldBatchNormPass())


def test_fold_batchnorm_overridable_initializer_is_kept() -> None:
    """An initializer that is also a graph input is a default the caller may replace: not a constant."""
    original = _conv_bn()
    original.graph.input.append(helper.make_tensor_value_info("mean", FLOAT, [4]))
    onnx.checker.check_model(original)
    _assert_kept(original, FoldBatchNormPass())


def test_fold_batchnorm_non_constant_weight_is_kept() -> None:
    original = _model([helper.make_node("Conv", ["x", "W"], ["c"]), _bn()],
                      {"x": [1, 3, 4, 4], "W": [4, 3, 3, 3]}, {"y": [1, 4, 2, 2]}, _bn_params(4))
    _assert_kept(original, FoldBatchNormPass())


def test_fold_batchnorm_conv_with_two_consumers_is_kept() -> None:
    original = _model(
        [helper.make_node("Conv", ["x", "W"], ["c"]), _bn(), helper.make_node("Relu", ["c"], ["r"])],
        {"x": [1, 3, 4, 4]}, {"y": [1, 4, 2, 2], "r": [1, 4, 2, 2]}, {"W": _random(4, 3, 3, 3)} | _bn_params(4),
    )
    _assert_kept(original, FoldBatchNormPass())


def test_fold_batchnorm_conv_output_that_is_a_graph_output_is_kept() -> None:
    original = _conv_bn()
    original.graph.output.append(helper.make_tensor_value_info("c", FLOAT, [2, 4, 6, 6]))
    onnx.checker.check_model(original)
    _assert_kept(original, FoldBatchNormPass())


def test_fold_batchnorm_shared_weight_is_copied_per_conv() -> None:
    """Two Convs share W, each followed by its own BN: each gets its own folded weight."""
    params = _bn_params(4) | {f"{k}2": v for k, v in _bn_params(4, seed=7).items()}
    original = _model(
        [
            helper.make_node("Conv", ["x", "W"], ["c"]),
            _bn("c", "y"),
            helper.make_node("Conv", ["x", "W"], ["c2"]),
            helper.make_node("BatchNormalization", ["c2", "gamma2", "beta2", "mean2", "var2"], ["y2"]),
        ],
        {"x": [1, 3, 4, 4]}, {"y": [1, 4, 2, 2], "y2": [1, 4, 2, 2]}, {"W": _random(4, 3, 3, 3)} | params,
    )
    folded = _assert_folds(original, FoldBatchNormPass(), ["Conv", "Conv"])
    assert {i.name for i in folded.graph.initializer} == {"y_weight", "y_bias", "y2_weight", "y2_bias"}


def test_fold_batchnorm_taken_initializer_name_is_kept() -> None:
    """The folded weight would be named y_weight; an existing initializer of that name blocks the fold."""
    original = _model(
        [helper.make_node("Conv", ["x", "W"], ["c"]), _bn(), helper.make_node("Add", ["x", "y_weight"], ["z"])],
        {"x": [1, 3, 4, 4]}, {"y": [1, 4, 2, 2], "z": [1, 3, 4, 4]},
        {"W": _random(4, 3, 3, 3), "y_weight": _random(1)} | _bn_params(4),
    )
    _assert_kept(original, FoldBatchNormPass())


# --------------------------------------------------------------------------------------------
# Mul / Div / Add / Sub by a per-channel constant
# --------------------------------------------------------------------------------------------


def _conv_then(op_type: str, k: np.ndarray, linear_first: bool = True, with_bias: bool = True,
               x_shape: Sequence[int] = (2, 3, 6, 6)) -> onnx.ModelProto:
    """Conv(x: x_shape, W: [4, 3, 3, 3], pads 1) followed by op(c, k) or op(k, c)."""
    conv_inputs = ["x", "W", "B"] if with_bias else ["x", "W"]
    initializers = {"W": _random(4, 3, 3, 3), "k": k} | ({"B": _random(4, seed=2)} if with_bias else {})
    out_shape = np.broadcast_shapes((x_shape[0], 4, *x_shape[2:]), k.shape)
    return _model(
        [
            helper.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1]),
            helper.make_node(op_type, ["c", "k"] if linear_first else ["k", "c"], ["y"]),
        ],
        {"x": list(x_shape)}, {"y": list(out_shape)}, initializers,
    )


@pytest.mark.parametrize(
    ("op_type", "linear_first", "shape"),
    [
        ("Mul", True, [4, 1, 1]),
        ("Mul", False, [1, 4, 1, 1]),
        ("Mul", True, []),
        ("Div", True, [4, 1, 1]),
        ("Div", True, [1]),
        ("Add", True, [4, 1, 1]),
        ("Add", False, []),
        ("Sub", True, [1, 4, 1, 1]),
        ("Sub", False, [4, 1, 1]),
    ],
)
def test_fold_affine_into_conv(op_type: str, linear_first: bool, shape: list[int]) -> None:
    k = _random(*shape, seed=3, low=0.5, high=2.0)
    _assert_folds(_conv_then(op_type, k, linear_first), FoldAffinePass(), ["Conv"])


def test_fold_affine_add_gives_a_biasless_conv_a_bias() -> None:
    folded = _assert_folds(_conv_then("Add", _random(4, 1, 1, seed=3), with_bias=False), FoldAffinePass(), ["Conv"])
    assert len(folded.graph.node[0].input) == 3


def test_fold_affine_chain_folds_into_one_conv() -> None:
    original = _model(
        [
            helper.make_node("Conv", ["x", "W", "B"], ["c"]),
            helper.make_node("Mul", ["c", "s"], ["m"]),
            helper.make_node("Sub", ["m", "t"], ["y"]),
        ],
        {"x": [1, 3, 5, 5]}, {"y": [1, 4, 3, 3]},
        {"W": _random(4, 3, 3, 3), "B": _random(4, seed=2), "s": _random(4, 1, 1, seed=3),
         "t": _random(4, 1, 1, seed=4)},
    )
    _assert_folds(original, FoldAffinePass(), ["Conv"])


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize(("op_type", "shape"), [("Mul", [5]), ("Div", [1, 5]), ("Add", [1, 5]), ("Sub", [])])
def test_fold_affine_into_gemm(trans_b: int, op_type: str, shape: list[int]) -> None:
    original = _model(
        [
            helper.make_node("Gemm", ["x", "W", "B"], ["g"], transB=trans_b, beta=0.5),
            helper.make_node(op_type, ["g", "k"], ["y"]),
        ],
        {"x": [3, 8]}, {"y": [3, 5]},
        {"W": _random(*([5, 8] if trans_b else [8, 5])), "B": _random(3, 5, seed=2),
         "k": _random(*shape, seed=3, low=0.5, high=2.0)},
    )
    _assert_folds(original, FoldAffinePass(), ["Gemm"])


def test_fold_affine_into_grouped_conv_transpose() -> None:
    original = _model(
        [helper.make_node("ConvTranspose", ["x", "W"], ["c"], group=2), helper.make_node("Mul", ["c", "k"], ["y"])],
        {"x": [1, 4, 3, 3]}, {"y": [1, 6, 5, 5]}, {"W": _random(4, 3, 3, 3), "k": _random(6, 1, 1, seed=3)},
    )
    _assert_folds(original, FoldAffinePass(), ["ConvTranspose"], _onnxruntime)


def test_fold_affine_per_spatial_mul_is_kept() -> None:
    _assert_kept(_conv_then("Mul", _random(1, 1, 6, 6, seed=3)), FoldAffinePass())


def test_fold_affine_vector_on_the_last_axis_is_kept() -> None:
    """A [C] vector broadcasts along the width, not the channels (here width == C == 4)."""
    _assert_kept(_conv_then("Mul", _random(4, seed=3), x_shape=(1, 3, 4, 4)), FoldAffinePass())


def test_fold_affine_per_batch_constant_is_kept() -> None:
    _assert_kept(_conv_then("Add", _random(2, 4, 1, 1, seed=3)), FoldAffinePass())


def test_fold_affine_rank_growing_constant_is_kept() -> None:
    _assert_kept(_conv_then("Add", _random(1, 1, 4, 1, 1, seed=3)), FoldAffinePass())


def test_fold_affine_div_by_zero_is_kept() -> None:
    _assert_kept(_conv_then("Div", np.array([1.0, 0.0, 2.0, 3.0], np.float32).reshape(4, 1, 1)), FoldAffinePass())


def test_fold_affine_constant_divided_by_conv_is_kept() -> None:
    """k / y is not affine in y."""
    _assert_kept(_conv_then("Div", _random(4, 1, 1, seed=3, low=1.0, high=2.0), linear_first=False), FoldAffinePass())


def test_fold_affine_non_constant_operand_is_kept() -> None:
    original = _model(
        [helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("Mul", ["c", "k"], ["y"])],
        {"x": [1, 3, 4, 4], "k": [4, 1, 1]}, {"y": [1, 4, 2, 2]}, {"W": _random(4, 3, 3, 3)},
    )
    _assert_kept(original, FoldAffinePass())


def test_fold_affine_conv_with_two_consumers_is_kept() -> None:
    original = _model(
        [
            helper.make_node("Conv", ["x", "W"], ["c"]),
            helper.make_node("Mul", ["c", "k"], ["y"]),
            helper.make_node("Relu", ["c"], ["r"]),
        ],
        {"x": [1, 3, 4, 4]}, {"y": [1, 4, 2, 2], "r": [1, 4, 2, 2]},
        {"W": _random(4, 3, 3, 3), "k": _random(4, 1, 1, seed=3)},
    )
    _assert_kept(original, FoldAffinePass())


def test_fold_affine_per_row_gemm_constant_is_kept() -> None:
    original = _model(
        [helper.make_node("Gemm", ["x", "W"], ["g"]), helper.make_node("Mul", ["g", "k"], ["y"])],
        {"x": [3, 8]}, {"y": [3, 5]}, {"W": _random(8, 5), "k": _random(3, 1, seed=3)},
    )
    _assert_kept(original, FoldAffinePass())


def test_fold_affine_integer_gemm_is_kept() -> None:
    original = _model(
        [helper.make_node("Gemm", ["x", "W"], ["g"]), helper.make_node("Mul", ["g", "k"], ["y"])],
        {"x": [3, 8]}, {"y": [3, 5]},
        {"W": np.ones((8, 5), np.int32), "k": np.full(5, 2, np.int32)}, elem_type=TensorProto.INT32,
    )
    _assert_kept(original, FoldAffinePass())


# --------------------------------------------------------------------------------------------
# MatMul + Add -> Gemm
# --------------------------------------------------------------------------------------------


def _matmul_add(bias: np.ndarray, x_shape: Sequence[int] = (3, 8), bias_first: bool = False,
                out_shape: Sequence[int] = (3, 5)) -> onnx.ModelProto:
    return _model(
        [helper.make_node("MatMul", ["x", "W"], ["m"]),
         helper.make_node("Add", ["C", "m"] if bias_first else ["m", "C"], ["y"])],
        {"x": list(x_shape)}, {"y": list(out_shape)}, {"W": _random(8, 5), "C": bias},
    )


@pytest.mark.parametrize("bias_first", [False, True])
@pytest.mark.parametrize("shape", [[5], [1, 5], [3, 5], [3, 1], []])
def test_matmul_add_to_gemm(shape: list[int], bias_first: bool) -> None:
    _assert_folds(_matmul_add(_random(*shape, seed=3), bias_first=bias_first), MatMulAddToGemmPass(), ["Gemm"])


def test_matmul_add_rank3_input_is_kept() -> None:
    original = _model(
        [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "C"], ["y"])],
        {"x": [2, 3, 8]}, {"y": [2, 3, 5]}, {"W": _random(8, 5), "C": _random(5, seed=3)},
    )
    _assert_kept(original, MatMulAddToGemmPass())


def test_matmul_add_unknown_input_rank_is_kept() -> None:
    """Without shape inference the Relu output's rank is unknown: it may not be 2."""
    original = _model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MatMul", ["r", "W"], ["m"]),
         helper.make_node("Add", ["m", "C"], ["y"])],
        {"x": [3, 8]}, {"y": [3, 5]}, {"W": _random(8, 5), "C": _random(5, seed=3)},
    )
    _assert_kept(original, MatMulAddToGemmPass())


def test_matmul_add_rank3_bias_is_kept() -> None:
    """Add([3, 5], [1, 1, 5]) is [1, 3, 5]; a Gemm's output is rank 2."""
    _assert_kept(_matmul_add(_random(1, 1, 5, seed=3), out_shape=(1, 3, 5)), MatMulAddToGemmPass())


def test_matmul_add_bias_that_grows_the_rows_is_kept() -> None:
    """Add([1, 5], [3, 5]) is [3, 5]; Gemm needs C broadcastable to its [1, 5] output."""
    _assert_kept(_matmul_add(_random(3, 5, seed=3), x_shape=(1, 8)), MatMulAddToGemmPass())


def test_matmul_add_non_constant_weight_is_kept() -> None:
    original = _model(
        [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "C"], ["y"])],
        {"x": [3, 8], "W": [8, 5]}, {"y": [3, 5]}, {"C": _random(5, seed=3)},
    )
    _assert_kept(original, MatMulAddToGemmPass())


def test_matmul_add_non_constant_bias_is_kept() -> None:
    original = _model(
        [helper.make_node("MatMul", ["x", "W"], ["m"]), helper.make_node("Add", ["m", "C"], ["y"])],
        {"x": [3, 8], "C": [5]}, {"y": [3, 5]}, {"W": _random(8, 5)},
    )
    _assert_kept(original, MatMulAddToGemmPass())


def test_matmul_add_matmul_with_two_consumers_is_kept() -> None:
    original = _model(
        [
            helper.make_node("MatMul", ["x", "W"], ["m"]),
            helper.make_node("Add", ["m", "C"], ["y"]),
            helper.make_node("Relu", ["m"], ["r"]),
        ],
        {"x": [3, 8]}, {"y": [3, 5], "r": [3, 5]}, {"W": _random(8, 5), "C": _random(5, seed=3)},
    )
    _assert_kept(original, MatMulAddToGemmPass())


# --------------------------------------------------------------------------------------------
# Pad into Conv / MaxPool / AveragePool
# --------------------------------------------------------------------------------------------


def _pad_then(
    consumer: onnx.NodeProto,
    pads: Sequence[int],
    value: float | None = 0.0,
    mode: str = "constant",
    out_shape: Sequence[int] = (1, 2, 6, 6),
    axes: Sequence[int] | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """Pad-18 (pads, value, axes as inputs) of x: [1, 2, 5, 5], then `consumer` reading 'p'."""
    pad_inputs = ["x", "pads", "value" if value is not None else ""] + (["axes"] if axes is not None else [])
    initializers = {"pads": np.array(pads, np.int64)} | (extra or {})
    if value is not None:
        initializers["value"] = np.array(value, np.float32)
    if axes is not None:
        initializers["axes"] = np.array(axes, np.int64)
    return _model([helper.make_node("Pad", pad_inputs, ["p"], mode=mode), consumer], {"x": [1, 2, 5, 5]},
                  {"y": list(out_shape)}, initializers, opset=18)


def _conv(**attributes: object) -> onnx.NodeProto:
    return helper.make_node("Conv", ["p", "W"], ["y"], **attributes)


_CONV_W = {"W": _random(2, 2, 3, 3)}


def test_fold_pad_into_conv_adds_to_its_pads() -> None:
    # H: 5 + 1 + 2 (Pad) + 1 + 1 (Conv) - 2 = 8; W: 5 + 0 + 1 + 1 + 1 - 2 = 6
    original = _pad_then(_conv(pads=[1, 1, 1, 1]), [0, 0, 1, 0, 0, 0, 2, 1], out_shape=(1, 2, 8, 6), extra=_CONV_W)
    folded = _assert_folds(original, FoldPadPass(), ["Conv"])
    assert _attribute(folded, "Conv", "pads") == [2, 1, 3, 2]


def test_fold_pad_with_axes_into_conv() -> None:
    original = _pad_then(_conv(), [1, 0, 2, 1], axes=[-2, 3], out_shape=(1, 2, 6, 4), extra=_CONV_W)
    folded = _assert_folds(original, FoldPadPass(), ["Conv"])
    assert _attribute(folded, "Conv", "pads") == [1, 0, 2, 1]


def test_fold_pad_without_value_into_conv() -> None:
    original = _pad_then(_conv(), [0, 0, 1, 1, 0, 0, 1, 1], value=None, out_shape=(1, 2, 5, 5), extra=_CONV_W)
    _assert_folds(original, FoldPadPass(), ["Conv"])


def test_fold_pad_attribute_form_into_conv() -> None:
    """Pad-2..10 carry pads and value as attributes."""
    original = _model(
        [helper.make_node("Pad", ["x"], ["p"], pads=[0, 0, 1, 1, 0, 0, 1, 1], value=0.0), _conv()],
        {"x": [1, 2, 5, 5]}, {"y": [1, 2, 5, 5]}, _CONV_W, opset=10,
    )
    _assert_folds(original, FoldPadPass(), ["Conv"])


def test_fold_pad_from_constant_nodes_into_conv() -> None:
    pads = helper.make_node("Constant", [], ["pads"], value=numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1])))
    original = _model([pads, helper.make_node("Pad", ["x", "pads"], ["p"]), _conv()], {"x": [1, 2, 5, 5]},
                      {"y": [1, 2, 5, 5]}, _CONV_W)
    _assert_folds(original, FoldPadPass(), ["Conv"])


def test_fold_pad_non_zero_value_into_conv_is_kept() -> None:
    _assert_kept(_pad_then(_conv(), [0, 0, 1, 1, 0, 0, 1, 1], value=1.0, out_shape=(1, 2, 5, 5), extra=_CONV_W),
                 FoldPadPass())


def test_fold_pad_reflect_mode_is_kept() -> None:
    _assert_kept(_pad_then(_conv(), [0, 0, 1, 1, 0, 0, 1, 1], value=None, mode="reflect", out_shape=(1, 2, 5, 5),
                           extra=_CONV_W), FoldPadPass())


def test_fold_pad_on_channel_axis_is_kept() -> None:
    original = _pad_then(helper.make_node("Conv", ["p", "W3"], ["y"]), [0, 1, 0, 0, 0, 0, 0, 0],
                         out_shape=(1, 2, 3, 3), extra={"W3": _random(2, 3, 3, 3)})
    _assert_kept(original, FoldPadPass())


def test_fold_pad_negative_pads_are_kept() -> None:
    original = _pad_then(_conv(pads=[1, 1, 1, 1]), [0, 0, -1, 0, 0, 0, 0, 0], out_shape=(1, 2, 4, 5), extra=_CONV_W)
    _assert_kept(original, FoldPadPass())


def test_fold_pad_into_auto_pad_conv_is_kept() -> None:
    original = _pad_then(_conv(auto_pad="SAME_UPPER"), [0, 0, 1, 1, 0, 0, 1, 1], out_shape=(1, 2, 7, 7),
                         extra=_CONV_W)
    _assert_kept(original, FoldPadPass())


def test_fold_pad_non_constant_pads_are_kept() -> None:
    original = _model([helper.make_node("Pad", ["x", "pads"], ["p"]), _conv()], {"x": [1, 2, 5, 5], "pads": [8]},
                      {"y": [1, 2, None, None]}, _CONV_W, types={"pads": TensorProto.INT64})
    _assert_kept(original, FoldPadPass())


def test_fold_pad_with_two_consumers_is_kept() -> None:
    original = _model(
        [helper.make_node("Pad", ["x", "pads"], ["p"]), _conv(), helper.make_node("Relu", ["p"], ["r"])],
        {"x": [1, 2, 5, 5]}, {"y": [1, 2, 5, 5], "r": [1, 2, 7, 7]},
        _CONV_W | {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)},
    )
    _assert_kept(original, FoldPadPass())


def _max_pool(**attributes: object) -> onnx.NodeProto:
    return helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[3, 3], **attributes)


def _average_pool(**attributes: object) -> onnx.NodeProto:
    return helper.make_node("AveragePool", ["p"], ["y"], kernel_shape=[3, 3], **attributes)


def test_fold_minus_inf_pad_into_max_pool() -> None:
    original = _pad_then(_max_pool(strides=[2, 2]), [0, 0, 1, 1, 0, 0, 1, 1], value=-np.inf, out_shape=(1, 2, 3, 3))
    folded = _assert_folds(original, FoldPadPass(), ["MaxPool"])
    assert _attribute(folded, "MaxPool", "pads") == [1, 1, 1, 1]


def test_fold_zero_pad_into_max_pool_is_kept() -> None:
    """MaxPool ignores padded cells; a 0 pad wins over negative inputs."""
    _assert_kept(_pad_then(_max_pool(), [0, 0, 1, 1, 0, 0, 1, 1], out_shape=(1, 2, 5, 5)), FoldPadPass())


def test_fold_empty_pad_into_max_pool_whatever_its_value() -> None:
    _assert_folds(_pad_then(_max_pool(), [0] * 8, value=5.0, out_shape=(1, 2, 3, 3)), FoldPadPass(), ["MaxPool"])


def test_fold_pad_into_max_pool_with_used_indices_is_kept() -> None:
    """The indices address the padded tensor; the pool's own padding would shift them."""
    original = _model(
        [helper.make_node("Pad", ["x", "pads", "value"], ["p"]),
         helper.make_node("MaxPool", ["p"], ["y", "i"], kernel_shape=[3, 3])],
        {"x": [1, 2, 5, 5]}, {"y": [1, 2, 5, 5], "i": [1, 2, 5, 5]},
        {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "value": np.array(-np.inf, np.float32)},
        types={"i": TensorProto.INT64}, opset=18,
    )
    _assert_kept(original, FoldPadPass())


def test_fold_pad_into_ceil_mode_max_pool_is_kept() -> None:
    original = _pad_then(_max_pool(strides=[2, 2], ceil_mode=1), [0, 0, 0, 0, 0, 0, 1, 1], value=-np.inf,
                         out_shape=(1, 2, 3, 3))
    _assert_kept(original, FoldPadPass())


def test_fold_pad_as_wide_as_the_pool_kernel_is_kept() -> None:
    original = _pad_then(_max_pool(), [0, 0, 3, 0, 0, 0, 0, 0], value=-np.inf, out_shape=(1, 2, 6, 3))
    _assert_kept(original, FoldPadPass())


def test_fold_zero_pad_into_average_pool_counting_pads() -> None:
    original = _pad_then(_average_pool(count_include_pad=1), [0, 0, 1, 1, 0, 0, 1, 1], out_shape=(1, 2, 5, 5))
    _assert_folds(original, FoldPadPass(), ["AveragePool"])


def test_fold_zero_pad_into_average_pool_not_counting_pads_is_kept() -> None:
    _assert_kept(_pad_then(_average_pool(), [0, 0, 1, 1, 0, 0, 1, 1], out_shape=(1, 2, 5, 5)), FoldPadPass())
