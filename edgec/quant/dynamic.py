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

ONNX Runtime's fused `com.microsoft` Attention (see `edgec.passes.ort_transformer`) holds the Q/K/V
projections as one [hidden, 3 * hidden] weight; it becomes

    DynamicQuantizeLinear(X) -> QAttention(X_q, W_q, bias, X_scale, W_scale, mask, X_zp, W_zp)

ORT's integer attention kernel: the projections run in int8, scores and softmax in float. Its
input scale is per call (one per tensor): QAttention has no per-token form.

Per-token activation scales have two forms. The portable one (`_rewrite_per_token`, what TFLite's
lowering reads) is standard ONNX and runs unfused in ONNX Runtime: its ~20 small ops per node took
more time than the integer MatMuls themselves on MiniLM. With `fused_tokens` (ONNX Runtime targets)
a per-token node becomes ONNX Runtime's `com.microsoft` MatMulNBits instead: 8-bit weights
symmetric in blocks of TOKEN_BLOCK along K, and `accuracy_level` 4, which quantizes the activation
to int8 per row and per block inside the kernel (finer than per row). Measured on MiniLM with every
MatMul so (ORT 1.32, AVX512-VNNI EPYC, 99 real sentences): output cosine min 0.9971 at 1.95x fp32
(1 thread), where all-per-token-unfused reached 0.9885 at ~1.8x.

On x86 CPUs without VNNI, ONNX Runtime multiplies uint8 x int8 with `vpmaddubsw`, whose int16 pair
sums saturate for full-range int8 weights: use 7-bit int8 weights (`reduce_range`) there. uint8
weights do not saturate either, but their uint8 x uint8 kernel was ~15% slower on an AVX2 EPYC.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from edgec.errors import TargetError
from edgec.passes.initializers import add_initializer, typed_node
from edgec.quant.qparams import quantize, weight_qparams

if TYPE_CHECKING:
    from edgec.target import TensorQuant

__all__ = ["is_dynamic_candidate", "quantize_dynamic", "supports_per_token", "weight_kn", "DYNAMIC_OPS", "TOKEN_BLOCK"]

#: Op types `quantize_dynamic` rewrites (Attention: ONNX Runtime's fused `com.microsoft` op).
DYNAMIC_OPS = frozenset({"MatMul", "Gemm", "Attention"})
_ORT_DOMAIN = "com.microsoft"
#: Attention inputs QAttention has no slot for (past state, relative position bias...): index >= 5.
_ATTENTION_INPUTS = 4
#: DynamicQuantizeLinear appeared in opset 11 (MatMulInteger in 10).
_MIN_OPSET = 11
#: Weight (and run-time activation) block along K of the fused per-token form: on MiniLM, blocks of 32
#: kept output cosine 0.9971 at 1.95x fp32, blocks of 128 0.9903 at 2.20x.
TOKEN_BLOCK = 32
#: MatMulNBits' `accuracy_level` that computes in int8 (activations quantized per block at run time).
_INT8_COMPUTE = 4


def is_dynamic_candidate(node: ir.Node) -> bool:
    """True for a node `quantize_dynamic` can rewrite: float activation A times a constant float 2-D B.

    Gemm must also compute plain A @ op(B) + C: the integer pattern has no slot for transA, alpha or beta.
    ONNX Runtime's Attention qualifies when QAttention can take all it holds (see `_is_plain_attention`).
    """
    if node.op_type == "Attention" and node.domain == _ORT_DOMAIN:
        return _is_plain_attention(node)
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


def supports_per_token(node: ir.Node) -> bool:
    """Whether `quantize_dynamic` can give `node` per-token activation scales (QAttention has one per call)."""
    return node.op_type != "Attention"


def _is_plain_attention(node: ir.Node) -> bool:
    """Float input, constant float 2-D QKV weight and bias, equal Q/K/V widths, no past state or extra bias.

    ONNX Runtime's quantizer leaves Attention with `qkv_hidden_sizes` float too: QAttention has no such form.
    """
    inputs = list(node.inputs)
    if len(inputs) < 3 or any(value is not None for value in inputs[_ATTENTION_INPUTS:]):
        return False
    activation, weight, bias = inputs[:3]
    if activation is None or activation.dtype != ir.DataType.FLOAT or "qkv_hidden_sizes" in node.attributes:
        return False
    constants = [value.const_value if value is not None else None for value in (weight, bias)]
    return all(c is not None and c.dtype == ir.DataType.FLOAT for c in constants) and len(constants[0].shape) == 2


def _is_plain_gemm(node: ir.Node) -> bool:
    attributes = node.attributes
    return (attributes.get_int("transA", 0) == 0 and attributes.get_float("alpha", 1.0) == 1.0
            and attributes.get_float("beta", 1.0) == 1.0)


