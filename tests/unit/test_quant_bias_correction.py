"""Tests for edgec.quant.bias_correction on tiny float models whose inputs have a clearly non-zero mean.

Weights are quantized coarsely (int8 symmetric per tensor, 7 bits) so the output shift is visible.
Oracles: the weight error is recomputed with a NumPy quantizer written out here, contracted by hand
with means taken straight from the samples; the shift a bias must absorb is also measured by running
the node with W_err as its weight. End to end, the model goes through `edgec.quant.qdq` and ORT.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.passes.cleanup import InferShapesPass
from edgec.quant import qdq
from edgec.quant.bias_correction import correct_biases, input_mean_axes
from edgec.quant.calibrator import calibrate, observe
from edgec.quant.observers import ChannelStatsObserver
from edgec.backends.onnxruntime.session import cpu_session
from edgec.target import QuantScheme, TensorQuant

OPSET = 21
#: 7-bit symmetric weights: int8 grid [-63, 63], see edgec.quant.qparams.qrange
QMAX = 63
COARSE = TensorQuant("int8", symmetric=True, granularity="per_tensor", reduce_range=True)
COARSE_PER_CHANNEL = TensorQuant("int8", symmetric=True, granularity="per_channel", reduce_range=True)
SCHEME = QuantScheme(weights=COARSE, activations=TensorQuant("uint8", symmetric=False, granularity="per_tensor"))
#: The corrected model must keep at most this fraction of the uncorrected per-channel mean error (RMS
#: over channels). Measured here: 0.09-0.13 (the rest: Conv borders, where zero padding breaks the
#: spatially-constant-mean assumption, and activation quantization, which correction does not model).
MAX_MEAN_ERROR_RATIO = 0.3
#: float32 slack for sums of a few dozen products computed in different orders
ATOL = 1e-5
MATRIX_OPS = ("Conv", "Gemm", "MatMul")


# --------------------------------------------------------------------------------------------
# models and helpers
# --------------------------------------------------------------------------------------------


def _f32(name: str, shape: Sequence[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           initializers: dict[str, np.ndarray]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "bias_correction", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def chain_model() -> onnx.ModelProto:
    """Conv(bias) -> Relu -> depthwise Conv(no bias) -> Relu -> GAP -> Flatten -> Gemm(transB=1) -> Relu -> MatMul+Add.

    Every corrected node's output is also a graph output so the tests can measure it.
    """
    rng = np.random.default_rng(0)
    channel_gain = rng.uniform(0.2, 2.0, (8, 1, 1, 1)).astype(np.float32)  # uneven: per-tensor steps hurt
    inits = {
        "W1": _he(rng, (8, 3, 3, 3), 27), "B1": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "W2": _he(rng, (8, 1, 3, 3), 9) * channel_gain,
        "W3": _he(rng, (16, 8), 8), "B3": (rng.standard_normal(16) * 0.1).astype(np.float32),
        "W4": _he(rng, (16, 6), 16), "B4": (rng.standard_normal(6) * 0.1).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "W2"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["f"]),
        helper.make_node("Gemm", ["f", "W3", "B3"], ["g"], transB=1),
        helper.make_node("Relu", ["g"], ["r3"]),
        helper.make_node("MatMul", ["r3", "W4"], ["mm"]),
        helper.make_node("Add", ["mm", "B4"], ["y"]),
    ]
    outputs = [_f32("y", (1, 6)), _f32("c1", (1, 8, 16, 16)), _f32("c2", (1, 8, 16, 16)), _f32("g", (1, 16))]
    return _model(nodes, [_f32("x", (1, 3, 16, 16))], outputs, inits)


def _samples(shapes: dict[str, tuple[int, ...]], count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Shifted uniform inputs in [0, 2): mean 1 on every channel, like post-ReLU activations."""
    rng = np.random.default_rng(seed)
    return [{name: rng.uniform(0.0, 2.0, shape).astype(np.float32) for name, shape in shapes.items()}
            for _ in range(count)]


def _ir(model: onnx.ModelProto) -> ir.Model:
    graph = ir.serde.deserialize_model(model)
    InferShapesPass()(graph)
    return graph


def _matrix_nodes(model: ir.Model) -> list[ir.Node]:
    return [node for node in model.graph if node.op_type in MATRIX_OPS]


