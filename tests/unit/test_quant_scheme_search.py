"""Tests for the per-layer scheme search: static int8, dynamic int8 or float per node, held-out checks, "auto".

The models are built inline:

- `ranged_model`: two MatMuls calibrated on data with one sample 1000 times louder than the rest.
  The calibrated (static) range fits that sample and leaves every ordinary one a few int8 steps; a
  range measured per call (dynamic) fits each sample, so the search must pick dynamic for both.
- `cheap_outlier_model`: a large MatMul next to a small Add that int8 cannot carry; the Add saves
  no time in int8, so it is the one to keep float first.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec import int8
from edgec.quant import sensitivity
from edgec.quant.cost import node_times_ms
from edgec.quant.fallback import Budget, Evaluation, choose_schemes, costly_nodes, fallback_order, search
from edgec.quant.quantizer import Quantizer
from edgec.quant.schemes import compare_schemes
from edgec.quant.sensitivity import LayerSensitivity
from edgec.tensors import Feeds
from edgec.target import load_target, override_target

WIDTH = 32
TOKENS = 8


def _model(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], output: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "search", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, TOKENS, WIDTH])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, TOKENS, WIDTH])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def ranged_model() -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    w1, w2 = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32), \
        (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="mm2")]
    return _model(nodes, {"W1": w1, "W2": w2}, "y")


def cheap_outlier_model() -> onnx.ModelProto:
    """y = ((x @ W) + B) * M: B's huge channel 0, masked off by M, sets the int8 Add's output scale alone."""
    rng = np.random.default_rng(4)
    w = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
    bias, mask = np.zeros((1, 1, WIDTH), np.float32), np.ones((1, 1, WIDTH), np.float32)
    bias[..., 0], mask[..., 0] = 1e4, 0.0
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "B"], ["a"], name="add"),
             helper.make_node("Mul", ["a", "M"], ["y"], name="mask")]
    return _model(nodes, {"W": w, "B": bias, "M": mask}, "y")


def _ranged_feeds(seed: int, count: int, loud: int = 0) -> list[Feeds]:
    """Standard-normal samples; the first `loud` of them 1000 times larger (a rare outlier sample)."""
    rng = np.random.default_rng(seed)
    scales = [1e3 if index < loud else 1.0 for index in range(count)]
    return [{"x": (rng.standard_normal((1, TOKENS, WIDTH)) * scale).astype(np.float32)} for scale in scales]


def _target(**overrides: object):
    return override_target(load_target("cpu-x86-int8"), {"quant": {"ops": ["MatMul", "Add"]}, **overrides})


def _quantizer(model: onnx.ModelProto, samples: Sequence[Feeds]) -> Quantizer:
    target = _target()
    return Quantizer(ir.serde.deserialize_model(model), target.quant, samples, source="data",
                     dynamic_alternatives=True)


def _layer(node: str, scheme: str, sqnr_db: float) -> LayerSensitivity:
    metrics = {"sqnr_db": sqnr_db, "cosine_min": 0.9, "max_abs": 1.0}
    return LayerSensitivity(node, "MatMul", f"{node}_out", scheme, metrics, metrics, metrics)


# --------------------------------------------------------------------------------------------
# scheme choice and order
# --------------------------------------------------------------------------------------------


def test_costly_nodes_hold_the_share_of_float_time() -> None:
    float_ms = {"a": 0.5, "b": 3.0, "c": 5.0, "d": 1.0, "e": 0.5}
    candidates = list("abcde")
    assert costly_nodes(float_ms, candidates, 0.8) == ["b", "c"]  # 8 of 10 ms, in candidate order
    assert costly_nodes(float_ms, candidates, 0.9) == ["b", "c", "d"]
    assert costly_nodes(float_ms, candidates, 1.0) == candidates
    assert costly_nodes({}, candidates, 0.5) == candidates  # no profile: measure everything


def test_unmeasured_nodes_go_float_first_the_ones_saving_least_first() -> None:
    layers = [_layer("big", "static", 20.0), _layer("mid", "static", 10.0)]
    schemes = {"big": "static", "mid": "static", "add1": "static", "add2": "static", "table": "lookup"}
    float_ms = {"big": 5.0, "mid": 1.0, "add1": 0.02, "add2": 0.01, "table": 0.01}
    assert fallback_order(layers, schemes, float_ms) == ["add2", "add1", "mid", "big", "table"]


def test_dynamic_beats_static_when_one_calibrated_range_cannot_serve_every_sample() -> None:
    quantizer = _quantizer(ranged_model(), _ranged_feeds(0, 12, loud=1))
    assert quantizer.options("mm1") == ("static", "dynamic") and quantizer.default_scheme("mm1") == "static"
    samples = _ranged_feeds(1, 12)
    compared = compare_schemes(quantizer, samples)
    assert set(compared) == {"mm1", "mm2"}
    assert compared["mm1"]["dynamic"] > compared["mm1"]["static"] + 10
    assert choose_schemes(compared, quantizer.default_scheme) == {"mm1": "dynamic", "mm2": "dynamic"}
    # the simulation agrees with real builds: the whole model with only mm1 quantized, each way
    layers = {scheme: sensitivity.analyse(quantizer, samples, schemes={"mm1": scheme})[0] for scheme in ("static", "dynamic")}
    assert layers["dynamic"].model_alone["sqnr_db"] > layers["static"].model_alone["sqnr_db"] + 10


def test_a_near_tie_keeps_the_targets_default_scheme() -> None:
    compared = {"a": {"static": 30.0, "dynamic": 30.5}, "b": {"static": 20.0, "dynamic": 35.0},
                "c": {"dynamic": 25.0}}
    assert choose_schemes(compared, lambda node: "static") == {"a": "static", "b": "dynamic", "c": "dynamic"}


def test_a_harmful_layer_that_saves_no_time_goes_float_first() -> None:
    """"big" hurts more, but it holds all the time int8 can save; "cheap" hurts less and saves nothing."""
    layers = [_layer("big", "dynamic", 20.0), _layer("cheap", "static", 25.0), _layer("harmless", "static", math.inf)]
    schemes = {"big": "dynamic", "cheap": "static", "harmless": "static"}
    assert fallback_order(layers, schemes, {"big": 5.0, "cheap": 0.0, "harmless": 1.0}) == ["cheap", "big", "harmless"]
    # with equal float time, harm alone decides
    assert fallback_order(layers, schemes, {"big": 1.0, "cheap": 1.0, "harmless": 1.0})[:2] == ["big", "cheap"]
    # an int8 lookup table saves size, not time: it goes float last
    layers.append(_layer("table", "lookup", 15.0))
    order = fallback_order(layers, {**schemes, "table": "lookup"}, {"big": 5.0, "cheap": 0.0, "harmless": 1.0})
    assert order == ["cheap", "big", "harmless", "table"]


def test_node_times_are_profiled_by_node_name() -> None:
    model = ir.serde.deserialize_model(cheap_outlier_model())
    times = node_times_ms(model, _ranged_feeds(0, 3), threads=1)
    assert {"mm", "add"} <= set(times) and all(ms >= 0 for ms in times.values())
    assert times["mm"] > 0


def test_search_keeps_the_cheap_outlier_float_and_the_big_layer_int8() -> None:
    samples = _ranged_feeds(0, 8)
    quantizer = _quantizer(cheap_outlier_model(), samples)
    schemes = {"mm": "dynamic", "add": "static"}
    layers = sensitivity.analyse(quantizer, samples, schemes=schemes)
    order = fallback_order(layers, schemes, {"mm": 1.0, "add": 0.0})  # fixed times: a tiny model's profile is noise
    assert order[0] == "add"
    result = search(quantizer, int8.Evaluator(quantizer.model, samples, None, 1), Budget(min_cosine=0.99), order,
                    schemes)
    assert result.met and result.kept_float == ["add"] and result.schemes == {"mm": "dynamic"}


# --------------------------------------------------------------------------------------------
# how many builds the search costs
# --------------------------------------------------------------------------------------------


class _CountingQuantizer:
    """Stands in for a Quantizer: counts builds; the "model" is how many ladder steps it took.

    With `tokens`, every node went per-token before any went float, so a float node took two steps.
    """

    def __init__(self, tokens: bool = False) -> None:
        self.builds = 0
        self.tokens = tokens

    def build(self, keep_float: Sequence[str] = (), dynamic: Sequence[str] | None = None,
              per_token: Sequence[str] = ()) -> tuple[int, dict]:
        self.builds += 1
        return len(keep_float) * (2 if self.tokens else 1) + len(per_token), {}


class _ThresholdEvaluator:
    """The budget holds once `needed` nodes are float (cosine grows with every float node)."""

    def __init__(self, needed: int | None) -> None:
        self.needed = needed
        self.evaluations = 0

    def evaluate(self, steps: int) -> Evaluation:
        self.evaluations += 1
        met = self.needed is not None and steps >= self.needed
        return Evaluation(0.99 if met else 0.9 + steps * 1e-4, None)


@pytest.mark.parametrize("needed", [0, 1, 2, 17, 38, 39, None])
def test_search_bisects_in_about_log2_builds(needed: int | None) -> None:
    nodes = [f"n{index}" for index in range(40)]
    quantizer, evaluator = _CountingQuantizer(), _ThresholdEvaluator(needed)
    result = search(quantizer, evaluator, Budget(min_cosine=0.99), nodes, dict.fromkeys(nodes, "static"))
    assert quantizer.builds == evaluator.evaluations == len(result.attempts)
    assert quantizer.builds <= math.ceil(math.log2(len(nodes))) + 2  # the stepping search took up to 24
    if needed is None:
        assert not result.met and len(result.kept_float) == len(nodes) - 1  # the closest attempt
    else:
        assert result.met and len(result.kept_float) == needed


@pytest.mark.parametrize("needed", [3, 10, 15])
def test_per_token_steps_come_before_any_node_goes_float(needed: int) -> None:
    """Ten nodes can go per-token: the ladder moves them first (3 -> three per-token), then sends nodes float."""
    nodes = [f"n{index}" for index in range(10)]
    quantizer, evaluator = _CountingQuantizer(tokens=True), _ThresholdEvaluator(needed)
    result = search(quantizer, evaluator, Budget(min_cosine=0.99), nodes, dict.fromkeys(nodes, "dynamic"),
                    per_token=nodes)
    assert result.met and result.steps == needed
    tokens = [node for node, scheme in result.schemes.items() if scheme == "token"]
    if needed <= len(nodes):
        assert tokens == nodes[:needed] and not result.kept_float
    else:
        assert result.kept_float == nodes[:needed - len(nodes)] and tokens == nodes[needed - len(nodes):]
    assert quantizer.builds <= math.ceil(math.log2(2 * len(nodes))) + 2


def test_a_node_without_a_per_token_form_goes_float_in_the_first_pass() -> None:
    """Order a, b, c with only b able to go per-token: a float, b per token, c float, then b float."""
    order = ["a", "b", "c"]
    quantizer, evaluator = _CountingQuantizer(), _ThresholdEvaluator(None)
    result = search(quantizer, evaluator, Budget(min_cosine=0.99), order, {"a": "static", "b": "dynamic", "c": "static"},
                    per_token={"b"})
    assert [(attempt.kept_float, attempt.per_token) for attempt in result.attempts] == [([], 0), (["a", "c"], 1)]


def test_lookup_tables_go_float_only_after_every_other_step() -> None:
    """Ladder for t (table), m (per-token capable): m per token, m float, t float; the search stops before t."""
    quantizer, evaluator = _CountingQuantizer(), _ThresholdEvaluator(None)
    result = search(quantizer, evaluator, Budget(min_cosine=0.99), ["t", "m"], {"t": "lookup", "m": "dynamic"},
                    per_token={"m"})
    assert [(attempt.kept_float, attempt.per_token) for attempt in result.attempts] == [([], 0), (["m"], 0)]


def test_the_int8_step_costs_one_build_per_sensitivity_record_plus_the_search(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = _ranged_feeds(0, 16, loud=1)
    builds: list[int] = []
    original = Quantizer.build
    monkeypatch.setattr(Quantizer, "build", lambda self, *a, **k: (builds.append(1), original(self, *a, **k))[1])
    request = int8.Int8Request(budget=Budget(min_cosine=0.99), eval_samples=_ranged_feeds(1, 16))
    result = int8.quantize(ir.serde.deserialize_model(ranged_model()), _target(), samples, "data", request,
                           lambda message: None)
    report = result.stats["fallback"]
    # one "alone" build per measured MatMul, under its chosen scheme; the float profile decides how many
    # are measured (`costly_nodes`), and on a busy machine one of two equal MatMuls can time at 97%
    records = len(json.loads(result.report_json)["layers"])
    assert records in (1, 2)
    searched = len(report["attempts"])
    timed = 1 if report["kept_float"] else 0  # the all-int8 model, timed next to the chosen one
    assert len(builds) == 1 + records + searched + timed  # 1: sensitivity's cumulative build
    assert report["met"] and report["schemes"] == {"dynamic": 2}


# --------------------------------------------------------------------------------------------
# held-out check
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("runtime", "fused"), [("onnxruntime", True), ("tflite", False)])
def test_per_token_nodes_take_onnx_runtimes_fused_kernel_only_where_the_runtime_has_it(runtime: str,
                                                                                       fused: bool) -> None:
    """ONNX Runtime targets get MatMulNBits (int8 per row and block, fused); TFLite the portable pattern it lowers."""
    captured: list[Quantizer] = []
    target = override_target(load_target("tflite-int8" if runtime == "tflite" else "cpu-x86-int8"),
                             {"quant": {"ops": ["MatMul"]}})
    original = int8.Quantizer

    def spy(*args: object, **kwargs: object) -> Quantizer:
        captured.append(original(*args, **kwargs))
        return captured[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(int8, "Quantizer", spy)
        int8.quantize(ir.serde.deserialize_model(ranged_model()), target, _ranged_feeds(0, 8), "data",
                      int8.Int8Request(), lambda message: None)
    model, stats = captured[0].build(dynamic=["mm1", "mm2"], per_token=["mm1", "mm2"])
    ops = Counter(node.op_type for node in model.graph)
    assert stats["dynamic"]["per_token"] == 2
    assert (ops["MatMulNBits"], ops["MatMulInteger"]) == ((2, 0) if fused else (0, 2))


def test_split_holdout_interleaves_samples_and_labels() -> None:
    samples = [{"x": np.full((1,), index, np.float32)} for index in range(7)]
    searched, held, search_labels, held_labels = int8.split_holdout(samples, np.arange(7))
    assert [int(s["x"][0]) for s in searched] == [0, 2, 4, 6] and [int(s["x"][0]) for s in held] == [1, 3, 5]
    assert list(search_labels) == [0, 2, 4, 6] and list(held_labels) == [1, 3, 5]
    few = samples[: int8.HOLDOUT_MIN_SAMPLES - 1]
    assert int8.split_holdout(few, None) == (few, [], None, None)


def test_a_missed_holdout_check_is_said_and_searched_again_on_all_samples() -> None:
    """Static only (no dynamic alternative): the search part is loud, the held-out part quiet."""
    loud, quiet = _ranged_feeds(0, 16)[0::2], _ranged_feeds(0, 16)[1::2]
    evaluation = [sample for pair in zip(loud, quiet) for sample in pair]  # even: loud (searched), odd: quiet
    target = override_target(_target(), {"runtime": "onnxruntime"})
    messages: list[str] = []
    model = ir.serde.deserialize_model(ranged_model())
    result = int8.quantize(model, target, loud, "data",
                           int8.Int8Request(budget=Budget(min_cosine=0.999), eval_samples=evaluation), messages.append)
    report = result.stats["fallback"]
    assert report["search"]["samples"] == report["holdout"]["samples"] == 8
    assert report["search"]["min_cosine"] >= 0.999 or not report["met"]
    # the search keeps a margin for unseen samples; the held-out samples are unseen: their own minimum decides
    assert "expected_worst_cosine" in report["search"] and "expected_worst_cosine" not in report["holdout"]


# --------------------------------------------------------------------------------------------
# precision auto
# --------------------------------------------------------------------------------------------


def _evaluation(cosine: float) -> Evaluation:
    return Evaluation(cosine, None)


@pytest.mark.parametrize(("p50", "cosines", "chosen"), [
    ({"fp32": 1.0, "int8": 0.95}, {"int8": 0.999}, "fp32"),  # accurate, but 1.05x does not pay
    ({"fp32": 1.0, "int8": 0.5}, {"int8": 0.9}, "fp32"),  # fast, but misses the bar
    ({"fp32": 1.0, "int8": 1.2}, {"int8": 0.999}, "fp32"),  # slower than float
    ({"fp32": 1.0, "int8": 0.4, "int8 dynamic": 0.5}, {"int8": 0.9, "int8 dynamic": 0.999}, "int8 dynamic"),
    ({"fp32": 1.0, "int8": 0.4, "int8 dynamic": 0.5}, {"int8": 0.999, "int8 dynamic": 0.999}, "int8"),
])
def test_auto_ships_the_fastest_option_that_keeps_the_bar_and_says_why_the_others_lost(
        p50: dict[str, float], cosines: dict[str, float], chosen: str) -> None:
    label, record = int8._choose_precision(p50, {k: _evaluation(v) for k, v in cosines.items()},
                                           Budget(min_cosine=0.99), lambda message: None)
    assert label == chosen and record["variant"] == chosen
    assert record["chosen"] == ("fp32" if chosen == "fp32" else "int8")
    options = record["options"]
    assert "lost" not in options[chosen]
    assert all(option["lost"] for label, option in options.items() if label != chosen)


def test_auto_chooses_fp32_when_no_int8_option_keeps_the_accuracy_bar() -> None:
    """Quiet and loud samples: static int8 fails the quiet ones; the bar is beyond dynamic int8 too."""
    samples = _ranged_feeds(0, 8)
    target = _target(precision="auto", thresholds={"min_cosine": 0.999999})
    messages: list[str] = []
    result = int8.quantize(ir.serde.deserialize_model(ranged_model()), target, samples, "data", int8.Int8Request(),
                           messages.append)
    assert result.precision == "fp32" and set(result.stats) == {"auto"}
    options = result.stats["auto"]["options"]
    assert set(options) == {"fp32", "int8", "int8 dynamic"}
    assert all(options[label]["lost"].startswith("misses") for label in ("int8", "int8 dynamic"))
    assert any(message.startswith("precision auto: fp32") for message in messages)


@pytest.mark.parametrize(("p50", "warned"), [({"fp32": 1.0, "int8": 1.3}, True), ({"fp32": 1.0, "int8": 0.7}, False),
                                             ({"fp32": 1.0, "int8 (all nodes)": 0.5, "int8 (chosen)": 1.1}, True)])
def test_an_int8_model_timed_slower_than_fp32_is_warned_about_naming_auto(p50: dict[str, float], warned: bool) -> None:
    messages: list[str] = []
    int8._warn_if_slower(p50, messages.append)
    assert bool(messages) is warned
    if warned:
        assert messages[0].startswith("warning: measured slower than fp32") and "--precision auto" in messages[0]
