"""Tests for edgec.passes.fusion: GELU and LayerNorm rewrites, activation groups, attention regions.

Each rewrite is checked by op counts and against `onnx.reference.ReferenceEvaluator` running the
ORIGINAL model (ONNX Runtime runs the rewritten one where it holds `com.microsoft` ops). Annotation
passes must leave the graph computing bit-identical results and mark exactly the group's nodes.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx_ir.passes import PassBase

from edgec.passes.cleanup import InferShapesPass, RemoveUnusedPass
from edgec.passes.fusion import (
    FUSABLE_ACTIVATIONS,
    FuseActivationsPass,
    FuseGeluPass,
    FuseLayerNormPass,
    MarkAttentionPass,
    fusable_activations,
    fusion_group,
    fusion_groups,
    fusion_kind,
    group_outputs,
    is_group_internal,
)
from edgec.target import TensorQuant, load_target

#: fp32 tolerance for a rewrite into one op: it computes the same formula, rounded in another order.
FUSE_RTOL = 1e-4
FUSE_ATOL = 1e-5
IR_VERSION = 10  # what ONNX Runtime 1.20+ loads


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _f32(name: str, shape: Sequence[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           initializers: dict[str, np.ndarray], opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def _apply(model: onnx.ModelProto, *passes: PassBase) -> tuple[ir.Model, list[bool]]:
    """Shapes inferred (as the pipeline does before fusing), then `passes`; returns which modified."""
    graph = ir.serde.deserialize_model(model)
    InferShapesPass()(graph)
    modified = [p(graph).modified for p in passes]
    RemoveUnusedPass()(graph)
    return graph, modified


def _proto(model: ir.Model) -> onnx.ModelProto:
    proto = ir.serde.serialize_model(model)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _ops(model: ir.Model) -> Counter[str]:
    return Counter(f"{node.domain}.{node.op_type}" if node.domain else node.op_type for node in model.graph)


def _feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal([d.dim_value for d in v.type.tensor_type.shape.dim]).astype(np.float32)
            for v in model.graph.input}


def _assert_same_outputs(original: onnx.ModelProto, rewritten: ir.Model, runner: str = "reference") -> None:
    """The rewritten model (run by the reference evaluator or ORT) against the original's reference outputs."""
    proto = _proto(rewritten)
    if runner == "reference":
        run = ReferenceEvaluator(proto).run
    else:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the graph as written
        run = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"]).run
    for seed in range(3):
        feeds = _feeds(original, seed)
        for got, want in zip(run(None, feeds), ReferenceEvaluator(original).run(None, feeds)):
            np.testing.assert_allclose(got, want, rtol=FUSE_RTOL, atol=FUSE_ATOL)


def _assert_identical_outputs(original: onnx.ModelProto, annotated: ir.Model) -> None:
    proto = _proto(annotated)
    for seed in range(2):
        feeds = _feeds(original, seed)
        for got, want in zip(ReferenceEvaluator(proto).run(None, feeds), ReferenceEvaluator(original).run(None, feeds)):
            np.testing.assert_array_equal(got, want)


def _groups_by_ops(model: ir.Model) -> dict[str, list[str]]:
    return {group: [n.op_type for n in nodes] for group, nodes in fusion_groups(model.graph).items()}


# --------------------------------------------------------------------------------------------
# GELU: a tiny MLP, x -> MatMul -> Add -> GELU -> MatMul
# --------------------------------------------------------------------------------------------

_GELU_CONSTANTS = {
    "half": np.float32(0.5), "one": np.float32(1.0), "sqrt2": np.float32(math.sqrt(2.0)),
    "inv_sqrt2": np.float32(1 / math.sqrt(2.0)), "three": np.float32(3.0), "cubic": np.float32(0.044715),
    "sqrt_2_over_pi": np.float32(math.sqrt(2 / math.pi)), "wrong": np.float32(1.5),
}


def _mul(a: str, b: str, out: str) -> onnx.NodeProto:
    return helper.make_node("Mul", [a, b], [out])


def _add(a: str, b: str, out: str) -> onnx.NodeProto:
    return helper.make_node("Add", [a, b], [out])


