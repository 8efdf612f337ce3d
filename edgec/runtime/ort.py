"""ONNX Runtime backend: runs `.onnx` artifacts (fp32, fp16 or Q/DQ int8) on an execution provider."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from edgec.errors import BadInputError, RuntimeUnavailableError, first_line
from edgec.runtime.base import Feeds, Outputs, Runtime, TensorSpec

__all__ = ["OrtRuntime", "RUNTIME", "session_options", "cpu_session"]

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def _ort_dtype(type_str: str) -> np.dtype:
    """Map ORT's 'tensor(float)' notation to a NumPy dtype."""
    elem = type_str.removeprefix("tensor(").removesuffix(")")
    onnx_type = {"float": onnx.TensorProto.FLOAT, "double": onnx.TensorProto.DOUBLE}.get(elem)
    if onnx_type is None:
        onnx_type = onnx.TensorProto.DataType.Value(elem.upper())
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type))


def session_options(threads: int, optimization: str = "all") -> ort.SessionOptions:
    """Session options used for every ORT model edgec runs: sequential, `threads` intra-op threads.

    `threads=0` lets ONNX Runtime pick (one per physical core).
    """
    if optimization not in _OPT_LEVELS:
        raise BadInputError(f"unknown graph optimization level '{optimization}'; use one of {sorted(_OPT_LEVELS)}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = _OPT_LEVELS[optimization]
    so.log_severity_level = 3
    return so


def cpu_session(model: onnx.ModelProto, threads: int, optimization: str = "all") -> ort.InferenceSession:
    """A CPU session over an in-memory model (calibration, verification), with edgec's session options."""
    return ort.InferenceSession(model.SerializeToString(), session_options(threads, optimization),
                                providers=["CPUExecutionProvider"])


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
