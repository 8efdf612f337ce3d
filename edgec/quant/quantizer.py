"""One float model in, int8 variants out: calibrate once, then build with any set of nodes kept float.

The accuracy fallback and the sensitivity report each build many variants of the same model that
differ only in which nodes stay float, so everything that depends on the data (SmoothQuant scales,
activation ranges, the input means bias correction needs) is computed once, up front, over every
node that any variant could quantize. A build is then a copy of the prepared float model plus the
graph rewrites: bias correction, static Q/DQ (`qdq`), dynamic MatMul quantization (`dynamic`),
int8 lookup tables (`embedding`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass, TopologicalSortPass

from edgec.passes.cleanup import InferShapesPass, RemoveUnusedPass
from edgec.quant import qdq
from edgec.quant.bias_correction import correct_biases, input_mean_axes
from edgec.quant.calibrator import calibrate
from edgec.quant.dynamic import is_dynamic_candidate, quantize_dynamic
from edgec.quant.embedding import is_embedding_lookup, quantize_embeddings
from edgec.quant.observers import ChannelStatsObserver
from edgec.quant.smooth import smooth
from edgec.quant.table import CalibrationTable
from edgec.runtime.base import Feeds
from edgec.target import QuantScheme

__all__ = ["Quantizer", "copy_model"]

Say = Callable[[str], None]
_WEIGHTED_OPS = frozenset({"Conv", "Gemm", "MatMul"})


def copy_model(model: ir.Model) -> ir.Model:
    """A deep, independent copy (builds must not share initializers they rewrite)."""
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


class Quantizer:
    """Prepares `model` (in place: unique names, shapes, SmoothQuant) and builds int8 variants of it.

    Attributes:
        candidates: names of every node some variant quantizes (static Q/DQ or dynamic), in graph
            order; `build(keep_float)` keeps any subset of them float.
        outputs: node name -> name of the float tensor the node produces (what the sensitivity
            report compares).
        table: calibrated ranges of every activation any variant quantizes.
        stats: what preparation did (SmoothQuant), for the manifest.
    """

    def __init__(self, model: ir.Model, scheme: QuantScheme, samples: Sequence[Feeds], *, source: str,
                 threads: int = 0, say: Say = lambda message: None) -> None:
        self.scheme = scheme
        self.samples = samples
        self.threads = threads
        self._say = say
        NameFixPass()(model)  # variants and reports refer to nodes by name: every node needs a unique one
        InferShapesPass()(model)  # the planners quantize only values whose float type is known
        self.stats: dict[str, Any] = {}
        if scheme.smoothquant_alpha > 0:
            say(f"SmoothQuant (alpha {scheme.smoothquant_alpha}) on {len(samples)} samples")
            self.stats["smoothquant"] = smooth(model, samples, scheme.smoothquant_alpha, threads=threads,
                                               progress=self._progress("smoothing"))
        self.model = model
        dynamic = self._dynamic_nodes(model, ())
        full = self._plan(model, {node.name for node in dynamic})
        quantized = [*full.quantized_nodes, *dynamic, *self._lookups(model, ())]
        order = {node.name: index for index, node in enumerate(model.graph)}
        self.candidates = sorted((node.name for node in quantized), key=order.__getitem__)
        self.outputs = {node.name: node.outputs[0].name for node in quantized}
        self.table = CalibrationTable(scheme.calibrator, len(samples), source)
        self._means: dict[str, np.ndarray] = {}
        weighted = [node for node in quantized if node.op_type in _WEIGHTED_OPS]
        self._calibrate(full.calibration_tensors, input_mean_axes(weighted) if scheme.bias_correction else {})

    def build(self, keep_float: Collection[str] = ()) -> tuple[ir.Model, dict[str, Any]]:
        """A new int8 model with the `keep_float` nodes (names) left in float; returns it and its stats."""
        model = copy_model(self.model)
        keep = set(keep_float) | set(self.scheme.keep_float)
        dynamic = self._dynamic_nodes(model, keep)
        quant_plan = self._plan(model, keep | {node.name for node in dynamic})
        missing = [name for name in quant_plan.calibration_tensors if name not in self.table.ranges]
        if missing:  # a node kept float can expose a tensor no full-model node quantized
            self._calibrate(missing, {})
        stats: dict[str, Any] = {}
        if self.scheme.bias_correction:
            weighted = [node for node in [*quant_plan.quantized_nodes, *dynamic] if node.op_type in _WEIGHTED_OPS]
            stats["bias_correction"] = correct_biases(model, weighted, self._means, self.scheme.weights)
        stats.update(qdq.apply(model, quant_plan, self.table, self.scheme))
        if dynamic:
            stats["dynamic"] = quantize_dynamic(model, dynamic, self.scheme.weights)
        lookups = self._lookups(model, keep)
        if lookups:
            stats["embeddings"] = quantize_embeddings(model, lookups)
        RemoveUnusedPass()(model)
        TopologicalSortPass()(model)
        stats["kept_float"] = sorted(set(keep_float) & set(self.candidates))
        return model, {**self.stats, **stats}

    def _plan(self, model: ir.Model, keep_float: Collection[str]) -> qdq.QuantPlan:
        return qdq.plan(model, self.scheme.ops, asymmetric_activations=not self.scheme.activations.symmetric,
                        keep_float=keep_float)

    def _dynamic_nodes(self, model: ir.Model, keep_float: Collection[str]) -> list[ir.Node]:
        wanted = set(self.scheme.dynamic_ops)
        return [node for node in model.graph
                if node.op_type in wanted and not qdq.is_kept_float(node, keep_float) and is_dynamic_candidate(node)]

    def _lookups(self, model: ir.Model, keep_float: Collection[str]) -> list[ir.Node]:
        if not self.scheme.quantize_embeddings:
            return []
        return [node for node in model.graph if is_embedding_lookup(node) and not qdq.is_kept_float(node, keep_float)]

    def _calibrate(self, tensors: Sequence[str], mean_axes: Mapping[str, int]) -> None:
        """One pass over the samples: ranges for `tensors`, channel means for `mean_axes`."""
        if not tensors and not mean_axes:
            return
        scheme = self.scheme
        means = {name: ChannelStatsObserver(axis) for name, axis in mean_axes.items()}
        what = f"{len(tensors)} tensors" + (f" and {len(means)} channel means" if means else "")
        self._say(f"calibrating {what} on {len(self.samples)} samples ({scheme.calibrator})")
        table = calibrate(self.model, tensors, self.samples, calibrator=scheme.calibrator, percentile=scheme.percentile,
                          levels=128 if scheme.activations.reduce_range else 256, symmetric=scheme.activations.symmetric,
                          threads=self.threads, progress=self._progress("calibration"), also=means)
        self.table.ranges.update(table.ranges)
        self._means.update({name: observer.mean() for name, observer in means.items()})

    def _progress(self, what: str) -> Callable[[int, int], None]:
        step = max(1, len(self.samples) // 10)

        def report(done: int, total: int) -> None:
            if done % step == 0 or done == total:
                self._say(f"  {what} {done}/{total}")

        return report
