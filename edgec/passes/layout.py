"""Layout passes: convert a graph's convolutional region to channels-last (NHWC).

TFLite and most edge DSPs want NHWC activations, while ONNX's Conv and pooling ops are NCHW-only.
Rather than a private IR, the converted graph stays plain, runnable ONNX:

* Every layout-sensitive rank-4 op (Conv, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, LRN,
  BatchNormalization) becomes a node of the custom domain ``edgec.nhwc`` with the same op type,
  attributes and non-data inputs (weights stay OIHW), whose data input and output are NHWC.
* Each such op type is backed by one model-local ONNX function
  ``Transpose(NHWC->NCHW) -> <op> -> Transpose(NCHW->NHWC)`` whose attributes are references to the
  call site's, so ONNX Runtime and ``onnx.reference`` inline it and the converted model can be
  verified numerically, while a lowering reads ``edgec.nhwc.*`` nodes as native NHWC ops. Optional
  inputs a call site leaves out are passed as empty inputs (``""``), because the reference evaluator
  rejects function calls with fewer inputs than the function declares.

Each converted op first gets ``Transpose(NCHW->NHWC)`` on its data input and ``Transpose(NHWC->NCHW)``
on its output; the NHWC->NCHW transposes are then sunk towards the graph outputs through
layout-agnostic ops and every transpose is folded where two meet
(``Transpose(Transpose(x, p), q) == Transpose(x, p∘q)``; identity perms vanish). What remains sits
at the edges of the converted region: one transpose per graph input that feeds it, and one wherever
an NHWC value flows into an op the sinking cannot pass.

A transpose is pushed through: elementwise ops (unary, and n-ary ones whose other operands are
same-perm transposes, values that already have an NCHW->NHWC transpose, e.g. a residual from a
graph input, or constants, which are permuted); Concat (axis remapped); Pad with constant pads or
axes; Reduce* with constant axes (keepdims either way); Softmax/LogSoftmax/Hardmax from opset 13.
It is absorbed by Flatten, and by Reshape with a constant shape, only when it merely moves size-1
axes (e.g. after a global pool). It stops at everything else: MatMul/Gemm, Split, Slice, Resize,
Gather, Squeeze/Unsqueeze, Transpose-free reshapes of real spatial data, ops with non-constant
side inputs, binary ops whose other operand is a plain NCHW activation (a transpose moved there
would cost the same), and control flow (subgraphs are not visited).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from edgec.passes.initializers import claim_name

__all__ = ["NHWC_DOMAIN", "TO_NCHW", "TO_NHWC", "ConvertToNHWCPass"]

logger = logging.getLogger(__name__)

#: Domain of the NHWC twins and of the model-local functions that define them.
NHWC_DOMAIN = "edgec.nhwc"
#: Transpose perms between the two layouts (``Transpose(x, perm).shape[i] == x.shape[perm[i]]``).
TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)

#: Ops whose semantics fix which axis is the channel; converted when their data input is rank 4.
_LAYOUT_SENSITIVE = frozenset(
    {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "LRN"}
)
#: Elementwise ops whose inputs all broadcast against each other (unary ones included; Clip's
#: min/max are scalars): a transpose commutes with them once every other operand is permuted too.
_ELEMENTWISE = frozenset(
    {
        "Abs", "Acos", "Acosh", "Add", "And", "Asin", "Asinh", "Atan", "Atanh", "BitwiseAnd",
        "BitwiseNot", "BitwiseOr", "BitwiseXor", "Cast", "Ceil", "Celu", "Clip", "Cos", "Cosh",
        "Div", "Elu", "Equal", "Erf", "Exp", "Floor", "Gelu", "Greater", "GreaterOrEqual",
        "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu", "Less", "LessOrEqual",
        "Log", "Max", "Mean", "Min", "Mish", "Mod", "Mul", "Neg", "Not", "Or", "Pow", "PRelu",
        "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Sinh", "Softplus",
        "Softsign", "Sqrt", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Where", "Xor",
    }
)  # fmt: skip
#: Ops whose every operand must come out of the same transpose (or be a constant) to push one through.
_MULTI_OPERAND = _ELEMENTWISE | {"Concat"}
_REDUCE = frozenset(
    {
        "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
        "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
    }
)  # fmt: skip
#: Single-axis ops; before opset 13 they coerced the input to 2-D, which no transpose commutes with.
_SOFTMAX = frozenset({"Softmax", "LogSoftmax", "Hardmax"})
_SOFTMAX_MIN_OPSET = 13


def _is_onnx_op(node: ir.Node, op_types: frozenset[str] | str) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    return node.op_type == op_types if isinstance(op_types, str) else node.op_type in op_types


def _inverse(perm: Sequence[int]) -> tuple[int, ...]:
    inverse = [0] * len(perm)
    for i, axis in enumerate(perm):
        inverse[axis] = i
    return tuple(inverse)


def _permute_shape(shape: ir.Shape | None, perm: Sequence[int]) -> ir.Shape | None:
    """The shape of ``Transpose(x, perm)`` given ``x``'s: ``out[i] = shape[perm[i]]``."""
    if shape is None or shape.rank() != len(perm):
        return None
    return ir.Shape([shape[axis] for axis in perm])


