"""ONNX Runtime's transformer fusions as an edgec pass, and what int8 does with the fused ops.

A tiny BERT (random weights, 4 heads of 8) is exported in the test as MiniLM is (TorchScript
exporter, eager attention, batch and sequence dynamic), so its per-head Reshapes are written
Concat(batch, seq, -1, 8): the form ORT's own head detection cannot read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.errors import TargetError
from edgec.passes.ort_transformer import AttentionShape, OrtTransformerFusionPass, detect_attention_shape
from edgec.passes.pipeline import PASSES, build_pipeline, optimize
from edgec.quant.dynamic import is_dynamic_candidate, quantize_dynamic, supports_per_token
from edgec.quant.smooth import smooth
from edgec.backends.onnxruntime.session import cpu_session
from edgec.target import TensorQuant, load_target, override_target

HEADS, HIDDEN, LAYERS = 4, 32, 2
#: edgec's fp32 pipeline up to the fusions, as a target lists it.
FLOAT_PASSES = ["infer_shapes", "fold_constants", "eliminate_identity", "deduplicate", "fuse_gelu", "fuse_layernorm"]
#: Fused float outputs equal the unfused ones up to float32 reassociation.
FLOAT_ATOL = 1e-4
WEIGHTS = TensorQuant("int8", symmetric=True, granularity="per_channel")


def _export_last_hidden_state(network: object, path: Path) -> Path:
    """Export a Hugging Face model's `last_hidden_state` for (input_ids, attention_mask), sequence length dynamic."""
    import torch
    from edgec.frontends.torch_frontend import quiet_exporter

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, input_ids, attention_mask):  # noqa: ANN001, ANN201 - traced, not called
            return self.network(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.tensor([[1, 5, 7, 2], [1, 5, 2, 0]])
    dynamic = {0: "batch", 1: "sequence"}
    with quiet_exporter():
        torch.onnx.export(Hidden(), (ids, (ids != 0).long()), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["hidden"], dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic,
                                                                 "hidden": dynamic}, opset_version=17, dynamo=False)
    return path


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                     num_attention_heads=HEADS, intermediate_size=64, max_position_embeddings=64,
                                     attn_implementation="eager")
    encoder = transformers.BertModel(config, add_pooling_layer=False).eval()
    return _export_last_hidden_state(encoder, tmp_path_factory.mktemp("bert") / "tiny_bert.onnx")


def _feeds(count: int = 6) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    feeds = []
    for index in range(count):
        length = 3 + index
        ids = rng.integers(3, 100, (1, length)).astype(np.int64)
        feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    return feeds


def _run(model: ir.Model, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    session = cpu_session(ir.serde.serialize_model(model), 1, "disable")
    return [session.run(None, feed)[0] for feed in feeds]


def _float_model(path: Path) -> ir.Model:
    model, _ = optimize(ir.load(path), FLOAT_PASSES)
    return model


def _fused(path: Path) -> tuple[ir.Model, OrtTransformerFusionPass]:
    fusion = OrtTransformerFusionPass()
    return fusion(_float_model(path)).model, fusion


def _ops(model: ir.Model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --------------------------------------------------------------------------------------------
# head count from the graph
# --------------------------------------------------------------------------------------------


def test_head_count_read_from_exported_concat_shapes(tiny_bert: Path) -> None:
    assert detect_attention_shape(_float_model(tiny_bert)) == AttentionShape(HEADS, HIDDEN)


def _split_heads_model(shape: list[int], second_shape: list[int] | None = None) -> ir.Model:
    """x [1, 6, 24] -> MatMul -> Reshape(shape) -> Transpose [0, 2, 1, 3], once or twice."""
    inits = [numpy_helper.from_array(np.ones((24, 24), np.float32), "w"),
             numpy_helper.from_array(np.array(shape, np.int64), "shape")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["q"]), helper.make_node("Reshape", ["q", "shape"], ["heads"]),
             helper.make_node("Transpose", ["heads"], ["y"], perm=[0, 2, 1, 3])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if second_shape is not None:
        inits.append(numpy_helper.from_array(np.array(second_shape, np.int64), "shape2"))
        nodes += [helper.make_node("Reshape", ["q", "shape2"], ["heads2"]),
                  helper.make_node("Transpose", ["heads2"], ["y2"], perm=[0, 2, 1, 3])]
        outputs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 24])],
                              outputs, inits)
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.mark.parametrize("shape", [[1, 6, 3, 8], [0, 0, -1, 8], [1, 6, 0, 8]])
def test_head_count_from_constant_shapes(shape: list[int]) -> None:
    assert detect_attention_shape(_split_heads_model(shape)) == AttentionShape(3, 24)


