"""The TFLite family: `.tflite` flatbuffers for LiteRT on phones and boards, built on any host.

edgec lowers its own IR to the flatbuffer with LiteRT's generated schema (`edgec.backends.tflite.lower`):
no TensorFlow at compile time, and int8 scales come from the same calibration table an ONNX Runtime
artifact of the model gets. Cross-compiling is the point: building needs the schema and `flatbuffers`,
running needs LiteRT's interpreter.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from edgec.backends.base import Backend, OptionField
from edgec.tensors import TensorSpec

if TYPE_CHECKING:
    import onnx_ir as ir

    from edgec.quant.fallback import Runner
    from edgec.quant.table import CalibrationTable
    from edgec.target import Target

__all__ = ["BACKEND", "TfliteBackend"]


class TfliteBackend(Backend):
    name = "tflite"
    title = "LiteRT (TFLite)"
    precisions: ClassVar[frozenset[str]] = frozenset({"fp32", "fp16", "int8", "auto"})
    artifact_file = "model.tflite"
    suffixes = (".tflite",)
    run_packages = ("ai_edge_litert",)
    build_packages = ("ai_edge_litert", "flatbuffers")
    distributions = ("ai-edge-litert", "flatbuffers")
    extra = "tflite"
    options: ClassVar[dict[str, OptionField]] = {
        "delegate": ("one of xnnpack, none", lambda v: v in ("xnnpack", "none")),
        "integer_io": ("true or false (int8 graph inputs and outputs instead of float)", lambda v: isinstance(v, bool)),
    }
    runtime_options = ("delegate",)
    dynamic_int8 = True
    runtime_module = "edgec.backends.tflite.runtime"

    def default_passes(self, precision: str) -> tuple[str, ...]:
        """The generic clean-ups, then channels-last: TFLite's convolution and pooling kernels are NHWC."""
        from edgec.target import DEFAULT_PASSES

        *passes, last = DEFAULT_PASSES
        return (*passes, "convert_to_nhwc", last)

    def export(self, model: ir.Model, *, table: CalibrationTable | None, precision: str, staging: Path,
               target: Target) -> list[Path]:
        from edgec.backends.tflite.lower import lower

        flatbuffer = lower(model, table=table, precision=precision,
                           integer_io=bool(target.options.get("integer_io", False)))
        path = staging / self.artifact_file
        path.write_bytes(flatbuffer)
        return [path]

    def accuracy_runner(self, target: Target, table: CalibrationTable, threads: int) -> Runner | None:
        """Candidates lowered to `.tflite` and run in LiteRT (XNNPACK, the target's threads and delegate):
        LiteRT's int8 kernels round and saturate differently from ONNX Runtime's Q/DQ arithmetic."""
        if self.run_missing(target) is not None:
            return None
        from edgec.backends.tflite.judge import litert_runner

        options = {key: target.options[key] for key in self.runtime_options if key in target.options}
        return litert_runner(table, threads, options)

    def file_input_specs(self, path: Path) -> list[TensorSpec]:
        return self.runtime()(path).inputs


BACKEND = TfliteBackend()
