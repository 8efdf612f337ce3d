"""ONNX Runtime sessions over in-memory models: edgec's evaluator of ONNX graphs.

Calibration, pass verification and per-node cost profiling run the IR as ONNX on the CPU, whatever
the target; they share these settings so every such run is sequential with the same thread count.
"""

from __future__ import annotations

import onnx
import onnxruntime as ort

from edgec.errors import BadInputError

__all__ = ["OPTIMIZATION_LEVELS", "session_options", "cpu_session"]

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session_options(threads: int, optimization: str = "all") -> ort.SessionOptions:
    """Session options used for every ORT model edgec runs: sequential, `threads` intra-op threads.

    `threads=0` lets ONNX Runtime pick (one per physical core).
    """
    if optimization not in OPTIMIZATION_LEVELS:
        raise BadInputError(f"unknown graph optimization level '{optimization}'; use one of {sorted(OPTIMIZATION_LEVELS)}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
    so.log_severity_level = 3
    return so


def cpu_session(model: onnx.ModelProto, threads: int, optimization: str = "all") -> ort.InferenceSession:
    """A CPU session over an in-memory model (calibration, verification), with edgec's session options."""
    return ort.InferenceSession(model.SerializeToString(), session_options(threads, optimization),
                                providers=["CPUExecutionProvider"])
