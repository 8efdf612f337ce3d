"""An artifact's files are what its manifest says they are, checked before anything is loaded.

`compile` records the sha256 of the model, of every other file it writes into the artifact and of
the source model. `bench` checks them first: a file changed since (zeroed weights, a swapped
source) or a manifest naming a file outside the artifact is refused with exit 2, naming the file,
instead of being measured as if it were the compiled model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from edgec.artifact import MANIFEST, sha256_path
from edgec.errors import BadInputError
from edgec.frontends import model_files
from edgec.trust import trusted_baseline

__all__ = ["inside_artifact", "check_artifact", "check_source", "vet_baseline"]


def inside_artifact(artifact_dir: Path, name: Any, what: str) -> Path:
    """`artifact_dir / name` for a manifest entry that names a plain relative path inside the artifact."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        raise BadInputError(f"artifact: {artifact_dir / MANIFEST} names {what} {name!r}, not a file name")
    parts = PurePosixPath(name).parts
    if PurePosixPath(name).is_absolute() or ".." in parts:
        raise BadInputError(f"artifact: {artifact_dir / MANIFEST} names {what} {name!r} outside the artifact;"
                            " refusing to load it")
    path = artifact_dir / name
    if path.is_symlink() or not path.resolve().is_relative_to(artifact_dir.resolve()):
        raise BadInputError(f"artifact: {path} leads outside the artifact; refusing to load it")
    return path


def _check_hash(path: Path, expected: Any, what: str) -> None:
    if not isinstance(expected, str):
        raise BadInputError(f"artifact: the manifest records no sha256 for {what} {path}; compile it again")
    if not path.exists():
        raise BadInputError(f"artifact: {what} {path} named in the manifest is missing; compile it again")
    if sha256_path(path) != expected:
        raise BadInputError(f"artifact: {what} {path} does not match the sha256 in its manifest (changed since"
                            " compile); compile it again")


def check_artifact(artifact_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Check the model file and every recorded file of an artifact against the manifest; return the model path."""
    artifact_dir = Path(artifact_dir)
    record = manifest.get("artifact")
    if not isinstance(record, Mapping):
        raise BadInputError(f"artifact: {artifact_dir / MANIFEST} has no 'artifact' table; compile it again")
    model = inside_artifact(artifact_dir, record.get("file"), "the model file")
    _check_hash(model, record.get("sha256"), "model file")
    files = manifest.get("files") or {}
    if not isinstance(files, Mapping):
        raise BadInputError(f"artifact: {artifact_dir / MANIFEST}: 'files' must map names to sha256; compile it again")
    for name, digest in files.items():
        _check_hash(inside_artifact(artifact_dir, name, "a file"), digest, "file")
    return model


def check_source(path: Path, source: Mapping[str, Any], files: list[Path]) -> None:
    """The source model (`files`: it with its external data) still has the sha256 recorded at compile time."""
    expected = source.get("sha256")
    if not isinstance(expected, str):
        raise BadInputError(f"baseline: the manifest records no sha256 for the source {path}; pass --baseline MODEL.onnx")
    if sha256_path(*files) != expected:
        raise BadInputError(f"baseline: the source model {path} changed since compile (sha256 differs from the"
                            " manifest); compile again, or pass --baseline MODEL.onnx")


def vet_baseline(reference: Any, manifest: Mapping[str, Any] | None, artifact_dir: Path, *, explicit: bool,
                 baseline_from: str | None, trust_source: bool) -> Any:
    """The bench baseline as it may run: the manifest's source only when its sha256 still matches, and a
    code-bearing one only with trust (`edgec.trust.trusted_baseline`). An explicit `--baseline` is the user's own."""
    if reference is None or explicit or manifest is None:
        return reference
    source = manifest["source"]
    kept = inside_artifact(artifact_dir, source["onnx"], "the imported float ONNX") if source.get("onnx") else None
    if kept is not None and reference.path == kept:
        return reference
    check_source(reference.path, source, model_files(reference.path))
    return trusted_baseline(reference, source, kept, baseline_from=baseline_from, trust_source=trust_source)
