"""Calibration: run the float model on sample feeds and observe the tensors that will be quantized.

The tensors are exposed as extra graph outputs of a copy of the model and run with ONNX Runtime one
sample at a time, so memory is bounded by the observers and a single sample's activations, and
variable-length samples need no padding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from edgec.quant.observers import Observer, make_observer
from edgec.quant.table import CalibrationTable
from edgec.tensors import Feeds
from edgec.backends.onnxruntime.session import ir_session

__all__ = ["calibrate", "observe", "observing_session", "run_exposing", "Progress"]

#: Called with (samples done, samples total) after each sample.
Progress = Callable[[int, int], None]


def observing_session(model: ir.Model, tensors: Sequence[str], threads: int) -> ort.InferenceSession:
    """An ORT session over `model` (not changed) whose outputs also include every tensor in `tensors`."""
    values = {v.name: v for node in model.graph for v in node.outputs}
    values.update({v.name: v for v in model.graph.inputs})
    existing = {out.name for out in model.graph.outputs}
    outputs = []
    for name in dict.fromkeys(tensors):
        if name in existing:
            continue
        dtype = values[name].dtype
        elem_type = dtype.value if dtype is not None else onnx.TensorProto.FLOAT
        outputs.append(onnx.helper.make_tensor_value_info(name, elem_type, None))
    return ir_session(model, threads, outputs=outputs)


def run_exposing(model: ir.Model, tensors: Sequence[str], samples: Sequence[Feeds], threads: int
                 ) -> list[dict[str, np.ndarray]]:
    """Every graph output plus `tensors`, by name, for every sample (for comparing models tensor by tensor)."""
    session = observing_session(model, tensors, threads)
    names = [output.name for output in session.get_outputs()]
    return [dict(zip(names, session.run(names, dict(feeds)))) for feeds in samples]


def observe(
    model: ir.Model,
    observers: Mapping[str, Observer],
    samples: Sequence[Feeds],
    *,
    threads: int = 0,
    progress: Progress | None = None,
) -> None:
    """Run `model` on every sample, one at a time, feeding each observed tensor to its observer."""
    if not observers:
        return
    session = observing_session(model, list(observers), threads)
    names = list(observers)
    for index, feeds in enumerate(samples):
        for name, value in zip(names, session.run(names, dict(feeds))):
            observers[name].update(value)
        if progress:
            progress(index + 1, len(samples))


def calibrate(
    model: ir.Model,
    tensors: Sequence[str],
    samples: Sequence[Feeds],
    *,
    calibrator: str,
    percentile: float = 99.99,
    levels: int = 256,
    symmetric: bool = False,
    source: str = "data",
    threads: int = 0,
    progress: Progress | None = None,
    also: Mapping[str, Observer] | None = None,
) -> CalibrationTable:
    """Observe `tensors` over `samples` and return their calibrated ranges.

    `levels` and `symmetric` describe the integer grid the ranges will be quantized to; the
    entropy and MSE calibrators search the range that loses least on that grid. `also` maps more
    tensors to observers fed in the same pass (channel statistics), so the model runs once.
    """
    ranges = {name: make_observer(calibrator, percentile, levels=levels, symmetric=symmetric) for name in tensors}
    extra = dict(also or {})
    observers = {name: _Fanout([o for o in (ranges.get(name), extra.get(name)) if o is not None])
                 for name in dict.fromkeys([*ranges, *extra])}
    observe(model, observers, samples, threads=threads, progress=progress)
    table = CalibrationTable(calibrator, len(samples), source)
    table.ranges = {name: observer.range() for name, observer in ranges.items()}
    return table


class _Fanout:
    """Feeds one observed tensor to several observers (a range and a channel mean, say)."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = observers

    def update(self, x: object) -> None:
        for observer in self.observers:
            observer.update(x)
