"""Dynamic-range int8: edgec's dynamic MatMul rewrite -> TFLite's hybrid FULLY_CONNECTED.

`edgec.quant.dynamic` writes each dynamically quantized MatMul/Gemm as

    DynamicQuantizeLinear(A) -> MatMulInteger(A_q, W_q, A_zp, W_zp) -> Cast -> Mul(., A_scale * W_scale) [-> Add(bias)]

TFLite runs that whole pattern as one hybrid kernel: FULLY_CONNECTED with float input and output and
int8 per-channel weights, which quantizes each call's input itself (`asymmetric_quantize_inputs`:
asymmetric, from the input's own range, as DynamicQuantizeLinear does). So the pattern lowers to that
one op, and DynamicQuantizeLinear, whose outputs only the pattern reads, writes nothing.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.flatbuffer import QuantParams
from edgec.backends.tflite.lower import Lowering
from edgec.backends.tflite.ops import _register, _unsupported

__all__: list[str] = []

Op = schema.BuiltinOperator


def _sole_reader(value: ir.Value, op_type: str) -> ir.Node | None:
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output() or uses[0].node.op_type != op_type:
        return None
    return uses[0].node


@_register("DynamicQuantizeLinear")
def _dynamic_quantize(ctx: Lowering, node: ir.Node) -> None:
    """Nothing to write: each MatMulInteger reading it becomes a hybrid kernel that quantizes its input itself,
    and the scale products (A_scale * W_scale) it feeds are that kernel's business."""
    quantized, scale, zero_point = node.outputs
    for value, op_type in ((quantized, "MatMulInteger"), (zero_point, "MatMulInteger"), (scale, "Mul")):
        for use in value.uses():
            if use.node.op_type != op_type or value.is_graph_output():
                raise _unsupported(node, f"its output feeds {use.node.op_type} '{use.node.name}'; only edgec's "
                                         "dynamic MatMul pattern lowers")
            if op_type == "Mul":
                ctx.done.add(use.node)


@_register("MatMulInteger")
def _matmul_integer(ctx: Lowering, node: ir.Node) -> None:
    quantize = node.inputs[0].producer() if node.inputs[0] is not None else None
    weight = ctx.const_array(node.inputs[1])
    w_zero = ctx.const_array(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    cast = _sole_reader(node.outputs[0], "Cast")
    rescale = _sole_reader(cast.outputs[0], "Mul") if cast is not None else None
    if (quantize is None or quantize.op_type != "DynamicQuantizeLinear" or weight is None or weight.ndim != 2
            or weight.dtype != np.int8 or rescale is None or (w_zero is not None and np.any(w_zero != 0))):
        raise _unsupported(node, "only edgec's dynamic MatMul pattern with symmetric int8 constant weights lowers")
    scale_node = next(v.producer() for v in rescale.inputs if v is not cast.outputs[0])
    w_scale = ctx.const_array(next(v for v in scale_node.inputs if v is not quantize.outputs[1]))
    n = weight.shape[1]
    scales = np.broadcast_to(np.asarray(w_scale, np.float32).reshape(-1), (n,)).copy()
    params = QuantParams(scales, np.zeros(n, np.int64), 0 if scales.size > 1 else None)
    w = ctx.flat.add_constant(node.inputs[1].name, np.ascontiguousarray(weight.T), params)
    written, bias = rescale.outputs[0], -1
    add = _sole_reader(written, "Add")
    if add is not None:
        other = next(v for v in add.inputs if v is not written)
        array = ctx.const_array(other)
        if array is not None and array.size == n:
            bias, written = ctx.constant(other.name, array.astype(np.float32).reshape(n)), add.outputs[0]
            ctx.done.add(add)
    ctx.done.update({cast, rescale})
    a = quantize.inputs[0]
    out = ctx.output(written)
    options = schema.FullyConnectedOptionsT()
    options.keepNumDims = len(ctx.shape_of(a)) > 2
    options.asymmetricQuantizeInputs = True
    ctx.op(Op.FULLY_CONNECTED, [ctx.tensor(a), w, bias], [out], options, version=9)
