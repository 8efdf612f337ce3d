"""The backend seam: the registry, and the conformance test every backend passes before anything else.

Conformance, for each backend that builds and runs on this host: compile a small CNN for each of
its built-in targets' precisions -> the artifact loads in the backend's runtime -> its outputs are
within the target's tolerance of the float model -> it reloads from the artifact directory alone
with the same outputs -> the manifest names the file, the runtime, the hash and the versions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec import backends
from edgec.backends.onnxruntime.session import cpu_session
from edgec.artifact import read_manifest, sha256_file
from edgec.benchmark import resolve_artifact
from edgec.compiler import builds
from edgec.errors import RuntimeUnavailableError
from edgec.target import list_targets, load_target

_RNG = np.random.default_rng(7)
_SAMPLES = 16


def _small_cnn(path: Path) -> Path:
    """Conv-BN-Relu, depthwise Conv-Relu6, global pool, Gemm, Softmax: the ops every family must lower."""
    def init(name: str, *shape: int, scale: float = 0.3, offset: float = 0.0) -> onnx.TensorProto:
        return numpy_helper.from_array((offset + _RNG.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["n1"]),
        helper.make_node("Relu", ["n1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    inits = [init("w1", 8, 3, 3, 3), init("b1", 8), init("g", 8, scale=0.1, offset=1.0), init("beta", 8),
             init("mean", 8), numpy_helper.from_array(np.full(8, 1.5, np.float32), "var"),
             init("w2", 8, 1, 3, 3), init("b2", 8), numpy_helper.from_array(np.array(0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6, np.float32), "hi"), init("w3", 10, 8), init("b3", 10)]
    graph = helper.make_graph(nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save_model(model, path)
    return path


def _conformance_cases() -> list[object]:
    """(backend, target) for every built-in target a registered backend builds; skipped where it cannot run."""
    cases = []
    for target in list_targets():
        backend = backends.find(target.runtime)
        if backend is None or target.precision not in backend.precisions:
            continue
        why_not = (builds(target)[1] or None) or backend.run_missing(target) or \
            (backend.verify_missing(target) if backend.build_missing() is None else None)
        marks = [pytest.mark.skip(reason=f"{target.name}: {why_not}")] if why_not else []
        cases.append(pytest.param(backend.name, target.name, id=f"{backend.name}-{target.name}", marks=marks))
    return cases


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("conformance")
    model = _small_cnn(root / "cnn.onnx")
    samples = [{"x": _RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(_SAMPLES)]
    np.savez(root / "calib.npz", x=np.concatenate([s["x"] for s in samples]))
    return model, root / "calib.npz", samples


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize(("family", "target_name"), _conformance_cases())
def test_backend_conformance(family: str, target_name: str, cnn, tmp_path: Path) -> None:
    model, calib, samples = cnn
    backend, target = backends.get(family), load_target(target_name)
    result = edgec.compile(model, target, calib=calib if target.quant else None, output_dir=tmp_path / "out",
                           verify_import=False)
    manifest = read_manifest(result.output_dir)

    # the manifest is complete and describes the file on disk
    artifact = manifest["artifact"]
    assert artifact["file"] == backend.artifact_file and artifact["runtime"] == family
    assert artifact["sha256"] == sha256_file(result.model_path)
    assert artifact["size_bytes"] == result.model_path.stat().st_size
    assert {"schema", "edgec_version", "created_utc", "target", "source", "passes", "versions"} <= set(manifest)
    assert set(backend.distributions) <= set(manifest["versions"])
    assert manifest["target"]["descriptor"]["runtime"] == family
    assert (manifest["calibration"] is not None) == (artifact["precision"] == "int8")

    # the runtime loads it and its outputs stay within the target's tolerance of the float model
    runtime = backend.runtime()(result.model_path, threads=1)
    reference = cpu_session(onnx.load(model), threads=1)
    outputs = [runtime.infer(sample)["y"] for sample in samples]
    expected = [reference.run(None, sample)[0] for sample in samples]
    if artifact["precision"] == "int8":
        assert min(_cosine(o, e) for o, e in zip(outputs, expected)) >= target.thresholds["min_cosine"]
    else:
        for got, want in zip(outputs, expected):
            np.testing.assert_allclose(got, want, rtol=target.verify["rtol"], atol=target.verify["atol"])

    # the artifact directory alone is enough to load it again, by the runtime its manifest names
    ref, _ = resolve_artifact(result.output_dir)
    again = backends.runtime_class(ref.runtime)(ref.path, threads=1, options=ref.options)
    np.testing.assert_array_equal(again.infer(samples[0])["y"], outputs[0])


def test_every_registered_backend_declares_itself() -> None:
    for backend in backends.all_backends():
        assert backend.name in backends.FAMILIES and backends.get(backend.name) is backend
        assert backend.artifact_file.endswith(backend.suffixes)
        assert backends.for_file(Path("m" + backend.suffixes[0])) is backend
        assert "remove_unused" in backend.default_passes("fp32")


def test_planned_runtimes_load_but_do_not_build() -> None:
    target = load_target("tensorrt-int8")
    assert backends.find(target.runtime) is None
    assert builds(target) == (False, f"edgec {edgec.__version__} builds no tensorrt artifacts yet")
    assert target.runnable_here()[0] is False
    with pytest.raises(RuntimeUnavailableError, match="no tensorrt backend"):
        backends.get("tensorrt")


def test_backend_options_are_validated_when_a_descriptor_loads(tmp_path: Path) -> None:
    from edgec.errors import TargetError

    bad = tmp_path / "bad.toml"
    bad.write_text('runtime = "onnxruntime"\nprecision = "fp32"\n[options]\ngraph_optimization = "max"\n')
    with pytest.raises(TargetError, match="graph_optimization"):
        load_target(bad)
    other = tmp_path / "other.toml"  # each family checks its own options
    other.write_text('runtime = "tflite"\nprecision = "fp32"\n[options]\ndelegate = "gpu"\n')
    with pytest.raises(TargetError, match="delegate"):
        load_target(other)


def test_descriptors_add_and_remove_passes_on_the_backend_default(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('runtime = "tflite"\nprecision = "fp32"\nadd_passes = ["mark_attention"]\n'
                    'remove_passes = ["fuse_gelu"]\n')
    passes = load_target(path).passes
    default = backends.get("tflite").default_passes("fp32")
    assert passes == (*[p for p in default[:-1] if p != "fuse_gelu"], "mark_attention", "remove_unused")
    assert "convert_to_nhwc" in passes and "convert_to_nhwc" not in backends.get("onnxruntime").default_passes("fp32")


_RUNTIME_NAMES = {*backends.FAMILIES, *backends.PLANNED}


def _runtime_comparisons(path: Path) -> list[int]:
    """Lines where code compares something with a runtime's name (a dispatch that belongs in a backend)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            names = {elt.value for operand in operands for elt in ast.walk(operand)
                     if isinstance(elt, ast.Constant) and isinstance(elt.value, str)}
            if names & _RUNTIME_NAMES:
                lines.append(node.lineno)
    return lines


def test_nothing_outside_the_backends_dispatches_on_a_runtime_name() -> None:
    package = Path(edgec.__file__).parent
    offenders = {str(path.relative_to(package)): lines for path in package.rglob("*.py")
                 if "backends" not in path.relative_to(package).parts and (lines := _runtime_comparisons(path))}
    assert offenders == {}
