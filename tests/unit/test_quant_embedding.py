"""Tests for edgec.quant.embedding: Gather from constant float tables stored int8, one scale per row.

The models look rows up along axis 0 (an embedding), along axis 1 with scalar indices, and from a
table two lookups share; the rewritten graph must pass the checker, keep its output names, run in
ONNX Runtime and return exactly the float rows of the dequantized table, within half a step of the
float rows.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.quant.embedding import MIN_TABLE_ELEMENTS, is_embedding_lookup, quantize_embeddings
from edgec.quant.quantizer import Quantizer
from edgec.target import QuantScheme, TensorQuant

VOCAB, WIDTH, SEQ = 100, 24, 7


def _table(rng: np.random.Generator) -> np.ndarray:
    """Rows of very different magnitude: a per-tensor scale would flatten the small rows to zero."""
    row_scale = np.logspace(-3, 1, VOCAB)[:, None]
    return (rng.standard_normal((VOCAB, WIDTH)) * row_scale).astype(np.float32)


def lookup_model() -> onnx.ModelProto:
    """ids -> Gather(E) twice (shared table), a column pick Gather(C, axis=1), and a small table left alone."""
    rng = np.random.default_rng(0)
    inits = {
        "E": _table(rng),
        "C": rng.standard_normal((WIDTH, VOCAB)).astype(np.float32),
        "small": rng.standard_normal((4, 8)).astype(np.float32),
        "column": np.array(3, np.int64),
        "one": np.array([1], np.int64),
    }
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["emb"], name="embed"),
        helper.make_node("Gather", ["E", "ids"], ["emb_again"], name="embed_again"),
        helper.make_node("Gather", ["C", "column"], ["col"], name="pick_column", axis=1),
        helper.make_node("Gather", ["small", "one"], ["small_row"], name="small_lookup"),
    ]
    graph = helper.make_graph(
        nodes, "lookups", [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, SEQ])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [2, SEQ, WIDTH]),
         helper.make_tensor_value_info("emb_again", TensorProto.FLOAT, [2, SEQ, WIDTH]),
         helper.make_tensor_value_info("col", TensorProto.FLOAT, [WIDTH]),
         helper.make_tensor_value_info("small_row", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, ids: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"ids": ids})))


@pytest.fixture(scope="module")
def rewritten() -> tuple[onnx.ModelProto, dict[str, int]]:
    model = ir.serde.deserialize_model(lookup_model())
    stats = quantize_embeddings(model, [node for node in model.graph if is_embedding_lookup(node)])
    proto = ir.serde.serialize_model(model)
    onnx.checker.check_model(proto, full_check=True)
    return proto, stats


def test_only_large_constant_float_tables_qualify() -> None:
    model = ir.serde.deserialize_model(lookup_model())
    chosen = {node.name for node in model.graph if is_embedding_lookup(node)}
    assert chosen == {"embed", "embed_again", "pick_column"}
    assert 4 * 8 < MIN_TABLE_ELEMENTS <= VOCAB * WIDTH


def test_tables_are_stored_int8_once_per_table(rewritten: tuple[onnx.ModelProto, dict[str, int]]) -> None:
    proto, stats = rewritten
    initializers = {init.name: init for init in proto.graph.initializer}
    assert "E" not in initializers and "C" not in initializers and "small" in initializers
    int8_tables = [init for init in initializers.values() if init.data_type == TensorProto.INT8]
    assert sorted(tuple(t.dims) for t in int8_tables) == sorted([(VOCAB, WIDTH), (WIDTH, VOCAB)])
    assert stats == {"lookups": 3, "tables": 2, "bytes_saved": 2 * (VOCAB * WIDTH * 3 - VOCAB * 4)}
    assert [o.name for o in proto.graph.output] == ["emb", "emb_again", "col", "small_row"]


def test_lookups_return_the_dequantized_rows(rewritten: tuple[onnx.ModelProto, dict[str, int]]) -> None:
    proto, _ = rewritten
    ids = np.array([[0, 1, 2, 50, 99, -1, 7], [3, 3, 98, 10, 0, 11, 60]], np.int64)
    reference, quantized = _run(lookup_model(), ids), _run(proto, ids)
    table = numpy_helper.to_array(next(i for i in lookup_model().graph.initializer if i.name == "E"))
    step = np.abs(table).max(axis=1) / 127  # one symmetric scale per row
    for name in ("emb", "emb_again"):
        error = np.abs(quantized[name] - reference[name])
        assert np.all(error <= step[ids][..., None] / 2 + 1e-7)  # within half a step of its own row
    assert np.array_equal(quantized["emb"], quantized["emb_again"])
    assert np.abs(quantized["col"] - reference["col"]).max() > 0  # really quantized ...
    np.testing.assert_allclose(quantized["col"], reference["col"], atol=np.abs(reference["col"]).max() / 127)
    assert np.array_equal(quantized["small_row"], reference["small_row"])  # ... and the small table untouched


def test_small_rows_keep_their_precision(rewritten: tuple[onnx.ModelProto, dict[str, int]]) -> None:
    """Row 0 is ~1e-3 next to rows ~10: with one scale per row it still round-trips to 1%."""
    proto, _ = rewritten
    ids = np.zeros((2, SEQ), np.int64)
    reference, quantized = _run(lookup_model(), ids)["emb"], _run(proto, ids)["emb"]
    assert np.abs(quantized - reference).max() <= 0.01 * np.abs(reference).max()


def _scheme(quantize_embeddings: bool, keep_float: tuple[str, ...] = ()) -> QuantScheme:
    weights = TensorQuant("int8", symmetric=True, granularity="per_channel")
    activations = TensorQuant("uint8", symmetric=False, granularity="per_tensor")
    return QuantScheme(weights, activations, ops=(), quantize_embeddings=quantize_embeddings, keep_float=keep_float)


def _quantizer(scheme: QuantScheme) -> Quantizer:
    ids = np.arange(2 * SEQ, dtype=np.int64).reshape(2, SEQ)
    return Quantizer(ir.serde.deserialize_model(lookup_model()), scheme, [{"ids": ids}], source="data")


def test_quantizer_builds_int8_tables_only_when_the_scheme_asks() -> None:
    on = _quantizer(_scheme(True))
    assert on.candidates == ["embed", "embed_again", "pick_column"]  # so sensitivity and fallback see them
    _, stats = on.build()
    assert stats["embeddings"]["tables"] == 2
    _, kept = on.build(keep_float=["embed", "embed_again"])
    assert kept["embeddings"] == {"lookups": 1, "tables": 1, "bytes_saved": VOCAB * WIDTH * 3 - VOCAB * 4}
    half, shared = on.build(keep_float=["embed"])  # E is still read in float: its int8 copy only adds bytes
    assert shared["embeddings"]["bytes_saved"] == VOCAB * WIDTH * 3 - VOCAB * 4 - (VOCAB * WIDTH + VOCAB * 4)
    assert "E" in half.graph.initializers
    off = _quantizer(_scheme(False))
    assert off.candidates == [] and "embeddings" not in off.build()[1]
    _, by_type = _quantizer(_scheme(True, keep_float=("Gather",))).build()
    assert "embeddings" not in by_type


def test_a_table_looked_up_along_two_axes_gets_rows_for_each() -> None:
    """Rows along axis 0 and along axis 1 are different slices, so each axis needs its own scales."""
    table = _table(np.random.default_rng(1))
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["by_row"], name="by_row"),
         helper.make_node("Gather", ["E", "cols"], ["by_column"], name="by_column", axis=-1)],
        "two_axes", [helper.make_tensor_value_info("ids", TensorProto.INT64, [3]),
                     helper.make_tensor_value_info("cols", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("by_row", TensorProto.FLOAT, [3, WIDTH]),
         helper.make_tensor_value_info("by_column", TensorProto.FLOAT, [VOCAB, 2])],
        [numpy_helper.from_array(table, "E")])
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = ir.serde.deserialize_model(source)
    stats = quantize_embeddings(model, [node for node in model.graph if is_embedding_lookup(node)])
    assert stats["tables"] == 2
    feeds = {"ids": np.array([0, 5, 99], np.int64), "cols": np.array([0, 23], np.int64)}
    expected = ort.InferenceSession(source.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    proto = ir.serde.serialize_model(model)
    onnx.checker.check_model(proto, full_check=True)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    row_step = np.abs(table).max(axis=1) / 127
    column_step = np.abs(table).max(axis=0) / 127
    assert np.all(np.abs(got[0] - expected[0]) <= row_step[feeds["ids"]][:, None] / 2 + 1e-7)
    assert np.all(np.abs(got[1] - expected[1]) <= column_step[feeds["cols"]][None, :] / 2 + 1e-7)
