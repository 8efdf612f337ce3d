"""ONNX frontend: read an `.onnx` file (external data beside it included) into the IR, with clear errors."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from edgec.errors import BadInputError

__all__ = ["load", "SUFFIXES"]

SUFFIXES = (".onnx",)


def load(path: Path) -> ir.Model:
    """Parse, check and convert an ONNX model; external data is resolved relative to the file."""
    if path.is_dir():
        raise BadInputError(f"model: {path} is a directory, not an .onnx file")
    try:
        proto = onnx.load(str(path), load_external_data=True)
    except DecodeError as exc:
        raise BadInputError(f"model: {path} is not a valid ONNX file (truncated or another format)") from exc
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise BadInputError(f"model: cannot read {path}: {str(exc).splitlines()[0]}") from exc
    if not proto.graph.node and not proto.graph.output:
        raise BadInputError(f"model: {path} holds no ONNX graph (empty or another format)")
    try:
        onnx.checker.check_model(proto, full_check=False)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BadInputError(f"model: {path} is not a valid ONNX model: {first}") from exc
    return ir.serde.deserialize_model(proto)
