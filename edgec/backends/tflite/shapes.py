"""Shape and data-movement ops: transposes, reshapes, concatenation, slicing, gathers, padding, and the
shape arithmetic of dynamic-shape models (SHAPE, FILL, RANGE).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite import quantization as q
from edgec.backends.tflite.lower import Lowering
from edgec.backends.tflite.ops import (
    attr_ints, int32_constant, ints_argument, make_options, register, simple_op, tensor_rank, unsupported,
)

__all__: list[str] = []

Op = schema.BuiltinOperator
Act = schema.ActivationFunctionType

# --------------------------------------------------------------------------------------------
# shapes and data movement
# --------------------------------------------------------------------------------------------



@register("Transpose")
def _transpose_node(ctx: Lowering, node: ir.Node) -> None:
    rank = tensor_rank(ctx, node.inputs[0])
    perm = attr_ints(node, "perm", list(reversed(range(rank))))
    dims = ctx.shape_of(node.inputs[0])
    moved = [axis for axis in perm if dims[axis] != 1]
    target = static_target(ctx, node)
    if moved == sorted(moved) and target is not None:  # only unit axes move (NHWC [N,1,1,C] -> NCHW): a RESHAPE
        reshape_to(ctx, node, int32_constant(ctx, f"{node.name}_shape", target))
        return
    simple_op(ctx, node, Op.TRANSPOSE, [ctx.input(node.inputs[0]), int32_constant(ctx, f"{node.name}_perm", perm)])


def reshape_to(ctx: Lowering, node: ir.Node, shape_index: int) -> None:
    simple_op(ctx, node, Op.RESHAPE, [ctx.input(node.inputs[0]), shape_index], int8_version=1)


def static_target(ctx: Lowering, node: ir.Node) -> list[int] | None:
    """The output's shape when static (at most one dynamic dim becomes -1)."""
    dims = ctx.shape_of(node.outputs[0])
    if sum(d is None for d in dims) > 1:
        return None
    return [-1 if d is None else d for d in dims]


@register("Reshape")
def _reshape(ctx: Lowering, node: ir.Node) -> None:
    target = static_target(ctx, node)
    if target is not None:
        reshape_to(ctx, node, int32_constant(ctx, f"{node.name}_shape", target))
        return
    shape = ctx.const_array(node.inputs[1])
    if shape is not None and not np.any(shape == 0):
        reshape_to(ctx, node, int32_constant(ctx, f"{node.name}_shape", shape.tolist()))
        return
    if shape is None and not node.attributes.get_int("allowzero", 0):
        # ONNX's 0 ("copy this dim") has no TFLite twin: replace it by the input's dim
        reshape_to(ctx, node, _dynamic_reshape_shape(ctx, node))
        return
    raise unsupported(node, "its target shape has a 0 (copy) entry and dynamic dims")


def _dynamic_reshape_shape(ctx: Lowering, node: ir.Node) -> int:
    """Where(shape == 0, Shape(x)[:len(shape)], shape), computed in the model: a run-time ONNX Reshape shape."""
    shape = ctx.tensor(node.inputs[1])
    length = ctx.shape_of(node.inputs[1])[0]
    x_rank = tensor_rank(ctx, node.inputs[0])
    x_shape = ctx.new_tensor(f"{node.name}_input_shape", [x_rank], np.int32)
    ctx.op(Op.SHAPE, [ctx.tensor(node.inputs[0])], [x_shape],
           make_options(schema.ShapeOptionsT, outType=schema.TensorType.INT32))
    if length is None or length > x_rank:
        return shape
    head = ctx.new_tensor(f"{node.name}_input_dims", [length], np.int32)
    ctx.op(Op.SLICE, [x_shape, int32_constant(ctx, f"{node.name}_begin", [0]),
                      int32_constant(ctx, f"{node.name}_size", [length])], [head])
    is_zero = ctx.new_tensor(f"{node.name}_is_copy", [length], np.bool_)
    ctx.op(Op.EQUAL, [shape, int32_constant(ctx, f"{node.name}_zero", [0])], [is_zero])
    resolved = ctx.new_tensor(f"{node.name}_resolved", [length], np.int32)
    ctx.op(Op.SELECT_V2, [is_zero, head, shape], [resolved])
    return resolved


