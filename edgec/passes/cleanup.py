"""Cleanup passes: shape inference, constant folding, identity-like elimination, deduplication and
dead-code removal.

These wrap onnx-ir's and onnxscript's maintained implementations (onnxscript's constant folder
evaluates nodes with the ONNX reference semantics and handles Shape/Size of static shapes; its rewrite
rules remove no-op Cast/Transpose/Expand and collapse Transpose/Reshape/Unsqueeze chains), so edgec
does not re-implement ONNX operator semantics. Edgec adds only what those libraries lack, each piece
with the reason in its docstring: Dropout in its opset-12+ form, Reshape to the input's own shape,
Squeeze/Unsqueeze pairs that cancel, Identity removal that keeps every graph output's name, folding
of small ConstantOfShape fills and turning Constant nodes into initializers.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult
from onnx_ir.passes.common import (
    CommonSubexpressionEliminationPass,
    DeduplicateHashedInitializersPass,
    RemoveInitializersFromInputsPass,
    RemoveUnusedNodesPass,
    RemoveUnusedOpsetsPass,
    ShapeInferencePass,
)
from onnxscript.optimizer import _constant_folding
from onnxscript.rewriter import MatchResult, RewritePass, RewriteRuleClassBase, RewriteRuleSet
from onnxscript.rewriter.rules.common import (
    no_op_cast_rule,
    no_op_expand_rule,
    no_op_transpose_rule,
    reshape_reshape_rule,
    transpose_transpose_rule,
    unsqueeze_unsqueeze_rule,
)

from edgec.limits import check_tensor_bytes

__all__ = [
    "FreezeInitializersPass",
    "InferShapesPass",
    "FoldConstantsPass",
    "EliminateIdentityLikePass",
    "DeduplicatePass",
    "RemoveUnusedPass",
]

#: Largest constant (elements) the folder reads or writes; weights above this stay as they are.
FOLD_SIZE_LIMIT = 1 << 22

#: Largest ConstantOfShape output (elements) folded into an initializer. A fill costs one node and
#: a shape vector as it is, but prod(shape) elements of model size once folded; small fills (biases,
#: masks of a few rows) are worth materialising, large ones (zero states, attention masks) are not.
FILL_FOLD_LIMIT = 1 << 16

#: Sweeps of EliminateIdentityLikePass at most. Every rule firing removes a non-Constant node, so
#: the loop ends on its own within (node count) sweeps; the bound only guards against a future
#: library rule that undoes another's work. Real graphs settle in two or three sweeps.
_MAX_SWEEPS = 16


def _constant(value: ir.Value | None) -> np.ndarray | None:
    """The value's array if it is fixed when the model is compiled, else None.

    An initializer that is also a graph input is a default the caller may override, so it does not
    count as constant.
    """
    if value is None or value.is_graph_input():
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def _generated_elements(node: ir.Node) -> int | None:
    """Elements a Range, ConstantOfShape, Expand or Tile with constant inputs creates; None when not known.

    These ops make large tensors from a few bytes: a 260-byte model can declare Range(0, 1e9).
    """
    if node.domain != "" or node.op_type not in ("Range", "ConstantOfShape", "Expand", "Tile"):
        return None
    arrays = [_constant(value) for value in node.inputs]
    if not arrays or any(array is None for array in arrays):
        return None
    try:
        if node.op_type == "Range":
            start, limit, delta = (float(np.asarray(array).reshape(-1)[0]) for array in arrays[:3])
            return 0 if delta == 0 else max(math.ceil((limit - start) / delta), 0)
        if node.op_type == "ConstantOfShape":
            return math.prod(int(dim) for dim in arrays[0].reshape(-1))
        if node.op_type == "Expand":
            return math.prod(np.broadcast_shapes(arrays[0].shape, tuple(int(dim) for dim in arrays[1].reshape(-1))))
        return arrays[0].size * math.prod(int(r) for r in arrays[1].reshape(-1))
    except (OverflowError, ValueError, IndexError):  # infinite or NaN bounds, empty shape inputs
        return sys.maxsize


def _check_declared_sizes(model: ir.Model) -> None:
    """Refuse a model whose inferred or declared static shapes hold a tensor beyond `EDGEC_MAX_TENSOR_MB`."""
    for value in model.graph.inputs:
        _check_value_size(value)
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        for value in node.outputs:
            _check_value_size(value)


def _check_value_size(value: ir.Value) -> None:
    if value.shape is None or value.dtype is None or not all(isinstance(dim, int) for dim in value.shape):
        return
    itemsize = max(value.dtype.itemsize, 1) if value.dtype.itemsize else 1
    check_tensor_bytes(math.prod(value.shape) * itemsize, f"model: tensor '{value.name}'")


class InferShapesPass(ShapeInferencePass):
    """ONNX shape inference, lenient: a model with unknown custom ops still gets the shapes it can.

    Data propagation (which computes small shape tensors' values) holds each value it propagates in
    memory, about a hundred bytes per element; it is switched off for a model with a generator op
    beyond FOLD_SIZE_LIMIT elements. A model whose shapes then hold a tensor beyond the tensor limit
    is refused (`edgec.limits`).
    """

    def __init__(self) -> None:
        super().__init__(check_type=True, strict_mode=False, data_prop=True)

    def call(self, model: ir.Model) -> PassResult:
        self.data_prop = not any((_generated_elements(node) or 0) > FOLD_SIZE_LIMIT
                                 for node in ir.traversal.RecursiveGraphIterator(model.graph))
        result = super().call(model)
        _check_declared_sizes(result.model)
        return result


# --------------------------------------------------------------------------------------------
# constant folding
# --------------------------------------------------------------------------------------------


def _fold_small_fills(node: ir.Node) -> bool | None:
    """The folder's `should_fold` hook: fold ConstantOfShape up to FILL_FOLD_LIMIT elements, and no
    generator op beyond FOLD_SIZE_LIMIT (the folder checks its output size only after computing it).

    onnxscript keeps every ConstantOfShape by default (so that no fill bloats the model); None leaves
    all other ops to the folder's default rules.
    """
    elements = _generated_elements(node)
    if node.op_type == "ConstantOfShape" and node.domain == "":
        return elements is not None and elements <= FILL_FOLD_LIMIT
    return False if elements is not None and elements > FOLD_SIZE_LIMIT else None


def _lift_live_constants(model: ir.Model) -> bool:
    """Replace every used Constant node of the main graph and its subgraphs by an initializer.

    Runtimes and the Q/DQ rewriter treat weights as initializers, and a Constant node counts as a
    node in every statistic. Dead Constants (e.g. the ones the folder has just made unused) are left
    for RemoveUnusedPass, so that dead-code removal stays one pass's job; a Constant that is a graph
    output stays a node, and functions cannot hold initializers. The initializer takes the node's
    output name, so nothing a user sees is renamed.
    """
    lifted = False
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.op_type != "Constant" or node.domain != "" or len(node.outputs) != 1:
            continue
        output = node.outputs[0]
        if output.is_graph_output() or not output.uses():
            continue
        tensor = ir.convenience.get_const_tensor(output)
        if tensor is None:
            continue
        graph = node.graph
        assert graph is not None
        initializer = ir.Value(
            name=output.name, type=ir.TensorType(tensor.dtype), shape=ir.Shape(tensor.shape), const_value=tensor
        )
        output.replace_all_uses_with(initializer)
        graph.remove(node, safe=True)
        graph.register_initializer(initializer)
        lifted = True
    return lifted


class FoldConstantsPass(InPlacePass):
    """Fold every node whose inputs are all constants into an initializer.

    onnxscript's folder does the evaluation (ONNX reference semantics; Shape/Size of values whose
    shape is static, so run InferShapesPass first). Two things it leaves alone are finished here:
    ConstantOfShape (kept by the folder unless `_fold_small_fills` allows it) and Constant nodes
    themselves, which become initializers.
    """

    def __init__(self) -> None:
        super().__init__()
        self._folder = _constant_folding.FoldConstantsPass(
            shape_inference=False,
            input_size_limit=FOLD_SIZE_LIMIT,
            output_size_limit=FOLD_SIZE_LIMIT,
            should_fold=_fold_small_fills,
        )

    def call(self, model: ir.Model) -> PassResult:
        folded = self._folder(model).modified
        lifted = _lift_live_constants(model)
        return PassResult(model, folded or lifted)


# --------------------------------------------------------------------------------------------
# identity-like elimination
# --------------------------------------------------------------------------------------------


class _InferenceDropout(RewriteRuleClassBase):
    """Dropout that passes its input through -> Identity (its mask output must be unused).

    onnxscript's dropout rules match `ratio`/`training_mode` as attributes; since opset 12 both are
    inputs, so they never fire on a current model. Dropout is the identity when `training_mode` is
    absent (inference, the default since opset 7) or a constant false, or when `ratio` is a constant
    0 (then the training formula x * mask / (1 - ratio) with an all-true mask is x as well). The
    matcher refuses the rewrite when the mask output is used or is a graph output.
    """

    def pattern(self, op, x):
        return op.Dropout(x, _allow_other_inputs=True)

    def check(self, context, x: ir.Value) -> MatchResult:
        inputs = context.root.inputs
        ratio = inputs[1] if len(inputs) > 1 else None
        training = inputs[2] if len(inputs) > 2 else None
        if training is None:
            return MatchResult()
        mode, rate = _constant(training), _constant(ratio)
        if (mode is not None and not mode.item()) or (rate is not None and rate.item() == 0):
            return MatchResult()
        return MatchResult().fail("Dropout may run in training mode with a nonzero ratio")

    def rewrite(self, op, x: ir.Value):
        return op.Identity(x)


class _SameShapeReshape(RewriteRuleClassBase):
    """Reshape to the input's own shape -> Identity (onnxscript only collapses Reshape pairs).

    Dimension i of the target matches when it equals the input's dim i, when it is 0 and allowzero
    is off (0 copies dim i), or when it is -1 (every other dim matching, the element count forces it
    to dim i). So a dynamic batch copied by 0 or inferred by -1 still matches; a shape that cannot be
    proved equal never does. (With a zero-size dim elsewhere, -1 is ambiguous and the runtime
    rejects the Reshape; removing it is then no loss.)
    """

    def pattern(self, op, x, shape):
        return op.Reshape(x, shape)

    def check(self, context, x: ir.Value, shape: ir.Value) -> MatchResult:
        target = _constant(shape)
        if target is None or x.shape is None:
            return MatchResult().fail("target shape not constant or input shape unknown")
        dims, wanted = list(x.shape), target.reshape(-1).tolist()
        if len(wanted) != len(dims):
            return MatchResult().fail("rank changes")
        copy_zero = not context.root.attributes.get_int("allowzero", 0)
        for i, (dim, want) in enumerate(zip(dims, wanted)):
            if want == dim or want == -1 or (want == 0 and copy_zero):
                continue
            return MatchResult().fail(f"dimension {i}: target {want}, input {dim}")
        return MatchResult()

    def rewrite(self, op, x: ir.Value, shape: ir.Value):
        return op.Identity(x)


def _normalized_axes(axes: np.ndarray, rank: int | None) -> tuple[int, ...] | None:
    """Axes sorted, negatives made positive against `rank`; None if that needs an unknown rank or
    the axes repeat (an invalid node, left for the runtime to reject)."""
    values = axes.reshape(-1).tolist()
    if rank is None and any(a < 0 for a in values):
        return None
    normalized = sorted(a + rank if a < 0 else a for a in values)
    return tuple(normalized) if len(set(normalized)) == len(normalized) else None


class _CancellingSqueezeUnsqueeze(RewriteRuleClassBase):
    """`outer(inner(x, axes), axes)` with {inner, outer} = {Squeeze, Unsqueeze} -> Identity.

    onnxscript has no such rule (only Unsqueeze-Unsqueeze merging). Unsqueeze's axes index its
    output and Squeeze's its input, so in Squeeze(Unsqueeze(x)) both index the tensor between the
    two nodes (rank(x) + len(axes)), and in Unsqueeze(Squeeze(x)) both index x; the pair cancels
    when the two normalized axis sets are equal. Squeeze fails on a dimension that is not 1, so the
    Unsqueeze(Squeeze) case never hides a shape change. Opset 13+ form only (axes as an input).
    """

    def __init__(self, inner: str, outer: str) -> None:
        super().__init__(f"{outer}Of{inner}")
        self._inner, self._outer = inner, outer

    def pattern(self, op, x, inner_axes, outer_axes):
        return getattr(op, self._outer)(getattr(op, self._inner)(x, inner_axes), outer_axes)

    def check(self, context, x: ir.Value, inner_axes: ir.Value, outer_axes: ir.Value) -> MatchResult:
        first, second = _constant(inner_axes), _constant(outer_axes)
        if first is None or second is None:
            return MatchResult().fail("axes not constant")
        rank = None if x.shape is None else len(x.shape) + (first.size if self._inner == "Unsqueeze" else 0)
        normalized = _normalized_axes(first, rank)
        if normalized is None or normalized != _normalized_axes(second, rank):
            return MatchResult().fail("axes differ or cannot be compared")
        return MatchResult()

    def rewrite(self, op, x: ir.Value, inner_axes: ir.Value, outer_axes: ir.Value):
        return op.Identity(x)


def _identity_like_rules() -> RewriteRuleSet:
    """onnxscript's no-op and chain rules plus edgec's own where none exists.

    onnxscript's squeeze_reshape_1d_rule is left out: it is built with remove_nodes=False, which makes
    RewriteRuleSet sweep the whole model for dead nodes on every call and report modified=False
    after deleting them.
    """
    return RewriteRuleSet(
        [
            _InferenceDropout.rule(),
            no_op_cast_rule,
            no_op_expand_rule,
            no_op_transpose_rule,
            transpose_transpose_rule,
            reshape_reshape_rule,
            _SameShapeReshape.rule(),
            unsqueeze_unsqueeze_rule,
            _CancellingSqueezeUnsqueeze.rule("Unsqueeze", "Squeeze"),
            _CancellingSqueezeUnsqueeze.rule("Squeeze", "Unsqueeze"),
        ]
    )


def _bypass_identity(node: ir.Node) -> bool:
    """Remove `y = Identity(x)` by making y's users (and graph outputs) read x; False if it must stay.

    When y is a graph output, x is renamed to y so the model's interface is unchanged. That is only
    possible when x is computed by a node of the same graph and is not itself a graph output:
    renaming a graph input, an initializer or an outer-scope value would change a name elsewhere,
    and renaming another output would make two outputs share one value and name.
    (onnx_ir's IdentityEliminationPass does the last rename anyway and loses an output, hence this.)
    """
    source, result, graph = node.inputs[0], node.outputs[0], node.graph
    if source is None or graph is None:
        return False
    rename = result.is_graph_output()
    producer = source.producer()
    if rename and (producer is None or producer.graph is not graph or source.is_graph_output()):
        return False
    if source.type is None:
        source.type = result.type
    if source.shape is None:
        source.shape = result.shape
    ir.convenience.replace_all_uses_with(result, source, replace_graph_outputs=True)
    graph.remove(node, safe=True)
    if rename:
        source.name = result.name
    return True


def _remove_identities(model: ir.Model) -> bool:
    """Bypass every removable Identity in the main graph, its subgraphs and the model's functions."""
    removed = False
    for root in (model.graph, *model.functions.values()):
        for node in ir.traversal.RecursiveGraphIterator(root):
            if node.op_type == "Identity" and node.domain == "" and len(node.inputs) == 1:
                removed = _bypass_identity(node) or removed
    return removed


class EliminateIdentityLikePass(InPlacePass):
    """Remove nodes that compute their input and collapse pairs that compose to one node or none.

    Identity; Dropout at inference; Cast to the input's own type; Reshape to its own shape; Transpose
    by the identity permutation; Transpose pairs (composed into one Transpose, or none when they are
    inverse); Reshape pairs (one Reshape); Unsqueeze pairs (one Unsqueeze); Squeeze/Unsqueeze pairs
    that cancel; Expand to its own shape. Rules rewrite each case into an Identity, then Identities
    are bypassed; sweeps repeat because a bypass can make a new pair adjacent (Transpose, no-op Cast,
    Transpose). Graph input and output names never change: an Identity from a graph input (or
    another output) to a graph output stays. The Cast, Reshape, Expand and negative-axis checks read
    value types and shapes, so run InferShapesPass first; initializers left unused (shape vectors)
    are RemoveUnusedPass's to drop.
    """

    def __init__(self) -> None:
        super().__init__()
        self._rules = RewritePass(_identity_like_rules())

    def call(self, model: ir.Model) -> PassResult:
        modified = False
        for _ in range(_MAX_SWEEPS):
            rewritten = self._rules(model).modified
            bypassed = _remove_identities(model)
            if not (rewritten or bypassed):
                break
            modified = True
        return PassResult(model, modified)


# --------------------------------------------------------------------------------------------
# deduplication and dead code
# --------------------------------------------------------------------------------------------


class DeduplicatePass(InPlacePass):
    """Merge initializers with equal dtype, shape and bytes, then nodes computing the same thing.

    Initializers go first: two nodes reading twin weights become common subexpressions only once
    they read the same value. The hashed variant covers weights of any size (it confirms a hash hit
    by comparing bytes); the plain one skips tensors above 1024 elements. Initializers that are graph
    inputs stay. Common-subexpression elimination works on the main graph, skips random ops and
    keeps output names (a merged graph output becomes an Identity of the surviving one).
    """

    def call(self, model: ir.Model) -> PassResult:
        _make_initializers_contiguous(model)
        initializers = DeduplicateHashedInitializersPass()(model).modified
        nodes = CommonSubexpressionEliminationPass()(model).modified
        return PassResult(model, initializers or nodes)


def _make_initializers_contiguous(model: ir.Model) -> None:
    """Copy strided initializer arrays (a folded Transpose leaves a view) into C order.

    onnx-ir's hashed deduplication feeds `numpy()` straight to hashlib, which rejects
    non-contiguous arrays; the values are unchanged.
    """
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if isinstance(tensor, ir.Tensor) and not tensor.numpy().flags.c_contiguous:
                value.const_value = ir.tensor(np.ascontiguousarray(tensor.numpy()), name=value.name)


class RemoveUnusedPass(InPlacePass):
    """Remove nodes, initializers and opset imports nothing reaches; inputs and outputs stay."""

    def call(self, model: ir.Model) -> PassResult:
        nodes = RemoveUnusedNodesPass()(model)
        opsets = RemoveUnusedOpsetsPass()(model)
        return PassResult(model, nodes.modified or opsets.modified)


class FreezeInitializersPass(RemoveInitializersFromInputsPass):
    """Treat initializers that are also graph inputs as constants, so they can be folded.

    Models from before IR version 4 list every initializer as a graph input, which makes each weight
    an overridable default: no runtime or pass may fold it. A deployed model's weights are fixed,
    so edgec drops them from the inputs (what ONNX Runtime's tooling recommends for such models).
    """

