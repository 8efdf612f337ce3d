"""ONNX Runtime: runs `.onnx` artifacts (fp32, fp16 or Q/DQ int8) on an execution provider."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from edgec.errors import BadInputError, RuntimeUnavailableError, first_line
from edgec.backends.base import Runtime
from edgec.backends.onnxruntime.session import session_options
from edgec.tensors import Feeds, Outputs, TensorSpec

__all__ = ["OrtRuntime", "RUNTIME"]


def _ort_dtype(type_str: str) -> np.dtype:
    """Map ORT's 'tensor(float)' notation to a NumPy dtype."""
    elem = type_str.removeprefix("tensor(").removesuffix(")")
    onnx_type = {"float": onnx.TensorProto.FLOAT, "double": onnx.TensorProto.DOUBLE}.get(elem)
    if onnx_type is None:
        onnx_type = onnx.TensorProto.DataType.Value(elem.upper())
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type))


class OrtRuntime(Runtime):
    """Options: `provider` (default CPUExecutionProvider), `graph_optimization` (disable|basic|extended|all)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, *, threads: int = 0, options: Mapping[str, Any] | None = None):
        super().__init__(path, threads=threads, options=options)
        provider = self.options.get("provider", "CPUExecutionProvider")
        if provider not in ort.get_available_providers():
            raise RuntimeUnavailableError(
                f"ONNX Runtime here has no {provider} (available: {', '.join(ort.get_available_providers())})"
            )
        so = session_options(threads, self.options.get("graph_optimization", "all"))
        try:
            self._session = ort.InferenceSession(str(self.path), so, providers=[provider])
        except Exception as exc:  # ORT raises its own opaque types for unreadable models
            raise BadInputError(f"ONNX Runtime cannot load {self.path}: {first_line(exc)}") from exc
        self.inputs = [self._spec(arg) for arg in self._session.get_inputs()]
        self.outputs = [self._spec(arg) for arg in self._session.get_outputs()]
        self._output_names = [spec.name for spec in self.outputs]

    @staticmethod
    def _spec(arg: Any) -> TensorSpec:
        shape = tuple(dim if isinstance(dim, int) else (dim or None) for dim in arg.shape)
        return TensorSpec(arg.name, shape, _ort_dtype(arg.type))

    def _infer(self, feeds: Feeds) -> Outputs:
        values = self._session.run(self._output_names, dict(feeds))
        return dict(zip(self._output_names, values))

    @classmethod
    def is_available(cls) -> bool:
        return True


RUNTIME = OrtRuntime