def _perm(node: ir.Node) -> tuple[int, ...] | None:
    """A Transpose's perm; absent means reversed axes, which needs the input's rank."""
    attr = node.attributes.get("perm")
    if attr is not None:
        return tuple(attr.as_ints())
    shape = node.inputs[0].shape
    return None if shape is None else tuple(reversed(range(shape.rank())))


def _is_unit(dim: int | ir.SymbolicDim) -> bool:
    return isinstance(dim, int) and dim == 1


def _is_pure_reshape(shape: ir.Shape | None, perm: Sequence[int]) -> bool:
    """True when ``Transpose(x, perm)`` only moves size-1 axes, so it keeps the flat element order.

    E.g. NHWC ``[N, 1, 1, C]`` -> NCHW ``[N, C, 1, 1]`` after a global pool. Symbolic dims count as
    non-unit (conservative).
    """
    if shape is None or shape.rank() != len(perm):
        return False
    moved = [axis for axis in perm if not _is_unit(shape[axis])]
    return moved == sorted(moved)


def _convertible(node: ir.Node) -> bool:
    """A default-domain layout-sensitive op on a rank-4 input whose extra outputs are unused.

    MaxPool's Indices and training-mode BatchNormalization's statistics are NCHW-specific, so a
    node whose extra outputs are read stays as it is. The rank comes from the input's shape, so run
    shape inference first.
    """
    if not _is_onnx_op(node, _LAYOUT_SENSITIVE) or not node.inputs or node.inputs[0] is None:
        return False
    shape = node.inputs[0].shape
    if shape is None or shape.rank() != 4:
        return False
    return not any(out.uses() or out.is_graph_output() for out in node.outputs[1:])


def _function_for(op_type: str, opset: int) -> ir.Function:
    """``edgec.nhwc.<op_type>``: Transpose(NHWC->NCHW) -> op -> Transpose(NCHW->NHWC).

    Every attribute of the op's schema is declared and forwarded by reference; a reference the call
    site does not set is dropped on inlining, so the op's own default applies.
    """
    schema = onnx.defs.get_schema(op_type, opset, "")
    inputs = [ir.Value(name=formal.name) for formal in schema.inputs]
    to_nchw = ir.Node("", "Transpose", [inputs[0]], [ir.AttrInt64s("perm", TO_NCHW)], name="to_nchw")
    attr_types = {name: ir.AttributeType(int(attr.type.value)) for name, attr in schema.attributes.items()}
    op = ir.Node(
        "",
        op_type,
        [to_nchw.outputs[0], *inputs[1:]],
        [ir.RefAttr(name, name, attr_type) for name, attr_type in attr_types.items()],
        name=op_type,
    )
    to_nhwc = ir.Node("", "Transpose", [op.outputs[0]], [ir.AttrInt64s("perm", TO_NHWC)], name="to_nhwc")
    to_nchw.outputs[0].name, op.outputs[0].name, to_nhwc.outputs[0].name = "X_nchw", "Y_nchw", "Y"
    graph = ir.Graph(inputs, to_nhwc.outputs, nodes=[to_nchw, op, to_nhwc], opset_imports={"": opset}, name=op_type)
    return ir.Function(
        NHWC_DOMAIN,
        op_type,
        graph=graph,
        attributes=[ir.Attr(name, attr_type, None) for name, attr_type in attr_types.items()],
    )


