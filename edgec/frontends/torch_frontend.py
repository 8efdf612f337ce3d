"""PyTorch frontend: `.pt2` ExportedPrograms and TorchScript files to ONNX, through PyTorch's own exporters.

- **torch-export** (`torch.export.save`): the dynamo exporter (`torch.onnx.export(program, dynamo=True)`).
  The program carries its example inputs and its dynamic dims (`torch.export.Dim`), which stay
  symbolic in the ONNX. `--input` is optional: it must name the program's inputs, and its named dims
  label the program's dynamic ones (`image:batchx3x224x224` turns the exporter's `s40` into `batch`).
- **torchscript** (`torch.jit.save`): a TorchScript graph stores no input shapes or dtypes, so
  `--input` is required; the TorchScript exporter (`dynamo=False`) runs on seeded sample tensors of
  those shapes, and dims given by name or `?` stay dynamic (`dynamic_axes`).

The ONNX inputs and outputs get the names `edgec.frontends.torch_source` gives the source model, in
its order, so import verification and the bench baseline feed both models the same dict.

Opset: the dynamo exporter writes opset 18 at the lowest. Asked for less, it tries the ONNX version
converter, which fails on Reduce*/Split with axes as inputs, logs a traceback and keeps 18 anyway;
so it is asked for `max(opset, 18)`, and the target's `upgrade_opset` leaves newer models as they are.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import onnx

from edgec.data import random_samples
from edgec.errors import BadInputError
from edgec.frontends import ImportOptions
from edgec.frontends.specs import BATCH_DIM
from edgec.tensors import TensorSpec
from edgec.frontends.torch_source import TorchSource, load_source, require_torch, torch_error_line

__all__ = ["convert", "save_module", "quiet_exporter", "DYNAMO_MIN_OPSET"]

#: The lowest opset the dynamo exporter writes (see the module docstring).
DYNAMO_MIN_OPSET = 18


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence PyTorch's exporters: their progress prints, warnings about optional torchvision ops,
    deprecation warnings and graph dumps on stderr before an error say nothing a user can act on;
    a failure reaches the user as one `BadInputError` line (the cause stays chained)."""
    loggers = [logging.getLogger(name) for name in ("torch", "onnxscript")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.ERROR)
    try:
        with (contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()),
              warnings.catch_warnings()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for each, level in zip(loggers, levels):
            each.setLevel(level)


def convert(path: Path, fmt: str, options: ImportOptions) -> onnx.ModelProto:
    """Export a `.pt2` ("torch-export") or TorchScript ("torchscript") file to an ONNX model."""
    source = load_source(path, fmt, trust_source=options.trust_source)
    export = _export_program if source.format == "torch-export" else _export_torchscript
    return export(source, options, path)


def _export_program(source: TorchSource, options: ImportOptions, path: Path) -> onnx.ModelProto:
    torch = require_torch()
    dynamic_shapes = _dim_names(source, options.inputs)
    with _exporting(path):
        exported = torch.onnx.export(source.program, (), dynamo=True, external_data=False,
                                     opset_version=max(options.opset, DYNAMO_MIN_OPSET),
                                     dynamic_shapes=dynamic_shapes, **_names(source))
    return exported.model_proto


def _export_torchscript(source: TorchSource, options: ImportOptions, path: Path) -> onnx.ModelProto:
    torch = require_torch()
    declared = _declared_inputs(source, options.inputs)
    example = random_samples(declared, 1)[0]
    buffer = io.BytesIO()
    with _exporting(path):
        torch.onnx.export(source.program, tuple(torch.from_numpy(example[spec.name]) for spec in declared), buffer,
                          dynamo=False, opset_version=options.opset, dynamic_axes=_dynamic_axes(declared),
                          **_names(source))
    return onnx.load_model_from_string(buffer.getvalue())


def _names(source: TorchSource) -> dict[str, list[str]]:
    """The exporter's `input_names`/`output_names`: those the source runtime reports (module docstring)."""
    return {"input_names": [spec.name for spec in source.inputs],
            "output_names": [spec.name for spec in source.outputs]}


@contextlib.contextmanager
def _exporting(path: Path) -> Iterator[None]:
    """Run an exporter quietly; what it cannot convert is the user's model, so say so in one line."""
    try:
        with quiet_exporter():
            yield
    except Exception as exc:  # the exporters raise assorted types for ops or constructs they cannot convert
        raise BadInputError(f"model: torch.onnx.export cannot convert {path}: {torch_error_line(exc)}") from exc