#: GELU(h) -> g, decomposed the ways exporters write it.
GELU_ERF_FORMS = {
    # PyTorch's export of Hugging Face's `x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))`
    "x*0.5*(1+erf(x/sqrt2))": [_mul("h", "half", "hh"), helper.make_node("Div", ["h", "sqrt2"], ["d"]),
                               helper.make_node("Erf", ["d"], ["e"]), _add("e", "one", "s"), _mul("hh", "s", "g")],
    "0.5*(x*(erf(x/sqrt2)+1))": [helper.make_node("Div", ["h", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                                 _add("e", "one", "s"), _mul("h", "s", "hs"), _mul("half", "hs", "g")],
    "x*((1+erf(x*(1/sqrt2)))*0.5)": [_mul("inv_sqrt2", "h", "d"), helper.make_node("Erf", ["d"], ["e"]),
                                     _add("one", "e", "s"), _mul("s", "half", "sh"), _mul("h", "sh", "g")],
    "((erf(x/sqrt2)+1)*x)*0.5": [helper.make_node("Div", ["h", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                                 _add("e", "one", "s"), _mul("s", "h", "sx"), _mul("sx", "half", "g")],
}
GELU_TANH_FORMS = {
    # Hugging Face's gelu_new: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
    "0.5*x*(1+tanh(c*(x+k*x^3)))": [
        helper.make_node("Pow", ["h", "three"], ["p"]), _mul("cubic", "p", "kp"), _add("h", "kp", "a"),
        _mul("sqrt_2_over_pi", "a", "t_in"), helper.make_node("Tanh", ["t_in"], ["t"]), _add("one", "t", "s"),
        _mul("half", "h", "hh"), _mul("hh", "s", "g")],
    # as torch.onnx (dynamo) exports the same expression: constants second
    "exported": [
        _mul("h", "half", "hh"), helper.make_node("Pow", ["h", "three"], ["p"]), _mul("p", "cubic", "kp"),
        _add("h", "kp", "a"), _mul("a", "sqrt_2_over_pi", "t_in"), helper.make_node("Tanh", ["t_in"], ["t"]),
        _add("t", "one", "s"), _mul("hh", "s", "g")],
}


def _mlp(gelu: list[onnx.NodeProto], opset: int, extra_outputs: Sequence[str] = ()) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = {"W1": rng.standard_normal((8, 16)).astype(np.float32), "b1": rng.standard_normal(16).astype(np.float32),
             "W2": rng.standard_normal((16, 4)).astype(np.float32), **_GELU_CONSTANTS}
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["mm"]), _add("mm", "b1", "h"), *gelu,
             helper.make_node("MatMul", ["g", "W2"], ["y"])]
    outputs = [_f32("y", (2, 4)), *(_f32(name, (2, 16)) for name in extra_outputs)]
    return _model(nodes, [_f32("x", (2, 8))], outputs, inits, opset)


@pytest.mark.parametrize("form", list(GELU_ERF_FORMS))
def test_fuse_gelu_erf_forms_to_onnx_gelu(form: str) -> None:
    original = _mlp(GELU_ERF_FORMS[form], opset=20)
    model, (modified,) = _apply(original, FuseGeluPass())
    assert modified
    assert _ops(model) == Counter({"MatMul": 2, "Add": 1, "Gelu": 1})
    (gelu,) = [n for n in model.graph if n.op_type == "Gelu"]
    assert gelu.attributes.get_string("approximate", "none") == "none"
    assert gelu.inputs[0].name == "h"
    _assert_same_outputs(original, model)


@pytest.mark.parametrize("form", list(GELU_TANH_FORMS))
def test_fuse_gelu_tanh_forms_to_onnx_gelu_tanh(form: str) -> None:
    original = _mlp(GELU_TANH_FORMS[form], opset=20)
    model, (modified,) = _apply(original, FuseGeluPass())
    assert modified
    assert _ops(model) == Counter({"MatMul": 2, "Add": 1, "Gelu": 1})
    (gelu,) = [n for n in model.graph if n.op_type == "Gelu"]
    assert gelu.attributes.get_string("approximate") == "tanh"
    _assert_same_outputs(original, model)


@pytest.mark.parametrize(("forms", "contrib_op"), [(GELU_ERF_FORMS, "Gelu"), (GELU_TANH_FORMS, "FastGelu")])
def test_fuse_gelu_below_opset_20_uses_ort_contrib_ops(forms: dict[str, list[onnx.NodeProto]], contrib_op: str) -> None:
    for form in forms.values():
        original = _mlp(form, opset=18)
        model, (modified,) = _apply(original, FuseGeluPass(contrib_ops=True))
        assert modified
        assert _ops(model) == Counter({"MatMul": 2, "Add": 1, f"com.microsoft.{contrib_op}": 1})
        assert model.opset_imports["com.microsoft"] == 1
        _assert_same_outputs(original, model, runner="onnxruntime")


def test_fuse_gelu_below_opset_20_elsewhere_leaves_it() -> None:
    original = _mlp(GELU_ERF_FORMS["x*0.5*(1+erf(x/sqrt2))"], opset=18)
    model, (modified,) = _apply(original, FuseGeluPass(contrib_ops=False))
    assert not modified
    assert _ops(model)["Erf"] == 1 and "com.microsoft" not in model.opset_imports


def _replace_input(nodes: list[onnx.NodeProto], old: str, new: str) -> list[onnx.NodeProto]:
    copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in nodes]
    for node in copies:
        node.input[:] = [new if name == old else name for name in node.input]
    return copies


@pytest.mark.parametrize(
    ("forms", "form", "constant"),
    [(GELU_ERF_FORMS, "x*0.5*(1+erf(x/sqrt2))", "sqrt2"),  # x / 1.5 inside the Erf
     (GELU_TANH_FORMS, "exported", "cubic"),  # 1.5 * x^3 inside the Tanh
     (GELU_ERF_FORMS, "0.5*(x*(erf(x/sqrt2)+1))", "half")],  # 1.5 * x * (1 + erf)
)
def test_fuse_gelu_leaves_wrong_constants_alone(forms: dict[str, list[onnx.NodeProto]], form: str,
                                                constant: str) -> None:
    original = _mlp(_replace_input(forms[form], constant, "wrong"), opset=20)
    model, (modified,) = _apply(original, FuseGeluPass())
    assert not modified
    assert _ops(model)["Gelu"] == 0
    _assert_same_outputs(original, model)


def test_fuse_gelu_keeps_a_decomposition_whose_inside_is_read_elsewhere() -> None:
    original = _mlp(GELU_ERF_FORMS["x*0.5*(1+erf(x/sqrt2))"], opset=20, extra_outputs=["e"])
    model, (modified,) = _apply(original, FuseGeluPass())
    assert not modified
    assert _ops(model)["Erf"] == 1


# --------------------------------------------------------------------------------------------
# LayerNorm: x [2, 3, 8] -> LayerNorm over the last axis -> MatMul
# --------------------------------------------------------------------------------------------


def _layer_norm_model(nodes: list[onnx.NodeProto], opset: int, gamma_shape: tuple[int, ...] = (8,),
                      axes: Sequence[int] = (-1,)) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inits = {"gamma": rng.uniform(0.5, 1.5, gamma_shape).astype(np.float32),
             "beta": rng.standard_normal(8).astype(np.float32), "eps": np.float32(1e-5), "two": np.float32(2.0),
             "W": rng.standard_normal((8, 4)).astype(np.float32)}
    if opset >= 18:
        inits["axes"] = np.array(axes, np.int64)
    nodes = [*nodes, helper.make_node("MatMul", ["ln", "W"], ["y"])]
    return _model(nodes, [_f32("x", (2, 3, 8))], [_f32("y", (2, 3, 4))], inits, opset)


def _reduce_mean(inp: str, out: str, opset: int, axes: Sequence[int]) -> onnx.NodeProto:
    if opset >= 18:
        return helper.make_node("ReduceMean", [inp, "axes"], [out], keepdims=1, noop_with_empty_axes=0)
    return helper.make_node("ReduceMean", [inp], [out], axes=list(axes), keepdims=1)


def torch_layer_norm(opset: int = 18, axes: Sequence[int] = (-1,)) -> list[onnx.NodeProto]:
    """`(x - mu) / torch.sqrt(var + eps) * gamma + beta` as torch.onnx (dynamo, opset 18) exports it."""
    return [
        _reduce_mean("x", "mean", opset, axes), helper.make_node("Sub", ["x", "mean"], ["sub"]),
        helper.make_node("Pow", ["sub", "two"], ["pow"]), _reduce_mean("pow", "var", opset, axes),
        _add("var", "eps", "var_eps"), helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Div", ["sub", "std"], ["norm"]), _mul("norm", "gamma", "scaled"),
        _add("scaled", "beta", "ln"),
    ]


def reciprocal_layer_norm(opset: int, axes: Sequence[int]) -> list[onnx.NodeProto]:
    """Mul(d, d), eps first, Mul by Reciprocal, gamma first, no beta."""
    return [
        _reduce_mean("x", "mean", opset, axes), helper.make_node("Sub", ["x", "mean"], ["d"]), _mul("d", "d", "sq"),
        _reduce_mean("sq", "var", opset, axes), _add("eps", "var", "var_eps"),
        helper.make_node("Sqrt", ["var_eps"], ["std"]), helper.make_node("Reciprocal", ["std"], ["inv"]),
        _mul("inv", "d", "norm"), _mul("gamma", "norm", "ln"),
    ]


def test_fuse_layer_norm_as_torch_exports_it() -> None:
    original = _layer_norm_model(torch_layer_norm(), opset=18)
    model, (modified,) = _apply(original, FuseLayerNormPass())
    assert modified
    assert _ops(model) == Counter({"LayerNormalization": 1, "MatMul": 1})
    (ln,) = [n for n in model.graph if n.op_type == "LayerNormalization"]
    assert [v.name for v in ln.inputs] == ["x", "gamma", "beta"]
    assert ln.attributes.get_int("axis") == -1
    assert ln.attributes.get_float("epsilon") == pytest.approx(1e-5)
    _assert_same_outputs(original, model)


@pytest.mark.parametrize("axes", [(-1,), (2,)])
def test_fuse_layer_norm_axes_attribute_reciprocal_no_beta(axes: tuple[int, ...]) -> None:
    original = _layer_norm_model(reciprocal_layer_norm(opset=17, axes=axes), opset=17)
    model, (modified,) = _apply(original, FuseLayerNormPass())
    assert modified
    assert _ops(model) == Counter({"LayerNormalization": 1, "MatMul": 1})
    (ln,) = [n for n in model.graph if n.op_type == "LayerNormalization"]
    assert [v.name for v in ln.inputs] == ["x", "gamma"]
    _assert_same_outputs(original, model)


@pytest.mark.parametrize(
    ("nodes", "opset", "gamma_shape", "axes"),
    [
        pytest.param(torch_layer_norm(axes=(1,)), 18, (8,), (1,), id="axes-input-axis-1"),
        pytest.param(reciprocal_layer_norm(opset=17, axes=(1,)), 17, (8,), (1,), id="axes-attribute-axis-1"),
        pytest.param(torch_layer_norm(), 18, (3, 8), (-1,), id="gamma-per-position"),
        pytest.param(torch_layer_norm(opset=16), 16, (8,), (-1,), id="opset-16-has-no-LayerNormalization"),
    ],
)
def test_fuse_layer_norm_leaves_other_normalizations_alone(nodes: list[onnx.NodeProto], opset: int,
                                                           gamma_shape: tuple[int, ...], axes: tuple[int, ...]) -> None:
    original = _layer_norm_model(nodes, opset, gamma_shape, axes)
    model, (modified,) = _apply(original, FuseLayerNormPass())
    assert not modified
    assert _ops(model)["LayerNormalization"] == 0 and _ops(model)["ReduceMean"] == 2
    _assert_same_outputs(original, model)


# --------------------------------------------------------------------------------------------
# activation groups
# --------------------------------------------------------------------------------------------

#: activation -> (nodes reading "c" and writing "act", extra initializers)
ACTIVATIONS = {
    "Relu": ([helper.make_node("Relu", ["c"], ["act"])], {}),
    "Clip": ([helper.make_node("Clip", ["c", "lo", "hi"], ["act"])], {"lo": np.float32(0), "hi": np.float32(6)}),
    "LeakyRelu": ([helper.make_node("LeakyRelu", ["c"], ["act"], alpha=0.1)], {}),
    "Sigmoid": ([helper.make_node("Sigmoid", ["c"], ["act"])], {}),
    "HardSwish": ([helper.make_node("HardSwish", ["c"], ["act"])], {}),
}


def conv_activation_model(activation: list[onnx.NodeProto], extra: dict[str, np.ndarray],
                          graph_outputs: Sequence[str] = ("y",),
                          extra_inputs: Sequence[onnx.ValueInfoProto] = ()) -> onnx.ModelProto:
    """Conv -> activation -> GlobalAveragePool."""
    rng = np.random.default_rng(2)
    inits = {"W": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "B": rng.standard_normal(4).astype(np.float32),
             **extra}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]), *activation,
             helper.make_node("GlobalAveragePool", ["act"], ["y"])]
    shapes = {"y": (1, 4, 1, 1), "c": (1, 4, 6, 6), "act": (1, 4, 6, 6)}
    return _model(nodes, [_f32("x", (1, 3, 6, 6)), *extra_inputs], [_f32(n, shapes[n]) for n in graph_outputs],
                  inits, 17)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_conv_activation_grouped(activation: str) -> None:
    original = conv_activation_model(*ACTIVATIONS[activation])
    model, (modified,) = _apply(original, FuseActivationsPass())
    assert modified
    assert _groups_by_ops(model) == {"conv_act:g1": ["Conv", activation]}
    conv, act, pool = list(model.graph)
    assert fusion_kind(conv) == fusion_kind(act) == "conv_act" and fusion_group(pool) is None
    assert is_group_internal(conv.outputs[0]) and not is_group_internal(act.outputs[0])
    assert group_outputs([conv, act]) == [act.outputs[0]]
    _assert_identical_outputs(original, model)  # annotation only


