"""Dynamic-range int8: edgec's dynamic MatMul rewrite -> TFLite's hybrid FULLY_CONNECTED.

`edgec.quant.dynamic` writes each dynamically quantized MatMul/Gemm as

    DynamicQuantizeLinear(A) -> MatMulInteger(A_q, W_q, A_zp, W_zp) -> Cast -> Mul(., A_scale * W_scale) [-> Add(bias)]

TFLite runs that whole pattern as one hybrid kernel: FULLY_CONNECTED with float input and output and
int8 per-channel weights, which quantizes each call's input itself (`asymmetric_quantize_inputs`:
asymmetric, from the input's own range, as DynamicQuantizeLinear does). So the pattern lowers to that
one op, and DynamicQuantizeLinear, whose outputs only the pattern reads, writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.flatbuffer import QuantParams
from edgec.backends.tflite.lower import Lowering
from edgec.backends.tflite.ops import register, unsupported

__all__: list[str] = []

Op = schema.BuiltinOperator


def _sole_reader(value: ir.Value, op_type: str) -> ir.Node | None:
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output() or uses[0].node.op_type != op_type:
        return None
    return uses[0].node


@register("DynamicQuantizeLinear")
def _dynamic_quantize(ctx: Lowering, node: ir.Node) -> None:
    """Nothing to write: each MatMulInteger reading it becomes a hybrid kernel that quantizes its input itself,
    and the scale products (A_scale * W_scale) it feeds are that kernel's business."""
    quantized, scale, zero_point = node.outputs
    for value, op_type in ((quantized, "MatMulInteger"), (zero_point, "MatMulInteger"), (scale, "Mul")):
        for use in value.uses():
            if use.node.op_type != op_type or value.is_graph_output():
                raise unsupported(node, f"its output feeds {use.node.op_type} '{use.node.name}'; only edgec's "
                                         "dynamic MatMul pattern lowers")
            if op_type == "Mul":
                ctx.done.add(use.node)


@register("MatMulInteger")
def _matmul_integer(ctx: Lowering, node: ir.Node) -> None:
    weight = ctx.const_array(node.inputs[1])
    w_zero = ctx.const_array(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    found = _per_call(node) or _per_token(node)
    if (found is None or weight is None or weight.ndim != 2 or weight.dtype != np.int8
            or (w_zero is not None and np.any(w_zero != 0))):
        raise unsupported(node, "only edgec's dynamic MatMul patterns with symmetric int8 constant weights lower")
    a, chain, w_scale_value = found
    n = weight.shape[1]
    scales = np.broadcast_to(np.asarray(ctx.const_array(w_scale_value), np.float32).reshape(-1), (n,)).copy()
    params = QuantParams(scales, np.zeros(n, np.int64), 0 if scales.size > 1 else None)
    w = ctx.flat.add_constant(node.inputs[1].name, np.ascontiguousarray(weight.T), params)
    written, bias = chain[-1].outputs[0], -1
    add = _sole_reader(written, "Add")
    if add is not None:
        other = next(v for v in add.inputs if v is not written)
        array = ctx.const_array(other)
        if array is not None and array.size == n:
            bias, written = ctx.constant(other.name, array.astype(np.float32).reshape(n)), add.outputs[0]
            ctx.done.add(add)
    ctx.done.update(chain)
    out = ctx.output(written)
    options = schema.FullyConnectedOptionsT()
    options.keepNumDims = len(ctx.shape_of(a)) > 2
    options.asymmetricQuantizeInputs = True
    ctx.op(Op.FULLY_CONNECTED, [ctx.tensor(a), w, bias], [out], options, version=9)


def _chain(start: ir.Value, op_types: Sequence[str]) -> list[ir.Node] | None:
    """The nodes of `op_types`, each the sole reader of the previous one's output, from `start` on."""
    nodes, value = [], start
    for op_type in op_types:
        node = _sole_reader(value, op_type)
        if node is None:
            return None
        nodes.append(node)
        value = node.outputs[0]
    return nodes


def _other(node: ir.Node, value: ir.Value) -> ir.Value:
    return next(v for v in node.inputs if v is not value)


def _per_call(node: ir.Node) -> tuple[ir.Value, list[ir.Node], ir.Value] | None:
    """DynamicQuantizeLinear(A) -> MatMulInteger -> Cast -> Mul(., A_scale * W_scale): (A, the nodes after, W_scale)."""
    quantize = node.inputs[0].producer()
    chain = _chain(node.outputs[0], ["Cast", "Mul"])
    if quantize is None or quantize.op_type != "DynamicQuantizeLinear" or chain is None:
        return None
    scale_product = _other(chain[1], chain[0].outputs[0]).producer()
    if scale_product is None or scale_product.op_type != "Mul":
        return None
    return quantize.inputs[0], chain, _other(scale_product, quantize.outputs[1])


def _per_token(node: ir.Node) -> tuple[ir.Value, list[ir.Node], ir.Value] | None:
    """edgec's per-row pattern: A quantized row by row (ReduceMin/ReduceMax ... Div(A, row scale) -> Round -> Add
    -> Clip -> Cast) -> MatMulInteger -> Cast -> Sub(zero-point term) -> Mul(row scale) -> Mul(W_scale).

    TFLite's hybrid kernel quantizes each row of its input on its own too, so the row arithmetic, which
    then computes nothing any op reads, is dropped from the model (see `FlatModel.serialize`)."""
    producers = [node.inputs[0].producer()]
    for op_type in ("Cast", "Clip", "Add", "Round", "Div"):
        current = producers[-1]
        if current is None or current.op_type != op_type:
            return None
        producers.append(current.inputs[0].producer())
    chain = _chain(node.outputs[0], ["Cast", "Sub", "Mul", "Mul"])
    if chain is None:
        return None
    a = producers[-2].inputs[0]  # the Div's dividend
    return a, chain, _other(chain[3], chain[2].outputs[0])