def quantize_dynamic(model: ir.Model, nodes: Sequence[ir.Node], weights: TensorQuant,
                     per_token: Collection[str] = (), *, fused_tokens: bool = False) -> dict[str, object]:
    """Rewrite each qualifying node of `nodes` in place into the dynamic pattern; returns manifest counts.

    `weights` sets the weight dtype, symmetry, granularity and reduce_range (not of the fused
    per-token form, whose weights are 8-bit in blocks). The node's output keeps its name, consumers
    and graph-output slot. Nodes `is_dynamic_candidate` rejects stay float and are counted under "skipped".
    """
    opset = model.opset_imports.get("", 1)
    if nodes and opset < _MIN_OPSET:
        raise TargetError(f"dynamic quantization needs opset >= {_MIN_OPSET} (DynamicQuantizeLinear); "
                          f"model has {opset}")
    rewritten: Counter[str] = Counter()
    skipped = tokens = 0
    for node in nodes:
        if not is_dynamic_candidate(node):
            skipped += 1
            continue
        if node.op_type == "Attention":
            _rewrite_attention(node, weights)
            model.opset_imports.setdefault(_ORT_DOMAIN, 1)
        elif node.name in per_token and fused_tokens:
            _rewrite_blockwise(node)
            model.opset_imports.setdefault(_ORT_DOMAIN, 1)
            tokens += 1
        elif node.name in per_token:
            _rewrite_per_token(node, weights, opset)
            tokens += 1
        else:
            _rewrite(node, weights)
        rewritten[node.op_type] += 1
    return {"dynamic_nodes": dict(rewritten), "skipped": skipped, **({"per_token": tokens} if tokens else {})}


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
    _replace_adding_bias(node, new_nodes, base)


def _rewrite_attention(node: ir.Node, weights: TensorQuant) -> None:
    """Replace ONNX Runtime's Attention by DynamicQuantizeLinear -> QAttention, keeping its mask and attributes."""
    graph = node.graph
    output = node.outputs[0]
    base = output.name
    w_q, w_scale, w_zero_point = _weight_initializers(graph, node, weights, base)
    quantize_a = typed_node("DynamicQuantizeLinear", [node.inputs[0]], base,
                            [("a_quantized", ir.DataType.UINT8), ("a_scale", ir.DataType.FLOAT),
                             ("a_zero_point", ir.DataType.UINT8)])
    a_q, a_scale, a_zero_point = quantize_a.outputs
    mask = node.inputs[3] if len(node.inputs) > 3 else None
    attention = ir.node("QAttention", [a_q, w_q, node.inputs[2], a_scale, w_scale, mask, a_zero_point, w_zero_point],
                        attributes=dict(node.attributes), domain=_ORT_DOMAIN, name=f"{base}_qattention",
                        num_outputs=1)
    attention.outputs[0].name, attention.outputs[0].dtype = f"{base}_qattention", ir.DataType.FLOAT
    attention.outputs[0].shape = output.shape
    ir.convenience.replace_nodes_and_values(graph, node, [node], [quantize_a, attention], [output],
                                            [attention.outputs[0]])


