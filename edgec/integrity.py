"""An artifact's files are what its manifest says they are, checked before anything is loaded.

`compile` records the sha256 of the model, of every other file it writes into the artifact (the
float `source.onnx` among them) and of the source model. `bench` checks them first: a file changed
since (zeroed weights, a swapped source), a manifest naming a file outside the artifact, or a
symlink leading out of it is refused with exit 2, naming the file, instead of being measured as if
it were the compiled model. A file outside the artifact is loaded only when the user names it
(`--baseline`, `--source`), and a named source must still be the file that was compiled.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from edgec.artifact import MANIFEST, sha256_path
from edgec.errors import BadInputError
from edgec.frontends import model_files
from edgec.trust import framework_trust

__all__ = ["inside_artifact", "kept_file", "check_artifact", "vet_framework"]


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


def kept_file(artifact_dir: Path, manifest: Mapping[str, Any], name: Any, what: str) -> Path:
    """A file the artifact keeps (inside it, its sha256 in the manifest, so `check_artifact` checked it)."""
    path = inside_artifact(artifact_dir, name, what)
    files = manifest.get("files")
    if not isinstance(files, Mapping) or name not in files:
        raise BadInputError(f"artifact: {artifact_dir / MANIFEST} names {what} {name!r} but records no sha256 for it;"
                            " compile it again")
    return path


def _refuse_links_out(artifact_dir: Path) -> None:
    """No symlink in the artifact may lead out of it: a runtime would follow it (an external-data file
    named by a model, say) to whatever it points at."""
    root = artifact_dir.resolve()
    for folder, dirs, files in os.walk(artifact_dir):
        for name in (*dirs, *files):
            path = Path(folder) / name
            if path.is_symlink() and not _resolves_under(path, root):
                raise BadInputError(f"artifact: {path} is a symlink leading outside the artifact; refusing to load it")


def _resolves_under(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a symlink loop leads nowhere a runtime could read
        return False


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
    _refuse_links_out(artifact_dir)
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


def _check_source(path: Path, source: Mapping[str, Any], files: list[Path]) -> None:
    """The source model (`files`: it with its external data) still has the sha256 recorded at compile time."""
    expected = source.get("sha256")
    if not isinstance(expected, str):
        raise BadInputError(f"--source: the manifest records no sha256 for the source, so {path} cannot be checked"
                            " against it; compile again")
    if sha256_path(*files) != expected:
        raise BadInputError(f"--source: {path} is not the model this artifact was compiled from (its sha256 differs"
                            " from the manifest's); name the file that was compiled, or compile again")


def vet_framework(framework: Any, skipped: str | None, manifest: Mapping[str, Any] | None, *, named: bool,
                  baseline_from: str | None, trust_source: bool) -> tuple[Any, str | None]:
    """The source to run in its own framework as trust and hashes allow (`edgec.trust.framework_trust`), and the
    warning when it is skipped. A copy kept in the artifact was checked with it; a file the user `named` must
    still have the sha256 recorded at compile time."""
    if framework is None or manifest is None:
        return framework, skipped
    if named:
        _check_source(framework.path, manifest["source"], model_files(framework.path))
    return framework_trust(framework, manifest["source"], baseline_from=baseline_from, trust_source=trust_source)
