"""The worker protocol: JSON lines in, JSON lines out, arrays only through `.npz` files read without pickle."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest

from edgec.harness.wire import flatten_samples, unflatten_samples, write_arrays
from edgec.harness.worker import serve
from edgec.errors import BadInputError


def _run(exchange: Path, *messages: dict) -> list[dict]:
    replies = io.StringIO()
    serve(exchange, io.StringIO("".join(json.dumps(m) + "\n" for m in messages)), replies)
    return [json.loads(line) for line in replies.getvalue().splitlines()]


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    path = tmp_path / "double.onnx"
    onnx.save(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["": 17]>
        double (float[1,3] x) => (float[1,3] y) { y = Add(x, x) }"""), path)
    return path


def test_samples_round_trip_with_any_input_name() -> None:
    samples = [{"serving_default_x:0": np.arange(3.0), "a/b": np.ones(2, np.int64)}, {"serving_default_x:0": np.zeros(3)}]
    index, arrays = flatten_samples(samples)
    back = unflatten_samples(arrays, index)
    assert [list(s) for s in back] == [list(s) for s in samples]
    for got, want in zip(back, samples):
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])


def test_a_worker_loads_times_and_writes_outputs(tmp_path: Path, model: Path) -> None:
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    index, arrays = flatten_samples([{"x": x}])
    write_arrays(tmp_path / "samples.npz", arrays)
    replies = _run(tmp_path,
                   {"command": "load", "model": str(model), "runtime": "onnxruntime", "options": {}, "threads": 1,
                    "samples": index, "arrays": "samples.npz"},
                   {"command": "time", "count": 4},
                   {"command": "output", "index": 0, "file": "out.npz"},
                   {"command": "close"})
    assert replies[0] == {"ok": "ready"}
    assert replies[1]["ok"]["load_ms"] > 0
    assert len(replies[2]["ok"]) == 4 and all(isinstance(ns, int) and ns > 0 for ns in replies[2]["ok"])
    assert replies[3] == {"ok": ["y"]}
    with np.load(tmp_path / "out.npz", allow_pickle=False) as out:
        np.testing.assert_array_equal(out["y"], 2 * x)
    assert replies[4]["ok"]["peak_rss_mb"] > 0


def test_a_pickled_array_is_refused_not_loaded(tmp_path: Path, model: Path) -> None:
    np.savez(tmp_path / "samples.npz", **{"0/0": np.array([{"payload": 1}], dtype=object)})  # needs pickle to load
    replies = _run(tmp_path, {"command": "load", "model": str(model), "runtime": "onnxruntime", "threads": 1,
                              "samples": [["x"]], "arrays": "samples.npz"},
                   {"command": "close"})
    assert replies[1]["error"] == "ValueError" and "allow_pickle" in replies[1]["message"]
    assert len(replies) == 2  # the worker stops after its first error


def test_exchange_files_stay_in_the_exchange_directory(tmp_path: Path) -> None:
    replies = _run(tmp_path, {"command": "load", "model": "m.onnx", "runtime": "onnxruntime", "threads": 1,
                              "samples": [], "arrays": "../samples.npz"})
    assert replies[1]["error"] == "BadInputError"


def test_object_arrays_are_not_written() -> None:
    with pytest.raises(BadInputError, match="Python objects"):
        write_arrays(Path("unused.npz"), {"y": np.array([{"a": 1}], dtype=object)})


def test_malformed_and_unknown_commands_end_the_worker(tmp_path: Path) -> None:
    replies = io.StringIO()
    serve(tmp_path, io.StringIO("not json\n" + json.dumps({"command": "close"}) + "\n"), replies)
    lines = [json.loads(line) for line in replies.getvalue().splitlines()]
    assert lines[1]["error"] == "JSONDecodeError" and len(lines) == 2
    assert _run(tmp_path, {"command": "fly"})[1]["error"] == "ValueError"


def test_a_worker_process_starts_without_python_warnings() -> None:
    """The package never imports the worker module, so `-m` does not warn that it was imported twice."""
    import subprocess
    import sys

    started = subprocess.run([sys.executable, "-W", "error", "-m", "edgec.harness.worker"], capture_output=True,
                             text=True, timeout=120)
    assert started.returncode == 2 and "RuntimeWarning" not in started.stderr
    assert started.stderr.startswith("usage: python -m edgec.harness.worker")