@register("Flatten", "Squeeze", "Unsqueeze")
def _reshape_like(ctx: Lowering, node: ir.Node) -> None:
    """RESHAPE to the output's shape when at most one dim is dynamic; else the op's dynamic-shape form."""
    target = static_target(ctx, node)
    if target is not None:
        reshape_to(ctx, node, int32_constant(ctx, f"{node.name}_shape", target))
    elif node.op_type == "Unsqueeze":
        _expand_dims(ctx, node)
    elif node.op_type == "Squeeze":
        rank = tensor_rank(ctx, node.inputs[0])
        axes = [a % rank for a in ints_argument(ctx, node, 1, "axes") or []]
        if not axes:
            raise unsupported(node, "a Squeeze of every unit dim needs static shapes")
        simple_op(ctx, node, Op.SQUEEZE, [ctx.input(node.inputs[0])], make_options(schema.SqueezeOptionsT, squeezeDims=axes))
    else:
        dims = ctx.shape_of(node.inputs[0])
        axis = node.attributes.get_int("axis", 1) % (len(dims) + 1)
        lead, trail = dims[:axis], dims[axis:]
        if None in trail and None in lead:
            raise unsupported(node, "dynamic dims on both sides of the flattened axis")
        shape = [-1, int(np.prod(trail))] if None not in trail else [int(np.prod(lead)), -1]
        reshape_to(ctx, node, int32_constant(ctx, f"{node.name}_shape", shape))


def _expand_dims(ctx: Lowering, node: ir.Node) -> None:
    """Unsqueeze as one EXPAND_DIMS per new axis, in increasing output position."""
    rank = tensor_rank(ctx, node.outputs[0])
    axes = sorted(a % rank for a in ints_argument(ctx, node, 1, "axes"))
    current, dims = ctx.input(node.inputs[0]), list(ctx.shape_of(node.inputs[0]))
    for i, axis in enumerate(axes):
        dims.insert(axis, 1)
        last = i == len(axes) - 1
        out = ctx.output(node.outputs[0]) if last else ctx.new_tensor(f"{node.outputs[0].name}_{i}", dims,
                                                                       ctx.flat.dtype(current))
        ctx.op(Op.EXPAND_DIMS, [current, int32_constant(ctx, f"{node.name}_axis_{i}", [axis])], [out])
        current = out


@register("Concat")
def _concat(ctx: Lowering, node: ir.Node) -> None:
    rank = tensor_rank(ctx, node.outputs[0])
    axis = node.attributes.get_int("axis") % rank
    values = [v for v in node.inputs if v is not None]
    options = make_options(schema.ConcatenationOptionsT, axis=axis, fusedActivationFunction=Act.NONE)
    if ctx.plan is None:
        simple_op(ctx, node, Op.CONCATENATION, [ctx.tensor(v) for v in values], options)
        return
    params = q.node_params(ctx.plan.quantize)
    # TFLite's int8 concatenation needs every input on the output's scale and zero point
    inputs = [ctx.requantize(index, params, f"{ctx.flat.name(index)}_requantized")
              for index in (ctx.qtensor(v) for v in values)]
    simple_op(ctx, node, Op.CONCATENATION, inputs, options)


@register("Split")
def _split(ctx: Lowering, node: ir.Node) -> None:
    x = node.inputs[0]
    rank = tensor_rank(ctx, x)
    axis = node.attributes.get_int("axis", 0) % rank
    sizes = [ctx.static_shape(out, f"Split node '{node.name}'")[axis] for out in node.outputs]
    outputs = [ctx.output(out) for out in node.outputs]
    ctx.op(Op.SPLIT_V, [ctx.tensor(x), int32_constant(ctx, f"{node.name}_sizes", sizes),
                        int32_constant(ctx, f"{node.name}_axis", [axis])], outputs,
           make_options(schema.SplitVOptionsT, numSplits=len(outputs)))


@register("Slice")
def _slice(ctx: Lowering, node: ir.Node) -> None:
    """STRIDED_SLICE over every axis (axes ONNX leaves out are masked to their full extent)."""
    x = node.inputs[0]
    rank = tensor_rank(ctx, x)
    count = ctx.shape_of(node.inputs[1])[0] if len(node.inputs) > 1 else len(attr_ints(node, "starts", []))
    axes = ints_argument(ctx, node, 3, "axes") or list(range(count))
    steps = ints_argument(ctx, node, 4, "steps") or [1] * len(axes)
    axes = [axis % rank for axis in axes]
    stride = [1] * rank
    for axis, step in zip(axes, steps):
        stride[axis] = step
    masked = sum(1 << axis for axis in range(rank) if axis not in axes)
    begin = _per_axis(ctx, node, 1, "starts", axes, rank)
    end = _per_axis(ctx, node, 2, "ends", axes, rank)
    simple_op(ctx, node, Op.STRIDED_SLICE, [ctx.tensor(x), begin, end, int32_constant(ctx, f"{node.name}_strides", stride)],
            make_options(schema.StridedSliceOptionsT, beginMask=masked, endMask=masked))