class _LayoutRewriter:
    """The edits of one pass run: conversion, optional NHWC I/O, then transpose sinking.

    Holds the graph, its default opset and the value names in use, so every value it creates gets a
    readable, unique name (``<original>_nhwc``).
    """

    def __init__(self, model: ir.Model, opset: int) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = opset
        self._names = {value.name for value in self.graph.inputs}
        self._names.update(self.graph.initializers)
        self._names.update(out.name for node in self.graph.all_nodes() for out in node.outputs)

    # ------------------------------------------------------------------ helpers

    def _fresh(self, base: str) -> str:
        return claim_name(self._names, base)

    def _transpose(self, value: ir.Value, perm: Sequence[int]) -> ir.Node:
        """A new, not yet inserted ``Transpose(value, perm)`` with its output's type and shape set."""
        node = ir.Node("", "Transpose", [value], [ir.AttrInt64s("perm", perm)])
        node.outputs[0].type, node.outputs[0].shape = value.type, _permute_shape(value.shape, perm)
        return node

    def _transpose_output(self, node: ir.Node, perm: Sequence[int]) -> None:
        """Re-express ``node``'s output v as ``Transpose(v', perm)`` once ``node`` computes v'.

        The new transpose takes over v's name, uses and graph-output slots; v becomes v' (renamed
        ``*_nhwc``, shape ``v'.shape[perm[i]] = v.shape[i]``).
        """
        value = node.outputs[0]
        uses = list(value.uses())
        transpose = self._transpose(value, perm)
        out = transpose.outputs[0]
        out.name, out.shape = value.name, value.shape
        value.name = self._fresh(f"{out.name}_nhwc")
        value.shape = _permute_shape(value.shape, _inverse(perm))
        for user, index in uses:
            user.replace_input_with(index, out)
        outputs = self.graph.outputs
        for i, graph_output in enumerate(outputs):
            if graph_output is value:
                outputs[i] = out
        self.graph.insert_after(node, transpose)

    def _remove_if_dead(self, node: ir.Node) -> bool:
        if node.graph is None or any(out.uses() or out.is_graph_output() for out in node.outputs):
            return False
        self.graph.remove(node, safe=True)
        return True

    def _drop_if_unused(self, value: ir.Value) -> None:
        """Forget a constant a rewrite stopped reading (an initializer or a Constant node's output)."""
        if value.uses() or value.is_graph_output() or value.is_graph_input():
            return
        if value.is_initializer():
            del self.graph.initializers[value.name]
        elif (producer := value.producer()) is not None and _is_onnx_op(producer, "Constant"):
            self._remove_if_dead(producer)

    def _replace_input(self, node: ir.Node, index: int, new: ir.Value | np.ndarray, name: str) -> None:
        """Point ``node.inputs[index]`` at ``new`` (an array becomes an initializer called ``name``)."""
        old = node.inputs[index]
        if isinstance(new, np.ndarray):
            new = ir.Value(
                name=self._fresh(name),
                shape=ir.Shape(new.shape),
                type=ir.TensorType(ir.DataType.from_numpy(new.dtype)),
                const_value=ir.tensor(np.ascontiguousarray(new)),
            )
            self.graph.register_initializer(new)
        node.replace_input_with(index, new)
        if old is not None and old is not new:
            self._drop_if_unused(old)

    @staticmethod
    def _const_array(value: ir.Value | None) -> np.ndarray | None:
        """The value's constant, unless it is absent or a graph input (overridable at run time)."""
        if value is None or value.is_graph_input():
            return None
        tensor = ir.convenience.get_const_tensor(value)
        return None if tensor is None else tensor.numpy()

    # ------------------------------------------------------------------ conversion

    def convert(self, nodes: Sequence[ir.Node]) -> None:
        """Turn each node into its NHWC twin between a to-NHWC and a to-NCHW transpose.

        One to-NHWC transpose is made per source value, so a value read by several converted ops
        (a graph input, say) gets a single edge transpose.
        """
        self.model.opset_imports[NHWC_DOMAIN] = 1
        to_nhwc: dict[ir.Value, ir.Value] = {}
        for node in nodes:
            key = (NHWC_DOMAIN, node.op_type, "")
            if key not in self.model.functions:
                self.model.functions[key] = _function_for(node.op_type, self.opset)
            source = node.inputs[0]
            if source not in to_nhwc:
                transpose = self._transpose(source, TO_NHWC)
                transpose.outputs[0].name = self._fresh(f"{source.name}_nhwc")
                self.graph.insert_before(node, transpose)
                to_nhwc[source] = transpose.outputs[0]
            node.resize_outputs(1)
            node.resize_inputs(len(self.model.functions[key].inputs))
            node.replace_input_with(0, to_nhwc[source])
            node.domain = NHWC_DOMAIN
            self._transpose_output(node, TO_NCHW)

    def use_nhwc_io(self) -> None:
        """Make rank-4 graph inputs and outputs NHWC, keeping their names and permuting their shapes.

        Each input gets ``Transpose(NHWC->NCHW)`` in front of its readers and each output becomes
        ``Transpose(output, NCHW->NHWC)``; sinking then cancels them against the region's own.
        """
        first = self.graph.node(0)
        for value in self.graph.inputs:
            if value.shape is None or value.shape.rank() != 4 or value.is_initializer():
                continue
            uses = list(value.uses())
            value.shape = _permute_shape(value.shape, TO_NHWC)
            transpose = self._transpose(value, TO_NCHW)
            transpose.outputs[0].name = self._fresh(f"{value.name}_nchw")
            for user, index in uses:
                user.replace_input_with(index, transpose.outputs[0])
            self.graph.insert_before(first, transpose)
        outputs = self.graph.outputs
        for i, value in enumerate(outputs):
            if value.shape is None or value.shape.rank() != 4 or value.is_graph_input():
                continue
            transpose = self._transpose(value, TO_NHWC)
            transpose.outputs[0].name = value.name
            value.name = self._fresh(f"{value.name}_nchw")
            self.graph.append(transpose)
            outputs[i] = transpose.outputs[0]

    # ------------------------------------------------------------------ sinking

    def sink_transposes(self) -> None:
        """Fold every Transpose and push the NHWC->NCHW ones down until none moves.

        Only NHWC->NCHW transposes are pushed (the NCHW->NHWC ones sit in front of NHWC ops and
        are only reused or folded), so the fixpoint terminates: each push moves a transpose strictly
        past one node of a DAG and never creates the inverse kind that could move it back, and
        each fold removes one. The node list is iterated live: a transpose inserted after the
        current node is visited in the same sweep, so a chain sinks in one sweep.
        """
        changed = True
        while changed:
            changed = False
            for node in self.graph:
                if node.graph is None or not _is_onnx_op(node, "Transpose"):
                    continue
                if self._remove_if_dead(node) or self._fold(node):
                    changed = True
                    continue
                if _perm(node) != TO_NCHW:
                    continue
                for user in dict.fromkeys(use.node for use in node.outputs[0].uses()):
                    if self._push(node, user):
                        changed = True
                        self._remove_if_dead(node)
                        break

    def _fold(self, node: ir.Node) -> bool:
        """Compose with a producing Transpose; drop an identity perm.

        ``Transpose(Transpose(x, p), q) = Transpose(x, r)`` with ``r[i] = p[q[i]]``. An identity
        transpose whose output is a graph output that its input cannot take over (a graph input,
        an initializer, another output) becomes an Identity, keeping the output's name.
        """
        perm = _perm(node)
        if perm is None:
            return False
        producer = node.inputs[0].producer()
        composed = producer is not None and _is_onnx_op(producer, "Transpose") and _perm(producer) is not None
        if composed:
            inner = _perm(producer)
            perm = tuple(inner[axis] for axis in perm)
            node.replace_input_with(0, producer.inputs[0])
            node.attributes["perm"] = ir.AttrInt64s("perm", perm)
            self._remove_if_dead(producer)
        if perm != tuple(range(len(perm))):
            return composed
        source, out = node.inputs[0], node.outputs[0]
        if out.is_graph_output():
            if source.is_graph_input() or source.is_graph_output() or source.is_initializer():
                node.op_type = "Identity"
                del node.attributes["perm"]
                return True
            source.name = out.name
        out.replace_all_uses_with(source, replace_graph_outputs=True)
        self.graph.remove(node, safe=True)
        return True

    def _push(self, transpose: ir.Node, node: ir.Node) -> bool:
        """Rewrite ``node(Transpose(x, p), ...)`` as ``Transpose(node'(x, ...), q)``; False leaves
        ``node`` untouched.

        Multi-operand ops go through `_push_operands`; the others must read the transpose as their
        data input only, and each handler returns the output perm q (empty: no output transpose,
        as when a Flatten/Reshape absorbs it) or None when it cannot rewrite, having changed nothing.
        """
        perm = _perm(transpose)
        if perm is None or len(node.outputs) != 1:
            return False
        if _is_onnx_op(node, _MULTI_OPERAND):
            return self._push_operands(node, perm)
        value = transpose.outputs[0]
        if node.inputs[0] is not value or any(other is value for other in node.inputs[1:]):
            return False
        if _is_onnx_op(node, _SOFTMAX) and self.opset >= _SOFTMAX_MIN_OPSET:
            axis = node.attributes.get_int("axis", -1) % len(perm)
            node.attributes["axis"] = ir.AttrInt64("axis", perm[axis])
            out_perm: Sequence[int] | None = perm
        elif _is_onnx_op(node, _REDUCE):
            out_perm = self._remap_reduce(node, perm)
        elif _is_onnx_op(node, "Pad"):
            out_perm = self._remap_pad(node, perm)
        elif _is_onnx_op(node, "Flatten"):
            out_perm = self._absorb_into_flatten(node, perm, transpose.inputs[0].shape)
        elif _is_onnx_op(node, "Reshape"):
            out_perm = self._absorb_into_reshape(node, perm, transpose.inputs[0].shape)
        else:
            return False
        if out_perm is None:
            return False
        node.replace_input_with(0, transpose.inputs[0])
        if out_perm:
            self._transpose_output(node, out_perm)
        return True

    def _source_operand(self, value: ir.Value, perm: Sequence[int]) -> ir.Value | np.ndarray | None:
        """``value`` as seen before ``Transpose(., perm)``, without adding a transpose.

        A same-perm Transpose's input; the output of an existing ``Transpose(value, inverse(perm))``
        (a residual branch from a graph input or from a value that also feeds an NHWC op already
        has one); a constant c as ``transpose(unsqueeze_front(c, rank), inverse(perm))``, which
        broadcasts identically (a size-1 constant has no layout and stays). None for anything else:
        a plain activation (inserting a transpose on it would only move the cost), a constant of
        higher rank.
        """
        producer = value.producer()
        if producer is not None and _is_onnx_op(producer, "Transpose") and _perm(producer) == tuple(perm):
            return producer.inputs[0]
        inverse = _inverse(perm)
        for use in value.uses():
            if _is_onnx_op(use.node, "Transpose") and _perm(use.node) == inverse:
                return use.node.outputs[0]
        array = self._const_array(value)
        if array is None or array.ndim > len(perm):
            return None
        if array.size == 1:
            return value
        return array.reshape((1,) * (len(perm) - array.ndim) + array.shape).transpose(_inverse(perm))

    def _push_operands(self, node: ir.Node, perm: Sequence[int]) -> bool:
        """Elementwise ops and Concat: every operand must be a same-perm transpose or a constant;
        Concat's axis a becomes ``perm[a]``."""
        operands = [None if value is None else self._source_operand(value, perm) for value in node.inputs]
        if any(new is None and old is not None for new, old in zip(operands, node.inputs, strict=True)):
            return False
        if _is_onnx_op(node, "Concat"):
            axis = node.attributes.get_int("axis") % len(perm)
            node.attributes["axis"] = ir.AttrInt64("axis", perm[axis])
        for index, (operand, old) in enumerate(zip(operands, list(node.inputs), strict=True)):
            if operand is not None:
                self._replace_input(node, index, operand, f"{old.name}_nhwc")
        self._transpose_output(node, perm)
        return True

    def _remap_reduce(self, node: ir.Node, perm: Sequence[int]) -> Sequence[int] | None:
        """Reduce over y-axes A becomes a reduce over x-axes ``{perm[a]}``.

        keepdims=1 keeps ``perm`` on the output. keepdims=0 leaves the kept y-axes K (in order) as
        the x-axes ``s = sorted(perm[k] for k in K)``, so the output perm is
        ``q[j] = s.index(perm[K[j]])``: often the identity, which then folds away (a mean over H, W
        of NHWC is ``[N, C]`` already). No axes means all axes (output transpose: none for
        keepdims=0), unless noop_with_empty_axes=1 makes the op an identity.
        """
        rank = len(perm)
        axes_input = node.inputs[1] if len(node.inputs) > 1 else None
        if axes_input is not None:
            array = self._const_array(axes_input)
            if array is None:
                return None
            axes = [int(axis) for axis in array.reshape(-1)]
        else:
            axes = list(attr.as_ints()) if (attr := node.attributes.get("axes")) is not None else []
        if axes:
            reduced = {axis % rank for axis in axes}
        else:
            reduced = set() if node.attributes.get_int("noop_with_empty_axes", 0) else set(range(rank))
        if node.attributes.get_int("keepdims", 1) or not reduced:
            out_perm: Sequence[int] = perm
        else:
            kept = [axis for axis in range(rank) if axis not in reduced]
            kept_source = sorted(perm[axis] for axis in kept)
            out_perm = [kept_source.index(perm[axis]) for axis in kept]
        if axes:
            new_axes = sorted(perm[axis] for axis in reduced)
            if axes_input is not None:
                self._replace_input(node, 1, np.array(new_axes, np.int64), f"{axes_input.name}_nhwc")
            else:
                node.attributes["axes"] = ir.AttrInt64s("axes", new_axes)
        return out_perm

    def _remap_pad(self, node: ir.Node, perm: Sequence[int]) -> Sequence[int] | None:
        """Pad (opset >= 11, pads as an input): with an ``axes`` input, remap it (a -> perm[a]);
        otherwise move y-axis a's begin/end pads to x-axis ``perm[a]``."""
        rank = len(perm)
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            index, array = 3, self._const_array(node.inputs[3])
            if array is None:
                return None
            new = np.array([perm[int(axis) % rank] for axis in array.reshape(-1)], np.int64)
        else:
            index = 1
            array = self._const_array(node.inputs[1]) if len(node.inputs) > 1 else None  # opset < 11: attribute
            if array is None or array.size != 2 * rank:
                return None
            pads = array.reshape(2, rank)
            new = np.empty_like(pads)
            new[:, list(perm)] = pads
            new = new.reshape(-1)
        self._replace_input(node, index, new, f"{node.inputs[index].name}_nhwc")
        return perm

    @staticmethod
    def _absorb_into_flatten(
        node: ir.Node, perm: Sequence[int], shape: ir.Shape | None
    ) -> Sequence[int] | None:
        """``Flatten(Transpose(x, p), k) == Flatten(x, k')`` when the transpose only moves size-1
        axes: both are ``[prod(head), prod(tail)]`` over the same element order, so pick the
        smallest k' whose head holds as many non-unit dims of x as y's first k axes do."""
        if not _is_pure_reshape(shape, perm):
            return None
        rank = len(perm)
        axis = node.attributes.get_int("axis", 1)
        axis = axis + rank if axis < 0 else axis
        head = sum(not _is_unit(shape[perm[i]]) for i in range(axis))
        new_axis = next(k for k in range(rank + 1) if sum(not _is_unit(shape[i]) for i in range(k)) == head)
        node.attributes["axis"] = ir.AttrInt64("axis", new_axis)
        return ()

    def _absorb_into_reshape(
        self, node: ir.Node, perm: Sequence[int], shape: ir.Shape | None
    ) -> Sequence[int] | None:
        """``Reshape(Transpose(x, p), s) == Reshape(x, s)`` when the transpose only moves size-1 axes
        and s is a constant with no 0 ("copy this input dim", which would read x's dims instead)."""
        target = self._const_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if target is None or not _is_pure_reshape(shape, perm):
            return None
        if not node.attributes.get_int("allowzero", 0) and (target == 0).any():
            return None
        return ()


