"""Per-layer quantization sensitivity: which quantized nodes cost accuracy, and how much.

Like TFLite's QuantizationDebugger, every quantized node is measured two ways against the float
model on the same samples:

- alone: only that node is quantized; the error of its own output, and of the model's outputs,
  isolates what quantizing this node costs (and ranks nodes for the accuracy fallback);
- cumulative: every node is quantized; the error of the node's output shows where error builds up.

Node outputs are compared by tensor name: every build keeps the name of the float tensor a
quantized node produces (see `Quantizer.outputs`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from edgec.harness.accuracy import output_drift
from edgec.quant.calibrator import run_exposing
from edgec.quant.quantizer import Quantizer
from edgec.tensors import Feeds

__all__ = ["LayerSensitivity", "analyse", "ranking", "worst_table", "report_json", "SCHEMA"]

SCHEMA = "edgec.sensitivity/2"
Say = Callable[[str], None]
Outputs = list[dict[str, np.ndarray]]


@dataclass
class LayerSensitivity:
    """One quantized node's errors; each metric dict holds `sqnr_db`, `cosine_min` and `max_abs`."""

    node: str
    op_type: str
    tensor: str
    #: how the node was quantized: "static", "dynamic" or "lookup" (see `Quantizer.options`)
    scheme: str
    alone: dict[str, float]
    cumulative: dict[str, float]
    #: the model outputs' error with only this node quantized (worst output)
    model_alone: dict[str, float]


def _metrics(outputs: Outputs, reference: Outputs, name: str) -> dict[str, float]:
    drift = output_drift([o[name] for o in outputs], [r[name] for r in reference])
    return {key: drift[key] for key in ("sqnr_db", "cosine_min", "max_abs")}


def _model_metrics(outputs: Outputs, reference: Outputs, model_outputs: Sequence[str]) -> dict[str, float]:
    """The worst of the model outputs' metrics (lowest SQNR and cosine, largest error)."""
    each = [_metrics(outputs, reference, name) for name in model_outputs]
    return {"sqnr_db": min(m["sqnr_db"] for m in each), "cosine_min": min(m["cosine_min"] for m in each),
            "max_abs": max(m["max_abs"] for m in each)}


def _run_nodes(model: ir.Model, quantizer: Quantizer, names: Sequence[str], samples: Sequence[Feeds]) -> Outputs:
    """The graph outputs and the outputs of nodes `names` of a built model, keyed as in the float model.

    Why not by tensor name: a build may rename a node's output (a ReLU folded into a quantized graph
    output leaves the producer's tensor named after the graph output's float side), but it keeps
    node names.
    """
    wanted = set(names)
    produced = {node.name: node.outputs[0].name for node in model.graph if node.name in wanted}
    float_name = {produced.get(name, quantizer.outputs[name]): quantizer.outputs[name] for name in names}
    runs = run_exposing(model, list(float_name), samples, quantizer.threads)
    return [{float_name.get(tensor, tensor): value for tensor, value in run.items()} for run in runs]


def analyse(quantizer: Quantizer, samples: Sequence[Feeds], *, schemes: Mapping[str, str] | None = None,
            only: Collection[str] | None = None, say: Say = lambda message: None) -> list[LayerSensitivity]:
    """Measure every candidate node of `quantizer` (those in `only`, when given) alone and cumulatively on `samples`.

    Alone, a node is built with its scheme in `schemes` ("static" or "dynamic"), by default the
    target's (`Quantizer.default_scheme`); cumulatively, every node has its default scheme. Costs
    one build and one run over `samples` per node, plus two.
    """
    threads = quantizer.threads
    model_outputs = [value.name for value in quantizer.model.graph.outputs]
    reference = run_exposing(quantizer.model, list(quantizer.outputs.values()), samples, threads)
    everything, _ = quantizer.build()
    cumulative = _run_nodes(everything, quantizer, quantizer.candidates, samples)
    nodes = {node.name: node for node in quantizer.model.graph}
    jobs = [(name, (schemes or {}).get(name) or quantizer.default_scheme(name)) for name in quantizer.candidates
            if only is None or name in only]
    layers = []
    for index, (name, scheme) in enumerate(jobs, 1):
        say(f"  sensitivity {index}/{len(jobs)}: {name} ({scheme})")
        alone_model, _ = quantizer.build(keep_float=[c for c in quantizer.candidates if c != name],
                                         dynamic=[name] if scheme == "dynamic" else [])
        tensor = quantizer.outputs[name]
        alone = _run_nodes(alone_model, quantizer, [name], samples)
        layers.append(LayerSensitivity(
            node=name, op_type=nodes[name].op_type, tensor=tensor, scheme=scheme,
            alone=_metrics(alone, reference, tensor), cumulative=_metrics(cumulative, reference, tensor),
            model_alone=_model_metrics(alone, reference, model_outputs)))
    return layers


def ranking(layers: Sequence[LayerSensitivity]) -> list[str]:
    """Node names, the most harmful first: lowest model-output SQNR with the node quantized alone.

    SQNR pools the error of every sample; a minimum over a few samples (the cosine) ranks by noise.
    """
    ordered = sorted(layers, key=lambda layer: (layer.model_alone["sqnr_db"], layer.model_alone["cosine_min"]))
    return [layer.node for layer in ordered]


def worst_table(layers: Sequence[LayerSensitivity], count: int = 10) -> str:
    """The `count` most harmful layers as a table for the terminal, full node names (for --keep-float).

    Columns are SQNR in dB (higher is better) of: the model's output with only this layer int8, this
    layer's output with only it int8, and this layer's output with every layer int8.
    """
    by_name = {layer.node: layer for layer in layers}
    names = ranking(layers)[:count]
    width = max([len("node"), *map(len, names)])
    headers = ("model out, only it int8", "layer out, only it int8", "layer out, all int8")
    rows = [f"{'node':<{width}} {'op':<8} {'scheme':<8} " + " ".join(f"{h:>24}" for h in headers) + "  (SQNR dB)"]
    for name in names:
        layer = by_name[name]
        values = (layer.model_alone["sqnr_db"], layer.alone["sqnr_db"], layer.cumulative["sqnr_db"])
        rows.append(f"{name:<{width}} {layer.op_type:<8} {layer.scheme:<8} " + " ".join(f"{v:>24.1f}" for v in values))
    return "\n".join(rows)


def report_json(layers: Sequence[LayerSensitivity], extra: Mapping[str, Any]) -> str:
    """The report file: schema, context (`extra`: samples, target, fallback...), layers most harmful first."""
    by_name = {layer.node: layer for layer in layers}
    ordered = [asdict(by_name[name]) for name in ranking(layers)]
    return json.dumps({"schema": SCHEMA, **extra, "layers": ordered}, indent=1)
