"""LiteRT (TFLite) runtime: runs `.tflite` flatbuffers with `ai_edge_litert`'s interpreter.

It runs `.tflite` sources (import verification, the default bench baseline) and is the runtime the
`tflite-*` targets name.

Names: when the model has exactly one signature covering its main graph's inputs and outputs (what
`TFLiteConverter` writes), tensors take the signature's keys (`pixels`, `output_0`) in the signature's
order; otherwise they take the flatbuffer's tensor names with TensorFlow's `:0` suffix dropped, in the
graph's order. The TFLite frontend renames the converted ONNX after `tensor_names`, so both agree.

Tensors are fed and returned as stored: a fully-int8 model takes and gives int8 tensors (with
scale/zero point in the flatbuffer), no dequantization happens here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import BadInputError, RuntimeUnavailableError, first_line
from edgec.native_logs import quiet_native_logs
from edgec.backends.base import Runtime
from edgec.tensors import Feeds, Outputs, TensorSpec

__all__ = ["TfliteRuntime", "RUNTIME"]


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ModuleNotFoundError as exc:
        raise RuntimeUnavailableError(f"running .tflite models needs {exc.name}: pip install 'edgec[tflite]'") from exc
    return Interpreter


def _spec(name: str, detail: Mapping[str, Any]) -> TensorSpec:
    """A TensorSpec from an interpreter tensor detail; `shape_signature` marks dynamic dims with -1."""
    shape = detail.get("shape_signature", detail["shape"])
    return TensorSpec(name, tuple(int(dim) if dim >= 0 else None for dim in shape), np.dtype(detail["dtype"]))


class TfliteRuntime(Runtime):
    """Options: `delegate` ("xnnpack", LiteRT's default CPU delegate, or "none": the builtin kernels
    alone). `threads > 0` sets the interpreter's thread count; 0 keeps LiteRT's default."""

    name = "tflite"

    def __init__(self, path: str | Path, *, threads: int = 0, options: Mapping[str, Any] | None = None):
        super().__init__(path, threads=threads, options=options)
        interpreter_class = _interpreter_class()
        if not self.path.is_file():
            raise BadInputError(f"model: no such .tflite file {self.path}")
        try:
            with quiet_native_logs():
                self._interpreter = interpreter_class(model_path=str(self.path),
                                                      num_threads=threads if threads > 0 else None,
                                                      experimental_op_resolver_type=self._op_resolver())
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BadInputError(
                f"model: {self.path} is not a valid TFLite model ({first_line(exc)});"
                " re-export it with tf.lite.TFLiteConverter"
            ) from exc
        input_details = self._interpreter.get_input_details()
        output_details = self._interpreter.get_output_details()
        keys = self._signature_keys({d["index"] for d in input_details}, {d["index"] for d in output_details})
        if keys is None:
            inputs = [(d["name"].removesuffix(":0"), d) for d in input_details]
            outputs = [(d["name"].removesuffix(":0"), d) for d in output_details]
        else:
            by_index = {d["index"]: d for d in (*input_details, *output_details)}
            inputs = [(key, by_index[index]) for key, index in keys[0].items()]
            outputs = [(key, by_index[index]) for key, index in keys[1].items()]
        self.inputs = [_spec(name, detail) for name, detail in inputs]
        self.outputs = [_spec(name, detail) for name, detail in outputs]
        self._input_index = {name: detail["index"] for name, detail in inputs}
        self._output_index = {name: detail["index"] for name, detail in outputs}
        self._input_shape = {name: tuple(detail["shape"]) for name, detail in inputs}
        #: Clean name -> the flatbuffer's tensor name (what converters such as tf2onnx call the tensor).
        self.tensor_names = {name: detail["name"] for name, detail in (*inputs, *outputs)}

    def _op_resolver(self) -> Any:
        from ai_edge_litert.interpreter import OpResolverType

        delegate = self.options.get("delegate", "xnnpack")
        if delegate not in ("xnnpack", "none"):
            raise BadInputError(f"tflite option delegate: '{delegate}' is not one of xnnpack, none")
        return OpResolverType.AUTO if delegate == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES

    def _signature_keys(self, inputs: set[int], outputs: set[int]) -> tuple[dict[str, int], dict[str, int]] | None:
        """The only signature's {key: tensor index} for inputs and outputs, or None when signatures
        cannot name the main graph's tensors (none, several, or one over other tensors)."""
        signatures = self._interpreter.get_signature_list()
        if len(signatures) != 1:
            return None
        runner = self._interpreter.get_signature_runner(next(iter(signatures)))
        keys = ({key: d["index"] for key, d in runner.get_input_details().items()},
                {key: d["index"] for key, d in runner.get_output_details().items()})
        return keys if (set(keys[0].values()), set(keys[1].values())) == (inputs, outputs) else None

    def _infer(self, feeds: Feeds) -> Outputs:
        """Resize inputs whose shape changed (e.g. another batch size) before setting them: LiteRT
        allocates tensors for one shape at a time."""
        interpreter = self._interpreter
        resized = False
        for name, index in self._input_index.items():
            shape = tuple(np.shape(feeds[name]))
            if shape != self._input_shape[name]:
                interpreter.resize_tensor_input(index, shape)
                self._input_shape[name] = shape
                resized = True
        if resized:
            interpreter.allocate_tensors()
        for name, index in self._input_index.items():
            interpreter.set_tensor(index, np.ascontiguousarray(feeds[name]))
        interpreter.invoke()
        return {name: interpreter.get_tensor(index) for name, index in self._output_index.items()}

    @classmethod
    def is_available(cls) -> bool:
        return importlib.util.find_spec("ai_edge_litert") is not None


RUNTIME = TfliteRuntime