def _declared_inputs(source: TorchSource, declared: Sequence[TensorSpec]) -> list[TensorSpec]:
    """The `--input` specs in the model's input order; each of the model's inputs named exactly once."""
    names = [spec.name for spec in source.inputs]
    if not declared and names and source.format == "torchscript":
        raise BadInputError(f"model: TorchScript stores no input shapes; pass --input NAME:SHAPE[:DTYPE] for each of"
                            f" forward's arguments ({', '.join(names)}), e.g. --input {names[0]}:1x3x224x224")
    given = {spec.name: spec for spec in declared}
    if declared and (sorted(given) != sorted(names) or len(given) != len(declared)):
        raise BadInputError(f"--input names {[spec.name for spec in declared]} do not match the model's inputs"
                            f" {names}; declare each of them once")
    return [given[name] for name in names] if declared else []


def _dim_names(source: TorchSource, declared: Sequence[TensorSpec]) -> tuple[dict[int, str], ...] | None:
    """The exporter's `dynamic_shapes` for an ExportedProgram: `--input` dim names for its dynamic dims.

    The program fixes what is dynamic; `--input` may only name those dims, and must agree on rank,
    dtype and every fixed size.
    """
    matched = _declared_inputs(source, declared)
    if not matched:
        return _batch_dim_names(source)
    names = []
    for have, want in zip(source.inputs, matched):
        where = f"--input {want.name}"
        if len(want.shape) != len(have.shape) or want.dtype != have.dtype:
            shape = "x".join(str(dim) if isinstance(dim, int) else "?" for dim in have.shape) or "scalar"
            raise BadInputError(f"{where}: the program takes {have.dtype} of rank {len(have.shape)};"
                                f" declare {want.name}:{shape}:{have.dtype}")
        axes = {}
        for axis, (fixed, wanted) in enumerate(zip(have.shape, want.shape)):
            if isinstance(fixed, int) and wanted != fixed:
                raise BadInputError(f"{where}: dim {axis} is {fixed} in the program; to make it dynamic, export"
                                    " again with torch.export.Dim")
            if not isinstance(fixed, int) and isinstance(wanted, int):
                raise BadInputError(f"{where}: dim {axis} is dynamic in the program; fix it with --fix-shape"
                                    f" {want.name}:{'x'.join(str(d) for d in want.shape)}")
            if isinstance(wanted, str):
                axes[axis] = wanted
        names.append(axes)
    return tuple(names)


def _batch_dim_names(source: TorchSource) -> tuple[dict[int, str], ...] | None:
    """Name a dynamic leading dim `batch` when every input starts with the same one.

    `torch.export.Dim("batch")` keeps no name in a saved program (it becomes a symbol such as `s31`),
    and the exporter would carry that symbol into the ONNX; targets pin `fix_dims = {batch = 1}` by
    name. Other dynamic dims keep the exporter's names; `--input` names any of them.
    """
    leading = {spec.shape[0] if spec.shape else None for spec in source.inputs}
    if len(leading) != 1 or not isinstance(next(iter(leading)), str):
        return None
    return tuple({0: BATCH_DIM} for _ in source.inputs)


def _dynamic_axes(declared: Sequence[TensorSpec]) -> dict[str, dict[int, str]] | None:
    """TorchScript exporter `dynamic_axes`: every dim not given as a number, by its name (`?`: `<input>_<axis>`)."""
    axes = {
        spec.name: {axis: dim if isinstance(dim, str) else f"{spec.name}_{axis}"
                    for axis, dim in enumerate(spec.shape) if not isinstance(dim, int)}
        for spec in declared
    }
    return {name: dims for name, dims in axes.items() if dims} or None


def save_module(module: Any, example_inputs: tuple[Any, ...], path: str | os.PathLike[str]) -> Path:
    """Export an in-memory `torch.nn.Module` with `torch.export` and save it as `.pt2` at `path` (atomically).

    The example inputs' shapes become fixed in the program: for dynamic dims, export with
    `torch.export.Dim` yourself and compile the saved `.pt2`. A module in training mode is exported
    in eval mode (edgec compiles for inference) and left in the mode it was in.
    """
    torch = require_torch()
    if not isinstance(module, torch.nn.Module):
        raise BadInputError(f"compiling a Python object needs a torch.nn.Module, not {type(module).__name__};"
                            " save other models to a file and compile the file")
    path = Path(path)
    modes = {submodule: submodule.training for submodule in module.modules()}
    module.eval()
    try:
        with quiet_exporter():
            program = torch.export.export(module, tuple(example_inputs))
    except Exception as exc:  # torch.export raises assorted types for code it cannot trace
        raise BadInputError(f"torch.export.export cannot export {type(module).__name__}: {torch_error_line(exc)}") from exc
    finally:
        for submodule, training in modes.items():
            submodule.training = training
    staging = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        torch.export.save(program, staging)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path
