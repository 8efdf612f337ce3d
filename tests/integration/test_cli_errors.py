"""Every bad input gets one clear error line, exit code 2, no traceback, and nothing half-written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _assert_clean_failure(result, *needles: str, code: int = 2) -> None:
    assert result.code == code, (result.out, result.err)
    assert "Traceback" not in result.err
    assert result.error_line.startswith("edgec: error: ")
    for needle in needles:
        assert needle in result.error_line, result.error_line


def _no_leftovers(directory: Path, output_name: str) -> None:
    """Neither the requested output nor a staging directory remains."""
    assert not [p.name for p in directory.iterdir() if output_name in p.name]


@pytest.fixture
def npz(tmp_path):
    def write(name: str = "data.npz", **arrays: np.ndarray) -> Path:
        path = tmp_path / name
        np.savez(path, **arrays)
        return path

    return write


GOOD_X = np.zeros((4, 3, 8, 8), np.float32)


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("missing.onnx", None, "no such file"),
        ("garbage.onnx", b"\x00\xffnot a model" * 50, "not a valid ONNX"),
        ("empty.onnx", b"", "no ONNX graph"),
        ("model.txt", b"hello", "cannot tell the format"),
        ("folder.onnx", "dir", "directory"),
    ],
    ids=["missing", "garbage", "empty", "wrong-suffix", "directory"],
)
def test_bad_model_files(cli, tmp_path, name, content, needle) -> None:
    source = tmp_path / name
    if content == "dir":
        source.mkdir()
    elif content is not None:
        source.write_bytes(content)
    result = cli("compile", source, "-t", "cpu-x86-fp32", "-o", tmp_path / "out")
    _assert_clean_failure(result, needle)
    _no_leftovers(tmp_path, "out")


def test_truncated_model(cli, tiny, tmp_path) -> None:
    truncated = tmp_path / "truncated.onnx"
    data = tiny.model.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    _assert_clean_failure(cli("compile", truncated, "-t", "cpu-x86-fp32", "-o", tmp_path / "out"), "truncated.onnx")
    _no_leftovers(tmp_path, "out")


def test_unknown_target(cli, tiny, tmp_path) -> None:
    _assert_clean_failure(cli("compile", tiny.model, "-t", "cpu-quantum-int3", "-o", tmp_path / "out"), "cpu-quantum-int3")


def test_broken_descriptor(cli, tiny, tmp_path) -> None:
    broken = tmp_path / "mine.toml"
    broken.write_text('inherits = "cpu-x86-int8"\n[options]\nthreads = "four"\n')
    _assert_clean_failure(cli("compile", tiny.model, "-t", broken, "--calib", tiny.calib, "-o", tmp_path / "out"),
                          "threads")
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("runtime = \n")
    _assert_clean_failure(cli("target", syntax), "syntax.toml")


@pytest.mark.parametrize("name", ["tensorrt-int8", "tensorrt-fp16", "cuda-fp16"])
def test_targets_not_buildable_here_say_why(cli, tiny, tmp_path, name) -> None:
    result = cli("compile", tiny.model, "-t", name, "--calib", tiny.calib, "-o", tmp_path / "out")
    _assert_clean_failure(result, name)
    _no_leftovers(tmp_path, "out")


def test_int8_without_calibration(cli, tiny, tmp_path) -> None:
    _assert_clean_failure(cli("compile", tiny.model, "-t", "cpu-x86-avx2-int8", "-o", tmp_path / "out"),
                          "--calib DATA.npz")


@pytest.mark.parametrize(
    "arrays, needle",
    [
        ({"pixels": GOOD_X}, "missing ['x']"),
        ({"x": GOOD_X, "extra": GOOD_X}, "unexpected ['extra']"),
        ({"x": GOOD_X.astype(np.float64)}, "float64"),
        ({"x": np.zeros((4, 3, 9, 9), np.float32)}, "'x'"),
        ({"x": np.zeros((4, 8, 8), np.float32)}, "'x'"),
        ({"x": np.zeros((0, 3, 8, 8), np.float32)}, "empty"),
        ({"x": np.full((4, 3, 8, 8), np.nan, np.float32)}, "NaN"),
    ],
    ids=["wrong-key", "extra-key", "dtype", "shape", "rank", "empty", "nan"],
)
def test_bad_calibration_data(cli, tiny, tmp_path, npz, arrays, needle) -> None:
    result = cli("compile", tiny.model, "-t", "cpu-x86-avx2-int8", "--calib", npz(**arrays), "-o", tmp_path / "out")
    _assert_clean_failure(result, needle)
    _no_leftovers(tmp_path, "out")


def test_bad_bench_data_and_labels(cli, tiny, tmp_path, npz) -> None:
    _assert_clean_failure(cli("bench", tiny.model, "--data", npz(x=GOOD_X.astype(np.float16))), "float16")
    data = npz("good.npz", x=GOOD_X)
    labels = tmp_path / "labels.npy"
    np.save(labels, np.zeros(3, np.int64))
    _assert_clean_failure(cli("bench", tiny.model, "--data", data, "--labels", labels), "3 labels", "4 samples")
    np.save(labels, np.zeros(4, np.float32))
    _assert_clean_failure(cli("bench", tiny.model, "--data", data, "--labels", labels), "integer")
    _assert_clean_failure(cli("bench", tiny.model, "--data", tmp_path / "nope.npz"), "no such file")
    _assert_clean_failure(cli("bench", tmp_path / "nothing"), "no such file")


def test_existing_output_dir_is_refused(cli, tiny, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _assert_clean_failure(cli("compile", tiny.model, "-t", "cpu-x86-fp32", "-o", out), "--force")
    assert (out / "keep.txt").read_text() == "mine"


def test_unwritable_output_path(cli, tiny, tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    _assert_clean_failure(cli("compile", tiny.model, "-t", "cpu-x86-fp32", "-o", blocker / "out"), "cannot write")
    _assert_clean_failure(cli("bench", tiny.model, "--runs", 1, "--warmup", 0, "--json", blocker / "r.json"),
                          "cannot write")


def test_unreadable_gate_inputs(cli, tmp_path) -> None:
    _assert_clean_failure(cli("gate", tmp_path / "missing.json", "--min-cosine", 0.9), "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _assert_clean_failure(cli("gate", bad, "--min-cosine", 0.9), "bad.json")
    report = tmp_path / "report.json"
    report.write_text('{"schema": "edgec.bench/1"}')
    _assert_clean_failure(cli("gate", report), "no thresholds")


def test_verbose_shows_the_traceback(cli, tmp_path) -> None:
    result = cli("--verbose", "compile", tmp_path / "missing.onnx", "-t", "cpu-x86-fp32")
    assert result.code == 2 and "Traceback" in result.err


def test_usage_errors_exit_2(cli) -> None:
    with pytest.raises(SystemExit) as exc:
        cli("compile")
    assert exc.value.code == 2
