"""The Python API's `compile` and `bench` bound each step as the CLI does: `step_timeout_s` per call, else
`EDGEC_STEP_TIMEOUT_S`; None turns the limit off. A step past it raises `StepTimeoutError` and leaves nothing
behind; one stuck in native code ends the process with exit 2 and one line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import onnx
import onnx.parser
import pytest

import edgec
from edgec import compiler
from edgec.errors import BadInputError, StepTimeoutError

_LOOP = """g (float[1] x) => (float[1] y) {
    trips = Constant <value = int64 {1000000000000000}> ()
    cond = Constant <value = bool {1}> ()
    y = Loop(trips, cond, x) <body = body (int64 i, bool c, float[1] v) => (bool c_out, float[1] v_out) {
        c_out = Identity(c)
        v_out = Add(v, v)
    }>
}"""


def _model(tmp_path: Path, graph: str, name: str) -> Path:
    path = tmp_path / name
    onnx.save_model(onnx.parser.parse_model(f'<ir_version: 8, opset_import: ["" : 17]>\n{graph}'), path)
    return path


@pytest.fixture
def relu(tmp_path: Path) -> Path:
    return _model(tmp_path, "g (float[1, 4] x) => (float[1, 4] y) { y = Relu(x) }", "relu.onnx")


@pytest.fixture
def slow_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading takes about 2 s, in Python (where a step can be stopped)."""
    real = compiler.import_model

    def slow(*args, **kwargs):
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            time.sleep(0.02)
        return real(*args, **kwargs)

    monkeypatch.setattr(compiler, "import_model", slow)


def test_compile_stops_a_step_past_its_limit_and_leaves_nothing(relu, tmp_path, slow_import) -> None:
    out = tmp_path / "out"
    with pytest.raises(StepTimeoutError, match="step 'loading .*relu.onnx' ran longer than 0.5 s"):
        edgec.compile(relu, "cpu-x86-fp32", output_dir=out, step_timeout_s=0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relu.onnx"]  # no artifact, staging or lock


def test_the_environment_limit_applies_by_default_and_none_disables_it(relu, tmp_path, slow_import,
                                                                       monkeypatch) -> None:
    monkeypatch.setenv("EDGEC_STEP_TIMEOUT_S", "1")
    with pytest.raises(StepTimeoutError, match="than 1 s"):
        edgec.compile(relu, "cpu-x86-fp32", output_dir=tmp_path / "out")
    result = edgec.compile(relu, "cpu-x86-fp32", output_dir=tmp_path / "out", step_timeout_s=None)
    assert result.model_path.is_file()
    assert edgec.compile(relu, "cpu-x86-fp32", output_dir=tmp_path / "out2", step_timeout_s=60).model_path.is_file()


def test_bench_stops_a_model_that_never_finishes_and_its_worker(tmp_path) -> None:
    loop = _model(tmp_path, _LOOP, "loop.onnx")
    with pytest.raises(StepTimeoutError, match="step .round 1/1. ran longer than 20 s"):
        edgec.bench(loop, runs=1, warmup=0, threads=1, step_timeout_s=20)


def test_a_step_stuck_in_native_code_ends_the_process_with_one_line(tmp_path) -> None:
    """compile --verify runs the model in this process; ONNX Runtime's Loop never returns to Python."""
    loop = _model(tmp_path, _LOOP, "loop.onnx")
    script = ("import sys, edgec\n"
              "edgec.compile(sys.argv[1], 'cpu-x86-fp32', verify=True, output_dir=sys.argv[2], step_timeout_s=15)\n")
    result = subprocess.run([sys.executable, "-c", script, loop, tmp_path / "out"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("edgec: error: step 'optimizing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop.onnx"]  # no artifact, and its lock file removed


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), "soon", True])
def test_a_limit_must_be_positive_seconds_or_none(relu, tmp_path, value) -> None:
    with pytest.raises(BadInputError, match="step_timeout_s"):
        edgec.compile(relu, "cpu-x86-fp32", output_dir=tmp_path / "out", step_timeout_s=value)
    with pytest.raises(BadInputError, match="step_timeout_s"):
        edgec.bench(relu, step_timeout_s=value)
