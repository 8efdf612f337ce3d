"""Matrix products: Gemm and MatMul as FULLY_CONNECTED (constant weights, float, int8 or hybrid) or
BATCH_MATMUL (two activations).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.lower import Lowering
from edgec.backends.tflite.ops import (
    bias_tensor, hybrid_weight, int32_constant, make_options, op_version, register, reshape_dims, simple_op,
    tensor_rank, transpose_tensor, unsupported, weight_tensor,
)

__all__: list[str] = []

Op = schema.BuiltinOperator
Act = schema.ActivationFunctionType

# --------------------------------------------------------------------------------------------
# matrix products
# --------------------------------------------------------------------------------------------


def _fully_connected(ctx: Lowering, node: ir.Node, x: int, weight: int, bias: int, keep_dims: bool,
                     hybrid: bool = False) -> None:
    """FULLY_CONNECTED: float, int8, or hybrid (float input and output, int8 weight, the input quantized per call)."""
    activation, written = ctx.fused_activation(node)
    out = ctx.output(written)
    ctx.op(Op.FULLY_CONNECTED, [x, weight, bias], [out],
           make_options(schema.FullyConnectedOptionsT, fusedActivationFunction=activation, keepNumDims=keep_dims,
                    asymmetricQuantizeInputs=hybrid), 9 if hybrid else op_version(ctx, 4))


@register("Gemm")
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
            raise unsupported(node, "an int8 Gemm needs a constant weight, a vector bias and alpha = beta = 1")
        _gemm_general(ctx, node, alpha, beta, trans_a, trans_b)
        return
    x = ctx.input(a)
    if trans_a:
        x = transpose_tensor(ctx, x, [1, 0], f"{a.name}_transposed")
    if ctx.plan is not None:
        w = weight_tensor(ctx, b, None if trans_b else (1, 0), node)
        bias = bias_tensor(ctx, c, node, x, w, n)
    else:
        w = hybrid_weight(ctx, b, None if trans_b else (1, 0)) if alpha == 1.0 else None
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
           make_options(schema.BatchMatMulOptionsT, adjX=bool(trans_a), adjY=bool(trans_b)))
    if alpha != 1.0:
        scaled = ctx.new_tensor(f"{node.outputs[0].name}_alpha", shape, np.float32)
        ctx.op(Op.MUL, [product, ctx.constant(f"{node.name}_alpha", np.float32(alpha))], [scaled],
               make_options(schema.MulOptionsT))
        product = scaled
    c = node.inputs[2] if len(node.inputs) > 2 else None
    activation, written = ctx.fused_activation(node)
    out = ctx.output(written)
    if c is None:
        ctx.op(Op.RESHAPE, [product, int32_constant(ctx, f"{node.name}_shape", reshape_dims(ctx.flat.shape(product)))],
               [out])
        return
    bias = ctx.tensor(c)
    if beta != 1.0:
        scaled_bias = ctx.new_tensor(f"{c.name}_beta", ctx.shape_of(c), np.float32)
        ctx.op(Op.MUL, [bias, ctx.constant(f"{node.name}_beta", np.float32(beta))], [scaled_bias],
               make_options(schema.MulOptionsT))
        bias = scaled_bias
    ctx.op(Op.ADD, [product, bias], [out], make_options(schema.AddOptionsT, fusedActivationFunction=activation))


def _bias_add(ctx: Lowering, node: ir.Node, n: int) -> ir.Node | None:
    """The Add alone reading `node`'s output with a constant [n] operand, if there is one."""
    uses = list(node.outputs[0].uses())
    if len(uses) != 1 or node.outputs[0].is_graph_output() or uses[0].node.op_type != "Add":
        return None
    add = uses[0].node
    other = add.inputs[1 - uses[0].idx]
    array = ctx.const_array(other)
    return add if array is not None and array.size == n and array.shape[-1:] == (n,) and add.domain == "" else None


@register("MatMul")
def _matmul(ctx: Lowering, node: ir.Node) -> None:
    a, b = node.inputs
    b_array = ctx.const_array(b)
    if b_array is not None and b_array.ndim == 2:
        x = ctx.input(a)
        w = hybrid_weight(ctx, b, (1, 0))
        hybrid = w is not None
        if w is None:
            w = weight_tensor(ctx, b, (1, 0), node)
        bias, last = -1, node
        add = _bias_add(ctx, node, b_array.shape[1]) if ctx.plan is None else None
        if add is not None:  # MatMul + Add(bias) (3-D inputs, which matmul_add_to_gemm leaves): the FC's bias
            other = next(v for v in add.inputs if v is not node.outputs[0])
            bias, last = ctx.constant(other.name, ctx.const_array(other).astype(np.float32).reshape(-1)), add
            ctx.done.add(add)
        _fully_connected(ctx, last, x, w, bias, keep_dims=tensor_rank(ctx, a) > 2, hybrid=hybrid)
        return
    simple_op(ctx, node, Op.BATCH_MATMUL, [ctx.tensor(a), ctx.tensor(b)], make_options(schema.BatchMatMulOptionsT))
