"""Reading and replacing constant tensors in an onnx-ir graph: what folding and quantization rewrites share.

One rule for "is this a constant": an initializer that is also a graph input is only a default the
caller may override at run time, so it is not one. One rule for changing a constant a node reads:
in place when that node is its only reader, else through a new, uniquely named initializer, so no
other node's result changes. And one way to make a new node whose outputs are named and typed
up front, which later passes (shape inference, planners) rely on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

__all__ = ["claim_name", "constant_tensor", "constant_array", "unique_name", "add_initializer", "set_constant_input", "typed_node"]


def constant_tensor(value: ir.Value | None) -> ir.TensorProtocol | None:
    """The value's tensor if it is fixed when the model is built, else None; its data is not read."""
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    return value.const_value


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's data if it is fixed when the model is built, else None."""
    tensor = constant_tensor(value)
    return None if tensor is None else tensor.numpy()


def claim_name(taken: set[str], base: str) -> str:
    """`base`, or `base_1`, `base_2`, ... : the first name not in `taken`, which is then added to it."""
    name, suffix = base, 0
    while name in taken:
        suffix += 1
        name = f"{base}_{suffix}"
    taken.add(name)
    return name


def unique_name(graph: ir.Graph, base: str) -> str:
    """`base`, suffixed if needed: a new initializer must not take the name of any value in the graph."""
    taken = {*graph.initializers, *(value.name for value in graph.inputs)}
    taken.update(value.name for node in graph.all_nodes() for value in node.outputs)
    name, suffix = base, 0
    while name in taken:
        suffix += 1
        name = f"{base}_{suffix}"
    return name


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register `array` as an initializer called `name` (the caller makes the name unique)."""
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value


def _editable_in_place(value: ir.Value) -> bool:
    """Only an initializer nothing else reads can change without changing other results."""
    return value.is_initializer() and len(value.uses()) == 1 and not value.is_graph_output()


def set_constant_input(graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray, name: str) -> None:
    """Make input `index` of `node` (absent inputs included) read `array`.

    In place when the current input is an initializer only this node reads; otherwise a new
    initializer named `name` (made unique) takes its place.
    """
    current = node.inputs[index] if index < len(node.inputs) else None
    if current is not None and _editable_in_place(current):
        current.const_value = ir.tensor(array, name=current.name)
        current.shape = ir.Shape(array.shape)
        return
    value = add_initializer(graph, unique_name(graph, name), array)
    if index >= len(node.inputs):
        node.resize_inputs(index + 1)
    node.replace_input_with(index, value)


def typed_node(op_type: str, inputs: Sequence[ir.Value | None], base: str,
               outputs: Sequence[tuple[str, ir.DataType]], **attributes: object) -> ir.Node:
    """A node whose outputs are named `{base}_{suffix}` and typed, so later passes see their dtypes."""
    node = ir.node(op_type, inputs, attributes, num_outputs=len(outputs), name=f"{base}_{outputs[0][0]}")
    for value, (suffix, dtype) in zip(node.outputs, outputs):
        value.name = f"{base}_{suffix}"
        value.dtype = dtype
    return node
