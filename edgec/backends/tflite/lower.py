"""edgec's own lowering: an optimized (and for int8, Q/DQ-quantized) ONNX IR model -> `.tflite` bytes.

No TensorFlow: the flatbuffer is written with LiteRT's generated schema. Every ONNX node becomes
builtin TFLite ops (never Flex or custom ops); a node no converter handles stops the lowering with
an error naming it. See `ops` for the per-op converters and `quantization` for how the Q/DQ graph
maps onto TFLite's int8 kernels.

Tensors: ONNX int64 values become int32 inside the model (TFLite's shape and index type), with a
CAST at int64 graph inputs and outputs; graph inputs and outputs keep the ONNX names, as keys of
the model's one signature, which is what the TFLite runtime names its tensors by.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir
from ai_edge_litert import schema_py_generated as schema

from edgec import __version__
from edgec.backends.tflite import quantization as q
from edgec.backends.tflite.flatbuffer import FlatModel, QuantParams
from edgec.errors import BadInputError, TargetError
from edgec.passes.cleanup import InferShapesPass
from edgec.passes.fusion import fuse_gelu
from edgec.quant.table import CalibrationTable

__all__ = ["lower", "Lowering", "PRECISIONS"]

PRECISIONS = ("fp32", "fp16", "int8")
Op = schema.BuiltinOperator


def _np_dtype(value: ir.Value) -> np.dtype:
    if value.dtype is None:
        raise BadInputError(f"tensor '{value.name}' has no known type; run shape inference (infer_shapes) first")
    dtype = np.dtype(value.dtype.numpy())
    return np.dtype(np.int32) if dtype == np.int64 else dtype


def _dims(value: ir.Value) -> list[int | None] | None:
    if value.shape is None:
        return None
    return [d if isinstance(d, int) else None for d in value.shape]


class Lowering:
    """The state of one lowering: which TFLite tensor holds each ONNX value, and the model under construction.

    A value can have two views: its float (or integer) tensor, and for quantized activations its
    int8 tensor (a QuantizeLinear's output; a DequantizeLinear's output is the same int8 tensor).
    A view is made on first use: the float view of a quantized value is a DEQUANTIZE of its int8 view.
    """

    def __init__(self, model: ir.Model, precision: str, integer_io: bool) -> None:
        self.model = model
        self.precision = precision
        self.integer_io = integer_io
        self.flat = FlatModel(f"edgec {__version__}")
        self._float: dict[ir.Value, int] = {}
        self._int8: dict[ir.Value, int] = {}
        #: values computed at compile time (nodes whose inputs are all constants)
        self._folded: dict[ir.Value, np.ndarray] = {}
        #: nodes lowered as part of another node (a fused activation, the QuantizeLinear an int8 op writes)
        self.done: set[ir.Node] = set()
        #: the node being lowered runs int8 when this is set
        self.plan: q.Int8Plan | None = None

    # ------------------------------------------------------------------ tensors

    def op(self, code: int, inputs: Sequence[int], outputs: Sequence[int], options: object = None,
           version: int = 1) -> None:
        self.flat.add_operator(code, inputs, outputs, options, version)

    def new_tensor(self, name: str, shape: Sequence[int | None], dtype: np.dtype | type,
                   quant: QuantParams | None = None) -> int:
        return self.flat.add_tensor(name, shape, dtype, quant)

    def constant(self, name: str, array: np.ndarray, quant: QuantParams | None = None) -> int:
        """A constant tensor; float constants of an fp16 model are stored fp16 behind a DEQUANTIZE."""
        array = np.asarray(array)
        if array.dtype == np.int64:  # TFLite indexes with int32; INT64_MAX ("to the end") saturates
            array = np.clip(array, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        if self.precision == "fp16" and array.dtype == np.float32 and quant is None:
            half = self.flat.add_constant(f"{name}_fp16", array.astype(np.float16))
            out = self.new_tensor(name, array.shape, np.float32)
            self.op(Op.DEQUANTIZE, [half], [out], version=3)
            return out
        return self.flat.add_constant(name, array, quant)

    def shape_of(self, value: ir.Value) -> list[int | None]:
        dims = _dims(value)
        if dims is None:
            raise BadInputError(f"tensor '{value.name}' has no known shape; the TFLite lowering needs ranks "
                                "(run infer_shapes, or give static input shapes with --fix-shape)")
        return dims

    def static_shape(self, value: ir.Value, why: str) -> list[int]:
        dims = self.shape_of(value)
        if any(d is None for d in dims):
            raise BadInputError(f"{why}: tensor '{value.name}' needs a static shape, has {dims}; "
                                "fix the input shapes with --fix-shape")
        return [int(d) for d in dims]

    def const_array(self, value: ir.Value | None) -> np.ndarray | None:
        """The value's compile-time array (a DequantizeLinear of a constant is evaluated), or None."""
        if value is None or value.is_graph_input():
            return None
        if value in self._folded:
            return self._folded[value]
        dq = q.dq_source(value)
        if dq is not None:
            source = self.const_array(dq.inputs[0])
            if source is None:
                return None
            params = q.node_params(dq)
            return _dequantize(source, params)
        tensor = ir.convenience.get_const_tensor(value)
        return None if tensor is None else tensor.numpy()

    def tensor(self, value: ir.Value) -> int:
        """The float (or integer) tensor of `value`."""
        if value in self._float:
            return self._float[value]
        dq = q.dq_source(value)
        if dq is not None and self.const_array(dq.inputs[0]) is None:
            index = self.new_tensor(value.name, self.shape_of(value), np.float32)
            self.op(Op.DEQUANTIZE, [self.qtensor(dq.inputs[0])], [index], version=2)
        else:
            array = self.const_array(value)
            if array is None:
                raise AssertionError(f"edgec bug: '{value.name}' is read before it is computed")
            index = self.constant(value.name, array)
        self._float[value] = index
        return index

    def qtensor(self, value: ir.Value) -> int:
        """The int8 tensor of a quantized value (a QuantizeLinear output, or a DequantizeLinear output's source)."""
        if value in self._int8:
            return self._int8[value]
        dq = q.dq_source(value)
        if dq is None:
            raise AssertionError(f"edgec bug: '{value.name}' has no int8 view")
        source = dq.inputs[0]
        array = self.const_array(source)
        if array is None:
            index = self.qtensor(source)
        else:
            index = self.flat.add_constant(source.name, array.astype(np.int32 if array.dtype == np.int32 else np.int8),
                                           q.node_params(dq))
        self._int8[value] = index
        return index

    def quantized_constant(self, value: ir.Value, transform=None, axis_map=None) -> int:
        """A DequantizeLinear'd constant as an int8/int32 tensor, its layout changed by `transform`.

        `axis_map` maps the ONNX per-channel axis to the axis after `transform`.
        """
        dq = q.dq_source(value)
        array = self.const_array(dq.inputs[0])
        params = q.node_params(dq)
        if transform is not None:
            array = transform(array)
        if params.axis is not None and axis_map is not None:
            params = QuantParams(params.scale, params.zero_point, axis_map(params.axis))
        return self.flat.add_constant(dq.inputs[0].name, array, params)

    def set_float(self, value: ir.Value, index: int) -> None:
        self._float[value] = index

    def set_int8(self, value: ir.Value, index: int) -> None:
        self._int8[value] = index

    def output(self, value: ir.Value, dtype: np.dtype | type | None = None) -> int:
        """A new tensor for `value` as the current node computes it (float, or int8 when the node runs int8)."""
        if self.plan is not None:
            quantize = self.plan.quantize
            index = self.new_tensor(quantize.inputs[0].name, self.shape_of(value), np.int8, q.node_params(quantize))
            self._int8[quantize.outputs[0]] = index
            return index
        uses = list(value.uses())
        quantized_only = bool(uses) and all(q.is_quantize(use.node) for use in uses) and not value.is_graph_output()
        # the int8 tensor QUANTIZE makes of it takes the value's name (the calibration table's key)
        name = f"{value.name}_float" if quantized_only else value.name
        index = self.new_tensor(name, self.shape_of(value), dtype or _np_dtype(value))
        self._float[value] = index
        return index

    def input(self, value: ir.Value) -> int:
        """The tensor the current node reads: int8 when it runs int8, else float."""
        return self.qtensor(value) if self.plan is not None else self.tensor(value)

    def requantize(self, index: int, params: QuantParams, name: str) -> int:
        """An int8 tensor with `params` holding the int8 tensor `index` (itself when they already agree)."""
        current = self.flat.quant(index)
        if current is not None and current.same_as(params):
            return index
        out = self.new_tensor(name, self.flat.shape(index), np.int8, params)
        self.op(Op.QUANTIZE, [index], [out], version=2)
        return out

    # ------------------------------------------------------------------ driving

    def lower_node(self, node: ir.Node) -> None:
        from edgec.backends.tflite.ops import converter_for

        if node in self.done:
            return
        if q.is_quantize(node):
            self._quantize(node)
            return
        if q.is_dequantize(node):
            return  # its output is a view of its input: made when a reader asks for it
        if self._fold(node):
            return
        self.plan = q.plan_int8(node) if self.precision == "int8" else None
        try:
            converter_for(node)(self, node)
        finally:
            if self.plan is not None:
                self.done.add(self.plan.quantize)
                if self.plan.activation_node is not None:
                    self.done.add(self.plan.activation_node)
            self.plan = None

    def _fold(self, node: ir.Node) -> bool:
        """Evaluate a node whose inputs are all known at compile time (shape arithmetic, constant
        generators such as ConstantOfShape); the model then holds only its result."""
        if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER_FOLDED:
            return False
        if node.op_type == "Shape":
            dims = _dims(node.inputs[0])
            if dims is None or any(d is None for d in dims):
                return False
            start, end = node.attributes.get_int("start", 0), node.attributes.get_int("end", None)
            self._folded[node.outputs[0]] = np.asarray(dims[start:end], np.int64)
            return True
        inputs = [None if v is None else self.const_array(v) for v in node.inputs]
        if any(a is None for v, a in zip(node.inputs, inputs) if v is not None):
            return False
        from onnx.reference import ReferenceEvaluator

        proto = ir.serde.serialize_node(node)
        names = [v.name if v is not None else "" for v in node.inputs]
        feeds = {name: array for name, array in zip(names, inputs) if name}
        try:
            results = ReferenceEvaluator(proto).run(None, feeds)
        except Exception:  # noqa: BLE001 - an op the reference cannot evaluate is lowered instead
            return False
        for value, result in zip(node.outputs, results):
            self._folded[value] = np.asarray(result)
        return True

    def _quantize(self, node: ir.Node) -> None:
        """A QuantizeLinear no int8 op absorbed: QUANTIZE its float input (or requantize a dequantized one)."""
        source, out = node.inputs[0], node.outputs[0]
        params = q.node_params(node)
        dq = q.dq_source(source)
        if dq is not None and self.const_array(dq.inputs[0]) is None:
            index = self.qtensor(source)
            self._int8[out] = self.requantize(index, params, f"{self.flat.name(index)}_requantized")
            return
        index = self.new_tensor(source.name, self.shape_of(source), np.int8, params)
        self.op(Op.QUANTIZE, [self.tensor(source)], [index])
        self._int8[out] = index

    def fused_activation(self, node: ir.Node) -> tuple[int, ir.Value]:
        """(TFLite fused activation code, the value the node's kernel writes): a ReLU/ReLU6 reading the
        node's output alone is computed by the node's kernel."""
        if self.plan is not None:
            code = getattr(schema.ActivationFunctionType, self.plan.activation)
            written = self.plan.activation_node.outputs[0] if self.plan.activation_node else node.outputs[0]
            return code, written
        fused = q.activation_after(node.outputs[0])
        if fused is None:
            return schema.ActivationFunctionType.NONE, node.outputs[0]
        kind, activation = fused
        self.done.add(activation)
        return getattr(schema.ActivationFunctionType, kind), activation.outputs[0]

    def graph_input(self, value: ir.Value) -> int:
        """The tensor a graph input is fed through, named after it; int64 inputs are cast to int32 inside."""
        dtype = np.dtype(value.dtype.numpy()) if value.dtype is not None else np.dtype(np.float32)
        shape = self.shape_of(value)
        if self.integer_io and dtype == np.float32:
            index = self._integer_input(value, shape)
            if index is not None:
                return index
        index = self.new_tensor(value.name, shape, dtype)
        if dtype == np.int64:
            cast = self.new_tensor(f"{value.name}_int32", shape, np.int32)
            self.op(Op.CAST, [index], [cast])
            self._float[value] = cast
        else:
            self._float[value] = index
        return index

    def _integer_input(self, value: ir.Value, shape: list[int | None]) -> int | None:
        """An int8 graph input, when every reader quantizes it with the same parameters, directly or after
        the layout transpose at the input's edge (which then runs on int8 data); else None."""
        transpose = None
        readers = [use.node for use in value.uses()]
        if len(readers) == 1 and readers[0].op_type == "Transpose" and not readers[0].outputs[0].is_graph_output():
            transpose = readers[0]
            readers = [use.node for use in transpose.outputs[0].uses()]
        if not readers or not all(q.is_quantize(node) for node in readers):
            return None
        params = [q.node_params(node) for node in readers]
        if not all(p.same_as(params[0]) for p in params):
            return None
        index = self.new_tensor(value.name, shape, np.int8, params[0])
        quantized = index
        if transpose is not None:
            quantized = self.new_tensor(transpose.outputs[0].name, self.shape_of(transpose.outputs[0]), np.int8, params[0])
            perm = np.asarray(list(transpose.attributes.get_ints("perm")), np.int32)
            self.op(Op.TRANSPOSE, [index, self.constant(f"{value.name}_perm", perm)], [quantized], version=2)
            self.done.add(transpose)
        for node in readers:
            self._int8[node.outputs[0]] = quantized
            self.done.add(node)
        return index

    def graph_output(self, value: ir.Value) -> int:
        """The tensor a graph output is read from."""
        dtype = np.dtype(value.dtype.numpy()) if value.dtype is not None else np.dtype(np.float32)
        dq = q.dq_source(value)
        if self.integer_io and dq is not None and self.const_array(dq.inputs[0]) is None:
            return self.qtensor(value)
        if value.is_graph_input() or value.const_value is not None:
            index = self.tensor(value)  # an output that is an input or a constant still needs its own tensor
            out = self.new_tensor(value.name, self.shape_of(value), self.flat.dtype(index))
            self.op(Op.RESHAPE, [index, self.constant(f"{value.name}_shape", np.asarray(self.flat.shape(index)))],
                    [out])
            index = out
        else:
            index = self.tensor(value)
        if dtype == np.int64:
            out = self.new_tensor(f"{value.name}_int64", self.shape_of(value), np.int64)
            self.op(Op.CAST, [index], [out])
            return out
        return index


