"""Bias correction: cancel the mean output shift that weight quantization causes.

Quantizing a weight W adds an error W_err = W - dequant(quant(W)), and the quantized node's output
moves by -W_err x. Its mean, -W_err E[x], is not zero when inputs have a non-zero mean (post-ReLU
activations always do), so every output channel is biased. Adding W_err E[x] to the bias removes
that shift (Nagel et al., "Data-Free Quantization", empirical variant: E[x] from calibration data).

This runs on the FLOAT model before Q/DQ insertion, with exactly the weight parameters
`edgec.quant.qdq` will use, so the float bias Q/DQ later quantizes already holds the correction.
The caller collects E[x] per input channel with `ChannelStatsObserver(axis)` for every entry of
`input_mean_axes(nodes)`, in the same calibration run as the activation ranges.

Where the correction goes:

- Conv: its bias B (created when absent). E[x] is treated as the same at every spatial position,
  so the shift is W_err summed over kernel positions and each group's input channels.
- Gemm (transA=0): its C, scaled by alpha / beta (created when absent).
- MatMul with a constant 2-D B: the constant 1-D [N] operand of a following Add, only when that
  Add is the MatMul output's only consumer (else the shift would reach other readers uncorrected).

A bias read by anything else (another node, the graph output) or not stored as an initializer is
never edited in place: the corrected node gets a new initializer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from edgec.passes.initializers import constant_array, set_constant_input
from edgec.quant.qdq import weight_axis
from edgec.quant.qparams import dequantize, quantize, weight_qparams

if TYPE_CHECKING:
    from edgec.target import TensorQuant

__all__ = ["input_mean_axes", "correct_biases"]

_CORRECTABLE_OPS = frozenset({"Conv", "Gemm", "MatMul"})


class _Skip(Exception):
    """A node that cannot be corrected; `reason` becomes the `skipped_<reason>` count."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Site:
    """Where a node's correction is added: input `index` of `holder` (the node itself, or MatMul's Add)."""

    holder: ir.Node
    index: int
    #: what the output shift is multiplied by to become a bias delta (Gemm: 1 / beta)
    scale: float = 1.0


def _weight(node: ir.Node) -> np.ndarray:
    """The node's constant float32 weight with the rank its correction needs."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in _CORRECTABLE_OPS:
        raise _Skip("unsupported_op")
    weight = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight is None or weight.dtype != np.float32:
        raise _Skip("weight_not_constant")
    rank_ok = weight.ndim >= 3 if node.op_type == "Conv" else weight.ndim == 2
    if not rank_ok:
        raise _Skip("weight_rank")
    return weight


def _input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if index < len(node.inputs) else None


def _add_site(node: ir.Node, channels: int) -> _Site:
    """MatMul's bias: the constant [N] operand of the Add that is its output's only reader."""
    output = node.outputs[0]
    uses = list(output.uses())
    if len(uses) != 1 or output.is_graph_output() or uses[0].node.op_type != "Add":
        raise _Skip("matmul_without_single_add")
    add = uses[0].node
    index = 1 - uses[0].idx
    bias = constant_array(_input(add, index))
    if bias is None or bias.shape != (channels,):
        raise _Skip("matmul_add_not_bias")
    return _Site(add, index)


def _site(node: ir.Node, weight: np.ndarray) -> _Site:
    """Where the correction of `node` (whose weight is `weight`) goes; raises _Skip if nowhere."""
    if node.op_type == "MatMul":
        return _add_site(node, weight.shape[1])
    bias = _input(node, 2)
    if bias is not None and constant_array(bias) is None:
        raise _Skip("bias_not_constant")
    if node.op_type == "Conv":
        return _Site(node, 2)
    if node.attributes.get_int("transA", 0):
        raise _Skip("gemm_trans_a")
    beta = node.attributes.get_float("beta", 1.0)
    if beta == 0.0:
        raise _Skip("gemm_beta_zero")
    return _Site(node, 2, 1.0 / beta)


def _input_channels(node: ir.Node, weight: np.ndarray) -> int:
    """How many per-channel means the node's activation input has."""
    if node.op_type == "Conv":
        return weight.shape[1] * node.attributes.get_int("group", 1)
    if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        return weight.shape[1]
    return weight.shape[0]