def _means(model: ir.Model, nodes: Sequence[ir.Node], samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """What the compiler collects: per-channel means of every activation `input_mean_axes` names."""
    observers = {name: ChannelStatsObserver(axis) for name, axis in input_mean_axes(nodes).items()}
    observe(model, observers, samples, threads=1)
    return {name: observer.mean() for name, observer in observers.items()}


def _corrected(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]], weights: TensorQuant = COARSE,
               ) -> tuple[onnx.ModelProto, dict[str, int]]:
    graph = _ir(model)
    nodes = _matrix_nodes(graph)
    counts = correct_biases(graph, nodes, _means(graph, nodes, samples), weights)
    proto = ir.serde.serialize_model(graph)
    onnx.checker.check_model(proto, full_check=True)
    return proto, counts


def _run(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every graph output, stacked over the samples along axis 0."""
    session = cpu_session(model, threads=1)
    names = [output.name for output in model.graph.output]
    results = [session.run(names, feed) for feed in samples]
    return {name: np.concatenate([r[i] for r in results]) for i, name in enumerate(names)}


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _node(model: onnx.ModelProto, output: str) -> onnx.NodeProto:
    (node,) = [n for n in model.graph.node if output in n.output]
    return node


def _fake_quant(weight: np.ndarray, axis: int | None) -> np.ndarray:
    """7-bit symmetric quantize + dequantize written out: scale = max|w| / 63 per tensor or per `axis` slice."""
    reduce = None if axis is None else tuple(d for d in range(weight.ndim) if d != axis)
    scale = (np.abs(weight).max(axis=reduce, keepdims=True) / QMAX).astype(np.float32)
    q = np.clip(np.round(weight.astype(np.float64) / scale), -QMAX, QMAX)
    return (q * scale).astype(np.float32)


def _weight_error(weight: np.ndarray, axis: int | None = None) -> np.ndarray:
    return weight.astype(np.float64) - _fake_quant(weight, axis)


# --------------------------------------------------------------------------------------------
# input_mean_axes / correct_biases on the chain model
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain() -> onnx.ModelProto:
    return chain_model()


@pytest.fixture(scope="module")
def calibration() -> list[dict[str, np.ndarray]]:
    return _samples({"x": (1, 3, 16, 16)}, 32, seed=1)


@pytest.fixture(scope="module")
def chain_corrected(chain: onnx.ModelProto, calibration) -> tuple[onnx.ModelProto, dict[str, int]]:
    return _corrected(chain, calibration)


def test_input_mean_axes(chain: onnx.ModelProto) -> None:
    assert input_mean_axes(_matrix_nodes(_ir(chain))) == {"x": 1, "r1": 1, "f": -1, "r3": -1}


def test_every_matrix_node_is_corrected(chain_corrected) -> None:
    model, counts = chain_corrected
    assert counts == {"corrected": 4}
    assert len(_node(model, "c2").input) == 3  # the depthwise Conv got a bias


def test_conv_bias_moves_by_the_hand_computed_delta(chain, chain_corrected, calibration) -> None:
    """delta[m] = sum over (c, kh, kw) of W_err[m, c, kh, kw] * mean(x[:, c]), and c1 moves by exactly delta."""
    model, _ = chain_corrected
    x_mean = np.stack([s["x"] for s in calibration]).astype(np.float64).mean(axis=(0, 1, 3, 4))
    delta = np.einsum("mckl,c->m", _weight_error(_inits(chain)["W1"]), x_mean)
    assert np.abs(delta).max() > 1e-3  # the shift is there to correct
    bias = _inits(model)[_node(model, "c1").input[2]]
    np.testing.assert_allclose(bias - _inits(chain)["B1"], delta, atol=ATOL)
    fresh = _samples({"x": (1, 3, 16, 16)}, 4, seed=2)
    moved = _run(model, fresh)["c1"] - _run(chain, fresh)["c1"]
    np.testing.assert_allclose(moved, np.broadcast_to(delta[None, :, None, None], moved.shape), atol=ATOL)


def test_depthwise_conv_reads_only_its_own_channel(chain, chain_corrected, calibration) -> None:
    model, _ = chain_corrected
    r1_mean = np.maximum(_run(chain, calibration)["c1"], 0.0).astype(np.float64).mean(axis=(0, 2, 3))
    error = _weight_error(_inits(chain)["W2"])
    delta = np.array([error[m].sum() * r1_mean[m] for m in range(8)])
    np.testing.assert_allclose(_inits(model)[_node(model, "c2").input[2]], delta, atol=ATOL)


def test_gemm_and_matmul_biases(chain, chain_corrected, calibration) -> None:
    model, _ = chain_corrected
    original, corrected = _inits(chain), _inits(model)
    outputs = _run(chain, calibration)
    f_mean = np.maximum(outputs["c2"], 0.0).astype(np.float64).mean(axis=(0, 2, 3))  # GAP of r2
    r3_mean = np.maximum(outputs["g"], 0.0).astype(np.float64).mean(axis=0)
    gemm_delta = _weight_error(original["W3"]) @ f_mean  # transB=1: W is [N, K]
    matmul_delta = r3_mean @ _weight_error(original["W4"])
    np.testing.assert_allclose(corrected[_node(model, "g").input[2]] - original["B3"], gemm_delta, atol=ATOL)
    np.testing.assert_allclose(corrected["B4"] - original["B4"], matmul_delta, atol=ATOL)


def test_correction_removes_the_mean_error_of_qdq_model(chain, chain_corrected, calibration) -> None:
    """Per output channel, the int8 model's mean error shrinks; the overall MSE does not grow."""
    fresh = _samples({"x": (1, 3, 16, 16)}, 32, seed=3)
    reference = _run(chain, fresh)
    before = _run(_qdq(chain, calibration), fresh)
    after = _run(_qdq(chain_corrected[0], calibration), fresh)
    for name, want in reference.items():
        channel_axes = tuple(d for d in range(want.ndim) if d != 1)
        mean_before = _rms((before[name] - want).mean(axis=channel_axes))
        mean_after = _rms((after[name] - want).mean(axis=channel_axes))
        assert mean_after < MAX_MEAN_ERROR_RATIO * mean_before, name
        assert _rms(after[name] - want) <= _rms(before[name] - want), name


def _qdq(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]]) -> onnx.ModelProto:
    """The compiler's int8 step: plan, calibrate, apply (weights per tensor, 7 bits)."""
    graph = _ir(model)
    plan = qdq.plan(graph, SCHEME.ops, asymmetric_activations=True)
    table = calibrate(graph, plan.calibration_tensors, samples, calibrator="minmax", threads=1)
    qdq.apply(graph, plan, table, SCHEME)
    return ir.serde.serialize_model(graph)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# --------------------------------------------------------------------------------------------
