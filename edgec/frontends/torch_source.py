"""PyTorch source runtime: runs the model the user trained (`.pt2` ExportedProgram or TorchScript) in PyTorch.

It is the reference for import verification and the default bench baseline of torch sources, so the
names it gives inputs and outputs are decided here, once (`load_source`), and the torch frontend
exports the ONNX graph with exactly these names: feeds keyed by the ONNX inputs then run both models.

- ExportedProgram: the program's own names (its user-input placeholders, i.e. forward's argument
  names; its user-output nodes), and shapes and dtypes from the program (dynamic dims by symbol).
- TorchScript: forward's argument names; outputs `output` (one) or `output_0`, `output_1`, ...
  (a TorchScript graph names no outputs). TorchScript declares only `Tensor`: rank and dtype are
  unknown until it runs, so its specs accept any array and TorchScript itself rejects a bad feed.

PyTorch is imported on first use, never at module import: the bench asks `is_available` (without
PyTorch it compares with the imported ONNX instead), and a bench worker calls `preload` before it
times the model's load, so the library's ~1 s and hundreds of MB are not charged to the model.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgec import errors
from edgec.errors import BadInputError
from edgec.frontends import detect_format
from edgec.backends.base import Runtime
from edgec.tensors import Feeds, Outputs, TensorSpec
from edgec.trust import pt2_code_risk, refuse_untrusted, require_trust

__all__ = ["TorchRuntime", "RUNTIME", "TorchSource", "load_source", "require_torch", "torch_error_line", "TORCH_FORMATS"]

#: The `edgec.frontends.FORMATS` this runtime runs.
TORCH_FORMATS = ("torch-export", "torchscript")


def require_torch() -> ModuleType:
    """`torch`, or a `BadInputError` naming the extra that installs it."""
    try:
        import torch
    except ModuleNotFoundError as exc:
        raise BadInputError("reading PyTorch models needs torch: pip install 'edgec[torch]'") from exc
    return torch


@dataclass(frozen=True)
class _UntypedSpec(TensorSpec):
    """A tensor whose rank and dtype TorchScript does not declare (`shape=()`, dtype object: unknown).

    Every array passes `accepts`: TorchScript checks what it receives when it runs.
    """

    shape: tuple[int | str | None, ...] = ()
    dtype: np.dtype = np.dtype(object)

    def accepts(self, array: np.ndarray) -> str | None:
        return None


@dataclass(frozen=True)
class TorchSource:
    """A loaded PyTorch model with the signature edgec gives it (see the module docstring).

    Attributes:
        format: "torch-export" or "torchscript".
        program: the `torch.export.ExportedProgram` or the `torch.jit.ScriptModule`.
        inputs, outputs: the tensors it takes and returns, in order.
        forward: runs the model on input tensors (in `inputs` order) and returns its output tensors,
            flattened in `outputs` order.
    """

    format: str
    program: Any
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    forward: Callable[[Sequence[Any]], list[Any]]


def _numpy_dtype(dtype: Any, what: str) -> np.dtype:
    try:
        return require_torch().empty((), dtype=dtype).numpy().dtype
    except TypeError as exc:  # bfloat16 and friends have no NumPy type
        raise BadInputError(f"{what} is {dtype}, which NumPy (and so edgec's data files) cannot hold") from exc


def _spec(name: str, value: Any, what: str) -> TensorSpec:
    """The spec of a FakeTensor from an ExportedProgram; symbolic dims keep their symbol's name."""
    shape = tuple(dim if isinstance(dim, int) else str(dim) for dim in value.shape)
    return TensorSpec(name, shape, _numpy_dtype(value.dtype, what))


def _unique(names: Sequence[str], taken: Sequence[str]) -> list[str]:
    """`names` made distinct from each other and from `taken` by a suffix (`y`, `y_1`).

    A program names an output after the node that computes it, so one returned twice, or an input
    returned as is, would share a name; the exporter adds an Identity per renamed output.
    """
    used = set(taken)
    unique = []
    for name in names:
        candidate, count = name, 0
        while candidate in used:
            count += 1
            candidate = f"{name}_{count}"
        used.add(candidate)
        unique.append(candidate)
    return unique


def _exported_source(path: Path, trust_source: bool) -> TorchSource:
    torch = require_torch()
    from torch.export.graph_signature import InputKind, OutputKind, TensorArgument
    from torch.utils import _pytree as pytree

    try:
        data = path.read_bytes()  # checked and loaded from one read: the file cannot change in between
    except OSError as exc:
        raise BadInputError(f"model: cannot read {path}: {exc.strerror or exc}") from exc
    if not trust_source:
        risk = pt2_code_risk(data, lambda blob: torch.load(io.BytesIO(blob), weights_only=True))
        if risk:
            raise refuse_untrusted(path, f"torch.export.load could run code from it ({risk})")
    try:
        program = torch.export.load(io.BytesIO(data))
    except Exception as exc:  # torch raises assorted types for foreign, truncated or newer-version archives
        raise BadInputError(f"model: torch.export.load cannot read {path}: {torch_error_line(exc)}") from exc
    nodes = {node.name: node for node in program.graph.nodes}
    inputs = []
    for spec in program.graph_signature.input_specs:
        if spec.kind != InputKind.USER_INPUT:
            continue
        if not isinstance(spec.arg, TensorArgument):
            raise BadInputError(f"model: {path} takes a non-tensor input ({spec.arg}); edgec feeds tensors only,"
                                " so export with that value fixed in the model")
        inputs.append(_spec(spec.arg.name, nodes[spec.arg.name].meta["val"], f"input '{spec.arg.name}'"))
    returned = [spec.arg for spec in program.graph_signature.output_specs if spec.kind == OutputKind.USER_OUTPUT]
    if not all(isinstance(arg, TensorArgument) for arg in returned):
        raise BadInputError(f"model: {path} returns a non-tensor value; edgec compiles models that return tensors")
    names = _unique([arg.name for arg in returned], [spec.name for spec in inputs])
    outputs = tuple(_spec(name, nodes[arg.name].meta["val"], f"output '{name}'") for name, arg in zip(names, returned))
    module = program.module()
    in_spec = program.call_spec.in_spec

    def forward(tensors: Sequence[Any]) -> list[Any]:
        args, kwargs = pytree.tree_unflatten(list(tensors), in_spec)
        return pytree.tree_leaves(module(*args, **kwargs))

    return TorchSource("torch-export", program, tuple(inputs), outputs, forward)


