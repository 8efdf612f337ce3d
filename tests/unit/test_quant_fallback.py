"""Tests for the accuracy fallback: Quantizer variants, per-layer sensitivity, and the budget search.

The model is a Conv -> Relu -> Conv -> Relu -> Flatten -> Gemm chain whose middle Conv is built to be
the one layer int8 cannot carry: the first Conv has a dead output channel (zero weights, negative
bias, so its ReLU output is always 0) and the second Conv has a huge weight on that channel in every
output channel. In float the huge weights multiply zeros and change nothing; quantized per channel,
they set every channel's scale, and all the useful weights round to a few steps. Keeping that one
layer float restores the model; no other layer matters nearly as much.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import int8
from edgec.quant import sensitivity
from edgec.quant.fallback import Budget, Evaluation, Evaluator, search
from edgec.quant.quantizer import Quantizer
from edgec.tensors import Feeds
from edgec.backends.onnxruntime.session import cpu_session
from edgec.target import QuantScheme, TensorQuant, load_target, override_target

#: the quantizable nodes, in graph order, and the one whose weights carry the outlier
CANDIDATES = ["conv1", "conv2", "fc"]
OUTLIER = "conv2"
#: how far the outlier weight sits above the layer's largest ordinary weight
OUTLIER_FACTOR = 100.0
SCHEME = QuantScheme(weights=TensorQuant("int8", symmetric=True, granularity="per_channel"),
                     activations=TensorQuant("uint8", symmetric=False, granularity="per_tensor"))
SAMPLES = 16


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def outlier_model() -> onnx.ModelProto:
    rng = np.random.default_rng(20)
    w1, b1 = _he(rng, (8, 3, 3, 3), 27), (rng.standard_normal(8) * 0.1).astype(np.float32)
    w1[0], b1[0] = 0.0, -1.0  # dead channel: relu1's channel 0 is always 0
    w2, b2 = _he(rng, (8, 8, 3, 3), 72), (rng.standard_normal(8) * 0.1).astype(np.float32)
    w2[:, 0, 1, 1] = OUTLIER_FACTOR * np.abs(w2).max()  # reads only the dead channel: no effect in float
    w3, b3 = _he(rng, (10, 8 * 6 * 6), 8 * 6 * 6), (rng.standard_normal(10) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "W3", "B3"], ["logits"], name="fc", transB=1),
    ]
    inits = {"W1": w1, "B1": b1, "W2": w2, "B2": b2, "W3": w3, "B3": b3}
    graph = helper.make_graph(nodes, "outlier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _feeds(seed: int) -> list[Feeds]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(SAMPLES)]


def _quantizer() -> Quantizer:
    return Quantizer(ir.serde.deserialize_model(outlier_model()), SCHEME, _feeds(seed=0), source="data")


def _weight_sources(model: ir.Model) -> dict[str, str | None]:
    """Candidate node -> op type producing its weight input (None: a float initializer)."""
    return {node.name: (node.inputs[1].producer().op_type if node.inputs[1].producer() is not None else None)
            for node in model.graph if node.name in CANDIDATES}


def _defaults(quantizer: Quantizer) -> dict[str, str]:
    return {name: quantizer.default_scheme(name) for name in quantizer.candidates}


def _strict_json(text: str) -> object:
    def reject(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def quantizer() -> Quantizer:
    return _quantizer()


@pytest.fixture(scope="module")
def eval_samples() -> list[Feeds]:
    return _feeds(seed=1)


@pytest.fixture(scope="module")
def layers(quantizer: Quantizer, eval_samples: list[Feeds]) -> list[sensitivity.LayerSensitivity]:
    return sensitivity.analyse(quantizer, eval_samples)


@pytest.fixture(scope="module")
def evaluator(quantizer: Quantizer, eval_samples: list[Feeds]) -> Evaluator:
    """Labels are the float model's own classes: float accuracy is 100%, int8 loses what it flips."""
    session = cpu_session(ir.serde.serialize_model(quantizer.model), threads=0)
    labels = np.array([int(session.run(None, dict(feeds))[0].argmax()) for feeds in eval_samples])
    return Evaluator(quantizer.model, eval_samples, labels, threads=0)


