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
from edgec.trust import framework_trust

__all__ = ["inside_artifact", "check_artifact", "check_source", "vet_baseline", "vet_framework"]


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


def vet_baseline(reference: Any, manifest: Mapping[str, Any] | None, artifact_dir: Path) -> None:
    """The manifest's float baseline may run: a file kept in the artifact was checked with it, and an ONNX
    source outside it must still have the sha256 recorded at compile time."""
    if reference is None or manifest is None or _kept(reference.path, artifact_dir):
        return
    check_source(reference.path, manifest["source"], model_files(reference.path))


def vet_framework(framework: Any, skipped: str | None, manifest: Mapping[str, Any] | None, artifact_dir: Path, *,
                  baseline_from: str | None, trust_source: bool) -> tuple[Any, str | None]:
    """The source to run in its own framework as trust and hashes allow (`edgec.trust.framework_trust`), and the
    warning when it is skipped."""
    if framework is None or manifest is None:
        return framework, skipped
    if not _kept(framework.path, artifact_dir):
        check_source(framework.path, manifest["source"], model_files(framework.path))
    return framework_trust(framework, manifest["source"], baseline_from=baseline_from, trust_source=trust_source)


def _kept(path: Path, artifact_dir: Path) -> bool:
    return path.resolve().is_relative_to(artifact_dir.resolve())
