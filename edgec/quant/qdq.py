"""Q/DQ insertion: decide which tensors are quantized (`plan`), then rewrite the graph (`apply`).

The output is an explicit-quantization graph (QuantizeLinear -> DequantizeLinear pairs around float
ops) that ONNX Runtime fuses into integer kernels and TensorRT builds int8 engines from. Rules:

- Quantized ops (the target's `quant.ops`) get Q/DQ on every float activation input and on their
  output; weights of Conv/Gemm/MatMul are stored as int8 initializers + DequantizeLinear (per channel
  along the output-channel axis when the scheme says so); Conv/Gemm bias becomes int32 with scale
  input_scale * weight_scale, what integer kernels accumulate in.
- Shape-only ops (Reshape, Flatten, Transpose, Squeeze, Unsqueeze) and MaxPool keep their input's
  scale: their output gets Q/DQ with the same parameters, so the runtime can run them on int8 data.
- Sigmoid, Softmax and Tanh (when a target quantizes them, as TFLite's does) get fixed output
  parameters with asymmetric activations, as TFLite's int8 kernels require (`FIXED_OUTPUT_OPS`):
  only their inputs are calibrated. HardSwish's output is calibrated like any other.
- A Relu, or a Clip whose floor is 0, right after a quantized op is folded into that op's output
  quantization when activations are asymmetric: quantizing with the activation's calibrated range
  gives zero point = qmin, so the quantizer's own clamp computes the ReLU exactly.
- Fused groups (`edgec.passes.fusion`: Conv + activation, attention) run as one kernel on the
  target, so no tensor inside a group gets Q/DQ (a pair there would also stop the target from
  fusing): the group's outputs are quantized instead of the Conv's, and inside a group only the
  matrix ops (Conv/Gemm/MatMul) are quantized, on the inputs that come from outside it. The rest
  (an attention's scale, its mask Add) runs in the fused kernel's own precision; an attention mask
  in particular must not be calibrated (a padding mask's -inf-like values ruin its scale).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from edgec.errors import TargetError
from edgec.passes.initializers import add_initializer
from edgec.passes.layout import NHWC_DOMAIN
from edgec.passes.fusion import fusion_group, fusion_groups, group_outputs, is_group_internal
from edgec.quant.qparams import (FIXED_OUTPUT_OPS, QParams, fixed_output_qparams, qparams_from_range, quantize,
                                 quantize_bias, weight_qparams)
from edgec.quant.table import CalibrationTable

if TYPE_CHECKING:
    from edgec.target import QuantScheme, TensorQuant

__all__ = ["QuantPlan", "plan", "apply", "is_kept_float", "weight_axis", "SUPPORTED_OPS"]

#: Ops edgec knows how to quantize, mapped to the input slots holding float activations.
_ACTIVATION_SLOTS: dict[str, tuple[int, ...] | None] = {
    "Conv": (0,),
    "Gemm": (0,),
    "MatMul": (0, 1),
    "Add": (0, 1),
    "Mul": (0, 1),
    "AveragePool": (0,),
    "GlobalAveragePool": (0,),
    "Concat": None,  # every input
    "Sigmoid": (0,),
    "Softmax": (0,),
    "Tanh": (0,),
    "HardSwish": (0,),
}
#: Domains whose ops `plan` quantizes: ONNX's, and the channels-last twins of `convert_to_nhwc`
#: (same inputs, OIHW weights: only the data layout differs, which per-tensor activation scales ignore).
_QUANTIZED_DOMAINS = ("", "ai.onnx", NHWC_DOMAIN)
_SCALE_SHARING = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "MaxPool"}
#: The only ops quantized inside a fused group: the kernel's int8 matrix product.
_GROUP_QUANTIZED_OPS = frozenset({"Conv", "Gemm", "MatMul"})
SUPPORTED_OPS = frozenset(_ACTIVATION_SLOTS) | {"MaxPool"}
#: Quantized ops whose integer kernels can write a float output directly (ORT's QGemm, MatMulIntegerToFloat):
#: their output is quantized only when an integer kernel reads it. Requantizing a MatMul output that only
#: float ops read (BERT's FFN output with its outlier channels, logits) adds error and saves nothing.
_FLOAT_OUTPUT_OPS = frozenset({"Gemm", "MatMul"})


def _is_float(value: ir.Value | None) -> bool:
    return value is not None and value.dtype == ir.DataType.FLOAT


def _is_constant(value: ir.Value) -> bool:
    return value.const_value is not None


def _constant(value: ir.Value | None) -> np.ndarray | None:
    return None if value is None or value.const_value is None else value.const_value.numpy()


def _activation_slots(node: ir.Node) -> list[int]:
    slots = _ACTIVATION_SLOTS[node.op_type]
    indices = range(len(node.inputs)) if slots is None else slots
    return [i for i in indices if i < len(node.inputs) and node.inputs[i] is not None]


def weight_axis(node: ir.Node, weight: np.ndarray, per_channel: bool) -> int | None:
    """Output-channel axis of a Conv/Gemm/MatMul weight, or None for per-tensor quantization."""
    if not per_channel or weight.ndim < 2:
        return None
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if node.attributes.get_int("transB", 0) else 1
    return weight.ndim - 1  # MatMul: B is [..., K, N]


def _is_relu_like(node: ir.Node) -> bool:
    """Relu, or Clip with constant floor 0 and a constant (or no) ceiling: Relu6 and friends.

    The ceiling must be constant because the folded clamp ends at the calibrated maximum, which
    never exceeds a constant ceiling but could exceed one computed at run time.
    """
    if node.op_type == "Relu":
        return True
    if node.op_type != "Clip" or len(node.inputs) < 2:
        return False
    floor = _constant(node.inputs[1])
    ceiling = node.inputs[2] if len(node.inputs) > 2 else None
    constant_ceiling = ceiling is None or _constant(ceiling) is not None
    return floor is not None and floor.size == 1 and float(floor) == 0.0 and constant_ceiling


def _feeds_integer_kernel(value: ir.Value, quantized: set[ir.Node]) -> bool:
    """Whether a quantized node or a scale-sharing op reads `value` (so its Q/DQ enables a fused kernel)."""
    return any(use.node in quantized or use.node.op_type in _SCALE_SHARING for use in value.uses())


@dataclass
class QuantPlan:
    """Which values get Q/DQ and where each one's range comes from."""

    quantized_nodes: list[ir.Node] = field(default_factory=list)
    #: float activations that get a Q/DQ pair, in the graph order of the nodes that need them
    activations: list[ir.Value] = field(default_factory=list)
    #: activation -> name of the tensor whose calibrated range it uses (itself, or a folded ReLU's output)
    range_of: dict[ir.Value, str] = field(default_factory=dict)
    #: activation -> activation whose parameters it reuses (outputs of shape-only ops and MaxPool)
    shares: dict[ir.Value, ir.Value] = field(default_factory=dict)
    folded: list[ir.Node] = field(default_factory=list)
    #: activation -> op type whose fixed output parameters it takes instead of a calibrated range
    fixed: dict[ir.Value, str] = field(default_factory=dict)

    @property
    def calibration_tensors(self) -> list[str]:
        """Names of the tensors the calibrator must observe."""
        return list(dict.fromkeys(self.range_of[v] for v in self.activations
                                  if v not in self.shares and v not in self.fixed))


