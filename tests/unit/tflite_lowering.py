"""Helpers the TFLite lowering tests share: run edgec's passes (and quantizer), lower, run in LiteRT."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from ai_edge_litert import schema_py_generated as schema

from edgec.backends.onnxruntime.session import cpu_session
from edgec.backends.tflite.lower import lower
from edgec.backends.tflite.runtime import TfliteRuntime
from edgec.int8 import Int8Request, quantize
from edgec.passes.opset import upgrade_opset
from edgec.passes.pipeline import optimize
from edgec.quant.table import CalibrationTable
from edgec.target import load_target

_OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def optimized(proto: onnx.ModelProto, target_name: str = "tflite-fp32") -> ir.Model:
    """`proto` after the target's pass pipeline (what the backend's export receives)."""
    target = load_target(target_name)
    model = ir.serde.deserialize_model(proto)
    if target.precision == "int8":
        model = upgrade_opset(model, 13)
    return optimize(model, target.passes, target=target)[0]


def quantized(proto: onnx.ModelProto, samples: Sequence[dict[str, np.ndarray]],
              target_name: str = "tflite-int8") -> tuple[ir.Model, CalibrationTable]:
    """`proto` optimized and quantized for `target_name` on `samples`: the Q/DQ model and its calibration table."""
    target = load_target(target_name)
    result = quantize(optimized(proto, target_name), target, list(samples), "data", Int8Request(), lambda _: None)
    return result.model, result.table


def run_tflite(flatbuffer: bytes, tmp_path: Path, feeds: dict[str, np.ndarray], name: str = "model") -> dict[str, np.ndarray]:
    """Outputs of the flatbuffer in edgec's TFLite runtime (1 thread), keyed by the runtime's names."""
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(flatbuffer)
    return TfliteRuntime(path, threads=1).infer(feeds)


def run_onnx(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = cpu_session(proto, threads=1)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def tflite_ops(flatbuffer: bytes) -> Counter[str]:
    """How many operators of each builtin kind the model holds."""
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    codes = model.operatorCodes
    return Counter(_OP_NAMES[codes[op.opcodeIndex].builtinCode] for op in model.subgraphs[0].operators)


def lower_fp32(proto: onnx.ModelProto) -> bytes:
    return lower(optimized(proto), table=None, precision="fp32")
