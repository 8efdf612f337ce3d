"""Benchmark harness: latency, memory, size and output drift of models measured side by side.

It knows only the `edgec.backends.base.Runtime` contract, so every runtime is measured by the same
code and the numbers are comparable across targets.
"""

from __future__ import annotations

from edgec.harness.accuracy import drift, looks_like_class_scores, output_drift
from edgec.harness.latency import summarize
from edgec.harness.memory import current_rss_mb, peak_rss_mb
from edgec.harness.run import ModelRef, benchmark, measure, model_size_bytes

__all__ = [
    "ModelRef",
    "benchmark",
    "current_rss_mb",
    "drift",
    "looks_like_class_scores",
    "measure",
    "model_size_bytes",
    "output_drift",
    "peak_rss_mb",
    "summarize",
]