@pytest.fixture(scope="module")
def reference_points(quantizer: Quantizer, evaluator: Evaluator) -> tuple[Evaluation, Evaluation]:
    """(every node int8, every node but the outlier layer int8)."""
    return evaluator.evaluate(quantizer.build()[0]), evaluator.evaluate(quantizer.build([OUTLIER])[0])


# --------------------------------------------------------------------------------------------
# Quantizer
# --------------------------------------------------------------------------------------------


def test_candidates_are_the_quantizable_nodes(quantizer: Quantizer) -> None:
    assert quantizer.candidates == CANDIDATES
    assert quantizer.outputs == {"conv1": "c1", "conv2": "c2", "fc": "logits"}


def test_build_keeps_the_named_node_float(quantizer: Quantizer) -> None:
    model, stats = quantizer.build(keep_float=[OUTLIER])
    assert _weight_sources(model) == {"conv1": "DequantizeLinear", "conv2": None, "fc": "DequantizeLinear"}
    assert stats["kept_float"] == [OUTLIER] and stats["quantized_nodes"] == {"Conv": 1, "Gemm": 1}
    everything, stats = quantizer.build()
    assert set(_weight_sources(everything).values()) == {"DequantizeLinear"}
    assert stats["kept_float"] == [] and stats["quantized_nodes"] == {"Conv": 2, "Gemm": 1}
    onnx.checker.check_model(ir.serde.serialize_model(model), full_check=True)


def test_keeping_a_node_float_calibrates_the_tensors_it_exposes() -> None:
    quantizer = _quantizer()
    # folded ReLU outputs, and no logits: a Gemm graph output stays float
    assert set(quantizer.table.ranges) == {"x", "r1", "r2"}
    quantizer.build(keep_float=[OUTLIER])
    assert "f" in quantizer.table.ranges  # fc's input no longer shares conv2's quantized output


# --------------------------------------------------------------------------------------------
# sensitivity
# --------------------------------------------------------------------------------------------


def test_sensitivity_ranks_the_outlier_layer_first(layers: Sequence[sensitivity.LayerSensitivity]) -> None:
    assert [layer.node for layer in layers] == CANDIDATES
    assert sensitivity.ranking(layers)[0] == OUTLIER
    by_name = {layer.node: layer for layer in layers}
    outlier = by_name[OUTLIER]
    assert (outlier.op_type, outlier.tensor) == ("Conv", "c2")
    for other in (layer for layer in layers if layer.node != OUTLIER):
        assert outlier.model_alone["sqnr_db"] < other.model_alone["sqnr_db"]
        assert outlier.alone["sqnr_db"] < other.alone["sqnr_db"]
    # cumulative: the last layer's output carries the outlier layer's error when every node is quantized
    fc = by_name["fc"]
    assert fc.cumulative["sqnr_db"] < fc.alone["sqnr_db"]


def test_report_json_is_strict_json_most_harmful_first(layers: Sequence[sensitivity.LayerSensitivity]) -> None:
    report = _strict_json(sensitivity.report_json(layers, {"samples": SAMPLES, "target": "test"}))
    assert report["schema"] == sensitivity.SCHEMA and report["samples"] == SAMPLES and report["target"] == "test"
    names = [layer["node"] for layer in report["layers"]]
    assert names == sensitivity.ranking(layers) and names[0] == OUTLIER and sorted(names) == sorted(CANDIDATES)
    sqnr = [layer["model_alone"]["sqnr_db"] for layer in report["layers"]]
    assert sqnr == sorted(sqnr)
    for layer in report["layers"]:
        assert set(layer) == {"node", "op_type", "tensor", "scheme", "alone", "cumulative", "model_alone"}
        for metrics in (layer["alone"], layer["cumulative"], layer["model_alone"]):
            assert set(metrics) == {"sqnr_db", "cosine_min", "max_abs"}


