"""Building a `.tflite` flatbuffer: tensors, constant buffers, operators and one signature.

LiteRT's generated schema (`ai_edge_litert.schema_py_generated`) holds the object API (`ModelT`,
`TensorT`, ...); this module keeps the bookkeeping around it (operator-code table, buffer list,
tensor indices) so the op converters only say "this op, these tensors".

Constant buffers are written 16-byte aligned: LiteRT reads weights in place (memory-mapped) and
its SIMD kernels and XNNPACK's weight packing expect aligned data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from edgec.passes.initializers import claim_name

__all__ = ["FlatModel", "QuantParams", "tensor_type"]

#: The schema version LiteRT reads (`TFL3`).
_SCHEMA_VERSION = 3
_FILE_IDENTIFIER = b"TFL3"
_BUFFER_ALIGNMENT = 16
#: Operator codes above this are stored only in `builtinCode` (the old int8 field says "see there").
_PLACEHOLDER_FOR_GREATER_OP_CODES = schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES

_TENSOR_TYPES = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.float16): schema.TensorType.FLOAT16,
    np.dtype(np.int32): schema.TensorType.INT32,
    np.dtype(np.int64): schema.TensorType.INT64,
    np.dtype(np.int8): schema.TensorType.INT8,
    np.dtype(np.uint8): schema.TensorType.UINT8,
    np.dtype(np.int16): schema.TensorType.INT16,
    np.dtype(np.bool_): schema.TensorType.BOOL,
}


def tensor_type(dtype: np.dtype | type) -> int:
    """The schema's TensorType for a numpy dtype."""
    return _TENSOR_TYPES[np.dtype(dtype)]


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization of one tensor: per-tensor (`axis` None) or per-channel along `axis`."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    def same_as(self, other: QuantParams) -> bool:
        return (self.axis == other.axis and np.array_equal(self.scale, other.scale)
                and np.array_equal(self.zero_point, other.zero_point))

    def to_schema(self) -> schema.QuantizationParametersT:
        params = schema.QuantizationParametersT()
        params.scale = [float(s) for s in np.asarray(self.scale, np.float32).reshape(-1)]
        params.zeroPoint = [int(z) for z in np.asarray(self.zero_point).reshape(-1)]
        params.quantizedDimension = self.axis or 0
        return params


