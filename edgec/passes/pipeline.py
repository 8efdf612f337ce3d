"""The registry of named passes and the one place their order is decided (the target's `passes`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx_ir as ir
from onnx_ir.passes import PassBase
from onnx_ir.passes.common import TopologicalSortPass

from edgec.errors import TargetError
from edgec.passes.cleanup import FoldConstantsPass, InferShapesPass, RemoveUnusedPass
from edgec.passes.fold import FoldBatchNormPass
from edgec.passes.manager import PassInstrument, PassRecord, StatsInstrument, run_passes

__all__ = ["PASSES", "build_pipeline", "optimize"]

#: name -> (factory, one-line description); names are what target descriptors list.
PASSES: dict[str, tuple[Callable[[], PassBase], str]] = {
    "infer_shapes": (InferShapesPass, "ONNX shape and type inference on every value"),
    "fold_constants": (FoldConstantsPass, "evaluate nodes whose inputs are all constant"),
    "remove_unused": (RemoveUnusedPass, "drop nodes, initializers and opsets no output depends on"),
    "fold_batchnorm": (FoldBatchNormPass, "fold BatchNormalization into the preceding Conv/ConvTranspose/Gemm"),
}


def build_pipeline(names: Sequence[str]) -> list[tuple[str, PassBase]]:
    """Instantiate passes by name, rejecting unknown names with the list of known ones."""
    unknown = [name for name in names if name not in PASSES]
    if unknown:
        raise TargetError(f"unknown pass(es) {unknown}; known passes: {', '.join(PASSES)}")
    return [(name, PASSES[name][0]()) for name in names]


def optimize(
    model: ir.Model, names: Sequence[str], instruments: Sequence[PassInstrument] = ()
) -> tuple[ir.Model, list[PassRecord]]:
    """Run the named pipeline, then sort topologically (Q/DQ insertion relies on node order)."""
    stats = StatsInstrument()
    model = run_passes(model, build_pipeline(names), [stats, *instruments])
    TopologicalSortPass()(model)
    return model, stats.records
