"""ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization, BiasGelu) as an edgec pass.

ONNX Runtime runs a BERT-class encoder faster, in fp32 and in int8, when its multi-op patterns
are single `com.microsoft` kernels: one `Attention` for the Q/K/V projections, scores, softmax
and context; `SkipLayerNormalization` for residual Add + LayerNorm; `BiasGelu` for bias Add + Gelu.
Its own fusion code (`onnxruntime.transformers`) does the matching; this pass adds what it lacks:
the head count. ORT reads it from a constant Reshape shape, but exporters write the per-head
Reshape as Concat(batch, sequence, -1, head_size), so it finds none and fuses no Attention (it asks
the user for `num_heads`). Here it is read from the graph: the head size is the last entry of the
Reshape shape that splits Q into heads, the hidden size the width of the value it reshapes.

Left out on purpose: `EmbedLayerNormalization`, which would swallow the embedding Gathers that
edgec's int8 lookup tables quantize (MiniLM's 47 MB word table).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes import FunctionalPass, PassResult

__all__ = ["AttentionShape", "OrtTransformerFusionPass", "detect_attention_shape", "FUSED_OPS"]

logger = logging.getLogger(__name__)

#: The `com.microsoft` ops the fusions emit (what `fused` counts).
FUSED_OPS = ("Attention", "SkipLayerNormalization", "BiasGelu", "FastGelu", "LayerNormalization", "Gelu")
#: The Transpose that moves heads in front of tokens: [batch, seq, heads, size] -> [batch, heads, seq, size]
#: (Q and V; K is split the same way and transposed [0, 2, 3, 1] straight to K^T).
_HEAD_PERMS = ((0, 2, 1, 3), (0, 2, 3, 1))


@dataclass(frozen=True)
class AttentionShape:
    """What ONNX Runtime's Attention fusion needs to know about the model's attention."""

    num_heads: int
    hidden_size: int


def detect_attention_shape(model: ir.Model) -> AttentionShape | None:
    """The model's head count and hidden size, read from its per-head Reshapes; None when absent or mixed.

    Each Reshape [batch, seq, hidden] -> [batch, seq, heads, head_size] that feeds a head Transpose
    votes; heads written as -1 or 0 follow from hidden / head_size. Layers that disagree (or a model
    with no such Reshape) give None: a wrong head count would fuse attention that computes
    something else.
    """
    votes: Counter[AttentionShape] = Counter()
    for node in model.graph.all_nodes():
        if node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
            continue
        perm = node.attributes.get_ints("perm")
        reshape = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
        if perm is None or tuple(perm) not in _HEAD_PERMS or reshape is None or reshape.op_type != "Reshape":
            continue
        shape = _split_shape(reshape)
        hidden = _last_dim(reshape.inputs[0])
        if shape is None or hidden is None:
            continue
        heads, size = shape
        if size > 0 and hidden % size == 0 and heads in (-1, 0, hidden // size):
            votes[AttentionShape(hidden // size, hidden)] += 1
    return next(iter(votes)) if len(votes) == 1 else None


def _split_shape(reshape: ir.Node) -> tuple[int, int] | None:
    """The last two entries (heads, head_size) of a rank-4 Reshape target: a constant or a Concat of pieces."""
    if len(reshape.inputs) < 2 or reshape.inputs[1] is None:
        return None
    target = reshape.inputs[1]
    constant = ir.convenience.get_const_tensor(target)
    if constant is not None:
        values = constant.numpy().reshape(-1)
        return (int(values[2]), int(values[3])) if values.size == 4 else None
    concat = target.producer()
    if concat is None or concat.op_type != "Concat" or len(concat.inputs) != 4:
        return None
    pieces = [ir.convenience.get_const_tensor(value) if value is not None else None for value in concat.inputs[2:]]
    if any(piece is None or piece.numpy().size != 1 for piece in pieces):
        return None
    heads, size = (int(np.asarray(piece.numpy()).reshape(-1)[0]) for piece in pieces)
    return heads, size


def _last_dim(value: ir.Value | None) -> int | None:
    """The static width of a value: its shape's last dim, else the column count of the MatMul weight behind it."""
    if value is None:
        return None
    if value.shape is not None and len(value.shape) > 0 and isinstance(value.shape[-1], int):
        return value.shape[-1]
    producer = value.producer()
    while producer is not None and producer.op_type == "Add":  # the bias Add after the projection
        producer = next((v.producer() for v in producer.inputs if v is not None and v.producer() is not None), None)
    if producer is not None and producer.op_type == "MatMul" and producer.inputs[1] is not None:
        weight = producer.inputs[1].const_value
        if weight is not None and len(weight.shape) == 2:
            return int(weight.shape[1])
    return None