# one node at a time: layouts, attributes, per-channel weights
# --------------------------------------------------------------------------------------------


def _single(op: str, attributes: dict[str, object], shapes: tuple[tuple[int, ...], tuple[int, ...]],
            weight: np.ndarray, bias: np.ndarray | None) -> onnx.ModelProto:
    """One Conv/Gemm node, or MatMul followed by Add(bias), reading input x."""
    inits = {"W": weight} if bias is None else {"W": weight, "B": bias}
    if op == "MatMul":
        nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["y"])]
    else:
        nodes = [helper.make_node(op, ["x", *inits], ["y"], **attributes)]
    x_shape, y_shape = shapes
    return _model(nodes, [_f32("x", x_shape)], [_f32("y", y_shape)], inits)


SINGLE_CASES = {
    # id: (op, attributes, (x shape, y shape), weight shape, bias shape or None, weight granularity,
    #      output-channel axis of the weight when per channel)
    "gemm_transB": ("Gemm", {"transB": 1}, ((4, 6), (4, 5)), (5, 6), (5,), COARSE, None),
    "gemm_alpha_beta_no_C": ("Gemm", {"alpha": 2.0, "beta": 0.5}, ((4, 6), (4, 5)), (6, 5), None,
                             COARSE_PER_CHANNEL, 1),
    "gemm_row_C": ("Gemm", {"transB": 1}, ((4, 6), (4, 5)), (5, 6), (1, 5), COARSE_PER_CHANNEL, 0),
    "matmul_3d_input": ("MatMul", {}, ((2, 3, 6), (2, 3, 5)), (6, 5), (5,), COARSE_PER_CHANNEL, 1),
    "grouped_conv_1x1_no_bias": ("Conv", {"group": 2}, ((1, 4, 3, 3), (1, 6, 3, 3)), (6, 2, 1, 1), None,
                                 COARSE_PER_CHANNEL, 0),
}


