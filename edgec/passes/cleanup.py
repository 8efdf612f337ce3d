"""Cleanup passes: shape inference, constant folding and dead-code removal.

These wrap onnx-ir's and onnxscript's maintained implementations (onnxscript's constant folder
evaluates nodes with the ONNX reference semantics and handles Shape/Size of static shapes), so edgec
does not re-implement ONNX operator semantics.
"""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult
from onnx_ir.passes.common import RemoveUnusedNodesPass, RemoveUnusedOpsetsPass, ShapeInferencePass
from onnxscript.optimizer import _constant_folding

__all__ = ["InferShapesPass", "FoldConstantsPass", "RemoveUnusedPass"]

#: Largest constant (elements) the folder reads or writes; weights above this stay as they are.
FOLD_SIZE_LIMIT = 1 << 22


class InferShapesPass(ShapeInferencePass):
    """ONNX shape inference, lenient: a model with unknown custom ops still gets the shapes it can."""

    def __init__(self) -> None:
        super().__init__(check_type=True, strict_mode=False, data_prop=True)


class FoldConstantsPass(_constant_folding.FoldConstantsPass):
    """Fold every node whose inputs are all constants into an initializer."""

    def __init__(self) -> None:
        super().__init__(shape_inference=False, input_size_limit=FOLD_SIZE_LIMIT, output_size_limit=FOLD_SIZE_LIMIT)


class RemoveUnusedPass(InPlacePass):
    """Remove nodes, initializers and opset imports nothing reaches; inputs and outputs stay."""

    def call(self, model: ir.Model) -> PassResult:
        nodes = RemoveUnusedNodesPass()(model)
        opsets = RemoveUnusedOpsetsPass()(model)
        return PassResult(model, nodes.modified or opsets.modified)
