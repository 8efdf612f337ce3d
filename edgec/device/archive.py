"""Artifact archives: a deterministic tar for upload, and an unpacker that refuses anything unsafe.

The tar is byte-identical for identical files (sorted names, zero times and owners), so its sha256
names the content and a second upload of the same artifact is skipped.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from edgec.errors import BadInputError

__all__ = ["pack", "unpack", "UnsafeArchiveError"]


class UnsafeArchiveError(BadInputError):
    """An archive member escapes its directory, is a link or device, or exceeds a size cap."""


def pack(paths: dict[str, Path]) -> bytes:
    """A tar of `{name in archive: file or directory}`, identical bytes for identical contents."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in sorted(paths.items()):
            files = [(name, path)] if path.is_file() else sorted(
                (f"{name}/{p.relative_to(path).as_posix()}", p) for p in path.rglob("*") if p.is_file())
            for arcname, file in files:
                info = tarfile.TarInfo(arcname)
                info.size = file.stat().st_size
                info.mode = 0o644
                with open(file, "rb") as handle:
                    tar.addfile(info, handle)
    return buffer.getvalue()


def _checked_name(name: str) -> PurePosixPath:
    """A member name as a relative path that stays inside the unpack directory."""
    if not name or name.startswith(("/", "\\")) or name[1:2] == ":":
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
    path = PurePosixPath(name)
    if ".." in path.parts or "\\" in name:
        raise UnsafeArchiveError(f"archive member {name!r} leaves the archive's directory")
    return path


def unpack(archive: Path, dest: Path, *, max_file_bytes: int, max_total_bytes: int) -> None:
    """Unpack a tar or zip into `dest` (which must not exist): regular files and directories only.

    Everything is written to a sibling staging directory and renamed into place at the end, so a
    refused or interrupted unpack never leaves a partial `dest`.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpack-", dir=dest.parent))
    try:
        if zipfile.is_zipfile(archive):
            _unpack_zip(archive, staging, max_file_bytes, max_total_bytes)
        elif tarfile.is_tarfile(archive):
            _unpack_tar(archive, staging, max_file_bytes, max_total_bytes)
        else:
            raise UnsafeArchiveError("upload is neither a tar nor a zip archive")
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _budget(name: str, size: int, total: int, max_file: int, max_total: int) -> int:
    if size > max_file:
        raise UnsafeArchiveError(f"archive member {name!r} is {size} bytes, over the {max_file}-byte cap per file")
    if total + size > max_total:
        raise UnsafeArchiveError(f"archive unpacks to more than its {max_total}-byte cap")
    return total + size


def _unpack_tar(archive: Path, staging: Path, max_file: int, max_total: int) -> None:
    total = 0
    with tarfile.open(archive, mode="r:*") as tar:
        for member in tar:
            path = _checked_name(member.name)
            if member.isdir():
                (staging / path).mkdir(parents=True, exist_ok=True)
                continue
            if not member.isreg():
                raise UnsafeArchiveError(f"archive member {member.name!r} is a link or special file")
            total = _budget(member.name, member.size, total, max_file, max_total)
            _copy(tar.extractfile(member), staging / path, member.size)


def _unpack_zip(archive: Path, staging: Path, max_file: int, max_total: int) -> None:
    total = 0
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = _checked_name(info.filename)
            kind = (info.external_attr >> 16) & 0o170000
            if info.is_dir():
                (staging / path).mkdir(parents=True, exist_ok=True)
                continue
            if kind not in (0, 0o100000):
                raise UnsafeArchiveError(f"archive member {info.filename!r} is a link or special file")
            total = _budget(info.filename, info.file_size, total, max_file, max_total)
            with zf.open(info) as source:
                _copy(source, staging / path, info.file_size)


def _copy(source: io.BufferedIOBase | None, target: Path, size: int) -> None:
    """Copy the member's declared `size` bytes, no more (the caps were checked against it)."""
    if source is None:
        raise UnsafeArchiveError(f"archive member {target.name!r} has no data")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise UnsafeArchiveError(f"archive member {target.name!r} appears twice")
    with open(target, "wb") as handle:
        handle.write(source.read(size))
