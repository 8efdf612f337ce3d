"""Folding passes: merge a cheap op into the constants of the op next to it.

Each pass is a set of onnxscript rewrite rules written as pattern + check + rewrite; a check that
fails says why (visible with onnxscript's `MatchingTracer`). The rewriter's matcher already refuses a
match whose intermediate value (the Conv/Gemm/MatMul/Pad output) has another consumer or is a graph
output, so every fold here requires that value to have the folded node as its single consumer.

edgec writes its own rules rather than reusing onnxscript's `rules.common` ones, which are wrong on
inputs edge models contain: the BatchNormalization rules fold `training_mode=1` (batch statistics),
`fuse_pad_into_conv_rule` raises IndexError on a Pad-2..10 (pads as an attribute) and needs
inferred shapes, and `matmul_add_to_gemm_rule` accepts a bias that broadcasts the output to a larger
shape (a [1, 1, N] bias gives a rank-3 Add but a rank-2 Gemm).

The folds leave the replaced weights, BatchNormalization parameters and Constant nodes unused: run
`remove_unused` after them.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter import (
    MatchContext,
    MatchResult,
    RewritePass,
    RewriteRuleClassBase,
    RewriterContext,
    RewriteRuleSet,
)
from onnxscript.rewriter.pattern import OpsetPatternBuilder, Var

from edgec.passes.initializers import constant_array

__all__ = ["FoldBatchNormPass", "FoldAffinePass", "MatMulAddToGemmPass", "FoldPadPass"]

#: Weight types the folds rewrite: the arithmetic runs in float64 and is rounded once to this type.
_FLOAT_TYPES = frozenset({ir.DataType.FLOAT16, ir.DataType.FLOAT, ir.DataType.DOUBLE})

#: First default-domain opset with BatchNormalization without `is_test` (opset 6 and below train by
#: default) and with a Gemm that broadcasts its bias without a `broadcast` attribute.
_MIN_OPSET = 7

_DEFAULT_EPSILON = 1e-5  # BatchNormalization's `epsilon` default


def _onnx_opset(context: MatchContext) -> int:
    return context.model.graph.opset_imports.get("", 1)


# --------------------------------------------------------------------------------------------
# the linear producers: Conv, ConvTranspose, Gemm, MatMul read as y = W ⊛ x + b
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Linear:
    """A node read as ``y = W ⊛ x + b`` with `channels` output channels on axis 1 of a rank-`rank` y.

    ⊛ (convolution, transposed convolution, matrix product) is linear in W and each output channel
    uses only its own slice of W, so a per-channel ``a*y + c`` equals ``(a·W) ⊛ x + (a*b + c)``:
    W is scaled along its output-channel axis and the bias absorbs the shift.

    Attributes:
        node: the producer.
        weight: W, the producer's input 1.
        bias: b: Conv/ConvTranspose's [C] bias, Gemm's C times `beta` (any shape Gemm broadcasts to
            [M, N]); None when absent (always for MatMul).
        channels: C (Conv: M = W.shape[0]; ConvTranspose: group * W.shape[1]; Gemm/MatMul: N).
        rank: rank of y (Conv/ConvTranspose: W's rank; Gemm/MatMul: 2).
    """

    node: ir.Node
    weight: np.ndarray
    bias: np.ndarray | None
    channels: int
    rank: int

    def scaled_weight(self, a: np.ndarray) -> np.ndarray:
        """W' = W * a[c] along the output-channel axis, in float64.

        Conv W is [C, C_in/g, k...] (axis 0). ConvTranspose W is [C_in, C/g, k...]: output channel
        ``j + (C/g)*i`` of group i is column j of W's rows ``i*C_in/g ... (i+1)*C_in/g - 1``. Gemm's
        B is [K, N] (axis 1) or, with transB=1, [N, K] (axis 0); MatMul's W is [K, N] (axis 1).
        """
        weight = self.weight.astype(np.float64)
        op_type = self.node.op_type
        if op_type == "ConvTranspose":
            group = self.node.attributes.get_int("group", 1)
            per_row = np.repeat(a.reshape(group, -1), weight.shape[0] // group, axis=0)
            return weight * per_row.reshape(*per_row.shape, *[1] * (weight.ndim - 2))
        axis = 0 if op_type == "Conv" or self.node.attributes.get_int("transB", 0) else 1
        shape = [1] * weight.ndim
        shape[axis] = -1
        return weight * a.reshape(shape)

    def shifted_bias(self, a: np.ndarray, c: np.ndarray) -> np.ndarray:
        """b' = a*b + c in float64; b' = c without a bias (the folded node always has one)."""
        return c if self.bias is None else self.bias.astype(np.float64) * a + c

    def emit(self, op: RewriterContext, x: ir.Value, a: np.ndarray, c: np.ndarray, name: str) -> ir.Value:
        """The folded node: the same op (MatMul becomes Gemm, which has a bias) with W', b'.

        New initializers are named `<name>_weight` / `<name>_bias` (the check made sure they are
        free): the originals may feed other nodes and stay until `remove_unused`.
        """
        dtype = self.weight.dtype
        weight = op.initializer(ir.tensor(self.scaled_weight(a).astype(dtype)), name=f"{name}_weight")
        bias = op.initializer(ir.tensor(self.shifted_bias(a, c).astype(dtype)), name=f"{name}_bias")
        # Gemm's beta is now inside the bias.
        attributes = {key: attr for key, attr in self.node.attributes.items() if key != "beta"}
        op_type = "Gemm" if self.node.op_type == "MatMul" else self.node.op_type
        return op.op(op_type, x, weight, bias, _name=self.node.name, **attributes)


def _read_linear(node: ir.Node) -> _Linear | str:
    """Read `node` as a `_Linear`, or say why it cannot be folded into."""
    op_type = node.op_type
    weight = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight is None:
        return f"{op_type} {node.name!r}: the weight is not a constant"
    if node.inputs[1].const_value.dtype not in _FLOAT_TYPES:
        return f"{op_type} {node.name!r}: weights of type {node.inputs[1].const_value.dtype} are not folded"
    bias_value = node.inputs[2] if len(node.inputs) > 2 else None
    bias = constant_array(bias_value)
    if bias_value is not None and bias is None:
        return f"{op_type} {node.name!r}: the bias is not a constant"
    if op_type == "Conv":
        return _Linear(node, weight, bias, weight.shape[0], weight.ndim)
    if op_type == "ConvTranspose":
        group = node.attributes.get_int("group", 1)
        if weight.shape[0] % group:
            return f"ConvTranspose {node.name!r}: {weight.shape[0]} input channels do not split into {group} groups"
        return _Linear(node, weight, bias, group * weight.shape[1], weight.ndim)
    if op_type == "Gemm":
        channels = weight.shape[0] if node.attributes.get_int("transB", 0) else weight.shape[1]
        beta = node.attributes.get_float("beta", 1.0)
        return _Linear(node, weight, None if bias is None else bias * beta, channels, 2)
    # MatMul: only [M, K] @ [K, N] puts W's columns on the output's axis 1 (a rank-3 input puts
    # them on axis 2) and is a Gemm.
    shape = node.inputs[0].shape
    if weight.ndim != 2 or shape is None or len(shape) != 2:
        return (f"MatMul {node.name!r}: input rank {None if shape is None else len(shape)} and weight rank "
                f"{weight.ndim}; only a rank-2 input times a rank-2 weight is folded")
    return _Linear(node, weight, None, weight.shape[1], 2)


class _FoldIntoLinear(RewriteRuleClassBase, abc.ABC):
    """consumer(producer(x, W, b)) -> producer'(x, W', b') for a consumer that is y -> a*y + c.

    Subclasses give the pattern (binding the producer's output `y`, the consumer's output `out`) and
    `affine`, the consumer's per-channel a and c.
    """

    def __init__(self, producer: str, name: str) -> None:
        super().__init__(name)
        self.producer = producer

    @abc.abstractmethod
    def affine(self, linear: _Linear, out: ir.Value, **bindings: ir.Value) -> tuple[np.ndarray, np.ndarray] | str:
        """The consumer as float64 [channels] vectors (a, c), or why it is not per-channel affine."""

    def check(
        self, context: MatchContext, x: ir.Value, y: ir.Value, out: ir.Value, **bindings: ir.Value
    ) -> MatchResult:
        result = MatchResult()
        linear = _read_linear(y.producer())
        if isinstance(linear, str):
            return result.fail(linear, y.producer())
        affine = self.affine(linear, out, **bindings)
        if isinstance(affine, str):
            return result.fail(affine, out.producer())
        if not all(np.isfinite(v).all() for v in affine):
            return result.fail("the folded scale or shift is not finite (a zero divisor, an inf or a nan)",
                               out.producer())
        taken = [n for n in (f"{out.name}_weight", f"{out.name}_bias") if n in context.graph_or_function.initializers]
        if taken:
            return result.fail(f"initializer name(s) {taken} already in use")
        return result

    def rewrite(self, op: RewriterContext, x: ir.Value, y: ir.Value, out: ir.Value, **bindings: ir.Value) -> ir.Value:
        linear = _read_linear(y.producer())
        a, c = self.affine(linear, out, **bindings)  # check() accepted both
        return linear.emit(op, x, a, c, out.name)


# --------------------------------------------------------------------------------------------
# BatchNormalization
# --------------------------------------------------------------------------------------------


class _FoldBatchNorm(_FoldIntoLinear):
    """BatchNormalization(P(x)) -> P'(x), P in Conv, ConvTranspose, Gemm, MatMul (MatMul -> Gemm).

    Inference-mode BN is ``gamma * (y - mean) / sqrt(var + eps) + beta`` per channel (axis 1), i.e.
    ``a*y + c`` with ``a = gamma / sqrt(var + eps)`` and ``c = beta - mean * a``; so
    ``W' = W*a`` along the output-channel axis and ``b' = a*b + c`` (Gemm: b = beta_gemm * C).

    Not folded: training mode (`training_mode=1` normalizes with the batch's own statistics), opsets
    below 7 (`is_test` defaults to training), non-constant gamma/beta/mean/var, parameters not of
    shape [C] (BN-7/8 `spatial=0` per-activation statistics), a MatMul whose input is not known to be
    rank 2.
    """

    def pattern(self, op: OpsetPatternBuilder, x: Var) -> object:
        y = getattr(op, self.producer)(x, _allow_other_inputs=True, _outputs=["y"])
        return op.BatchNormalization(y, _allow_other_inputs=True, _outputs=["out"])

    def check(
        self, context: MatchContext, x: ir.Value, y: ir.Value, out: ir.Value, **bindings: ir.Value
    ) -> MatchResult:
        batchnorm = out.producer()
        if (opset := _onnx_opset(context)) < _MIN_OPSET:
            return MatchResult().fail(f"opset {opset} < {_MIN_OPSET}: BatchNormalization may be in training mode "
                                      "(is_test)", batchnorm)
        if batchnorm.attributes.get_int("training_mode", 0):
            return MatchResult().fail("training_mode=1 normalizes with the batch's statistics, not the stored "
                                      "ones", batchnorm)
        return super().check(context, x, y, out, **bindings)

    def affine(self, linear: _Linear, out: ir.Value, **bindings: ir.Value) -> tuple[np.ndarray, np.ndarray] | str:
        batchnorm = out.producer()
        params = [constant_array(value) for value in batchnorm.inputs[1:5]]
        if any(p is None for p in params):
            return "BatchNormalization scale, bias, mean and var must all be constants"
        if any(p.shape != (linear.channels,) for p in params):
            return f"BatchNormalization parameters must have shape [{linear.channels}]"
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        a = gamma / np.sqrt(var + batchnorm.attributes.get_float("epsilon", _DEFAULT_EPSILON))
        return a, beta - mean * a


class FoldBatchNormPass(RewritePass):
    """Fold inference-mode BatchNormalization into the Conv/ConvTranspose/Gemm/MatMul before it.

    MatMul [M, K] @ W[K, N] (constant W, input known to be rank 2) becomes Gemm(x, W', b').
    """

    def __init__(self) -> None:
        super().__init__(RewriteRuleSet([
            _FoldBatchNorm.rule(producer, f"FoldBatchNormInto{producer}")
            for producer in ("Conv", "ConvTranspose", "Gemm", "MatMul")
        ]))


# --------------------------------------------------------------------------------------------
# Mul / Div / Add / Sub by a per-channel constant
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ElementwiseAffine:
    """An elementwise op with a constant operand k, as ``y -> a*y + c``.

    `linear_first`: y is the op's first input (Mul/Add also match with k first: the rule set
    commutes them).
    """

    op_type: str
    linear_first: bool
    to_affine: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


_ELEMENTWISE_AFFINE = (
    _ElementwiseAffine("Mul", True, lambda k: (k, np.zeros_like(k))),  # y*k
    _ElementwiseAffine("Div", True, lambda k: (1.0 / k, np.zeros_like(k))),  # y/k = y*(1/k)
    _ElementwiseAffine("Add", True, lambda k: (np.ones_like(k), k)),  # y+k
    _ElementwiseAffine("Sub", True, lambda k: (np.ones_like(k), -k)),  # y-k = y+(-k)
    _ElementwiseAffine("Sub", False, lambda k: (-np.ones_like(k), k)),  # k-y = (-1)*y+k
)


def _per_channel(k: np.ndarray, linear: _Linear) -> np.ndarray | None:
    """k as a float64 [C] vector if broadcasting it against y only varies along y's axis 1, else None.

    Right-aligned against y's rank r, k's shape must be [1, C or 1, 1, ...]: scalar, [1], [C, 1, 1]
    and [1, C, 1, 1] for a 2-D Conv, [N] and [1, N] for Gemm. A rank above r would broadcast y to a
    bigger shape; any other non-1 axis (spatial, batch, Gemm's M) is not a weight/bias change.
    """
    if k.ndim > linear.rank:
        return None
    shape = (1,) * (linear.rank - k.ndim) + k.shape
    if any(dim != 1 for axis, dim in enumerate(shape) if axis != 1) or shape[1] not in (1, linear.channels):
        return None
    return np.broadcast_to(k.reshape(-1).astype(np.float64), (linear.channels,))


class _FoldElementwise(_FoldIntoLinear):
    """op(P(x), k) -> P'(x) for op in Mul/Div/Add/Sub, k a per-channel or scalar constant.

    With ``a, c`` from `_ElementwiseAffine` and k reduced to [C] by `_per_channel`:
    ``W' = W*a`` along the output-channel axis and ``b' = a*b + c`` (a producer without a bias gains
    ``b' = c``, zeros after a Mul). Division by k folds as multiplication by 1/k (rounding may differ by an ulp);
    a k with a zero (Div) or a non-finite value is not folded.
    """

    def __init__(self, producer: str, consumer: _ElementwiseAffine) -> None:
        order = "" if consumer.linear_first else "Reversed"
        super().__init__(producer, f"Fold{consumer.op_type}{order}Into{producer}")
        self.consumer = consumer

    def pattern(self, op: OpsetPatternBuilder, x: Var, k: Var) -> object:
        y = getattr(op, self.producer)(x, _allow_other_inputs=True, _outputs=["y"])
        operands = (y, k) if self.consumer.linear_first else (k, y)
        return getattr(op, self.consumer.op_type)(*operands, _outputs=["out"])

    def affine(self, linear: _Linear, out: ir.Value, **bindings: ir.Value) -> tuple[np.ndarray, np.ndarray] | str:
        k = constant_array(bindings["k"])
        if k is None:
            return f"the {self.consumer.op_type} operand is not a constant"
        per_channel = _per_channel(k, linear)
        if per_channel is None:
            return (f"{self.consumer.op_type} operand of shape {list(k.shape)} is not per-output-channel "
                    f"for a rank-{linear.rank} output with {linear.channels} channels")
        with np.errstate(divide="ignore"):
            return self.consumer.to_affine(per_channel)


class FoldAffinePass(RewritePass):
    """Fold Mul/Div/Add/Sub by a per-output-channel (or scalar) constant into Conv/ConvTranspose/Gemm."""

    def __init__(self) -> None:
        super().__init__(RewriteRuleSet(
            [_FoldElementwise.rule(producer, consumer)
             for producer in ("Conv", "ConvTranspose", "Gemm") for consumer in _ELEMENTWISE_AFFINE],
            commute=True,
        ))


# --------------------------------------------------------------------------------------------
# MatMul + Add -> Gemm
# --------------------------------------------------------------------------------------------


class _MatMulAddToGemm(RewriteRuleClassBase):
    """Add(MatMul(A, B), C) (either Add order) -> Gemm(A, B, C).

    Legal when A is known to be [M, K], B is a constant [K, N] and C is a constant that Gemm can
    broadcast to [M, N] without the Add having grown the output: rank <= 2, right-aligned shape
    [1 or M, 1 or N] (an M > 1 needs a static M equal to it: Add([1, N], [3, N]) is [3, N], Gemm's
    output stays [1, N]). Gemm = alpha*A@B + beta*C with alpha = beta = 1.
    """

    def pattern(self, op: OpsetPatternBuilder, a: Var, b: Var, c: Var) -> object:
        return op.Add(op.MatMul(a, b, _outputs=["product"]), c, _outputs=["out"])

    def check(self, context: MatchContext, a: ir.Value, b: ir.Value, c: ir.Value, **_: ir.Value) -> MatchResult:
        result = MatchResult()
        if (opset := _onnx_opset(context)) < _MIN_OPSET:
            return result.fail(f"opset {opset} < {_MIN_OPSET}: Gemm needs broadcast=1")
        if a.shape is None or len(a.shape) != 2:
            return result.fail(f"MatMul input {a.name!r} is not known to be rank 2", a)
        weight, bias = constant_array(b), constant_array(c)
        if weight is None or weight.ndim != 2:
            return result.fail(f"MatMul weight {b.name!r} is not a rank-2 constant", b)
        if bias is None or bias.ndim > 2:
            return result.fail(f"Add operand {c.name!r} is not a constant of rank <= 2", c)
        rows, columns = (1,) * (2 - bias.ndim) + bias.shape
        if columns not in (1, weight.shape[1]) or rows not in (1, a.shape[0]):
            return result.fail(f"Add operand of shape {list(bias.shape)} does not broadcast to "
                               f"[{a.shape[0]}, {weight.shape[1]}] without growing it", c)
        return result

    def rewrite(self, op: RewriterContext, a: ir.Value, b: ir.Value, c: ir.Value, **_: ir.Value) -> ir.Value:
        return op.Gemm(a, b, c)


class MatMulAddToGemmPass(RewritePass):
    """Add(MatMul(A[M, K], B[K, N]), C) -> Gemm(A, B, C) for constant B and C (C broadcast to [M, N])."""

    def __init__(self) -> None:
        super().__init__(RewriteRuleSet([_MatMulAddToGemm.rule()], commute=True))


# --------------------------------------------------------------------------------------------
# Pad into Conv / MaxPool / AveragePool
# --------------------------------------------------------------------------------------------


def _read_pad(pad: ir.Node, rank: int) -> tuple[list[int], float] | str:
    """Constant-mode Pad as ([begin_0..begin_{r-1}, end_0..end_{r-1}] over all `rank` axes, fill value).

    Pad-2..10 carry `pads` and `value` as attributes; Pad-11+ as inputs 1 and 2 (default 0), with
    optional `axes` (input 3, Pad-18+) naming the axes `pads` covers.
    """
    if (mode := pad.attributes.get_string("mode", "constant")) != "constant":
        return f"Pad mode {mode!r} is not 'constant'"
    if "pads" in pad.attributes:
        pads = list(pad.attributes.get_ints("pads"))
        value = pad.attributes.get_float("value", 0.0)
        axes: Sequence[int] = range(rank)
    else:
        inputs = [*pad.inputs, None, None, None]
        pads_array, value_array, axes_array = (constant_array(v) for v in inputs[1:4])
        if pads_array is None:
            return "Pad pads are not a constant"
        if inputs[2] is not None and (value_array is None or value_array.size != 1):
            return "Pad constant_value is not a constant scalar"
        if inputs[3] is not None and axes_array is None:
            return "Pad axes are not a constant"
        pads = pads_array.tolist()
        value = 0.0 if value_array is None else float(value_array.reshape(-1)[0])
        axes = range(rank) if axes_array is None else [int(axis) % rank for axis in axes_array]
    if len(pads) != 2 * len(axes):
        return f"Pad has {len(pads)} pads for {len(axes)} axes"
    full = [0] * (2 * rank)
    for i, axis in enumerate(axes):
        full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
    return full, value


class _FoldPad(RewriteRuleClassBase):
    """W(Pad(x)) -> W'(x) for a windowed op W in Conv, MaxPool, AveragePool (`pads` += Pad's pads).

    Legal only if the op's own padding fills exactly what the Pad filled:

    - Conv pads with 0: the Pad value must be 0.
    - MaxPool ignores padded cells, i.e. pads with -inf: the Pad value must be -inf (a 0 pad can
      exceed negative inputs).
    - AveragePool counts padded cells as 0 only with count_include_pad=1: value 0 and that flag.

    and always: mode 'constant', constant non-negative pads (negative ones crop), nothing padded on
    the batch and channel axes, the op's auto_pad NOTSET. Pools also need ceil_mode=0 (the last
    partial window depends on where the padding came from) and every folded pad smaller than the
    kernel (ONNX Runtime rejects a pool padding >= the kernel). A Pad of zeros is a no-op and folds
    whatever its value.
    """

    def __init__(self, consumer: str) -> None:
        super().__init__(f"FoldPadInto{consumer}")
        self.consumer = consumer

    def pattern(self, op: OpsetPatternBuilder, x: Var) -> object:
        padded = op.Pad(x, _allow_other_inputs=True, _outputs=["padded"])
        return getattr(op, self.consumer)(padded, _allow_other_inputs=True, _outputs=["out"])

    def _rank(self, node: ir.Node) -> int | None:
        """Rank of the op's input: Conv's weight rank, a pool's kernel rank + 2."""
        if self.consumer == "Conv":
            shape = node.inputs[1].shape
            return None if shape is None else len(shape)
        return len(node.attributes.get_ints("kernel_shape")) + 2

    def _folded_pads(self, node: ir.Node, pads: list[int], rank: int) -> list[int]:
        """The op's `pads` (spatial begins, then ends) plus the Pad's spatial pads."""
        extra = pads[2:rank] + pads[rank + 2:]
        return [old + new for old, new in zip(node.attributes.get_ints("pads", [0] * len(extra)), extra)]

    def check(self, context: MatchContext, x: ir.Value, padded: ir.Value, out: ir.Value, **_: ir.Value) -> MatchResult:
        result = MatchResult()
        pad, node = padded.producer(), out.producer()
        rank = self._rank(node)
        if rank is None:
            return result.fail(f"{self.consumer} weight rank unknown", node)
        read = _read_pad(pad, rank)
        if isinstance(read, str):
            return result.fail(read, pad)
        pads, value = read
        if any(p < 0 for p in pads):
            return result.fail(f"negative pads {pads} crop", pad)
        if any(pads[:2] + pads[rank:rank + 2]):
            return result.fail(f"pads {pads} pad the batch or channel axis", pad)
        if (auto_pad := node.attributes.get_string("auto_pad", "NOTSET")) != "NOTSET":
            return result.fail(f"{self.consumer} auto_pad={auto_pad} computes its own pads", node)
        if not any(pads):
            return result
        if self.consumer == "Conv":
            return result if value == 0 else result.fail(f"Conv pads with 0, the Pad with {value}", pad)
        if self.consumer == "MaxPool" and value != -np.inf:
            return result.fail(f"MaxPool padding is -inf, the Pad's is {value}", pad)
        if self.consumer == "AveragePool" and (value != 0 or not node.attributes.get_int("count_include_pad", 0)):
            return result.fail(f"AveragePool padding is a counted 0 only with count_include_pad=1 "
                               f"(Pad value {value})", node)
        if node.attributes.get_int("ceil_mode", 0):
            return result.fail(f"{self.consumer} ceil_mode=1", node)
        kernel = list(node.attributes.get_ints("kernel_shape"))
        folded = self._folded_pads(node, pads, rank)
        if any(p >= k for p, k in zip(folded, kernel * 2)):
            return result.fail(f"folded pads {folded} not smaller than kernel {kernel}", node)
        return result

    def rewrite(self, op: RewriterContext, x: ir.Value, padded: ir.Value, out: ir.Value, **_: ir.Value) -> ir.Value:
        pad, node = padded.producer(), out.producer()
        rank = self._rank(node)
        pads, _value = _read_pad(pad, rank)  # check() accepted both
        attributes = dict(node.attributes)
        attributes["pads"] = ir.AttrInt64s("pads", self._folded_pads(node, pads, rank))
        return op.op(self.consumer, x, *node.inputs[1:], _name=node.name, **attributes)


class FoldPadPass(RewritePass):
    """Fold a constant-mode Pad into the `pads` of the Conv, MaxPool or AveragePool after it."""

    def __init__(self) -> None:
        super().__init__(RewriteRuleSet([_FoldPad.rule(consumer) for consumer in ("Conv", "MaxPool", "AveragePool")]))
