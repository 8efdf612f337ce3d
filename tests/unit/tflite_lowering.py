"""Helpers the TFLite lowering tests share: run edgec's passes (and quantizer), lower, run in LiteRT."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
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


def onnx_model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           initializers: list[onnx.TensorProto], opset: int = 17) -> onnx.ModelProto:
    proto = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializers),
                              opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(proto)
    return proto

def random_init(rng: np.random.Generator, name: str, *shape: int, scale: float = 0.2) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

def encoder_block() -> onnx.ModelProto:
    """An encoder layer, MiniLM-style: embedding Gather, LayerNorm, attention with a Where/Cast mask, GELU (erf)."""
    rng = np.random.default_rng(3)
    d, heads, vocab = 16, 2, 50
    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("Gather", ["embeddings", "ids"], ["e"]),
        helper.make_node("LayerNormalization", ["e", "ln_g", "ln_b"], ["h"], axis=-1, epsilon=1e-12),
        helper.make_node("MatMul", ["h", "wq"], ["q0"]), helper.make_node("Add", ["q0", "bq"], ["q1"]),
        helper.make_node("MatMul", ["h", "wk"], ["k0"]), helper.make_node("MatMul", ["h", "wv"], ["v0"]),
        helper.make_node("Reshape", ["q1", "heads_shape"], ["q2"]),
        helper.make_node("Transpose", ["q2"], ["q"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["k0", "heads_shape"], ["k2"]),
        helper.make_node("Transpose", ["k2"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["v0", "heads_shape"], ["v2"]),
        helper.make_node("Transpose", ["v2"], ["v"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["q", "kt"], ["s0"]),
        helper.make_node("Div", ["s0", "sqrt_d"], ["s1"]),
        helper.make_node("Cast", ["mask"], ["mask_bool"], to=TensorProto.BOOL),
        helper.make_node("Unsqueeze", ["mask_bool", "axes12"], ["mask4"]),
        helper.make_node("Where", ["mask4", "zero", "minus_inf"], ["bias"]),
        helper.make_node("Add", ["s1", "bias"], ["s2"]),
        helper.make_node("Softmax", ["s2"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["c0"]),
        helper.make_node("Transpose", ["c0"], ["c1"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["c1", "model_shape"], ["c"]),
        helper.make_node("MatMul", ["c", "wo"], ["o"]),
        helper.make_node("Div", ["o", "sqrt2"], ["o_scaled"]),
        helper.make_node("Erf", ["o_scaled"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["erf1"]),
        helper.make_node("Mul", ["o", "half"], ["o_half"]),
        helper.make_node("Mul", ["o_half", "erf1"], ["gelu"]),
        helper.make_node("ReduceMean", ["gelu"], ["pooled"], axes=[1], keepdims=0),
    ]
    inits = [
        random_init(rng, "embeddings", vocab, d, scale=1.0), random_init(rng, "ln_g", d), random_init(rng, "ln_b", d),
        random_init(rng, "wq", d, d), random_init(rng, "bq", d), random_init(rng, "wk", d, d), random_init(rng, "wv", d, d),
        random_init(rng, "wo", d, d, scale=0.5),
        numpy_helper.from_array(np.array([1, 6, heads, d // heads], np.int64), "heads_shape"),
        numpy_helper.from_array(np.array([1, 6, d], np.int64), "model_shape"),
        numpy_helper.from_array(np.array(np.sqrt(d // heads), np.float32), "sqrt_d"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "axes12"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(-1e4, np.float32), "minus_inf"),
        numpy_helper.from_array(np.array(np.sqrt(2.0), np.float32), "sqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    # the mask is 1 where a token is padding (the Where picks the large negative bias there)
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 6]),
              helper.make_tensor_value_info("mask", TensorProto.INT64, [1, 6])]
    return onnx_model(nodes, inputs, [helper.make_tensor_value_info("pooled", f32, [1, d])], inits)

def mobilenet_v3_block() -> onnx.ModelProto:
    """MobileNetV3's bottleneck: Conv-HardSwish, depthwise, squeeze-and-excite (pool, Relu, HardSigmoid, Mul),
    projection and residual, with a Sigmoid-gated head as EfficientNet's SE has."""
    rng = np.random.default_rng(9)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("HardSwish", ["c1"], ["h1"]),
        helper.make_node("Conv", ["h1", "w2", "b2"], ["c2"], pads=[2, 2, 2, 2], group=16),
        helper.make_node("GlobalAveragePool", ["c2"], ["squeeze"]),
        helper.make_node("Conv", ["squeeze", "w_se1", "b_se1"], ["se1"]),
        helper.make_node("Relu", ["se1"], ["se1r"]),
        helper.make_node("Conv", ["se1r", "w_se2", "b_se2"], ["se2"]),
        helper.make_node("HardSigmoid", ["se2"], ["gate"], alpha=1 / 6, beta=0.5),
        helper.make_node("Mul", ["c2", "gate"], ["excited"]),
        helper.make_node("Conv", ["excited", "w3", "b3"], ["c3"]),
        helper.make_node("Add", ["c3", "h1"], ["res"]),
        helper.make_node("Sigmoid", ["res"], ["s"]),
        helper.make_node("Mul", ["res", "s"], ["swish"]),
        helper.make_node("ReduceMean", ["swish"], ["y"], axes=[2, 3], keepdims=0),
    ]
    inits = [random_init(rng, "w1", 16, 3, 3, 3, scale=0.4), random_init(rng, "b1", 16), random_init(rng, "w2", 16, 1, 5, 5),
             random_init(rng, "b2", 16), random_init(rng, "w_se1", 4, 16, 1, 1, scale=0.5), random_init(rng, "b_se1", 4),
             random_init(rng, "w_se2", 16, 4, 1, 1, scale=0.5), random_init(rng, "b_se2", 16),
             random_init(rng, "w3", 16, 16, 1, 1, scale=0.3), random_init(rng, "b3", 16)]
    return onnx_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 24, 24])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)


def activations_net() -> onnx.ModelProto:
    """Sigmoid, Tanh and HardSwish branches of one Conv, summed, then a Gemm head with Softmax."""
    rng = np.random.default_rng(21)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s"]),
        helper.make_node("Tanh", ["c1"], ["t"]),
        helper.make_node("HardSwish", ["c1"], ["h"]),
        helper.make_node("Add", ["s", "t"], ["st"]),
        helper.make_node("Add", ["st", "h"], ["sth"]),
        helper.make_node("Conv", ["sth", "w2", "b2"], ["c2"]),
        helper.make_node("GlobalAveragePool", ["c2"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    inits = [random_init(rng, "w1", 8, 3, 3, 3, scale=0.5), random_init(rng, "b1", 8),
             random_init(rng, "w2", 8, 8, 1, 1, scale=0.4), random_init(rng, "b2", 8),
             random_init(rng, "w3", 10, 8, scale=1.5), random_init(rng, "b3", 10)]
    return onnx_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)


def random_samples(count: int, shape: tuple[int, ...], seed: int) -> list[dict[str, np.ndarray]]:
    """`count` seeded standard-normal feeds for the input `x`."""
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
