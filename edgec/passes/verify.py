"""Per-pass numerical verification: prove each pass kept the model's meaning, or name the one that did not.

The instrument runs the model with ONNX Runtime before the pipeline and after every pass that
modified it, on the same feeds, and compares each output with the previous step's within the target's
tolerance: |after - before| <= atol + rtol * |before|, elementwise. ORT's own graph optimizations are
disabled so that what is checked is edgec's rewrite, not ORT's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import logging

import numpy as np
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator
from onnx_ir.passes import PassResult
from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as NotImplementedError_

from edgec.errors import VerificationError, first_line
from edgec.tensors import Feeds
from edgec.backends.onnxruntime.session import cpu_session

__all__ = ["VerifyInstrument", "run_model", "compare_outputs"]

logger = logging.getLogger(__name__)


def run_model(model: ir.Model, samples: Sequence[Feeds], threads: int = 1) -> list[list[np.ndarray]]:
    """Outputs of `model` (in graph output order) for every sample, with ORT optimizations off.

    A model ONNX Runtime has no kernels for (old opsets such as AveragePool-1, which ORT 1.32 no
    longer implements) runs on ONNX's reference evaluator instead, so its conversion can be checked.
    """
    proto = ir.serde.serialize_model(model)
    try:
        session = cpu_session(proto, threads, "disable")
    except NotImplementedError_ as exc:
        logger.info("ONNX Runtime cannot run the model (%s); using onnx.reference", first_line(exc))
        evaluator = ReferenceEvaluator(proto)
        names = set(evaluator.input_names)
        return [list(evaluator.run(None, {k: v for k, v in feeds.items() if k in names})) for feeds in samples]
    input_names = {arg.name for arg in session.get_inputs()}
    return [session.run(None, {k: v for k, v in feeds.items() if k in input_names}) for feeds in samples]


def compare_outputs(
    before: list[list[np.ndarray]], after: list[list[np.ndarray]], names: Sequence[str], rtol: float, atol: float
) -> tuple[float, str | None]:
    """Largest absolute difference, and a description of the first violation (None if within tolerance)."""
    worst = 0.0
    for sample, (old_outputs, new_outputs) in enumerate(zip(before, after)):
        for name, old, new in zip(names, old_outputs, new_outputs):
            old, new = np.asarray(old), np.asarray(new)
            if old.shape != new.shape:
                return np.inf, f"output '{name}' changed shape {list(old.shape)} -> {list(new.shape)}"
            if old.dtype.kind not in "fc":
                if not np.array_equal(old, new):
                    return np.inf, f"output '{name}' changed values (sample {sample})"
                continue
            diff = np.abs(new.astype(np.float64) - old.astype(np.float64))
            diff = np.where(np.isnan(diff), np.where(np.isnan(old) & np.isnan(new), 0.0, np.inf), diff)
            if diff.size:
                worst = max(worst, float(diff.max()))
            bound = atol + rtol * np.abs(old.astype(np.float64))
            if (diff > bound).any():
                index = np.unravel_index(int(np.argmax(diff - bound)), diff.shape)
                return worst, (f"output '{name}' differs by {float(diff[index]):.3g} at {list(index)} (sample {sample}),"
                               f" beyond atol {atol:g} + rtol {rtol:g} * |{float(old[index]):.4g}|")
    return worst, None


@dataclass
class VerifyInstrument:
    """A `PassInstrument` that raises `VerificationError` naming the first pass that changed the outputs."""

    samples: Sequence[Feeds]
    rtol: float
    atol: float
    threads: int = 1
    #: pass name -> largest absolute output difference it introduced (modified passes only)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    _outputs: list[list[np.ndarray]] | None = None

    def before_pass(self, name: str, model: ir.Model) -> None:
        if self._outputs is None:
            try:
                self._outputs = run_model(model, self.samples, self.threads)
            except Exception as exc:  # nothing to compare against: say so instead of an ORT traceback
                raise VerificationError(f"cannot verify: ONNX Runtime cannot run the model before '{name}':"
                                        f" {first_line(exc)}") from exc

    def after_pass(self, name: str, result: PassResult) -> None:
        if not result.modified:
            return
        names = [value.name for value in result.model.graph.outputs]
        try:
            outputs = run_model(result.model, self.samples, self.threads)
        except Exception as exc:  # ORT rejects the rewritten graph: the pass broke it
            raise VerificationError(f"pass '{name}' produced a model ONNX Runtime cannot run:"
                                    f" {first_line(exc)}") from exc
        worst, problem = compare_outputs(self._outputs, outputs, names, self.rtol, self.atol)
        self.max_abs_diff[name] = max(worst, self.max_abs_diff.get(name, 0.0))
        if problem:
            raise VerificationError(f"pass '{name}' changed the model's result: {problem};"
                                    f" rerun with --skip-passes {name}")
        self._outputs = outputs
