"""The real all-MiniLM-L6-v2 asset: its ONNX export embeds as sentence-transformers does, and its data loads.

Why check against sentence-transformers: the export wraps the encoder in a pooling layer of our own
and tokenizes with our own settings (no padding, truncation at 256); a silently wrong mask, pooling
or tokenizer would still give 384 plausible numbers, and every int8 result measured on this model
would then be measured against the wrong reference.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgec.data import load_samples
from edgec.frontends import file_input_specs
from edgec.backends.onnxruntime.runtime import OrtRuntime

#: Float rounding between torch and ONNX Runtime stays far below this; a wrong mask or pooling does not.
MIN_COSINE = 0.9999


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_export_matches_sentence_transformers(minilm) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import minilm as bench_minilm  # on sys.path through the fixture

    reference = sentence_transformers.SentenceTransformer(str(bench_minilm.model_dir()), device="cpu")
    runtime = OrtRuntime(minilm.model, threads=1)
    texts = bench_minilm.sentences("eval")
    feeds = load_samples(minilm.eval, runtime.inputs)
    assert len(feeds) == len(texts)
    # one padded batch: sentence-transformers' pooling honours its mask, and one call per sentence is 40x slower
    expected = reference.encode(texts, normalize_embeddings=False, convert_to_numpy=True)
    # sentence-transformers normalizes inside the model, the export does not: compare directions
    cosines = {
        text: _cosine(runtime.infer(feed)["sentence_embedding"][0], embedding)
        for text, feed, embedding in zip(texts, feeds, expected, strict=True)
    }
    worst = min(cosines, key=cosines.__getitem__)
    assert cosines[worst] >= MIN_COSINE, (worst, cosines[worst])


def test_export_has_dynamic_batch_and_sequence(minilm) -> None:
    model = onnx.load(str(minilm.model), load_external_data=False)
    assert [(op.domain, op.version) for op in model.opset_import] == [("", 17)]
    specs = file_input_specs(minilm.model)
    assert [(spec.name, spec.dtype, len(spec.shape)) for spec in specs] == [
        ("input_ids", np.dtype(np.int64), 2), ("attention_mask", np.dtype(np.int64), 2)]
    assert not any(isinstance(dim, int) for spec in specs for dim in spec.shape)
    (output,) = model.graph.output
    assert output.name == "sentence_embedding"
    assert [dim.dim_value for dim in output.type.tensor_type.shape.dim][1:] == [384]


def test_ragged_eval_data_loads_against_the_model_inputs(minilm) -> None:
    import minilm as bench_minilm

    texts = bench_minilm.sentences("eval")
    samples = load_samples(minilm.eval, file_input_specs(minilm.model), what="eval data")
    assert len(samples) == len(texts)
    for sample, expected in zip(samples, bench_minilm.tokenize(texts), strict=True):
        assert list(sample) == ["input_ids", "attention_mask"]
        for name, array in expected.items():
            np.testing.assert_array_equal(sample[name], array)
    lengths = {sample["input_ids"].shape[1] for sample in samples}
    assert len(lengths) > 10  # unpadded: the sentences keep their own lengths
    assert all(sample["attention_mask"].all() for sample in samples)
