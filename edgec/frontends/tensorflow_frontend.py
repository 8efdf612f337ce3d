"""TensorFlow frontend: SavedModel directories and Keras 3 `.keras` files to ONNX, through tf2onnx.

The model is loaded exactly as `edgec.frontends.tensorflow_source` runs it (one `tf.function` over the
serving signature or the Keras model, see `load_source`), tf2onnx converts that function, and the ONNX
inputs and outputs are then renamed and ordered after the runtime's. So import verification and the
bench baseline compare the same tensors under the same names, and no `:0` suffix reaches the ONNX.

Why `tf2onnx.convert.from_function` for both formats: `from_keras` fails on Keras 3 models (KeyError),
and converting our own function over the signature gives one path, one naming rule, and lets
`--input` override shapes for either format.

tf2onnx continues past ops it cannot convert and leaves them in the graph under their TensorFlow
names; `check_converted` turns that into an error that names them instead of an invalid model later.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import onnx

from edgec.native_logs import quiet_native_logs

with quiet_native_logs():
    import tf2onnx  # at import time, so a missing extra is reported by the dispatcher with its pip command

from edgec.errors import BadInputError
from edgec.frontends import FORMATS, ImportOptions
from edgec.frontends.specs import BATCH_DIM
from edgec.tensors import TensorSpec
from edgec.frontends.tensorflow_source import load_source

__all__ = ["convert", "adopt_io", "check_converted"]


def convert(path: Path, fmt: str, options: ImportOptions) -> onnx.ModelProto:
    """Convert a SavedModel dir (`fmt="savedmodel"`) or a `.keras` file (`fmt="keras"`) to ONNX at `options.opset`.

    `options.inputs` override input shapes by name (e.g. to make them static); dtypes stay the model's.
    """
    if (fmt == "savedmodel") != path.is_dir():
        kind = "a directory" if path.is_dir() else "a file"
        raise BadInputError(f"--from {fmt}: {path} is {kind}; a SavedModel is a directory, a Keras model a .keras file")
    source = load_source(path, options.inputs, trust_source=options.trust_source)
    with quiet_native_logs():
        proto, _ = tf2onnx.convert.from_function(source.function, input_signature=source.function.input_signature,
                                                 opset=options.opset)
    graph = proto.graph
    adopt_io(proto, list(zip((value.name for value in graph.input), source.inputs)),
             list(zip((value.name for value in graph.output), (spec.name for spec in source.outputs))))
    check_converted(proto, FORMATS[fmt].description)
    return proto


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph` and every subgraph (If/Loop bodies) inside it."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for sub in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                yield from _graphs(sub)


def _rename(proto: onnx.ModelProto, names: Mapping[str, str]) -> None:
    """Rename values everywhere they are defined or used, subgraphs included.

    A value that already carries one of the new names (tf2onnx names internal tensors freely) is
    moved out of the way first, so no two values ever share a name.
    """
    names = dict(names)
    taken = {name for graph in _graphs(proto.graph) for node in graph.node for name in node.output}
    taken |= {value.name for graph in _graphs(proto.graph) for value in (*graph.input, *graph.initializer)}
    for new in set(names.values()) & (taken - set(names)):
        names[new] = f"{new}__tf"
    for graph in _graphs(proto.graph):
        for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
            value.name = names.get(value.name, value.name)
        for node in graph.node:
            node.input[:] = [names.get(name, name) for name in node.input]
            node.output[:] = [names.get(name, name) for name in node.output]


def adopt_io(proto: onnx.ModelProto, inputs: Sequence[tuple[str, TensorSpec]],
             outputs: Sequence[tuple[str, str]]) -> None:
    """Give the ONNX graph the source runtime's input and output names, in the runtime's order.

    Args:
        proto: A converter's model, edited in place.
        inputs: (converter's input name, runtime's spec) in the runtime's order. A dynamic leading
            dim is taken to be the batch and named `BATCH_DIM` wherever the converter used its
            symbol (tf2onnx gives every input its own `unk__N`).
        outputs: (converter's output name, runtime's name) in the runtime's order.
    """
    graph = proto.graph
    for field, order in ((graph.input, [old for old, _ in inputs]), (graph.output, [old for old, _ in outputs])):
        by_name = {value.name: value for value in field}
        assert sorted(by_name) == sorted(order), f"converter I/O {sorted(by_name)}, expected {sorted(order)}"
        kept = [onnx.ValueInfoProto.FromString(by_name[name].SerializeToString()) for name in order]
        del field[:]
        field.extend(kept)
    symbols: dict[str, str] = {}
    for value, (_, spec) in zip(graph.input, inputs):
        first = value.type.tensor_type.shape.dim[:1]
        if spec.shape[:1] == (None,) and first and first[0].dim_param:
            symbols[first[0].dim_param] = BATCH_DIM
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = symbols[dim.dim_param]
    _rename(proto, {old: spec.name for old, spec in inputs} | dict(outputs))


def check_converted(proto: onnx.ModelProto, what: str) -> None:
    """Raise when the converter left ops that ONNX does not define (tf2onnx keeps them and goes on)."""
    unknown = Counter(node.op_type for graph in _graphs(proto.graph) for node in graph.node
                      if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type))
    if unknown:
        listed = ", ".join(f"{op} (x{count})" for op, count in sorted(unknown.items()))
        raise BadInputError(f"model: tf2onnx cannot convert these ops of the {what}: {listed};"
                            " replace them in the model or export ONNX from it yourself")