class _AlignedBufferT(schema.BufferT):
    """A constant buffer whose bytes start on a 16-byte boundary."""

    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 - the schema's method name
        data = None
        if self.data is not None:
            payload = self.data
            builder.StartVector(1, len(payload), _BUFFER_ALIGNMENT)
            builder.head -= len(payload)
            builder.Bytes[builder.head:builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


class FlatModel:
    """One subgraph under construction; `serialize` writes the `.tflite` bytes."""

    def __init__(self, description: str) -> None:
        self.description = description
        self.tensors: list[schema.TensorT] = []
        self.buffers: list[schema.BufferT] = [schema.BufferT()]  # buffer 0: the empty one every non-constant uses
        self.operators: list[schema.OperatorT] = []
        self._codes: dict[tuple[int, int], int] = {}
        self._names: set[str] = set()

    def add_tensor(self, name: str, shape: Sequence[int | None], dtype: np.dtype | type,
                   quant: QuantParams | None = None, data: np.ndarray | None = None) -> int:
        """A tensor; `None` dims are dynamic (stored as 1 with -1 in the shape signature)."""
        tensor = schema.TensorT()
        tensor.name = claim_name(self._names, name)
        tensor.shape = [1 if d is None else int(d) for d in shape]
        if any(d is None for d in shape):
            tensor.shapeSignature = [-1 if d is None else int(d) for d in shape]
        tensor.type = tensor_type(dtype)
        tensor.hasRank = True
        if quant is not None:
            tensor.quantization = quant.to_schema()
        if data is not None:
            buffer = _AlignedBufferT()
            buffer.data = np.ascontiguousarray(data, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
            self.buffers.append(buffer)
            tensor.buffer = len(self.buffers) - 1
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def add_constant(self, name: str, data: np.ndarray, quant: QuantParams | None = None) -> int:
        return self.add_tensor(name, data.shape, data.dtype, quant, data)

    def shape(self, index: int) -> list[int | None]:
        """The tensor's dims, None where dynamic."""
        tensor = self.tensors[index]
        dims = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
        return [None if d < 0 else int(d) for d in dims]

    def name(self, index: int) -> str:
        return self.tensors[index].name

    def dtype(self, index: int) -> np.dtype:
        """The numpy dtype of the tensor's elements."""
        return next(dtype for dtype, code in _TENSOR_TYPES.items() if code == self.tensors[index].type)

    def quant(self, index: int) -> QuantParams | None:
        params = self.tensors[index].quantization
        if params is None or not params.scale:
            return None
        axis = params.quantizedDimension if len(params.scale) > 1 else None
        return QuantParams(np.asarray(params.scale, np.float32), np.asarray(params.zeroPoint, np.int64), axis)

    def add_operator(self, op: int, inputs: Sequence[int], outputs: Sequence[int], options: object = None,
                     version: int = 1) -> None:
        """`inputs` may hold -1 for an optional input left out; `options` is a `*OptionsT` object."""
        key = (op, version)
        if key not in self._codes:
            self._codes[key] = len(self._codes)
        operator = schema.OperatorT()
        operator.opcodeIndex = self._codes[key]
        operator.inputs = list(inputs)
        operator.outputs = list(outputs)
        if options is not None:
            operator.builtinOptionsType = getattr(schema.BuiltinOptions, type(options).__name__.removesuffix("T"))
            operator.builtinOptions = options
        self.operators.append(operator)

    def _live_operators(self, outputs: Sequence[int]) -> list[schema.OperatorT]:
        """The operators some graph output depends on (builtin ops have no side effects): a converter may
        leave computations behind that a fused kernel made unnecessary."""
        needed, live = set(outputs), []
        for operator in reversed(self.operators):
            if needed.intersection(operator.outputs):
                live.append(operator)
                needed.update(i for i in operator.inputs if i >= 0)
        return live[::-1]

    def serialize(self, inputs: Sequence[tuple[str, int]], outputs: Sequence[tuple[str, int]]) -> bytes:
        """The model bytes; `inputs`/`outputs` are (signature key, tensor index) in graph order."""
        subgraph = schema.SubGraphT()
        subgraph.tensors = self.tensors
        subgraph.inputs = [index for _, index in inputs]
        subgraph.outputs = [index for _, index in outputs]
        subgraph.operators = self._live_operators(subgraph.outputs)
        subgraph.name = "main"
        signature = schema.SignatureDefT()
        signature.signatureKey = "serving_default"
        signature.subgraphIndex = 0
        signature.inputs = [_tensor_map(key, index) for key, index in inputs]
        signature.outputs = [_tensor_map(key, index) for key, index in outputs]
        model = schema.ModelT()
        model.version = _SCHEMA_VERSION
        model.description = self.description
        model.operatorCodes = [_operator_code(op, version) for (op, version) in self._codes]
        model.subgraphs = [subgraph]
        model.buffers = self.buffers
        model.signatureDefs = [signature]
        builder = flatbuffers.Builder(1024 + sum(len(b.data or b"") + _BUFFER_ALIGNMENT for b in self.buffers))
        builder.Finish(model.Pack(builder), file_identifier=_FILE_IDENTIFIER)
        return bytes(builder.Output())


def _tensor_map(name: str, index: int) -> schema.TensorMapT:
    mapping = schema.TensorMapT()
    mapping.name, mapping.tensorIndex = name, index
    return mapping


def _operator_code(op: int, version: int) -> schema.OperatorCodeT:
    code = schema.OperatorCodeT()
    code.builtinCode = op
    code.deprecatedBuiltinCode = min(op, _PLACEHOLDER_FOR_GREATER_OP_CODES)
    code.version = version
    return code