def is_kept_float(node: ir.Node, keep_float: Collection[str]) -> bool:
    """True when `keep_float` names the node or its op type."""
    return node.name in keep_float or node.op_type in keep_float


def plan(model: ir.Model, ops: Iterable[str], asymmetric_activations: bool, keep_float: Collection[str] = ()) -> QuantPlan:
    """Choose quantized nodes and activations for `ops`; the graph is not changed.

    `keep_float` holds node names or op types that stay float whatever `ops` says (accuracy
    fallback, fragile ops, nodes another quantizer handles).
    """
    unsupported = sorted(set(ops) - SUPPORTED_OPS)
    if unsupported:
        raise TargetError(f"cannot quantize op type(s) {unsupported}; supported: {sorted(SUPPORTED_OPS)}")
    wanted = set(ops)
    result = QuantPlan()
    marked: dict[ir.Value, None] = {}  # ordered set
    folded_into: dict[ir.Value, ir.Value] = {}  # a folded ReLU's output -> the value that replaces it

    def mark(value: ir.Value, range_name: str) -> None:
        value = folded_into.get(value, value)
        marked.setdefault(value)
        result.range_of.setdefault(value, range_name)

    groups = fusion_groups(model.graph)
    float_output_candidates: list[ir.Value] = []
    for node in model.graph:
        if node.domain not in _QUANTIZED_DOMAINS or node.op_type not in wanted or node.op_type == "MaxPool":
            continue
        if is_kept_float(node, keep_float):
            continue
        group = fusion_group(node)
        if group is not None and node.op_type not in _GROUP_QUANTIZED_OPS:
            continue
        slots = _activation_slots(node)
        if not slots or not all(_is_float(node.inputs[i]) for i in slots) or not _is_float(node.outputs[0]):
            continue
        result.quantized_nodes.append(node)
        for i in slots:
            value = node.inputs[i]
            if not _is_constant(value) and not is_group_internal(value):
                mark(value, value.name)
        output = node.outputs[0]
        uses = list(output.uses())
        if asymmetric_activations and node.op_type in FIXED_OUTPUT_OPS:
            result.fixed[output] = node.op_type
            mark(output, output.name)
        elif asymmetric_activations and len(uses) == 1 and not output.is_graph_output() and _is_relu_like(uses[0].node):
            activation = uses[0].node
            result.folded.append(activation)
            folded_into[activation.outputs[0]] = output
            mark(output, activation.outputs[0].name)
        elif group is not None and is_group_internal(output):
            for value in group_outputs(groups[group]):  # where the fused kernel ends
                if _is_float(value):
                    mark(value, value.name)
        elif node.op_type in _FLOAT_OUTPUT_OPS:
            float_output_candidates.append(output)
        else:
            mark(output, output.name)
    quantized = set(result.quantized_nodes)
    for output in float_output_candidates:
        if _feeds_integer_kernel(output, quantized):
            mark(output, output.name)

    for node in model.graph:  # graph order: a chain of shape-only ops shares one root's parameters
        if node.op_type not in _SCALE_SHARING or (node.op_type == "MaxPool" and "MaxPool" not in wanted):
            continue
        if is_kept_float(node, keep_float):
            continue
        source, output = folded_into.get(node.inputs[0], node.inputs[0]), node.outputs[0]
        extra_outputs_used = any(out.uses() or out.is_graph_output() for out in node.outputs[1:])
        if source in marked and _is_float(output) and not extra_outputs_used and not is_group_internal(output):
            result.shares[output] = result.shares.get(source, source)
            mark(output, output.name)

    result.activations = list(marked)
    return result


