"""The agent's artifact cache: sha256 checked, LRU eviction to the cap, pinned entries kept, leftovers ignored."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edgec.device.archive import pack
from edgec.device.cache import ArtifactCache


def _upload(cache: ArtifactCache, tmp: Path, name: str, size: int) -> str:
    source = tmp / name
    source.write_bytes(os.urandom(size))
    blob = pack({name: source})
    upload = cache.new_upload()
    upload.write_bytes(blob)
    sha = hashlib.sha256(blob).hexdigest()
    cache.add(sha, upload)
    return sha


def test_oldest_is_evicted_never_a_pinned_one(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", max_bytes=2500, max_file_bytes=10_000)
    first = _upload(cache, tmp_path, "a", 1000)
    cache.pin(first)
    os.utime(cache.entries / first, (1, 1))
    second = _upload(cache, tmp_path, "b", 1000)
    os.utime(cache.entries / second, (2, 2))
    third = _upload(cache, tmp_path, "c", 1000)
    here = {p.name for p in cache.entries.iterdir()}  # listing, not path(): that marks an entry as used
    assert first in here, "a pinned entry was evicted"
    assert second not in here and third in here
    cache.unpin(first)
    _upload(cache, tmp_path, "d", 1000)
    assert first not in {p.name for p in cache.entries.iterdir()}


def test_a_wrong_sha256_stores_nothing(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", max_bytes=10_000, max_file_bytes=10_000)
    upload = cache.new_upload()
    upload.write_bytes(pack({"a": Path(__file__)}))
    with pytest.raises(ValueError, match="sha256"):
        cache.add("0" * 64, upload)
    assert list(cache.entries.iterdir()) == [] and not upload.exists()


def test_leftovers_of_a_crash_are_cleared_at_start(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", max_bytes=10_000, max_file_bytes=10_000)
    (cache.staging / "1-2.part").write_bytes(b"half")
    (cache.entries / f".{'a' * 64}.unpack-x").mkdir()
    again = ArtifactCache(tmp_path / "cache", max_bytes=10_000, max_file_bytes=10_000)
    assert list(again.staging.iterdir()) == [] and list(again.entries.iterdir()) == []
