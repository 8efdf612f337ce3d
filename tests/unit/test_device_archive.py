"""Unpacking uploads: tar and zip members that escape, link or exceed caps are refused, nothing left behind."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from edgec.device.archive import UnsafeArchiveError, pack, unpack


def _zip(path: Path, name: str, data: bytes = b"x", mode: int = stat.S_IFREG | 0o644) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo(name)
        info.external_attr = mode << 16
        zf.writestr(info, data)
    return path


@pytest.mark.parametrize("name,mode", [("../x", stat.S_IFREG | 0o644), ("/x", stat.S_IFREG | 0o644),
                                       ("C:/x", stat.S_IFREG | 0o644), ("link", stat.S_IFLNK | 0o777)])
def test_zip_members_that_escape_or_link_are_refused(tmp_path: Path, name: str, mode: int) -> None:
    with pytest.raises(UnsafeArchiveError):
        unpack(_zip(tmp_path / "a.zip", name, mode=mode), tmp_path / "out", max_file_bytes=100, max_total_bytes=100)
    assert [p.name for p in tmp_path.iterdir()] == ["a.zip"]


def test_caps_per_file_and_in_total(tmp_path: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="per file"):
        unpack(_zip(tmp_path / "a.zip", "big", b"x" * 200), tmp_path / "out", max_file_bytes=100, max_total_bytes=1000)
    (tmp_path / "f").write_bytes(b"x" * 60)
    (tmp_path / "g").write_bytes(b"x" * 60)
    archive = tmp_path / "a.tar"
    archive.write_bytes(pack({"f": tmp_path / "f", "g": tmp_path / "g"}))
    with pytest.raises(UnsafeArchiveError, match="cap"):
        unpack(archive, tmp_path / "out", max_file_bytes=100, max_total_bytes=100)
    assert not (tmp_path / "out").exists()


def test_pack_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "m.onnx").write_bytes(b"model")
    assert pack({"d": tmp_path / "d"}) == pack({"d": tmp_path / "d"})
    (tmp_path / "a.tar").write_bytes(pack({"d": tmp_path / "d"}))
    unpack(tmp_path / "a.tar", tmp_path / "out", max_file_bytes=100, max_total_bytes=100)
    assert (tmp_path / "out" / "d" / "m.onnx").read_bytes() == b"model"
