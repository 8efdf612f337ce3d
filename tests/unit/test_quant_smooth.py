"""Tests for edgec.quant.smooth: SmoothQuant folding on small transformer-like graphs.

The float model must compute the same outputs after smoothing (ONNX Runtime, float32 rounding
only); the activations it smooths must get flatter channels; groups it cannot fold stay untouched;
and static int8 of the smoothed model must beat static int8 of the original.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.errors import BadInputError
from edgec.passes.cleanup import InferShapesPass
from edgec.quant import qdq
from edgec.quant.calibrator import calibrate, observe
from edgec.quant.observers import ChannelStatsObserver
from edgec.quant.smooth import smooth
from edgec.backends.onnxruntime.session import cpu_session
from edgec.target import QuantScheme, TensorQuant

OPSET = 21
T, K = 8, 64
#: LayerNorm Scale (or Mul constant) on the outlier channels: ~50x the others, as in BERT-like models.
OUTLIER_GAIN = 50.0
OUTLIER_CHANNELS = [3, 17, 40, 61]
#: Outputs of a smoothed float model equal the original's up to float32 rounding of s and 1/s.
FLOAT_RTOL = 1e-4
#: Peak channel / median channel of a smoothed activation, relative to before. At alpha 0.5 the
#: channel peaks become sqrt(max|X_j| max|W_j|): here ~64 falls to ~1.3; a factor 4 shows the
#: migration without depending on the random weights.
FLATTER_BY = 4.0
#: Static int8 error (1 - worst cosine to float) left after smoothing, relative to without: here
#: 0.91 -> 0.9998 at alpha 0.5, so a factor 10 leaves a wide margin.
INT8_ERROR_SHRINKS_BY = 10.0

SCHEME = QuantScheme(
    weights=TensorQuant("int8", symmetric=True, granularity="per_channel", reduce_range=True),
    activations=TensorQuant("uint8", symmetric=False, granularity="per_tensor"),
    ops=("MatMul", "Gemm"),
)
#: Outputs of the groups `smooth` folds in `transformer_model` (d_mm's group is not foldable).
SMOOTHED_OUTPUTS = ("q", "k", "v", "g", "m")


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


def _f32(name: str, shape: Sequence[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _model(nodes: list[onnx.NodeProto], outputs: dict[str, Sequence[int]], inits: dict[str, np.ndarray],
           extra_outputs: Sequence[onnx.ValueInfoProto] = ()) -> onnx.ModelProto:
    """A model over x [1, T, K]; `outputs` are float32, `extra_outputs` of any type."""
    graph = helper.make_graph(nodes, "smooth", [_f32("x", (1, T, K))],
                              [*(_f32(n, s) for n, s in outputs.items()), *extra_outputs],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _weight(rng: np.random.Generator, shape: tuple[int, ...], outlier_axis: int | None = None) -> np.ndarray:
    """Random weight; with `outlier_axis`, the outlier channels' entries along it are OUTLIER_GAIN smaller.

    Trained networks compensate their outlier channels this way, so that every channel contributes
    to Y alike and the small channels' int8 error shows in the output.
    """
    weight = rng.standard_normal(shape) / np.sqrt(K)
    if outlier_axis is not None:
        np.moveaxis(weight, outlier_axis, 0)[OUTLIER_CHANNELS] /= OUTLIER_GAIN
    return weight.astype(np.float32)


def _gain(rng: np.random.Generator) -> np.ndarray:
    """Per-channel gain ~1 with OUTLIER_GAIN on a few channels."""
    gain = rng.uniform(0.8, 1.2, K).astype(np.float32)
    gain[OUTLIER_CHANNELS] *= OUTLIER_GAIN
    return gain


def transformer_model() -> onnx.ModelProto:
    """Four LayerNorms over x [1, T, K], each with outlier channels:

    - ln1 -> Q, K, V MatMuls (one group, three consumers) and a Shape, as exporters emit;
    - Reshape to [T, K] -> ln2 -> Gemm(transB=1, bias);
    - ln3 -> Mul by a per-channel constant with the outliers -> MatMul (the Mul is the producer);
    - ln4 -> MatMul and a residual Add (not foldable: the Add would see X / s).
    """
    rng = np.random.default_rng(0)
    inits = {
        "g1": _gain(rng), "b1": (rng.standard_normal(K) * 0.1).astype(np.float32),
        "Wq": _weight(rng, (K, 32), 0), "Wk": _weight(rng, (K, 32), 0), "Wv": _weight(rng, (K, 32), 0),
        "shape2d": np.array([T, K], np.int64),
        "g2": _gain(rng), "b2": (rng.standard_normal(K) * 0.1).astype(np.float32),
        "Wg": _weight(rng, (16, K), 1), "Cg": (rng.standard_normal(16) * 0.1).astype(np.float32),
        "g3": rng.uniform(0.8, 1.2, K).astype(np.float32), "c3": _gain(rng), "Wm": _weight(rng, (K, 24), 0),
        "g4": _gain(rng), "b4": (rng.standard_normal(K) * 0.1).astype(np.float32), "Wd": _weight(rng, (K, 24)),
    }
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g1", "b1"], ["ln1"], axis=-1),
        helper.make_node("MatMul", ["ln1", "Wq"], ["q"]),
        helper.make_node("MatMul", ["ln1", "Wk"], ["k"]),
        helper.make_node("MatMul", ["ln1", "Wv"], ["v"]),
        helper.make_node("Shape", ["ln1"], ["ln1_shape"]),
        helper.make_node("Reshape", ["x", "shape2d"], ["x2d"]),
        helper.make_node("LayerNormalization", ["x2d", "g2", "b2"], ["ln2"], axis=-1),
        helper.make_node("Gemm", ["ln2", "Wg", "Cg"], ["g"], transB=1),
        helper.make_node("LayerNormalization", ["x", "g3"], ["ln3"], axis=-1),
        helper.make_node("Mul", ["ln3", "c3"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "Wm"], ["m"]),
        helper.make_node("LayerNormalization", ["x", "g4", "b4"], ["ln4"], axis=-1),
        helper.make_node("MatMul", ["ln4", "Wd"], ["d_mm"]),
        helper.make_node("Add", ["ln4", "x"], ["d_res"]),
    ]
    outputs = {"q": (1, T, 32), "k": (1, T, 32), "v": (1, T, 32), "g": (T, 16), "m": (1, T, 24),
               "d_mm": (1, T, 24), "d_res": (1, T, K)}
    return _model(nodes, outputs, inits, [helper.make_tensor_value_info("ln1_shape", TensorProto.INT64, [3])])


#: Activation read by each group's linear nodes in `transformer_model`.
SMOOTHED_ACTIVATIONS = ("ln1", "ln2", "scaled")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _samples(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, T, K)).astype(np.float32)} for _ in range(count)]


def _ir(model: onnx.ModelProto) -> ir.Model:
    graph = ir.serde.deserialize_model(model)
    InferShapesPass()(graph)  # as the quantizer does before smoothing
    return graph


def _smoothed(model: onnx.ModelProto, alpha: float, samples: list[dict[str, np.ndarray]],
              explicit: bool = False) -> tuple[onnx.ModelProto, dict[str, object]]:
    graph = _ir(model)
    stats = smooth(graph, samples, alpha, explicit=explicit)
    proto = ir.serde.serialize_model(graph)
    onnx.checker.check_model(proto, full_check=True)
    return proto, stats


def _run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    session = cpu_session(model, threads=1)
    names = [output.name for output in session.get_outputs()]
    return [dict(zip(names, session.run(names, feed))) for feed in feeds]


def _peaks(model: onnx.ModelProto, names: Sequence[str], samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel max|x| of the named activations over `samples`."""
    observers = {name: ChannelStatsObserver() for name in names}
    observe(_ir(model), observers, samples, threads=1)
    return {name: observer.max_abs() for name, observer in observers.items()}


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _input_of(model: onnx.ModelProto, output: str, index: int) -> np.ndarray:
    """The initializer read at input `index` by the node producing `output`."""
    (node,) = [n for n in model.graph.node if output in n.output]
    return _inits(model)[node.input[index]]


