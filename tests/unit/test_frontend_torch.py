"""PyTorch frontend and source runtime: `.pt2` and TorchScript models built here, compiled end to end.

The oracle is PyTorch itself (the module called directly) and ONNX Runtime run directly on the
artifact: no number here comes from edgec. Exported models and compiled artifacts are cached per
session because one dynamo export costs seconds.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch frontend needs torch (install edgec[torch])")
from torch import nn  # noqa: E402

import edgec  # noqa: E402
from edgec.compiler import CompileResult  # noqa: E402
from edgec.errors import BadInputError  # noqa: E402
from edgec.frontends import ImportOptions, detect_format, import_model  # noqa: E402
from edgec.frontends.specs import parse_tensor_spec  # noqa: E402
from edgec.harness.accuracy import output_drift  # noqa: E402
from edgec.backends import runtime_class  # noqa: E402
from edgec.target import host_target  # noqa: E402

#: fp32 artifact vs PyTorch: only float reassociation (folded batch norm, fused LayerNorm/GELU) differs.
FP32_RTOL, FP32_ATOL = 1e-4, 1e-5
#: The imported ONNX vs the source before any pass: the same kernels up to summation order.
IMPORT_MAX_ABS, IMPORT_MIN_COSINE = 1e-4, 0.9999
#: int8 vs the PyTorch source, per sample.
INT8_MIN_COSINE = 0.95
SAMPLES, IMAGE, TOKENS = 32, (3, 16, 16), (8, 64)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


class SmallCNN(nn.Module):
    """conv-bn-relu-pool, conv-bn-relu, global average pool, linear: a 10-class classifier on [N, 3, 16, 16]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(16, 10)
        for norm in (m for m in self.modules() if isinstance(m, nn.BatchNorm2d)):  # non-trivial statistics to fold
            norm.running_mean.uniform_(-0.2, 0.2)
            norm.running_var.uniform_(0.5, 1.5)
            nn.init.uniform_(norm.weight, 0.5, 1.5)
            nn.init.uniform_(norm.bias, -0.2, 0.2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image).flatten(1))


