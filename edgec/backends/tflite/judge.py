"""Judge int8 candidates as they ship: lowered to `.tflite` and run in LiteRT.

The accuracy budget, the held-out check, the drift warning and `--precision auto` compare int8
candidates with the float model. For a TFLite target the candidate that matters is the flatbuffer:
LiteRT's integer kernels (fixed-point requantization, LOGISTIC/SOFTMAX lookup tables, hybrid
FULLY_CONNECTED) differ from ONNX Runtime running the same Q/DQ graph, so each candidate is lowered
and run here. Graph inputs and outputs are float (`integer_io` off): an integer-I/O artifact differs
only by the QUANTIZE/DEQUANTIZE at its edges, which the caller then does itself with the same parameters.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from edgec.backends.tflite.lower import lower
from edgec.backends.tflite.runtime import TfliteRuntime
from edgec.quant.fallback import Runner
from edgec.quant.quantizer import copy_model
from edgec.quant.table import CalibrationTable
from edgec.tensors import Feeds

__all__ = ["litert_runner"]


def litert_runner(table: CalibrationTable, threads: int, options: Mapping[str, Any]) -> Runner:
    """A `Runner` that lowers a Q/DQ model with `table` and runs it in LiteRT on every sample."""

    def run(model: ir.Model, samples: Sequence[Feeds]) -> list[dict[str, np.ndarray]]:
        # the lowering fuses GELUs in place; the candidate must stay the ONNX graph the quantizer built
        flatbuffer = lower(copy_model(model), table=table, precision="int8")
        with tempfile.TemporaryDirectory(prefix="edgec-judge-") as workdir:
            path = Path(workdir) / "model.tflite"
            path.write_bytes(flatbuffer)
            runtime = TfliteRuntime(path, threads=threads, options=options)
            return [dict(runtime.infer(feeds)) for feeds in samples]

    return run
