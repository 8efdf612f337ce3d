"""`edgec compile` on PyTorch files: TorchScript with --input, and the torch files that hold no graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch frontend needs torch (install edgec[torch])")
from torch import nn  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A tiny conv net saved with torch.jit.save; nn.Sequential names its forward argument `input`."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(4, 3)).eval()
    path = tmp_path_factory.mktemp("torchscript") / "net.pt"
    torch.jit.save(torch.jit.script(module), path)
    return module, path


def _assert_one_line_error(result, *needles: str) -> None:
    assert result.code == 2, (result.out, result.err)
    assert "Traceback" not in result.err and result.error_line.startswith("edgec: error: ")
    for needle in needles:
        assert needle in result.error_line, result.error_line


def test_torchscript_with_declared_input(cli, scripted, tmp_path) -> None:
    module, path = scripted
    out = tmp_path / "out"
    result = cli("compile", path, "-t", "cpu-x86-fp32", "--input", "input:batchx3x8x8", "--trust-source", "-o", out)
    assert result.code == 0, result.err
    assert "imported from torchscript" in result.out
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"input": x})
    with torch.no_grad():
        np.testing.assert_allclose(actual, module(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_torchscript_without_input(cli, scripted, tmp_path) -> None:
    _assert_one_line_error(cli("compile", scripted[1], "-t", "cpu-x86-fp32", "--trust-source", "-o", tmp_path / "out"),
                           "--input NAME:SHAPE[:DTYPE]", "(input)")
    assert not (tmp_path / "out").exists()


def test_state_dict(cli, scripted, tmp_path) -> None:
    weights = tmp_path / "weights.pt"
    torch.save(scripted[0].state_dict(), weights)
    _assert_one_line_error(cli("compile", weights, "-t", "cpu-x86-fp32", "-o", tmp_path / "out"),
                           "pickled PyTorch object", "torch.export.save")
    assert not (tmp_path / "out").exists()
