"""Int8 LOGISTIC, TANH, SOFTMAX and HARD_SWISH in the TFLite lowering, on TFLite's int8 spec.

LOGISTIC and SOFTMAX write scale 1/256 with zero point -128, TANH 1/128 with 0 (fixed by the
kernels); their inputs, and HARD_SWISH's input and output, take the calibration table's ranges.
The readback parses the flatbuffer; the accuracy test runs a MobileNetV3/EfficientNet-style block
in LiteRT against the float model.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.tflite.lower import lower
from edgec.quant import qdq
from edgec.quant.qparams import qparams_from_range
from edgec.target import load_target
from tflite_lowering import (activations_net, cosine, mobilenet_v3_block, optimized, quantized, random_samples, run_onnx,
                             run_tflite, tflite_ops)

_FIXED = {"LOGISTIC": (1 / 256, -128), "SOFTMAX": (1 / 256, -128), "TANH": (1 / 128, 0)}
_OPS = {name: code for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def _operators(flatbuffer: bytes, name: str) -> list[tuple[schema.TensorT, schema.TensorT]]:
    """(input, output) tensors of every operator of builtin kind `name`."""
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    subgraph = model.subgraphs[0]
    return [(subgraph.tensors[op.inputs[0]], subgraph.tensors[op.outputs[0]]) for op in subgraph.operators
            if model.operatorCodes[op.opcodeIndex].builtinCode == _OPS[name]]


def _tensor_name(tensor: schema.TensorT) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name


@pytest.fixture(scope="module")
def activations() -> tuple[onnx.ModelProto, object, object, bytes]:
    proto = activations_net()
    model, table = quantized(proto, random_samples(16, (1, 3, 16, 16), 1))
    return proto, optimized(proto, "tflite-int8"), table, lower(model, table=table, precision="int8")


def test_fixed_output_params_and_calibrated_inputs(activations) -> None:
    _, float_model, table, flatbuffer = activations
    plan = qdq.plan(float_model, load_target("tflite-int8").quant.ops, asymmetric_activations=True)
    range_of = {value.name: plan.range_of[plan.shares.get(value, value)] for value in plan.activations}

    def from_table(tensor: schema.TensorT) -> tuple[list[float], list[int]]:
        lo, hi = table.ranges[range_of[_tensor_name(tensor)]]
        params = qparams_from_range(lo, hi, "int8", symmetric=False)
        return [pytest.approx(float(params.scale), rel=1e-6)], [int(params.zero_point)]

    for name in ("LOGISTIC", "TANH", "SOFTMAX", "HARD_SWISH"):
        (source, result), = _operators(flatbuffer, name)
        assert source.type == result.type == schema.TensorType.INT8, name
        assert (source.quantization.scale, source.quantization.zeroPoint) == from_table(source), name
        if name in _FIXED:
            scale, zero_point = _FIXED[name]
            assert result.quantization.scale == [scale] and result.quantization.zeroPoint == [zero_point], name
        else:
            assert (result.quantization.scale, result.quantization.zeroPoint) == from_table(result), name
    assert sorted(plan.fixed.values()) == ["Sigmoid", "Softmax", "Tanh"]
    assert not {value.name for value in plan.fixed} & set(table.ranges)  # fixed outputs are never calibrated
    assert tflite_ops(flatbuffer)["DEQUANTIZE"] == 1  # the float output only: no float island


def test_activation_net_stays_close_to_float_in_litert(activations, tmp_path: Path) -> None:
    proto, _, _, flatbuffer = activations
    for feeds in random_samples(8, (1, 3, 16, 16), 2):
        assert cosine(run_tflite(flatbuffer, tmp_path, feeds)["y"], run_onnx(proto, feeds)["y"]) > 0.999


def test_int8_mobilenet_v3_block_runs_its_activations_int8(tmp_path: Path) -> None:
    """HardSwish, the Sigmoid gate and its Mul run int8; only HardSigmoid (decomposed) stays a float island."""
    proto = mobilenet_v3_block()
    samples = random_samples(16, (1, 3, 24, 24), 6)
    model, table = quantized(proto, samples)
    flatbuffer = lower(model, table=table, precision="int8")
    ops = tflite_ops(flatbuffer)
    assert ops["CONV_2D"] == 4 and ops["DEPTHWISE_CONV_2D"] == 1
    for name in ("HARD_SWISH", "LOGISTIC"):
        assert [out.type for _, out in _operators(flatbuffer, name)] == [schema.TensorType.INT8], name
    assert schema.TensorType.INT8 in {out.type for _, out in _operators(flatbuffer, "MUL")}
    cosines = [cosine(run_tflite(flatbuffer, tmp_path, feeds)["y"], run_onnx(proto, feeds)["y"]) for feeds in samples]
    assert min(cosines) > 0.99
