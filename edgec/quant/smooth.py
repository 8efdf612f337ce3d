"""SmoothQuant (Xiao et al. 2023): move activation outliers into the weights before static int8.

A per-tensor activation scale is set by the largest channel. In transformers a few LayerNorm output
channels run 10-100x larger than the rest, so every other channel gets a handful of int8 levels.
For Y = X W, dividing input channel j of X by s_j and multiplying row j of W by s_j leaves Y
unchanged; with s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) the activation's channels become
flatter, and the weights, quantized per output channel, absorb the difference.

The division is folded into the op that produces X, so smoothing costs nothing at run time:

- producers: `LayerNormalization` (its Scale and B are divided by s; this holds for any `axis`,
  since s only scales the last axis of the output) and `Mul` by a constant (the constant is
  divided; a scalar or [1] constant becomes a [K] vector);
- consumers, all of them (except `Shape`/`Size`, which read no values): `MatMul` with a constant
  2-D weight [K, N], or `Gemm` (transA=0) with a constant B [K, N], or [N, K] under transB=1.
  Q, K and V projections reading one LayerNorm share one s, with max|W_j| taken over every
  consumer's row j.

Any other producer (a residual `Add`, a `Reshape`, a graph input...) or consumer would need a Mul
at run time; such groups, and groups whose weight another node also reads, are skipped and counted
by reason. Pre-LN transformers (GPT, LLaMA, OPT) fold at every LayerNorm; in a post-LN encoder
(BERT, MiniLM) each LayerNorm output also feeds the residual Add, so there only the FFN's second
MatMul folds, through the Mul by 0.5 that ends an exported GELU.

With `explicit`, such a group is smoothed anyway through an inserted `Mul(X, 1/s)` that only the
linear consumers read (the residual Add keeps X): one elementwise op per group at run time, for
the LayerNorm + residual outputs and fused GELUs of a post-LN encoder. ONNX Runtime's fused
`com.microsoft` Attention counts as a linear consumer (its [hidden, 3 * hidden] QKV weight).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgec.errors import BadInputError
from edgec.passes.initializers import add_initializer, set_constant_input, unique_name
from edgec.quant.calibrator import observe
from edgec.quant.observers import ChannelStatsObserver

__all__ = ["smooth"]

#: s is clipped to this range: a channel that is almost silent in the calibration data must not
#: blow its weight row up (or down) by many orders of magnitude.
_SCALE_LIMITS = (1e-5, 1e5)
_LINEAR_OPS = frozenset({"MatMul", "Gemm"})
#: Consumers that read only X's shape, which dividing X by s leaves alone (exporters add Shape nodes).
_SHAPE_READERS = frozenset({"Shape", "Size"})


@dataclass
class _Group:
    """An activation X whose producer absorbs 1/s (None: an inserted Mul does) and whose consumers absorb s."""

    activation: ir.Value
    producer: ir.Node | None
    #: producer input slots holding the constants that scale its output per channel
    divided: list[int]
    consumers: list[ir.Node]


def _is_default_domain(node: ir.Node) -> bool:
    return node.domain in ("", "ai.onnx")


def _is_constant(value: ir.Value | None) -> bool:
    """A float initializer (not one that is also a graph input: a caller could override that one).

    Reads only metadata, so finding groups loads no weight data.
    """
    return (value is not None and value.const_value is not None and value.is_initializer()
            and not value.is_graph_input() and value.const_value.dtype.is_floating_point())


def _input_channel_axis(node: ir.Node) -> int | None:
    """Axis of the node's weight indexed by X's channels, or None when the node cannot absorb s."""
    if node.op_type == "Attention" and node.domain == "com.microsoft" and len(node.inputs) > 1:
        weight = node.inputs[1]
        return 0 if _is_constant(weight) and len(weight.const_value.shape) == 2 else None
    if not _is_default_domain(node) or node.op_type not in _LINEAR_OPS or len(node.inputs) < 2:
        return None
    weight = node.inputs[1]
    if not _is_constant(weight) or len(weight.const_value.shape) != 2:
        return None
    if node.op_type == "MatMul":
        return 0
    if node.attributes.get_int("transA", 0):
        return None
    return 1 if node.attributes.get_int("transB", 0) else 0


def _divided_inputs(node: ir.Node) -> list[int] | None:
    """Input slots whose constants scale the node's output per channel, or None if it cannot absorb 1/s."""
    if not _is_default_domain(node):
        return None
    if node.op_type == "LayerNormalization":
        slots = [i for i in (1, 2) if i < len(node.inputs) and node.inputs[i] is not None]
        return slots if all(_is_constant(node.inputs[i]) for i in slots) else None
    if node.op_type == "Mul":
        slots = [i for i in (0, 1) if _is_constant(node.inputs[i])]
        return slots if len(slots) == 1 else None
    return None


def _candidates(graph: ir.Graph) -> list[ir.Value]:
    """Inputs X of linear layers (MatMul/Gemm/Attention with a constant weight), each once, in graph order."""
    return list(dict.fromkeys(
        node.inputs[0] for node in graph
        if (node.op_type in _LINEAR_OPS and _is_default_domain(node) and _is_constant(node.inputs[1]))
        or (node.op_type == "Attention" and _input_channel_axis(node) is not None)
    ))


