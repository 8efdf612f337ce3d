"""ONNX frontend: read an `.onnx` file (external data beside it included) into the IR, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from edgec.errors import BadInputError, cause_line, first_line

__all__ = ["load", "SUFFIXES", "external_data_files"]

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
        raise BadInputError(f"model: cannot read {path}: {first_line(exc)}") from exc
    if not proto.graph.node and not proto.graph.output:
        raise BadInputError(f"model: {path} holds no ONNX graph (empty or another format)")
    try:
        onnx.checker.check_model(proto, full_check=False)
    except onnx.checker.ValidationError as exc:
        raise BadInputError(f"model: {path} is not a valid ONNX model: {first_line(exc)}") from exc
    _check_runnable(proto, path)
    try:
        return ir.serde.deserialize_model(proto)
    except (ir.serde.SerdeError, ValueError, TypeError, UnicodeDecodeError) as exc:  # e.g. an unknown dtype
        raise BadInputError(f"model: cannot read {path}: {cause_line(exc)}") from exc


def _check_runnable(proto: onnx.ModelProto, path: Path) -> None:
    """What the checker accepts but no runtime can run: no outputs, an outputs name given twice, an opset
    newer than this ONNX knows."""
    outputs = [value.name for value in proto.graph.output]
    if not outputs:
        raise BadInputError(f"model: {path} has no graph outputs; nothing could run it")
    repeated = sorted({name for name in outputs if outputs.count(name) > 1})
    if repeated:
        raise BadInputError(f"model: {path} names the graph output {repeated[0]!r} more than once")
    newest = onnx.defs.onnx_opset_version()
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > newest:
            raise BadInputError(f"model: {path} uses ONNX opset {opset.version}; this onnx package knows up to"
                                f" {newest}: export at a lower opset or upgrade onnx and onnxruntime")


def _onnx_external_locations(model: Any) -> set[str]:
    """Every `location` referenced by an external tensor of an ONNX model, subgraphs included."""
    locations: set[str] = set()

    def visit_tensor(tensor: Any) -> None:
        for entry in tensor.external_data:
            if entry.key == "location":
                locations.add(entry.value)

    def visit_nodes(nodes: Any) -> None:
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    visit_tensor(attr.t)
                for tensor in attr.tensors:
                    visit_tensor(tensor)
                if attr.HasField("g"):
                    visit_graph(attr.g)
                for graph in attr.graphs:
                    visit_graph(graph)

    def visit_graph(graph: Any) -> None:
        for tensor in graph.initializer:
            visit_tensor(tensor)
        for sparse in graph.sparse_initializer:
            visit_tensor(sparse.values)
            visit_tensor(sparse.indices)
        visit_nodes(graph.node)

    visit_graph(model.graph)
    for function in model.functions:
        visit_nodes(function.node)
    return locations


def external_data_files(path: Path) -> list[Path]:
    """The existing external-data files an `.onnx` file's tensors reference (each once, resolved beside
    it); none for a file that cannot be parsed (loading it reports that)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - a corrupt file has no side files to count
        return []
    files = {(path.parent / location).resolve() for location in _onnx_external_locations(model)}
    return sorted(file for file in files if file.is_file() and file != path.resolve())