class TransformerBlock(nn.Module):
    """Pre-norm block on [N, 8, 64]: 4-head self-attention from Linear + softmax, then a GELU MLP."""

    def __init__(self, width: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, width = tokens.shape
        q, k, v = self.qkv(self.norm1(tokens)).reshape(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-2, -1) * (width // self.heads) ** -0.5, dim=-1)
        x = tokens + self.proj((attention @ v).transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(self.norm2(x))


@dataclass(frozen=True)
class TorchModel:
    """A saved model, the module it came from (the oracle), and data keyed by its input name."""

    module: nn.Module
    path: Path
    format: str
    input_name: str
    data: Path  # SAMPLES samples: calibration and bench data
    batch: np.ndarray  # 3 samples: a batch size the export never saw
    inputs: tuple[str, ...]  # --input declarations compiled with


def _small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN().eval()


#: Runtime options for a TorchScript file: it runs code when loaded (edgec.trust).
TRUSTED = {"trust_source": True}


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TorchModel]:
    root = tmp_path_factory.mktemp("torch-models")
    rng = np.random.default_rng(0)
    cnn, block = _small_cnn(), TransformerBlock().eval()
    batch = torch.export.Dim("batch")
    saved = {}
    for name, module, shape in (("cnn", cnn, IMAGE), ("block", block, TOKENS)):
        example = torch.from_numpy(rng.standard_normal((2, *shape)).astype(np.float32))
        saved[name] = root / f"{name}.pt2"
        torch.export.save(torch.export.export(module, (example,), dynamic_shapes=({0: batch},)), saved[name])
    torch.jit.save(torch.jit.script(cnn), root / "cnn.pt")
    images, tokens = (rng.standard_normal((SAMPLES + 3, *shape)).astype(np.float32) for shape in (IMAGE, TOKENS))
    np.savez(root / "images.npz", image=images[:SAMPLES])
    np.savez(root / "tokens.npz", tokens=tokens[:SAMPLES])
    return {
        # --input names the program's dynamic batch dim (the exporter would call it s<N>)
        "cnn-pt2": TorchModel(cnn, saved["cnn"], "torch-export", "image", root / "images.npz", images[SAMPLES:],
                              ("image:batchx3x16x16",)),
        "block-pt2": TorchModel(block, saved["block"], "torch-export", "tokens", root / "tokens.npz",
                                tokens[SAMPLES:], ()),
        "cnn-torchscript": TorchModel(cnn, root / "cnn.pt", "torchscript", "image", root / "images.npz",
                                      images[SAMPLES:], ("image:batchx3x16x16",)),
    }


@pytest.fixture(scope="session")
def compiled(models: dict[str, TorchModel], tmp_path_factory: pytest.TempPathFactory
             ) -> Callable[[str, str], CompileResult]:
    """`compiled(model, "fp32" | "int8")`: the artifact for the host's target, compiled once per session."""
    root = tmp_path_factory.mktemp("torch-artifacts")
    cache: dict[tuple[str, str], CompileResult] = {}

    def get(name: str, precision: str) -> CompileResult:
        if (name, precision) not in cache:
            model = models[name]
            target = "cpu-x86-fp32" if precision == "fp32" else host_target("onnxruntime", "int8").name
            calib = model.data if precision == "int8" else None
            cache[name, precision] = edgec.compile(model.path, target, calib=calib,
                                                   output_dir=root / f"{name}-{precision}", inputs=model.inputs,
                                                   trust_source=model.format == "torchscript")
        return cache[name, precision]

    return get


def _torch_outputs(module: nn.Module, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _onnx_outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


# ------------------------------------------------------------------------------------------------
# End to end: compile, then compare with PyTorch.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cnn-pt2", "block-pt2", "cnn-torchscript"])
def test_fp32_artifact_matches_pytorch(models, compiled, name) -> None:
    model, result = models[name], compiled(name, "fp32")
    proto = onnx.load(result.model_path)
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == [model.input_name]
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert batch_dim == "batch"  # dynamic: --input's name, or for a saved program's leading dim, the default
    actual = _onnx_outputs(result.model_path, {model.input_name: model.batch})
    for got, want in zip(actual, _torch_outputs(model.module, model.batch), strict=True):
        np.testing.assert_allclose(got, want, rtol=FP32_RTOL, atol=FP32_ATOL)
    source = result.manifest["source"]
    assert source["format"] == model.format
    assert source["import_seconds"] > 0
    check = source["import_verification"]
    assert check["samples"] > 0 and check["max_abs"] < IMPORT_MAX_ABS and check["cosine_min"] > IMPORT_MIN_COSINE


def test_cnn_batch_norm_is_folded(compiled) -> None:
    ops = [node.op_type for node in onnx.load(compiled("cnn-pt2", "fp32").model_path).graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 2


@pytest.mark.parametrize("name", ["cnn-pt2", "block-pt2", "cnn-torchscript"])
def test_onnx_names_are_the_source_runtimes(models, compiled, name) -> None:
    """Import verification and the bench baseline feed both models one dict: names and order must agree."""
    result = compiled(name, "fp32")
    imported = onnx.load(result.output_dir / result.manifest["source"]["onnx"])
    source = runtime_class("torch")(models[name].path, options=TRUSTED)
    assert [i.name for i in imported.graph.input] == [spec.name for spec in source.inputs]
    assert [o.name for o in imported.graph.output] == [spec.name for spec in source.outputs]


def test_int8_cnn_drift_against_the_pytorch_source(models, compiled) -> None:
    model, result = models["cnn-pt2"], compiled("cnn-pt2", "int8")
    assert "QuantizeLinear" in {node.op_type for node in onnx.load(result.model_path).graph.node}
    report = edgec.bench(result.output_dir, data=model.data, runs=5, warmup=0, threads=1, source=model.path)
    assert report["baseline_model"] == str(result.output_dir / "source.onnx")  # float, on the artifact's runtime
    assert report["baseline"]["model"]["runtime"] == "onnxruntime"
    framework = report["framework_baseline"]  # the .pt2 itself, named, run in PyTorch, as an extra
    assert Path(framework["model"]["path"]).resolve() == model.path.resolve() and framework["model"]["runtime"] == "torch"
    assert framework["speedup_p50"] == pytest.approx(framework["latency_ms"]["p50"] / report["latency_ms"]["p50"])
    (drift,) = report["drift"]["outputs"].values()
    assert drift["cosine_min"] > INT8_MIN_COSINE
    assert report["drift"]["top1_agreement"] is not None


def test_int8_transformer_block_stays_close_to_pytorch(models, compiled) -> None:
    model, result = models["block-pt2"], compiled("block-pt2", "int8")
    (actual,) = _onnx_outputs(result.model_path, {"tokens": model.batch})
    (expected,) = _torch_outputs(model.module, model.batch)
    assert output_drift(list(actual), list(expected))["cosine_min"] > INT8_MIN_COSINE


def test_compile_a_module_object(tmp_path) -> None:
    module = _small_cnn().train()
    x = np.random.default_rng(1).standard_normal((1, *IMAGE)).astype(np.float32)
    result = edgec.compile(module, "cpu-x86-fp32", example_inputs=(torch.from_numpy(x),), output_dir=tmp_path / "out")
    assert module.training  # exported in eval mode, handed back as it was
    source = result.manifest["source"]
    assert source["format"] == "torch-export" and source["path"] == "source.pt2"  # kept inside, by relative name
    assert detect_format(result.output_dir / source["path"]) == "torch-export"
    (actual,) = _onnx_outputs(result.model_path, {"image": x})
    (expected,) = _torch_outputs(module.eval(), x)
    np.testing.assert_allclose(actual, expected, rtol=FP32_RTOL, atol=FP32_ATOL)

    moved = tmp_path / "moved"
    result.output_dir.rename(moved)  # an artifact is self-contained: it can be benched wherever it goes
    report = edgec.bench(moved, runs=2, warmup=0, threads=1)
    assert report["baseline_model"] == str(moved / "source.onnx")
    assert report["framework_baseline"]["model"]["path"] == str(moved / "source.pt2")


def test_compile_an_untraceable_module_object(tmp_path) -> None:
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x  # data-dependent control flow: torch.export cannot trace it

    with pytest.raises(BadInputError, match=r"^torch.export.export cannot export Branchy: ") as info:
        edgec.compile(Branchy(), "cpu-x86-fp32", example_inputs=(torch.ones(2),), output_dir=tmp_path / "out")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_compile_a_non_module_object(tmp_path) -> None:
    with pytest.raises(BadInputError, match="torch.nn.Module"):
        edgec.compile(object(), "cpu-x86-fp32", example_inputs=(torch.zeros(1),), output_dir=tmp_path / "out")


# ------------------------------------------------------------------------------------------------
# The source runtime.
# ------------------------------------------------------------------------------------------------


def test_runtime_runs_an_exported_program(models) -> None:
    model = models["block-pt2"]
    threads = torch.get_num_threads()
    try:
        runtime = runtime_class("torch")(model.path, threads=1)
        assert torch.get_num_threads() == 1
        (spec,) = runtime.inputs
        assert spec.name == "tokens" and isinstance(spec.shape[0], str) and spec.shape[1:] == TOKENS
        assert spec.dtype == np.float32
        (output,) = runtime.infer({"tokens": model.batch}).values()
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(output, _torch_outputs(model.module, model.batch)[0], rtol=1e-6, atol=1e-6)
    with pytest.raises(BadInputError, match=r"missing \['tokens'\]"):
        runtime.infer({"x": model.batch})
    with pytest.raises(BadInputError, match="rank"):
        runtime.infer({"tokens": model.batch[0]})


def test_runtime_runs_torchscript(models) -> None:
    model = models["cnn-torchscript"]
    runtime = runtime_class("torch")(model.path, options=TRUSTED)
    assert [s.name for s in runtime.inputs] == ["image"] and [s.name for s in runtime.outputs] == ["output"]
    (output,) = runtime.infer({"image": model.batch}).values()
    np.testing.assert_allclose(output, _torch_outputs(model.module, model.batch)[0], rtol=1e-6, atol=1e-6)


def test_repeated_and_passed_through_outputs_get_distinct_names(tmp_path) -> None:
    """A program names outputs after their nodes: one tensor returned twice, or an input returned as is, collide."""

    class Returns(nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
            z = x + y
            return z, z, x

    example = (torch.randn(2, 3), torch.randn(2, 3))
    path = tmp_path / "returns.pt2"
    torch.export.save(torch.export.export(Returns(), example), path)
    model = import_model(path).model
    onnx_path = tmp_path / "returns.onnx"
    onnx.save_model(ir.serde.serialize_model(model), onnx_path)
    runtime = runtime_class("torch")(path)
    names = [spec.name for spec in runtime.outputs]
    assert [v.name for v in model.graph.outputs] == names and len(set(names) | {"x", "y"}) == 5
    feeds = {"x": example[0].numpy(), "y": example[1].numpy()}
    for name, got in zip(names, _onnx_outputs(onnx_path, feeds), strict=True):
        np.testing.assert_allclose(got, runtime.infer(feeds)[name])
    np.testing.assert_allclose(runtime.infer(feeds)[names[2]], feeds["x"])


# ------------------------------------------------------------------------------------------------
# Detection and bad inputs.
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, copy_as, expected", [
    ("cnn-pt2", "model.pt2", "torch-export"),
    ("cnn-pt2", "model.bin", "torch-export"),  # content decides, whatever the suffix
    ("cnn-torchscript", "model.pt", "torchscript"),
    ("cnn-torchscript", "model.pth", "torchscript"),
])
def test_detect_graph_archives(models, tmp_path, name, copy_as, expected) -> None:
    assert detect_format(shutil.copyfile(models[name].path, tmp_path / copy_as)) == expected


def _zip(path: Path, members: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)


@pytest.mark.parametrize("name, save, needle", [
    ("weights.pt", lambda sd, p: torch.save(sd, p), "pickled PyTorch object"),
    ("weights.pt2", lambda sd, p: torch.save(sd, p), "pickled PyTorch object"),
    ("legacy.pth", lambda sd, p: torch.save(sd, p, _use_new_zipfile_serialization=False), "pickled PyTorch object"),
    ("noise.pt", lambda sd, p: p.write_bytes(b"not a model" * 10), "not a PyTorch archive"),
    ("other.pt", lambda sd, p: _zip(p, {"archive/notes.txt": "no graph"}), "holds no ExportedProgram or TorchScript"),
    ("weights.bin", lambda sd, p: torch.save(sd, p), "cannot tell the format"),
], ids=["state-dict", "state-dict-pt2", "legacy-pickle", "noise", "other-zip", "unknown-suffix"])
def test_files_without_a_graph(tmp_path, name, save, needle) -> None:
    path = tmp_path / name
    save(_small_cnn().state_dict(), path)
    with pytest.raises(BadInputError, match=needle):
        detect_format(path)
    with pytest.raises(BadInputError, match=needle):
        edgec.compile(path, "cpu-x86-fp32", output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _options(*inputs: str) -> ImportOptions:
    return ImportOptions(tuple(parse_tensor_spec(text) for text in inputs), trust_source=True)


def test_torchscript_needs_input_declarations(models) -> None:
    with pytest.raises(BadInputError, match=r"pass --input NAME:SHAPE\[:DTYPE\].*\(image\)"):
        import_model(models["cnn-torchscript"].path, options=ImportOptions(trust_source=True))


@pytest.mark.parametrize("fmt", ["cnn-torchscript", "cnn-pt2"])
def test_input_declarations_must_name_the_models_inputs(models, fmt) -> None:
    with pytest.raises(BadInputError, match=r"\['pixels'\] do not match the model's inputs \['image'\]"):
        import_model(models[fmt].path, options=_options("pixels:1x3x16x16"))


def test_torchscript_unnamed_dynamic_dims_stay_dynamic(models) -> None:
    graph = import_model(models["cnn-torchscript"].path, options=_options("image:?x3x16x16")).model.graph
    assert [str(dim) for dim in graph.inputs[0].shape] == ["image_0", "3", "16", "16"]


@pytest.mark.parametrize("declared, needle", [
    ("image:batchx3x32x32", "dim 2 is 16 in the program"),
    ("image:4x3x16x16", "--fix-shape"),
    ("image:batchx3x16x16:int64", r"declare image:\?x3x16x16:float32"),
    ("image:batchx16x16", "rank 4"),
])
def test_exported_program_declarations_must_agree(models, declared, needle) -> None:
    with pytest.raises(BadInputError, match=needle):
        import_model(models["cnn-pt2"].path, options=_options(declared))


def test_unconvertible_op_is_one_clear_line(tmp_path) -> None:
    class Eigen(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eigvalsh(x @ x.transpose(-1, -2))

    path = tmp_path / "eigen.pt"
    torch.jit.save(torch.jit.script(Eigen()), path)
    with pytest.raises(BadInputError, match=r"^model: torch.onnx.export cannot convert .*eigen.pt: .*linalg") as info:
        import_model(path, options=_options("x:2x4x4"))
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_missing_torch_names_the_extra(models, monkeypatch) -> None:
    """Without torch the runtime says it is unavailable (the bench then uses the ONNX); loading names the extra."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ModuleNotFoundError
    runtime = runtime_class("torch")
    assert not runtime.is_available()
    model = models["cnn-pt2"].path
    for attempt in (runtime.preload, lambda: runtime(model), lambda: import_model(model)):
        with pytest.raises(BadInputError, match=r"pip install 'edgec\[torch\]'"):
            attempt()


def test_torch_is_imported_by_preload_not_by_the_module() -> None:
    """A bench worker imports the runtime, calls `preload`, then times the model's load: PyTorch and the
    `.pt2` deserializer must be imported by then, and asking `is_available` must not import them."""
    script = (
        "import sys\n"
        "from edgec.backends import runtime_class\n"
        "runtime = runtime_class('torch')\n"
        "assert runtime.is_available() and 'torch' not in sys.modules\n"
        "runtime.preload()\n"
        "assert 'torch._export.serde.serialize' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_a_lone_example_tensor_keeps_its_batch_axis(tmp_path: Path) -> None:
    module = torch.nn.Linear(4, 3)
    result = edgec.compile(module, "cpu-x86-fp32", example_inputs=torch.randn(1, 4), output_dir=tmp_path / "out")
    dims = onnx.load(result.model_path).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 4]


def test_bench_loads_a_source_outside_the_artifact_only_when_named(tmp_path: Path) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    x = torch.randn(1, 4)
    source = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(module.eval(), (x,)), source)
    result = edgec.compile(source, "cpu-x86-fp32", output_dir=tmp_path / "out")
    quick = {"runs": 2, "warmup": 0, "threads": 1}
    report = edgec.bench(result.output_dir, **quick)  # the source is right there, but not named: not loaded
    assert report["baseline_model"] == str(result.output_dir / "source.onnx")
    assert report["drift"]["outputs"]
    assert report["framework_baseline"] is None
    assert any("outside the artifact" in warning and f"--source {source}" in warning for warning in report["warnings"])
    with pytest.raises(BadInputError, match="--baseline-from source: the source model .* lies outside the artifact"):
        edgec.bench(result.output_dir, baseline_from="source", **quick)
    report = edgec.bench(result.output_dir, source=source, baseline_from="source", **quick)
    assert report["framework_baseline"]["model"]["path"] == str(source)
    other = tmp_path / "other.pt2"
    torch.export.save(torch.export.export(torch.nn.Sequential(torch.nn.Linear(4, 3)).eval(), (x,)), other)
    with pytest.raises(BadInputError, match="--source: .*other.pt2 is not the model this artifact was compiled from"):
        edgec.bench(result.output_dir, source=other, **quick)
    source.unlink()  # gone: the artifact still benches against its own float ONNX
    assert edgec.bench(result.output_dir, **quick)["drift"]["outputs"]


@pytest.mark.parametrize("name", ["cnn-pt2", "cnn-torchscript"])
def test_inspect_shows_the_names_compile_will_use(models, compiled, name) -> None:
    from edgec.model_info import inspect_model

    model = models[name]
    info = inspect_model(model.path, inputs=model.inputs, trust_source=model.format == "torchscript")
    assert info["format"] == model.format
    (image,) = info["inputs"]
    assert image["name"] == model.input_name == "image" and image["dtype"] == "float32"
    assert image["shape"] == ["batch", 3, 16, 16] and image["dynamic"] == ["batch"]
    imported = onnx.load(compiled(name, "fp32").output_dir / "source.onnx")  # the same conversion, read by onnx
    assert info["parameters"] == sum(int(np.prod(t.dims)) for t in imported.graph.initializer)
    assert info["ops"] == dict(collections.Counter(node.op_type for node in imported.graph.node))


def test_slim_artifact_keeps_only_deployable_files(tmp_path) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    result = edgec.compile(module, "cpu-x86-fp32", example_inputs=torch.randn(1, 4), output_dir=tmp_path / "slim",
                           slim=True)
    assert sorted(path.name for path in result.output_dir.iterdir()) == ["manifest.json", "model.onnx"]
    assert result.manifest["slim"] is True and result.manifest["source"]["path"] is None
    report = edgec.bench(result.output_dir, runs=2, warmup=0, threads=1)
    assert report["baseline"] is None and report["framework_baseline"] is None
    assert any("--slim" in warning and "--baseline" in warning for warning in report["warnings"])
    full = edgec.compile(module, "cpu-x86-fp32", example_inputs=torch.randn(1, 4), output_dir=tmp_path / "full")
    assert {"source.onnx", "source.pt2"} <= {path.name for path in full.output_dir.iterdir()}


def test_dynamic_batch_of_a_saved_program_is_named_batch(tmp_path) -> None:
    """A saved program keeps no Dim names (Dim("batch") becomes a symbol such as s31)."""
    program = torch.export.export(torch.nn.Linear(4, 3).eval(), (torch.randn(2, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "linear.pt2")
    result = edgec.compile(tmp_path / "linear.pt2", "cpu-x86-fp32", output_dir=tmp_path / "out")
    proto = onnx.load(result.model_path)
    assert [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["batch", 4]
