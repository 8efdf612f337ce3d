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


def test_compile_keeps_the_float_onnx_of_an_onnx_source(built, tiny) -> None:
    manifest = _manifest(built)
    assert manifest["source"]["onnx"] == "source.onnx" and "source.onnx" in manifest["files"]
    kept, original = onnx.load(built / "source.onnx"), onnx.load(tiny.model)
    assert [n.op_type for n in kept.graph.node] == [n.op_type for n in original.graph.node]
    assert {t.name for t in kept.graph.initializer} == {t.name for t in original.graph.initializer}


def test_bench_never_loads_the_source_the_manifest_names_outside(cli, art, tmp_path) -> None:
    """The probe's manifest pointed at a file elsewhere and bench loaded it; the baseline now is the kept copy."""
    elsewhere = tmp_path / "elsewhere.onnx"
    elsewhere.write_bytes(b"not a model: loading it would fail")
    _edit(art, lambda m: m["source"].update(path=str(elsewhere), sha256="0" * 64))
    result = _bench(cli, art, "--json", tmp_path / "r.json")
    assert result.code == 0, result.err
    assert json.loads((tmp_path / "r.json").read_text())["baseline_model"] == str(art / "source.onnx")


def test_an_artifact_is_self_contained(cli, built, tiny, tmp_path) -> None:
    source = tmp_path / "model.onnx"
    shutil.copyfile(tiny.model, source)
    out = tmp_path / "art"
    assert cli("compile", source, "-t", "cpu-x86-fp32", "-o", out).code == 0
    source.unlink()
    moved = tmp_path / "moved"
    out.rename(moved)
    assert _bench(cli, moved).code == 0


def test_an_older_artifact_pointing_outside_needs_baseline(cli, art, tiny) -> None:
    def older(manifest: dict) -> None:  # what edgec wrote for ONNX sources before it kept source.onnx
        manifest["source"].update(onnx=None, path=str(tiny.model))
        manifest["files"].pop("source.onnx")

    _edit(art, older)
    (art / "source.onnx").unlink()
    _fails(_bench(cli, art), "keeps no float ONNX", f"--baseline {tiny.model}")
    assert _bench(cli, art, "--baseline", tiny.model).code == 0


def test_a_slim_artifact_of_an_onnx_source_has_no_baseline(cli, tiny, tmp_path) -> None:
    out = tmp_path / "slim"
    assert cli("compile", tiny.model, "-t", "cpu-x86-fp32", "--slim", "-o", out).code == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    result = _bench(cli, out, "--json", tmp_path / "r.json")
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["baseline"] is None and any("--baseline" in w for w in report["warnings"])


@pytest.mark.parametrize("how", ["kept-file", "unlisted-file", "directory", "loop"])
def test_symlinks_leading_out_of_the_artifact_are_refused(cli, art, tmp_path, how) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    if how == "kept-file":  # the same bytes, so only the link gives it away
        shutil.move(art / "source.onnx", outside / "source.onnx")
        (art / "source.onnx").symlink_to(outside / "source.onnx")
    elif how == "unlisted-file":  # e.g. an external-data file a model names, not in the manifest
        (outside / "secret").write_text("secret")
        (art / "weights.bin").symlink_to(outside / "secret")
    elif how == "directory":
        (art / "data").symlink_to(outside, target_is_directory=True)
    else:
        (art / "a").symlink_to(art / "b")
        (art / "b").symlink_to(art / "a")
    _fails(_bench(cli, art), "outside the artifact")


@pytest.mark.parametrize("name", ["../source.onnx", "/tmp/source.onnx", "unlisted.onnx"])
def test_a_baseline_the_manifest_names_must_be_a_kept_file(cli, art, name) -> None:
    shutil.copyfile(art / "source.onnx", art / "unlisted.onnx")
    _edit(art, lambda m: m["source"].update(onnx=name))
    _fails(_bench(cli, art), name)


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
