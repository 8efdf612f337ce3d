"""The registry of target families: one folder per runtime family, looked up by the descriptor's `runtime`.

Each family package (`edgec/backends/<family>/__init__.py`) defines `BACKEND`, a `Backend` whose
declarations are cheap to import; runtime libraries load only when a model is built or run. The
compiler, the benchmark, the harness and the target loader ask this registry and never name a runtime.

Runtimes that descriptors may name but that have no backend folder yet (TensorRT) are listed in
`PLANNED` with the package they will need, so such targets load, show in `edgec targets`, and say
clearly why they cannot be built.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

from edgec.backends.base import Backend, Runtime
from edgec.errors import BadInputError, RuntimeUnavailableError

__all__ = ["Backend", "Runtime", "FAMILIES", "PLANNED", "get", "find", "all_backends", "runtime_names",
           "for_file", "runtime_class"]

#: Descriptor `runtime` value -> the package defining its `BACKEND`.
FAMILIES: dict[str, str] = {
    "onnxruntime": "edgec.backends.onnxruntime",
    "tflite": "edgec.backends.tflite",
}
#: Runtimes descriptors may name before their backend exists -> the Python package they will need.
PLANNED: dict[str, str] = {"tensorrt": "tensorrt"}


@functools.cache
def _load(runtime: str) -> Backend:
    return importlib.import_module(FAMILIES[runtime]).BACKEND


def find(runtime: str) -> Backend | None:
    """The backend serving a descriptor's `runtime`, or None for a planned or unknown runtime."""
    return _load(runtime) if runtime in FAMILIES else None


def get(runtime: str) -> Backend:
    """The backend serving `runtime`; a planned or unknown runtime is an error that says which exist."""
    backend = find(runtime)
    if backend is None:
        raise RuntimeUnavailableError(f"edgec has no {runtime} backend yet (backends: {', '.join(FAMILIES)})")
    return backend


def all_backends() -> list[Backend]:
    return [_load(runtime) for runtime in FAMILIES]


def runtime_names() -> tuple[str, ...]:
    """Every `runtime` a descriptor may name: the built families and the planned ones."""
    return (*FAMILIES, *PLANNED)


def for_file(path: Path) -> Backend | None:
    """The backend whose runtime loads a plain model file with this suffix, else None."""
    suffix = path.suffix.lower()
    return next((backend for backend in all_backends() if suffix in backend.suffixes), None)


def file_suffixes() -> list[str]:
    return [suffix for backend in all_backends() for suffix in backend.suffixes]


def runtime_class(name: str) -> type[Runtime]:
    """The `Runtime` for a backend's runtime name or a source framework (torch, tensorflow).

    A source model runs in its own framework for import verification and as a bench comparison;
    those runners live with their frontends.
    """
    if name in FAMILIES:
        return _load(name).runtime()
    from edgec.frontends import SOURCE_RUNNERS

    module = SOURCE_RUNNERS.get(name)
    if module is None:
        known = ", ".join([*FAMILIES, *SOURCE_RUNNERS])
        raise BadInputError(f"unknown runtime '{name}'; known: {known}")
    return importlib.import_module(module).RUNTIME
