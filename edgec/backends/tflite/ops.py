"""The converter registry (one converter per ONNX op) and the helpers converters share.

Converters live in `nhwc` (the `edgec.nhwc` convolution and pooling ops), `linear` (matrix
products), `elementwise`, `shapes` and `dynamic` (dynamic-range int8), and register themselves here.
A converter reads its inputs with `ctx.input` (int8 tensors when the node runs int8, see
`quantization`), writes its output with `ctx.output`, and takes a following ReLU/ReLU6 into the
kernel's fused activation with `ctx.fused_activation`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite import quantization as q
from edgec.backends.tflite.flatbuffer import QuantParams
from edgec.backends.tflite.lower import Lowering
from edgec.errors import BadInputError
from edgec.passes.layout import NHWC_DOMAIN

__all__ = [
    "check_supported", "converter_for", "supported_ops", "register", "NHWC_OPS", "alias", "attr_ints", "bias_tensor",
    "hybrid_weight", "int32_constant", "ints_argument", "make_options", "op_version", "reshape_dims", "simple_op",
    "tensor_rank", "transpose_tensor", "unsupported", "weight_tensor",
]

Op = schema.BuiltinOperator
Act = schema.ActivationFunctionType
Converter = Callable[[Lowering, ir.Node], None]

ONNX_OPS: dict[str, Converter] = {}
NHWC_OPS: dict[str, Converter] = {}


def register(*op_types: str, domain: dict[str, Converter] = ONNX_OPS) -> Callable[[Converter], Converter]:
    def decorate(function: Converter) -> Converter:
        for op_type in op_types:
            domain[op_type] = function
        return function
    return decorate


def supported_ops() -> list[str]:
    _load_all()
    return sorted({*ONNX_OPS, *(f"{NHWC_DOMAIN}.{op}" for op in NHWC_OPS), "QuantizeLinear", "DequantizeLinear"})


def _table(node: ir.Node) -> dict[str, Converter] | None:
    if node.domain in ("", "ai.onnx"):
        return ONNX_OPS
    return NHWC_OPS if node.domain == NHWC_DOMAIN else None


def _load_all() -> None:
    """Converters living in sibling modules register themselves when imported."""
    from edgec.backends.tflite import dynamic, elementwise, linear, nhwc, shapes  # noqa: F401


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


def op_version(ctx: Lowering, int8_version: int) -> int:
    return int8_version if ctx.plan is not None else 1


def attr_ints(node: ir.Node, name: str, default: Sequence[int]) -> list[int]:
    attr = node.attributes.get(name)
    return list(attr.as_ints()) if attr is not None else list(default)


def ints_argument(ctx: Lowering, node: ir.Node, index: int, name: str) -> list[int] | None:
    """Axes-like argument that moved from an attribute to an input across opsets."""
    if len(node.inputs) > index and node.inputs[index] is not None:
        array = ctx.const_array(node.inputs[index])
        if array is None:
            raise BadInputError(f"{node.op_type} node '{node.name}': its {name} must be constant for TFLite")
        return [int(v) for v in np.asarray(array).reshape(-1)]
    attr = node.attributes.get(name)
    return None if attr is None else list(attr.as_ints())


def unsupported(node: ir.Node, why: str) -> BadInputError:
    return BadInputError(f"the TFLite lowering cannot convert {node.op_type} node '{node.name}': {why}")


def make_options(cls: type, **fields: object) -> object:
    options = cls()
    for key, value in fields.items():
        setattr(options, key, value)
    return options


def int32_constant(ctx: Lowering, name: str, values: Sequence[int]) -> int:
    return ctx.constant(name, np.asarray(values, np.int32))


def tensor_rank(ctx: Lowering, value: ir.Value) -> int:
    return len(ctx.shape_of(value))


def reshape_dims(dims: Sequence[int | None]) -> list[int]:
    """A RESHAPE target from dims: the dynamic one (at most one) as -1."""
    if sum(d is None for d in dims) > 1:
        raise BadInputError(f"cannot reshape to {list(dims)}: more than one dynamic dim")
    return [-1 if d is None else d for d in dims]


def simple_op(ctx: Lowering, node: ir.Node, code: int, inputs: Sequence[int], options: object = None,
            int8_version: int = 2) -> int:
    out = ctx.output(node.outputs[0])
    ctx.op(code, inputs, [out], options, op_version(ctx, int8_version))
    return out


# --------------------------------------------------------------------------------------------
# weights and bias
# --------------------------------------------------------------------------------------------


def weight_tensor(ctx: Lowering, value: ir.Value, perm: Sequence[int] | None, node: ir.Node) -> int:
    """A constant weight, transposed by `perm`; int8 per-channel when the node runs int8."""
    transform = (lambda array: np.ascontiguousarray(np.transpose(array, perm))) if perm is not None else None
    if ctx.plan is not None:
        if q.dq_source(value) is None:
            raise unsupported(node, "an int8 kernel needs a quantized weight")
        return ctx.quantized_constant(value, transform, (lambda axis: list(perm).index(axis)) if perm else None)
    array = ctx.const_array(value)
    if array is None:
        raise unsupported(node, "its weight is not a constant")
    return ctx.constant(f"{value.name}_tflite" if perm is not None else value.name,
                        transform(array) if transform else array)


def hybrid_weight(ctx: Lowering, value: ir.Value, perm: Sequence[int] | None) -> int | None:
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


def bias_tensor(ctx: Lowering, value: ir.Value | None, node: ir.Node, x: int, w: int, size: int) -> int:
    """The bias input: int32 at input scale x weight scale for int8 kernels, else float; zeros when absent
    (LiteRT's convolution kernels require one)."""
    if ctx.plan is None:
        if value is None:
            return ctx.constant(f"{ctx.flat.name(w)}_zero_bias", np.zeros(size, np.float32))
        array = ctx.const_array(value)
        if array is None:
            raise unsupported(node, "its bias is not a constant")
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



def transpose_tensor(ctx: Lowering, index: int, perm: Sequence[int], name: str) -> int:
    shape = ctx.flat.shape(index)
    quant = ctx.flat.quant(index)
    out = ctx.new_tensor(name, [shape[p] for p in perm], np.int8 if quant is not None else ctx.flat.dtype(index),
                         quant)
    ctx.op(Op.TRANSPOSE, [index, int32_constant(ctx, f"{name}_perm", perm)], [out], version=2 if quant else 1)
    return out



@register("Identity", "Dropout")
def alias(ctx: Lowering, node: ir.Node) -> None:
    """The output is the input's tensor (int8 view included)."""
    source, out = node.inputs[0], node.outputs[0]
    if ctx.plan is not None:
        ctx.set_int8(ctx.plan.quantize.outputs[0], ctx.qtensor(source))
        return
    ctx.set_float(out, ctx.tensor(source))