def _rewrite_per_token(node: ir.Node, weights: TensorQuant, opset: int) -> None:
    """Replace `node` by a per-row (per-token) asymmetric uint8 quantization of A -> MatMulInteger -> rescale.

    Each row of A (a token's features) gets its own scale s and zero point z from its own range, so a
    short sentence's quiet tokens are not quantized with a loud token's step. MatMulInteger takes only
    a scalar zero point for A, so z is folded out afterwards: A W ~ s (A_q W_q - z colsum(W_q)) w_s.
    ONNX Runtime runs this unfused (about a dozen small elementwise ops per node).
    """
    graph = node.graph
    output = node.outputs[0]
    base = f"{output.name}_per_token"
    w_q, w_scale, w_zero_point = _weight_initializers(graph, node, weights, base)
    weight_int = w_q.const_value.numpy().astype(np.float32) - w_zero_point.const_value.numpy().astype(np.float32)
    column_sums = add_initializer(graph, f"{base}_w_column_sums", weight_int.sum(axis=0).astype(np.float32))
    f32 = ir.DataType.FLOAT

    def const(name: str, value: np.ndarray) -> ir.Value:
        """One initializer per graph, so ONNX Runtime's CSE merges the row quantization of a shared input (Q/K/V)."""
        shared = graph.initializers.get(f"per_token_{name}")
        return shared if shared is not None else add_initializer(graph, f"per_token_{name}", value)

    def reduce(op_type: str, suffix: str) -> ir.Node:
        if opset >= 18:
            axes = const("axes", np.array([-1], np.int64))
            return typed_node(op_type, [node.inputs[0], axes], base, [(suffix, f32)], keepdims=1)
        return typed_node(op_type, [node.inputs[0]], base, [(suffix, f32)], axes=[-1], keepdims=1)

    zero, levels = const("zero", np.array(0.0, np.float32)), const("levels", np.array(255.0, np.float32))
    tiny = const("min_scale", np.array(1e-12, np.float32))
    lowest, highest = reduce("ReduceMin", "row_min"), reduce("ReduceMax", "row_max")
    low = typed_node("Min", [lowest.outputs[0], zero], base, [("low", f32)])
    high = typed_node("Max", [highest.outputs[0], zero], base, [("high", f32)])
    span = typed_node("Sub", [high.outputs[0], low.outputs[0]], base, [("span", f32)])
    step = typed_node("Div", [span.outputs[0], levels], base, [("step", f32)])
    scale = typed_node("Max", [step.outputs[0], tiny], base, [("row_scale", f32)])
    shift = typed_node("Div", [low.outputs[0], scale.outputs[0]], base, [("shift", f32)])
    zero_point = typed_node("Round", [typed_node("Neg", shift.outputs, base, [("neg_shift", f32)]).outputs[0]], base,
                            [("row_zero_point", f32)])
    scaled = typed_node("Div", [node.inputs[0], scale.outputs[0]], base, [("scaled", f32)])
    rounded = typed_node("Round", scaled.outputs, base, [("rounded", f32)])
    shifted = typed_node("Add", [rounded.outputs[0], zero_point.outputs[0]], base, [("shifted", f32)])
    clipped = typed_node("Clip", [shifted.outputs[0], zero, levels], base, [("clipped", f32)])
    a_q = typed_node("Cast", clipped.outputs, base, [("a_quantized", ir.DataType.UINT8)], to=ir.DataType.UINT8)
    product = typed_node("MatMulInteger", [a_q.outputs[0], w_q, None, w_zero_point], base, [("int32", ir.DataType.INT32)])
    as_float = typed_node("Cast", product.outputs, base, [("int32_float", f32)], to=f32)
    offset = typed_node("Mul", [zero_point.outputs[0], column_sums], base, [("offset", f32)])
    centred = typed_node("Sub", [as_float.outputs[0], offset.outputs[0]], base, [("centred", f32)])
    row_scaled = typed_node("Mul", [centred.outputs[0], scale.outputs[0]], base, [("row_scaled", f32)])
    rescale = typed_node("Mul", [row_scaled.outputs[0], w_scale], base, [("rescaled", f32)])
    new_nodes = [lowest, highest, low, high, span, step, scale, shift, zero_point.inputs[0].producer(), zero_point,
                 scaled, rounded, shifted, clipped, a_q, product, as_float, offset, centred, row_scaled, rescale]
    _replace_adding_bias(node, new_nodes, base)


def _rewrite_blockwise(node: ir.Node) -> None:
    """Replace `node` by ONNX Runtime's MatMulNBits: 8-bit weights in TOKEN_BLOCK blocks, int8 compute [-> Add].

    MatMulNBits stores B as [N, blocks, TOKEN_BLOCK] uint8 with one float scale per (column, block)
    and the default zero point 128 (2^(bits-1)), so a symmetric block is q + 128 with q in
    [-127, 127]; K is zero-padded to whole blocks (a zero weight is exactly 128).
    """
    graph = node.graph
    output = node.outputs[0]
    base = f"{output.name}_blockwise"
    weight = weight_kn(node).astype(np.float32)
    k, n = weight.shape
    blocks = -(-k // TOKEN_BLOCK)
    padded = np.zeros((blocks * TOKEN_BLOCK, n), np.float32)
    padded[:k] = weight
    by_block = padded.T.reshape(n, blocks, TOKEN_BLOCK)
    scale = np.abs(by_block).max(axis=2) / 127.0
    scale[scale == 0] = 1.0  # an all-zero block quantizes to zeros whatever its scale
    quantized = np.clip(np.rint(by_block / scale[:, :, None]), -127, 127).astype(np.int16) + 128
    f32 = ir.DataType.FLOAT
    matmul = ir.node("MatMulNBits", [node.inputs[0], add_initializer(graph, f"{base}_w_quantized",
                                                                     quantized.astype(np.uint8)),
                                     add_initializer(graph, f"{base}_w_scale", scale.reshape(-1).astype(np.float32))],
                     attributes={"K": k, "N": n, "bits": 8, "block_size": TOKEN_BLOCK, "accuracy_level": _INT8_COMPUTE},
                     domain=_ORT_DOMAIN, name=base, num_outputs=1)
    matmul.outputs[0].name, matmul.outputs[0].dtype, matmul.outputs[0].shape = base, f32, output.shape
    new_nodes = [matmul]
    _replace_adding_bias(node, new_nodes, base)


def _replace_adding_bias(node: ir.Node, new_nodes: list[ir.Node], base: str) -> None:
    """Put `new_nodes` (the last one computing A @ B) in place of `node`, then Gemm's bias C as an Add."""
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is not None:
        new_nodes.append(typed_node("Add", [new_nodes[-1].outputs[0], bias], base, [("biased", ir.DataType.FLOAT)]))
    ir.convenience.replace_nodes_and_values(node.graph, node, [node], new_nodes, [node.outputs[0]],
                                            [new_nodes[-1].outputs[0]])


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