def _tensor_leaves(kind: Any, torch: ModuleType) -> int | None:
    """How many tensors a TorchScript type holds when flattened; None for anything but tensors and tuples."""
    if isinstance(kind, torch.TensorType):
        return 1
    if isinstance(kind, torch.TupleType):
        counts = [_tensor_leaves(element, torch) for element in kind.elements()]
        return None if None in counts else sum(counts)
    return None


def _torchscript_source(path: Path, trust_source: bool) -> TorchSource:
    require_trust(path, "torchscript", trust_source)
    torch = require_torch()
    from torch.utils import _pytree as pytree

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch.jit raises RuntimeError with C++ context for unreadable archives
        raise BadInputError(f"model: torch.jit.load cannot read {path}: {torch_error_line(exc)}") from exc
    module.eval()  # compiled for inference: dropout off, batch norm on its running statistics
    schema = module.forward.schema
    arguments = schema.arguments[1:]  # the first is the module itself
    untyped = [f"{arg.name}: {arg.type}" for arg in arguments if not isinstance(arg.type, torch.TensorType)]
    if untyped:
        raise BadInputError(f"model: {path} forward takes non-tensor arguments ({', '.join(untyped)}); edgec feeds"
                            " tensors only, so script a wrapper whose forward takes only tensors")
    count = _tensor_leaves(schema.returns[0].type, torch) if len(schema.returns) == 1 else None
    if not count:
        raise BadInputError(f"model: {path} forward returns {schema.returns[0].type if schema.returns else 'nothing'};"
                            " edgec compiles models that return a tensor or a tuple of tensors")
    names = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]

    def forward(tensors: Sequence[Any]) -> list[Any]:
        return pytree.tree_leaves(module(*tensors))

    inputs = tuple(_UntypedSpec(arg.name) for arg in arguments)
    return TorchSource("torchscript", module, inputs, tuple(_UntypedSpec(name) for name in names), forward)


def torch_error_line(exc: BaseException) -> str:
    """One line on why PyTorch failed: the first line of the innermost explicit cause's message.

    PyTorch's messages run to pages of C++ context, and the dynamo exporter wraps the useful error
    ("No ONNX function found for aten._linalg_eigh") in two generic ones with ANSI colour codes.
    """
    return re.sub(r"\x1b\[[0-9;]*m", "", errors.cause_line(exc))


def load_source(path: str | Path, fmt: str | None = None, *, trust_source: bool = False) -> TorchSource:
    """Load a `.pt2` or TorchScript file as a `TorchSource`; `fmt` skips detection by content.

    Without `trust_source`, TorchScript and `.pt2` archives that hold pickles are refused (`edgec.trust`).
    """
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt == "torch-export":
        return _exported_source(path, trust_source)
    if fmt == "torchscript":
        return _torchscript_source(path, trust_source)
    raise BadInputError(f"model: the torch runtime runs {' or '.join(TORCH_FORMATS)} files; {path} is {fmt}")


class TorchRuntime(Runtime):
    """Runs a `.pt2` or TorchScript file on the CPU in PyTorch, without autograd bookkeeping.

    `threads > 0` sets PyTorch's intra-op threads for the whole process (`torch.set_num_threads`);
    0 leaves PyTorch's default (one per physical core). Option `trust_source`: load a file that runs
    code when loaded (`edgec.trust`).
    """

    name = "torch"

    def __init__(self, path: str | Path, *, threads: int = 0, options: Mapping[str, Any] | None = None):
        super().__init__(path, threads=threads, options=options)
        self._torch = require_torch()
        if threads > 0:
            self._torch.set_num_threads(threads)
        self._source = load_source(self.path, trust_source=bool(self.options.get("trust_source")))
        self.inputs, self.outputs = list(self._source.inputs), list(self._source.outputs)

    def _infer(self, feeds: Feeds) -> Outputs:
        tensors = [self._torch.from_numpy(np.asarray(feeds[spec.name])) for spec in self._source.inputs]
        with self._torch.inference_mode():
            results = self._source.forward(tensors)
        return {spec.name: result.numpy() for spec, result in zip(self._source.outputs, results, strict=True)}

    @classmethod
    def is_available(cls) -> bool:
        return importlib.util.find_spec("torch") is not None

    @classmethod
    def preload(cls) -> None:
        """Import PyTorch and the `.pt2` deserializer, which `torch.export.load` imports on first use
        (sympy, dynamo: ~1.5 s, hundreds of modules); the module is private, so a PyTorch without it
        only loses the warm-up."""
        require_torch()
        with contextlib.suppress(ImportError):
            importlib.import_module("torch._export.serde.serialize")


RUNTIME = TorchRuntime
