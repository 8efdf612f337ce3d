"""No code runs from a model file unless the user trusts it: `.pt2` archives holding pickles, TorchScript and
SavedModel are refused by default, and bench runs a code-bearing source only when compile and bench both trust it."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import edgec  # noqa: E402
from edgec.errors import UntrustedSourceError  # noqa: E402
from edgec.frontends import ImportOptions, import_model  # noqa: E402
from edgec.trust import pt2_code_risk  # noqa: E402


class _Marker:
    """Unpickling this creates a directory: the probe that shows code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def _weights_only(blob: bytes) -> object:
    return torch.load(io.BytesIO(blob), weights_only=True)


@pytest.fixture(scope="module")
def safe_pt2(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "linear.pt2"
    module = torch.nn.Linear(4, 2).eval()
    torch.export.save(torch.export.export(module, (torch.zeros(1, 4),)), path)
    return path


def _rewrite(source: Path, target: Path, change) -> Path:
    """Copy a zip member by member, letting `change(inner_name, data)` return new data or None to drop it."""
    extra = {}
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        root = old.namelist()[0].partition("/")[0]
        for info in old.infolist():
            inner = info.filename.partition("/")[2]
            data = change(inner, old.read(info), extra)
            if data is not None:
                new.writestr(info.filename, data)
        for inner, data in extra.items():
            new.writestr(f"{root}/{inner}", data)
    return target


def _pickled_weight(marker: Path):
    def change(inner: str, data: bytes, extra: dict) -> bytes:
        if inner.endswith("_weights_config.json"):
            config = json.loads(data)
            for meta in config["config"].values():
                meta["use_pickle"] = True
            return json.dumps(config).encode()
        if inner.startswith("data/weights/weight_"):
            return pickle.dumps(_Marker(marker))
        return data

    return change


def test_a_fresh_pt2_holds_no_pickles(safe_pt2) -> None:
    assert pt2_code_risk(safe_pt2.read_bytes(), _weights_only) is None
    assert import_model(safe_pt2).format.name == "torch-export"  # no trust needed


def test_a_pt2_with_a_pickled_weight_is_refused_and_runs_nothing(safe_pt2, tmp_path) -> None:
    marker = tmp_path / "code-ran"
    crafted = _rewrite(safe_pt2, tmp_path / "weights.bin", _pickled_weight(marker))  # any name: found by content
    with pytest.raises(UntrustedSourceError, match=r"weights entry '\w+' is pickled\); pass --trust-source"):
        edgec.compile(crafted, "cpu-x86-fp32", output_dir=tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()
    with pytest.raises(Exception):  # with trust the file is loaded as it is: its pickle runs (and is no tensor)
        import_model(crafted, options=ImportOptions(trust_source=True))
    assert marker.is_dir()


@pytest.mark.parametrize("kind", ["sample-inputs", "custom-object", "aotinductor", "legacy-layout"])
def test_other_pickles_in_a_pt2_are_refused(safe_pt2, tmp_path, kind) -> None:
    marker = tmp_path / "code-ran"

    def change(inner: str, data: bytes, extra: dict) -> bytes | None:
        if kind == "sample-inputs" and inner.startswith("data/sample_inputs/"):
            return pickle.dumps(_Marker(marker))
        if kind == "custom-object" and inner.endswith("_constants_config.json"):
            extra["data/constants/custom_obj_0"] = b"x"
            return json.dumps({"config": {"obj": {"path_name": "custom_obj_0", "is_param": False,
                                                  "use_pickle": True, "tensor_meta": None}}}).encode()
        if kind == "aotinductor" and inner == "archive_format":
            extra["data/aotinductor/model/model.so"] = b"\x7fELF"
        if kind == "legacy-layout" and inner == "archive_format":
            return None
        return data

    crafted = _rewrite(safe_pt2, tmp_path / "model.pt2", change)
    with pytest.raises(UntrustedSourceError, match="--trust-source"):
        import_model(crafted)
    assert not marker.exists()


def test_a_pt2_shape_expression_that_is_code_is_refused(tmp_path) -> None:
    """torch parses symbolic shapes with sympy.sympify, which evaluates them as Python."""
    path = tmp_path / "dynamic.pt2"
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(torch.nn.ReLU(), (torch.ones(2, 3),), dynamic_shapes=({0: batch},)), path)
    assert pt2_code_risk(path.read_bytes(), _weights_only) is None  # its expressions are plain sympy
    marker = tmp_path / "code-ran"
    code = f"__import__('os').mkdir('{marker}')"

    def change(inner: str, data: bytes, extra: dict) -> bytes:
        if not (inner.startswith("models/") and inner.endswith(".json")):
            return data
        program, stack = json.loads(data), []
        stack.append(program)
        while stack:  # the first symbolic-shape expression becomes code
            item = stack.pop()
            if isinstance(item, dict) and "expr_str" in item:
                item["expr_str"] = code
                break
            stack += list(item.values()) if isinstance(item, dict) else item if isinstance(item, list) else []
        return json.dumps(program).encode()

    crafted = _rewrite(path, tmp_path / "crafted.pt2", change)
    with pytest.raises(UntrustedSourceError, match="shape expression .* is Python"):
        import_model(crafted)
    assert not marker.exists()
    with pytest.raises(Exception):  # trusted, torch evaluates the expression: the code runs
        import_model(crafted, options=ImportOptions(trust_source=True))
    assert marker.is_dir()


def test_torchscript_is_refused_before_torch_loads_it(tmp_path, monkeypatch) -> None:
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.script(torch.nn.ReLU()), path)
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load ran without trust"))
    with pytest.raises(UntrustedSourceError, match="TorchScript runs the model's own code"):
        import_model(path, options=ImportOptions(trust_source=False))
    from edgec.model_info import inspect_model

    with pytest.raises(UntrustedSourceError, match="--trust-source"):  # inspecting is loading too
        inspect_model(path, inputs=["input:1x4"])