def test_gemm_and_matmul_groups_get_their_own_ids() -> None:
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["g"], transB=1), helper.make_node("Relu", ["g"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["m"]), helper.make_node("Sigmoid", ["m"], ["y"])]
    original = _model(nodes, [_f32("x", (2, 8))], [_f32("y", (2, 4))],
                      {"W1": rng.standard_normal((6, 8)).astype(np.float32), "b1": np.zeros(6, np.float32),
                       "W2": rng.standard_normal((6, 4)).astype(np.float32)}, 17)
    model, _ = _apply(original, FuseActivationsPass())
    assert _groups_by_ops(model) == {"gemm_act:g1": ["Gemm", "Relu"], "matmul_act:g2": ["MatMul", "Sigmoid"]}
    _assert_identical_outputs(original, model)


def test_decomposed_hardswish_becomes_one_grouped_node() -> None:
    decomposed = [helper.make_node("HardSigmoid", ["c"], ["hs"], alpha=1 / 6, beta=0.5), _mul("c", "hs", "act")]
    original = conv_activation_model(decomposed, {})
    model, (modified,) = _apply(original, FuseActivationsPass())
    assert modified
    assert _ops(model) == Counter({"Conv": 1, "HardSwish": 1, "GlobalAveragePool": 1})
    assert _groups_by_ops(model) == {"conv_act:g1": ["Conv", "HardSwish"]}
    _assert_same_outputs(original, model)


