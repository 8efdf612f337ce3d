"""The int8 step of `compile`: quantize, optionally report sensitivity, meet an accuracy budget, pick a precision.

Order matters and is fixed here so that `compiler.py` stays a plain orchestrator:

1. `Quantizer` prepares the optimized float model (SmoothQuant, calibration) once;
2. with `report` or a budget, every candidate node is measured (`sensitivity.analyse`), with a
   budget under each scheme it can take (static or dynamic int8 on ONNX Runtime);
3. with a budget, the evaluation data is split in two: each node gets its least harmful scheme,
   nodes go float in order of harm per measured float millisecond, and a bisection finds the
   fewest float nodes that keep the budget on one part (`fallback`), a cosine bar judged on the worst
   sample expected over more samples (`tail`: a margin sized by the data's own tail); the
   result is then checked on the held-out part (its own worst sample), and searched again on all of
   the data when that check misses. Candidates are
   judged as they ship: a backend whose export rewrites the kernels (TFLite) runs each one in its
   own runtime, and the Q/DQ graph's ONNX Runtime figures are recorded beside them. Without a
   budget, the int8 model's drift from float is measured and a drift past the target's
   `min_cosine` threshold is warned about;
4. the candidates are timed side by side once, at the target's threads: with a budget (to record
   what the float nodes cost) and with precision "auto", which ships the fastest candidate that
   keeps the accuracy bar, fp32 included, and records why each other one lost. A timed int8 model
   slower than fp32 is warned about.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from edgec import backends
from edgec.harness.run import ModelRef, measure
from edgec.quant import sensitivity, tail
from edgec.quant.cost import node_times_ms
from edgec.quant.fallback import (Budget, Evaluation, Evaluator, FallbackResult, choose_schemes, costly_nodes,
                                  fallback_order, search)
from edgec.quant.quantizer import Quantizer, copy_model
from edgec.quant.schemes import compare_schemes
from edgec.quant.table import CalibrationTable
from edgec.tensors import Feeds
from edgec.target import Target

__all__ = ["Int8Request", "Int8Result", "quantize", "split_holdout", "AUTO_MIN_SPEEDUP", "HOLDOUT_MIN_SAMPLES",
           "MEASURED_TIME_SHARE", "SENSITIVITY_SAMPLES"]

Say = Callable[[str], None]
#: "auto" keeps int8 only when it is at least this much faster than float at the median: run-to-run
#: noise on a shared machine is 1-9% (FINDINGS.md), and a tie should keep the exact float model.
AUTO_MIN_SPEEDUP = 1.10
#: Samples the sensitivity analysis runs every per-node build on (the budget uses all evaluation samples).
SENSITIVITY_SAMPLES = 32
#: With a budget, the per-node builds only rank nodes for the bisection, which checks every search sample:
#: half the samples halves the ranking's run time (MiniLM: 106 builds) and moves the order little.
_RANKING_SAMPLES = 16
#: Timed runs per model when "auto" or the fallback compares latencies (interleaved rounds of 10): ratios
#: from one interleaved run hold under shared-machine noise far better than more runs of each alone.
_TIMING_RUNS = 60
#: Samples the per-node float profile runs (it ranks layers, it is not a benchmark).
_PROFILE_SAMPLES = 8
#: With a budget, only the nodes holding this share of the candidates' float time are measured one by one
#: (a build and a run each); the rest save too little for their order to matter and go float first.
#: MiniLM: 33 of 106 nodes (its weight MatMuls) hold 97%; its 56 Adds and 12 attention MatMuls share 3%.
MEASURED_TIME_SHARE = 0.97
#: With fewer evaluation samples than this, the budget is searched and checked on all of them.
HOLDOUT_MIN_SAMPLES = 4


@dataclass(frozen=True)
class Int8Request:
    """What the user asked of the int8 step beyond the target's scheme."""

    budget: Budget = Budget()
    eval_samples: Sequence[Feeds] | None = None  # None: the calibration samples
    labels: np.ndarray | None = None
    report: bool = False


@dataclass
class Int8Result:
    model: ir.Model
    precision: str  # "int8", or "fp32" when "auto" found int8 not faster
    table: CalibrationTable
    stats: dict[str, Any]
    report_json: str | None = None
    worst_layers: str | None = None
    #: set when a budget was given and no attempt met it
    budget_missed: str | None = None


