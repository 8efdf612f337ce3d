"""TensorFlow source runtime: runs a SavedModel (its serving signature) or a Keras 3 `.keras` file in
TensorFlow itself, as the reference for import verification and the default bench baseline.

Both formats are reduced to one `SourceFunction`: a `tf.function` that takes the inputs positionally and
returns the outputs as a flat list, with clean names for both. The TensorFlow frontend converts exactly
this function with tf2onnx and renames the ONNX inputs and outputs after it, so the ONNX model and this
runtime agree on names and order by construction, whatever names tf2onnx picks.

Naming:

- SavedModel: the serving signature's keys (`pixels`, `output_0`), in TensorFlow's flat order for a
  signature (sorted by key, as `signature.inputs` / `signature.outputs` list them). TensorFlow's graph
  tensor names (`serving_default_pixels:0`, `Identity:0`) never appear.
- Keras: the model's input names and `output_names`, in declaration order (`output_0`, ... for
  Sequential and subclassed models, which have no `output_names`; a subclassed model's one input is
  named after the argument of its `call`).

TensorFlow is imported only when a model is loaded, so importing this module (e.g. to ask
`is_available`) costs nothing.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import BadInputError, RuntimeUnavailableError, first_line
from edgec.native_logs import quiet_native_logs
from edgec.backends.base import Runtime
from edgec.tensors import Feeds, Outputs, TensorSpec
from edgec.trust import require_trust

__all__ = ["SourceFunction", "TensorflowRuntime", "RUNTIME", "load_source", "SERVING_SIGNATURE"]

logger = logging.getLogger(__name__)

#: The SavedModel signature edgec runs and converts (what `model.export` and TF Serving use).
SERVING_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class SourceFunction:
    """A TensorFlow model as one traced function over named tensors.

    Attributes:
        function: `tf.function` with a fixed `input_signature`; call it with the inputs in `inputs`
            order, it returns the outputs as a list in `outputs` order.
        inputs: Clean input names, shapes (None for dynamic dims) and dtypes.
        outputs: Clean output names, shapes and dtypes, as traced.
        owner: The loaded SavedModel or Keras model; kept because a SavedModel's signatures hold its
            variables only weakly, so dropping the loaded object would break `function`.
    """

    function: Any
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    owner: Any


def _tensorflow() -> Any:
    try:
        with quiet_native_logs():
            import tensorflow as tf
    except ModuleNotFoundError as exc:
        raise RuntimeUnavailableError(
            f"running TensorFlow models needs {exc.name}: pip install 'edgec[tensorflow]'"
        ) from exc
    return tf


def _dims(shape: Any) -> tuple[int | None, ...] | None:
    """A `tf.TensorShape` as a tuple (None for unknown dims), or None when even the rank is unknown."""
    return None if shape.rank is None else tuple(shape.as_list())


def _override(names: Sequence[str], shapes: list[tuple[int | None, ...] | None],
              declared: Sequence[TensorSpec], path: Path) -> list[tuple[int | None, ...]]:
    """Apply `--input NAME:SHAPE` declarations to the model's input shapes, matched by name.

    Only shapes are taken from a declaration: TensorFlow models know their dtypes, and `--input`
    defaults the dtype to float32, which would silently retype integer inputs. Named dims
    (`batch`) and `?` stay dynamic. A trailing `:0` on a declared name is ignored, so TensorFlow's
    tensor names (`x:0`) work too.
    """
    by_name = {spec.name.removesuffix(":0"): spec for spec in declared}
    unknown = sorted(set(by_name) - set(names))
    if unknown:
        raise BadInputError(f"--input names {unknown}, but the inputs of {path} are {list(names)}")
    result = []
    for name, shape in zip(names, shapes):
        spec = by_name.get(name)
        if spec is not None:
            if shape is not None and len(shape) != len(spec.shape):
                raise BadInputError(
                    f"--input {spec.name}: rank {len(spec.shape)} but the model's input has rank {len(shape)}")
            shape = tuple(dim if isinstance(dim, int) else None for dim in spec.shape)
        if shape is None:
            raise BadInputError(
                f"model: input '{name}' of {path} has unknown rank; declare it with --input {name}:SHAPE")
        result.append(shape)
    return result


#: What a loader returns: (loaded object, input names, input specs, call(*inputs) -> [outputs], output names).
_Loaded = tuple[Any, list[str], list[Any], Callable[..., list[Any]], list[str]]


def _load_savedmodel(tf: Any, path: Path) -> _Loaded:
    """The serving signature of a SavedModel, called with keyword arguments as signatures require."""
    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError, tf.errors.OpError) as exc:
        raise BadInputError(f"model: TensorFlow cannot load the SavedModel {path}: {first_line(exc)}") from exc
    signature = loaded.signatures.get(SERVING_SIGNATURE)
    if signature is None:
        others = f" (it has {sorted(loaded.signatures)})" if len(loaded.signatures) else ""
        raise BadInputError(
            f"model: the SavedModel {path} has no '{SERVING_SIGNATURE}' signature{others}; save it with one:"
            " tf.saved_model.save(obj, dir, signatures=obj.f.get_concrete_function(tf.TensorSpec(shape, dtype)))"
            " or, for a Keras model, model.export(dir)"
        )
    kwargs = signature.structured_input_signature[1]
    names = sorted(kwargs)
    output_names = sorted(signature.structured_outputs)

    def call(*args: Any) -> list[Any]:
        results = signature(**dict(zip(names, args)))
        return [results[name] for name in output_names]

    return loaded, names, [kwargs[name] for name in names], call, output_names


def _unbuilt_inputs(tf: Any, model: Any, path: Path) -> tuple[list[str], list[Any]]:
    """Inputs of a Keras model that declares none (subclassed): the argument of its `call` and the
    shape Keras recorded when it was built, with the batch dim left dynamic."""
    shape = (model.get_build_config() or {}).get("input_shape")
    parameters = [p for p in inspect.signature(model.call).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not parameters or not isinstance(shape, (list, tuple)) or not all(isinstance(d, (int, type(None))) for d in shape):
        raise BadInputError(
            f"model: the Keras model {path} ({type(model).__name__}) declares no single input edgec can read;"
            " build it with keras.Input(shape) before saving, or export a SavedModel with model.export(dir)")
    return [parameters[0].name], [tf.TensorSpec((None, *shape[1:]), tf.float32)]


def _load_keras(tf: Any, path: Path) -> _Loaded:
    """A `.keras` model called in inference mode on its inputs.

    Functional and built `Sequential` models declare their inputs; a subclassed model takes one
    input named after its `call` argument (see `_unbuilt_inputs`). Only functional models have
    `output_names`; the others get `output_0`, `output_1`, ...
    """
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as exc:
        raise BadInputError(f"model: Keras cannot load {path}: {first_line(exc)}") from exc
    try:
        inputs = list(model.inputs)
        names = [tensor.name for tensor in inputs]
    except AttributeError:  # subclassed models
        names, inputs = _unbuilt_inputs(tf, model, path)

    def call(*args: Any) -> list[Any]:
        return tf.nest.flatten(model(list(args) if len(args) > 1 else args[0], training=False))

    return model, names, inputs, call, list(getattr(model, "output_names", None) or [])


def load_source(path: str | Path, declared: Sequence[TensorSpec] = (), *, trust_source: bool = False) -> SourceFunction:
    """Load a SavedModel directory or a `.keras` file as a `SourceFunction`.

    Args:
        path: A SavedModel directory (its `serving_default` signature is used) or a `.keras` file.
        declared: `--input` declarations overriding input shapes by name (see `_override`); the
            runtime passes none and runs the model as saved, with its dynamic dims.
        trust_source: load a SavedModel, which runs its own code when loaded (`edgec.trust`).
    """
    path = Path(path)
    if path.is_dir():
        require_trust(path, "savedmodel", trust_source)
    tf = _tensorflow()
    with quiet_native_logs():
        owner, names, specs, call, output_names = (_load_savedmodel if path.is_dir() else _load_keras)(tf, path)
    dtypes = [tf.as_dtype(spec.dtype) for spec in specs]
    shapes = _override(names, [_dims(tf.TensorShape(spec.shape)) for spec in specs], declared, path)
    function = tf.function(call, input_signature=[tf.TensorSpec(shape, dtype) for shape, dtype in zip(shapes, dtypes)])
    try:
        with quiet_native_logs():
            traced = function.get_concrete_function().outputs
    except (TypeError, ValueError) as exc:  # e.g. --input x:2x5 for a model whose x is [None, 4]
        raise BadInputError(f"model: {path} cannot be traced with the declared inputs: {first_line(exc)}") from exc
    if len(output_names) != len(traced):  # none (Sequential, subclassed), or disagreeing with nested (dict) outputs
        output_names = [f"output_{i}" for i in range(len(traced))]
    inputs = [TensorSpec(name, shape, np.dtype(dtype.as_numpy_dtype))
              for name, shape, dtype in zip(names, shapes, dtypes)]
    outputs = [TensorSpec(name, _dims(tensor.shape) or (), np.dtype(tensor.dtype.as_numpy_dtype))
               for name, tensor in zip(output_names, traced)]
    return SourceFunction(function, inputs, outputs, owner)


def _set_threads(tf: Any, threads: int) -> None:
    """Intra-op threads as asked and one inter-op thread (sequential, as edgec runs ONNX Runtime).

    TensorFlow fixes its thread pools when the first op runs; in a process that already ran
    TensorFlow (the compile that just converted the model) the setting cannot change any more,
    which only matters for timing, so it is logged rather than raised.
    """
    if threads <= 0:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        logger.info("TensorFlow is already initialized in this process; it keeps its %d intra-op threads",
                    tf.config.threading.get_intra_op_parallelism_threads())


class TensorflowRuntime(Runtime):
    """Runs a SavedModel's serving signature or a `.keras` model in TensorFlow (graph mode).

    Option `trust_source`: load a SavedModel, which runs code when loaded (`edgec.trust`).
    """

    name = "tensorflow"

    def __init__(self, path: str | Path, *, threads: int = 0, options: Mapping[str, Any] | None = None):
        super().__init__(path, threads=threads, options=options)
        self._tf = _tensorflow()
        _set_threads(self._tf, threads)
        self._source = load_source(self.path, trust_source=bool(self.options.get("trust_source")))
        self.inputs, self.outputs = self._source.inputs, self._source.outputs

    def _infer(self, feeds: Feeds) -> Outputs:
        results = self._source.function(*(self._tf.constant(feeds[spec.name]) for spec in self._source.inputs))
        return {spec.name: value.numpy() for spec, value in zip(self._source.outputs, results)}

    @classmethod
    def is_available(cls) -> bool:
        return importlib.util.find_spec("tensorflow") is not None

    @classmethod
    def preload(cls) -> None:
        _tensorflow()  # ~4 s; thread settings still apply, TF starts its runtime only at the first op


RUNTIME = TensorflowRuntime
