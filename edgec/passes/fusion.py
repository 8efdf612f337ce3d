"""Fusion passes: make the graph say which ops a target runs as one kernel.

Two kinds of fusion live here, because a target can learn about a fused kernel in two ways:

- Rewrites, for ops ONNX (or ONNX Runtime) has one node for: a decomposed GELU becomes `Gelu` /
  `com.microsoft.Gelu` / `com.microsoft.FastGelu`, a decomposed LayerNorm becomes
  `LayerNormalization`, a decomposed HardSwish becomes `HardSwish`. One node is one kernel on every
  runtime that has it, and the quantizer never sees the pieces.
- Annotations, for sequences a target fuses on its own (Conv + activation, attention): the nodes
  stay as they are and each one gets `metadata_props["edgec.fusion"] = "<kind>:<group id>"`. The
  graph still runs anywhere, so numerical verification is exact, while the quantizer (which puts
  no Q/DQ pair on a tensor inside a group, see `edgec.quant.qdq`) and later lowerings can see
  the group. Read groups with `fusion_group`, `fusion_groups`, `is_group_internal`, `group_outputs`.

Patterns are onnxscript rewriter patterns. Commutative operands are written as `OrValue`
alternatives rather than with the rewriter's `commute=True`, which expands a GELU into 264 rule
variants (7 s on a 3,000-node graph, against 0.4 s for the 12 rules here).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult
from onnxscript.rewriter import MatchResult, RewriteRuleSet, pattern
from onnxscript.rewriter.rules.common import fuse_hardswish_rules

from edgec import backends

if TYPE_CHECKING:
    from edgec.target import Target

__all__ = [
    "FUSION_KEY",
    "FUSABLE_ACTIVATIONS",
    "FuseActivationsPass",
    "FuseGeluPass",
    "FuseLayerNormPass",
    "MarkAttentionPass",
    "fusable_activations",
    "fusion_group",
    "fusion_kind",
    "fusion_groups",
    "is_group_internal",
    "group_outputs",
]

#: Node metadata key holding "<kind>:<group id>" for every node of a fused group.
FUSION_KEY = "edgec.fusion"
#: Activations a Conv/Gemm/MatMul kernel can end with (ONNX op types); Clip only with constant bounds.
FUSABLE_ACTIVATIONS = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSwish"})
#: The ops an activation group starts with, and the group kind each one names.
_GROUP_KINDS = {"Conv": "conv_act", "Gemm": "gemm_act", "MatMul": "matmul_act"}
_ORT_DOMAIN = "com.microsoft"
_ONNX_DOMAINS = ("", "ai.onnx")


# --------------------------------------------------------------------------------------------
# reading groups
# --------------------------------------------------------------------------------------------


def fusion_group(node: ir.Node) -> str | None:
    """The node's group, "<kind>:<id>" (unique within the model), or None when it is in none."""
    return node.metadata_props.get(FUSION_KEY)


def fusion_kind(node: ir.Node) -> str | None:
    """The kind of the node's group ("conv_act", "attention", ...), or None."""
    group = fusion_group(node)
    return None if group is None else group.partition(":")[0]


def fusion_groups(graph: ir.Graph) -> dict[str, list[ir.Node]]:
    """Group -> its nodes in graph order, for the graph's own nodes (not subgraphs)."""
    groups: dict[str, list[ir.Node]] = {}
    for node in graph:
        group = fusion_group(node)
        if group is not None:
            groups.setdefault(group, []).append(node)
    return groups


def is_group_internal(value: ir.Value) -> bool:
    """True when `value` lives inside a fused kernel: produced and read only by one group's nodes.

    Such a tensor never exists in memory on a target that fuses the group, so it must not get a
    Q/DQ pair (which would also stop the target from fusing). A graph output, or a value any node
    outside the group reads, is a boundary of the group instead.
    """
    producer = value.producer()
    group = None if producer is None else fusion_group(producer)
    if group is None or value.is_graph_output():
        return False
    uses = value.uses()
    return len(uses) > 0 and all(fusion_group(use.node) == group for use in uses)


