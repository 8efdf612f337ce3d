"""Bounded work: what a few crafted bytes declare (huge ranges, huge arrays, endless loops, FIFOs) ends in exit 2
with one line, before the machine's memory or patience runs out."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest

from edgec.passes.cleanup import InferShapesPass, _fold_small_fills


def _model(tmp_path: Path, text: str, name: str = "m.onnx", opset: int = 17) -> Path:
    path = tmp_path / name
    onnx.save_model(onnx.parser.parse_model(f'<ir_version: 8, opset_import: ["" : {opset}]>\n{text}'), path)
    return path


def _fails(result, *needles: str) -> None:
    assert result.code == 2, (result.out, result.err)
    assert "Traceback" not in result.err and result.error_line.startswith("edgec: error: ")
    for needle in needles:
        assert needle in result.error_line, result.error_line


RANGE = """g (float[1] x) => (float[N] y) {{
    start = Constant <value = float {{0.0}}> ()
    limit = Constant <value = float {{{limit}}}> ()
    step = Constant <value = float {{1.0}}> ()
    r = Range(start, limit, step)
    y = Add(r, x)
}}"""


def test_a_large_range_is_neither_propagated_nor_folded(tmp_path) -> None:
    import onnx_ir as ir

    model = ir.serde.deserialize_model(onnx.load(_model(tmp_path, RANGE.format(limit="1e8"))))
    inference = InferShapesPass()
    inference(model)
    assert inference.data_prop is False  # data propagation would hold ~100 bytes per element: 13 GB
    (range_node,) = [node for node in model.graph if node.op_type == "Range"]
    assert _fold_small_fills(range_node) is False


def test_a_range_declaring_an_absurd_tensor_is_exit_2(cli, tmp_path) -> None:
    _fails(cli("compile", _model(tmp_path, RANGE.format(limit="3e9")), "-t", "cpu-x86-fp32", "-o", tmp_path / "out"),
           "MiB limit", "EDGEC_MAX_TENSOR_MB")
    assert not (tmp_path / "out").exists()


def test_an_input_declaring_an_absurd_shape_is_exit_2(cli, tmp_path) -> None:
    model = _model(tmp_path, "g (float[100000, 100000, 100] x) => (float[100000, 100000, 100] y) { y = Relu(x) }")
    _fails(cli("compile", model, "-t", "cpu-x86-fp32", "-o", tmp_path / "out"), "tensor 'x'", "MiB limit")


def _npz_declaring(path: Path, shape: tuple[int, ...]) -> Path:
    """An .npz whose one array's header declares `shape` (float32) but holds no data: a few hundred bytes."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = shape
    with zipfile.ZipFile(path, "w") as archive, archive.open("x.npy", "w") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
    return path


@pytest.mark.parametrize("limit_mb, shape, needle", [
    (None, (2**31,), "EDGEC_MAX_TENSOR_MB"),  # 8 GiB in one array
    ("1", (16, 3, 8, 8 * 256), "EDGEC_MAX_DATA_MB"),  # 3 MiB in all, against a lowered limit
])
def test_npz_sizes_are_checked_from_headers_before_reading(cli, tiny, tmp_path, monkeypatch, limit_mb, shape,
                                                           needle) -> None:
    if limit_mb:
        monkeypatch.setenv("EDGEC_MAX_DATA_MB", limit_mb)
    data = _npz_declaring(tmp_path / "big.npz", shape)
    _fails(cli("compile", tiny.model, "-t", "cpu-x86-int8", "--calib", data, "-o", tmp_path / "out"), needle)


def test_non_regular_files_are_refused_not_read(cli, tiny, tmp_path) -> None:
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    _fails(cli("compile", fifo, "-t", "cpu-x86-fp32", "-o", tmp_path / "out"), "not a regular file")
    _fails(cli("compile", tiny.model, "-t", "cpu-x86-int8", "--calib", fifo, "-o", tmp_path / "out"),
           "not a regular file")
    _fails(cli("gate", fifo, "--max-latency-p90-ms", 5), "not a regular file")
    report = tmp_path / "r.json"
    report.write_text('{"schema": "edgec.bench/1"}')
    _fails(cli("gate", report, "--policy", fifo), "not a regular file")


def test_a_step_that_never_ends_is_exit_2_with_one_line(tmp_path) -> None:
    loop = _model(tmp_path, """g (float[1] x) => (float[1] y) {
        trips = Constant <value = int64 {1000000000000000}> ()
        cond = Constant <value = bool {1}> ()
        y = Loop(trips, cond, x) <body = body (int64 i, bool c, float[1] v) => (bool c_out, float[1] v_out) {
            c_out = Identity(c)
            v_out = Add(v, v)
        }>
    }""")
    env = {**os.environ, "EDGEC_STEP_TIMEOUT_S": "10"}
    result = subprocess.run([sys.executable, "-m", "edgec", "compile", str(loop), "-t", "cpu-x86-fp32", "--verify",
                             "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("edgec: error: step '")
    assert "EDGEC_STEP_TIMEOUT_S" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("spec, needle", [
    ("x:0x3x8x8", "dimension 0"), ("x:99999999999999x3x8x8", "dimension 99999999999999"),
])
def test_fixed_shapes_must_be_sensible(cli, tiny, tmp_path, spec, needle) -> None:
    _fails(cli("compile", tiny.model, "-t", "cpu-x86-fp32", "--fix-shape", spec, "-o", tmp_path / "out"), needle)


def test_models_nothing_can_run_are_refused(cli, tmp_path) -> None:
    newer = _model(tmp_path, "g (float[1] x) => (float[1] y) { y = Relu(x) }", "newer.onnx", opset=99)
    _fails(cli("compile", newer, "-t", "cpu-x86-fp32", "-o", tmp_path / "out"), "opset 99")
    twice = onnx.load(_model(tmp_path, "g (float[1] x) => (float[1] y) { y = Relu(x) }"))
    twice.graph.output.append(twice.graph.output[0])
    onnx.save_model(twice, tmp_path / "twice.onnx")
    _fails(cli("compile", tmp_path / "twice.onnx", "-t", "cpu-x86-fp32", "-o", tmp_path / "out"), "more than once")


def test_absurd_thread_counts_are_refused(cli, tiny, tmp_path) -> None:
    assert cli("compile", tiny.model, "-t", "cpu-x86-fp32", "-o", tmp_path / "art").code == 0
    _fails(cli("bench", tmp_path / "art", "--threads", 100000), "--threads must be between 0")
    _fails(cli("compile", tiny.model, "-t", "cpu-x86-fp32", "--set", "options.threads=100000", "-o", tmp_path / "o2"),
           "options.threads")


def test_paths_that_are_not_utf8_are_refused(cli, tiny, tmp_path) -> None:
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/art-\xff"))
    _fails(cli("compile", tiny.model, "-t", "cpu-x86-fp32", "-o", odd), "not valid UTF-8")
    assert cli("compile", tiny.model, "-t", "cpu-x86-fp32", "-o", tmp_path / "art").code == 0
    (tmp_path / "art").rename(odd)
    _fails(cli("bench", odd), "not valid UTF-8")
