"""The `Runtime` contract every backend implements, so the harness can measure any of them alike.

The public `infer` validates feeds against the model's declared inputs and then calls `_infer`
(template method): backends never repeat the checks, and the harness never knows which backend
it is timing.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgec.errors import BadInputError, RuntimeUnavailableError

__all__ = ["Feeds", "Outputs", "TensorSpec", "Runtime", "runtime_class", "RUNTIME_MODULES"]

Feeds = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]

#: Runtime name -> module holding its `Runtime` subclass: the runtimes targets name (onnxruntime,
#: tensorrt, tflite) and the frameworks that run a non-ONNX source model (torch, tensorflow).
RUNTIME_MODULES: dict[str, str] = {
    "onnxruntime": "edgec.runtime.ort",
    "tensorrt": "edgec.runtime.tensorrt",
    "tflite": "edgec.runtime.tflite",
    "torch": "edgec.runtime.torch_source",
    "tensorflow": "edgec.runtime.tensorflow_source",
}


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: `shape` holds ints for fixed dims and str/None for dynamic ones."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype

    def accepts(self, array: np.ndarray) -> str | None:
        """Return why `array` cannot be fed as this tensor, or None when it can."""
        if array.dtype != self.dtype:
            return f"dtype {array.dtype} but the model expects {self.dtype}"
        if array.ndim != len(self.shape):
            return f"rank {array.ndim} (shape {list(array.shape)}) but the model expects rank {len(self.shape)}"
        for axis, (got, want) in enumerate(zip(array.shape, self.shape)):
            if isinstance(want, int) and want > 0 and got != want:
                return f"shape {list(array.shape)} but the model expects {list(self.shape)} (axis {axis})"
        return None


class Runtime(abc.ABC):
    """A loaded model that runs inferences; one instance per model file.

    Subclasses set `inputs` and `outputs` (declaration order) when they load the model.
    """

    name: ClassVar[str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def __init__(self, path: str | Path, *, threads: int = 0, options: Mapping[str, Any] | None = None):
        self.path = Path(path)
        self.threads = threads
        self.options = dict(options or {})

    def infer(self, feeds: Feeds) -> Outputs:
        """Run one inference after checking that `feeds` match the model's inputs."""
        expected = {spec.name: spec for spec in self.inputs}
        missing = sorted(set(expected) - set(feeds))
        extra = sorted(set(feeds) - set(expected))
        if missing or extra:
            raise BadInputError(f"feeds do not match the model's inputs: missing {missing}, unexpected {extra}")
        for name, spec in expected.items():
            problem = spec.accepts(np.asarray(feeds[name]))
            if problem:
                raise BadInputError(f"input '{name}': {problem}")
        return self._infer(feeds)

    @abc.abstractmethod
    def _infer(self, feeds: Feeds) -> Outputs:
        """Run one inference on validated feeds."""

    def synchronize(self) -> None:
        """Wait until queued work is done; GPU runtimes override this, CPU runtimes are synchronous."""

    @classmethod
    def is_available(cls) -> bool:
        """Whether this runtime's libraries are importable on this machine."""
        return True

    @classmethod
    def preload(cls) -> None:
        """Import the runtime's libraries, so that timing a model's load excludes them.

        Runtimes whose framework is imported lazily (TensorFlow, PyTorch) override this.
        """


def runtime_class(name: str) -> type[Runtime]:
    """Import and return the `Runtime` subclass for a runtime name, importing heavy libraries lazily."""
    module_name = RUNTIME_MODULES.get(name)
    if module_name is None:
        raise RuntimeUnavailableError(f"unknown runtime '{name}'; known: {', '.join(RUNTIME_MODULES)}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("edgec"):
            raise RuntimeUnavailableError(f"runtime '{name}' is not implemented in this edgec version") from exc
        raise
    return module.RUNTIME
