"""edgec: compile a trained model for an edge target, benchmark it, and gate its release.

    >>> import edgec
    >>> result = edgec.compile("model.onnx", "cpu-x86-int8", calib="calib.npz", output_dir="out")
    >>> report = edgec.bench("out", data="test.npz", labels="labels.npy")
    >>> bool(edgec.gate(report, max_accuracy_drop_pp=1.0))

Attributes are imported on first use so that `edgec --help` does not load ONNX Runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "compile": ("edgec.compiler", "compile"),
    "CompileResult": ("edgec.compiler", "CompileResult"),
    "bench": ("edgec.benchmark", "bench"),
    "gate": ("edgec.api", "gate"),
    "GateResult": ("edgec.gating", "GateResult"),
    "load_target": ("edgec.target", "load_target"),
    "list_targets": ("edgec.target", "list_targets"),
    "Target": ("edgec.target", "Target"),
    "EdgecError": ("edgec.errors", "EdgecError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgec' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value