def test_worst_table_lists_the_outlier_layer_first(layers: Sequence[sensitivity.LayerSensitivity]) -> None:
    rows = sensitivity.worst_table(layers).splitlines()
    assert len(rows) == 1 + len(CANDIDATES) and rows[0].startswith("node")
    assert rows[1].split()[:2] == [OUTLIER, "Conv"]
    assert len(sensitivity.worst_table(layers, count=1).splitlines()) == 2


def test_worst_table_prints_long_node_names_whole() -> None:
    long_name = "encoder/layer.5/attention/output/dense/MatMul_with_a_name_longer_than_forty_characters"
    metrics = {"sqnr_db": 20.0, "cosine_min": 0.99, "max_abs": 0.1}
    layer = sensitivity.LayerSensitivity(long_name, "MatMul", "t", "dynamic", metrics, metrics, metrics)
    assert sensitivity.worst_table([layer]).splitlines()[1].split()[0] == long_name


# --------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------


def _between(kind: str, all_int8: Evaluation, fixed: Evaluation) -> Budget:
    """A budget the all-int8 model misses and the model with the outlier layer float meets."""
    if kind == "cosine":
        assert all_int8.judged_cosine < fixed.judged_cosine
        return Budget(min_cosine=(all_int8.judged_cosine + fixed.judged_cosine) / 2)
    assert fixed.accuracy_drop_pp < all_int8.accuracy_drop_pp
    return Budget(max_accuracy_drop_pp=(all_int8.accuracy_drop_pp + fixed.accuracy_drop_pp) / 2)


@pytest.mark.parametrize("kind", ["cosine", "accuracy"])
def test_search_keeps_exactly_the_outlier_layer_float(
    quantizer: Quantizer, evaluator: Evaluator, layers: Sequence[sensitivity.LayerSensitivity],
    reference_points: tuple[Evaluation, Evaluation], kind: str,
) -> None:
    all_int8, fixed = reference_points
    budget = _between(kind, all_int8, fixed)
    order = sensitivity.ranking(layers)
    result = search(quantizer, evaluator, budget, order, _defaults(quantizer))
    assert result.met and result.kept_float == [OUTLIER]
    # none float, all but one float, then the bisection's middle
    assert [attempt.kept_float for attempt in result.attempts] == [[], order[:2], [OUTLIER]]
    assert result.attempts[0].evaluation == all_int8 and result.evaluation == fixed
    assert result.stats["kept_float"] == [OUTLIER]
    assert _weight_sources(result.model) == {"conv1": "DequantizeLinear", "conv2": None, "fc": "DequantizeLinear"}


def test_the_search_judges_a_cosine_bar_on_the_expected_worst_sample_the_holdout_on_its_own(
    quantizer: Quantizer, eval_samples: list[Feeds], layers: Sequence[sensitivity.LayerSensitivity],
) -> None:
    """A bar between the outlier-float model's expected worst and its seen minimum: met as seen, missed with the margin."""
    margin = Evaluator(quantizer.model, eval_samples, None, threads=0)
    seen_only = Evaluator(quantizer.model, eval_samples, None, threads=0, extrapolate=False)
    fixed = margin.evaluate(quantizer.build([OUTLIER])[0])
    assert fixed.expected_worst_cosine < fixed.min_cosine
    budget = Budget(min_cosine=(fixed.expected_worst_cosine + fixed.min_cosine) / 2)
    order = sensitivity.ranking(layers)
    assert search(quantizer, seen_only, budget, order, _defaults(quantizer)).kept_float == [OUTLIER]
    result = search(quantizer, margin, budget, order, _defaults(quantizer))
    assert result.kept_float != [OUTLIER]
    assert all(attempt.evaluation.expected_worst_cosine is not None for attempt in result.attempts)
    assert result.evaluation.meets(budget) is result.met
    assert seen_only.evaluate(quantizer.build([OUTLIER])[0]).expected_worst_cosine is None