class ConvertToNHWCPass(InPlacePass):
    """Convert the graph's layout-sensitive rank-4 ops to ``edgec.nhwc`` NHWC twins, keeping
    transposes only at the edges of the converted region.

    Args:
        nhwc_io: also make rank-4 graph inputs and outputs NHWC. Their names stay, their shapes
            become ``[N, H, W, C]`` (callers must feed and read channels-last data), and the edge
            transposes cancel away. Off by default: the model's interface is unchanged. Applied only
            when something was converted, so a graph without layout-sensitive ops is never touched.

    The pass needs shapes (run ``infer_shapes`` first): ops whose input rank is unknown stay NCHW.
    Running it twice is a no-op, since ``edgec.nhwc`` nodes are not converted again.
    """

    def __init__(self, nhwc_io: bool = False) -> None:
        super().__init__()
        self.nhwc_io = nhwc_io

    def call(self, model: ir.Model) -> PassResult:
        nodes = [node for node in model.graph if _convertible(node)]
        if not nodes:
            return PassResult(model, False)
        opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
        rewriter = _LayoutRewriter(model, opset)
        rewriter.convert(nodes)
        if self.nhwc_io:
            rewriter.use_nhwc_io()
        rewriter.sink_transposes()
        model.graph.sort()
        remaining = sum(1 for node in model.graph if _is_onnx_op(node, "Transpose"))
        logger.debug("converted %d ops to NHWC; %d transposes remain", len(nodes), remaining)
        return PassResult(model, True)