def input_mean_axes(nodes: Sequence[ir.Node]) -> dict[str, int]:
    """Activation name -> the axis whose per-channel mean `correct_biases` needs for `nodes`.

    Conv inputs are channels-first (axis 1); Gemm and MatMul contract their input's last axis.
    Nodes `correct_biases` would skip need no mean; a tensor read by several nodes keeps the first
    node's axis (a node wanting another axis is then skipped for lack of a mean of its size).
    """
    axes: dict[str, int] = {}
    for node in nodes:
        try:
            _site(node, _weight(node))
        except _Skip:
            continue
        axes.setdefault(node.inputs[0].name, 1 if node.op_type == "Conv" else -1)
    return axes


def _weight_error(node: ir.Node, weight: np.ndarray, weights: TensorQuant) -> np.ndarray:
    """W - dequant(quant(W)) with the parameters `edgec.quant.qdq` gives this node's weight."""
    axis = weight_axis(node, weight, weights.granularity == "per_channel")
    params = weight_qparams(weight, weights.dtype, weights.symmetric, axis, weights.reduce_range)
    return weight.astype(np.float64) - dequantize(quantize(weight, params), params).astype(np.float64)


def _conv_shift(error: np.ndarray, mean: np.ndarray, group: int) -> np.ndarray:
    """Per-output-channel W_err ⊛ x for a spatially constant x: each group reads its own input channels."""
    out_channels, group_channels = error.shape[:2]
    per_input = error.reshape(out_channels, group_channels, -1).sum(axis=2)
    group_of = np.arange(out_channels) // (out_channels // group)
    return (per_input * mean.reshape(group, group_channels)[group_of]).sum(axis=1)


def _output_shift(node: ir.Node, error: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The mean error the quantized weight removes from each output channel, W_err E[x]."""
    if node.op_type == "Conv":
        return _conv_shift(error, mean, node.attributes.get_int("group", 1))
    if node.op_type == "Gemm":
        product = error @ mean if node.attributes.get_int("transB", 0) else mean @ error
        return node.attributes.get_float("alpha", 1.0) * product
    return mean @ error


def _correct(graph: ir.Graph, node: ir.Node, means: Mapping[str, np.ndarray], weights: TensorQuant) -> None:
    """Add W_err E[x] to one node's bias; raises _Skip when it cannot."""
    weight = _weight(node)
    site = _site(node, weight)
    mean = means.get(node.inputs[0].name)
    if mean is None or np.shape(mean) != (_input_channels(node, weight),):
        raise _Skip("no_mean")
    shift = _output_shift(node, _weight_error(node, weight, weights), np.asarray(mean, np.float64))
    bias = _input(site.holder, site.index)
    current = np.zeros((), np.float32) if bias is None else bias.const_value.numpy()
    corrected = (current + site.scale * shift).astype(current.dtype)
    name = f"{bias.name}_corrected" if bias is not None else f"{node.outputs[0].name}_bias"
    set_constant_input(graph, site.holder, site.index, corrected, name)


def correct_biases(
    model: ir.Model, nodes: Sequence[ir.Node], means: Mapping[str, np.ndarray], weights: TensorQuant
) -> dict[str, int]:
    """Fold each node's mean weight-quantization error into its bias, in place on the float `model`.

    `means` maps the activation names of `input_mean_axes(nodes)` to their per-channel means;
    `weights` is the scheme's weight quantization, so the error is the one Q/DQ will introduce.
    Returns {"corrected": n, "skipped_<reason>": n, ...} for the manifest.
    """
    counts: Counter[str] = Counter(corrected=0)
    for node in nodes:
        try:
            _correct(model.graph, node, means, weights)
        except _Skip as skip:
            counts[f"skipped_{skip.reason}"] += 1
        else:
            counts["corrected"] += 1
    return dict(counts)
