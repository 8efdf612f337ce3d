"""Tests for edgec.artifact: atomic artifact directories, manifests and atomic text files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from edgec.artifact import (
    MANIFEST,
    MANIFEST_SCHEMA,
    read_manifest,
    sha256_file,
    versions,
    write_artifact,
    write_text_atomic,
)
from edgec.errors import BadInputError


def _manifest(content: str) -> dict[str, Any]:
    """The smallest manifest edgec recognises as its own, plus a marker of which run wrote it."""
    return {"schema": MANIFEST_SCHEMA, "content": content,
            "target": {"name": "t", "descriptor": {"runtime": "onnxruntime", "precision": "fp32"}}, "source": {"path": "in.onnx", "format": "onnx", "onnx": None},
            "artifact": {"file": "model.onnx", "precision": "fp32", "sha256": hashlib.sha256(content.encode()).hexdigest()}}


def _fill(content: str = "model bytes") -> Any:
    def fill(staging: Path) -> dict[str, Any]:
        assert staging.is_dir()
        (staging / "model.onnx").write_text(content)
        return _manifest(content)

    return fill


def _exploding_fill(staging: Path) -> dict[str, Any]:
    (staging / "model.onnx").write_text("half")
    raise RuntimeError("boom")


def test_write_artifact_creates_dir_and_manifest(tmp_path: Path) -> None:
    out = tmp_path / "art"
    manifest = write_artifact(out, _fill())
    assert manifest == {**_manifest("model bytes"), "files": {"model.onnx": sha256_file(out / "model.onnx")}}
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "model.onnx"]
    assert json.loads((out / MANIFEST).read_text()) == manifest
    assert read_manifest(out) == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no staging dir left


def test_failing_fill_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "art"
    with pytest.raises(RuntimeError, match="boom"):
        write_artifact(out, _exploding_fill)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_keyboard_interrupt_in_fill_leaves_nothing(tmp_path: Path) -> None:
    def interrupted(staging: Path) -> dict[str, Any]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_artifact(tmp_path / "art", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_unserializable_manifest_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_artifact(tmp_path / "art", lambda staging: {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_existing_dir_refused_without_force(tmp_path: Path) -> None:
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(BadInputError, match="already exists.*--force"):
        write_artifact(out, _fill())
    assert (out / "keep.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_force_replaces(tmp_path: Path) -> None:
    out = tmp_path / "art"
    write_artifact(out, _fill("v1"))
    (out / "stale.txt").write_text("from v1")
    manifest = write_artifact(out, _fill("v2"), force=True)
    assert manifest["content"] == "v2"
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "model.onnx"]
    assert (out / "model.onnx").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # old copy and staging removed


def test_force_with_failing_fill_keeps_old_artifact(tmp_path: Path) -> None:
    out = tmp_path / "art"
    write_artifact(out, _fill("v1"))
    with pytest.raises(RuntimeError):
        write_artifact(out, _exploding_fill, force=True)
    assert (out / "model.onnx").read_text() == "v1"
    assert read_manifest(out)["content"] == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_force_on_missing_dir_just_creates(tmp_path: Path) -> None:
    write_artifact(tmp_path / "art", _fill(), force=True)
    assert (tmp_path / "art" / MANIFEST).is_file()


def test_missing_parent_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="parent directory"):
        write_artifact(tmp_path / "no" / "such" / "art", _fill())
    assert list(tmp_path.iterdir()) == []


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="cannot read"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(BadInputError, match="cannot read"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"schema": "something/1"}))
    with pytest.raises(BadInputError, match="not an edgec manifest"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps([1, 2]))
    with pytest.raises(BadInputError, match="not an edgec manifest"):
        read_manifest(tmp_path)


def test_write_text_atomic(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_text_atomic(path, "first")
    assert path.read_text() == "first"
    write_text_atomic(path, "second ✓")
    assert path.read_text(encoding="utf-8") == "second ✓"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temp files behind


def test_write_text_atomic_failure_keeps_old_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_text_atomic(path, "old")
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "lone surrogate \udc80")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_write_text_atomic_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="cannot write"):
        write_text_atomic(tmp_path / "missing" / "r.json", "x")


def test_sha256_file_and_versions(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000  # more than one 1 MiB read block
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    found = versions()
    assert "python" in found and "numpy" in found and "onnx" in found


def test_force_never_replaces_a_directory_that_is_not_an_artifact(tmp_path: Path) -> None:
    """A user's own folder (their source model, their notes) is not edgec's to delete."""
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "model.onnx").write_text("the user's source")
    with pytest.raises(BadInputError, match="only an earlier edgec artifact"):
        write_artifact(mine, _fill(), force=True)
    assert (mine / "model.onnx").read_text() == "the user's source"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]


def test_force_refuses_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "art"
    write_artifact(out, _fill("v1"))
    monkeypatch.chdir(out)
    with pytest.raises(BadInputError, match="contains the current directory"):
        write_artifact(Path("."), _fill("v2"), force=True)
    assert read_manifest(out)["content"] == "v1"