#: Ops never evaluated at compile time: constants already, or random.
_NEVER_FOLDED = frozenset({"Constant", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"})


def _dequantize(array: np.ndarray, params: QuantParams) -> np.ndarray:
    scale, zero_point = params.scale, params.zero_point
    if params.axis is not None:
        shape = [1] * array.ndim
        shape[params.axis % array.ndim] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return ((array.astype(np.int64) - zero_point) * scale).astype(np.float32)


def lower(model: ir.Model, *, table: CalibrationTable | None, precision: str, integer_io: bool = False) -> bytes:
    """`model` as `.tflite` bytes (decomposed GELUs in `model` are first fused in place).

    precision: "fp32"; "fp16" (float constants stored fp16 behind DEQUANTIZE, TFLite's float16
    quantization: about half the size, computed in fp32 or fp16 as the delegate chooses); or "int8"
    (`model` holds edgec's Q/DQ nodes, whose parameters come from `table`; float graph inputs and
    outputs unless `integer_io`).
    """
    from edgec.backends.tflite.ops import check_supported

    if precision not in PRECISIONS:
        raise TargetError(f"the TFLite lowering builds {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "int8" and table is None:
        raise TargetError("an int8 TFLite model needs the calibration table its Q/DQ parameters came from")
    if any(value.shape is None for node in model.graph for value in node.outputs):
        model = InferShapesPass()(model).model  # rewrites after the pipeline (int8 tables) leave shapes out
    fuse_gelu(model, contrib=False)  # TFLite has a GELU kernel and no Erf: one op whatever the opset
    graph = model.graph
    check_supported(graph)
    lowering = Lowering(model, precision, integer_io)
    inputs = [(value.name, lowering.graph_input(value)) for value in graph.inputs if not value.is_initializer()]
    for node in graph:
        lowering.lower_node(node)
    outputs = [(value.name, lowering.graph_output(value)) for value in graph.outputs]
    return lowering.flat.serialize(inputs, outputs)
