"""One converter per ONNX op: each writes the TFLite builtin ops that compute the node.

A converter reads its inputs with `ctx.input` (int8 tensors when the node runs int8, see
`quantization`), writes its output with `ctx.output`, and takes a following ReLU/ReLU6 into the
kernel's fused activation with `ctx.fused_activation`. Nodes of the `edgec.nhwc` domain (from the
`convert_to_nhwc` pass) already take and give NHWC data, with ONNX's OIHW weights: they become
TFLite's native NHWC kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite import quantization as q
from edgec.backends.tflite.flatbuffer import QuantParams
from edgec.backends.tflite.lower import Lowering
from edgec.errors import BadInputError
from edgec.passes.layout import NHWC_DOMAIN

__all__ = ["converter_for", "check_supported", "supported_ops"]

Op = schema.BuiltinOperator
Act = schema.ActivationFunctionType
Converter = Callable[[Lowering, ir.Node], None]

_ONNX: dict[str, Converter] = {}
_NHWC: dict[str, Converter] = {}


def _register(*op_types: str, domain: dict[str, Converter] = _ONNX) -> Callable[[Converter], Converter]:
    def decorate(function: Converter) -> Converter:
        for op_type in op_types:
            domain[op_type] = function
        return function
    return decorate


def supported_ops() -> list[str]:
    return sorted({*_ONNX, *(f"{NHWC_DOMAIN}.{op}" for op in _NHWC), "QuantizeLinear", "DequantizeLinear"})


def _table(node: ir.Node) -> dict[str, Converter] | None:
    if node.domain in ("", "ai.onnx"):
        return _ONNX
    return _NHWC if node.domain == NHWC_DOMAIN else None


def _load_all() -> None:
    """Converters living in sibling modules register themselves when imported."""
    from edgec.backends.tflite import dynamic  # noqa: F401


def converter_for(node: ir.Node) -> Converter:
    table = _table(node)
    return table[node.op_type]


def check_supported(graph: ir.Graph) -> None:
    """Stop before writing anything when a node has no converter, naming every such node."""
    _load_all()
    missing = [node for node in graph if not (q.is_quantize(node) or q.is_dequantize(node))
               and ((table := _table(node)) is None or node.op_type not in table)]
    if missing:
        named = ", ".join(f"{(node.domain + '.') if node.domain else ''}{node.op_type} (node '{node.name}')"
                          for node in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise BadInputError(f"the TFLite lowering has no converter for {named}{more}; supported ops: "
                            f"{', '.join(supported_ops())}")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _version(ctx: Lowering, int8_version: int) -> int:
    return int8_version if ctx.plan is not None else 1


def _ints(node: ir.Node, name: str, default: Sequence[int]) -> list[int]:
    attr = node.attributes.get(name)
    return list(attr.as_ints()) if attr is not None else list(default)


def _input_or_attr_ints(ctx: Lowering, node: ir.Node, index: int, name: str) -> list[int] | None:
    """Axes-like argument that moved from an attribute to an input across opsets."""
    if len(node.inputs) > index and node.inputs[index] is not None:
        array = ctx.const_array(node.inputs[index])
        if array is None:
            raise BadInputError(f"{node.op_type} node '{node.name}': its {name} must be constant for TFLite")
        return [int(v) for v in np.asarray(array).reshape(-1)]
    attr = node.attributes.get(name)
    return None if attr is None else list(attr.as_ints())


def _unsupported(node: ir.Node, why: str) -> BadInputError:
    return BadInputError(f"the TFLite lowering cannot convert {node.op_type} node '{node.name}': {why}")


def _options(cls: type, **fields: object) -> object:
    options = cls()
    for key, value in fields.items():
        setattr(options, key, value)
    return options


def _const_int32(ctx: Lowering, name: str, values: Sequence[int]) -> int:
    return ctx.constant(name, np.asarray(values, np.int32))


def _rank(ctx: Lowering, value: ir.Value) -> int:
    return len(ctx.shape_of(value))


def _with_minus_one(dims: Sequence[int | None]) -> list[int]:
    """A RESHAPE target from dims: the dynamic one (at most one) as -1."""
    if sum(d is None for d in dims) > 1:
        raise BadInputError(f"cannot reshape to {list(dims)}: more than one dynamic dim")
    return [-1 if d is None else d for d in dims]


def _simple(ctx: Lowering, node: ir.Node, code: int, inputs: Sequence[int], options: object = None,
            int8_version: int = 2) -> int:
    out = ctx.output(node.outputs[0])
    ctx.op(code, inputs, [out], options, _version(ctx, int8_version))
    return out


# --------------------------------------------------------------------------------------------
# padding
# --------------------------------------------------------------------------------------------


def _explicit_pads(node: ir.Node, in_hw: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                   dilations: Sequence[int]) -> list[int]:
    """ONNX [top, left, bottom, right] pads, with `auto_pad` resolved."""
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * 4
        for i in range(2):
            effective = (kernel[i] - 1) * dilations[i] + 1
            out = -(-in_hw[i] // strides[i])
            total = max((out - 1) * strides[i] + effective - in_hw[i], 0)
            small, big = total // 2, total - total // 2
            pads[i], pads[i + 2] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        return pads
    if auto_pad == "VALID":
        return [0] * 4
    return _ints(node, "pads", [0] * 4)


def _tflite_padding(in_hw: Sequence[int], out_hw: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                    dilations: Sequence[int], pads: Sequence[int]) -> int | None:
    """VALID or SAME when TFLite's rule gives exactly these pads and output size, else None."""
    valid = same = True
    for i in range(2):
        effective = (kernel[i] - 1) * dilations[i] + 1
        out_valid = (in_hw[i] - effective) // strides[i] + 1
        valid &= pads[i] == 0 and pads[i + 2] == 0 and out_hw[i] == out_valid
        out_same = -(-in_hw[i] // strides[i])
        total = max((out_same - 1) * strides[i] + effective - in_hw[i], 0)
        same &= out_hw[i] == out_same and pads[i] == total // 2 and pads[i + 2] == total - total // 2
    if valid:
        return schema.Padding.VALID
    return schema.Padding.SAME if same else None


def _static_hw(ctx: Lowering, node: ir.Node, value: ir.Value) -> list[int]:
    """An NHWC value's height and width, which TFLite's padding is computed from (the batch may be dynamic)."""
    hw = ctx.shape_of(value)[1:3]
    if None in hw:
        raise BadInputError(f"{node.op_type} node '{node.name}': the height and width of '{value.name}' must be "
                            f"static, are {hw}; fix the input shapes with --fix-shape")
    return [int(d) for d in hw]


def _spatial(ctx: Lowering, node: ir.Node, kernel: Sequence[int], dilations: Sequence[int]
             ) -> tuple[int, int, list[int]]:
    """(input tensor, TFLite padding, extra [top, left, bottom, right] padding to apply first)."""
    x, y = node.inputs[0], node.outputs[0]
    in_hw, out_hw = _static_hw(ctx, node, x), _static_hw(ctx, node, y)
    strides = _ints(node, "strides", [1, 1])
    pads = _explicit_pads(node, in_hw, kernel, strides, dilations)
    padding = _tflite_padding(in_hw, out_hw, kernel, strides, dilations, pads)
    if padding is not None:
        return ctx.input(x), padding, [0, 0, 0, 0]
    # explicit padding, then VALID; extra end padding reproduces ceil_mode's last partial window
    extra = list(pads)
    for i in range(2):
        effective = (kernel[i] - 1) * dilations[i] + 1
        needed = (out_hw[i] - 1) * strides[i] + effective - (in_hw[i] + pads[i] + pads[i + 2])
        extra[i + 2] += max(needed, 0)
    return ctx.input(x), schema.Padding.VALID, extra


def _pad_nhwc(ctx: Lowering, index: int, pads: Sequence[int], value: float, name: str) -> int:
    """PAD/PADV2 an NHWC tensor by ONNX [top, left, bottom, right] pads with `value` (float; int8 pads its zero point)."""
    shape = ctx.flat.shape(index)
    paddings = np.asarray([[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]], np.int32)
    out_shape = [shape[0], shape[1] + pads[0] + pads[2], shape[2] + pads[1] + pads[3], shape[3]]
    quant = ctx.flat.quant(index)
    dtype = np.int8 if quant is not None else np.float32
    out = ctx.new_tensor(name, out_shape, dtype, quant)
    paddings_index = ctx.constant(f"{name}_paddings", paddings)
    if value == 0.0:
        ctx.op(Op.PAD, [index, paddings_index], [out], version=2 if quant is not None else 1)
        return out
    if quant is not None:
        fill = ctx.flat.add_constant(f"{name}_value", np.asarray(-128, np.int8), quant)
    else:
        fill = ctx.constant(f"{name}_value", np.asarray(value, np.float32))
    ctx.op(Op.PADV2, [index, paddings_index, fill], [out], version=2 if quant is not None else 1)
    return out


# --------------------------------------------------------------------------------------------
# weights and bias
# --------------------------------------------------------------------------------------------


def _weight(ctx: Lowering, value: ir.Value, perm: Sequence[int] | None, node: ir.Node) -> int:
    """A constant weight, transposed by `perm`; int8 per-channel when the node runs int8."""
    transform = (lambda array: np.ascontiguousarray(np.transpose(array, perm))) if perm is not None else None
    if ctx.plan is not None:
        if q.dq_source(value) is None:
            raise _unsupported(node, "an int8 kernel needs a quantized weight")
        return ctx.quantized_constant(value, transform, (lambda axis: list(perm).index(axis)) if perm else None)
    array = ctx.const_array(value)
    if array is None:
        raise _unsupported(node, "its weight is not a constant")
    return ctx.constant(f"{value.name}_tflite" if perm is not None else value.name,
                        transform(array) if transform else array)


def _hybrid_weight(ctx: Lowering, value: ir.Value, perm: Sequence[int] | None) -> int | None:
    """The int8 weight of a float-running matrix product whose weight the quantizer stored int8 (symmetric):
    TFLite's hybrid kernel keeps it int8 and quantizes the float input per call. None otherwise.

    That is a quantized Gemm/MatMul whose output nothing integer reads (logits): the quantizer leaves its
    output float, which TFLite's int8 FULLY_CONNECTED cannot write.
    """
    dq = q.dq_source(value)
    source = None if dq is None or ctx.plan is not None else ctx.const_array(dq.inputs[0])
    if source is None or source.dtype != np.int8 or np.any(q.node_params(dq).zero_point != 0):
        return None
    transform = (lambda array: np.ascontiguousarray(np.transpose(array, perm))) if perm is not None else None
    return ctx.quantized_constant(value, transform, (lambda axis: list(perm).index(axis)) if perm else None)


def _bias(ctx: Lowering, value: ir.Value | None, node: ir.Node, x: int, w: int, size: int) -> int:
    """The bias input: int32 at input scale x weight scale for int8 kernels, else float; zeros when absent
    (LiteRT's convolution kernels require one)."""
    if ctx.plan is None:
        if value is None:
            return ctx.constant(f"{ctx.flat.name(w)}_zero_bias", np.zeros(size, np.float32))
        array = ctx.const_array(value)
        if array is None:
            raise _unsupported(node, "its bias is not a constant")
        return ctx.constant(value.name, np.broadcast_to(array.astype(np.float32).reshape(-1), (size,)).copy())
    dq = q.dq_source(value)
    if dq is not None and ctx.const_array(dq.inputs[0]) is not None and ctx.const_array(dq.inputs[0]).dtype == np.int32:
        return ctx.quantized_constant(value)
    array = np.zeros(size, np.float32) if value is None else ctx.const_array(value)
    x_params, w_params = ctx.flat.quant(x), ctx.flat.quant(w)
    scale = (np.float64(x_params.scale.reshape(-1)[0]) * w_params.scale.astype(np.float64)).reshape(-1)
    scale = np.broadcast_to(scale, (size,))
    bias = np.broadcast_to(array.astype(np.float64).reshape(-1), (size,))
    quantized = np.clip(np.round(bias / scale), -(2**31) + 1, 2**31 - 1).astype(np.int32)
    params = QuantParams(scale.astype(np.float32), np.zeros(size, np.int64), 0 if size > 1 else None)
    name = ctx.flat.name(w) + "_zero_bias" if value is None else f"{value.name}_int32"
    return ctx.flat.add_constant(name, quantized, params)


# --------------------------------------------------------------------------------------------
# NHWC kernels
# --------------------------------------------------------------------------------------------


@_register("Conv", domain=_NHWC)
def _conv(ctx: Lowering, node: ir.Node) -> None:
    x, w_value = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    w_shape = list(ctx.const_array(w_value).shape) if ctx.const_array(w_value) is not None else None
    if w_shape is None or len(w_shape) != 4:
        raise _unsupported(node, "only 2-D convolutions with constant weights are lowered")
    out_channels, in_per_group, kh, kw = w_shape
    group = node.attributes.get_int("group", 1)
    in_channels = in_per_group * group
    kernel, dilations = [kh, kw], _ints(node, "dilations", [1, 1])
    strides = _ints(node, "strides", [1, 1])
    source, padding, extra = _spatial(ctx, node, kernel, dilations)
    if any(extra):
        source = _pad_nhwc(ctx, source, extra, 0.0, f"{ctx.flat.name(source)}_padded")
    activation, written = ctx.fused_activation(node)
    common = dict(padding=padding, strideH=strides[0], strideW=strides[1], dilationHFactor=dilations[0],
                  dilationWFactor=dilations[1], fusedActivationFunction=activation)
    if group == 1:
        w = _weight(ctx, w_value, (0, 2, 3, 1), node)
        b = _bias(ctx, bias, node, source, w, out_channels)
        out = ctx.output(written)
        ctx.op(Op.CONV_2D, [source, w, b], [out],
               _options(schema.Conv2DOptionsT, **common), _version(ctx, 3))
    elif group == in_channels and in_per_group == 1:
        w = _weight(ctx, w_value, (1, 2, 3, 0), node)
        b = _bias(ctx, bias, node, source, w, out_channels)
        out = ctx.output(written)
        ctx.op(Op.DEPTHWISE_CONV_2D, [source, w, b], [out],
               _options(schema.DepthwiseConv2DOptionsT, depthMultiplier=out_channels // in_channels, **common),
               _version(ctx, 3))
    else:
        _grouped_conv(ctx, node, source, group, common, written)


def _grouped_conv(ctx: Lowering, node: ir.Node, source: int, group: int, common: dict, written: ir.Value) -> None:
    """A grouped convolution as SPLIT -> one CONV_2D per group -> CONCATENATION (exact, and every kernel runs it)."""
    if ctx.plan is not None:
        raise _unsupported(node, "grouped convolutions are lowered in float only")
    weight = ctx.const_array(node.inputs[1])
    bias = ctx.const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    out_shape = ctx.shape_of(written)
    in_shape = ctx.flat.shape(source)
    per_in, per_out = in_shape[3] // group, weight.shape[0] // group
    parts = [ctx.new_tensor(f"{node.name}_in{g}", [*in_shape[:3], per_in], np.float32) for g in range(group)]
    ctx.op(Op.SPLIT, [_const_int32(ctx, f"{node.name}_split_axis", [3]), source], parts,
           _options(schema.SplitOptionsT, numSplits=group))
    results = []
    for g in range(group):
        w = ctx.constant(f"{node.name}_w{g}", np.ascontiguousarray(
            weight[g * per_out:(g + 1) * per_out].transpose(0, 2, 3, 1)))
        b = ctx.constant(f"{node.name}_b{g}", (bias[g * per_out:(g + 1) * per_out] if bias is not None
                                               else np.zeros(per_out, np.float32)).astype(np.float32))
        result = ctx.new_tensor(f"{node.name}_out{g}", [*out_shape[:3], per_out], np.float32)
        ctx.op(Op.CONV_2D, [parts[g], w, b], [result], _options(schema.Conv2DOptionsT, **common))
        results.append(result)
    out = ctx.output(written)
    ctx.op(Op.CONCATENATION, results, [out], _options(schema.ConcatenationOptionsT, axis=3))


@_register("MaxPool", "AveragePool", domain=_NHWC)
def _pool(ctx: Lowering, node: ir.Node) -> None:
    kernel = _ints(node, "kernel_shape", [])
    dilations = _ints(node, "dilations", [1, 1])
    if len(kernel) != 2 or dilations != [1, 1]:
        raise _unsupported(node, "only 2-D pooling without dilation is lowered")
    strides = _ints(node, "strides", [1, 1])
    source, padding, extra = _spatial(ctx, node, kernel, dilations)
    is_max = node.op_type == "MaxPool"
    activation, written = ctx.fused_activation(node)
    options = _options(schema.Pool2DOptionsT, padding=padding, strideH=strides[0], strideW=strides[1],
                       filterHeight=kernel[0], filterWidth=kernel[1], fusedActivationFunction=activation)
    code = Op.MAX_POOL_2D if is_max else Op.AVERAGE_POOL_2D
    if not any(extra):
        _keeping_input_params(ctx, written, code, [source], options)
        return
    padded = _pad_nhwc(ctx, source, extra, -np.inf if is_max else 0.0, f"{ctx.flat.name(source)}_padded")
    if is_max or node.attributes.get_int("count_include_pad", 0):
        _keeping_input_params(ctx, written, code, [padded], options)
        return
    if ctx.plan is not None:
        raise _unsupported(node, "int8 average pooling that excludes padding other than TFLite's SAME")
    # the window mean over zero padding, rescaled by window size / real cells in the window
    in_hw, out_hw = _static_hw(ctx, node, node.inputs[0]), _static_hw(ctx, node, node.outputs[0])
    real = []
    for axis in range(2):
        starts = np.arange(out_hw[axis]) * strides[axis] - extra[axis]
        real.append(np.minimum(starts + kernel[axis], in_hw[axis]) - np.maximum(starts, 0))
    counts = np.outer(real[0], real[1]).reshape(1, *out_hw, 1)
    options.fusedActivationFunction = Act.NONE
    pooled = ctx.new_tensor(f"{node.outputs[0].name}_over_padding", ctx.shape_of(node.outputs[0]), np.float32)
    ctx.op(code, [padded], [pooled], options)
    factor = ctx.constant(f"{node.name}_count_correction", (kernel[0] * kernel[1] / counts).astype(np.float32))
    ctx.op(Op.MUL, [pooled, factor], [ctx.output(written)], _options(schema.MulOptionsT, fusedActivationFunction=activation))


def _keeping_input_params(ctx: Lowering, written: ir.Value, code: int, inputs: list[int], options: object) -> None:
    """An op whose int8 kernel writes its input's scale and zero point; requantized when the calibrated output differs."""
    out = ctx.output(written)
    if ctx.plan is None:
        ctx.op(code, inputs, [out], options)
        return
    params = ctx.flat.quant(inputs[0])
    if params.same_as(ctx.flat.quant(out)):
        ctx.op(code, inputs, [out], options, version=2)
        return
    kept = ctx.new_tensor(f"{written.name}_input_params", ctx.flat.shape(out), np.int8, params)
    ctx.op(code, inputs, [kept], options, version=2)
    ctx.op(Op.QUANTIZE, [kept], [out], version=2)


@_register("GlobalAveragePool", "GlobalMaxPool", domain=_NHWC)
def _global_pool(ctx: Lowering, node: ir.Node) -> None:
    axes = _const_int32(ctx, f"{node.name}_axes", [1, 2])
    code = Op.MEAN if node.op_type == "GlobalAveragePool" else Op.REDUCE_MAX
    _simple(ctx, node, code, [ctx.input(node.inputs[0]), axes], _options(schema.ReducerOptionsT, keepDims=True))


@_register("BatchNormalization", domain=_NHWC)
def _batch_norm_nhwc(ctx: Lowering, node: ir.Node) -> None:
    """Inference BatchNormalization (not folded into a convolution) as MUL + ADD over the channel axis."""
    arrays = [ctx.const_array(v) for v in node.inputs[1:5]]
    if any(a is None for a in arrays):
        raise _unsupported(node, "its statistics are not constants")
    gamma, beta, mean, var = (a.astype(np.float64) for a in arrays)
    scale = gamma / np.sqrt(var + node.attributes.get_float("epsilon", 1e-5))
    shift = beta - mean * scale
    x = ctx.tensor(node.inputs[0])
    shape = ctx.shape_of(node.outputs[0])
    scaled = ctx.new_tensor(f"{node.outputs[0].name}_scaled", shape, np.float32)
    ctx.op(Op.MUL, [x, ctx.constant(f"{node.name}_scale", scale.astype(np.float32))], [scaled],
           _options(schema.MulOptionsT, fusedActivationFunction=Act.NONE))
    activation, written = ctx.fused_activation(node)
    out = ctx.output(written)
    ctx.op(Op.ADD, [scaled, ctx.constant(f"{node.name}_shift", shift.astype(np.float32))], [out],
           _options(schema.AddOptionsT, fusedActivationFunction=activation))


@_register("LRN", domain=_NHWC)
def _lrn(ctx: Lowering, node: ir.Node) -> None:
    size = node.attributes.get_int("size")
    if size % 2 == 0:
        raise _unsupported(node, "an even LRN size has an asymmetric window TFLite cannot express")
    options = _options(schema.LocalResponseNormalizationOptionsT, radius=(size - 1) // 2,
                       bias=node.attributes.get_float("bias", 1.0),
                       alpha=node.attributes.get_float("alpha", 1e-4) / size,
                       beta=node.attributes.get_float("beta", 0.75))
    _simple(ctx, node, Op.LOCAL_RESPONSE_NORMALIZATION, [ctx.tensor(node.inputs[0])], options)


# --------------------------------------------------------------------------------------------
# matrix products
# --------------------------------------------------------------------------------------------


def _fully_connected(ctx: Lowering, node: ir.Node, x: int, weight: int, bias: int, keep_dims: bool,
                     hybrid: bool = False) -> None:
    """FULLY_CONNECTED: float, int8, or hybrid (float input and output, int8 weight, the input quantized per call)."""
    activation, written = ctx.fused_activation(node)
    out = ctx.output(written)
    ctx.op(Op.FULLY_CONNECTED, [x, weight, bias], [out],
           _options(schema.FullyConnectedOptionsT, fusedActivationFunction=activation, keepNumDims=keep_dims,
                    asymmetricQuantizeInputs=hybrid), 9 if hybrid else _version(ctx, 4))


@_register("Gemm")
def _gemm(ctx: Lowering, node: ir.Node) -> None:
    a, b = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    alpha, beta = node.attributes.get_float("alpha", 1.0), node.attributes.get_float("beta", 1.0)
    trans_a, trans_b = node.attributes.get_int("transA", 0), node.attributes.get_int("transB", 0)
    b_array = ctx.const_array(b)
    c_array = ctx.const_array(c) if c is not None else None
    n = ctx.shape_of(node.outputs[0])[1] if b_array is None else b_array.shape[0 if trans_b else 1]
    bias_is_vector = c is None or (c_array is not None and c_array.size in (1, n) and
                                   (c_array.ndim < 2 or c_array.shape[0] == 1))
    if b_array is None or not bias_is_vector or (ctx.plan is not None and (alpha != 1.0 or beta != 1.0 or trans_a)):
        if ctx.plan is not None:
            raise _unsupported(node, "an int8 Gemm needs a constant weight, a vector bias and alpha = beta = 1")
        _gemm_general(ctx, node, alpha, beta, trans_a, trans_b)
        return
    x = ctx.input(a)
    if trans_a:
        x = _transpose(ctx, x, [1, 0], f"{a.name}_transposed")
    if ctx.plan is not None:
        w = _weight(ctx, b, None if trans_b else (1, 0), node)
        bias = _bias(ctx, c, node, x, w, n)
    else:
        w = _hybrid_weight(ctx, b, None if trans_b else (1, 0)) if alpha == 1.0 else None
        if w is None:
            w = ctx.constant(f"{b.name}_nk", np.ascontiguousarray((b_array if trans_b else b_array.T) * np.float32(alpha)))
        bias = -1 if c is None else ctx.constant(f"{c.name}_n", np.broadcast_to(
            (c_array.astype(np.float32) * np.float32(beta)).reshape(-1), (n,)).copy())
    _fully_connected(ctx, node, x, w, bias, keep_dims=False, hybrid=ctx.flat.quant(w) is not None and ctx.plan is None)


def _gemm_general(ctx: Lowering, node: ir.Node, alpha: float, beta: float, trans_a: int, trans_b: int) -> None:
    """Gemm with a computed weight or a matrix bias: BATCH_MATMUL, then scale and bias as MUL/ADD."""
    shape = ctx.shape_of(node.outputs[0])
    product = ctx.new_tensor(f"{node.outputs[0].name}_product", shape, np.float32)
    ctx.op(Op.BATCH_MATMUL, [ctx.tensor(node.inputs[0]), ctx.tensor(node.inputs[1])], [product],
           _options(schema.BatchMatMulOptionsT, adjX=bool(trans_a), adjY=bool(trans_b)))
    if alpha != 1.0:
        scaled = ctx.new_tensor(f"{node.outputs[0].name}_alpha", shape, np.float32)
        ctx.op(Op.MUL, [product, ctx.constant(f"{node.name}_alpha", np.float32(alpha))], [scaled],
               _options(schema.MulOptionsT))
        product = scaled
    c = node.inputs[2] if len(node.inputs) > 2 else None
    activation, written = ctx.fused_activation(node)
    out = ctx.output(written)
    if c is None:
        ctx.op(Op.RESHAPE, [product, _const_int32(ctx, f"{node.name}_shape", _with_minus_one(ctx.flat.shape(product)))],
               [out])
        return
    bias = ctx.tensor(c)
    if beta != 1.0:
        scaled_bias = ctx.new_tensor(f"{c.name}_beta", ctx.shape_of(c), np.float32)
        ctx.op(Op.MUL, [bias, ctx.constant(f"{node.name}_beta", np.float32(beta))], [scaled_bias],
               _options(schema.MulOptionsT))
        bias = scaled_bias
    ctx.op(Op.ADD, [product, bias], [out], _options(schema.AddOptionsT, fusedActivationFunction=activation))


def _bias_add(ctx: Lowering, node: ir.Node, n: int) -> ir.Node | None:
    """The Add alone reading `node`'s output with a constant [n] operand, if there is one."""
    uses = list(node.outputs[0].uses())
    if len(uses) != 1 or node.outputs[0].is_graph_output() or uses[0].node.op_type != "Add":
        return None
    add = uses[0].node
    other = add.inputs[1 - uses[0].idx]
    array = ctx.const_array(other)
    return add if array is not None and array.size == n and array.shape[-1:] == (n,) and add.domain == "" else None


@_register("MatMul")
def _matmul(ctx: Lowering, node: ir.Node) -> None:
    a, b = node.inputs
    b_array = ctx.const_array(b)
    if b_array is not None and b_array.ndim == 2:
        x = ctx.input(a)
        w = _hybrid_weight(ctx, b, (1, 0))
        hybrid = w is not None
        if w is None:
            w = _weight(ctx, b, (1, 0), node)
        bias, last = -1, node
        add = _bias_add(ctx, node, b_array.shape[1]) if ctx.plan is None else None
        if add is not None:  # MatMul + Add(bias) (3-D inputs, which matmul_add_to_gemm leaves): the FC's bias
            other = next(v for v in add.inputs if v is not node.outputs[0])
            bias, last = ctx.constant(other.name, ctx.const_array(other).astype(np.float32).reshape(-1)), add
            ctx.done.add(add)
        _fully_connected(ctx, last, x, w, bias, keep_dims=_rank(ctx, a) > 2, hybrid=hybrid)
        return
    if ctx.plan is not None:
        raise _unsupported(node, "an int8 MatMul of two activations is not lowered; keep it float")
    _simple(ctx, node, Op.BATCH_MATMUL, [ctx.tensor(a), ctx.tensor(b)], _options(schema.BatchMatMulOptionsT))


# --------------------------------------------------------------------------------------------
# elementwise
# --------------------------------------------------------------------------------------------

_BINARY = {"Add": (Op.ADD, schema.AddOptionsT), "Sub": (Op.SUB, schema.SubOptionsT),
           "Mul": (Op.MUL, schema.MulOptionsT), "Div": (Op.DIV, schema.DivOptionsT)}
_PLAIN_BINARY = {"Pow": Op.POW, "Max": Op.MAXIMUM, "Min": Op.MINIMUM, "Equal": Op.EQUAL, "Greater": Op.GREATER,
                 "Less": Op.LESS, "GreaterOrEqual": Op.GREATER_EQUAL, "LessOrEqual": Op.LESS_EQUAL,
                 "And": Op.LOGICAL_AND, "Or": Op.LOGICAL_OR, "PRelu": Op.PRELU}


@_register(*_BINARY)
def _arithmetic(ctx: Lowering, node: ir.Node) -> None:
    code, options_class = _BINARY[node.op_type]
    inputs = [ctx.input(v) for v in node.inputs]
    activation, written = ctx.fused_activation(node)
    out = ctx.output(written)
    ctx.op(code, inputs, [out], _options(options_class, fusedActivationFunction=activation), _version(ctx, 2))


@_register(*_PLAIN_BINARY)
def _plain_binary(ctx: Lowering, node: ir.Node) -> None:
    if node.op_type in ("Max", "Min") and len(node.inputs) != 2:
        _n_ary(ctx, node, _PLAIN_BINARY[node.op_type], None)
        return
    _simple(ctx, node, _PLAIN_BINARY[node.op_type], [ctx.tensor(v) for v in node.inputs])


@_register("Sum")
def _sum(ctx: Lowering, node: ir.Node) -> None:
    _n_ary(ctx, node, Op.ADD, schema.AddOptionsT)


def _n_ary(ctx: Lowering, node: ir.Node, code: int, options_class: type | None) -> None:
    """A variadic op as a chain of binary ones (the last one fuses a following ReLU)."""
    values = [v for v in node.inputs if v is not None]
    if len(values) == 1:
        _alias(ctx, node)
        return
    current = ctx.tensor(values[0])
    for i, value in enumerate(values[1:], start=1):
        last = i == len(values) - 1
        activation, written = ctx.fused_activation(node) if last else (Act.NONE, None)
        out = ctx.output(written) if last else ctx.new_tensor(f"{node.outputs[0].name}_{i}",
                                                               ctx.shape_of(node.outputs[0]), np.float32)
        options = _options(options_class, fusedActivationFunction=activation) if options_class else None
        ctx.op(code, [current, ctx.tensor(value)], [out], options)
        current = out


_UNARY = {"Relu": Op.RELU, "Sigmoid": Op.LOGISTIC, "Tanh": Op.TANH, "Exp": Op.EXP, "Log": Op.LOG, "Sqrt": Op.SQRT,
          "Abs": Op.ABS, "Neg": Op.NEG, "Floor": Op.FLOOR, "Ceil": Op.CEIL, "Round": Op.ROUND,
          "HardSwish": Op.HARD_SWISH, "Not": Op.LOGICAL_NOT, "Sin": Op.SIN, "Cos": Op.COS, "Sign": Op.SIGN}


@_register(*_UNARY)
def _unary(ctx: Lowering, node: ir.Node) -> None:
    _simple(ctx, node, _UNARY[node.op_type], [ctx.tensor(node.inputs[0])])


@_register("Reciprocal")
def _reciprocal(ctx: Lowering, node: ir.Node) -> None:
    one = ctx.constant(f"{node.name}_one", np.float32(1.0))
    _simple(ctx, node, Op.DIV, [one, ctx.tensor(node.inputs[0])], _options(schema.DivOptionsT))


@_register("Gelu")
def _gelu(ctx: Lowering, node: ir.Node) -> None:
    approximate = node.attributes.get_string("approximate", "none") == "tanh"
    _simple(ctx, node, Op.GELU, [ctx.tensor(node.inputs[0])], _options(schema.GeluOptionsT, approximate=approximate))


@_register("LeakyRelu")
def _leaky_relu(ctx: Lowering, node: ir.Node) -> None:
    _simple(ctx, node, Op.LEAKY_RELU, [ctx.tensor(node.inputs[0])],
            _options(schema.LeakyReluOptionsT, alpha=node.attributes.get_float("alpha", 0.01)))


@_register("Elu")
def _elu(ctx: Lowering, node: ir.Node) -> None:
    if node.attributes.get_float("alpha", 1.0) != 1.0:
        raise _unsupported(node, "TFLite's ELU has alpha 1")
    _simple(ctx, node, Op.ELU, [ctx.tensor(node.inputs[0])])


@_register("HardSigmoid")
def _hard_sigmoid(ctx: Lowering, node: ir.Node) -> None:
    """max(0, min(1, alpha * x + beta)) as MUL, ADD, RELU_0_TO_1."""
    alpha, beta = node.attributes.get_float("alpha", 0.2), node.attributes.get_float("beta", 0.5)
    shape = ctx.shape_of(node.outputs[0])
    scaled = ctx.new_tensor(f"{node.outputs[0].name}_scaled", shape, np.float32)
    ctx.op(Op.MUL, [ctx.tensor(node.inputs[0]), ctx.constant(f"{node.name}_alpha", np.float32(alpha))], [scaled],
           _options(schema.MulOptionsT))
    shifted = ctx.new_tensor(f"{node.outputs[0].name}_shifted", shape, np.float32)
    ctx.op(Op.ADD, [scaled, ctx.constant(f"{node.name}_beta", np.float32(beta))], [shifted],
           _options(schema.AddOptionsT))
    _simple(ctx, node, Op.RELU_0_TO_1, [shifted])


@_register("Clip")
def _clip(ctx: Lowering, node: ir.Node) -> None:
    low = ctx.const_array(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    high = ctx.const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    for bound, index in ((low, 1), (high, 2)):
        if bound is None and len(node.inputs) > index and node.inputs[index] is not None:
            raise _unsupported(node, "its bounds must be constants")
    bounds = (None if low is None else float(low), None if high is None else float(high))
    named = {(0.0, 6.0): Op.RELU6, (-1.0, 1.0): Op.RELU_N1_TO_1, (0.0, None): Op.RELU, (0.0, 1.0): Op.RELU_0_TO_1}
    x = ctx.tensor(node.inputs[0])
    if bounds in named:
        _simple(ctx, node, named[bounds], [x])
        return
    if bounds == (None, None):
        _alias(ctx, node)
        return
    if bounds[0] is not None and bounds[1] is not None:
        floor = ctx.new_tensor(f"{node.outputs[0].name}_floor", ctx.shape_of(node.outputs[0]), np.float32)
        ctx.op(Op.MAXIMUM, [x, ctx.constant(f"{node.name}_min", np.float32(bounds[0]))], [floor])
        _simple(ctx, node, Op.MINIMUM, [floor, ctx.constant(f"{node.name}_max", np.float32(bounds[1]))])
    elif bounds[0] is not None:
        _simple(ctx, node, Op.MAXIMUM, [x, ctx.constant(f"{node.name}_min", np.float32(bounds[0]))])
    else:
        _simple(ctx, node, Op.MINIMUM, [x, ctx.constant(f"{node.name}_max", np.float32(bounds[1]))])


@_register("Where")
def _where(ctx: Lowering, node: ir.Node) -> None:
    _simple(ctx, node, Op.SELECT_V2, [ctx.tensor(v) for v in node.inputs])


@_register("Cast")
def _cast(ctx: Lowering, node: ir.Node) -> None:
    _simple(ctx, node, Op.CAST, [ctx.tensor(node.inputs[0])])


@_register("Identity", "Dropout")
def _alias(ctx: Lowering, node: ir.Node) -> None:
    """The output is the input's tensor (int8 view included)."""
    source, out = node.inputs[0], node.outputs[0]
    if ctx.plan is not None:
        ctx.set_int8(ctx.plan.quantize.outputs[0], ctx.qtensor(source))
        return
    ctx.set_float(out, ctx.tensor(source))


# --------------------------------------------------------------------------------------------
# softmax, normalization, reductions
# --------------------------------------------------------------------------------------------


@_register("Softmax", "LogSoftmax")
def _softmax(ctx: Lowering, node: ir.Node) -> None:
    rank = _rank(ctx, node.inputs[0])
    opset = ctx.model.opset_imports.get("", 13)
    axis = node.attributes.get_int("axis", -1 if opset >= 13 else 1) % rank
    if axis != rank - 1:
        raise _unsupported(node, f"TFLite's softmax runs over the last axis; this one's axis is {axis} of rank {rank}")
    if node.op_type == "Softmax":
        _simple(ctx, node, Op.SOFTMAX, [ctx.tensor(node.inputs[0])], _options(schema.SoftmaxOptionsT, beta=1.0))
    else:
        _simple(ctx, node, Op.LOG_SOFTMAX, [ctx.tensor(node.inputs[0])])


@_register("LayerNormalization")
def _layer_norm(ctx: Lowering, node: ir.Node) -> None:
    """(x - mean) * rsqrt(mean((x - mean)^2) + eps) * gamma + beta over the trailing axes (TFLite has no LayerNorm op)."""
    x_value = node.inputs[0]
    rank = _rank(ctx, x_value)
    axis = node.attributes.get_int("axis", -1) % rank
    epsilon = node.attributes.get_float("epsilon", 1e-5)
    shape = ctx.shape_of(x_value)
    reduced = [d if i < axis else 1 for i, d in enumerate(shape)]
    name = node.outputs[0].name
    axes = _const_int32(ctx, f"{node.name}_axes", list(range(axis, rank)))
    keep = _options(schema.ReducerOptionsT, keepDims=True)
    x = ctx.tensor(x_value)

    def tensor(suffix: str, dims: list[int | None]) -> int:
        return ctx.new_tensor(f"{name}_{suffix}", dims, np.float32)

    mean, centred, squared, variance, shifted, inv = (tensor(s, d) for s, d in (
        ("mean", reduced), ("centred", shape), ("squared", shape), ("variance", reduced), ("variance_eps", reduced),
        ("rsqrt", reduced)))
    ctx.op(Op.MEAN, [x, axes], [mean], keep)
    ctx.op(Op.SUB, [x, mean], [centred], _options(schema.SubOptionsT))
    ctx.op(Op.MUL, [centred, centred], [squared], _options(schema.MulOptionsT))
    ctx.op(Op.MEAN, [squared, axes], [variance], keep)
    ctx.op(Op.ADD, [variance, ctx.constant(f"{node.name}_epsilon", np.float32(epsilon))], [shifted],
           _options(schema.AddOptionsT))
    ctx.op(Op.RSQRT, [shifted], [inv])
    normalized = tensor("normalized", shape)
    ctx.op(Op.MUL, [centred, inv], [normalized], _options(schema.MulOptionsT))
    scale = node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    scaled = tensor("scaled", shape) if bias is not None else ctx.output(node.outputs[0])
    ctx.op(Op.MUL, [normalized, ctx.tensor(scale)], [scaled], _options(schema.MulOptionsT))
    if bias is not None:
        out = ctx.output(node.outputs[0])
        ctx.op(Op.ADD, [scaled, ctx.tensor(bias)], [out], _options(schema.AddOptionsT))


_REDUCE = {"ReduceMean": Op.MEAN, "ReduceSum": Op.SUM, "ReduceMax": Op.REDUCE_MAX, "ReduceMin": Op.REDUCE_MIN,
           "ReduceProd": Op.REDUCE_PROD}


@_register(*_REDUCE)
def _reduce(ctx: Lowering, node: ir.Node) -> None:
    rank = _rank(ctx, node.inputs[0])
    axes = _input_or_attr_ints(ctx, node, 1, "axes")
    if axes is None or not axes:
        if node.attributes.get_int("noop_with_empty_axes", 0):
            _alias(ctx, node)
            return
        axes = list(range(rank))
    axes_index = _const_int32(ctx, f"{node.name}_axes", [a % rank for a in axes])
    keep = bool(node.attributes.get_int("keepdims", 1))
    _simple(ctx, node, _REDUCE[node.op_type], [ctx.input(node.inputs[0]), axes_index],
            _options(schema.ReducerOptionsT, keepDims=keep))


# --------------------------------------------------------------------------------------------
# shapes and data movement
# --------------------------------------------------------------------------------------------


def _transpose(ctx: Lowering, index: int, perm: Sequence[int], name: str) -> int:
    shape = ctx.flat.shape(index)
    quant = ctx.flat.quant(index)
    out = ctx.new_tensor(name, [shape[p] for p in perm], np.int8 if quant is not None else ctx.flat_dtype(index),
                         quant)
    ctx.op(Op.TRANSPOSE, [index, _const_int32(ctx, f"{name}_perm", perm)], [out], version=2 if quant else 1)
    return out


@_register("Transpose")
def _transpose_node(ctx: Lowering, node: ir.Node) -> None:
    rank = _rank(ctx, node.inputs[0])
    perm = _ints(node, "perm", list(reversed(range(rank))))
    _simple(ctx, node, Op.TRANSPOSE, [ctx.input(node.inputs[0]), _const_int32(ctx, f"{node.name}_perm", perm)])


def _reshape_to(ctx: Lowering, node: ir.Node, shape_index: int) -> None:
    _simple(ctx, node, Op.RESHAPE, [ctx.input(node.inputs[0]), shape_index], int8_version=1)


def _static_target(ctx: Lowering, node: ir.Node) -> list[int] | None:
    """The output's shape when static (at most one dynamic dim becomes -1)."""
    dims = ctx.shape_of(node.outputs[0])
    if sum(d is None for d in dims) > 1:
        return None
    return [-1 if d is None else d for d in dims]


@_register("Reshape")
def _reshape(ctx: Lowering, node: ir.Node) -> None:
    target = _static_target(ctx, node)
    if target is not None:
        _reshape_to(ctx, node, _const_int32(ctx, f"{node.name}_shape", target))
        return
    shape = ctx.const_array(node.inputs[1])
    if shape is not None and not np.any(shape == 0):
        _reshape_to(ctx, node, _const_int32(ctx, f"{node.name}_shape", shape.tolist()))
        return
    if shape is None and not node.attributes.get_int("allowzero", 0):
        # ONNX's 0 ("copy this dim") has no TFLite twin: replace it by the input's dim
        _reshape_to(ctx, node, _dynamic_reshape_shape(ctx, node))
        return
    raise _unsupported(node, "its target shape has a 0 (copy) entry and dynamic dims")


def _dynamic_reshape_shape(ctx: Lowering, node: ir.Node) -> int:
    """Where(shape == 0, Shape(x)[:len(shape)], shape), computed in the model: a run-time ONNX Reshape shape."""
    shape = ctx.tensor(node.inputs[1])
    length = ctx.shape_of(node.inputs[1])[0]
    x_rank = _rank(ctx, node.inputs[0])
    x_shape = ctx.new_tensor(f"{node.name}_input_shape", [x_rank], np.int32)
    ctx.op(Op.SHAPE, [ctx.tensor(node.inputs[0])], [x_shape],
           _options(schema.ShapeOptionsT, outType=schema.TensorType.INT32))
    if length is None or length > x_rank:
        return shape
    head = ctx.new_tensor(f"{node.name}_input_dims", [length], np.int32)
    ctx.op(Op.SLICE, [x_shape, _const_int32(ctx, f"{node.name}_begin", [0]),
                      _const_int32(ctx, f"{node.name}_size", [length])], [head])
    is_zero = ctx.new_tensor(f"{node.name}_is_copy", [length], np.bool_)
    ctx.op(Op.EQUAL, [shape, _const_int32(ctx, f"{node.name}_zero", [0])], [is_zero])
    resolved = ctx.new_tensor(f"{node.name}_resolved", [length], np.int32)
    ctx.op(Op.SELECT_V2, [is_zero, head, shape], [resolved])
    return resolved


@_register("Flatten", "Squeeze", "Unsqueeze")
def _reshape_like(ctx: Lowering, node: ir.Node) -> None:
    """RESHAPE to the output's shape when at most one dim is dynamic; else the op's dynamic-shape form."""
    target = _static_target(ctx, node)
    if target is not None:
        _reshape_to(ctx, node, _const_int32(ctx, f"{node.name}_shape", target))
    elif node.op_type == "Unsqueeze":
        _expand_dims(ctx, node)
    elif node.op_type == "Squeeze":
        rank = _rank(ctx, node.inputs[0])
        axes = [a % rank for a in _input_or_attr_ints(ctx, node, 1, "axes") or []]
        if not axes:
            raise _unsupported(node, "a Squeeze of every unit dim needs static shapes")
        _simple(ctx, node, Op.SQUEEZE, [ctx.input(node.inputs[0])], _options(schema.SqueezeOptionsT, squeezeDims=axes))
    else:
        dims = ctx.shape_of(node.inputs[0])
        axis = node.attributes.get_int("axis", 1) % (len(dims) + 1)
        lead, trail = dims[:axis], dims[axis:]
        if None in trail and None in lead:
            raise _unsupported(node, "dynamic dims on both sides of the flattened axis")
        shape = [-1, int(np.prod(trail))] if None not in trail else [int(np.prod(lead)), -1]
        _reshape_to(ctx, node, _const_int32(ctx, f"{node.name}_shape", shape))


def _expand_dims(ctx: Lowering, node: ir.Node) -> None:
    """Unsqueeze as one EXPAND_DIMS per new axis, in increasing output position."""
    rank = _rank(ctx, node.outputs[0])
    axes = sorted(a % rank for a in _input_or_attr_ints(ctx, node, 1, "axes"))
    current, dims = ctx.input(node.inputs[0]), list(ctx.shape_of(node.inputs[0]))
    for i, axis in enumerate(axes):
        dims.insert(axis, 1)
        last = i == len(axes) - 1
        out = ctx.output(node.outputs[0]) if last else ctx.new_tensor(f"{node.outputs[0].name}_{i}", dims,
                                                                       ctx.flat_dtype(current))
        ctx.op(Op.EXPAND_DIMS, [current, _const_int32(ctx, f"{node.name}_axis_{i}", [axis])], [out])
        current = out


@_register("Concat")
def _concat(ctx: Lowering, node: ir.Node) -> None:
    rank = _rank(ctx, node.outputs[0])
    axis = node.attributes.get_int("axis") % rank
    values = [v for v in node.inputs if v is not None]
    options = _options(schema.ConcatenationOptionsT, axis=axis, fusedActivationFunction=Act.NONE)
    if ctx.plan is None:
        _simple(ctx, node, Op.CONCATENATION, [ctx.tensor(v) for v in values], options)
        return
    params = q.node_params(ctx.plan.quantize)
    # TFLite's int8 concatenation needs every input on the output's scale and zero point
    inputs = [ctx.requantize(index, params, f"{ctx.flat.name(index)}_requantized")
              for index in (ctx.qtensor(v) for v in values)]
    _simple(ctx, node, Op.CONCATENATION, inputs, options)


@_register("Split")
def _split(ctx: Lowering, node: ir.Node) -> None:
    x = node.inputs[0]
    rank = _rank(ctx, x)
    axis = node.attributes.get_int("axis", 0) % rank
    sizes = [ctx.static_shape(out, f"Split node '{node.name}'")[axis] for out in node.outputs]
    outputs = [ctx.output(out) for out in node.outputs]
    ctx.op(Op.SPLIT_V, [ctx.tensor(x), _const_int32(ctx, f"{node.name}_sizes", sizes),
                        _const_int32(ctx, f"{node.name}_axis", [axis])], outputs,
           _options(schema.SplitVOptionsT, numSplits=len(outputs)))


@_register("Slice")
def _slice(ctx: Lowering, node: ir.Node) -> None:
    """STRIDED_SLICE over every axis (axes ONNX leaves out are masked to their full extent)."""
    x = node.inputs[0]
    rank = _rank(ctx, x)
    count = ctx.shape_of(node.inputs[1])[0] if len(node.inputs) > 1 else len(_ints(node, "starts", []))
    axes = _input_or_attr_ints(ctx, node, 3, "axes") or list(range(count))
    steps = _input_or_attr_ints(ctx, node, 4, "steps") or [1] * len(axes)
    axes = [axis % rank for axis in axes]
    stride = [1] * rank
    for axis, step in zip(axes, steps):
        stride[axis] = step
    masked = sum(1 << axis for axis in range(rank) if axis not in axes)
    begin = _per_axis(ctx, node, 1, "starts", axes, rank)
    end = _per_axis(ctx, node, 2, "ends", axes, rank)
    _simple(ctx, node, Op.STRIDED_SLICE, [ctx.tensor(x), begin, end, _const_int32(ctx, f"{node.name}_strides", stride)],
            _options(schema.StridedSliceOptionsT, beginMask=masked, endMask=masked))


def _per_axis(ctx: Lowering, node: ir.Node, index: int, name: str, axes: Sequence[int], rank: int) -> int:
    """A rank-long int32 vector holding Slice's `name` values at `axes` (0 elsewhere): a constant when they
    are known, else assembled in the model from the run-time vector."""
    known = _input_or_attr_ints(ctx, node, index, name) if (
        len(node.inputs) <= index or ctx.const_array(node.inputs[index]) is not None) else None
    if known is not None:
        full = [0] * rank
        for axis, v in zip(axes, known):
            full[axis] = int(np.clip(v, np.iinfo(np.int32).min, np.iinfo(np.int32).max))
        return _const_int32(ctx, f"{node.name}_{name}", full)
    vector = ctx.tensor(node.inputs[index])
    pieces = []
    for axis in range(rank):
        if axis not in axes:
            pieces.append(_const_int32(ctx, f"{node.name}_{name}_{axis}", [0]))
            continue
        piece = ctx.new_tensor(f"{node.name}_{name}_{axis}", [1], np.int32)
        ctx.op(Op.SLICE, [vector, _const_int32(ctx, f"{node.name}_{name}_{axis}_at", [axes.index(axis)]),
                          _const_int32(ctx, f"{node.name}_{name}_{axis}_one", [1])], [piece])
        pieces.append(piece)
    out = ctx.new_tensor(f"{node.name}_{name}", [rank], np.int32)
    ctx.op(Op.CONCATENATION, pieces, [out], _options(schema.ConcatenationOptionsT, axis=0))
    return out


@_register("Gather")
def _gather(ctx: Lowering, node: ir.Node) -> None:
    data, indices = node.inputs
    axis = node.attributes.get_int("axis", 0) % _rank(ctx, data)
    _simple(ctx, node, Op.GATHER, [ctx.tensor(data), ctx.tensor(indices)],
            _options(schema.GatherOptionsT, axis=axis, batchDims=0))


@_register("Expand")
def _expand(ctx: Lowering, node: ir.Node) -> None:
    target = _static_target(ctx, node)
    shape = (_const_int32(ctx, f"{node.name}_shape", target) if target is not None and -1 not in target
             else ctx.tensor(node.inputs[1]))
    out = ctx.output(node.outputs[0])
    ctx.op(Op.BROADCAST_TO, [ctx.tensor(node.inputs[0]), shape], [out], version=2)  # LiteRT registers it from 2


@_register("Pad")
def _pad(ctx: Lowering, node: ir.Node) -> None:
    if node.attributes.get_string("mode", "constant") != "constant":
        raise _unsupported(node, "only constant padding is lowered")
    x = node.inputs[0]
    rank = _rank(ctx, x)
    pads = _input_or_attr_ints(ctx, node, 1, "pads")
    axes = _input_or_attr_ints(ctx, node, 3, "axes") or list(range(rank))
    paddings = np.zeros((rank, 2), np.int32)
    for i, axis in enumerate(axes):
        paddings[axis % rank] = [pads[i], pads[i + len(axes)]]
    if (paddings < 0).any():
        raise _unsupported(node, "negative pads (cropping)")
    fill = ctx.const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    inputs = [ctx.input(x), ctx.constant(f"{node.name}_paddings", paddings)]
    if fill is not None and float(fill) != 0.0:
        inputs.append(ctx.constant(f"{node.name}_value", np.asarray(fill, _np_of(ctx, x))))
        _simple(ctx, node, Op.PADV2, inputs)
    else:
        _simple(ctx, node, Op.PAD, inputs)


def _np_of(ctx: Lowering, value: ir.Value) -> np.dtype:
    dtype = np.dtype(value.dtype.numpy())
    return np.dtype(np.int32) if dtype == np.int64 else dtype


@_register("Shape")
def _shape(ctx: Lowering, node: ir.Node) -> None:
    start = node.attributes.get_int("start", 0)
    end = node.attributes.get_int("end", None)
    if start != 0 or end is not None:
        raise _unsupported(node, "Shape with start/end")
    _simple(ctx, node, Op.SHAPE, [ctx.tensor(node.inputs[0])],
            _options(schema.ShapeOptionsT, outType=schema.TensorType.INT32))


@_register("ConstantOfShape")
def _constant_of_shape(ctx: Lowering, node: ir.Node) -> None:
    attr = node.attributes.get("value")
    value = attr.as_tensor().numpy().reshape(-1)[0] if attr is not None else np.float32(0)
    fill = ctx.constant(f"{node.name}_value", np.asarray(value, _np_of(ctx, node.outputs[0])))
    _simple(ctx, node, Op.FILL, [ctx.tensor(node.inputs[0]), fill])


@_register("Constant")
def _constant_node(ctx: Lowering, node: ir.Node) -> None:
    """Nothing to write: readers take the value as a constant tensor (`Lowering.const_array` reads Constant nodes)."""


@_register("Range")
def _range(ctx: Lowering, node: ir.Node) -> None:
    _simple(ctx, node, Op.RANGE, [ctx.tensor(v) for v in node.inputs])
