"""Import verification: the converted ONNX must compute what the source model computes in its framework.

The source runs through its format's `Runtime` (PyTorch, TensorFlow, LiteRT) and the ONNX through ONNX
Runtime, on the same feeds; the frontends give the ONNX the source runtime's output names and order,
so outputs are compared position by position within the target's `[verify]` tolerance, and the worst absolute error and per-sample cosine are recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx_ir as ir

from edgec.errors import VerificationError
from edgec.frontends import Format
from edgec.harness.accuracy import output_drift
from edgec.passes.verify import compare_outputs, run_model
from edgec.backends import runtime_class
from edgec.tensors import Feeds

__all__ = ["verify_import"]


def verify_import(path: Path, fmt: Format, model: ir.Model, samples: Sequence[Feeds], *, rtol: float, atol: float,
                  threads: int = 1, trust_source: bool = False) -> dict[str, Any]:
    """Compare source-framework and ONNX outputs; raise `VerificationError` beyond tolerance."""
    assert fmt.runtime is not None, "ONNX sources need no import verification"
    source = runtime_class(fmt.runtime)(path, threads=threads, options={"trust_source": trust_source})
    expected = [list(source.infer(feeds).values()) for feeds in samples]
    actual = run_model(model, samples, threads)
    names = [value.name for value in model.graph.outputs]
    if len(expected[0]) != len(names):
        raise VerificationError(f"import: the source model has {len(expected[0])} outputs, the ONNX model {len(names)}")
    worst, problem = compare_outputs(expected, actual, names, rtol, atol)
    cosines = [output_drift([a[i] for a in actual], [e[i] for e in expected])["cosine_min"] for i in range(len(names))]
    record = {"samples": len(samples), "max_abs": worst, "cosine_min": float(min(cosines)), "rtol": rtol, "atol": atol}
    if problem:
        raise VerificationError(f"import changed the model's outputs ({fmt.description} vs ONNX): {problem};"
                                " pass --no-verify-import to compile anyway")
    return record
