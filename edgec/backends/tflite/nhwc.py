"""Converters of the `edgec.nhwc` ops (`convert_to_nhwc`): TFLite's native NHWC convolution, pooling and
normalization kernels, with ONNX's explicit pads mapped onto TFLite's SAME/VALID (or a PAD first).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.lower import Lowering
from edgec.backends.tflite.ops import (
    NHWC_OPS, attr_ints, bias_tensor, int32_constant, make_options, op_version, register, simple_op,
    unsupported, weight_tensor,
)
from edgec.errors import BadInputError

__all__: list[str] = []

Op = schema.BuiltinOperator
Act = schema.ActivationFunctionType
#: CONV_2D's version for grouped filters (TFLite's op versioning: older runtimes refuse it instead of misreading it).
_GROUPED_CONV_VERSION = 6

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
    return attr_ints(node, "pads", [0] * 4)


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
    strides = attr_ints(node, "strides", [1, 1])
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
# NHWC kernels
# --------------------------------------------------------------------------------------------


@register("Conv", domain=NHWC_OPS)
def _conv(ctx: Lowering, node: ir.Node) -> None:
    w_value = node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    w_shape = list(ctx.const_array(w_value).shape) if ctx.const_array(w_value) is not None else None
    if w_shape is None or len(w_shape) != 4:
        raise unsupported(node, "only 2-D convolutions with constant weights are lowered")
    out_channels, in_per_group, kh, kw = w_shape
    group = node.attributes.get_int("group", 1)
    in_channels = in_per_group * group
    kernel, dilations = [kh, kw], attr_ints(node, "dilations", [1, 1])
    strides = attr_ints(node, "strides", [1, 1])
    source, padding, extra = _spatial(ctx, node, kernel, dilations)
    if any(extra):
        source = _pad_nhwc(ctx, source, extra, 0.0, f"{ctx.flat.name(source)}_padded")
    activation, written = ctx.fused_activation(node)
    common = dict(padding=padding, strideH=strides[0], strideW=strides[1], dilationHFactor=dilations[0],
                  dilationWFactor=dilations[1], fusedActivationFunction=activation)
    if group == in_channels and in_per_group == 1:
        w = weight_tensor(ctx, w_value, (1, 2, 3, 0), node)
        b = bias_tensor(ctx, bias, node, source, w, out_channels)
        out = ctx.output(written)
        ctx.op(Op.DEPTHWISE_CONV_2D, [source, w, b], [out],
               make_options(schema.DepthwiseConv2DOptionsT, depthMultiplier=out_channels // in_channels, **common),
               op_version(ctx, 3))
        return
    # grouped convolutions too: CONV_2D infers the groups from the filter's input depth (OHWI, I = channels
    # per group). XNNPACK runs it as one grouped kernel (1 thread, 128 channels at 28x28: 0.28 ms in 4 or 32
    # groups vs 0.31 / 0.42 ms as SPLIT, one CONV_2D per group, CONCATENATION); the builtin kernels alone
    # run it in their slow reference kernel.
    w = weight_tensor(ctx, w_value, (0, 2, 3, 1), node)
    b = bias_tensor(ctx, bias, node, source, w, out_channels)
    out = ctx.output(written)
    ctx.op(Op.CONV_2D, [source, w, b], [out], make_options(schema.Conv2DOptionsT, **common),
           _GROUPED_CONV_VERSION if group > 1 else op_version(ctx, 3))


@register("MaxPool", "AveragePool", domain=NHWC_OPS)
def _pool(ctx: Lowering, node: ir.Node) -> None:
    kernel = attr_ints(node, "kernel_shape", [])
    dilations = attr_ints(node, "dilations", [1, 1])
    if len(kernel) != 2 or dilations != [1, 1]:
        raise unsupported(node, "only 2-D pooling without dilation is lowered")
    strides = attr_ints(node, "strides", [1, 1])
    source, padding, extra = _spatial(ctx, node, kernel, dilations)
    is_max = node.op_type == "MaxPool"
    activation, written = ctx.fused_activation(node)
    options = make_options(schema.Pool2DOptionsT, padding=padding, strideH=strides[0], strideW=strides[1],
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
        raise unsupported(node, "int8 average pooling that excludes padding other than TFLite's SAME")
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
    ctx.op(Op.MUL, [pooled, factor], [ctx.output(written)], make_options(schema.MulOptionsT, fusedActivationFunction=activation))


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


@register("GlobalAveragePool", "GlobalMaxPool", domain=NHWC_OPS)
def _global_pool(ctx: Lowering, node: ir.Node) -> None:
    axes = int32_constant(ctx, f"{node.name}_axes", [1, 2])
    code = Op.MEAN if node.op_type == "GlobalAveragePool" else Op.REDUCE_MAX
    simple_op(ctx, node, code, [ctx.input(node.inputs[0]), axes], make_options(schema.ReducerOptionsT, keepDims=True))


@register("BatchNormalization", domain=NHWC_OPS)
def _batch_norm_nhwc(ctx: Lowering, node: ir.Node) -> None:
    """Inference BatchNormalization (not folded into a convolution) as MUL + ADD over the channel axis."""
    arrays = [ctx.const_array(v) for v in node.inputs[1:5]]
    if any(a is None for a in arrays):
        raise unsupported(node, "its statistics are not constants")
    gamma, beta, mean, var = (a.astype(np.float64) for a in arrays)
    scale = gamma / np.sqrt(var + node.attributes.get_float("epsilon", 1e-5))
    shift = beta - mean * scale
    x = ctx.tensor(node.inputs[0])
    shape = ctx.shape_of(node.outputs[0])
    scaled = ctx.new_tensor(f"{node.outputs[0].name}_scaled", shape, np.float32)
    ctx.op(Op.MUL, [x, ctx.constant(f"{node.name}_scale", scale.astype(np.float32))], [scaled],
           make_options(schema.MulOptionsT, fusedActivationFunction=Act.NONE))
    activation, written = ctx.fused_activation(node)
    out = ctx.output(written)
    ctx.op(Op.ADD, [scaled, ctx.constant(f"{node.name}_shift", shift.astype(np.float32))], [out],
           make_options(schema.AddOptionsT, fusedActivationFunction=activation))


@register("LRN", domain=NHWC_OPS)
def _lrn(ctx: Lowering, node: ir.Node) -> None:
    size = node.attributes.get_int("size")
    if size % 2 == 0:
        raise unsupported(node, "an even LRN size has an asymmetric window TFLite cannot express")
    options = make_options(schema.LocalResponseNormalizationOptionsT, radius=(size - 1) // 2,
                       bias=node.attributes.get_float("bias", 1.0),
                       alpha=node.attributes.get_float("alpha", 1e-4) / size,
                       beta=node.attributes.get_float("beta", 0.75))
    simple_op(ctx, node, Op.LOCAL_RESPONSE_NORMALIZATION, [ctx.tensor(node.inputs[0])], options)
