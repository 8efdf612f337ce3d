"""`bench` checks an artifact against its manifest before loading anything; `compile` never deletes its own input
and finds output-path problems before the work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import onnx.parser
import pytest
from onnx import numpy_helper

from edgec import compiler


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny) -> Path:
    from edgec.cli import main

    out = tmp_path_factory.mktemp("built") / "art"
    assert main(["compile", str(tiny.model), "-t", "cpu-x86-fp32", "-o", str(out)]) == 0
    return out


@pytest.fixture
def art(built, tmp_path) -> Path:
    copy = tmp_path / "art"
    shutil.copytree(built, copy)
    return copy


def _manifest(art: Path) -> dict:
    return json.loads((art / "manifest.json").read_text())


def _edit(art: Path, change) -> None:
    manifest = _manifest(art)
    change(manifest)
    (art / "manifest.json").write_text(json.dumps(manifest))


def _bench(cli, art: Path, *extra):
    return cli("bench", art, "--runs", 1, "--warmup", 0, "--threads", 1, *extra)


def _fails(result, *needles: str) -> None:
    assert result.code == 2, (result.out, result.err)
    assert "Traceback" not in result.err and result.error_line.startswith("edgec: error: ")
    for needle in needles:
        assert needle in result.error_line, result.error_line


def test_an_intact_artifact_benches(cli, art) -> None:
    assert _bench(cli, art).code == 0


def test_bench_writes_strict_json_when_outputs_are_nan(cli, tmp_path) -> None:
    import numpy as np

    model = tmp_path / "sqrt.onnx"
    onnx.save_model(onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4] x) => (float[1, 4] y) { y = Sqrt(x) }"""), model)
    np.savez(tmp_path / "negative.npz", x=-np.ones((2, 1, 4), np.float32))  # sqrt(-1): NaN in both models
    assert cli("compile", model, "-t", "cpu-x86-fp32", "-o", tmp_path / "art").code == 0
    result = _bench(cli, tmp_path / "art", "--data", tmp_path / "negative.npz", "--json", tmp_path / "r.json")
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda token: pytest.fail(f"{token} written"))
    assert report["drift"]["outputs"]["y"]["cosine_min"] is None


def test_zeroed_weights_are_caught_before_loading(cli, art) -> None:
    model = onnx.load(art / "model.onnx")
    for tensor in model.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 0, tensor.name))
    onnx.save_model(model, art / "model.onnx")
    _fails(_bench(cli, art), "model.onnx", "does not match the sha256")


def test_a_changed_kept_file_is_caught(cli, art) -> None:
    _edit(art, lambda m: m["files"].update({"extra.json": "0" * 64}))
    (art / "extra.json").write_text("{}")
    _fails(_bench(cli, art), "extra.json", "does not match the sha256")


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.onnx", "sub/../../x.onnx"])
def test_a_model_file_outside_the_artifact_is_refused(cli, art, name) -> None:
    _edit(art, lambda m: m["artifact"].update(file=name))
    _fails(_bench(cli, art), "outside the artifact")


def test_a_source_changed_since_compile_is_refused(cli, art, tmp_path) -> None:
    other = tmp_path / "other.onnx"
    shutil.copyfile(art / "model.onnx", other)
    _edit(art, lambda m: m["source"].update(path=str(other)))
    _fails(_bench(cli, art), "other.onnx", "changed since compile")


@pytest.mark.parametrize("change", [
    lambda m: m.pop("target"),
    lambda m: m["target"].pop("descriptor"),
    lambda m: m.update(artifact=[]),
    lambda m: m["source"].update(path=5),
    lambda m: m.update(schema="other/1"),
    lambda m: m["target"]["descriptor"].update(options=5),
    lambda m: m["target"]["descriptor"].update(device={"arch": ["x"], "isa": [1]}),
    lambda m: m["source"].update(format="/etc/passwd"),
    lambda m: m["source"].update(onnx=5),
    lambda m: m["artifact"].pop("precision"),
    lambda m: m["source"].update(format=["onnx"]),
    lambda m: m["source"].pop("onnx"),
], ids=["no-target", "no-descriptor", "artifact-list", "path-number", "schema", "options-number", "device-lists",
        "format-unknown", "onnx-number", "no-precision", "format-list", "no-onnx-key"])
def test_malformed_manifests_are_one_line(cli, art, change) -> None:
    _edit(art, change)
    _fails(_bench(cli, art), "manifest.json")


def test_a_manifest_giving_a_key_twice_is_refused(cli, art) -> None:
    text = (art / "manifest.json").read_text()
    (art / "manifest.json").write_text(text.replace("{", '{"schema": "edgec.manifest/1", ', 1))
    _fails(_bench(cli, art), "manifest.json", "given twice")


def test_compile_refuses_to_replace_the_directory_holding_its_input(cli, art) -> None:
    model = art / "input.onnx"
    shutil.copyfile(art / "model.onnx", model)
    _fails(cli("compile", model, "-t", "cpu-x86-fp32", "-o", art, "--force"), "holds this run's input")
    assert model.is_file()


@pytest.mark.parametrize("where", ["missing-parent", "json-is-dir"])
def test_output_problems_fail_before_the_work(cli, tiny, art, tmp_path, monkeypatch, where) -> None:
    monkeypatch.setattr(compiler, "import_model", lambda *a, **k: pytest.fail("the work started"))
    if where == "missing-parent":
        _fails(cli("compile", tiny.model, "-t", "cpu-x86-fp32", "-o", tmp_path / "no" / "out"), "does not exist")
    else:
        from edgec import benchmark

        monkeypatch.setattr(benchmark, "benchmark", lambda *a, **k: pytest.fail("the work started"))
        _fails(_bench(cli, art, "--json", tmp_path), "is a directory")


def test_gate_output_problems_fail_before_printing_a_verdict(cli, tmp_path) -> None:
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"schema": "edgec.bench/1", "latency_ms": {"p90": 1.0}}))
    result = cli("gate", report, "--max-latency-p90-ms", 5, "--junit", tmp_path)
    _fails(result, "is a directory")
    assert "PASS" not in result.out
