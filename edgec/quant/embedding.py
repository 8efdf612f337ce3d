"""Weight-only int8 for lookup tables: Gather from a constant float table (word, position embeddings).

A transformer's embedding table is often its largest tensor (MiniLM: 30522 x 384 floats, 47 MB of
its 90 MB) and no integer kernel ever reads it, so neither static Q/DQ nor dynamic MatMul
quantization shrinks it. Dequantizing the whole table before the lookup would cost a full pass over
it on every call; here the lookup runs on the int8 table and only the gathered rows are dequantized:

    Gather(T_q int8, indices) -> Cast(float) -> Mul(Gather(row_scale, indices))

Each row (slice along the Gather axis) has its own symmetric scale, so a row of small values keeps
its precision next to rows with outliers. Only standard ONNX ops are used, so every runtime that
reads ONNX runs it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from edgec.passes.initializers import add_initializer, constant_tensor, typed_node, unique_name
from edgec.quant.qparams import quantize, weight_qparams

__all__ = ["is_embedding_lookup", "quantize_embeddings", "MIN_TABLE_ELEMENTS"]

#: Smaller tables stay float: the saving is a few KB and the extra Gather/Cast/Mul is not free.
MIN_TABLE_ELEMENTS = 1024


def is_embedding_lookup(node: ir.Node) -> bool:
    """True for a Gather whose data is a constant float table of at least `MIN_TABLE_ELEMENTS` values.

    Decided from the tensor's type and shape alone: every build asks, and reading a 47 MB table to
    learn its size cost ~40 ms per scan of MiniLM.
    """
    if node.domain != "" or node.op_type != "Gather" or len(node.inputs) < 2 or node.inputs[1] is None:
        return False
    table = constant_tensor(node.inputs[0])
    return (table is not None and table.dtype == ir.DataType.FLOAT and len(table.shape) >= 1
            and table.size >= MIN_TABLE_ELEMENTS)


def quantize_embeddings(model: ir.Model, nodes: Sequence[ir.Node],
                        cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, int]:
    """Rewrite each lookup in `nodes` (all `is_embedding_lookup`) in place; returns manifest counts.

    `cache` keeps each (table name, axis)'s int8 rows and scales across builds of the same prepared
    model: quantizing MiniLM's 30522x384 table takes ~0.3 s, most of one build.

    A table several lookups share along one axis is quantized once; its float version is dropped
    once no node reads it (a lookup kept float still can). Each node's output keeps its name,
    consumers and graph-output slot. "bytes_saved" is float tables dropped minus int8 tables and
    scales added.
    """
    graph = model.graph
    tables: dict[tuple[str, int], tuple[ir.Value, ir.Value]] = {}  # rows depend on the axis looked up
    originals: dict[str, ir.Value] = {}
    for node in nodes:
        table = node.inputs[0]
        key = (table.name, node.attributes.get_int("axis", 0) % len(table.const_value.shape))
        if key not in tables:
            tables[key] = _quantized_table(graph, table, key[1], {} if cache is None else cache)
            originals[table.name] = table
        _rewrite(node, *tables[key])
    saved = -sum(value.const_value.nbytes for pair in tables.values() for value in pair)
    for name, table in originals.items():
        if not table.uses() and not table.is_graph_output():
            saved += table.const_value.nbytes
            del graph.initializers[name]
    return {"lookups": len(nodes), "tables": len(tables), "bytes_saved": int(saved)}


def _quantized_table(graph: ir.Graph, table: ir.Value, axis: int,
                     cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]) -> tuple[ir.Value, ir.Value]:
    """T_q int8 and the row scales, shaped [rows, 1, ...] so gathered scales broadcast over the rows' values."""
    key = (table.name, axis)
    if key not in cache:
        array = table.const_value.numpy()
        params = weight_qparams(array, "int8", True, axis)
        scale_shape = (array.shape[axis],) + (1,) * (array.ndim - axis - 1)
        cache[key] = quantize(array, params), params.scale.astype(np.float32).reshape(scale_shape)
    rows, row_scales = cache[key]
    quantized = add_initializer(graph, unique_name(graph, f"{table.name}_quantized"), rows)
    scales = add_initializer(graph, unique_name(graph, f"{table.name}_row_scale"), row_scales)
    return quantized, scales


def _rewrite(node: ir.Node, quantized: ir.Value, scales: ir.Value) -> None:
    """Replace `node` by Gather(T_q) -> Cast -> Mul(Gather(scales))."""
    output = node.outputs[0]
    base = output.name
    indices = node.inputs[1]
    f32 = ir.DataType.FLOAT
    rows = typed_node("Gather", [quantized, indices], base, [("int8_rows", ir.DataType.INT8)],
                      axis=node.attributes.get_int("axis", 0))
    row_scales = typed_node("Gather", [scales, indices], base, [("row_scales", f32)])
    as_float = typed_node("Cast", rows.outputs, base, [("int8_rows_float", f32)], to=f32)
    rescale = typed_node("Mul", [as_float.outputs[0], row_scales.outputs[0]], base, [("dequantized", f32)])
    new_nodes = [rows, row_scales, as_float, rescale]
    ir.convenience.replace_nodes_and_values(node.graph, node, [node], new_nodes, [output], [rescale.outputs[0]])
