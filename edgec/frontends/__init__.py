"""Frontends bring a model into edgec's one intermediate form (ONNX, held as `onnx_ir.Model`).

`detect_format` recognises a file by path and content; each non-ONNX format has a frontend module
with `convert(path, fmt, options) -> onnx.ModelProto` and a `Runtime` that runs the *source* model
in its own framework, with the same input and output names: import verification and the
source-framework bench baseline both use that runtime, so "what the user trained" is always the
reference. Framework imports happen only when their format is used.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from edgec.errors import BadInputError, cause_line
from edgec.frontends import onnx_frontend
from edgec.limits import regular_file, utf8_path
from edgec.tensors import TensorSpec
from edgec.trust import require_trust

__all__ = ["FORMATS", "Format", "ImportOptions", "Imported", "detect_format", "import_model", "load_model",
           "input_specs", "value_shape", "file_input_specs", "model_files", "SOURCE_RUNNERS"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Format:
    """A source format: its frontend module, the runtime that runs the source, the extra that installs it."""

    name: str
    module: str
    runtime: str | None  # None: the source is ONNX itself
    extra: str | None
    description: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("onnx", "edgec.frontends.onnx_frontend", None, None, ".onnx file (external data beside it)"),
        Format("torch-export", "edgec.frontends.torch_frontend", "torch", "torch",
               "PyTorch ExportedProgram (.pt2, torch.export.save)"),
        Format("torchscript", "edgec.frontends.torch_frontend", "torch", "torch", "TorchScript (.pt/.pth, torch.jit.save)"),
        Format("savedmodel", "edgec.frontends.tensorflow_frontend", "tensorflow", "tensorflow",
               "TensorFlow SavedModel directory"),
        Format("keras", "edgec.frontends.tensorflow_frontend", "tensorflow", "tensorflow", "Keras 3 .keras file"),
        Format("tflite", "edgec.frontends.tflite_frontend", "tflite", "tflite", "TFLite flatbuffer (.tflite)"),
    )
}


#: Source framework -> the module whose `RUNTIME` runs a source model in it (import verification and
#: the bench's framework comparison). A `.tflite` source runs in the TFLite backend's own runtime.
SOURCE_RUNNERS: dict[str, str] = {
    "torch": "edgec.frontends.torch_source",
    "tensorflow": "edgec.frontends.tensorflow_source",
}


@dataclass(frozen=True)
class ImportOptions:
    """What a frontend may need beyond the file: declared inputs (frameworks without static shapes),
    the opset to export at, and whether the user trusts a file that runs code when loaded (`edgec.trust`)."""

    inputs: tuple[TensorSpec, ...] = ()
    opset: int = 17
    trust_source: bool = False


@dataclass
class Imported:
    model: ir.Model
    format: Format
    seconds: float


def _zip_members(path: Path) -> list[str]:
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


_TORCH_SUFFIXES = (".pt2", ".pt", ".pth", ".ts")
_TORCH_SAVE_HINT = ("save the model with torch.export.save(torch.export.export(model, args), 'model.pt2') or"
                    " torch.jit.save(torch.jit.script(model), 'model.pt')")


def _torch_archive_format(members: list[str]) -> str | None:
    """Which PyTorch graph archive a zip's member names show, by content alone (any suffix).

    `torch.export.save` writes `<root>/models/<name>.json` beside `<root>/archive_format` (torch >= 2.6;
    before, a top-level `serialized_exported_program.json`); `torch.jit.save` writes `<root>/code/`
    (the TorchScript source), `constants.pkl` and `data.pkl`; `torch.save` writes `<root>/data.pkl` and
    `<root>/data/` only: weights, no graph.
    """
    inner = {member.partition("/")[2] for member in members}
    if "serialized_exported_program.json" in members or any(
        name.startswith("models/") and name.endswith(".json") and name.count("/") == 1 for name in inner
    ):
        return "torch-export"
    if "constants.pkl" in inner and "data.pkl" in inner and any(name.startswith("code/") for name in inner):
        return "torchscript"
    return None


def _not_a_torch_graph(path: Path, members: list[str], head: bytes) -> str:
    """Why a `.pt`-like file that is no graph archive cannot be compiled, and how to save one."""
    inner = {member.partition("/")[2] for member in members}
    if "data.pkl" in inner or head[:1] == b"\x80":  # zip of torch.save, or a legacy / plain pickle
        return (f"model: {path} looks like a pickled PyTorch object (torch.save, e.g. a state dict), which holds"
                f" no graph; {_TORCH_SAVE_HINT}")
    if members:  # e.g. an AOTInductor package (compiled code) or a torch.package archive
        return f"model: {path} is a zip archive but holds no ExportedProgram or TorchScript graph; {_TORCH_SAVE_HINT}"
    return f"model: {path} is not a PyTorch archive (neither zip nor pickle); {_TORCH_SAVE_HINT}"


def detect_format(path: str | Path) -> str:
    """Recognise a model by path and content; raise with what edgec can read when nothing fits."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"model: no such file {path}")
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "savedmodel"
        raise BadInputError(f"model: {path} is a directory but not a TensorFlow SavedModel (no saved_model.pb)")
    regular_file(path, "model")
    suffix = path.suffix.lower()
    with open(path, "rb") as handle:
        head = handle.read(8)
    if suffix == ".tflite" or head[4:8] == b"TFL3":
        return "tflite"
    if suffix == ".keras":
        return "keras"
    if suffix in onnx_frontend.SUFFIXES:
        return "onnx"
    members = _zip_members(path)
    torch_format = _torch_archive_format(members)
    if torch_format:
        return torch_format
    if suffix in _TORCH_SUFFIXES:
        raise BadInputError(_not_a_torch_graph(path, members, head))
    raise BadInputError(
        f"model: cannot tell the format of {path}; edgec reads {', '.join(FORMATS)} (force one with --from)"
    )


