"""Tests for edgec.frontends: loading .onnx files (with external data) and every unreadable-file error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.errors import BadInputError
from edgec.frontends import file_input_specs, input_specs, load_model


def _matmul_model(weight: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weight.shape[0]])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", weight.shape[1]])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def weight() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)


def test_load_valid_model(tmp_path: Path, weight: np.ndarray) -> None:
    path = tmp_path / "m.onnx"
    onnx.save_model(_matmul_model(weight), path)
    model = load_model(path)
    assert isinstance(model, ir.Model)
    assert [n.op_type for n in model.graph] == ["MatMul", "Relu"]
    np.testing.assert_array_equal(model.graph.initializers["W"].const_value.numpy(), weight)


def test_suffix_is_case_insensitive(tmp_path: Path, weight: np.ndarray) -> None:
    path = tmp_path / "M.ONNX"
    onnx.save_model(_matmul_model(weight), path)
    assert len(load_model(path).graph) == 2


def test_load_model_with_external_data(tmp_path: Path, weight: np.ndarray) -> None:
    path = tmp_path / "m.onnx"
    onnx.save_model(_matmul_model(weight), path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=0)
    assert (tmp_path / "m.onnx.data").is_file()
    assert path.stat().st_size < weight.nbytes  # the weight really lives outside
    model = load_model(path)
    np.testing.assert_array_equal(model.graph.initializers["W"].const_value.numpy(), weight)


def test_missing_external_data_file(tmp_path: Path, weight: np.ndarray) -> None:
    path = tmp_path / "m.onnx"
    onnx.save_model(_matmul_model(weight), path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=0)
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(BadInputError, match=r"^model: cannot read .*m\.onnx"):
        load_model(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        load_model(tmp_path / "absent.onnx")


@pytest.mark.parametrize("name", ["models.onnx", "models"])
def test_directory(tmp_path: Path, name: str) -> None:
    (tmp_path / name).mkdir()
    with pytest.raises(BadInputError, match=r"^model: "):
        load_model(tmp_path / name)


def test_directory_with_onnx_suffix_says_directory(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").mkdir()
    with pytest.raises(BadInputError, match="is a directory"):
        load_model(tmp_path / "m.onnx")


def test_truncated_file(tmp_path: Path, weight: np.ndarray) -> None:
    data = _matmul_model(weight).SerializeToString()
    path = tmp_path / "m.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInputError, match="not a valid ONNX"):
        load_model(path)


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(np.random.default_rng(seed).bytes(512))
    with pytest.raises(BadInputError, match=r"^model: "):
        load_model(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"")
    with pytest.raises(BadInputError, match="holds no ONNX graph"):
        load_model(path)


def test_invalid_graph_fails_checker(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["undefined"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "m.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(BadInputError, match="not a valid ONNX model"):
        load_model(path)


@pytest.mark.parametrize("suffix", [".txt", ".pb", ""])
def test_unsupported_suffix(tmp_path: Path, weight: np.ndarray, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    onnx.save_model(_matmul_model(weight), path)
    with pytest.raises(BadInputError, match="cannot tell the format.*--from"):
        load_model(path)


def test_input_specs(tmp_path: Path, weight: np.ndarray) -> None:
    path = tmp_path / "m.onnx"
    onnx.save_model(_matmul_model(weight), path, save_as_external_data=True, location="m.data", size_threshold=0)
    (spec,) = input_specs(load_model(path))
    assert spec.name == "x" and spec.shape == ("batch", 32) and spec.dtype == np.float32
    (tmp_path / "m.data").unlink()  # file_input_specs never reads the weights
    (spec2,) = file_input_specs(path)
    assert spec2 == spec


def test_input_specs_skip_initializer_inputs() -> None:
    model = ir.serde.deserialize_model(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x, float[4] b) => (float[1, 4] y) <float[4] b = {1.0, 2.0, 3.0, 4.0}> {
            y = Add(x, b)
        }
    """))
    assert [s.name for s in input_specs(model)] == ["x"]


def test_file_input_specs_garbage(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(BadInputError, match="cannot read"):
        file_input_specs(path)
    with pytest.raises(BadInputError, match="cannot read"):
        file_input_specs(tmp_path / "absent.onnx")