def _spread(peak: np.ndarray) -> float:
    return float(peak.max() / np.median(peak))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _assert_same_outputs(before: onnx.ModelProto, after: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> None:
    for want, got in zip(_run(before, feeds), _run(after, feeds)):
        assert want.keys() == got.keys()
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=FLOAT_RTOL,
                                       atol=FLOAT_RTOL * float(np.abs(want[name]).max()), err_msg=name)


# --------------------------------------------------------------------------------------------
# float equivalence and flatness
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return transformer_model()


@pytest.fixture(scope="module")
def calibration() -> list[dict[str, np.ndarray]]:
    return _samples(16, seed=1)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.85, 1.0])
def test_float_outputs_unchanged(model: onnx.ModelProto, calibration, alpha: float) -> None:
    smoothed, stats = _smoothed(model, alpha, calibration)
    assert stats == {"groups": 3, "nodes": 5, "skipped": {"consumer Add": 1}}
    _assert_same_outputs(model, smoothed, _samples(4, seed=2))


def test_alpha_half_flattens_activation_channels(model: onnx.ModelProto, calibration) -> None:
    smoothed, _ = _smoothed(model, 0.5, calibration)
    before = _peaks(model, SMOOTHED_ACTIVATIONS, calibration)
    after = _peaks(smoothed, SMOOTHED_ACTIVATIONS, calibration)
    for name in SMOOTHED_ACTIVATIONS:
        assert _spread(before[name]) > OUTLIER_GAIN / 2, name  # the model has the outliers it should
        assert _spread(after[name]) < _spread(before[name]) / FLATTER_BY, name


