"""TFLite's int8 spec, read off edgec's Q/DQ graph.

edgec's quantizer writes the scales and zero points it derived from the calibration table into
QuantizeLinear/DequantizeLinear nodes; this module reads them back and decides which ONNX nodes
become integer TFLite kernels:

- A node runs int8 when every float activation it reads comes out of a DequantizeLinear, its
  constant float inputs (weights, bias) are DequantizeLinear'd int8/int32 constants, and its only
  reader is a QuantizeLinear (optionally through a ReLU/ReLU6 the kernel fuses). The node then reads
  the int8 tensors behind the DequantizeLinears and writes the QuantizeLinear's int8 tensor: the
  DQ -> op -> Q triple is one TFLite op.
- Anything else runs float: the lowering puts DEQUANTIZE before it and QUANTIZE after it (a
  float-kept layer, or ops the quantizer does not quantize).

Per-op constraints of TFLite's int8 kernels (its quantization spec):

- AVERAGE_POOL_2D / MAX_POOL_2D: output scale and zero point equal the input's (the lowering
  writes the pool with its input's parameters and requantizes to the calibrated ones if they differ);
- CONCATENATION: every input has the output's parameters (inputs that differ are requantized);
- RESHAPE / TRANSPOSE / SQUEEZE: the quantizer already gives them their input's parameters;
- PAD (a convolution's padding TFLite's SAME cannot express) keeps its input's parameters;
- SOFTMAX / LOGISTIC / TANH write fixed output parameters (1/256 with zero point -128; 1/128 with 0):
  they run int8 only when the QuantizeLinear after them has exactly those (edgec's quantizer writes
  them, `FIXED_OUTPUT_OPS`), else float between DEQUANTIZE and QUANTIZE. HARD_SWISH's output is
  calibrated like any other.

Weights: int8 symmetric per channel on TFLite's output-channel axis (CONV_2D's OHWI axis 0,
DEPTHWISE_CONV_2D's 1HWO axis 3, FULLY_CONNECTED's [N, K] axis 0); biases int32 at input scale x
weight scale, as the quantizer stored them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgec.backends.tflite.flatbuffer import QuantParams
from edgec.quant.qparams import FIXED_OUTPUT_OPS, fixed_output_qparams

__all__ = ["Int8Plan", "INT8_OPS", "dq_source", "is_dequantize", "is_quantize", "node_params", "plan_int8",
           "activation_after"]

#: ONNX op types the lowering can run as int8 kernels (domain-free: `edgec.nhwc` twins included).
INT8_OPS = frozenset({"Conv", "Gemm", "MatMul", "Add", "Mul", "AveragePool", "MaxPool", "GlobalAveragePool",
                      "Concat", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "HardSwish",
                      *FIXED_OUTPUT_OPS})
_ONNX = ("", "ai.onnx")


def is_quantize(node: ir.Node | None) -> bool:
    return node is not None and node.domain in _ONNX and node.op_type == "QuantizeLinear"


def is_dequantize(node: ir.Node | None) -> bool:
    return node is not None and node.domain in _ONNX and node.op_type == "DequantizeLinear"


def _constant(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def node_params(node: ir.Node) -> QuantParams:
    """The scale, zero point and axis a QuantizeLinear/DequantizeLinear node applies."""
    scale = _constant(node.inputs[1])
    zero_point = _constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if scale is None:
        raise ValueError(f"{node.op_type} {node.name}: scale is not a constant")
    if zero_point is None:
        zero_point = np.zeros(scale.shape, np.int64)
    axis = node.attributes.get_int("axis", 1) if scale.size > 1 else None
    return QuantParams(scale.astype(np.float32).reshape(-1) if axis is not None else scale.astype(np.float32).reshape(()),
                       zero_point.astype(np.int64).reshape(scale.shape), axis)


def dq_source(value: ir.Value | None) -> ir.Node | None:
    """The DequantizeLinear producing `value`, if one does."""
    producer = None if value is None else value.producer()
    return producer if is_dequantize(producer) else None


def _is_constant_dq(node: ir.Node) -> bool:
    return _constant(node.inputs[0]) is not None


def activation_after(value: ir.Value) -> tuple[str, ir.Node] | None:
    """("RELU" | "RELU6" | "RELU_N1_TO_1", node) when the only reader of `value` is such an activation."""
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output() or uses[0].idx != 0:
        return None
    node = uses[0].node
    if node.domain not in _ONNX:
        return None
    if node.op_type == "Relu":
        return "RELU", node
    if node.op_type != "Clip":
        return None
    low = _constant(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
    high = _constant(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    bounds = (None if low is None else float(low), None if high is None else float(high))
    return {(0.0, 6.0): ("RELU6", node), (-1.0, 1.0): ("RELU_N1_TO_1", node),
            (0.0, None): ("RELU", node)}.get(bounds)


@dataclass(frozen=True)
class Int8Plan:
    """How one node runs int8: the QuantizeLinear it ends in, and a fused activation on the way."""

    quantize: ir.Node
    activation: str = "NONE"
    activation_node: ir.Node | None = None


def plan_int8(node: ir.Node) -> Int8Plan | None:
    """An `Int8Plan` when `node` reads only dequantized int8 data and its output is quantized, else None."""
    if node.op_type not in INT8_OPS or not node.outputs:
        return None
    float_inputs = [v for v in node.inputs if v is not None and v.dtype in (ir.DataType.FLOAT, None)]
    if not float_inputs:
        return None
    for value in float_inputs:
        if dq_source(value) is None:
            return None
    if not any(not _is_constant_dq(dq_source(v)) for v in float_inputs):
        return None  # constants only: nothing is computed at run time
    if node.op_type in ("Gemm", "MatMul") and not _is_constant_dq(dq_source(node.inputs[1])):
        return None  # two activations (attention scores): TFLite's int8 FULLY_CONNECTED needs constant weights
    if any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
        return None
    output = node.outputs[0]
    activation, act_node = "NONE", None
    fused = activation_after(output) if node.op_type in ("Conv", "Gemm", "MatMul", "Add", "Mul") else None
    if fused is not None:
        activation, act_node = fused
        output = act_node.outputs[0]
    uses = list(output.uses())
    if len(uses) != 1 or output.is_graph_output() or not is_quantize(uses[0].node):
        return None
    if node.op_type in FIXED_OUTPUT_OPS and not _has_fixed_params(uses[0].node, node.op_type):
        return None
    return Int8Plan(uses[0].node, activation, act_node)


def _has_fixed_params(quantize: ir.Node, op_type: str) -> bool:
    """Whether `quantize` writes the int8 parameters TFLite's kernel for `op_type` always outputs."""
    fixed = fixed_output_qparams(op_type, "int8")
    params = node_params(quantize)
    return (params.axis is None and np.array_equal(params.scale, fixed.scale)
            and np.array_equal(params.zero_point, fixed.zero_point.astype(np.int64)))
