"""Opset conversion: bring a model's default-domain opset up to the one the target is built for.

Old exporters wrote opsets that current runtimes no longer implement (ONNX Runtime 1.32 has no
kernels for e.g. AveragePool-1 or BatchNormalization-6), and Q/DQ needs opset 13 for per-axis
scales. The conversion itself is the ONNX project's version converter.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx_ir.passes import InPlacePass, PassResult

from edgec.errors import TargetError, first_line

__all__ = ["UpgradeOpsetPass", "upgrade_opset"]


def _channel_slopes_for_prelu7(model: ir.Model) -> None:
    """Adapt PRelu slopes across the opset-7 change the ONNX converter leaves alone.

    PRelu-6 applies a 1-D slope of size C > 1 per channel (axis 1); from opset 7 the slope broadcasts
    numpy-style from the last axis. A constant slope [C] on an input of rank r > 2 becomes
    [C, 1, ..., 1] (r - 2 ones), which means per-channel again.
    """
    for node in model.graph.all_nodes():
        if node.op_type != "PRelu" or node.domain not in ("", "ai.onnx") or node.inputs[1] is None:
            continue
        data, slope = node.inputs
        rank = len(data.shape) if data.shape is not None else 0
        if slope.const_value is None or rank <= 2:
            continue
        values = slope.const_value.numpy()
        if values.ndim == 1 and values.size > 1:
            reshaped = values.reshape(values.size, *([1] * (rank - 2)))
            slope.const_value = ir.tensor(reshaped, name=slope.name)
            slope.shape = ir.Shape(reshaped.shape)


def upgrade_opset(model: ir.Model, opset: int) -> ir.Model:
    """A copy of `model` at default-domain `opset`, or `model` itself when it is already there or newer."""
    current = model.opset_imports.get("", 1)
    if current >= opset:
        return model
    try:
        proto = onnx.version_converter.convert_version(ir.serde.serialize_model(model), opset)
    except Exception as exc:  # the converter raises bare RuntimeErrors for ops it cannot adapt
        raise TargetError(f"cannot convert the model from opset {current} to {opset}: {first_line(exc)}") from exc
    upgraded = ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(proto))
    if current < 7:
        _channel_slopes_for_prelu7(upgraded)
    return upgraded


class UpgradeOpsetPass(InPlacePass):
    """Convert to `opset` when the model's is lower; newer models are left as they are."""

    def __init__(self, opset: int) -> None:
        self.opset = opset

    def call(self, model: ir.Model) -> PassResult:
        upgraded = upgrade_opset(model, self.opset)
        if upgraded is model:
            return PassResult(model, False)
        # IR < 4 requires every initializer to be a graph input, which later folding would break
        minimum_ir = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", self.opset)])
        model.graph, model.ir_version = upgraded.graph, max(upgraded.ir_version, minimum_ir)
        return PassResult(model, True)