def _per_axis(ctx: Lowering, node: ir.Node, index: int, name: str, axes: Sequence[int], rank: int) -> int:
    """A rank-long int32 vector holding Slice's `name` values at `axes` (0 elsewhere): a constant when they
    are known, else assembled in the model from the run-time vector."""
    known = ints_argument(ctx, node, index, name) if (
        len(node.inputs) <= index or ctx.const_array(node.inputs[index]) is not None) else None
    if known is not None:
        full = [0] * rank
        for axis, v in zip(axes, known):
            full[axis] = int(np.clip(v, np.iinfo(np.int32).min, np.iinfo(np.int32).max))
        return int32_constant(ctx, f"{node.name}_{name}", full)
    vector = ctx.tensor(node.inputs[index])
    pieces = []
    for axis in range(rank):
        if axis not in axes:
            pieces.append(int32_constant(ctx, f"{node.name}_{name}_{axis}", [0]))
            continue
        piece = ctx.new_tensor(f"{node.name}_{name}_{axis}", [1], np.int32)
        ctx.op(Op.SLICE, [vector, int32_constant(ctx, f"{node.name}_{name}_{axis}_at", [axes.index(axis)]),
                          int32_constant(ctx, f"{node.name}_{name}_{axis}_one", [1])], [piece])
        pieces.append(piece)
    out = ctx.new_tensor(f"{node.name}_{name}", [rank], np.int32)
    ctx.op(Op.CONCATENATION, pieces, [out], make_options(schema.ConcatenationOptionsT, axis=0))
    return out


@register("Gather")
def _gather(ctx: Lowering, node: ir.Node) -> None:
    data, indices = node.inputs
    axis = node.attributes.get_int("axis", 0) % tensor_rank(ctx, data)
    simple_op(ctx, node, Op.GATHER, [ctx.tensor(data), ctx.tensor(indices)],
            make_options(schema.GatherOptionsT, axis=axis, batchDims=0))


@register("Expand")
def _expand(ctx: Lowering, node: ir.Node) -> None:
    target = static_target(ctx, node)
    shape = (int32_constant(ctx, f"{node.name}_shape", target) if target is not None and -1 not in target
             else ctx.tensor(node.inputs[1]))
    out = ctx.output(node.outputs[0])
    ctx.op(Op.BROADCAST_TO, [ctx.tensor(node.inputs[0]), shape], [out], version=2)  # LiteRT registers it from 2


@register("Pad")
def _pad(ctx: Lowering, node: ir.Node) -> None:
    if node.attributes.get_string("mode", "constant") != "constant":
        raise unsupported(node, "only constant padding is lowered")
    x = node.inputs[0]
    rank = tensor_rank(ctx, x)
    pads = ints_argument(ctx, node, 1, "pads")
    axes = ints_argument(ctx, node, 3, "axes") or list(range(rank))
    paddings = np.zeros((rank, 2), np.int32)
    for i, axis in enumerate(axes):
        paddings[axis % rank] = [pads[i], pads[i + len(axes)]]
    if (paddings < 0).any():
        raise unsupported(node, "negative pads (cropping)")
    fill = ctx.const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    inputs = [ctx.input(x), ctx.constant(f"{node.name}_paddings", paddings)]
    if fill is not None and float(fill) != 0.0:
        inputs.append(ctx.constant(f"{node.name}_value", np.asarray(fill, _np_of(ctx, x))))
        simple_op(ctx, node, Op.PADV2, inputs)
    else:
        simple_op(ctx, node, Op.PAD, inputs)


def _np_of(ctx: Lowering, value: ir.Value) -> np.dtype:
    dtype = np.dtype(value.dtype.numpy())
    return np.dtype(np.int32) if dtype == np.int64 else dtype


@register("Shape")
def _shape(ctx: Lowering, node: ir.Node) -> None:
    start = node.attributes.get_int("start", 0)
    end = node.attributes.get_int("end", None)
    if start != 0 or end is not None:
        raise unsupported(node, "Shape with start/end")
    simple_op(ctx, node, Op.SHAPE, [ctx.tensor(node.inputs[0])],
            make_options(schema.ShapeOptionsT, outType=schema.TensorType.INT32))


@register("ConstantOfShape")
def _constant_of_shape(ctx: Lowering, node: ir.Node) -> None:
    attr = node.attributes.get("value")
    value = attr.as_tensor().numpy().reshape(-1)[0] if attr is not None else np.float32(0)
    fill = ctx.constant(f"{node.name}_value", np.asarray(value, _np_of(ctx, node.outputs[0])))
    simple_op(ctx, node, Op.FILL, [ctx.tensor(node.inputs[0]), fill])


@register("Constant")
def _constant_node(ctx: Lowering, node: ir.Node) -> None:
    """Nothing to write: readers take the value as a constant tensor (`Lowering.const_array` reads Constant nodes)."""


@register("Range")
def _range(ctx: Lowering, node: ir.Node) -> None:
    simple_op(ctx, node, Op.RANGE, [ctx.tensor(v) for v in node.inputs])
