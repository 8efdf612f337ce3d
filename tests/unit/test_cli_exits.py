"""Exit codes of `edgec.cli.main`: 2 for what the user or the machine caused, 3 for edgec's own bugs, 130 on
SIGINT and SIGTERM, and a quiet end when stdout's reader goes away."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys

import pytest

from edgec import cli


def _run(monkeypatch, capsys, action, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(cli, "_cmd_passes", action)
    code = cli.main([*args, "passes"])
    return code, capsys.readouterr().err


def _raise(exc: BaseException):
    def action(args):
        raise exc

    return action


def test_a_bug_is_exit_3_with_one_line_asking_for_a_report(monkeypatch, capsys) -> None:
    code, err = _run(monkeypatch, capsys, _raise(KeyError("target")))
    assert code == cli.EXIT_BUG == 3
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert "please report" in err and "KeyError" in err


def test_a_bug_shows_its_traceback_with_verbose(monkeypatch, capsys) -> None:
    code, err = _run(monkeypatch, capsys, _raise(ValueError("boom")), "--verbose")
    assert code == 3
    assert "Traceback" in err and "please report" in err


@pytest.mark.parametrize("exc, needle", [
    (MemoryError(), "out of memory"),
    (RecursionError("maximum recursion depth exceeded"), "nested too deeply"),
    (OSError(errno.ENOSPC, "No space left on device", "/tmp/x"), "No space left on device: /tmp/x"),
    (OSError(errno.ENAMETOOLONG, "File name too long", "a" * 300), "File name too long"),
    (UnicodeDecodeError("utf-8", b"\xf4", 0, 1, "invalid continuation byte"), "not valid UTF-8"),
    (type("Fail", (Exception,), {"__module__": "onnxruntime.capi.onnxruntime_pybind11_state"})("bad model"),
     "ONNX Runtime cannot process the model: bad model"),
], ids=["memory", "recursion", "enospc", "name-too-long", "undecodable-text", "runtime-refusal"])
def test_what_the_machine_or_input_size_causes_is_exit_2(monkeypatch, capsys, exc, needle) -> None:
    code, err = _run(monkeypatch, capsys, _raise(exc))
    assert code == 2
    assert err.startswith("edgec: error: ") and needle in err
    assert "Traceback" not in err


def test_sigterm_unwinds_like_ctrl_c(monkeypatch, capsys) -> None:
    cleaned = []

    def action(args):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)  # a point where a Python signal handler runs
        finally:
            cleaned.append(True)
        return 0

    previous = signal.getsignal(signal.SIGTERM)
    code, err = _run(monkeypatch, capsys, action)
    assert code == cli.EXIT_INTERRUPTED
    assert cleaned == [True]
    assert "terminated" in err
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.parametrize("args", [["passes"], ["targets", "--json"]])
def test_a_closed_pipe_ends_quietly(args) -> None:
    command = f"{sys.executable} -m edgec {' '.join(args)} | true"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