def test_conv_output_read_twice_is_not_grouped() -> None:
    """The Conv output is also a graph output: it exists in memory, so Conv and Relu are not one kernel."""
    original = conv_activation_model(*ACTIVATIONS["Relu"], graph_outputs=("y", "c"))
    model, (modified,) = _apply(original, FuseActivationsPass())
    assert not modified and fusion_groups(model.graph) == {}


def test_activation_read_twice_is_still_grouped() -> None:
    """Two readers of the activation's output are the group's business no more than one is."""
    original = conv_activation_model(*ACTIVATIONS["Relu"], graph_outputs=("y", "act"))
    model, _ = _apply(original, FuseActivationsPass())
    assert _groups_by_ops(model) == {"conv_act:g1": ["Conv", "Relu"]}


def test_only_requested_activations_and_constant_clips_are_grouped() -> None:
    model, (modified,) = _apply(conv_activation_model(*ACTIVATIONS["Sigmoid"]), FuseActivationsPass({"Relu", "Clip"}))
    assert not modified and fusion_groups(model.graph) == {}
    runtime_ceiling = conv_activation_model([helper.make_node("Clip", ["c", "lo", "hi"], ["act"])],
                                            {"lo": np.float32(0)}, extra_inputs=[_f32("hi", ())])
    model, (modified,) = _apply(runtime_ceiling, FuseActivationsPass())
    assert not modified and fusion_groups(model.graph) == {}
    with pytest.raises(ValueError, match="Gelu"):
        FuseActivationsPass({"Relu", "Gelu"})


