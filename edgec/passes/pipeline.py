"""The registry of named passes and the one place their order is decided (the target's `passes`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import onnx_ir as ir
from onnx_ir.passes import PassBase
from onnx_ir.passes.common import TopologicalSortPass

from edgec import backends
from edgec.errors import TargetError
from edgec.passes.cleanup import (
    DeduplicatePass,
    EliminateIdentityLikePass,
    FoldConstantsPass,
    FreezeInitializersPass,
    InferShapesPass,
    RemoveUnusedPass,
)
from edgec.passes.fold import FoldAffinePass, FoldBatchNormPass, FoldPadPass, MatMulAddToGemmPass
from edgec.passes.fusion import (
    FuseActivationsPass,
    FuseGeluPass,
    FuseLayerNormPass,
    MarkAttentionPass,
    fusable_activations,
)
from edgec.passes.layout import ConvertToNHWCPass
from edgec.passes.manager import PassInstrument, PassRecord, StatsInstrument, run_passes
from edgec.passes.opset import UpgradeOpsetPass
from edgec.passes.ort_transformer import OrtTransformerFusionPass

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
    "freeze_initializers": (
        lambda target: FreezeInitializersPass(),
        "treat initializers listed as graph inputs (pre-IR-4 models) as the constants they are",
    ),
    "infer_shapes": (lambda target: InferShapesPass(), "ONNX shape and type inference on every value"),
    "fold_constants": (
        lambda target: FoldConstantsPass(),
        "evaluate nodes whose inputs are all constant; Constant nodes become initializers",
    ),
    "eliminate_identity": (
        lambda target: EliminateIdentityLikePass(),
        "remove Identity, inference Dropout, no-op Cast/Reshape/Transpose/Expand, cancelling Squeeze/Unsqueeze;"
        " merge Transpose/Reshape/Unsqueeze pairs",
    ),
    "deduplicate": (lambda target: DeduplicatePass(), "merge equal initializers, then common subexpressions"),
    "fold_pad": (lambda target: FoldPadPass(), "fold a constant-mode Pad into the pads of the following Conv/MaxPool/AveragePool"),
    "fold_batchnorm": (
        lambda target: FoldBatchNormPass(),
        "fold inference-mode BatchNormalization into the preceding Conv/ConvTranspose/Gemm/MatMul",
    ),
    "fold_affine": (
        lambda target: FoldAffinePass(),
        "fold Mul/Div/Add/Sub by a per-channel or scalar constant into the preceding Conv/ConvTranspose/Gemm",
    ),
    "matmul_add_to_gemm": (
        lambda target: MatMulAddToGemmPass(),
        "Add(MatMul(A[M,K], constant B), constant C) -> Gemm",
    ),
    "fuse_gelu": (
        lambda target: FuseGeluPass(_contrib_ops(target)),
        "decomposed GELU (erf or tanh form) -> Gelu (opset >= 20) or ONNX Runtime's Gelu/FastGelu",
    ),
    "fuse_layernorm": (
        lambda target: FuseLayerNormPass(),
        "decomposed LayerNorm over the last axis -> LayerNormalization (opset >= 17)",
    ),
    "fuse_activations": (
        lambda target: FuseActivationsPass(fusable_activations(target)),
        "group Conv/Gemm/MatMul with the activation the target runs fused, so no Q/DQ goes between them",
    ),
    "mark_attention": (
        lambda target: MarkAttentionPass(),
        "group MatMul-Softmax-MatMul attention cores as one region (for runtimes with fused attention)",
    ),
    "ort_transformer_fusions": (
        lambda target: _contrib_only("ort_transformer_fusions", target, OrtTransformerFusionPass),
        "ONNX Runtime's transformer fusions: Attention (head count read from the graph), SkipLayerNormalization,"
        " BiasGelu; dynamic int8 then emits QAttention",
    ),
    "convert_to_nhwc": (
        lambda target: ConvertToNHWCPass(),
        "convert Conv/pooling/BatchNorm regions to channels-last edgec.nhwc ops, transposes only at region edges",
    ),
    "remove_unused": (lambda target: RemoveUnusedPass(), "drop nodes, initializers and opsets no output depends on"),
}


def _contrib_ops(target: Target | None) -> bool:
    """Whether the target's runtime runs ONNX Runtime's contrib ops (its backend says)."""
    backend = backends.find(target.runtime) if target is not None else None
    return backend is not None and backend.contrib_ops


def _contrib_only(name: str, target: Target | None, make: Callable[[], PassBase]) -> PassBase:
    """A pass that emits only ONNX Runtime's contrib (`com.microsoft`) ops: refused for runtimes without them."""
    if target is not None and not _contrib_ops(target):
        raise TargetError(f"pass '{name}' emits ONNX Runtime's contrib ops, which target '{target.name}' "
                          f"({target.runtime}) does not run")
    return make()


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
