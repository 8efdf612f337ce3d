"""Artifact directories: the runtime file plus `manifest.json`, written atomically.

Everything is written into a temporary sibling directory which is renamed into place at the end,
so a crash or a bad input never leaves a half-written artifact where the user asked for one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from edgec.errors import BadInputError

__all__ = ["MANIFEST", "MANIFEST_SCHEMA", "sha256_file", "sha256_path", "size_on_disk", "versions", "write_artifact", "read_manifest", "utc_now",
           "write_text_atomic"]

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "edgec.manifest/1"
_VERSIONED = ("edgec", "numpy", "onnx", "onnxruntime", "onnx-ir", "onnxscript")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_path(*paths: str | Path) -> str:
    """sha256 of one file, or of several files / directories together (names and contents, in order;
    a directory's files sorted), e.g. an ONNX model with its external-data files."""
    if len(paths) == 1 and Path(paths[0]).is_file():
        return sha256_file(paths[0])
    digest = hashlib.sha256()
    for path in map(Path, paths):
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            name = file.name if file == path else str(file.relative_to(path))
            digest.update(name.encode() + b"\0" + bytes.fromhex(sha256_file(file)))
    return digest.hexdigest()


def size_on_disk(path: str | Path) -> int:
    """Bytes of a file, or of all files under a directory."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of Python and the packages that shape an artifact, for the manifest."""
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a file through a temp file in the same directory and an atomic rename."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    except OSError as exc:
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_artifact(
    output_dir: str | Path, fill: Callable[[Path], Mapping[str, Any]], *, force: bool = False
) -> dict[str, Any]:
    """Create `output_dir` atomically: `fill(tmp_dir)` writes the files and returns the manifest.

    Refuses an existing `output_dir` unless `force`; the old one is replaced only once the new one
    is complete.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not force:
        raise BadInputError(f"output directory {output_dir} already exists; pass --force to replace it")
    if output_dir.exists():
        _check_replaceable(output_dir)
    parent = output_dir.resolve().parent
    if not parent.is_dir():
        raise BadInputError(f"cannot write {output_dir}: parent directory {parent} does not exist")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=parent))
    except OSError as exc:
        raise BadInputError(f"cannot write {output_dir}: {exc.strerror or exc}") from exc
    try:
        manifest = dict(fill(staging))
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if output_dir.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=parent))
            try:
                os.replace(output_dir, retired / "old")
                try:
                    os.replace(staging, output_dir)
                except BaseException:
                    os.replace(retired / "old", output_dir)  # put the previous artifact back
                    raise
            finally:
                shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _check_replaceable(output_dir: Path) -> None:
    """`--force` replaces an earlier artifact, never a directory of the user's own (or the one we are in)."""
    if not (output_dir / MANIFEST).is_file():
        raise BadInputError(f"--force replaces only an earlier edgec artifact; {output_dir} has no {MANIFEST}")
    resolved = output_dir.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise BadInputError(f"cannot replace {output_dir}: it contains the current directory")


def read_manifest(artifact_dir: str | Path) -> dict[str, Any]:
    path = Path(artifact_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInputError(f"artifact: cannot read {path}: {exc}") from exc
    if not isinstance(manifest, dict) or not str(manifest.get("schema", "")).startswith("edgec.manifest/"):
        raise BadInputError(f"artifact: {path} is not an edgec manifest")
    return manifest
