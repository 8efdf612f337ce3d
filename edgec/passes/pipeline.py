"""The registry of named passes and the one place their order is decided (the target's `passes`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import onnx_ir as ir
from onnx_ir.passes import PassBase
from onnx_ir.passes.common import TopologicalSortPass

from edgec.errors import TargetError
from edgec.passes.cleanup import FoldConstantsPass, InferShapesPass, RemoveUnusedPass
from edgec.passes.fold import FoldBatchNormPass
from edgec.passes.manager import PassInstrument, PassRecord, StatsInstrument, run_passes
from edgec.passes.opset import UpgradeOpsetPass

if TYPE_CHECKING:
    from edgec.target import Target

__all__ = ["PASSES", "PassFactory", "build_pipeline", "optimize"]

#: Builds a pass for a target (None: no target, e.g. in unit tests); most passes ignore it, some
#: read facts such as the runtime or opset to decide what they may emit.
PassFactory = Callable[["Target | None"], PassBase]

#: name -> (factory, one-line description); names are what target descriptors list.
#: Opset a pass converts to when the target names none.
DEFAULT_OPSET = 17

PASSES: dict[str, tuple[PassFactory, str]] = {
    "upgrade_opset": (
        lambda target: UpgradeOpsetPass(int(target.options.get("opset", DEFAULT_OPSET)) if target else DEFAULT_OPSET),
        "convert an older model to the target's opset (runtimes drop kernels for old opsets)",
    ),
    "infer_shapes": (lambda target: InferShapesPass(), "ONNX shape and type inference on every value"),
    "fold_constants": (lambda target: FoldConstantsPass(), "evaluate nodes whose inputs are all constant"),
    "remove_unused": (lambda target: RemoveUnusedPass(), "drop nodes, initializers and opsets no output depends on"),
    "fold_batchnorm": (
        lambda target: FoldBatchNormPass(),
        "fold BatchNormalization into the preceding Conv/ConvTranspose/Gemm",
    ),
}


def build_pipeline(names: Sequence[str], target: Target | None = None) -> list[tuple[str, PassBase]]:
    """Instantiate passes by name, rejecting unknown names with the list of known ones."""
    unknown = [name for name in names if name not in PASSES]
    if unknown:
        raise TargetError(f"unknown pass(es) {unknown}; known passes: {', '.join(PASSES)}")
    return [(name, PASSES[name][0](target)) for name in names]


def optimize(
    model: ir.Model,
    names: Sequence[str],
    instruments: Sequence[PassInstrument] = (),
    target: Target | None = None,
) -> tuple[ir.Model, list[PassRecord]]:
    """Run the named pipeline, then sort topologically (Q/DQ insertion relies on node order)."""
    stats = StatsInstrument()
    model = run_passes(model, build_pipeline(names, target), [stats, *instruments])
    TopologicalSortPass()(model)
    return model, stats.records
