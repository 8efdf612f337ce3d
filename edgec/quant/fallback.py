"""Accuracy-driven mixed precision: keep the most sensitive nodes float until an accuracy budget holds.

The budget is relative to the float model on evaluation samples: a maximum top-1 accuracy drop
(with labels) and/or a minimum output cosine on every sample. Nodes are kept float in sensitivity
order (`sensitivity.ranking`), one group at a time, so the result is the int8 model with the
fewest float nodes this greedy order finds; when even keeping all but one node float misses the
budget, the best attempt is returned with `met=False` for the caller to report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from edgec.harness.accuracy import drift
from edgec.quant.calibrator import run_exposing
from edgec.quant.quantizer import Quantizer
from edgec.runtime.base import Feeds

__all__ = ["Budget", "Evaluator", "Attempt", "FallbackResult", "search", "MAX_ATTEMPTS"]

Say = Callable[[str], None]
#: Builds tried at most: for big models, groups grow so the search stays this many evaluations.
MAX_ATTEMPTS = 24


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
    """How one candidate model compares with the float model on the evaluation samples."""

    min_cosine: float
    accuracy_drop_pp: float | None

    def meets(self, budget: Budget) -> bool:
        cosine_ok = budget.min_cosine is None or self.min_cosine >= budget.min_cosine
        drop_ok = budget.max_accuracy_drop_pp is None or (
            self.accuracy_drop_pp is not None and self.accuracy_drop_pp <= budget.max_accuracy_drop_pp)
        return cosine_ok and drop_ok

    def score(self, budget: Budget) -> tuple[float, float]:
        """Larger is better: how far inside (or outside) the budget, accuracy first."""
        drop = -self.accuracy_drop_pp if self.accuracy_drop_pp is not None and budget.max_accuracy_drop_pp is not None else 0.0
        return drop, self.min_cosine if not math.isnan(self.min_cosine) else -math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"min_cosine": self.min_cosine, "accuracy_drop_pp": self.accuracy_drop_pp}


class Evaluator:
    """Runs candidate models on fixed evaluation samples against the float model's outputs."""

    def __init__(self, float_model: ir.Model, samples: Sequence[Feeds], labels: np.ndarray | None, threads: int) -> None:
        self.samples = samples
        self.labels = labels
        self.threads = threads
        self.reference = run_exposing(float_model, [], samples, threads)

    def evaluate(self, model: ir.Model) -> Evaluation:
        result = drift(run_exposing(model, [], self.samples, self.threads), self.reference, self.labels)
        cosine = min(output["cosine_min"] for output in result["outputs"].values())
        return Evaluation(cosine, result["accuracy_drop_pp"])


@dataclass
class Attempt:
    kept_float: list[str]
    evaluation: Evaluation

    def to_dict(self) -> dict[str, Any]:
        return {"kept_float": len(self.kept_float), **self.evaluation.to_dict()}


@dataclass
class FallbackResult:
    model: ir.Model
    stats: dict[str, Any]
    kept_float: list[str]
    evaluation: Evaluation
    met: bool
    attempts: list[Attempt] = field(default_factory=list)


def _group_sizes(candidates: int) -> list[int]:
    """How many nodes each attempt keeps float: 0, then growing by one group, never all of them."""
    step = max(1, math.ceil((candidates - 1) / (MAX_ATTEMPTS - 1)))
    return list(range(0, candidates, step))


def search(quantizer: Quantizer, evaluator: Evaluator, budget: Budget, order: Sequence[str],
           say: Say = lambda message: None) -> FallbackResult:
    """Keep `order`'s first nodes float, one group at a time, until `budget` holds."""
    attempts: list[Attempt] = []
    best: FallbackResult | None = None
    for count in _group_sizes(len(order)):
        kept = list(order[:count])
        model, stats = quantizer.build(keep_float=kept)
        evaluation = evaluator.evaluate(model)
        attempts.append(Attempt(kept, evaluation))
        met = evaluation.meets(budget)
        say(f"  {count} node(s) float: min cosine {evaluation.min_cosine:.6f}"
            + (f", accuracy drop {evaluation.accuracy_drop_pp:+.2f} pp" if evaluation.accuracy_drop_pp is not None else "")
            + (" - budget met" if met else ""))
        if met or best is None or evaluation.score(budget) > best.evaluation.score(budget):
            best = FallbackResult(model, stats, kept, evaluation, met)
        if met:
            break
    assert best is not None, "a model with at least one candidate always gets one attempt"
    best.attempts = attempts
    return best