def _tensor_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Constant nodes with a `value` tensor: ORT's symbolic shape inference (which the fusions need to
    check shapes) reads only that form and fails on `value_ints` (what edgec's folding writes for shapes)."""
    numeric = {"value_int": np.int64, "value_ints": np.int64, "value_float": np.float32, "value_floats": np.float32}
    for node in proto.graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
            continue
        attribute = node.attribute[0]
        if attribute.name in numeric:
            array = np.asarray(onnx.helper.get_attribute_value(attribute), dtype=numeric[attribute.name])
            del node.attribute[:]
            node.attribute.append(onnx.helper.make_attribute("value", onnx.numpy_helper.from_array(array)))
    return proto


@contextlib.contextmanager
def _quiet_ort_fusion_logs() -> Iterator[None]:
    """ORT's fusion modules log every pattern they did not find at WARNING (under top-level module names
    such as `fusion_skiplayernorm`, which ORT imports off its own folder) and print shape-inference
    failures to stdout, where edgec writes its results; edgec reports the outcome itself."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


class OrtTransformerFusionPass(FunctionalPass):
    """Fuse attention, residual LayerNorm and bias GELU into ONNX Runtime's kernels (a no-op without Softmax).

    Attributes after a call: `shape` (the detected heads and hidden size, or None: then everything
    but Attention is fused), `fused` (op -> count of fused nodes in the result) and `failed` (why the
    model came back unfused, or None). ORT's matcher is written for BERT-class encoders; on other
    graphs it can raise or emit a cycle (a GPT-2 export: "Graph is not a DAG"), so any failure
    leaves the model as it was, with a warning, instead of failing the compile.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shape: AttentionShape | None = None
        self.fused: dict[str, int] = {}
        self.failed: str | None = None

    def call(self, model: ir.Model) -> PassResult:
        if not any(node.op_type == "Softmax" for node in model.graph.all_nodes()):
            return PassResult(_rewrapped(model), modified=False)
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model

        self.shape = detect_attention_shape(model)
        options = FusionOptions("bert")
        options.enable_embed_layer_norm = False
        options.enable_attention = self.shape is not None
        try:
            with _quiet_ort_fusion_logs():
                fused = optimize_model(_tensor_constants(ir.serde.serialize_model(model)), model_type="bert",
                                       num_heads=self.shape.num_heads if self.shape else 0,
                                       hidden_size=self.shape.hidden_size if self.shape else 0,
                                       optimization_options=options, opt_level=0)
        except Exception as exc:  # noqa: BLE001 - any failure of ORT's matcher leaves the model unfused
            self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            logger.warning("ONNX Runtime's transformer fusions failed on this graph (%s); it stays unfused",
                           self.failed)
            return PassResult(_rewrapped(model), modified=False)
        result = ir.serde.deserialize_model(fused.model)
        if any(node.domain == "com.microsoft" for node in result.graph.all_nodes()):
            result.opset_imports.setdefault("com.microsoft", 1)  # ORT's fusions do not always declare it
        self.fused = dict(Counter(node.op_type for node in result.graph.all_nodes()
                                  if node.domain == "com.microsoft" and node.op_type in FUSED_OPS))
        return PassResult(result, modified=_node_count(result) != _node_count(model))  # every fusion removes nodes


def _rewrapped(model: ir.Model) -> ir.Model:
    """A new Model object around the same graph: a functional pass must not hand back its input, and
    copying a model that has nothing to fuse (a CNN) would cost a full serialization."""
    return ir.Model(model.graph, ir_version=model.ir_version, producer_name=model.producer_name,
                    producer_version=model.producer_version, domain=model.domain, model_version=model.model_version,
                    doc_string=model.doc_string, functions=list(model.functions.values()),
                    metadata_props=dict(model.metadata_props))


def _node_count(model: ir.Model) -> int:
    return sum(1 for _ in model.graph.all_nodes())
