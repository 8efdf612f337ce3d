"""ONNX Runtime sessions over in-memory models: edgec's evaluator of ONNX graphs.

Calibration, pass verification and per-node cost profiling run the IR as ONNX on the CPU, whatever
the target; they share these settings so every such run is sequential with the same thread count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from edgec.errors import BadInputError

__all__ = ["OPTIMIZATION_LEVELS", "session_options", "cpu_session", "ir_session", "lean_proto",
           "SHARED_MIN_BYTES"]

#: Initializers at least this large reach ONNX Runtime as OrtValues over the IR's own memory instead of
#: serialized bytes: a search builds a session per candidate, and copying MiniLM's 90 MB of weights
#: into a proto, a string and ORT's parser each time cost more than running it.
SHARED_MIN_BYTES = 16 * 1024
#: Tensor types an OrtValue can wrap from numpy without conversion.
_SHAREABLE = frozenset({ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.INT8,
                        ir.DataType.UINT8, ir.DataType.INT16, ir.DataType.UINT16, ir.DataType.INT32,
                        ir.DataType.UINT32, ir.DataType.INT64, ir.DataType.UINT64, ir.DataType.BOOL})
_IN_MEMORY = "edgec-in-memory"  # the external-data location named in the proto; ORT never opens it

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


def cpu_session(model: onnx.ModelProto, threads: int, optimization: str = "all",
                initializers: Mapping[str, ort.OrtValue] | None = None) -> ort.InferenceSession:
    """A CPU session over an in-memory model (calibration, verification, search), with edgec's session options.

    `initializers` supply the data of `model`'s external-data initializers by name (see `lean_proto`);
    the session keeps them alive, as ONNX Runtime reads their memory in place.
    """
    options = session_options(threads, optimization)
    # These sessions compute, they are not timed: idle intra-op threads sleep instead of spinning, which
    # on a shared machine halves the CPU a run takes (MiniLM, 2 threads) and leaves the results unchanged.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if initializers:
        options.add_external_initializers(list(initializers), list(initializers.values()))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.edgec_initializers = initializers  # type: ignore[attr-defined]  # their memory must outlive the session
    return session


def lean_proto(model: ir.Model) -> tuple[onnx.ModelProto, dict[str, ort.OrtValue]]:
    """`model` as a proto whose large initializers are external data, and those initializers as OrtValues.

    The OrtValues wrap the IR tensors' arrays without a copy, so candidates built from one model
    (`Model.clone()` shares unchanged tensors) hand ONNX Runtime the same float weights each time
    instead of serializing them again. `model` is left as it was: its large tensors stand aside
    only while the rest is serialized (cheaper than cloning the graph for it).
    """
    shared: dict[str, ort.OrtValue] = {}
    aside: dict[ir.Value, ir.TensorProtocol] = {}
    try:
        for value in model.graph.initializers.values():
            tensor = value.const_value
            if (tensor is None or tensor.dtype not in _SHAREABLE or tensor.nbytes < SHARED_MIN_BYTES
                    or value.is_graph_input()):
                continue
            shared[value.name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(tensor.numpy()))
            aside[value] = tensor
            value.const_value = ir.ExternalTensor(_IN_MEMORY, 0, tensor.nbytes, tensor.dtype, shape=tensor.shape,
                                                  name=value.name)
        return ir.serde.serialize_model(model), shared
    finally:
        for value, tensor in aside.items():
            value.const_value = tensor


def ir_session(model: ir.Model, threads: int, optimization: str = "all",
               outputs: Sequence[onnx.ValueInfoProto] = ()) -> ort.InferenceSession:
    """A CPU session over an IR model, its large initializers shared rather than copied (`lean_proto`).

    `outputs` are appended to the graph's outputs (tensors to expose for comparison).
    """
    proto, shared = lean_proto(model)
    proto.graph.output.extend(outputs)
    return cpu_session(proto, threads, optimization, shared)