def group_outputs(nodes: Iterable[ir.Node]) -> list[ir.Value]:
    """Values a group hands to the rest of the graph: where its fused kernel ends."""
    return [
        value
        for node in nodes
        for value in node.outputs
        if (len(value.uses()) > 0 or value.is_graph_output()) and not is_group_internal(value)
    ]


def _group_numbers(graph: ir.Graph) -> Iterator[int]:
    """Fresh group numbers: past any the graph already uses, so two passes never merge groups."""
    used = [int(m.group(1)) for node in graph if (m := re.fullmatch(r"[^:]*:g(\d+)", fusion_group(node) or ""))]
    return itertools.count(max(used, default=0) + 1)


def _annotate(nodes: Iterable[ir.Node], kind: str, number: int) -> None:
    for node in nodes:
        node.metadata_props[FUSION_KEY] = f"{kind}:g{number}"


def _onnx_opset(model: ir.Model) -> int:
    return model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))


def _scalar(value: ir.Value | None) -> float | None:
    """The number in a one-element constant of rank 0 or 1 (a rank-1 one broadcasts like a scalar), else None."""
    if value is None or value.const_value is None:
        return None
    array = value.const_value.numpy()
    return float(array.item()) if array.size == 1 and array.ndim <= 1 else None


def _sole_reader(value: ir.Value) -> ir.Node | None:
    """The one node reading `value` (as its first input), if nothing else, graph outputs included, does."""
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output() or uses[0].idx != 0:
        return None
    return uses[0].node


# --------------------------------------------------------------------------------------------
# Conv/Gemm/MatMul + activation groups
# --------------------------------------------------------------------------------------------


def fusable_activations(target: Target | None) -> frozenset[str]:
    """The activations `target`'s runtime runs inside the preceding Conv/Gemm/MatMul kernel in int8.

    Each backend says which (ONNX Runtime, TFLite: Relu and Clip; see `Backend.fusable_activations`).
    A runtime without a backend yet (TensorRT, which fuses a convolution or GEMM with every pointwise
    op after it and wants the Q/DQ pair after the activation) and no target at all (unit tests,
    graph inspection) get every kind.
    """
    backend = backends.find(target.runtime) if target is not None else None
    return FUSABLE_ACTIVATIONS if backend is None else backend.fusable_activations(target)


def _constant_bounds(clip: ir.Node) -> bool:
    """A Clip whose min/max are absent or constant: a fused kernel needs its bounds at build time."""
    return all(bound is None or bound.const_value is not None for bound in clip.inputs[1:])


class FuseActivationsPass(InPlacePass):
    """Group Conv/Gemm/MatMul with the activation that alone reads its output ("conv_act:g3").

    Annotation only (see the module docstring). A decomposed HardSwish (x * HardSigmoid(x), or
    x * Clip(x + 3, 0, 6) / 6) is first rewritten into `HardSwish` (opset >= 14) with onnxscript's
    `fuse_hardswish_rules`, so that it, too, is one node a group can end with.
    """

    def __init__(self, activations: Iterable[str] = FUSABLE_ACTIVATIONS) -> None:
        super().__init__()
        self.activations = frozenset(activations)
        unknown = self.activations - FUSABLE_ACTIVATIONS
        if unknown:
            raise ValueError(f"cannot fuse {sorted(unknown)}; fusable: {sorted(FUSABLE_ACTIVATIONS)}")

    def call(self, model: ir.Model) -> PassResult:
        modified = False
        if "HardSwish" in self.activations and _onnx_opset(model) >= 14:
            modified = fuse_hardswish_rules().apply_to_model(model) > 0
        numbers = _group_numbers(model.graph)
        for node in model.graph:
            kind = _GROUP_KINDS.get(node.op_type) if node.domain in _ONNX_DOMAINS else None
            if kind is None or fusion_group(node) is not None:
                continue
            activation = _sole_reader(node.outputs[0])
            if activation is None or not self._fusable(activation):
                continue
            _annotate([node, activation], kind, next(numbers))
            modified = True
        return PassResult(model, modified)

    def _fusable(self, node: ir.Node) -> bool:
        return (
            node.domain in _ONNX_DOMAINS
            and node.op_type in self.activations
            and fusion_group(node) is None
            and (node.op_type != "Clip" or _constant_bounds(node))
        )


