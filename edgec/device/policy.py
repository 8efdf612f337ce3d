"""What the agent agrees to run: data formats only, everything inside the uploaded directory."""

from __future__ import annotations

from pathlib import Path

from edgec.artifact import MANIFEST, read_manifest
from edgec.errors import BadInputError

__all__ = ["bench_target", "RUNNABLE_SUFFIXES", "DATA_SUFFIXES"]

#: Model files the agent loads: formats that are data, never code.
RUNNABLE_SUFFIXES = (".onnx", ".tflite")
#: Sample and label files the agent loads (numpy, with allow_pickle=False).
DATA_SUFFIXES = (".npz", ".npy")


def _inside(root: Path, name: str | None, what: str) -> Path:
    if not name:
        raise BadInputError(f"the artifact names no {what}")
    path = (root / name).resolve()
    if root.resolve() not in path.parents:
        raise BadInputError(f"the artifact's {what} {name!r} is outside the uploaded directory")
    return path


def bench_target(entry: Path, *, has_baseline: bool) -> Path:
    """The path to pass to `edgec bench` for an unpacked upload, after refusing what the agent does not load.

    A compile output dir runs when its model is ONNX or `.tflite` and its float baseline is the
    artifact's own `source.onnx` (or the client sent one); a plain upload runs its single `.onnx` or `.tflite` file.
    """
    if not (entry / MANIFEST).is_file():
        models = sorted(p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in RUNNABLE_SUFFIXES)
        if len(models) != 1:
            raise BadInputError(f"an upload without a manifest must hold exactly one model file ({', '.join(RUNNABLE_SUFFIXES)})")
        return models[0]
    manifest = read_manifest(entry)
    model = _inside(entry, manifest.get("artifact", {}).get("file"), "model file")
    if model.suffix.lower() not in RUNNABLE_SUFFIXES:
        raise BadInputError(f"the agent loads only {', '.join(RUNNABLE_SUFFIXES)} models, not {model.name}")
    if not has_baseline:
        name = manifest.get("source", {}).get("onnx")
        if not name:
            raise BadInputError("the artifact keeps no source.onnx (compiled --slim, or by an older edgec) and the"
                                " agent loads nothing outside it: send a float ONNX baseline (--baseline MODEL.onnx)")
        baseline = _inside(entry, name, "float ONNX source")
        if not baseline.is_file():
            raise BadInputError(f"the artifact's float ONNX source {name!r} is not in the upload")
    return entry