def test_savedmodel_is_refused_before_tensorflow_loads(tmp_path) -> None:
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    with pytest.raises(UntrustedSourceError, match="SavedModel runs its resource initializers"):
        import_model(saved)


@pytest.fixture(scope="module")
def scripted_artifacts(tmp_path_factory) -> dict[str, Path]:
    """A TorchScript model compiled with trust, and the same manifest claiming no trust."""
    root = tmp_path_factory.mktemp("scripted")
    path = root / "net.pt"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())), path)
    np.savez(root / "data.npz", input=np.ones((2, 4), np.float32))
    out = root / "trusted"
    edgec.compile(path, "cpu-x86-fp32", output_dir=out, inputs=["input:1x4"], trust_source=True)
    return {"trusted": out, "data": root / "data.npz", "source": path}


def test_bench_runs_a_code_bearing_source_only_when_both_trust_it(scripted_artifacts) -> None:
    out, data = scripted_artifacts["trusted"], scripted_artifacts["data"]
    quick = {"data": data, "runs": 1, "warmup": 0, "threads": 1, "source": scripted_artifacts["source"]}
    assert json.loads((out / "manifest.json").read_text())["source"]["trusted"] is True
    report = edgec.bench(out, **quick)  # no trust now: no run in TorchScript, the float ONNX baseline stays
    assert report["framework_baseline"] is None
    assert any("bench is given --trust-source too" in warning for warning in report["warnings"])
    assert Path(report["baseline_model"]) == out / "source.onnx"
    with pytest.raises(UntrustedSourceError, match="compiled with --trust-source and bench is given --trust-source"):
        edgec.bench(out, baseline_from="source", **quick)
    report = edgec.bench(out, trust_source=True, **quick)
    assert Path(report["framework_baseline"]["model"]["path"]).name == "net.pt"


def test_bench_trust_cannot_vouch_for_an_artifact_built_without_it(scripted_artifacts, tmp_path) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(scripted_artifacts["trusted"], out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["source"]["trusted"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UntrustedSourceError):
        edgec.bench(out, baseline_from="source", trust_source=True, data=scripted_artifacts["data"], runs=1, warmup=0,
                    source=scripted_artifacts["source"])
