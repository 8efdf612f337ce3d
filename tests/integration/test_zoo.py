"""Models nobody here wrote: the ONNX package's bundled test models through the full fp32 pipeline.

Each model is compiled for `cpu-x86-fp32` with per-pass verification, and the artifact's output on
the shipped input is compared with the shipped expected output. Expected outputs come from the ONNX
project (PyTorch for `pytorch-converted`, ONNX's reference evaluator for `light`), never from edgec.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import edgec

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
#: Tolerances the issue sets for the fp32 pipeline against the shipped outputs.
ZOO_RTOL, ZOO_ATOL = 1e-3, 1e-4


@dataclass(frozen=True)
class ZooCase:
    name: str
    model: Path
    inputs: list[np.ndarray]
    expected: list[np.ndarray]


def _read_tensor(path: Path) -> np.ndarray:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(tensor)


def _feed_names(path: Path) -> list[str]:
    """Graph inputs a caller feeds (initializers listed as inputs excluded), from the file itself."""
    graph = onnx.load(path, load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    return [value.name for value in graph.input if value.name not in initializers]


def _light_input(value: onnx.ValueInfoProto) -> np.ndarray:
    """The input ONNX's backend runner feeds `light` models: arange(n) / n in the declared shape."""
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def _light_cases() -> list[ZooCase]:
    cases = []
    for model_path in sorted((DATA / "light").glob("light_*.onnx")):
        graph = onnx.load(model_path, load_external_data=False).graph
        feeds = set(_feed_names(model_path))
        inputs = [_light_input(v) for v in graph.input if v.name in feeds]
        expected = [_read_tensor(model_path.with_name(f"{model_path.stem}_output_{i}.pb")) for i in range(len(graph.output))]
        cases.append(ZooCase(model_path.stem, model_path, inputs, expected))
    return cases


def _pytorch_cases() -> list[ZooCase]:
    cases = []
    for folder in sorted((DATA / "pytorch-converted").iterdir()):
        data = folder / "test_data_set_0"
        inputs = [_read_tensor(p) for p in sorted(data.glob("input_*.pb"))]
        expected = [_read_tensor(p) for p in sorted(data.glob("output_*.pb"))]
        cases.append(ZooCase(folder.name, folder / "model.onnx", inputs, expected))
    return cases


CASES = _light_cases() + _pytorch_cases()


def _run(path: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {arg.name: x for arg, x in zip(session.get_inputs(), inputs)})


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_zoo_model_through_fp32_pipeline(case: ZooCase, tmp_path: Path) -> None:
    calib = tmp_path / "sample.npz"
    np.savez(calib, **dict(zip(_feed_names(case.model), case.inputs)))
    result = edgec.compile(case.model, "cpu-x86-fp32", calib=calib, output_dir=tmp_path / "out", verify=True)
    actual = _run(result.model_path, case.inputs)
    assert len(actual) == len(case.expected)
    for got, want in zip(actual, case.expected):
        np.testing.assert_allclose(got, want, rtol=ZOO_RTOL, atol=ZOO_ATOL)
    manifest = json.loads((result.output_dir / "manifest.json").read_text())
    assert manifest["verification"]["samples"] == 1
    assert manifest["nodes"]["optimized"] <= manifest["nodes"]["source"]