def quantize(model: ir.Model, target: Target, samples: Sequence[Feeds], source: str, request: Int8Request,
             say: Say) -> Int8Result:
    """Run the int8 step on the optimized float `model` (changed in place by preparation)."""
    assert target.quant is not None, "int8 and auto targets always carry a quant scheme (validated by edgec.target)"
    threads = int(target.options.get("threads", 0))
    table_source = "random" if source == "random" else "data"  # the table says which kind; the manifest has the path
    auto = target.precision == "auto"
    backend = backends.get(target.runtime)
    quantizer = Quantizer(model, target.quant, samples, source=table_source, threads=threads, say=say,
                          dynamic_alternatives=backend.dynamic_int8 and (bool(request.budget) or auto),
                          fused_tokens=backend.contrib_ops)
    eval_samples = list(request.eval_samples if request.eval_samples is not None else samples)
    judge = _Judge(backend, target, quantizer, threads, say)
    search_part, holdout_part, search_labels, holdout_labels = split_holdout(eval_samples, request.labels)
    layers, schemes = None, None
    float_ms: dict[str, float] = {}
    extra: dict[str, Any] = {}
    if (request.report or request.budget) and quantizer.candidates:
        subset = search_part[:_RANKING_SAMPLES] if request.budget else eval_samples[:SENSITIVITY_SAMPLES]
        extra["samples"] = len(subset)
        measured = None  # every candidate
        if request.budget:
            schemes, extra["schemes"] = _choose_schemes(quantizer, subset, say)
            float_ms = _float_profile(quantizer, search_part, threads, say)
            measured = costly_nodes(float_ms, quantizer.candidates, MEASURED_TIME_SHARE)
            extra["unmeasured"] = len(quantizer.candidates) - len(measured)
            say(f"{len(measured)} of {len(quantizer.candidates)} quantized nodes hold "
                f"{MEASURED_TIME_SHARE:.0%} of their float time; the other {extra['unmeasured']} save too little "
                "to rank and go float first")
        say(f"measuring the sensitivity of {len(measured or quantizer.candidates)} quantized nodes on "
            f"{len(subset)} samples")
        layers = sensitivity.analyse(quantizer, subset, schemes=schemes, only=measured, say=say)
    budget_missed = None
    timed: dict[str, ir.Model] = {"fp32": quantizer.model}
    accuracy: dict[str, Evaluation] = {}
    built: dict[str, dict[str, Any]] = {}  # stats of the variants "auto" may ship instead
    if request.budget and layers is not None and schemes:
        found, record = _budget_search(quantizer, layers, schemes, float_ms, request, (search_part, search_labels),
                                       (holdout_part, holdout_labels), judge, say)
        result_model, stats = found.model, found.stats
        stats["fallback"] = extra["fallback"] = record
        if found.steps:  # the first attempt quantized every node with its scheme
            timed["int8 (all nodes)"] = quantizer.build(dynamic=_dynamic_of(schemes))[0]
            accuracy["int8 (all nodes)"] = found.attempts[0].evaluation
        timed["int8 (chosen)"] = result_model
        accuracy["int8 (chosen)"] = found.evaluation
        if not found.met:
            budget_missed = (f"no int8 model met {request.budget.describe()}: the best kept {len(found.kept_float)} of "
                             f"{len(quantizer.candidates)} quantized nodes float and reached "
                             + tail.describe(found.evaluation.min_cosine, found.evaluation.expected_worst_cosine)
                             + _drop_text(found.evaluation.accuracy_drop_pp))
    else:
        result_model, stats = quantizer.build()
        checked = eval_samples[:SENSITIVITY_SAMPLES]
        stats["drift"], accuracy["int8"] = _drift_check(judge, result_model, checked, target, say)
        timed["int8"] = result_model
        if auto and set(quantizer.dynamic_capable) - quantizer.default_dynamic:
            dynamic_model, built["int8 dynamic"] = quantizer.build(dynamic=quantizer.dynamic_capable)
            timed["int8 dynamic"] = dynamic_model
            accuracy["int8 dynamic"] = judge.evaluator(checked, None).evaluate(dynamic_model)
    stats["judged_in"] = judge.where
    precision = "int8"
    if auto or request.budget:
        p50 = _latencies(timed, quantizer.table, target, eval_samples, say)
        if request.budget and layers:
            stats["fallback"]["latency_ms"] = p50
        _warn_if_slower(p50, say)
    if auto:
        bar = request.budget if request.budget else Budget(min_cosine=target.thresholds.get("min_cosine"))
        label, stats_auto = _choose_precision(p50, accuracy, bar, say)
        if label == "fp32":  # the artifact is the float model: nothing of the int8 build describes it
            precision, result_model, stats, budget_missed = "fp32", copy_model(quantizer.model), {}, None
        elif label in built:
            result_model, stats = timed[label], {**built[label], "drift": _drift_record(accuracy[label], bar)}
        stats["auto"] = stats_auto
    report = sensitivity.report_json(layers, extra) if layers is not None else None
    worst = sensitivity.worst_table(layers) if layers is not None else None
    return Int8Result(result_model, precision, quantizer.table, stats, report, worst, budget_missed)


