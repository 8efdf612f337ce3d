"""Keras models for the TFLite suite: MobileNetV2 with sane random weights and a Keras twin of the digits CNN.

Why Keras: the TFLite suite compares edgec's own `.tflite` lowering with TensorFlow's converter, and
the converter starts from a TensorFlow model. Each model exists once, as a `.keras` file: the
converter converts it, and edgec compiles the ONNX that its TensorFlow frontend (tf2onnx) makes of
that same file, so both toolchains see the very same weights.

Both are cached under `<cache dir>/bench/` with their ONNX export; bump a version constant when a
model's architecture, init, training or export changes. Imported as a sibling (`import keras_models`);
TensorFlow and Keras are imported inside the functions, as in `benchlib`, because harness workers
re-import the suite.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DIGITS_KERAS_VERSION",
    "MOBILENET_KERAS_VERSION",
    "digits_keras",
    "keras_cached",
    "load_keras",
    "mobilenetv2_keras",
    "nhwc",
    "onnx_export_cached",
]

SEED = 0
#: Bump when the Keras MobileNetV2's init or input changes.
MOBILENET_KERAS_VERSION = "keras-mobilenetv2-he-v1"
#: Bump when the digits twin's architecture or training changes.
DIGITS_KERAS_VERSION = "keras-digits-cnn-v1"
#: The demo CNN's training recipe (edgec/demo.py `_train`): epochs, batch size, Adam learning rate, weight decay.
DIGITS_EPOCHS, DIGITS_BATCH, DIGITS_LR, DIGITS_WEIGHT_DECAY = 40, 64, 3e-3, 1e-4


def _staged_save(cached: Path, write: Callable[[Path], None]) -> Path:
    """Write `cached` through a temp sibling and a rename, so an interrupted run never leaves a truncated file."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent) as staging:
        staged = Path(staging) / cached.name
        write(staged)
        os.replace(staged, cached)
    return cached


def keras_cached(cached: Path, build: Callable[[], Any]) -> Path:
    """Return `cached`, first saving `build()` (a Keras model) there if missing."""
    if cached.is_file():
        return cached
    model = build()
    return _staged_save(cached, lambda staged: model.save(staged))


def load_keras(path: Path) -> Any:
    """A `.keras` file this suite wrote (no custom objects, no Lambda layers), loaded for inference."""
    import keras

    return keras.models.load_model(path, compile=False)


def onnx_export_cached(keras_path: Path) -> tuple[Path, float | None]:
    """The ONNX that edgec's TensorFlow frontend (tf2onnx) makes of `keras_path`, cached beside it.

    Returns the path and the export's seconds (None when it came from the cache). The export is what
    `edgec compile model.keras` runs first; doing it once here lets the table time edgec's compile from
    ONNX and show the tf2onnx step on its own.
    """
    cached = keras_path.with_suffix(".onnx")
    if cached.is_file():
        return cached, None
    import time

    import onnx
    import onnx_ir as ir

    from edgec.frontends import ImportOptions, import_model

    started = time.perf_counter()
    imported = import_model(keras_path, options=ImportOptions(trust_source=True))
    seconds = time.perf_counter() - started
    _staged_save(cached, lambda staged: onnx.save_model(ir.serde.serialize_model(imported.model), staged))
    return cached, seconds


# --------------------------------------------------------------------------------------------
# MobileNetV2
# --------------------------------------------------------------------------------------------


def _he_init(model: Any, seed: int) -> None:
    """He fan-in normal weights for every conv and dense kernel, zero biases, identity BatchNorm.

    Why: Keras' default Glorot init shrinks a random 53-layer network's logits to ~1e-9, so int8 drift
    against them would be noise over noise; `std = sqrt(2 / fan_in)` keeps activations ~1 through
    every ReLU6. A depthwise kernel's fan-in is its window (one input channel per output).
    """
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel.shape[:2]
            fan_in = kh * kw
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            fan_in = int(np.prod(layer.kernel.shape[:-1]))
        else:
            continue
        layer.kernel.assign(rng.normal(0.0, np.sqrt(2.0 / fan_in), layer.kernel.shape).astype(np.float32))
        if layer.bias is not None:
            layer.bias.assign(np.zeros(layer.bias.shape, np.float32))


def mobilenetv2_keras(cache_dir: Path) -> Path:
    """`keras.applications.MobileNetV2(weights=None)`, input `image` [1, 224, 224, 3], logits out, He init."""

    def build() -> Any:
        import keras

        keras.utils.set_random_seed(SEED)
        model = keras.applications.MobileNetV2(weights=None, classifier_activation=None,
                                               input_tensor=keras.Input((224, 224, 3), batch_size=1, name="image"))
        _he_init(model, SEED)
        return model

    return keras_cached(cache_dir / f"{MOBILENET_KERAS_VERSION}.keras", build)


# --------------------------------------------------------------------------------------------
# Digits CNN
# --------------------------------------------------------------------------------------------


def _digits_cnn(batch_size: int | None) -> Any:
    """The demo CNN's architecture in Keras (NHWC): 3x(conv3x3 no-bias, BN, ReLU) with a 2x2 max pool after
    the second, global average pool, dense 10 (logits)."""
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 1), batch_size=batch_size, name="pixels")
    x = inputs
    for index, channels in enumerate((16, 32, 64)):
        if index == 2:
            x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10, name="logits")(x), name="digits_cnn")


def nhwc(images: np.ndarray) -> np.ndarray:
    """edgec.demo's (N, 1, 8, 8) digits as the Keras twin's (N, 8, 8, 1)."""
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))


def digits_keras(cache_dir: Path, data: Any) -> Path:
    """The digits twin trained with the demo's recipe on `data.train` (an `edgec.demo.DigitsData`), batch 1 input."""

    def build() -> Any:
        import keras

        keras.utils.set_random_seed(SEED)
        trainer = _digits_cnn(None)
        steps = DIGITS_EPOCHS * int(np.ceil(len(data.train[0]) / DIGITS_BATCH))
        schedule = keras.optimizers.schedules.CosineDecay(DIGITS_LR, steps)
        trainer.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=DIGITS_WEIGHT_DECAY),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        trainer.fit(nhwc(data.train[0]), data.train[1], batch_size=DIGITS_BATCH, epochs=DIGITS_EPOCHS, shuffle=True,
                    verbose=0)
        model = _digits_cnn(1)
        model.set_weights(trainer.get_weights())
        return model

    return keras_cached(cache_dir / f"{DIGITS_KERAS_VERSION}.keras", build)
