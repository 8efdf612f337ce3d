"""Elementwise ops, activations, softmax, LayerNorm (decomposed: TFLite has no LayerNorm op) and reductions.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.lower import Lowering
from edgec.backends.tflite.ops import (
    alias, int32_constant, ints_argument, make_options, op_version, register, simple_op, tensor_rank,
    unsupported,
)

__all__: list[str] = []

Op = schema.BuiltinOperator
Act = schema.ActivationFunctionType

# --------------------------------------------------------------------------------------------
# elementwise
# --------------------------------------------------------------------------------------------

_BINARY = {"Add": (Op.ADD, schema.AddOptionsT), "Sub": (Op.SUB, schema.SubOptionsT),
           "Mul": (Op.MUL, schema.MulOptionsT), "Div": (Op.DIV, schema.DivOptionsT)}
_PLAIN_BINARY = {"Pow": Op.POW, "Max": Op.MAXIMUM, "Min": Op.MINIMUM, "Equal": Op.EQUAL, "Greater": Op.GREATER,
                 "Less": Op.LESS, "GreaterOrEqual": Op.GREATER_EQUAL, "LessOrEqual": Op.LESS_EQUAL,
                 "And": Op.LOGICAL_AND, "Or": Op.LOGICAL_OR, "PRelu": Op.PRELU}


@register(*_BINARY)
def _arithmetic(ctx: Lowering, node: ir.Node) -> None:
    code, options_class = _BINARY[node.op_type]
    inputs = [ctx.input(v) for v in node.inputs]
    activation, written = ctx.fused_activation(node)
    out = ctx.output(written)
    ctx.op(code, inputs, [out], make_options(options_class, fusedActivationFunction=activation), op_version(ctx, 2))


@register(*_PLAIN_BINARY)
def _plain_binary(ctx: Lowering, node: ir.Node) -> None:
    if node.op_type in ("Max", "Min") and len(node.inputs) != 2:
        _n_ary(ctx, node, _PLAIN_BINARY[node.op_type], None)
        return
    simple_op(ctx, node, _PLAIN_BINARY[node.op_type], [ctx.tensor(v) for v in node.inputs])


@register("Sum")
def _sum(ctx: Lowering, node: ir.Node) -> None:
    _n_ary(ctx, node, Op.ADD, schema.AddOptionsT)


def _n_ary(ctx: Lowering, node: ir.Node, code: int, options_class: type | None) -> None:
    """A variadic op as a chain of binary ones (the last one fuses a following ReLU)."""
    values = [v for v in node.inputs if v is not None]
    if len(values) == 1:
        alias(ctx, node)
        return
    current = ctx.tensor(values[0])
    for i, value in enumerate(values[1:], start=1):
        last = i == len(values) - 1
        activation, written = ctx.fused_activation(node) if last else (Act.NONE, None)
        out = ctx.output(written) if last else ctx.new_tensor(f"{node.outputs[0].name}_{i}",
                                                               ctx.shape_of(node.outputs[0]), np.float32)
        options = make_options(options_class, fusedActivationFunction=activation) if options_class else None
        ctx.op(code, [current, ctx.tensor(value)], [out], options)
        current = out


_UNARY = {"Relu": Op.RELU, "Sigmoid": Op.LOGISTIC, "Tanh": Op.TANH, "Exp": Op.EXP, "Log": Op.LOG, "Sqrt": Op.SQRT,
          "Abs": Op.ABS, "Neg": Op.NEG, "Floor": Op.FLOOR, "Ceil": Op.CEIL, "Round": Op.ROUND,
          "HardSwish": Op.HARD_SWISH, "Not": Op.LOGICAL_NOT, "Sin": Op.SIN, "Cos": Op.COS, "Sign": Op.SIGN}


#: Version of the int8 kernels (`quantization.INT8_OPS`); HARD_SWISH has one version for every type.
_UNARY_INT8_VERSION = {"HardSwish": 1}


@register(*_UNARY)
def _unary(ctx: Lowering, node: ir.Node) -> None:
    simple_op(ctx, node, _UNARY[node.op_type], [ctx.input(node.inputs[0])],
              int8_version=_UNARY_INT8_VERSION.get(node.op_type, 2))


@register("Reciprocal")
def _reciprocal(ctx: Lowering, node: ir.Node) -> None:
    one = ctx.constant(f"{node.name}_one", np.float32(1.0))
    simple_op(ctx, node, Op.DIV, [one, ctx.tensor(node.inputs[0])], make_options(schema.DivOptionsT))


#: Abramowitz & Stegun 7.1.26: erf(x) = 1 - (a1 t + ... + a5 t^5) exp(-x^2), t = 1 / (1 + p x), x >= 0;
#: absolute error below 1.5e-7 (float32's own rounding is 6e-8 near 1).
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


@register("Erf")
def _erf(ctx: Lowering, node: ir.Node) -> None:
    """Erf, which TFLite has no op for, as its rational-exponential approximation in elementwise ops.

    A GELU built from Erf becomes one GELU op before this (`fuse_gelu`); an Erf remains when something
    splits the pattern, e.g. int8 Q/DQ between its ops.
    """
    x = ctx.tensor(node.inputs[0])
    shape = ctx.shape_of(node.outputs[0])
    name = node.outputs[0].name

    def step(suffix: str, code: int, inputs: list[int], options: object = None) -> int:
        out = ctx.new_tensor(f"{name}_{suffix}", shape, np.float32)
        ctx.op(code, inputs, [out], options)
        return out

    def const(suffix: str, value: float) -> int:
        return ctx.constant(f"{node.name}_{suffix}", np.float32(value))

    one = const("one", 1.0)
    magnitude = step("abs", Op.ABS, [x])
    scaled = step("p_abs", Op.MUL, [magnitude, const("p", _ERF_P)], make_options(schema.MulOptionsT))
    one_plus = step("one_plus", Op.ADD, [scaled, one], make_options(schema.AddOptionsT))
    t = step("t", Op.DIV, [one, one_plus], make_options(schema.DivOptionsT))
    poly = const("a5", _ERF_A[4])
    for i in (3, 2, 1, 0):  # Horner: ((a5 t + a4) t + a3) t ... then times t
        poly = step(f"h{i}", Op.ADD, [step(f"m{i}", Op.MUL, [poly, t], make_options(schema.MulOptionsT)),
                                      const(f"a{i + 1}", _ERF_A[i])], make_options(schema.AddOptionsT))
    poly = step("poly", Op.MUL, [poly, t], make_options(schema.MulOptionsT))
    square = step("square", Op.MUL, [x, x], make_options(schema.MulOptionsT))
    gauss = step("gauss", Op.EXP, [step("neg_square", Op.NEG, [square])])
    tail = step("tail", Op.MUL, [poly, gauss], make_options(schema.MulOptionsT))
    positive = step("positive", Op.SUB, [one, tail], make_options(schema.SubOptionsT))
    simple_op(ctx, node, Op.MUL, [step("sign", Op.SIGN, [x]), positive], make_options(schema.MulOptionsT))


@register("Gelu")
def _gelu(ctx: Lowering, node: ir.Node) -> None:
    approximate = node.attributes.get_string("approximate", "none") == "tanh"
    simple_op(ctx, node, Op.GELU, [ctx.tensor(node.inputs[0])], make_options(schema.GeluOptionsT, approximate=approximate))


@register("LeakyRelu")
def _leaky_relu(ctx: Lowering, node: ir.Node) -> None:
    simple_op(ctx, node, Op.LEAKY_RELU, [ctx.tensor(node.inputs[0])],
            make_options(schema.LeakyReluOptionsT, alpha=node.attributes.get_float("alpha", 0.01)))


@register("Elu")
def _elu(ctx: Lowering, node: ir.Node) -> None:
    if node.attributes.get_float("alpha", 1.0) != 1.0:
        raise unsupported(node, "TFLite's ELU has alpha 1")
    simple_op(ctx, node, Op.ELU, [ctx.tensor(node.inputs[0])])


@register("HardSigmoid")
def _hard_sigmoid(ctx: Lowering, node: ir.Node) -> None:
    """max(0, min(1, alpha * x + beta)) as MUL, ADD, RELU_0_TO_1."""
    alpha, beta = node.attributes.get_float("alpha", 0.2), node.attributes.get_float("beta", 0.5)
    shape = ctx.shape_of(node.outputs[0])
    scaled = ctx.new_tensor(f"{node.outputs[0].name}_scaled", shape, np.float32)
    ctx.op(Op.MUL, [ctx.tensor(node.inputs[0]), ctx.constant(f"{node.name}_alpha", np.float32(alpha))], [scaled],
           make_options(schema.MulOptionsT))
    shifted = ctx.new_tensor(f"{node.outputs[0].name}_shifted", shape, np.float32)
    ctx.op(Op.ADD, [scaled, ctx.constant(f"{node.name}_beta", np.float32(beta))], [shifted],
           make_options(schema.AddOptionsT))
    simple_op(ctx, node, Op.RELU_0_TO_1, [shifted])


@register("Clip")
def _clip(ctx: Lowering, node: ir.Node) -> None:
    low = ctx.const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    high = ctx.const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    for bound, index in ((low, 1), (high, 2)):
        if bound is None and len(node.inputs) > index and node.inputs[index] is not None:
            raise unsupported(node, "its bounds must be constants")
    bounds = (None if low is None else float(low), None if high is None else float(high))
    named = {(0.0, 6.0): Op.RELU6, (-1.0, 1.0): Op.RELU_N1_TO_1, (0.0, None): Op.RELU, (0.0, 1.0): Op.RELU_0_TO_1}
    x = ctx.tensor(node.inputs[0])
    if bounds in named:
        simple_op(ctx, node, named[bounds], [x])
        return
    if bounds == (None, None):
        alias(ctx, node)
        return
    if bounds[0] is not None and bounds[1] is not None:
        floor = ctx.new_tensor(f"{node.outputs[0].name}_floor", ctx.shape_of(node.outputs[0]), np.float32)
        ctx.op(Op.MAXIMUM, [x, ctx.constant(f"{node.name}_min", np.float32(bounds[0]))], [floor])
        simple_op(ctx, node, Op.MINIMUM, [floor, ctx.constant(f"{node.name}_max", np.float32(bounds[1]))])
    elif bounds[0] is not None:
        simple_op(ctx, node, Op.MAXIMUM, [x, ctx.constant(f"{node.name}_min", np.float32(bounds[0]))])
    else:
        simple_op(ctx, node, Op.MINIMUM, [x, ctx.constant(f"{node.name}_max", np.float32(bounds[1]))])


@register("Where")
def _where(ctx: Lowering, node: ir.Node) -> None:
    simple_op(ctx, node, Op.SELECT_V2, [ctx.tensor(v) for v in node.inputs])


@register("Cast")
def _cast(ctx: Lowering, node: ir.Node) -> None:
    simple_op(ctx, node, Op.CAST, [ctx.tensor(node.inputs[0])])

# --------------------------------------------------------------------------------------------
# softmax, normalization, reductions
# --------------------------------------------------------------------------------------------


@register("Softmax", "LogSoftmax")
def _softmax(ctx: Lowering, node: ir.Node) -> None:
    rank = tensor_rank(ctx, node.inputs[0])
    opset = ctx.model.opset_imports.get("", 13)
    axis = node.attributes.get_int("axis", -1 if opset >= 13 else 1) % rank
    if axis != rank - 1:
        raise unsupported(node, f"TFLite's softmax runs over the last axis; this one's axis is {axis} of rank {rank}")
    if node.op_type == "Softmax":
        simple_op(ctx, node, Op.SOFTMAX, [ctx.input(node.inputs[0])], make_options(schema.SoftmaxOptionsT, beta=1.0))
    else:
        simple_op(ctx, node, Op.LOG_SOFTMAX, [ctx.tensor(node.inputs[0])])


@register("LayerNormalization")
def _layer_norm(ctx: Lowering, node: ir.Node) -> None:
    """(x - mean) * rsqrt(mean((x - mean)^2) + eps) * gamma + beta over the trailing axes (TFLite has no LayerNorm op)."""
    x_value = node.inputs[0]
    rank = tensor_rank(ctx, x_value)
    axis = node.attributes.get_int("axis", -1) % rank
    epsilon = node.attributes.get_float("epsilon", 1e-5)
    shape = ctx.shape_of(x_value)
    reduced = [d if i < axis else 1 for i, d in enumerate(shape)]
    name = node.outputs[0].name
    axes = int32_constant(ctx, f"{node.name}_axes", list(range(axis, rank)))
    keep = make_options(schema.ReducerOptionsT, keepDims=True)
    x = ctx.tensor(x_value)

    def tensor(suffix: str, dims: list[int | None]) -> int:
        return ctx.new_tensor(f"{name}_{suffix}", dims, np.float32)

    mean, centred, squared, variance, shifted, inv = (tensor(s, d) for s, d in (
        ("mean", reduced), ("centred", shape), ("squared", shape), ("variance", reduced), ("variance_eps", reduced),
        ("rsqrt", reduced)))
    ctx.op(Op.MEAN, [x, axes], [mean], keep)
    ctx.op(Op.SUB, [x, mean], [centred], make_options(schema.SubOptionsT))
    ctx.op(Op.MUL, [centred, centred], [squared], make_options(schema.MulOptionsT))
    ctx.op(Op.MEAN, [squared, axes], [variance], keep)
    ctx.op(Op.ADD, [variance, ctx.constant(f"{node.name}_epsilon", np.float32(epsilon))], [shifted],
           make_options(schema.AddOptionsT))
    ctx.op(Op.RSQRT, [shifted], [inv])
    normalized = tensor("normalized", shape)
    ctx.op(Op.MUL, [centred, inv], [normalized], make_options(schema.MulOptionsT))
    scale = node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    scaled = tensor("scaled", shape) if bias is not None else ctx.output(node.outputs[0])
    ctx.op(Op.MUL, [normalized, ctx.tensor(scale)], [scaled], make_options(schema.MulOptionsT))
    if bias is not None:
        out = ctx.output(node.outputs[0])
        ctx.op(Op.ADD, [scaled, ctx.tensor(bias)], [out], make_options(schema.AddOptionsT))


_REDUCE = {"ReduceMean": Op.MEAN, "ReduceSum": Op.SUM, "ReduceMax": Op.REDUCE_MAX, "ReduceMin": Op.REDUCE_MIN,
           "ReduceProd": Op.REDUCE_PROD}


@register(*_REDUCE)
def _reduce(ctx: Lowering, node: ir.Node) -> None:
    rank = tensor_rank(ctx, node.inputs[0])
    axes = ints_argument(ctx, node, 1, "axes")
    if axes is None or not axes:
        if node.attributes.get_int("noop_with_empty_axes", 0):
            alias(ctx, node)
            return
        axes = list(range(rank))
    axes_index = int32_constant(ctx, f"{node.name}_axes", [a % rank for a in axes])
    keep = bool(node.attributes.get_int("keepdims", 1))
    simple_op(ctx, node, _REDUCE[node.op_type], [ctx.input(node.inputs[0]), axes_index],
            make_options(schema.ReducerOptionsT, keepDims=keep))
