"""Accuracy-driven mixed precision: per node, static int8, dynamic int8 or float, until an accuracy budget holds.

The budget is relative to the float model on evaluation samples: a maximum top-1 accuracy drop
(with labels) and/or a minimum output cosine on every sample. Each node that can be static or
dynamic gets the more accurate of the two (`choose_schemes`); nodes then go float in
order of harm per millisecond of float time (`fallback_order`), and `search` bisects for the
fewest float nodes that keep the budget. When even keeping all but one node float misses the
budget, the best attempt is returned with `met=False` for the caller to report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from edgec.harness.accuracy import drift
from edgec.quant.calibrator import run_exposing
from edgec.quant.quantizer import Quantizer
from edgec.quant.sensitivity import LayerSensitivity
from edgec.quant import tail
from edgec.tensors import Feeds

__all__ = ["Budget", "Evaluator", "Attempt", "FallbackResult", "Runner", "choose_schemes", "costly_nodes",
           "fallback_order", "search", "TIE_DB"]

Say = Callable[[str], None]
#: Runs a model on samples and returns each sample's outputs by name (how a candidate is judged).
Runner = Callable[[ir.Model, Sequence[Feeds]], list[dict[str, np.ndarray]]]
#: Two schemes whose model-output SQNR differ by at most this are a tie (noise on a few dozen samples).
TIE_DB = 1.0
#: Float time below this (ms) counts as this much, so harm per millisecond stays finite.
MIN_NODE_MS = 1e-3


@dataclass(frozen=True)
class Budget:
    """Accuracy the int8 model must keep against the float model; None = not constrained."""

    max_accuracy_drop_pp: float | None = None
    min_cosine: float | None = None

    def __bool__(self) -> bool:
        return self.max_accuracy_drop_pp is not None or self.min_cosine is not None

    def describe(self) -> str:
        parts = []
        if self.max_accuracy_drop_pp is not None:
            parts.append(f"accuracy drop <= {self.max_accuracy_drop_pp:g} pp")
        if self.min_cosine is not None:
            parts.append(f"output cosine >= {self.min_cosine:g} on every sample")
        return " and ".join(parts)


@dataclass(frozen=True)
class Evaluation:
    """How one candidate model compares with the float model on the evaluation samples.

    `expected_worst_cosine` (`tail.expected_worst_cosine`, over every output) is where the worst
    of 4x as many samples is expected; when measured, the cosine bar is judged on it, so that a
    budget met on the searched samples keeps a margin, sized by their own tail, for unseen ones.
    """

    min_cosine: float
    accuracy_drop_pp: float | None
    expected_worst_cosine: float | None = None

    @property
    def judged_cosine(self) -> float:
        if self.expected_worst_cosine is None:
            return self.min_cosine
        return min(self.min_cosine, self.expected_worst_cosine)  # the per-sample cosines it comes from are rounded

    def meets(self, budget: Budget) -> bool:
        cosine_ok = budget.min_cosine is None or self.judged_cosine >= budget.min_cosine
        drop_ok = budget.max_accuracy_drop_pp is None or (
            self.accuracy_drop_pp is not None and self.accuracy_drop_pp <= budget.max_accuracy_drop_pp)
        return cosine_ok and drop_ok

    def score(self, budget: Budget) -> tuple[float, float]:
        """Larger is better: how far inside (or outside) the budget, accuracy first."""
        drop = -self.accuracy_drop_pp if self.accuracy_drop_pp is not None and budget.max_accuracy_drop_pp is not None else 0.0
        return drop, self.judged_cosine if not math.isnan(self.judged_cosine) else -math.inf

    def to_dict(self) -> dict[str, Any]:
        record = {"min_cosine": self.min_cosine, "accuracy_drop_pp": self.accuracy_drop_pp}
        if self.expected_worst_cosine is not None:
            record["expected_worst_cosine"] = self.expected_worst_cosine
        return record


class Evaluator:
    """Runs candidate models on fixed evaluation samples against the float model's outputs.

    The float reference always runs in ONNX Runtime; candidates run through `run` when given (the
    target's own runtime, when its artifact is not the Q/DQ graph itself), else in ONNX Runtime too.
    With `extrapolate` (the search's samples) each evaluation also carries the expected worst cosine
    over more samples (`tail`); without it (a held-out check) the samples' own minimum is the verdict.
    """

    def __init__(self, float_model: ir.Model, samples: Sequence[Feeds], labels: np.ndarray | None, threads: int,
                 run: Runner | None = None, *, extrapolate: bool = True) -> None:
        self.samples = samples
        self.labels = labels
        self.threads = threads
        self.extrapolate = extrapolate
        self.run: Runner = run or (lambda model, feeds: run_exposing(model, [], feeds, threads))
        self.reference = run_exposing(float_model, [], samples, threads)

    def evaluate(self, model: ir.Model) -> Evaluation:
        result = drift(self.run(model, self.samples), self.reference, self.labels)
        outputs = result["outputs"].values()
        cosine = min(output["cosine_min"] for output in outputs)
        expected = [tail.expected_worst_cosine(output["cosines"]) for output in outputs] if self.extrapolate else []
        worst = min(expected, key=_nan_lowest) if expected and None not in expected else None
        return Evaluation(cosine, result["accuracy_drop_pp"], worst)


@dataclass
class Attempt:
    kept_float: list[str]
    dynamic: int
    per_token: int
    evaluation: Evaluation

    def to_dict(self) -> dict[str, Any]:
        return {"kept_float": len(self.kept_float), "dynamic": self.dynamic, "per_token": self.per_token,
                **self.evaluation.to_dict()}


@dataclass
class FallbackResult:
    model: ir.Model
    stats: dict[str, Any]
    kept_float: list[str]
    evaluation: Evaluation
    met: bool
    #: node -> "static" / "dynamic" / "token" / "lookup" for every candidate the chosen model quantizes
    schemes: dict[str, str] = field(default_factory=dict)
    #: how many steps of the search's ladder this model took (see `search`)
    steps: int = 0
    attempts: list[Attempt] = field(default_factory=list)


def _nan_lowest(cosine: float) -> float:
    return -math.inf if math.isnan(cosine) else cosine


def choose_schemes(compared: Mapping[str, Mapping[str, float]], default: Callable[[str], str]) -> dict[str, str]:
    """Per node compared (`schemes.compare_schemes`: scheme -> SQNR dB), the scheme to quantize it with.

    The more accurate one, except that within `TIE_DB` the target's default (`default(node)`)
    stays: differences that small are noise on a few dozen samples.
    """
    chosen = {}
    for node, sqnr in compared.items():
        best = max(sqnr, key=sqnr.__getitem__)
        fallback = default(node)
        chosen[node] = fallback if fallback in sqnr and sqnr[best] - sqnr[fallback] <= TIE_DB else best
    return chosen


def fallback_order(layers: Sequence[LayerSensitivity], schemes: Mapping[str, str],
                   float_ms: Mapping[str, float]) -> list[str]:
    """Nodes in the order they go float: the most harm per float millisecond first.

    `layers` holds one record per node, measured under its `schemes` entry. Harm is the
    model-output noise-to-signal power with only that node quantized (10^(-SQNR/10),
    which adds up roughly across layers); the float milliseconds the node takes bound what its int8
    kernel can save. So a layer that hurts but costs no time goes float first, and the layer that
    takes most of the time stays int8 longest. Int8 lookup tables come last whatever their harm:
    they save size, not time (MiniLM's float word table costs 36 MB for a 1e-4 cosine). A node
    with no record (left unmeasured: `costly_nodes`) counts as infinitely harmful per millisecond:
    such nodes go first, the ones that save least first.
    """
    record = {layer.node: layer for layer in layers}

    def harm_per_ms(node: str) -> float:
        if node not in record:
            return math.inf
        sqnr = record[node].model_alone["sqnr_db"]
        harm = 0.0 if math.isinf(sqnr) else 10 ** (-sqnr / 10)
        return harm / max(float_ms.get(node, 0.0), MIN_NODE_MS)

    return sorted(schemes, key=lambda node: (schemes[node] != "lookup", harm_per_ms(node), -float_ms.get(node, 0.0)),
                  reverse=True)


def costly_nodes(float_ms: Mapping[str, float], candidates: Sequence[str], share: float) -> list[str]:
    """The fewest candidates (in candidate order) whose float time adds up to `share` of all candidates' float time.

    Only these are worth a build each to rank: the rest save so little that they go float first
    whatever their harm. With no profile (all zero), every candidate is returned.
    """
    times = {node: float_ms.get(node, 0.0) for node in candidates}
    total = sum(times.values())
    if total <= 0:
        return list(candidates)
    chosen, held = set(), 0.0
    for node in sorted(candidates, key=lambda name: times[name], reverse=True):
        if held >= share * total:
            break
        chosen.add(node)
        held += times[node]
    return [node for node in candidates if node in chosen]


def search(quantizer: Quantizer, evaluator: Evaluator, budget: Budget, order: Sequence[str],
           schemes: Mapping[str, str], *, per_token: Collection[str] = (), at_least: int = 0,
           say: Say = lambda message: None) -> FallbackResult:
    """The cheapest model on a ladder of accuracy steps that keeps `budget`, found by bisection.

    The ladder walks `order` twice: first each node takes its cheaper fix (per-token dynamic
    activations for a node in `per_token`: still int8, and on ONNX Runtime a fused kernel; float
    for the rest), then
    the per-token nodes go float, in the same order; int8 lookup tables, which save size and not
    time, go float last. A model is
    the ladder's first `count` steps, the other nodes quantized with their `schemes`. The search
    tries `at_least` steps, then all but one, then bisects between them, assuming (as the harm
    ranking makes nearly so) that a later step never loses accuracy: about log2(ladder) + 2 builds.
    When even the last model misses, the best attempt comes back with `met=False`.
    """
    tables = [node for node in order if schemes[node] == "lookup"]
    ladder = [("token" if node in per_token else "float", node) for node in order if node not in tables]
    ladder += [("float", node) for node in order if node in per_token] + [("float", node) for node in tables]
    attempts: list[Attempt] = []
    results: dict[int, FallbackResult] = {}

    def attempt(count: int) -> FallbackResult:
        chosen = dict(schemes)
        chosen.update({node: step for step, node in ladder[:count]})
        kept = [node for node in order if chosen[node] == "float"]
        tokens = [node for node in order if chosen[node] == "token"]
        dynamic = [node for node in order if chosen[node] in ("dynamic", "token")]
        model, stats = quantizer.build(keep_float=kept, dynamic=dynamic, per_token=tokens)
        evaluation = evaluator.evaluate(model)
        attempts.append(Attempt(kept, len(dynamic), len(tokens), evaluation))
        met = evaluation.meets(budget)
        say(f"  search build {len(attempts)}/{planned}: {len(kept)} node(s) float, {len(dynamic)} dynamic ({len(tokens)} per token): "
            + tail.describe(evaluation.min_cosine, evaluation.expected_worst_cosine)
            + (f", accuracy drop {evaluation.accuracy_drop_pp:+.2f} pp" if evaluation.accuracy_drop_pp is not None else "")
            + (" - budget met" if met else ""))
        results[count] = FallbackResult(model, stats, kept, evaluation, met,
                                        {node: scheme for node, scheme in chosen.items() if scheme != "float"}, count)
        return results[count]

    low, high = at_least, max(at_least, len(ladder) - 1)
    planned = 2 + math.ceil(math.log2(max(1, high - low)))  # the two ends, then bisection (fewer if an end decides)
    if not attempt(low).met and high > low and attempt(high).met:
        while high - low > 1:  # low misses, high meets
            middle = (low + high) // 2
            if attempt(middle).met:
                high = middle
            else:
                low = middle
            results = {count: result for count, result in results.items() if count in (low, high)}
    met = [results[count] for count in sorted(results) if results[count].met]
    best = met[0] if met else max(results.values(), key=lambda result: result.evaluation.score(budget))
    best.attempts = attempts
    return best