def split_holdout(samples: Sequence[Feeds], labels: np.ndarray | None
                  ) -> tuple[list[Feeds], list[Feeds], np.ndarray | None, np.ndarray | None]:
    """(search samples, held-out samples, their labels): every other sample is held out.

    Interleaving keeps both parts alike when the data is ordered (by length, by class). Below
    HOLDOUT_MIN_SAMPLES nothing is held out: the search then uses every sample.
    """
    if len(samples) < HOLDOUT_MIN_SAMPLES:
        return list(samples), [], labels, None
    split = (lambda items: items[0::2], lambda items: items[1::2])
    parts = [list(take(list(samples))) for take in split]
    label_parts = [None if labels is None else take(labels) for take in split]
    return parts[0], parts[1], label_parts[0], label_parts[1]


def _choose_schemes(quantizer: Quantizer, samples: Sequence[Feeds], say: Say
                    ) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """Each candidate's scheme (static or dynamic where both apply), and the per-node SQNRs it was chosen on."""
    compared = compare_schemes(quantizer, samples)
    picked = choose_schemes(compared, quantizer.default_scheme)
    if compared:
        changed = sum(scheme != quantizer.default_scheme(node) for node, scheme in picked.items())
        say(f"static vs dynamic int8 on {len(samples)} samples' float activations: {changed} of {len(compared)} "
            "node(s) are more accurate with the other scheme")
    schemes = {name: picked.get(name) or quantizer.default_scheme(name) for name in quantizer.candidates}
    return schemes, {node: {kind: round(db, 2) for kind, db in sqnr.items()} for node, sqnr in compared.items()}


def _float_profile(quantizer: Quantizer, samples: Sequence[Feeds], threads: int, say: Say) -> dict[str, float]:
    say(f"profiling float time per node on {min(len(samples), _PROFILE_SAMPLES)} samples "
        f"({threads or 'default'} thread(s))")
    return node_times_ms(quantizer.model, samples[:_PROFILE_SAMPLES], threads)


class _Judge:
    """Where int8 candidates are judged: the target's runtime when its backend runs them itself
    (a `.tflite` in LiteRT), else the Q/DQ graph in ONNX Runtime. Either way against the float model in ONNX Runtime."""

    def __init__(self, backend: backends.Backend, target: Target, quantizer: Quantizer, threads: int, say: Say) -> None:
        self.float_model, self.threads = quantizer.model, threads
        self.run = backend.accuracy_runner(target, quantizer.table, threads)
        self.where = f"{backend.title} (the exported artifact)" if self.run is not None else "ONNX Runtime (Q/DQ graph)"
        if self.run is not None:
            say(f"int8 candidates are judged as they ship: exported and run in {backend.title}")

    def evaluator(self, samples: Sequence[Feeds], labels: np.ndarray | None, *, extrapolate: bool = True) -> Evaluator:
        return Evaluator(self.float_model, samples, labels, self.threads, run=self.run, extrapolate=extrapolate)

    def onnx_qdq(self, model: ir.Model, samples: Sequence[Feeds], labels: np.ndarray | None, *,
                 extrapolate: bool = True) -> dict[str, Any] | None:
        """The Q/DQ graph's own figures in ONNX Runtime, recorded beside the runtime's when they differ in kind."""
        if self.run is None or not samples:
            return None
        evaluator = Evaluator(self.float_model, samples, labels, self.threads, extrapolate=extrapolate)
        return {"samples": len(samples), **evaluator.evaluate(model).to_dict()}