def test_alpha_one_moves_everything_to_the_weights(model: onnx.ModelProto, calibration) -> None:
    """s = max|X|: every smoothed channel peaks at exactly 1 on the calibration data."""
    smoothed, _ = _smoothed(model, 1.0, calibration)
    for name, peak in _peaks(smoothed, SMOOTHED_ACTIVATIONS, calibration).items():
        np.testing.assert_allclose(peak, 1.0, rtol=1e-5, err_msg=name)


def test_alpha_zero_moves_everything_to_the_activations(model: onnx.ModelProto, calibration) -> None:
    """s = 1 / max|W|: the weight rows peak at 1 (over a group's consumers), X grows by max|W_j|."""
    smoothed, _ = _smoothed(model, 0.0, calibration)
    before, after = _peaks(model, ["ln1"], calibration)["ln1"], _peaks(smoothed, ["ln1"], calibration)["ln1"]
    qkv_before = [_input_of(model, name, 1) for name in ("q", "k", "v")]
    qkv_after = [_input_of(smoothed, name, 1) for name in ("q", "k", "v")]
    np.testing.assert_allclose(np.max([np.abs(w).max(axis=1) for w in qkv_after], axis=0), 1.0, rtol=1e-6)
    row_peaks = np.max([np.abs(w).max(axis=1) for w in qkv_before], axis=0)
    np.testing.assert_allclose(after, before * row_peaks, rtol=1e-5)
    gemm_rows = np.abs(_input_of(smoothed, "g", 1)).max(axis=0)  # transB=1: channel j is column j
    np.testing.assert_allclose(gemm_rows, 1.0, rtol=1e-6)


def test_skipped_group_untouched_and_folds_need_no_new_nodes(model: onnx.ModelProto, calibration) -> None:
    smoothed, _ = _smoothed(model, 0.5, calibration)
    assert [n.op_type for n in smoothed.graph.node] == [n.op_type for n in model.graph.node]
    before, after = _inits(model), _inits(smoothed)
    assert after.keys() == before.keys()  # every constant rewritten in place: none was shared
    for name in ("g4", "b4", "Wd", "g3"):  # ln4's group, and ln3 (the Mul absorbs 1/s)
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    for name in ("g1", "b1", "Wq", "Wk", "Wv", "g2", "b2", "Wg", "c3", "Wm"):
        assert not np.array_equal(after[name], before[name]), name
    np.testing.assert_array_equal(after["Cg"], before["Cg"])  # Y = X W + C: the bias is unaffected


def test_explicit_smoothing_inserts_a_mul_only_the_linear_consumer_reads(model: onnx.ModelProto, calibration) -> None:
    """ln4 also feeds a residual Add: a Mul(ln4, 1/s) feeds its MatMul, the Add keeps reading ln4."""
    smoothed, stats = _smoothed(model, 0.5, calibration, explicit=True)
    assert stats == {"groups": 4, "inserted_mul": 1, "nodes": 6, "skipped": {}}
    (mul,) = [n for n in smoothed.graph.node if n.op_type == "Mul" and n.input[0] == "ln4"]
    readers = {n.op_type: list(n.input) for n in smoothed.graph.node if "ln4" in n.input or mul.output[0] in n.input}
    assert readers["MatMul"][0] == mul.output[0] and readers["Add"][0] == "ln4"
    _assert_same_outputs(model, smoothed, _samples(4, seed=2))
    before = _peaks(model, ["ln4"], calibration)["ln4"]
    after = _peaks(smoothed, [mul.output[0]], calibration)[mul.output[0]]
    assert _spread(before) > OUTLIER_GAIN / 2
    assert _spread(after) < _spread(before) / FLATTER_BY


# --------------------------------------------------------------------------------------------
# what cannot be folded, and sharing
# --------------------------------------------------------------------------------------------