# --------------------------------------------------------------------------------------------
# shared pattern pieces
# --------------------------------------------------------------------------------------------


def _either(op: Any, op_type: str, a: Any, b: Any) -> pattern.OrValue:
    """`a <op_type> b` with its operands in either order (Add, Mul)."""
    build = getattr(op, op_type)
    return pattern.OrValue([build(a, b), build(b, a)])


def _root(op: Any, op_type: str, a: Any, b: Any, swap: bool) -> Any:
    """The pattern's output node; its operand order is a rule parameter (a pattern cannot end in OrValue)."""
    return getattr(op, op_type)(b, a) if swap else getattr(op, op_type)(a, b)


# --------------------------------------------------------------------------------------------
# GELU
# --------------------------------------------------------------------------------------------

_SQRT_2 = math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715
#: contrib? -> input types the emitted op has kernels for (ORT 1.32 CPU: contrib Gelu float/float16 only).
_GELU_TYPES = {
    False: frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE}),
    True: frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16}),
}


class _GeluRule(pattern.RewriteRuleClassBase):
    """0.5 * x * (1 + Erf(x / sqrt(2)))  or  0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3))).

    One rule per way the outer product of 0.5, x and (1 + ...) associates, and per operand order
    of its last Mul; every inner commutative op takes either order through `OrValue`. Constants
    must be scalars within onnxscript's default tolerance (rel 1e-5) of the exact values, so a
    GELU-like function with another constant is left alone.
    """

    def __init__(self, approximate: bool, association: int, swap: bool, contrib: bool) -> None:
        super().__init__(f"Gelu{'Tanh' if approximate else 'Erf'}{association}{'s' if swap else ''}")
        self._approximate, self._association, self._swap, self._contrib = approximate, association, swap, contrib

    def pattern(self, op: Any, x: Any) -> Any:
        if self._approximate:
            cubic = _either(op, "Mul", _GELU_CUBIC, op.Pow(x, 3))
            inner = op.Tanh(_either(op, "Mul", _SQRT_2_OVER_PI, _either(op, "Add", x, cubic)))
        else:
            inner = op.Erf(pattern.OrValue([op.Div(x, _SQRT_2), op.Mul(x, 1 / _SQRT_2), op.Mul(1 / _SQRT_2, x)]))
        one_plus = _either(op, "Add", inner, 1.0)
        if self._association == 0:  # (x * 0.5) * (1 + ...): PyTorch's and Hugging Face's order
            return _root(op, "Mul", _either(op, "Mul", x, 0.5), one_plus, self._swap)
        if self._association == 1:  # 0.5 * (x * (1 + ...))
            return _root(op, "Mul", 0.5, _either(op, "Mul", x, one_plus), self._swap)
        return _root(op, "Mul", x, _either(op, "Mul", 0.5, one_plus), self._swap)  # x * (0.5 * (1 + ...))

    def check(self, context: Any, x: ir.Value, **_: Any) -> MatchResult:
        result = MatchResult()
        if x.dtype not in _GELU_TYPES[self._contrib]:
            return result.fail(f"no {'contrib ' if self._contrib else ''}Gelu kernel for input type {x.dtype}", x)
        return result

    def rewrite(self, op: Any, x: ir.Value, **_: Any) -> ir.Value:
        if self._contrib:
            return op.FastGelu(x, _domain=_ORT_DOMAIN) if self._approximate else op.Gelu(x, _domain=_ORT_DOMAIN)
        return op.Gelu(x, approximate="tanh") if self._approximate else op.Gelu(x)


