"""The int8 step of `compile`: quantize, optionally report sensitivity, meet an accuracy budget, pick a precision.

Order matters and is fixed here so that `compiler.py` stays a plain orchestrator:

1. `Quantizer` prepares the optimized float model (SmoothQuant, calibration) once;
2. with `report` or a budget, every candidate node is measured (`sensitivity.analyse`);
3. with a budget, the most sensitive nodes are kept float until it holds (`fallback.search`);
   without one, the int8 model's drift from float is measured and a drift past the target's
   `min_cosine` threshold is warned about;
4. with precision "auto", the int8 model is timed against the float model, and the float model
   wins unless int8 is measurably faster (tiny models often pay more in (de)quantization than they
   save).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from edgec.harness.run import ModelRef, measure
from edgec.quant import sensitivity
from edgec.quant.fallback import Budget, Evaluator, FallbackResult, search
from edgec.quant.quantizer import Quantizer, copy_model
from edgec.quant.table import CalibrationTable
from edgec.runtime.base import Feeds
from edgec.target import Target

__all__ = ["Int8Request", "Int8Result", "quantize", "AUTO_MIN_SPEEDUP", "SENSITIVITY_SAMPLES"]

Say = Callable[[str], None]
#: "auto" keeps int8 only when it is at least this much faster than float at the median: run-to-run
#: noise on a shared machine is 1-9% (FINDINGS.md), and a tie should keep the exact float model.
AUTO_MIN_SPEEDUP = 1.10
#: Samples the sensitivity analysis runs every per-node build on (the budget uses all evaluation samples).
SENSITIVITY_SAMPLES = 32
#: Timed runs per model when "auto" or the fallback compares latencies (interleaved rounds of 10).
_TIMING_RUNS = 300


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
    quantizer = Quantizer(model, target.quant, samples, source=table_source, threads=threads, say=say)
    eval_samples = list(request.eval_samples if request.eval_samples is not None else samples)
    layers = None
    if (request.report or request.budget) and quantizer.candidates:
        subset = eval_samples[:SENSITIVITY_SAMPLES]
        say(f"measuring the sensitivity of {len(quantizer.candidates)} quantized nodes on {len(subset)} samples")
        layers = sensitivity.analyse(quantizer, subset, say=say)
    extra: dict[str, Any] = {"samples": min(len(eval_samples), SENSITIVITY_SAMPLES)}
    budget_missed = None
    if request.budget and layers:
        say(f"searching for the fewest float nodes that keep {request.budget.describe()}")
        evaluator = Evaluator(quantizer.model, eval_samples, request.labels, threads)
        found = search(quantizer, evaluator, request.budget, sensitivity.ranking(layers), say=say)
        result_model, stats = found.model, found.stats
        stats["fallback"] = _fallback_record(found, request.budget, len(eval_samples))
        timed = {"fp32": quantizer.model, "int8 (all nodes)": quantizer.build()[0]} if found.kept_float else {"fp32": quantizer.model}
        stats["fallback"]["latency_ms"] = _latencies({**timed, "int8 (chosen)": result_model}, eval_samples, threads, say)
        extra["fallback"] = stats["fallback"]
        if not found.met:
            budget_missed = (f"no int8 model met {request.budget.describe()}: the best kept {len(found.kept_float)} of "
                             f"{len(quantizer.candidates)} quantized nodes float and reached min cosine "
                             f"{found.evaluation.min_cosine:.6f}" + _drop_text(found.evaluation.accuracy_drop_pp))
    else:
        result_model, stats = quantizer.build()
        stats["drift"] = _drift_check(quantizer.model, result_model, eval_samples[:SENSITIVITY_SAMPLES], target,
                                      threads, say)
    precision = "int8"
    if target.precision == "auto":
        precision, stats["auto"] = _choose_precision(quantizer.model, result_model, eval_samples, threads, say)
        if precision == "fp32":  # the artifact is the float model: nothing of the int8 build describes it
            result_model, stats = copy_model(quantizer.model), {"auto": stats["auto"]}
    report = sensitivity.report_json(layers, extra) if layers is not None else None
    worst = sensitivity.worst_table(layers) if layers is not None else None
    return Int8Result(result_model, precision, quantizer.table, stats, report, worst, budget_missed)


def _drift_check(float_model: ir.Model, int8_model: ir.Model, samples: Sequence[Feeds], target: Target,
                 threads: int, say: Say) -> dict[str, Any]:
    """Without a budget nothing else compares int8 with float: say how far it moved, and warn when too far.

    Static int8 can wreck a model (a transformer's embeddings fall to cosine ~0.5) while every pass
    verifies, so a build that breaks the target's own `min_cosine` threshold says so at once.
    """
    worst = Evaluator(float_model, samples, None, threads).evaluate(int8_model).min_cosine
    bar = target.thresholds.get("min_cosine")
    say(f"int8 vs float on {len(samples)} samples: min output cosine {worst:.6f}")
    if bar is not None and worst < bar:
        say(f"warning: below the target's min_cosine {bar:g}; keep sensitive layers float with --min-cosine {bar:g}"
            " (see --report), or for transformers quantize MatMuls dynamically: --set 'quant.ops=[]' "
            "--set 'quant.dynamic_ops=[\"MatMul\",\"Gemm\"]'")
    return {"samples": len(samples), "min_cosine": worst, "threshold": bar}


def _drop_text(drop: float | None) -> str:
    return "" if drop is None else f" and an accuracy drop of {drop:.2f} pp"


def _fallback_record(found: FallbackResult, budget: Budget, samples: int) -> dict[str, Any]:
    return {
        "budget": {"max_accuracy_drop_pp": budget.max_accuracy_drop_pp, "min_cosine": budget.min_cosine},
        "eval_samples": samples,
        "met": found.met,
        "kept_float": found.kept_float,
        "evaluation": found.evaluation.to_dict(),
        "attempts": [attempt.to_dict() for attempt in found.attempts],
    }


def _latencies(models: dict[str, ir.Model], samples: Sequence[Feeds], threads: int, say: Say) -> dict[str, float]:
    """Median latency (ms) of each model, measured side by side in fresh workers."""
    say(f"timing {', '.join(models)} ({_TIMING_RUNS} runs each, {threads or 'default'} thread(s))")
    with tempfile.TemporaryDirectory(prefix="edgec-timing-") as workdir:
        refs = []
        for index, (label, model) in enumerate(models.items()):
            path = Path(workdir) / f"model{index}.onnx"
            onnx.save_model(ir.serde.serialize_model(model), path)
            refs.append(ModelRef(path, label=label))
        sections = measure(refs, samples, threads=threads, runs=_TIMING_RUNS)
    return {label: round(section["latency_ms"]["p50"], 4) for label, section in sections.items()}


def _choose_precision(float_model: ir.Model, int8_model: ir.Model, samples: Sequence[Feeds], threads: int,
                      say: Say) -> tuple[str, dict[str, Any]]:
    """"int8" if it beats float by AUTO_MIN_SPEEDUP at the median, else "fp32"; with the measurements."""
    p50 = _latencies({"fp32": float_model, "int8": int8_model}, samples, threads, say)
    speedup = p50["fp32"] / p50["int8"]
    chosen = "int8" if speedup >= AUTO_MIN_SPEEDUP else "fp32"
    say(f"precision auto: int8 is {speedup:.2f}x fp32 here -> {chosen}"
        + ("" if chosen == "int8" else " (int8 does not pay on this model)"))
    return chosen, {"latency_ms": p50, "speedup": round(speedup, 3), "min_speedup": AUTO_MIN_SPEEDUP, "chosen": chosen}