class _Rewriter:
    """Graph edits for `apply`: new initializers, Q/DQ nodes, rewired uses."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.counts: Counter[str] = Counter()
        self._constant_dq: dict[tuple[object, ...], ir.Value] = {}

    def qparam_inputs(self, base: str, params: QParams) -> tuple[ir.Value, ir.Value]:
        return (add_initializer(self.graph, f"{base}_scale", params.scale),
                add_initializer(self.graph, f"{base}_zero_point", params.zero_point))

    def dq_node(self, base: str, source: ir.Value, params: QParams) -> ir.Node:
        scale, zero_point = self.qparam_inputs(base, params)
        attributes = {} if params.axis is None else {"axis": params.axis}
        self.counts["DequantizeLinear"] += 1
        return ir.node("DequantizeLinear", [source, scale, zero_point], attributes, name=f"{base}_DequantizeLinear")

    def quantize_activation(self, value: ir.Value, params: QParams) -> None:
        """Insert Q -> DQ after `value` and make every consumer (and the graph output) read the DQ."""
        uses = list(value.uses())
        base = value.name
        scale, zero_point = self.qparam_inputs(base, params)
        q = ir.node("QuantizeLinear", [value, scale, zero_point], name=f"{base}_QuantizeLinear")
        q.outputs[0].name = f"{base}_quantized"
        dq = ir.node("DequantizeLinear", [q.outputs[0], scale, zero_point], name=f"{base}_DequantizeLinear")
        dequantized = dq.outputs[0]
        dequantized.name = f"{base}_dequantized"
        dequantized.dtype = value.dtype
        dequantized.shape = None if value.shape is None else ir.Shape(value.shape)
        self.counts["QuantizeLinear"] += 1
        self.counts["DequantizeLinear"] += 1
        if value.producer() is None:
            self.graph.insert_before(self.graph.node(0), [q, dq])
        else:
            self.graph.insert_after(value.producer(), [q, dq])
        for use in uses:
            use.node.replace_input_with(use.idx, dequantized)
        if value.is_graph_output():
            outputs = self.graph.outputs
            for i, output in enumerate(outputs):
                if output is value:
                    outputs[i] = dequantized
            value.name, dequantized.name = f"{base}_float", base

    def constant_input(self, node: ir.Node, index: int, params: QParams, tag: str) -> None:
        """Replace a constant input by int initializer -> DequantizeLinear (shared between nodes)."""
        value = node.inputs[index]
        # shared only between nodes that need the same kind of parameters: a weight read by MatMul ([K, N],
        # channels on axis 1) and by Gemm transB=1 ([N, K], axis 0) needs two copies, or a bias would be
        # scaled by weight scales its node does not use
        key = (value.name, tag, params.dtype, params.symmetric, params.axis, params.reduce_range)
        if key not in self._constant_dq:
            copies = sum(1 for k in self._constant_dq if k[:2] == key[:2])
            base = f"{value.name}_{tag}" + (f"_{copies}" if copies else "")
            quantized = add_initializer(self.graph, base, quantize(value.const_value.numpy(), params))
            dq = self.dq_node(base, quantized, params)
            dq.outputs[0].name = f"{base}_dequantized"
            self.graph.insert_before(node, dq)
            self._constant_dq[key] = dq.outputs[0]
        node.replace_input_with(index, self._constant_dq[key])


def _fold_activation(graph: ir.Graph, activation: ir.Node) -> None:
    """Remove a ReLU-like node whose effect the next quantizer's clamp reproduces."""
    source, result = activation.inputs[0], activation.outputs[0]
    name = result.name
    was_output = result.is_graph_output()
    result.replace_all_uses_with(source, replace_graph_outputs=True)
    graph.remove(activation, safe=True)
    if was_output:
        result.name, source.name = f"{name}_folded", name


