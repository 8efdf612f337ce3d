"""Two compiles to one `-o` at once: the second fails with one line naming the first (never both exit 0 with one
artifact silently gone), and a lock left by a killed run never blocks the next."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import onnx.parser
import pytest

#: Compiles `model` to `out` with --force through the API and stops at "writing" (the lock held, the artifact
#: not yet in place) until `go` exists; `ready` says it got there.
_HOLDER = """
import pathlib, sys, time
import edgec
model, out, ready, go = map(pathlib.Path, sys.argv[1:5])
def progress(message):
    if message.startswith("writing"):
        ready.write_text("")
        while not go.exists():
            time.sleep(0.05)
edgec.compile(model, "cpu-x86-fp32", output_dir=out, force=True, progress=progress, step_timeout_s=None)
"""


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save_model(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x) => (float[1, 4] y) { y = Relu(x) }"""), path)
    return path


def _edgec(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgec", *map(str, args)], capture_output=True, text=True, timeout=300)


def _hold(model: Path, out: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    """Start a compile that holds `out`; return it once it does, with the file that lets it go on."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, model, out, ready, go], stderr=subprocess.PIPE, text=True)
    while not ready.exists():
        assert holder.poll() is None, holder.stderr.read()
        time.sleep(0.05)
    return holder, go


def test_a_second_compile_to_the_same_output_fails_naming_the_first(model, tmp_path) -> None:
    out = tmp_path / "art"
    assert _edgec("compile", model, "-t", "cpu-x86-fp32", "-o", out).returncode == 0
    holder, go = _hold(model, out, tmp_path)
    second = _edgec("compile", model, "-t", "cpu-x86-fp32", "-o", out, "--force")
    go.write_text("")
    assert holder.wait(timeout=300) == 0, holder.stderr.read()
    assert second.returncode == 2, second.stderr
    line = second.stderr.strip().splitlines()[-1]
    assert line.startswith("edgec: error: output directory") and f"pid {holder.pid}" in line, line
    assert "Traceback" not in second.stderr
    assert json.loads((out / "manifest.json").read_text())["artifact"]["file"] == "model.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "go", "m.onnx", "ready"]  # no lock, no debris


def test_a_lock_left_by_a_killed_run_does_not_block(model, tmp_path) -> None:
    out = tmp_path / "art"
    holder, _ = _hold(model, out, tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    assert (tmp_path / ".art.edgec-lock").exists()  # what the killed run left
    result = _edgec("compile", model, "-t", "cpu-x86-fp32", "-o", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "m.onnx", "ready"]


def test_a_file_of_the_lock_name_that_is_not_edgecs_is_left_alone(model, tmp_path) -> None:
    mine = tmp_path / ".art.edgec-lock"
    mine.write_text("the user's own notes")
    result = _edgec("compile", model, "-t", "cpu-x86-fp32", "-o", tmp_path / "art")
    assert result.returncode == 2 and "is not edgec's" in result.stderr.strip().splitlines()[-1]
    assert mine.read_text() == "the user's own notes" and not (tmp_path / "art").exists()
