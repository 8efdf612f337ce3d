"""The agent's artifact cache: unpacked uploads keyed by sha256, size-capped, least recently used out first.

An entry appears only by renaming a complete staged directory into place, so a crash mid-upload
leaves nothing an agent would use; entries pinned by a queued or running job are never evicted.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path

from edgec.artifact import size_on_disk
from edgec.device.archive import unpack

__all__ = ["ArtifactCache", "is_sha256"]

_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(text: str) -> bool:
    return bool(_SHA256.fullmatch(text))


class ArtifactCache:
    """Unpacked artifacts under `root/entries/<sha256>`; uploads stream into `root/staging` first."""

    def __init__(self, root: Path, *, max_bytes: int, max_file_bytes: int) -> None:
        self.root = root
        self.entries = root / "entries"
        self.staging = root / "staging"
        self.max_bytes = max_bytes
        self.max_file_bytes = max_file_bytes
        self._pins: Counter[str] = Counter()
        self.entries.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.staging, ignore_errors=True)  # leftovers of an agent that died mid-upload
        self.staging.mkdir(parents=True)
        for leftover in self.entries.glob(".*"):  # an unpack interrupted before its rename
            shutil.rmtree(leftover, ignore_errors=True)

    def path(self, sha: str) -> Path | None:
        """The entry's directory (marked as just used), or None when it is not here."""
        entry = self.entries / sha
        if not entry.is_dir():
            return None
        os.utime(entry)
        return entry

    def new_upload(self) -> Path:
        """A fresh staging file to stream an upload into."""
        return self.staging / f"{time.monotonic_ns()}-{os.getpid()}.part"

    def add(self, sha: str, upload: Path) -> Path:
        """Verify the upload's sha256, unpack it into place, evict down to the cap; the upload file is removed."""
        try:
            digest = hashlib.sha256()
            with open(upload, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != sha:
                raise ValueError(f"upload's sha256 is {digest.hexdigest()}, not {sha}")
            entry = self.entries / sha
            if not entry.is_dir():
                unpack(upload, entry, max_file_bytes=self.max_file_bytes, max_total_bytes=self.max_bytes)
        finally:
            upload.unlink(missing_ok=True)
        self.evict(keep=sha)
        return entry

    def pin(self, sha: str) -> None:
        self._pins[sha] += 1

    def unpin(self, sha: str) -> None:
        self._pins[sha] -= 1
        if self._pins[sha] <= 0:
            del self._pins[sha]

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove least recently used entries until the cache fits its cap; never a pinned one or `keep`."""
        entries = sorted((p for p in self.entries.iterdir() if is_sha256(p.name)), key=lambda p: p.stat().st_mtime)
        sizes = {p.name: size_on_disk(p) for p in entries}
        total = sum(sizes.values())
        evicted = []
        for entry in entries:
            if total <= self.max_bytes:
                break
            if entry.name == keep or self._pins[entry.name] > 0:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            total -= sizes[entry.name]
            evicted.append(entry.name)
        return evicted
