"""Frontends bring a model file into edgec's one intermediate form (ONNX, held as `onnx_ir.Model`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from edgec.errors import BadInputError
from edgec.frontends import onnx_frontend
from edgec.runtime.base import TensorSpec

__all__ = ["load_model", "input_specs", "file_input_specs"]


def load_model(path: str | Path) -> ir.Model:
    """Load a model file into the IR, choosing the frontend by suffix."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"model: no such file {path}")
    if path.suffix.lower() in onnx_frontend.SUFFIXES:
        return onnx_frontend.load(path)
    raise BadInputError(f"model: {path} has an unsupported format '{path.suffix}'; edgec reads .onnx models")


def input_specs(model: ir.Model) -> list[TensorSpec]:
    """The graph inputs a caller must feed (initializers listed as inputs are excluded)."""
    specs = []
    for value in model.graph.inputs:
        if value.is_initializer():
            continue
        if value.dtype is None:
            raise BadInputError(f"model: input '{value.name}' has no element type")
        shape = tuple(dim if isinstance(dim, int) else (str(dim) if dim.value else None) for dim in value.shape or ())
        specs.append(TensorSpec(value.name, shape, np.dtype(value.dtype.numpy())))
    return specs


def file_input_specs(path: str | Path) -> list[TensorSpec]:
    """Input specs of an `.onnx` file, read without loading external weights."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError, ValueError) as exc:
        raise BadInputError(f"model: cannot read {path} as ONNX: {exc}") from exc
    return input_specs(ir.serde.deserialize_model(proto))