def test_impossible_budget_returns_the_best_attempt(quantizer: Quantizer, evaluator: Evaluator,
                                                    layers: Sequence[sensitivity.LayerSensitivity]) -> None:
    order = sensitivity.ranking(layers)
    result = search(quantizer, evaluator, Budget(min_cosine=1.0), order, _defaults(quantizer))
    assert not result.met
    assert [attempt.kept_float for attempt in result.attempts] == [[], order[:2]]  # both ends miss: no bisection
    cosines = [attempt.evaluation.min_cosine for attempt in result.attempts]
    assert max(cosines) < 1.0  # no attempt met it by luck
    best = result.attempts[cosines.index(max(cosines))]
    assert result.kept_float == best.kept_float and result.evaluation == best.evaluation
    assert OUTLIER in result.kept_float and len(result.kept_float) < len(CANDIDATES)
    assert [name for name, source in _weight_sources(result.model).items() if source is None] == \
        [name for name in CANDIDATES if name in result.kept_float]


@pytest.mark.parametrize(("keep_float", "warned"), [((), True), (("conv2",), False)])
def test_int8_step_without_a_budget_warns_when_drift_breaks_the_target_threshold(
        keep_float: tuple[str, ...], warned: bool) -> None:
    """All-int8, the outlier layer wrecks the logits; kept float, the model is within the target's min_cosine."""
    overrides = {"quant": {"ops": ["Conv", "Gemm"], "keep_float": list(keep_float)}, "thresholds": {"min_cosine": 0.95}}
    target = override_target(load_target("cpu-x86-int8"), overrides)  # all-int8 measures 0.73, conv2 float 0.98
    messages: list[str] = []
    result = int8.quantize(ir.serde.deserialize_model(outlier_model()), target, _feeds(seed=0), "data",
                           int8.Int8Request(), messages.append)
    drift = result.stats["drift"]
    assert drift["samples"] == SAMPLES and drift["threshold"] == target.thresholds["min_cosine"]
    assert (drift["min_cosine"] < drift["threshold"]) is warned
    assert any(message.startswith("warning: below the target's min_cosine") for message in messages) is warned
    assert any(f"min output cosine {drift['min_cosine']:.6f}" in message for message in messages)


def test_sensitivity_reads_a_layer_whose_relu_folds_into_the_graph_output() -> None:
    """MatMul -> Relu as the graph output: the build folds the Relu and renames the MatMul's tensor.

    The layer is still measured on its own output (the MatMul's, before the Relu), not missed.
    """
    rng = np.random.default_rng(3)
    nodes, inits, previous = [], {}, "x"
    for i in range(3):
        inits[f"w{i}"] = _he(rng, (16, 16), 16)
        nodes += [helper.make_node("MatMul", [previous, f"w{i}"], [f"m{i}"], name=f"mm{i}"),
                  helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}")]
        previous = f"r{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, 16])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    feeds = [{"x": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(8)]
    quantizer = Quantizer(model, load_target("cpu-x86-int8").quant, feeds, source="data")
    built, _ = quantizer.build()
    assert "m2" not in {value.name for node in built.graph for value in node.outputs}  # the rename happened

    layers = {layer.node: layer for layer in sensitivity.analyse(quantizer, feeds)}
    assert set(layers) == {"mm0", "mm1", "mm2"} and layers["mm2"].tensor == "m2"
    # int8 error on one 16-wide MatMul is small; comparing the Relu'd output with the MatMul's would not be
    assert 25.0 < layers["mm2"].alone["sqnr_db"] < 80.0