def _budget_search(quantizer: Quantizer, layers: Sequence[sensitivity.LayerSensitivity], schemes: dict[str, str],
                   float_ms: dict[str, float], request: Int8Request,
                   searched: tuple[list[Feeds], np.ndarray | None], held_out: tuple[list[Feeds], np.ndarray | None],
                   judge: _Judge, say: Say) -> tuple[FallbackResult, dict[str, Any]]:
    """Search the budget on one part of the data, check it on the other; search all of it when the check misses."""
    budget = request.budget
    (search_part, search_labels), (holdout_part, holdout_labels) = searched, held_out
    order = fallback_order(layers, schemes, float_ms)
    say(f"searching for the fewest float nodes that keep {budget.describe()} on {len(search_part)} samples")
    per_token = quantizer.per_token_capable if quantizer.dynamic_alternatives else ()
    found = search(quantizer, judge.evaluator(search_part, search_labels), budget, order,
                   schemes, per_token=per_token, say=say)
    record: dict[str, Any] = {
        "budget": {"max_accuracy_drop_pp": budget.max_accuracy_drop_pp, "min_cosine": budget.min_cosine},
        "eval_samples": len(search_part) + len(holdout_part),
        "search": {"samples": len(search_part), **found.evaluation.to_dict()},
        "float_ms": {node: round(float_ms.get(node, 0.0), 4) for node in order},
    }
    attempts = list(found.attempts)
    if holdout_part and found.met:
        check = judge.evaluator(holdout_part, holdout_labels, extrapolate=False).evaluate(found.model)
        record["holdout"] = {"samples": len(holdout_part), **check.to_dict(), "met": check.meets(budget)}
        say(f"held-out check on {len(holdout_part)} unseen samples: min cosine {check.min_cosine:.6f}"
            + _drop_text(check.accuracy_drop_pp) + (" - holds" if check.meets(budget) else " - MISSED"))
        if not check.meets(budget):
            say(f"warning: the budget held on the {len(search_part)} search samples but not on the "
                f"{len(holdout_part)} held-out ones; searching again on all {record['eval_samples']} samples, "
                "so no unseen data confirms the result")
            everything = [*search_part, *holdout_part]
            labels = None if request.labels is None else np.concatenate([search_labels, holdout_labels])
            found = search(quantizer, judge.evaluator(everything, labels), budget, order,
                           schemes, per_token=per_token, at_least=found.steps, say=say)
            attempts += found.attempts
            record["resolved_on_all_samples"] = True
    elif not holdout_part:
        record["holdout"] = None
    found.attempts = attempts
    qdq = {part: judge.onnx_qdq(found.model, samples, labels, extrapolate=part == "search") for part, (samples, labels)
           in (("search", (search_part, search_labels)), ("holdout", (holdout_part, holdout_labels)))}
    if qdq["search"] is not None:
        record["onnx_qdq"] = qdq
    record.update({"met": found.met, "kept_float": found.kept_float, "evaluation": found.evaluation.to_dict(),
                   "schemes": dict(Counter(found.schemes.values())),
                   "attempts": [attempt.to_dict() for attempt in attempts]})
    return found, record


def _dynamic_of(schemes: dict[str, str]) -> list[str]:
    return [node for node, scheme in schemes.items() if scheme == "dynamic"]


def _drift_check(judge: _Judge, int8_model: ir.Model, samples: Sequence[Feeds], target: Target,
                 say: Say) -> tuple[dict[str, Any], Evaluation]:
    """Without a budget nothing else compares int8 with float: say how far it moved, and warn when too far.

    Static int8 can wreck a model (a transformer's embeddings fall to cosine ~0.5) while every pass
    verifies, so a build that breaks the target's own `min_cosine` threshold says so at once.
    """
    evaluation = judge.evaluator(samples, None).evaluate(int8_model)
    worst = evaluation.min_cosine
    bar = target.thresholds.get("min_cosine")
    say(f"int8 vs float on {len(samples)} samples: min output cosine {worst:.6f} ({judge.where})")
    if bar is not None and worst < bar:
        say(f"warning: below the target's min_cosine {bar:g}; keep sensitive layers float with --min-cosine {bar:g}"
            " (see --report), or for transformers quantize MatMuls dynamically: --set 'quant.ops=[]' "
            "--set 'quant.dynamic_ops=[\"MatMul\",\"Gemm\",\"Attention\"]'")
    record = {"samples": len(samples), "min_cosine": worst, "threshold": bar}
    if evaluation.expected_worst_cosine is not None:
        record["expected_worst_cosine"] = evaluation.expected_worst_cosine
    qdq = judge.onnx_qdq(int8_model, samples, None)
    if qdq is not None:
        record["onnx_qdq_min_cosine"] = qdq["min_cosine"]
    return record, evaluation