def test_fuse_activations_twice_changes_nothing() -> None:
    model, _ = _apply(conv_activation_model(*ACTIVATIONS["Relu"]), FuseActivationsPass())
    before = _groups_by_ops(model)
    assert FuseActivationsPass()(model).modified is False
    assert _groups_by_ops(model) == before


def test_fusable_activations_follow_the_target() -> None:
    assert fusable_activations(None) == FUSABLE_ACTIVATIONS
    assert fusable_activations(load_target("tensorrt-int8")) == FUSABLE_ACTIVATIONS
    assert fusable_activations(load_target("tflite-int8")) == {"Relu", "Clip"}
    ort_u8 = load_target("cpu-x86-int8")
    assert fusable_activations(ort_u8) == {"Relu", "Clip"}
    assert fusable_activations(load_target("cpu-x86-fp32")) == {"Relu", "Clip"}
    s8 = dataclasses.replace(ort_u8.quant, activations=TensorQuant("int8", symmetric=True, granularity="per_tensor"))
    assert fusable_activations(dataclasses.replace(ort_u8, quant=s8)) == frozenset()


# --------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------


def attention_model(scale: str = "div", mask: bool = True, softmax_axis: int = -1,
                    probs_is_output: bool = False) -> onnx.ModelProto:
    """Q, K, V [1, 2, 4, 8]: softmax(Q K^T / sqrt(8) + mask) V, then an output projection."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["scores"])]
    if scale == "div":
        nodes.append(helper.make_node("Div", ["scores", "sqrt_d"], ["scaled"]))
    else:
        nodes.append(_mul("inv_sqrt_d", "scores", "scaled"))
    if mask:
        nodes.append(_add("mask", "scaled", "masked"))
    nodes += [helper.make_node("Softmax", ["masked" if mask else "scaled"], ["probs"], axis=softmax_axis),
              helper.make_node("MatMul", ["probs", "v"], ["ctx"]), helper.make_node("MatMul", ["ctx", "Wo"], ["y"])]
    inputs = [_f32(n, (1, 2, 4, 8)) for n in ("q", "k", "v")] + ([_f32("mask", (1, 1, 4, 4))] if mask else [])
    outputs = [_f32("y", (1, 2, 4, 8))] + ([_f32("probs", (1, 2, 4, 4))] if probs_is_output else [])
    inits = {"sqrt_d": np.float32(math.sqrt(8)), "inv_sqrt_d": np.float32(1 / math.sqrt(8)),
             "Wo": rng.standard_normal((8, 8)).astype(np.float32)}
    return _model(nodes, inputs, outputs, inits, 17)


def test_mark_attention_with_scale_and_mask() -> None:
    original = attention_model()
    model, (modified,) = _apply(original, MarkAttentionPass())
    assert modified
    assert _groups_by_ops(model) == {"attention:g1": ["MatMul", "Div", "Add", "Softmax", "MatMul"]}
    (nodes,) = fusion_groups(model.graph).values()
    assert [v.name for v in group_outputs(nodes)] == ["ctx"]
    _assert_identical_outputs(original, model)


def test_mark_attention_multiplied_scale_without_mask() -> None:
    model, _ = _apply(attention_model(scale="mul", mask=False), MarkAttentionPass())
    assert _groups_by_ops(model) == {"attention:g1": ["MatMul", "Mul", "Softmax", "MatMul"]}


def test_mark_attention_after_activation_groups_takes_a_fresh_id() -> None:
    original = attention_model()
    original.graph.node.append(helper.make_node("Relu", ["y"], ["y_relu"]))
    original.graph.output[0].name = "y_relu"
    onnx.checker.check_model(original, full_check=True)
    model, _ = _apply(original, FuseActivationsPass(), MarkAttentionPass())
    assert _groups_by_ops(model) == {"matmul_act:g1": ["MatMul", "Relu"],
                                     "attention:g2": ["MatMul", "Div", "Add", "Softmax", "MatMul"]}


@pytest.mark.parametrize("kwargs", [pytest.param({"softmax_axis": 2}, id="softmax-over-the-query-axis"),
                                    pytest.param({"probs_is_output": True}, id="probabilities-read-outside")])
def test_mark_attention_leaves_other_shapes_alone(kwargs: dict[str, object]) -> None:
    model, (modified,) = _apply(attention_model(**kwargs), MarkAttentionPass())
    assert not modified
    assert fusion_groups(model.graph) == {}