class FuseGeluPass(InPlacePass):
    """Decomposed GELU (erf or tanh form) -> one node, if the model can say GELU in one node.

    ONNX `Gelu` (approximate="tanh" for the tanh form) when the model's opset is >= 20; else, when
    the runtime runs ONNX Runtime's contrib ops (`contrib`), `com.microsoft.Gelu` /
    `com.microsoft.FastGelu` (both compute the same formulas); else the decomposition stays, and
    runtimes that pattern-match it (TensorRT) still can.

    onnxscript's own GELU rules (`ort_fusions.gelu`, `ort_fusions.erfgelu`) emit only the contrib
    ops and match three of the four orders in use (not `x * 0.5 * (1 + erf)`, PyTorch's export of
    Hugging Face's GELU), hence these rules.
    """

    def __init__(self, contrib_ops: bool = False) -> None:
        super().__init__()
        self.contrib_ops = contrib_ops

    def call(self, model: ir.Model) -> PassResult:
        if _onnx_opset(model) >= 20:
            contrib = False
        elif self.contrib_ops:
            contrib = True
        else:
            return PassResult(model, False)
        if not any(node.op_type in ("Erf", "Tanh") for node in model.graph.all_nodes()):
            return PassResult(model, False)  # the rules would otherwise try every Mul in the graph
        rules = RewriteRuleSet(
            [
                _GeluRule.rule(approximate, association, swap, contrib)
                for approximate in (False, True)
                for association in range(3)
                for swap in (False, True)
            ]
        )
        return PassResult(model, rules.apply_to_model(model) > 0)


# --------------------------------------------------------------------------------------------
# LayerNorm
# --------------------------------------------------------------------------------------------

#: LayerNormalization input types, and the precision (stash_type) it then normalizes in.
_LAYER_NORM_STASH = {
    ir.DataType.FLOAT: ir.DataType.FLOAT,
    ir.DataType.FLOAT16: ir.DataType.FLOAT,
    ir.DataType.BFLOAT16: ir.DataType.FLOAT,
    ir.DataType.DOUBLE: ir.DataType.DOUBLE,
}


def _is_last_axis(axes: ir.Value | ir.Attr | None, rank: int | None) -> bool:
    """`axes` (a ReduceMean input or attribute) names exactly the last axis of a rank-`rank` tensor."""
    if isinstance(axes, ir.Attr):
        values = list(axes.as_ints()) if axes.type == ir.AttributeType.INTS else []
    elif axes is not None and axes.const_value is not None:
        values = axes.const_value.numpy().reshape(-1).tolist()
    else:
        values = []
    return len(values) == 1 and (values[0] == -1 or (rank is not None and values[0] == rank - 1))


def _is_last_axis_vector(value: ir.Value, x: ir.Value) -> bool:
    """`value` is shaped [D] (leading 1s allowed, rank <= x's) with D = x's static last dimension.

    LayerNormalization's scale and bias hold one number per normalized element; a gamma varying
    along another axis (or broadcasting x to a higher rank) is not a LayerNorm's.
    """
    if value.shape is None or x.shape is None or x.shape.rank() == 0 or value.shape.rank() > x.shape.rank():
        return False
    last = x.shape[-1]
    dims = list(value.shape)
    return isinstance(last, int) and dims[-1:] == [last] and all(d == 1 for d in dims[:-1])