def _group(activation: ir.Value, explicit: bool) -> _Group | str:
    """The foldable group around `activation`, or the reason there is none.

    With `explicit`, a group that cannot fold is smoothed by an inserted Mul instead (producer None)
    that only its linear consumers read; a weight another node also reads still rules it out.
    """
    reason = "graph output" if activation.is_graph_output() else None
    producer = activation.producer()
    divided = None if producer is None else _divided_inputs(producer)
    if divided is None:
        reason = reason or f"producer {producer.op_type if producer is not None else 'graph input'}"
    if reason is not None and not explicit:
        return reason
    consumers = []
    for use in activation.uses():
        if use.node.op_type in _SHAPE_READERS and _is_default_domain(use.node):
            continue
        if use.idx != 0 or _input_channel_axis(use.node) is None:
            if not explicit:
                return f"consumer {use.node.op_type}"
            reason = reason or f"consumer {use.node.op_type}"
            continue
        weight = use.node.inputs[1]
        if len(weight.uses()) != 1 or weight.is_graph_output():
            return "shared weight"  # scaling it would change what its other readers compute
        consumers.append(use.node)
    if reason is None:
        return _Group(activation, producer, divided, consumers)
    return _Group(activation, None, [], consumers)


def _activation_peaks(model: ir.Model, groups: Sequence[_Group], samples: Sequence[Mapping[str, np.ndarray]],
                      threads: int, progress: Callable[[int, int], None] | None) -> list[np.ndarray]:
    """Per-channel max|X| of every group's X, from one pass over the samples."""
    observers = {group.activation.name: ChannelStatsObserver(axis=-1) for group in groups}
    observe(model, observers, samples, threads=threads, progress=progress)
    return [observers[group.activation.name].max_abs() for group in groups]


def _weight_peaks(group: _Group) -> np.ndarray:
    """Per input channel j, max|W_j| over every consumer's weight: one s must suit them all."""
    peaks = [np.abs(node.inputs[1].const_value.numpy()).max(axis=1 - _input_channel_axis(node))
             for node in group.consumers]
    return np.max(peaks, axis=0).astype(np.float64)


def _scales(activation_peak: np.ndarray, weight_peak: np.ndarray, alpha: float) -> np.ndarray:
    """s_j = max|X_j|^alpha / max|W_j|^(1 - alpha); 1 for a channel silent on either side."""
    scales = np.ones_like(activation_peak, dtype=np.float64)
    live = (activation_peak > 0) & (weight_peak > 0)
    scales[live] = activation_peak[live] ** alpha / weight_peak[live] ** (1.0 - alpha)
    return np.clip(scales, *_SCALE_LIMITS)


def _migrate(graph: ir.Graph, group: _Group, scales: np.ndarray) -> None:
    """X' = X / s through the producer's constants (or an inserted Mul), W' = diag(s) W in every consumer."""
    if group.producer is None:
        _insert_divider(graph, group, scales)
    for index in group.divided:
        constant = group.producer.inputs[index].const_value.numpy()
        value = group.producer.inputs[index]
        set_constant_input(graph, group.producer, index, (constant / scales).astype(constant.dtype), f"{value.name}_smoothed")
    for node in group.consumers:
        weight = node.inputs[1].const_value.numpy()
        rows = np.expand_dims(scales, 1 - _input_channel_axis(node))
        set_constant_input(graph, node, 1, (weight * rows).astype(weight.dtype), f"{node.inputs[1].name}_smoothed")


def _insert_divider(graph: ir.Graph, group: _Group, scales: np.ndarray) -> None:
    """X' = Mul(X, 1/s), read by the group's linear consumers only; X's other readers keep X."""
    activation = group.activation
    name = unique_name(graph, f"{activation.name}_smoothing")
    inverse = add_initializer(graph, name, (1.0 / scales).astype(np.float32))
    divider = ir.node("Mul", [activation, inverse], name=name, num_outputs=1)
    smoothed = divider.outputs[0]
    smoothed.name, smoothed.dtype, smoothed.shape = f"{activation.name}_smoothed", activation.dtype, activation.shape
    first = min(group.consumers, key=list(graph).index)
    graph.insert_before(first, divider)
    for node in group.consumers:
        node.replace_input_with(0, smoothed)


def smooth(
    model: ir.Model,
    samples: Sequence[Mapping[str, np.ndarray]],
    alpha: float,
    *,
    explicit: bool = False,
    threads: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """Migrate activation outliers of every foldable MatMul/Gemm input into its weights, in place.

    With `explicit`, also of every other one, through an inserted Mul. The float model computes the
    same outputs afterwards (up to float rounding). `alpha` in [0, 1]
    is the share of the difficulty moved to the weights; 0 is not a no-op here but the formula's
    other end, s = 1 / max|W_j| (weight rows normalized to peak 1), so callers that read 0 as
    "disabled" must not call this. Returns counts for the manifest: groups and linear nodes
    smoothed, and groups skipped by reason.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"SmoothQuant alpha must be in [0, 1], got {alpha}")
    groups: list[_Group] = []
    skipped: Counter[str] = Counter()
    for activation in _candidates(model.graph):
        found = _group(activation, explicit)
        if isinstance(found, str):
            skipped[found] += 1
        else:
            groups.append(found)
    if groups:
        if not samples:
            raise BadInputError("SmoothQuant needs calibration samples to measure activation channels")
        peaks = _activation_peaks(model, groups, samples, threads, progress)
        for group, peak in zip(groups, peaks):
            _migrate(model.graph, group, _scales(peak, _weight_peaks(group), alpha))
    return {
        "groups": len(groups),
        **({"inserted_mul": sum(group.producer is None for group in groups)} if explicit else {}),
        "nodes": sum(len(group.consumers) for group in groups),
        "skipped": dict(sorted(skipped.items())),
    }
