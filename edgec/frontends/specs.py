"""`--input NAME:SHAPE[:DTYPE]` and `--fix-shape NAME:SHAPE`: declared and fixed input shapes.

A shape is dims joined by `x`: integers are fixed, names (`batch`, `seq`) or `?` stay dynamic,
e.g. `pixel_values:1x3x224x224`, `input_ids:batchxseq:int64`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from edgec.errors import BadInputError
from edgec.limits import check_dims
from edgec.tensors import TensorSpec

__all__ = ["parse_tensor_spec", "fix_shapes", "BATCH_DIM"]

#: Name frontends give a dynamic leading input dim, so targets' `fix_dims = {batch = 1}` can pin it.
BATCH_DIM = "batch"

_DIM = re.compile(r"^(\d+|[A-Za-z_][A-Za-z0-9_]*|\?)$")


#: dtypes `--input` accepts, by name (NumPy's one-letter codes would make 'x:0:b' a dtype).
DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool")


def parse_tensor_spec(text: str, *, default_dtype: str = "float32") -> TensorSpec:
    """Parse `NAME:SHAPE[:DTYPE]`; the name may itself contain ':' (TF names like `x:0`)."""
    head, _, last = text.rpartition(":")
    dtype_text = default_dtype
    if last in DTYPES:
        text_without_dtype, dtype_text = head, last
        name, _, shape_text = text_without_dtype.rpartition(":")
    else:
        name, shape_text = head, last
    if not name or not shape_text:
        raise BadInputError(f"input spec '{text}': expected NAME:SHAPE[:DTYPE], e.g. pixel_values:1x3x224x224"
                            f" (DTYPE one of {', '.join(DTYPES)})")
    dims = []
    for dim in shape_text.split("x") if shape_text != "scalar" else []:
        if not _DIM.match(dim):
            raise BadInputError(f"input spec '{text}': dimension '{dim}' is neither a number nor a name"
                                f" (and '{last}' is not a dtype: {', '.join(DTYPES)})")
        dims.append(int(dim) if dim.isdigit() else (None if dim == "?" else dim))
    check_dims(dims, f"input spec '{text}'")
    return TensorSpec(name, tuple(dims), np.dtype(dtype_text))


def fix_shapes(model: ir.Model, by_input: Sequence[TensorSpec] = (), by_dim: Mapping[str, int] | None = None) -> bool:
    """Make input dims static: whole inputs by name (`--fix-shape`), or named dims everywhere (a target's
    `fix_dims`, e.g. {"batch": 1}). Returns whether anything changed; shapes downstream follow on the
    next shape inference.
    """
    inputs = {value.name: value for value in model.graph.inputs}
    unknown = [spec.name for spec in by_input if spec.name not in inputs]
    if unknown:
        raise BadInputError(f"--fix-shape names {unknown}, but the model's inputs are {sorted(inputs)}")
    changed = False
    for spec in by_input:
        value = inputs[spec.name]
        if value.shape is not None and len(value.shape) != len(spec.shape):
            raise BadInputError(f"--fix-shape {spec.name}: rank {len(spec.shape)} but the input has rank {len(value.shape)}")
        value.shape = ir.Shape(list(spec.shape))
        changed = True
    for value in model.graph.inputs:
        if not by_dim or value.shape is None:
            continue
        dims = [by_dim.get(str(dim.value), dim) if isinstance(dim, ir.SymbolicDim) else dim for dim in value.shape]
        if dims != list(value.shape):
            value.shape = ir.Shape(dims)
            changed = True
    return changed