class _LayerNormRule(pattern.RewriteRuleClassBase):
    """(x - mean) / sqrt(mean((x - mean)^2) + eps) * gamma over the last axis -> LayerNormalization.

    The square may be Pow(d, 2) or Mul(d, d); the division Div or Mul by Reciprocal. ReduceMean
    takes its axes as an input from opset 18 and as an attribute before; both ReduceMeans must
    keep dims and reduce the last axis only, which is all LayerNormalization(axis=-1) computes.
    Shapes of x and gamma must be known (run `infer_shapes` first).
    """

    def __init__(self, axes_as_input: bool, swap: bool) -> None:
        super().__init__(f"LayerNorm{'AxesInput' if axes_as_input else 'AxesAttribute'}{'s' if swap else ''}")
        self._axes_as_input, self._swap = axes_as_input, swap
        self._epsilon = 0.0
        self._stash_type = ir.DataType.FLOAT

    def _reduce_mean(self, op: Any, x: Any, axes: Any, name: str) -> Any:
        if self._axes_as_input:
            return op.ReduceMean(x, axes, _allow_other_attributes=True, _outputs=[name])
        return op.ReduceMean(x, axes=axes, _allow_other_attributes=True, _outputs=[name])

    def pattern(self, op: Any, x: Any, mean_axes: Any, variance_axes: Any, epsilon: Any, scale: Any) -> Any:
        deviation = op.Sub(x, self._reduce_mean(op, x, mean_axes, "mean"))
        squared = pattern.OrValue([op.Pow(deviation, 2), op.Mul(deviation, deviation)])
        std = op.Sqrt(_either(op, "Add", self._reduce_mean(op, squared, variance_axes, "variance"), epsilon))
        normalized = pattern.OrValue([op.Div(deviation, std), _either(op, "Mul", deviation, op.Reciprocal(std))])
        return _root(op, "Mul", normalized, scale, self._swap)

    def check(
        self,
        context: Any,
        x: ir.Value,
        mean_axes: ir.Value | ir.Attr,
        variance_axes: ir.Value | ir.Attr,
        epsilon: ir.Value,
        scale: ir.Value,
        mean: ir.Value,
        variance: ir.Value,
        **_: Any,
    ) -> MatchResult:
        result = MatchResult()
        if x.dtype not in _LAYER_NORM_STASH:
            return result.fail(f"LayerNormalization has no {x.dtype} input", x)
        rank = None if x.shape is None else x.shape.rank()
        for reduced, axes in ((mean, mean_axes), (variance, variance_axes)):
            if reduced.producer().attributes.get_int("keepdims", 1) != 1:
                return result.fail("ReduceMean drops the reduced axis", reduced)
            if not _is_last_axis(axes, rank):
                return result.fail("ReduceMean does not reduce exactly the last axis", reduced)
        epsilon_value = _scalar(epsilon)
        if epsilon_value is None:
            return result.fail("epsilon is not a constant scalar", epsilon)
        if not _is_last_axis_vector(scale, x):
            return result.fail("gamma is not one value per element of the last axis (are shapes inferred?)", scale)
        self._epsilon, self._stash_type = float(epsilon_value), _LAYER_NORM_STASH[x.dtype]
        return result

    def rewrite(self, op: Any, x: ir.Value, scale: ir.Value, **_: Any) -> ir.Value:
        return op.LayerNormalization(x, scale, axis=-1, epsilon=self._epsilon, stash_type=self._stash_type)


class _LayerNormBiasRule(pattern.RewriteRuleClassBase):
    """LayerNormalization(x, gamma) + beta -> LayerNormalization(x, gamma, beta), beta one value per element."""

    def __init__(self, swap: bool) -> None:
        super().__init__(f"LayerNormBias{'s' if swap else ''}")
        self._swap = swap

    def pattern(self, op: Any, x: Any, scale: Any, bias: Any) -> Any:
        normalized = op.LayerNormalization(x, scale, _allow_other_attributes=True, _outputs=["normalized"])
        return _root(op, "Add", normalized, bias, self._swap)

    def check(self, context: Any, x: ir.Value, bias: ir.Value, normalized: ir.Value, **_: Any) -> MatchResult:
        result = MatchResult()
        axis = normalized.producer().attributes.get_int("axis", -1)
        if not (axis == -1 or (x.shape is not None and axis == x.shape.rank() - 1)):
            return result.fail("LayerNormalization does not normalize the last axis only", normalized)
        if not _is_last_axis_vector(bias, x):
            return result.fail("beta is not one value per element of the last axis (are shapes inferred?)", bias)
        return result

    def rewrite(self, op: Any, x: ir.Value, scale: ir.Value, bias: ir.Value, normalized: ir.Value) -> ir.Value:
        attributes = normalized.producer().attributes
        return op.LayerNormalization(
            x,
            scale,
            bias,
            axis=attributes.get_int("axis", -1),
            epsilon=attributes.get_float("epsilon", 1e-5),
            stash_type=attributes.get_int("stash_type", 1),
        )