def apply(model: ir.Model, quant_plan: QuantPlan, table: CalibrationTable, scheme: QuantScheme) -> dict[str, object]:
    """Rewrite `model` in place into a Q/DQ graph; returns counts for the manifest.

    `scheme` is the target's `QuantScheme`; activations are per-tensor (per-channel activation
    scales are not something ONNX Runtime or TensorRT kernels consume).
    """
    acts, weights = scheme.activations, scheme.weights
    missing = [name for name in quant_plan.calibration_tensors if name not in table.ranges]
    if missing:
        raise TargetError(f"calibration table has no range for {missing[:5]}")
    params: dict[ir.Value, QParams] = {}
    for value in quant_plan.activations:  # roots first: a shared value may be listed before its root
        if value in quant_plan.fixed:
            params[value] = fixed_output_qparams(quant_plan.fixed[value], acts.dtype)
        elif value not in quant_plan.shares:
            lo, hi = table.ranges[quant_plan.range_of[value]]
            params[value] = qparams_from_range(lo, hi, acts.dtype, acts.symmetric)
    for value, root in quant_plan.shares.items():
        params[value] = params[root]

    graph = model.graph
    rewriter = _Rewriter(graph)
    per_channel = weights.granularity == "per_channel"
    # fold first: a node after a folded ReLU then reads the quantized value whose params its bias needs
    for activation in quant_plan.folded:
        _fold_activation(graph, activation)
    for node in quant_plan.quantized_nodes:
        if node.op_type in ("Conv", "Gemm", "MatMul") and _is_constant(node.inputs[1]):
            _quantize_weight_and_bias(rewriter, node, params.get(node.inputs[0]), weights, per_channel)
        for i in _activation_slots(node):
            value = node.inputs[i]
            if _is_constant(value) and _is_float(value):
                array = value.const_value.numpy()
                const_params = qparams_from_range(array.min(), array.max(), acts.dtype, acts.symmetric)
                rewriter.constant_input(node, i, const_params, "quantized")
    for value in quant_plan.activations:
        rewriter.quantize_activation(value, params[value])

    ops = Counter(node.op_type for node in quant_plan.quantized_nodes)
    return {
        "quantized_nodes": dict(sorted(ops.items())),
        "quantized_activations": len(quant_plan.activations),
        "folded_activations": len(quant_plan.folded),
        "inserted": dict(rewriter.counts),
    }


def _quantize_weight_and_bias(
    rewriter: _Rewriter, node: ir.Node, input_params: QParams | None, weights: TensorQuant, per_channel: bool
) -> None:
    """int8 weight (+ int32 bias for Conv/Gemm when its layout allows) behind DequantizeLinear."""
    weight = node.inputs[1].const_value.numpy()
    axis = weight_axis(node, weight, per_channel)
    w_params = weight_qparams(weight, weights.dtype, weights.symmetric, axis, weights.reduce_range)
    rewriter.constant_input(node, 1, w_params, "quantized")
    bias = _constant(node.inputs[2]) if len(node.inputs) > 2 else None
    if bias is None or input_params is None or bias.ndim != 1 or bias.dtype != np.float32:
        return
    if node.op_type == "Gemm" and (node.attributes.get_float("alpha", 1.0) != 1.0 or node.attributes.get_float("beta", 1.0) != 1.0):
        return
    if w_params.scale.size not in (1, bias.size):
        return
    q_bias, b_params = quantize_bias(bias, float(input_params.scale), np.broadcast_to(w_params.scale, bias.shape))
    base = f"{node.inputs[2].name}_for_{node.outputs[0].name}_int32"
    dq = rewriter.dq_node(base, add_initializer(rewriter.graph, base, q_bias), b_params)
    dq.outputs[0].name = f"{base}_dequantized"
    rewriter.graph.insert_before(node, dq)
    node.replace_input_with(2, dq.outputs[0])
