"""Dynamic activation quantization: MatMul/Gemm with constant weights, activation range measured per call.

Static Q/DQ (`edgec.quant.qdq`) fixes each activation's scale from calibration data; here the scale
is computed from the activation itself at run time, so no calibrated range has to cover every
input's outliers (what keeps transformers accurate). Each node becomes the standard-ONNX pattern

    DynamicQuantizeLinear(A) -> A_q (uint8), A_scale, A_zp
    MatMulInteger(A_q, W_q, A_zp, W_zp) -> Cast(float) -> Mul(A_scale * W_scale) [-> Add(C)]

which ONNX Runtime's optimizer (MatMulIntegerToFloatFusion, then DynamicQuantizeMatMulFusion)
turns into one `com.microsoft` DynamicQuantizeMatMul kernel. The fusions constrain the layout:

- the scale product is a Mul of its own, inputs in the order (A_scale, W_scale), used only once;
- DynamicQuantizeMatMul needs each DynamicQuantizeLinear output to have one consumer, so every
  node gets its own. ORT's common-subexpression elimination still merges those that read the same
  activation (Q/K/V projections); those then run as one DynamicQuantizeLinear feeding fused
  MatMulIntegerToFloat kernels;
- a bias folds in when it is the *second* input of the Add and a constant [N] (N > 1) tensor.

W_q is [K, N]; W_scale and W_zp are scalars (per tensor) or [N] (per output column).

On x86 CPUs without VNNI, ONNX Runtime multiplies uint8 x int8 with `vpmaddubsw`, whose int16 pair
sums saturate for full-range int8 weights: use 7-bit int8 weights (`reduce_range`) there. uint8
weights do not saturate either, but their uint8 x uint8 kernel was ~15% slower on an AVX2 EPYC.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from edgec.errors import TargetError
from edgec.passes.initializers import add_initializer, typed_node
from edgec.quant.qparams import quantize, weight_qparams

if TYPE_CHECKING:
    from edgec.target import TensorQuant

__all__ = ["is_dynamic_candidate", "quantize_dynamic", "weight_kn", "DYNAMIC_OPS"]

#: Op types `quantize_dynamic` rewrites.
DYNAMIC_OPS = frozenset({"MatMul", "Gemm"})
#: DynamicQuantizeLinear appeared in opset 11 (MatMulInteger in 10).
_MIN_OPSET = 11


def is_dynamic_candidate(node: ir.Node) -> bool:
    """True for a node `quantize_dynamic` can rewrite: float activation A times a constant float 2-D B.

    Gemm must also compute plain A @ op(B) + C: the integer pattern has no slot for transA, alpha or beta.
    """
    if node.domain != "" or node.op_type not in DYNAMIC_OPS or len(node.inputs) < 2:
        return False
    activation, weight = node.inputs[0], node.inputs[1]
    if activation is None or activation.dtype != ir.DataType.FLOAT:
        return False
    if weight is None or weight.const_value is None:
        return False
    if weight.const_value.dtype != ir.DataType.FLOAT or len(weight.const_value.shape) != 2:
        return False
    return node.op_type == "MatMul" or _is_plain_gemm(node)


def _is_plain_gemm(node: ir.Node) -> bool:
    attributes = node.attributes
    return (attributes.get_int("transA", 0) == 0 and attributes.get_float("alpha", 1.0) == 1.0
            and attributes.get_float("beta", 1.0) == 1.0)


def quantize_dynamic(model: ir.Model, nodes: Sequence[ir.Node], weights: TensorQuant) -> dict[str, object]:
    """Rewrite each qualifying node of `nodes` in place into the dynamic pattern; returns manifest counts.

    `weights` sets the weight dtype, symmetry, granularity and reduce_range. The node's output keeps
    its name, consumers and graph-output slot. Nodes `is_dynamic_candidate` rejects stay float and
    are counted under "skipped".
    """
    opset = model.opset_imports.get("", 1)
    if nodes and opset < _MIN_OPSET:
        raise TargetError(f"dynamic quantization needs opset >= {_MIN_OPSET} (DynamicQuantizeLinear); "
                          f"model has {opset}")
    rewritten: Counter[str] = Counter()
    skipped = 0
    for node in nodes:
        if is_dynamic_candidate(node):
            _rewrite(node, weights)
            rewritten[node.op_type] += 1
        else:
            skipped += 1
    return {"dynamic_nodes": dict(rewritten), "skipped": skipped}


def _rewrite(node: ir.Node, weights: TensorQuant) -> None:
    """Replace `node` by DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul [-> Add]."""
    graph = node.graph
    output = node.outputs[0]
    base = output.name
    w_q, w_scale, w_zero_point = _weight_initializers(graph, node, weights, base)
    f32 = ir.DataType.FLOAT
    quantize_a = typed_node("DynamicQuantizeLinear", [node.inputs[0]], base,
                       [("a_quantized", ir.DataType.UINT8), ("a_scale", f32), ("a_zero_point", ir.DataType.UINT8)])
    a_q, a_scale, a_zero_point = quantize_a.outputs
    product = typed_node("MatMulInteger", [a_q, w_q, a_zero_point, w_zero_point], base, [("int32", ir.DataType.INT32)])
    cast = typed_node("Cast", product.outputs, base, [("int32_float", f32)], to=f32)
    # "scale_product", not "scale": Q/DQ names a static consumer's input scale `{tensor}_scale`
    scale = typed_node("Mul", [a_scale, w_scale], base, [("scale_product", f32)])
    rescale = typed_node("Mul", [cast.outputs[0], scale.outputs[0]], base, [("rescaled", f32)])
    new_nodes = [quantize_a, product, cast, scale, rescale]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is not None:
        new_nodes.append(typed_node("Add", [rescale.outputs[0], bias], base, [("biased", f32)]))
    ir.convenience.replace_nodes_and_values(graph, node, [node], new_nodes, [output], [new_nodes[-1].outputs[0]])


def _weight_initializers(graph: ir.Graph, node: ir.Node, weights: TensorQuant,
                         base: str) -> tuple[ir.Value, ir.Value, ir.Value]:
    """W_q [K, N] with its scale and zero point: scalars, or one per output column when per channel."""
    weight = weight_kn(node)
    axis = 1 if weights.granularity == "per_channel" else None
    params = weight_qparams(weight, weights.dtype, weights.symmetric, axis, weights.reduce_range)
    return (add_initializer(graph, f"{base}_w_quantized", quantize(weight, params)),
            add_initializer(graph, f"{base}_w_scale", params.scale),
            add_initializer(graph, f"{base}_w_zero_point", params.zero_point))


def weight_kn(node: ir.Node) -> np.ndarray:
    """B as [K, N], the layout MatMulInteger reads; Gemm with transB=1 stores it [N, K]."""
    weight = node.inputs[1].const_value.numpy()
    if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        return np.ascontiguousarray(weight.T)
    return weight