@pytest.mark.parametrize("shapes", [([1, 6, 3, 8], [1, 6, 4, 6]), ([1, 6, 5, 8], None), ([1, 6, -1, 7], None)])
def test_head_count_refused_when_mixed_or_inconsistent(shapes: tuple[list[int], list[int] | None]) -> None:
    assert detect_attention_shape(_split_heads_model(*shapes)) is None


# --------------------------------------------------------------------------------------------
# the pass
# --------------------------------------------------------------------------------------------


def test_fusion_keeps_outputs_and_fuses_every_layer(tiny_bert: Path) -> None:
    unfused = _float_model(tiny_bert)
    fused, fusion = _fused(tiny_bert)
    assert fusion.shape == AttentionShape(HEADS, HIDDEN)
    assert fusion.fused == {"Attention": LAYERS, "SkipLayerNormalization": 2 * LAYERS, "BiasGelu": LAYERS}
    assert "Softmax" not in _ops(fused)
    feeds = _feeds()
    for want, got in zip(_run(unfused, feeds), _run(fused, feeds)):
        np.testing.assert_allclose(got, want, atol=FLOAT_ATOL, rtol=FLOAT_ATOL)


def test_fusion_is_a_no_op_without_attention() -> None:
    model = _split_heads_model([1, 6, 3, 8])
    result = OrtTransformerFusionPass()(model)
    assert not result.modified and result.model.graph is model.graph  # nothing copied


def test_pass_is_registered_and_only_for_onnxruntime() -> None:
    assert "ort_transformer_fusions" in PASSES
    cpu = load_target("cpu-x86-fp32")
    assert isinstance(build_pipeline(["ort_transformer_fusions"], cpu)[0][1], OrtTransformerFusionPass)
    with pytest.raises(TargetError, match="contrib ops"):
        build_pipeline(["ort_transformer_fusions"], load_target("tensorrt-fp16"))


# --------------------------------------------------------------------------------------------
# int8 of the fused ops
# --------------------------------------------------------------------------------------------


def test_dynamic_quantization_emits_qattention(tiny_bert: Path) -> None:
    fused, _ = _fused(tiny_bert)
    reference = _run(fused, _feeds())
    attention = [node for node in fused.graph if node.op_type == "Attention"]
    assert attention and all(is_dynamic_candidate(node) and not supports_per_token(node) for node in attention)
    stats = quantize_dynamic(fused, [node for node in fused.graph if is_dynamic_candidate(node)], WEIGHTS)
    assert stats["dynamic_nodes"]["Attention"] == LAYERS
    ops = _ops(fused)
    assert ops["QAttention"] == LAYERS and "Attention" not in ops
    onnx.checker.check_model(ir.serde.serialize_model(fused))
    for want, got in zip(reference, _run(fused, _feeds())):
        assert _cosine(want, got) > 0.99  # 8-bit per-column weights, per-call activations on a random tiny BERT


def test_explicit_smoothing_scales_attention_weights_and_keeps_outputs(tiny_bert: Path) -> None:
    fused, _ = _fused(tiny_bert)
    feeds = _feeds()
    reference = _run(fused, feeds)
    stats = smooth(fused, feeds, 0.5, explicit=True, threads=1)
    # per layer: the Attention and FFN inputs (LayerNorm outputs that also feed a residual), the
    # output projection's (an Attention output) and the FFN's second MatMul's (a BiasGelu output)
    assert stats["inserted_mul"] == stats["groups"] == 4 * LAYERS
    consumers = {use.node.op_type for node in fused.graph if node.name.endswith("_smoothing")
                 for use in node.outputs[0].uses()}
    assert consumers == {"Attention", "MatMul"}
    for want, got in zip(reference, _run(fused, feeds)):
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)