def _drift_record(evaluation: Evaluation, bar: Budget) -> dict[str, Any]:
    return {"min_cosine": evaluation.min_cosine, "threshold": bar.min_cosine}


def _drop_text(drop: float | None) -> str:
    return "" if drop is None else f" and an accuracy drop of {drop:.2f} pp"


def _latencies(models: dict[str, ir.Model], table: CalibrationTable, target: Target, samples: Sequence[Feeds],
               say: Say) -> dict[str, float]:
    """Median latency (ms) of each model as the target's runtime runs it, side by side in fresh workers."""
    threads = int(target.options.get("threads", 0))
    backend = backends.get(target.runtime)
    say(f"timing {', '.join(models)} side by side on {backend.title} ({_TIMING_RUNS} interleaved runs each, "
        f"{threads or 'default'} thread(s))")
    options = {key: target.options[key] for key in backend.runtime_options if key in target.options}
    with tempfile.TemporaryDirectory(prefix="edgec-timing-") as workdir:
        refs = []
        for index, (label, model) in enumerate(models.items()):
            staging = Path(workdir) / f"model{index}"
            staging.mkdir()
            precision = "fp32" if label == "fp32" else "int8"
            path, *_ = backend.export(model, table=table, precision=precision, staging=staging, target=target)
            refs.append(ModelRef(path, backend.name, options, label))
        sections = measure(refs, samples, threads=threads, runs=_TIMING_RUNS)
    return {label: round(section["latency_ms"]["p50"], 4) for label, section in sections.items()}


def _warn_if_slower(p50: dict[str, float], say: Say) -> None:
    """A timed int8 model slower than fp32 is a surprise worth one line, with the flag that avoids it."""
    slower = [f"{label} {p50['fp32'] / ms:.2f}x" for label, ms in p50.items() if label != "fp32" and ms > p50["fp32"]]
    if slower:
        say(f"warning: measured slower than fp32 here: {', '.join(slower)}; "
            "--precision auto ships fp32 when no int8 model pays")


def _choose_precision(p50: dict[str, float], accuracy: dict[str, Evaluation], bar: Budget,
                      say: Say) -> tuple[str, dict[str, Any]]:
    """The fastest timed model that keeps `bar` and beats fp32 by AUTO_MIN_SPEEDUP, else "fp32"; with why the rest lost."""
    options: dict[str, dict[str, Any]] = {}
    for label, ms in p50.items():
        speedup = p50["fp32"] / ms
        options[label] = {"latency_ms": ms, "speedup": round(speedup, 3)}
        evaluation = accuracy.get(label)
        if evaluation is not None:
            options[label]["min_cosine"] = evaluation.min_cosine
            if evaluation.expected_worst_cosine is not None:
                options[label]["expected_worst_cosine"] = evaluation.expected_worst_cosine
            if bar and not evaluation.meets(bar):
                options[label]["lost"] = (f"misses {bar.describe()}: "
                                          + tail.describe(evaluation.min_cosine, evaluation.expected_worst_cosine))
            elif speedup < AUTO_MIN_SPEEDUP:
                options[label]["lost"] = f"{speedup:.2f}x fp32, below the {AUTO_MIN_SPEEDUP:.2f}x that pays"
        elif label != "fp32":
            options[label]["lost"] = "not a candidate (timed for reference)"
    eligible = [label for label in options if label != "fp32" and "lost" not in options[label]]
    chosen = min(eligible, key=p50.__getitem__) if eligible else "fp32"
    for label, option in options.items():
        if label != chosen and "lost" not in option:
            option["lost"] = f"slower than {chosen} ({option['latency_ms']:.3f} vs {p50[chosen]:.3f} ms)"
    speedup = options[chosen]["speedup"] if chosen != "fp32" else max(
        (options[label]["speedup"] for label in accuracy), default=1.0)
    say(f"precision auto: {chosen} (" + "; ".join(f"{label}: {option.get('lost', 'chosen')}"
                                                   for label, option in options.items()) + ")")
    precision = "fp32" if chosen == "fp32" else "int8"
    return chosen, {"latency_ms": p50, "speedup": round(speedup, 3), "min_speedup": AUTO_MIN_SPEEDUP,
                    "chosen": precision, "variant": chosen, "options": options}
