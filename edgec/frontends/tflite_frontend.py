"""TFLite frontend: `.tflite` flatbuffers to ONNX, through `tf2onnx.convert.from_tflite`.

The file is first opened with `edgec.backends.tflite.runtime.TfliteRuntime`, which is what runs the source for
import verification: LiteRT verifies the flatbuffer (tf2onnx parses it unchecked, so a corrupt file
would fail deep inside it), and the runtime's clean tensor names (signature keys) are then given to the
ONNX inputs and outputs, in the runtime's order.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from edgec.native_logs import quiet_native_logs

with quiet_native_logs():
    import tf2onnx  # at import time, so a missing extra is reported by the dispatcher with its pip command

from edgec.errors import BadInputError
from edgec.frontends import FORMATS, ImportOptions
from edgec.frontends.tensorflow_frontend import adopt_io, check_converted
from edgec.backends.tflite.runtime import TfliteRuntime

__all__ = ["convert"]


def convert(path: Path, fmt: str, options: ImportOptions) -> onnx.ModelProto:
    """Convert a `.tflite` file to ONNX at `options.opset`; its I/O shapes are the flatbuffer's."""
    if options.inputs:
        raise BadInputError("--input: a .tflite model's input shapes are fixed by the file; pin dynamic dims with"
                            " --fix-shape NAME:SHAPE instead")
    source = TfliteRuntime(path)
    with quiet_native_logs():  # also tf.lite.Interpreter's warning about its own deprecation
        proto, _ = tf2onnx.convert.from_tflite(str(path), opset=options.opset)
    names = source.tensor_names
    adopt_io(proto, [(names[spec.name], spec) for spec in source.inputs],
             [(names[spec.name], spec.name) for spec in source.outputs])
    check_converted(proto, FORMATS[fmt].description)
    return proto
