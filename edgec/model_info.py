"""`edgec inspect`: what a model takes and gives, in any format edgec reads, before compiling it.

The same network is called `image`, `x`, `input_layer` or `keras_tensor` depending on the framework
that saved it, and `.npz` keys must match those names. The report shows the names, dtypes and
shapes (dynamic dims by name) exactly as `compile` and `bench` will see them, because it goes through
the same frontend: non-ONNX formats are converted, so the names are the source runtime's.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx_ir as ir

from edgec.artifact import MANIFEST, read_manifest, size_on_disk
from edgec.frontends import ImportOptions, import_model, input_specs, model_files, value_shape
from edgec.frontends.specs import parse_tensor_spec
from edgec.integrity import inside_artifact
from edgec.tensors import TensorSpec

__all__ = ["inspect_model", "format_info"]


def _spec_dict(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "dtype": str(spec.dtype), "shape": list(spec.shape),
            "dynamic": [dim if isinstance(dim, str) else "?" for dim in spec.shape if not isinstance(dim, int)]}


def _output_specs(model: ir.Model) -> list[TensorSpec]:
    specs = []
    for value in model.graph.outputs:
        dtype = value.dtype.numpy() if value.dtype is not None else None
        specs.append(TensorSpec(value.name, value_shape(value), dtype))
    return specs


def inspect_model(path: str | os.PathLike[str], *, fmt: str | None = None, inputs: Sequence[str] = (),
                  trust_source: bool = False) -> dict[str, Any]:
    """Inputs, outputs, opsets, size, parameter count and op histogram of a model file or artifact dir.

    Args:
        path: any model `compile` reads, or a `compile` output directory (its artifact model is shown).
        fmt: force the format (see `edgec.frontends.FORMATS`).
        inputs: `NAME:SHAPE[:DTYPE]` declarations, for formats that need them to be read at all.
        trust_source: read a file that runs code when loaded (TorchScript, SavedModel; `edgec.trust`).
    """
    path = Path(path)
    artifact = None
    if path.is_dir() and (path / MANIFEST).is_file():
        manifest = read_manifest(path)
        artifact = {"target": manifest["target"]["name"], "precision": manifest["artifact"]["precision"]}
        path = inside_artifact(path, manifest["artifact"]["file"], "the model file")
    options = ImportOptions(tuple(parse_tensor_spec(text) for text in inputs), trust_source=trust_source)
    imported = import_model(path, fmt=fmt, options=options)
    model = imported.model
    nodes = list(model.graph.all_nodes())
    parameters = sum(int(value.const_value.size) for value in model.graph.initializers.values()
                     if value.const_value is not None)
    return {
        "path": str(path),
        "format": imported.format.name,
        "description": imported.format.description,
        "artifact": artifact,
        "size_bytes": sum(size_on_disk(file) for file in model_files(path)),
        "opsets": dict(sorted(model.opset_imports.items())),
        "inputs": [_spec_dict(spec) for spec in input_specs(model)],
        "outputs": [_spec_dict(spec) for spec in _output_specs(model)],
        "nodes": len(nodes),
        "parameters": parameters,
        "ops": dict(Counter(node.op_type for node in nodes).most_common()),
    }


def format_info(info: dict[str, Any]) -> str:
    """The inspect report as a few readable lines."""
    opsets = ", ".join(f"{domain or 'ai.onnx'} {version}" for domain, version in info["opsets"].items())
    lines = [f"{info['path']}: {info['description']}, {info['size_bytes']:,} bytes, {info['parameters']:,} parameters,"
             f" {info['nodes']} nodes, opset {opsets}"]
    if info["artifact"]:
        lines.append(f"edgec artifact for {info['artifact']['target']} ({info['artifact']['precision']})")
    for title, specs in (("inputs", info["inputs"]), ("outputs", info["outputs"])):
        lines.append(f"{title}:")
        width = max([len(spec["name"]) for spec in specs] or [0])
        for spec in specs:
            shape = "x".join("?" if dim is None else str(dim) for dim in spec["shape"]) or "scalar"
            dynamic = f"  (dynamic: {', '.join(spec['dynamic'])})" if spec["dynamic"] else ""
            lines.append(f"  {spec['name']:<{width}}  {spec['dtype']:<8} {shape}{dynamic}")
    lines.append("ops: " + ", ".join(f"{op} x{count}" for op, count in info["ops"].items()))
    names = ", ".join(spec["name"] for spec in info["inputs"])
    lines.append(f"data files (.npz) for --calib/--data/--eval are keyed by input name: {names}")
    return "\n".join(lines)
