"""One float model in, int8 variants out: calibrate once, then build with any set of nodes kept float.

The accuracy fallback and the sensitivity report each build many variants of the same model that
differ only in which nodes stay float, so everything that depends on the data (SmoothQuant scales,
activation ranges, the input means bias correction needs) is computed once, up front, over every
node that any variant could quantize. A build is then a clone of the prepared float model plus the
graph rewrites: bias correction, static Q/DQ (`qdq`), dynamic MatMul quantization (`dynamic`),
int8 lookup tables (`embedding`). The clone shares the float model's tensors: the rewrites add new
initializers and never write into existing ones, so a node a build leaves float costs no copy.
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
from edgec.quant.dynamic import is_dynamic_candidate, quantize_dynamic, supports_per_token
from edgec.quant.embedding import is_embedding_lookup, quantize_embeddings
from edgec.quant.observers import ChannelStatsObserver
from edgec.quant.smooth import smooth
from edgec.quant.table import CalibrationTable
from edgec.tensors import Feeds
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
        candidates: names of every node some variant quantizes (static Q/DQ, dynamic or int8 table),
            in graph order; `build(keep_float, dynamic)` keeps any subset of them float and builds
            any subset of the `dynamic_capable` ones dynamic.
        static_capable / dynamic_capable: the candidates static Q/DQ / dynamic quantization can take
            (with `dynamic_alternatives`, every node `quantize_dynamic` can rewrite, for runtimes
            that run the dynamic pattern: ONNX Runtime). per_token_capable: the dynamic ones that can
            also take per-token activation scales (with `fused_tokens`, as ONNX Runtime's fused
            MatMulNBits kernel; else as the portable standard-ONNX pattern: see `edgec.quant.dynamic`).
        outputs: node name -> name of the float tensor the node produces (what the sensitivity
            report compares).
        table: calibrated ranges of every activation any variant quantizes.
        stats: what preparation did (SmoothQuant), for the manifest.
    """

    def __init__(self, model: ir.Model, scheme: QuantScheme, samples: Sequence[Feeds], *, source: str,
                 threads: int = 0, dynamic_alternatives: bool = False, fused_tokens: bool = False,
                 say: Say = lambda message: None) -> None:
        self.scheme = scheme
        self.fused_tokens = fused_tokens
        self.samples = samples
        self.threads = threads
        self._say = say
        NameFixPass()(model)  # variants and reports refer to nodes by name: every node needs a unique one
        InferShapesPass()(model)  # the planners quantize only values whose float type is known
        self.stats: dict[str, Any] = {}
        if scheme.smoothquant_alpha > 0:
            say(f"SmoothQuant (alpha {scheme.smoothquant_alpha}) on {len(samples)} samples")
            self.stats["smoothquant"] = smooth(model, samples, scheme.smoothquant_alpha,
                                               explicit=scheme.smoothquant_explicit, threads=threads,
                                               progress=self._progress("smoothing"))
        self.model = model
        self.default_dynamic = frozenset(node.name for node in self._dynamic_nodes(model, (), None))
        static = self._plan(model, ()).quantized_nodes  # every node a variant could quantize statically
        self.static_capable = [node.name for node in static]
        order = {node.name: index for index, node in enumerate(model.graph)}
        quantized = {node.name for node in [*static, *self._lookups(model, ())]} | self.default_dynamic
        if dynamic_alternatives:  # nodes only the dynamic pattern can take (ONNX Runtime's fused Attention)
            quantized |= {node.name for node in model.graph if is_dynamic_candidate(node)}
        self.candidates = sorted(quantized, key=order.__getitem__)
        self.dynamic_alternatives = dynamic_alternatives
        self.dynamic_capable = [node.name for node in model.graph if node.name in quantized and (
            node.name in self.default_dynamic or (dynamic_alternatives and is_dynamic_candidate(node)))]
        self.per_token_capable = [node.name for node in model.graph
                                  if node.name in self.dynamic_capable and supports_per_token(node)]
        nodes = {node.name: node for node in model.graph}
        self.outputs = {name: nodes[name].outputs[0].name for name in self.candidates}
        self.table = CalibrationTable(scheme.calibrator, len(samples), source)
        self._means: dict[str, np.ndarray] = {}
        self._tables: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        weighted = [nodes[name] for name in self.candidates if nodes[name].op_type in _WEIGHTED_OPS]
        tensors = self._plan(model, self.default_dynamic).calibration_tensors
        if dynamic_alternatives:  # the search builds each node alone: its inputs then need ranges of their own
            for name in self.static_capable:
                tensors += self._plan(model, set(self.candidates) - {name}).calibration_tensors
        self._calibrate(list(dict.fromkeys(tensors)), input_mean_axes(weighted) if scheme.bias_correction else {})

    def options(self, name: str) -> tuple[str, ...]:
        """The int8 schemes candidate `name` can be built with: "static", "dynamic", or "lookup" (int8 table)."""
        found = tuple(scheme for scheme, names in (("static", self.static_capable), ("dynamic", self.dynamic_capable))
                      if name in names)
        return found or ("lookup",)

    def default_scheme(self, name: str) -> str:
        """The scheme `build()` gives `name` unless told otherwise: the target's `dynamic_ops` pick dynamic."""
        return "dynamic" if name in self.default_dynamic else self.options(name)[0]

    def static_input_range(self, name: str) -> tuple[float, float] | None:
        """The calibrated range static Q/DQ gives the first input of `name` when only it is quantized."""
        alone = self._plan(self.model, set(self.candidates) - {name})
        nodes = [node for node in alone.quantized_nodes if node.name == name]
        value = nodes[0].inputs[0] if nodes else None
        root = alone.shares.get(value, value) if value is not None else None
        return self.table.ranges.get(alone.range_of[root]) if root in alone.range_of else None

    def build(self, keep_float: Collection[str] = (), dynamic: Collection[str] | None = None,
              per_token: Collection[str] = ()) -> tuple[ir.Model, dict[str, Any]]:
        """A new int8 model with the `keep_float` nodes (names) left in float; returns it and its stats.

        `dynamic` names the nodes quantized dynamically (the other candidates go static where they
        can); None means the nodes of the scheme's `dynamic_ops`. `per_token` names dynamic ones
        whose activations get one scale per row (token) instead of one per call.
        """
        model = self.model.clone()
        keep = set(keep_float) | set(self.scheme.keep_float)
        if per_token:
            dynamic = {*(dynamic if dynamic is not None else self.default_dynamic), *per_token}
        dynamic_nodes = self._dynamic_nodes(model, keep, dynamic)
        quant_plan = self._plan(model, keep | {node.name for node in dynamic_nodes})
        missing = [name for name in quant_plan.calibration_tensors if name not in self.table.ranges]
        if missing:  # a node kept float or built dynamic can expose a tensor no default-build node quantized
            self._calibrate(missing, {})
        stats: dict[str, Any] = {}
        if self.scheme.bias_correction:
            weighted = [node for node in [*quant_plan.quantized_nodes, *dynamic_nodes]
                        if node.op_type in _WEIGHTED_OPS]
            stats["bias_correction"] = correct_biases(model, weighted, self._means, self.scheme.weights)
        stats.update(qdq.apply(model, quant_plan, self.table, self.scheme))
        if dynamic_nodes:
            stats["dynamic"] = quantize_dynamic(model, dynamic_nodes, self.scheme.weights, per_token,
                                                fused_tokens=self.fused_tokens)
        lookups = self._lookups(model, keep)
        if lookups:
            stats["embeddings"] = quantize_embeddings(model, lookups, self._tables)
        RemoveUnusedPass()(model)
        TopologicalSortPass()(model)
        stats["kept_float"] = sorted(set(keep_float) & set(self.candidates))
        return model, {**self.stats, **stats}

    def _plan(self, model: ir.Model, keep_float: Collection[str]) -> qdq.QuantPlan:
        return qdq.plan(model, self.scheme.ops, asymmetric_activations=not self.scheme.activations.symmetric,
                        keep_float=keep_float)

    def _dynamic_nodes(self, model: ir.Model, keep_float: Collection[str], names: Collection[str] | None
                       ) -> list[ir.Node]:
        wanted = set(self.scheme.dynamic_ops)
        return [node for node in model.graph
                if (node.op_type in wanted if names is None else node.name in names)
                and not qdq.is_kept_float(node, keep_float) and is_dynamic_candidate(node)]

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