def test_fused_model_quantizes_on_the_plain_int8_target(tiny_bert: Path) -> None:
    """With dynamic alternatives (budgets, auto), the Attention is a dynamic-only candidate of the scheme search."""
    from edgec.quant.quantizer import Quantizer

    fused, _ = _fused(tiny_bert)
    target = override_target(load_target("cpu-x86-int8"), {"quant": {"quantize_embeddings": False}})
    quantizer = Quantizer(fused, target.quant, _feeds(), source="data", dynamic_alternatives=True)
    attention = [name for name in quantizer.candidates if name.startswith("Attention")]
    assert len(attention) == LAYERS
    assert all(quantizer.options(name) == ("dynamic",) for name in attention)
    assert not set(attention) & set(quantizer.per_token_capable)
    model, stats = quantizer.build(dynamic=attention)
    assert _ops(model)["QAttention"] == LAYERS


def test_onnx_runtime_int8_targets_fuse_attention_by_default_float_targets_do_not(tiny_bert: Path,
                                                                                    tmp_path: Path) -> None:
    """The plain int8 target emits QAttention for dynamic attention with no pass named; fp32 keeps the ONNX ops."""
    from edgec.compiler import compile as compile_model
    from edgec.data import save_samples

    calib = tmp_path / "calib.npz"
    save_samples(calib, _feeds())
    dynamic = {"quant": {"ops": [], "dynamic_ops": ["MatMul", "Gemm", "Attention"], "quantize_embeddings": False}}
    int8 = compile_model(tiny_bert, "cpu-x86-int8", calib=calib, output_dir=tmp_path / "int8", overrides=dynamic,
                         verify_import=False)
    fp32 = compile_model(tiny_bert, "cpu-x86-fp32", output_dir=tmp_path / "fp32", verify_import=False)
    int8_ops, fp32_ops = (_ops(ir.load(result.model_path)) for result in (int8, fp32))
    assert int8_ops.get("QAttention") == LAYERS and "Softmax" not in int8_ops
    assert "Attention" not in fp32_ops and fp32_ops.get("Softmax") == LAYERS
    session = cpu_session(onnx.load(str(int8.model_path)), 1)
    reference = _run(_float_model(tiny_bert), _feeds())
    for feeds, want in zip(_feeds(), reference):
        assert _cosine(session.run(None, feeds)[0], want) > 0.99


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=100, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, bos_token_id=1,
                                     eos_token_id=2, attn_implementation="eager")
    decoder = transformers.GPT2Model(config).eval()
    return _export_last_hidden_state(decoder, tmp_path_factory.mktemp("gpt2") / "tiny_gpt2.onnx")


def test_a_gpt2_export_compiles_fused_or_unfused_never_broken(tiny_gpt2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ORT 1.32's BERT matcher emits a cycle on a GPT-2 export ("Graph is not a DAG"): the pass must hand back a
    model that computes the same function either way, and ORT's shape-inference prints must not reach stdout."""
    model = _float_model(tiny_gpt2)
    before = _ops(model)
    fusion = OrtTransformerFusionPass()
    result = fusion(model)
    if fusion.failed is not None:
        assert not result.modified and _ops(result.model) == before
    assert capsys.readouterr().out == ""
    for want, got in zip(_run(model, _feeds()), _run(result.model, _feeds())):
        np.testing.assert_allclose(got, want, atol=FLOAT_ATOL, rtol=1e-3)


def test_a_failing_ort_matcher_leaves_the_model_unfused_with_a_warning(
        tiny_bert: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime.transformers.optimizer as ort_optimizer

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Graph is not a DAG\nsecond line")

    monkeypatch.setattr(ort_optimizer, "optimize_model", broken)
    model = _float_model(tiny_bert)
    fusion = OrtTransformerFusionPass()
    with caplog.at_level("WARNING", logger="edgec.passes.ort_transformer"):
        result = fusion(model)
    assert fusion.failed == "RuntimeError: Graph is not a DAG" and not fusion.fused
    assert not result.modified and _ops(result.model) == _ops(model) and result.model is not model
    assert [record.getMessage() for record in caplog.records] == [
        "ONNX Runtime's transformer fusions failed on this graph (RuntimeError: Graph is not a DAG); it stays unfused"]
