"""The two contracts a target family implements: a `Backend` that builds artifacts, a `Runtime` that runs them.

`Runtime.infer` validates feeds against the model's declared inputs and then calls `_infer`
(template method): runtimes never repeat the checks, and the harness never knows which runtime it
is timing. A `Backend` declares, in one place, everything the compiler, the benchmark and the
target loader need to know about its family; nothing outside `edgec/backends/` names a runtime.
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgec.errors import BadInputError
from edgec.tensors import Feeds, Outputs, TensorSpec

if TYPE_CHECKING:
    import onnx_ir as ir

    from edgec.quant.fallback import Runner
    from edgec.quant.table import CalibrationTable
    from edgec.target import Target

__all__ = ["Backend", "OptionField", "Runtime"]


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


#: A descriptor option a backend understands: (what a valid value is, the check).
OptionField = tuple[str, Callable[[Any], bool]]


class Backend(abc.ABC):
    """One target family: what it builds, whether it runs here, and how its artifacts are written and read.

    Class attributes are declarations (cheap to read: importing a backend package imports no runtime
    library); the methods import their libraries when called.
    """

    #: The descriptor's `runtime` value this backend serves.
    name: ClassVar[str]
    #: Human name of the runtime, for messages ("ONNX Runtime").
    title: ClassVar[str]
    #: Precisions it builds ("fp32", "fp16", "int8", "auto").
    precisions: ClassVar[frozenset[str]]
    #: File name of the model inside an artifact directory.
    artifact_file: ClassVar[str]
    #: Suffixes of plain model files this runtime loads (a bench artifact or baseline given as a file).
    suffixes: ClassVar[tuple[str, ...]]
    #: Import names the runtime needs on the host that runs artifacts.
    run_packages: ClassVar[tuple[str, ...]]
    #: Import names building needs (cross-compiling runs none of the runtime).
    build_packages: ClassVar[tuple[str, ...]] = ()
    #: Distribution names whose versions a manifest records.
    distributions: ClassVar[tuple[str, ...]] = ()
    #: The extra that installs the runtime (`pip install 'edgec[<extra>]'`), if not a core dependency.
    extra: ClassVar[str | None] = None
    #: Options this backend reads from a descriptor's `[options]`, validated when the descriptor loads.
    options: ClassVar[Mapping[str, OptionField]] = {}
    #: Runtime options copied from the descriptor into every `Runtime` that runs the artifact.
    runtime_options: ClassVar[tuple[str, ...]] = ()
    #: Whether int8 may use dynamic (per-call) activation quantization for MatMul/Gemm on this runtime.
    dynamic_int8: ClassVar[bool] = False
    #: Whether passes may emit ONNX Runtime's contrib ops (com.microsoft domain) for it.
    contrib_ops: ClassVar[bool] = False
    #: Module holding the family's `Runtime` subclass as `RUNTIME` (imported only when a model runs).
    runtime_module: ClassVar[str]

    @abc.abstractmethod
    def default_passes(self, precision: str) -> tuple[str, ...]:
        """The pass pipeline a descriptor of this family gets before its own additions and removals."""

    def fusable_activations(self, target: Target) -> frozenset[str]:
        """Activations the runtime runs inside the preceding Conv/Gemm/MatMul kernel in int8."""
        return frozenset({"Relu", "Clip"})

    @abc.abstractmethod
    def export(self, model: ir.Model, *, table: CalibrationTable | None, precision: str, staging: Path,
               target: Target) -> list[Path]:
        """Write the artifact's model file(s) into `staging`; the first path is `artifact_file`.

        `model` is edgec's optimized IR, quantized (Q/DQ from `table`'s ranges) when `precision` is int8.
        """

    def accuracy_runner(self, target: Target, table: CalibrationTable, threads: int) -> Runner | None:
        """How int8 candidates run when their accuracy is judged (budget search, held-out check, drift, auto).

        None: the Q/DQ graph in ONNX Runtime is what ships, or stands for it. A backend whose export
        rewrites the kernels (another runtime's integer arithmetic) returns a runner that exports each
        candidate and runs it in its own runtime, so the budget holds for the artifact that ships.
        """
        return None

    @abc.abstractmethod
    def file_input_specs(self, path: Path) -> list[TensorSpec]:
        """Input specs of one of this runtime's model files, read without running it."""

    def runtime(self) -> type[Runtime]:
        """The `Runtime` subclass that loads this family's artifacts (imports the runtime's module)."""
        return importlib.import_module(self.runtime_module).RUNTIME

    def missing_packages(self, packages: tuple[str, ...]) -> list[str]:
        return [name for name in packages if importlib.util.find_spec(name) is None]

    def build_missing(self) -> str | None:
        """Why this host cannot build for this family (a package absent), or None."""
        return self._install_hint(self.missing_packages(self.build_packages))

    def verify_missing(self, target: Target) -> str | None:
        """Why this host cannot check a build for `target` although it can build the family, or None."""
        return None

    def run_missing(self, target: Target) -> str | None:
        """Why this host cannot run `target`'s artifacts as far as the runtime is concerned, or None."""
        return self._install_hint(self.missing_packages(self.run_packages))

    def _install_hint(self, missing: list[str]) -> str | None:
        if not missing:
            return None
        hint = f": pip install 'edgec[{self.extra}]'" if self.extra else ""
        return f"needs {', '.join(missing)} (not installed){hint}"