def _frontend(fmt: Format) -> Any:
    try:
        return importlib.import_module(fmt.module)
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith("edgec"):
            raise BadInputError(
                f"reading {fmt.description} needs {exc.name}: pip install 'edgec[{fmt.extra}]'"
            ) from exc
        raise


def import_model(path: str | Path, *, fmt: str | None = None, options: ImportOptions = ImportOptions()) -> Imported:
    """Convert a model file to the IR with the frontend for its (detected or forced) format."""
    path = Path(path)
    utf8_path(path, "model")
    if not path.is_dir():
        regular_file(path, "model")
    name = fmt or detect_format(path)
    if name not in FORMATS:
        raise BadInputError(f"--from {name}: unknown format; choose one of {', '.join(FORMATS)}")
    format_ = FORMATS[name]
    require_trust(path, name, options.trust_source)
    started = time.perf_counter()
    if format_.name == "onnx":
        if options.inputs:
            raise BadInputError("--input declares inputs for formats without shapes; an ONNX model declares its own"
                                " (use --fix-shape NAME:SHAPE to make one static)")
        model = onnx_frontend.load(path)
    else:
        proto = _frontend(format_).convert(path, name, options)
        model = ir.serde.deserialize_model(proto)
    return Imported(model, format_, time.perf_counter() - started)


def model_files(path: str | Path) -> list[Path]:
    """The files a model consists of: an `.onnx` file and its external-data files, else the path itself."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in onnx_frontend.SUFFIXES:
        return [path, *onnx_frontend.external_data_files(path)]
    return [path]


def load_model(path: str | Path, *, fmt: str | None = None) -> ir.Model:
    """The IR of any supported model file, with default import options."""
    return import_model(path, fmt=fmt).model


def input_specs(model: ir.Model) -> list[TensorSpec]:
    """The graph inputs a caller must feed (initializers listed as inputs are excluded)."""
    specs = []
    for value in model.graph.inputs:
        if value.is_initializer():
            continue
        if value.dtype is None:
            raise BadInputError(f"model: input '{value.name}' has no element type")
        specs.append(TensorSpec(value.name, value_shape(value), np.dtype(value.dtype.numpy())))
    return specs


def value_shape(value: ir.Value) -> tuple[int | str | None, ...]:
    """A graph value's shape: ints for fixed dims, the symbol's name for named ones, None for unnamed."""
    return tuple(dim if isinstance(dim, int) else (str(dim) if dim.value else None) for dim in value.shape or ())


def file_input_specs(path: str | Path) -> list[TensorSpec]:
    """Input specs of an `.onnx` file, read without loading external weights."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
        model = ir.serde.deserialize_model(proto)
    except (OSError, DecodeError, ValueError, ir.serde.SerdeError) as exc:
        raise BadInputError(f"model: cannot read {path} as ONNX: {cause_line(exc)}") from exc
    return input_specs(model)
