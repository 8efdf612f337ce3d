"""What `write_artifact` and `write_text_atomic` may replace or delete: only edgec's own artifacts and debris,
never a directory that appeared meanwhile, a run's own input, a device, a FIFO or a symlink."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgec import artifact
from edgec.artifact import MANIFEST, MANIFEST_SCHEMA, check_writable, clean_stale, read_manifest, write_artifact, write_text_atomic
from edgec.errors import BadInputError


def _fill(content: str = "v1", during: Any = None) -> Any:
    def fill(staging: Path) -> dict[str, Any]:
        (staging / "model.onnx").write_text(content)
        if during:
            during()
        return {"schema": MANIFEST_SCHEMA, "content": content,
                "target": {"name": "t", "descriptor": {"runtime": "onnxruntime", "precision": "fp32"}}, "source": {"path": "in.onnx", "format": "onnx", "onnx": None},
                "artifact": {"file": "model.onnx", "precision": "fp32", "sha256": hashlib.sha256(content.encode()).hexdigest()}}

    return fill


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_force_needs_an_edgec_manifest_not_any_manifest_json(tmp_path) -> None:
    webapp = tmp_path / "webapp"
    (webapp / "src").mkdir(parents=True)
    (webapp / "src" / "index.js").write_text("app")
    (webapp / MANIFEST).write_text(json.dumps({"name": "webapp", "start_url": "/"}))
    with pytest.raises(BadInputError, match="only an earlier edgec artifact"):
        write_artifact(webapp, _fill(), force=True)
    assert (webapp / "src" / "index.js").read_text() == "app"
    (webapp / MANIFEST).write_text(json.dumps({"schema": MANIFEST_SCHEMA}))  # the schema alone is not enough
    with pytest.raises(BadInputError, match="only an earlier edgec artifact"):
        write_artifact(webapp, _fill(), force=True)
    assert (webapp / "src" / "index.js").read_text() == "app"


def test_a_directory_created_at_the_output_meanwhile_is_never_replaced(tmp_path) -> None:
    out = tmp_path / "art"
    with pytest.raises(BadInputError, match="appeared while compiling"):
        write_artifact(out, _fill(during=out.mkdir))  # empty: a plain rename would replace it
    assert out.is_dir() and list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_two_compiles_to_one_output_never_lose_an_artifact_silently(tmp_path) -> None:
    out = tmp_path / "art"
    with pytest.raises(BadInputError, match="appeared while compiling"):
        write_artifact(out, _fill("first", during=lambda: write_artifact(out, _fill("second"))))
    assert read_manifest(out)["content"] == "second"


def test_force_swaps_so_the_output_is_never_missing(tmp_path, monkeypatch) -> None:
    out = tmp_path / "art"
    write_artifact(out, _fill("v1"))
    seen = []
    real = artifact._rename2

    def watch(source, target, flags):
        done = real(source, target, flags)
        seen.append((flags, out.is_dir()))
        return done

    monkeypatch.setattr(artifact, "_rename2", watch)
    write_artifact(out, _fill("v2"), force=True)
    assert read_manifest(out)["content"] == "v2"
    assert seen and all(present for _, present in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_a_replace_killed_between_its_renames_is_recovered(tmp_path) -> None:
    """Where the system has no atomic exchange, the old artifact waits in `.art.old-<pid>-*`; the next run puts it back."""
    out = tmp_path / "art"
    write_artifact(out, _fill("v1"))
    retired = tmp_path / f".art.old-{_dead_pid()}-abc"
    retired.mkdir()
    out.rename(retired / "old")
    with pytest.raises(BadInputError, match="already exists"):
        write_artifact(out, _fill("v2"))
    assert read_manifest(out)["content"] == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_debris_of_dead_runs_is_cleaned_and_nothing_else(tmp_path) -> None:
    dead, alive = tmp_path / f".art.tmp-{_dead_pid()}-x1", tmp_path / f".art.tmp-{os.getppid()}-x2"
    foreign = tmp_path / ".art.tmp-notapid"
    for path in (dead, alive, foreign):
        path.mkdir()
        (path / "model.onnx").write_text("partial")
    write_artifact(tmp_path / "art", _fill())
    assert not dead.exists() and alive.is_dir() and foreign.is_dir()
    workdir, unnamed = tmp_path / f"edgec-{_dead_pid()}-abc", tmp_path / f"edgec-{_dead_pid()}"
    workdir.mkdir()
    unnamed.mkdir()  # a name edgec's own pattern (prefix, pid, dash) does not fully match
    clean_stale(tmp_path, "edgec-")
    assert not workdir.exists() and unnamed.is_dir()


def test_force_never_deletes_the_runs_own_input(tmp_path) -> None:
    out = tmp_path / "art"
    write_artifact(out, _fill("v1"))
    model = out / "input.onnx"
    model.write_text("the user's model")
    with pytest.raises(BadInputError, match="holds this run's input"):
        write_artifact(out, _fill("v2"), force=True, inputs=[model])
    assert model.read_text() == "the user's model"


def test_special_files_are_written_in_place_or_refused(tmp_path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(BadInputError, match="cannot write"):  # no reader: an error, not a hang
        write_text_atomic(fifo, "x")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    write_text_atomic(os.devnull, "x")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_text_atomic(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    with pytest.raises(BadInputError, match="is a directory"):
        write_text_atomic(tmp_path, "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "pipe", "real.json"]


def test_output_problems_are_found_before_the_work(tmp_path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        check_writable(tmp_path / "missing" / "r.json", "--json")
    with pytest.raises(BadInputError, match="is a directory"):
        check_writable(tmp_path, "--json")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(BadInputError, match="dangling symlink"):
        artifact.check_output_dir(dangling, force=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_directory_is_found_before_the_work(tmp_path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(BadInputError, match="not writable"):
        check_writable(locked / "r.json", "--json")


def test_artifacts_and_reports_follow_the_umask(tmp_path) -> None:
    previous = os.umask(0o022)
    try:
        write_artifact(tmp_path / "art", _fill())
        write_text_atomic(tmp_path / "r.json", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "art").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "art" / MANIFEST).stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