def test_unfoldable_groups_are_skipped_by_reason() -> None:
    rng = np.random.default_rng(3)
    inits = {"g": _gain(rng), "shape2d": np.array([T, K], np.int64), "W0": _weight(rng, (K, 8)),
             "Ws": _weight(rng, (K, 8)), "Wo": _weight(rng, (K, 8)), "Wr": _weight(rng, (K, 8)),
             "Wp": _weight(rng, (8, K)), "Wt": _weight(rng, (8, T))}
    nodes = [
        helper.make_node("MatMul", ["x", "W0"], ["y0"]),  # producer: graph input
        helper.make_node("LayerNormalization", ["x", "g"], ["ln_a"]),
        helper.make_node("LayerNormalization", ["x", "g"], ["ln_b"]),
        helper.make_node("MatMul", ["ln_a", "Ws"], ["ya"]),  # Ws read by two groups
        helper.make_node("MatMul", ["ln_b", "Ws"], ["yb"]),
        helper.make_node("LayerNormalization", ["x", "g"], ["ln_out"]),  # also a graph output
        helper.make_node("MatMul", ["ln_out", "Wo"], ["yo"]),
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("MatMul", ["r", "Wr"], ["yr"]),
        helper.make_node("Reshape", ["x", "shape2d"], ["x2d"]),
        helper.make_node("Gemm", ["x2d", "Wp"], ["yp"], transB=1),
        helper.make_node("LayerNormalization", ["x2d", "g"], ["ln_t"]),
        helper.make_node("Gemm", ["ln_t", "Wt"], ["yt"], transA=1, transB=1),  # channels of ln_t are rows of A^T
    ]
    outputs = {"y0": (1, T, 8), "ya": (1, T, 8), "yb": (1, T, 8), "ln_out": (1, T, K), "yo": (1, T, 8),
               "yr": (1, T, 8), "yp": (T, 8), "yt": (K, 8)}
    original = _model(nodes, outputs, inits)
    smoothed, stats = _smoothed(original, 0.5, [])  # nothing to fold: the model is never run
    assert stats == {"groups": 0, "nodes": 0, "skipped": {
        "consumer Gemm": 1, "graph output": 1, "producer Relu": 1, "producer Reshape": 1,
        "producer graph input": 1, "shared weight": 2}}
    unchanged = ir.serde.serialize_model(_ir(original))
    assert onnx.printer.to_text(smoothed.graph) == onnx.printer.to_text(unchanged.graph)


def test_shared_layernorm_constants_are_copied() -> None:
    """Two LayerNorms reading one Scale get their own, each divided by its own group's s."""
    rng = np.random.default_rng(4)
    inits = {"g": _gain(rng), "b": (rng.standard_normal(K) * 0.1).astype(np.float32),
             "Wa": _weight(rng, (K, 8)), "Wb": _weight(rng, (K, 8)) * 10.0}
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln_a"]),
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln_b"]),
        helper.make_node("MatMul", ["ln_a", "Wa"], ["ya"]),
        helper.make_node("MatMul", ["ln_b", "Wb"], ["yb"]),
    ]
    original = _model(nodes, {"ya": (1, T, 8), "yb": (1, T, 8)}, inits)
    smoothed, stats = _smoothed(original, 0.5, _samples(8, seed=5))
    assert stats == {"groups": 2, "nodes": 2, "skipped": {}}
    scales = [tuple(n.input[1:]) for n in smoothed.graph.node if n.op_type == "LayerNormalization"]
    assert len(set(scales)) == 2 and len({name for pair in scales for name in pair}) == 4
    _assert_same_outputs(original, smoothed, _samples(4, seed=6))


def test_bad_arguments(model: onnx.ModelProto) -> None:
    with pytest.raises(ValueError, match="alpha"):
        smooth(_ir(model), _samples(1, seed=0), 1.5)
    with pytest.raises(BadInputError, match="samples"):
        smooth(_ir(model), [], 0.5)


def test_progress_is_reported(model: onnx.ModelProto) -> None:
    calls: list[tuple[int, int]] = []
    smooth(_ir(model), _samples(3, seed=0), 0.5, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


# --------------------------------------------------------------------------------------------
# int8
# --------------------------------------------------------------------------------------------


def _static_int8(model: onnx.ModelProto, samples: list[dict[str, np.ndarray]]) -> onnx.ModelProto:
    graph = _ir(model)
    plan = qdq.plan(graph, SCHEME.ops, asymmetric_activations=True)
    table = calibrate(graph, plan.calibration_tensors, samples, calibrator="minmax")
    qdq.apply(graph, plan, table, SCHEME)
    return ir.serde.serialize_model(graph)


def _worst_cosine(reference: onnx.ModelProto, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> float:
    pairs = zip(_run(reference, feeds), _run(model, feeds))
    return min(_cosine(got[name], want[name]) for want, got in pairs for name in SMOOTHED_OUTPUTS)


def test_static_int8_is_more_accurate_after_smoothing(model: onnx.ModelProto, calibration) -> None:
    smoothed, _ = _smoothed(model, 0.5, calibration)
    fresh = _samples(8, seed=7)
    plain = _worst_cosine(model, _static_int8(model, calibration), fresh)
    improved = _worst_cosine(model, _static_int8(smoothed, calibration), fresh)
    assert 1.0 - improved < (1.0 - plain) / INT8_ERROR_SHRINKS_BY, (plain, improved)