@pytest.mark.parametrize("case", SINGLE_CASES)
def test_output_moves_by_the_mean_error_of_the_quantized_weight(case: str) -> None:
    """corrected(x) - original(x) = mean over samples of the same node run with W_err and no bias."""
    op, attributes, shapes, w_shape, b_shape, weights, axis = SINGLE_CASES[case]
    rng = np.random.default_rng(4)
    weight = rng.standard_normal(w_shape).astype(np.float32) * rng.uniform(0.2, 2.0, w_shape[-1]).astype(np.float32)
    bias = None if b_shape is None else rng.standard_normal(b_shape).astype(np.float32)
    model = _single(op, attributes, shapes, weight, bias)
    samples = _samples({"x": shapes[0]}, 16, seed=5)
    corrected, counts = _corrected(model, samples, weights)
    assert counts == {"corrected": 1}
    zero_bias = None if bias is None else np.zeros_like(bias)
    error_model = _single(op, attributes, shapes, _weight_error(weight, axis).astype(np.float32), zero_bias)
    error = np.moveaxis(_run(error_model, samples)["y"], 1 if op == "Conv" else -1, -1)
    expected = error.reshape(-1, error.shape[-1]).mean(axis=0)  # per output channel
    moved = np.moveaxis(_run(corrected, samples)["y"] - _run(model, samples)["y"], 1 if op == "Conv" else -1, -1)
    np.testing.assert_allclose(moved, np.broadcast_to(expected, moved.shape), atol=ATOL)


# --------------------------------------------------------------------------------------------
# what is skipped, what is never edited in place
# --------------------------------------------------------------------------------------------


def test_matmul_whose_output_has_two_readers_is_skipped() -> None:
    """Moving the Add's bias would leave the Relu reading the uncorrected MatMul output."""
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["y"]),
             helper.make_node("Relu", ["mm"], ["z"])]
    inits = {"W": _he(rng, (6, 4), 6), "B": np.ones(4, np.float32)}
    model = _model(nodes, [_f32("x", (3, 6))], [_f32("y", (3, 4)), _f32("z", (3, 4))], inits)
    assert input_mean_axes(_matrix_nodes(_ir(model))) == {}
    corrected, counts = _corrected(model, _samples({"x": (3, 6)}, 4, seed=7))
    assert counts == {"corrected": 0, "skipped_matmul_without_single_add": 1}
    assert onnx.printer.to_text(corrected) == onnx.printer.to_text(ir.serde.serialize_model(_ir(model)))


def test_shared_bias_is_copied_not_edited() -> None:
    """Two Convs read bias B; correcting one must leave B, and the other Conv's output, as they were."""
    rng = np.random.default_rng(8)
    nodes = [helper.make_node("Conv", ["x", "Wa", "B"], ["a"]), helper.make_node("Conv", ["x", "Wb", "B"], ["b"])]
    inits = {"Wa": _he(rng, (4, 3, 1, 1), 3), "Wb": _he(rng, (4, 3, 1, 1), 3), "B": np.ones(4, np.float32)}
    model = _model(nodes, [_f32("x", (1, 3, 4, 4))], [_f32("a", (1, 4, 4, 4)), _f32("b", (1, 4, 4, 4))], inits)
    samples = _samples({"x": (1, 3, 4, 4)}, 8, seed=9)
    graph = _ir(model)
    first = _matrix_nodes(graph)[:1]
    assert correct_biases(graph, first, _means(graph, first, samples), COARSE) == {"corrected": 1}
    corrected = ir.serde.serialize_model(graph)
    new_bias = _node(corrected, "a").input[2]
    assert new_bias != "B" and _node(corrected, "b").input[2] == "B"
    np.testing.assert_array_equal(_inits(corrected)["B"], inits["B"])
    x_mean = np.stack([s["x"] for s in samples]).astype(np.float64).mean(axis=(0, 1, 3, 4))
    delta = np.einsum("mckl,c->m", _weight_error(inits["Wa"]), x_mean)
    np.testing.assert_allclose(_inits(corrected)[new_bias] - inits["B"], delta, atol=ATOL)
    before, after = _run(model, samples), _run(corrected, samples)
    np.testing.assert_array_equal(after["b"], before["b"])


def test_nodes_without_a_mean_or_a_supported_layout_are_skipped(chain: onnx.ModelProto) -> None:
    graph = _ir(chain)
    before = onnx.printer.to_text(ir.serde.serialize_model(graph))
    assert correct_biases(graph, _matrix_nodes(graph), {}, COARSE) == {"corrected": 0, "skipped_no_mean": 4}
    assert onnx.printer.to_text(ir.serde.serialize_model(graph)) == before
    transposed = _single("Gemm", {"transA": 1}, ((6, 4), (4, 5)), np.ones((6, 5), np.float32), np.zeros(5, np.float32))
    graph = _ir(transposed)
    assert input_mean_axes(_matrix_nodes(graph)) == {}
    counts = correct_biases(graph, _matrix_nodes(graph), {"x": np.ones(6)}, COARSE)
    assert counts == {"corrected": 0, "skipped_gemm_trans_a": 1}