class FuseLayerNormPass(InPlacePass):
    """Decomposed LayerNorm over the last axis (+ gamma, + optional beta) -> LayerNormalization (opset >= 17).

    Follows onnxscript's `rules/fusion/_layer_norm.py`, which matches axes given as an input only,
    takes gamma and beta in one operand order only and does not check their shapes: a per-position
    gamma ([S, D]) would become a wrong LayerNormalization there. Models below opset 17 have no
    LayerNormalization and are left alone.
    """

    def call(self, model: ir.Model) -> PassResult:
        if _onnx_opset(model) < 17 or not any(node.op_type == "ReduceMean" for node in model.graph.all_nodes()):
            return PassResult(model, False)
        rules = RewriteRuleSet(
            [_LayerNormRule.rule(axes_as_input, swap) for axes_as_input in (True, False) for swap in (False, True)]
            + [_LayerNormBiasRule.rule(swap) for swap in (False, True)]
        )
        return PassResult(model, rules.apply_to_model(model) > 0)


# --------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------


class _Attention(pattern.PatternBase):
    """MatMul(Q, K^T) [-> Div/Mul by a constant scalar] [-> Add mask] -> Softmax(last axis) -> MatMul(., V)."""

    def __init__(self, softmax_default_axis: int) -> None:
        super().__init__("Attention")
        self._softmax_default_axis = softmax_default_axis

    def pattern(self, op: Any, query: Any, key_t: Any, value: Any, scale: Any, mask: Any) -> Any:
        scores = op.MatMul(query, key_t)
        scaled = pattern.OrValue([op.Div(scores, scale), _either(op, "Mul", scores, scale), scores])
        masked = pattern.OrValue([_either(op, "Add", scaled, mask), scaled])
        probs = op.Softmax(masked, _allow_other_attributes=True, _outputs=["probs"])
        return op.MatMul(probs, value)

    def check(
        self,
        context: Any,
        query: ir.Value,
        key_t: ir.Value,
        value: ir.Value,
        scale: ir.Value | None,
        probs: ir.Value,
        **_: Any,
    ) -> MatchResult:
        result = MatchResult()
        if any(v.const_value is not None for v in (query, key_t, value)):
            return result.fail("Q, K and V are activations in attention; one here is a constant")
        if scale is not None and _scalar(scale) is None:
            return result.fail("the scores are scaled by something other than a constant scalar", scale)
        axis = probs.producer().attributes.get_int("axis", self._softmax_default_axis)
        rank = None if probs.shape is None else probs.shape.rank()
        if not (axis == -1 or (rank is not None and axis == rank - 1)):
            return result.fail("Softmax is not over the last axis", probs)
        return result


class MarkAttentionPass(InPlacePass):
    """Annotate each attention core as one group ("attention:g7"); the graph is not changed.

    The region is MatMul(Q, K^T), the optional scale and mask Add, the Softmax and MatMul(., V),
    and only when none of its intermediate tensors is read outside it (or is a graph output).
    onnxscript's `ort_fusions.sdpa` pattern matches the same core but requires rank-4 Q/K/V of
    known shapes and a Transpose producing K^T, and rewrites into an internal op; here any
    MatMul-based attention is marked, and where K^T comes from is left to the target.
    """

    def call(self, model: ir.Model) -> PassResult:
        attention = _Attention(softmax_default_axis=-1 if _onnx_opset(model) >= 13 else 1)
        numbers = _group_numbers(model.graph)
        modified = False
        for node in model.graph:
            if node.op_type != "MatMul" or node.domain not in _ONNX_DOMAINS:
                continue
            match = attention.match(model, model.graph, node, check_nodes_are_removable=True)
            if not match or any(fusion_group(n) is not None for n in match.nodes):
                continue
            _annotate(match.nodes, "attention", next(numbers))
            modified = True
        return PassResult(model, modified)
