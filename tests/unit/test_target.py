"""Tests for edgec.target: built-in descriptors, inheritance, validation errors, host checks."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pickle
import platform
import textwrap
from pathlib import Path

import pytest

from edgec.errors import EdgecError, TargetError
from edgec.target import (
    DEFAULT_PASSES,
    DEFAULT_QUANT_OPS,
    Target,
    builtin_targets_dir,
    device_mismatch,
    host_cpu_flags,
    host_target,
    list_targets,
    load_target,
    merge_overrides,
    override_target,
    parse_override,
)

BUILTIN_NAMES = [
    "cpu-arm64-int8",
    "cpu-x86-avx2-int8",
    "cpu-x86-fp32",
    "cpu-x86-int8",
    "cuda-fp16",
    "tensorrt-fp16",
    "tensorrt-int8",
    "tflite-fp16",
    "tflite-fp32",
    "tflite-int8",
]

MINIMAL = 'runtime = "onnxruntime"\nprecision = "fp32"\n'

INT8_QUANT = """
[quant.weights]
dtype = "int8"
symmetric = true
granularity = "per_channel"
[quant.activations]
dtype = "uint8"
symmetric = false
granularity = "per_tensor"
"""


def write(directory: Path, filename: str, text: str) -> Path:
    """Write a descriptor (dedented) and return its path, creating parent folders."""
    path = directory / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def host_is_x86_64() -> bool:
    return platform.machine().lower() in {"x86_64", "amd64"}


# --- built-in descriptors -------------------------------------------------------------------


def test_builtin_dir_holds_exactly_the_shipped_descriptors() -> None:
    assert sorted(p.stem for p in builtin_targets_dir().glob("*.toml")) == BUILTIN_NAMES


def test_list_targets_is_sorted_and_complete() -> None:
    assert [t.name for t in list_targets()] == BUILTIN_NAMES


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_builtin_loads_and_is_consistent(name: str) -> None:
    target = load_target(name)
    assert target.name == name
    assert target.source == f"builtin:{name}"
    assert target.description and "\n" not in target.description
    assert (target.quant is not None) == (target.precision == "int8")
    assert target.passes and all(isinstance(p, str) for p in target.passes)
    assert target.verify["rtol"] >= 0 and target.verify["atol"] >= 0
    assert "arch" in target.device


def test_builtin_quant_schemes_match_what_each_runtime_fuses() -> None:
    x86 = load_target("cpu-x86-int8").quant
    assert (x86.activations.dtype, x86.activations.symmetric, x86.activations.granularity) == (
        "uint8", False, "per_tensor",
    )  # fmt: skip
    assert (x86.weights.dtype, x86.weights.symmetric, x86.weights.granularity) == ("int8", True, "per_channel")
    assert x86.calibrator == "minmax"
    assert x86.ops == DEFAULT_QUANT_OPS
    assert x86.quantize_embeddings  # ONNX Runtime runs Gather on int8 tables; TensorRT and TFLite do not need it
    assert not load_target("tensorrt-int8").quant.quantize_embeddings

    trt = load_target("tensorrt-int8").quant
    assert (trt.activations.dtype, trt.activations.symmetric) == ("int8", True)
    assert (trt.weights.dtype, trt.weights.symmetric, trt.weights.granularity) == ("int8", True, "per_channel")

    tfl = load_target("tflite-int8")
    assert (tfl.quant.activations.dtype, tfl.quant.activations.symmetric) == ("int8", False)
    assert tfl.quant.weights.granularity == "per_channel"
    assert tfl.options["delegate"] == "xnnpack"


def test_builtin_inheritance_keeps_parent_facts() -> None:
    fp32, int8, arm = load_target("cpu-x86-fp32"), load_target("cpu-x86-int8"), load_target("cpu-arm64-int8")
    assert int8.options == fp32.options
    assert int8.device["arch"] == fp32.device["arch"] and int8.device["memory_mb"] == fp32.device["memory_mb"]
    assert int8.device["isa"] == (*fp32.device["isa"], "avx512_vnni|avx_vnni")
    avx2 = load_target("cpu-x86-avx2-int8")
    assert avx2.quant.weights.reduce_range and not int8.quant.weights.reduce_range
    assert avx2.quant.activations == int8.quant.activations
    assert int8.thresholds == {"min_cosine": 0.98, "max_accuracy_drop_pp": 1.0}
    assert arm.quant == int8.quant
    assert arm.device["arch"] == "aarch64" and arm.device["isa"] == ("neon", "dotprod")
    assert load_target("cuda-fp16").options["provider"] == "CUDAExecutionProvider"
    assert load_target("tensorrt-fp16").runtime == load_target("tensorrt-int8").runtime == "tensorrt"


# --- loading by path and defaults -----------------------------------------------------------


def test_minimal_descriptor_gets_defaults(tmp_path: Path) -> None:
    target = load_target(write(tmp_path, "tiny.toml", MINIMAL))
    assert target.name == "tiny"
    assert target.description == ""
    assert target.passes == DEFAULT_PASSES
    assert target.quant is None
    assert dict(target.options) == {} and dict(target.device) == {} and dict(target.thresholds) == {}
    assert dict(target.verify) == {"rtol": 1e-3, "atol": 1e-4}
    assert target.source == str(tmp_path / "tiny.toml")


def test_load_by_str_path_pathlike_relative_path_and_suffixless_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "mine.toml", MINIMAL)
    assert load_target(str(path)).name == "mine"
    assert load_target(path).name == "mine"
    monkeypatch.chdir(tmp_path)
    assert load_target("mine.toml").source == str(path.resolve())
    write(tmp_path, "board", MINIMAL)  # no suffix: still a path because the file exists
    assert load_target("board").name == "board"


def test_name_key_overrides_stem_and_is_not_inherited(tmp_path: Path) -> None:
    write(tmp_path, "base.toml", 'name = "the-base"\n' + MINIMAL)
    write(tmp_path, "child.toml", 'inherits = "base.toml"\n')
    assert load_target(tmp_path / "base.toml").name == "the-base"
    assert load_target(tmp_path / "child.toml").name == "child"


def test_extra_keys_allowed_in_options_and_device(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "extras.toml",
        MINIMAL + '[options]\nworkspace_mb = 512\n[device]\nboard = "rpi5"\n[device.cache]\nl2_kb = 512\n',
    )
    target = load_target(path)
    assert target.options["workspace_mb"] == 512
    assert target.device["board"] == "rpi5" and target.device["cache"]["l2_kb"] == 512


# --- inheritance ----------------------------------------------------------------------------


def test_user_file_inherits_builtin_and_overrides_nested_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "mybox.toml",
        """
        inherits = "cpu-x86-int8"
        [options]
        threads = 4
        [quant.activations]
        symmetric = true
        [device]
        isa = ["avx2"]
        """,
    )
    target, parent = load_target(path), load_target("cpu-x86-int8")
    assert target.options["threads"] == 4
    assert {k: v for k, v in target.options.items() if k != "threads"} == {
        k: v for k, v in parent.options.items() if k != "threads"
    }
    assert target.quant.activations.symmetric is True
    assert target.quant.activations.dtype == "uint8"  # sibling key kept
    assert target.quant.weights == parent.quant.weights
    assert target.device["isa"] == ("avx2",)  # lists replace, never concatenate
    assert target.device["memory_mb"] == parent.device["memory_mb"]
    assert target.description == parent.description
    assert target.name == "mybox"


def test_three_level_chain(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", MINIMAL + '[options]\nthreads = 1\nopset = 13\nprovider = "CPUExecutionProvider"\n')
    write(tmp_path, "b.toml", 'inherits = "a.toml"\nprecision = "int8"\n' + INT8_QUANT + "[options]\nthreads = 2\n")
    write(tmp_path, "c.toml", 'inherits = "b.toml"\n[options]\nopset = 17\n[quant]\ncalibrator = "percentile"\n')
    target = load_target(tmp_path / "c.toml")
    assert dict(target.options) == {"threads": 2, "opset": 17, "provider": "CPUExecutionProvider"}
    assert target.precision == "int8" and target.runtime == "onnxruntime"
    assert target.quant.calibrator == "percentile" and target.quant.percentile == 99.99


def test_parent_path_is_relative_to_the_inheriting_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "boards/common/base.toml", MINIMAL + 'description = "shared base"\n')
    write(tmp_path, "boards/leaf.toml", 'inherits = "common/base.toml"\n')
    monkeypatch.chdir(tmp_path / "boards/common")  # the cwd must not matter
    target = load_target(tmp_path / "boards/leaf.toml")
    assert target.description == "shared base"


def test_parent_outside_the_descriptors_directory_needs_the_search_path(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "common/base.toml", MINIMAL + 'description = "shared base"\n')
    write(tmp_path, "boards/x/leaf.toml", 'inherits = "../../common/base.toml"\n')
    with pytest.raises(TargetError, match="outside the descriptor's directory"):
        load_target(tmp_path / "boards/x/leaf.toml")
    monkeypatch.setenv("EDGEC_TARGET_PATH", str(tmp_path / "common"))
    assert load_target(tmp_path / "boards/x/leaf.toml").description == "shared base"


@pytest.mark.parametrize("ref", ["/etc/passwd", "../secrets/config.toml", "sub/../../outside.toml"])
def test_inherits_cannot_read_files_elsewhere(tmp_path: Path, ref: str) -> None:
    write(tmp_path, "secrets/config.toml", 'api_token = "s3cr3t"\n[options]\napi_token = "s3cr3t"\n')
    path = write(tmp_path, "mine/leaf.toml", f'inherits = "{ref}"\n')
    with pytest.raises(TargetError, match="outside the descriptor's directory") as info:
        load_target(path)
    assert "s3cr3t" not in str(info.value)


def test_target_never_echoes_the_value_of_an_unknown_key(tmp_path: Path, capsys) -> None:
    from edgec.cli import main

    path = write(tmp_path, "leaf.toml", 'inherits = "cpu-x86-fp32"\n[options]\napi_token = "s3cr3t"\n'
                                         '[device]\nserial = "s3cr3t"\n')
    assert main(["target", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s3cr3t" not in out and "api_token" in out and "serial" in out


def test_deep_inheritance_chains_are_one_error(tmp_path: Path) -> None:
    write(tmp_path, "t0.toml", MINIMAL)
    for level in range(1, 200):
        write(tmp_path, f"t{level}.toml", f'inherits = "t{level - 1}.toml"\n')
    with pytest.raises(TargetError, match="deep; flatten"):
        load_target(tmp_path / "t199.toml")


@pytest.mark.parametrize("dims", ["{batch = 0}", "{batch = 1.5}", '{batch = "1"}', "{batch = 99999999999999}"])
def test_fix_dims_must_be_positive_whole_numbers(tmp_path: Path, dims: str) -> None:
    path = write(tmp_path, "leaf.toml", f'inherits = "cpu-x86-fp32"\n[options]\nfix_dims = {dims}\n')
    with pytest.raises(TargetError, match="fix_dims"):
        load_target(path)


def test_child_may_switch_an_int8_parent_to_fp16(tmp_path: Path) -> None:
    path = write(tmp_path, "half.toml", 'inherits = "cpu-x86-int8"\nprecision = "fp16"\n')
    assert load_target(path).quant is None


# --- validation errors ----------------------------------------------------------------------

BAD_DESCRIPTORS = {
    "unknown top-level key": (MINIMAL + "colour = 3\n", "colour"),
    "unknown nested key": ('runtime = "onnxruntime"\nprecision = "int8"\n' + INT8_QUANT + "bits = 8\n", "activations.bits"),
    "unknown threshold": (MINIMAL + "[thresholds]\nmax_error = 0.1\n", "thresholds.max_error"),
    "unknown verify key": (MINIMAL + "[verify]\nmaxdiff = 0.1\n", "verify.maxdiff"),
    "threads not int": (MINIMAL + '[options]\nthreads = "four"\n', "options.threads"),
    "threads negative": (MINIMAL + "[options]\nthreads = -1\n", "options.threads"),
    "opset not int": (MINIMAL + "[options]\nopset = 17.0\n", "options.opset"),
    "memory_mb bool": (MINIMAL + "[device]\nmemory_mb = true\n", "device.memory_mb"),
    "isa not list": (MINIMAL + '[device]\nisa = "avx2"\n', "device.isa"),
    "passes not list": (MINIMAL + 'passes = "fold_constants"\n', "passes"),
    "passes not str": (MINIMAL + 'passes = ["fold_constants", 3]\n', "passes"),
    "symmetric not bool": (
        'runtime = "onnxruntime"\nprecision = "int8"\n' + INT8_QUANT.replace("symmetric = true", 'symmetric = "yes"'),
        "quant.weights.symmetric",
    ),
    "threshold not number": (MINIMAL + '[thresholds]\nmin_cosine = "high"\n', "thresholds.min_cosine"),
    "verify negative": (MINIMAL + "[verify]\natol = -1e-4\n", "verify.atol"),
    "options not a table": (MINIMAL + 'options = "fast"\n', "options"),
    "bad runtime": ('runtime = "openvino"\nprecision = "fp32"\n', "runtime"),
    "bad precision": ('runtime = "onnxruntime"\nprecision = "int4"\n', "precision"),
    "bad dtype": (
        'runtime = "onnxruntime"\nprecision = "int8"\n' + INT8_QUANT.replace('"uint8"', '"int4"'),
        "quant.activations.dtype",
    ),
    "bad granularity": (
        'runtime = "onnxruntime"\nprecision = "int8"\n' + INT8_QUANT.replace('"per_tensor"', '"per_block"'),
        "quant.activations.granularity",
    ),
    "bad calibrator": (
        'runtime = "onnxruntime"\nprecision = "int8"\n' + INT8_QUANT + '[quant]\ncalibrator = "kl"\n',
        "quant.calibrator",
    ),
    "bad graph_optimization": (MINIMAL + '[options]\ngraph_optimization = "max"\n', "options.graph_optimization"),
    "percentile too low": (MINIMAL + "[quant]\npercentile = 50\n", "quant.percentile"),
    "percentile too high": (MINIMAL + "[quant]\npercentile = 100.5\n", "quant.percentile"),
    "int8 without quant": ('runtime = "onnxruntime"\nprecision = "int8"\n', "[quant]"),
    "auto without quant": ('runtime = "onnxruntime"\nprecision = "auto"\n', "[quant]"),
    "smoothquant_alpha above 1": (MINIMAL + "[quant]\nsmoothquant_alpha = 1.5\n", "quant.smoothquant_alpha"),
    "smoothquant_alpha negative": (MINIMAL + "[quant]\nsmoothquant_alpha = -0.1\n", "quant.smoothquant_alpha"),
    "smoothquant_alpha not number": (MINIMAL + '[quant]\nsmoothquant_alpha = "half"\n', "quant.smoothquant_alpha"),
    "bias_correction not bool": (MINIMAL + "[quant]\nbias_correction = 1\n", "quant.bias_correction"),
    "dynamic_ops not list": (MINIMAL + '[quant]\ndynamic_ops = "MatMul"\n', "quant.dynamic_ops"),
    "quantize_embeddings not bool": (MINIMAL + '[quant]\nquantize_embeddings = 1\n', "quant.quantize_embeddings"),
    "keep_float not str": (MINIMAL + "[quant]\nkeep_float = [3]\n", "quant.keep_float"),
    "int8 without activations": (
        'runtime = "onnxruntime"\nprecision = "int8"\n' + INT8_QUANT.split("[quant.activations]")[0],
        "quant.activations",
    ),
    "tensor quant missing key": (
        'runtime = "onnxruntime"\nprecision = "int8"\n' + INT8_QUANT.replace('granularity = "per_channel"\n', ""),
        "quant.weights.granularity",
    ),
    "missing runtime": ('precision = "fp32"\n', "runtime"),
    "missing precision": ('runtime = "onnxruntime"\n', "precision"),
}


@pytest.mark.parametrize("text, key", list(BAD_DESCRIPTORS.values()), ids=list(BAD_DESCRIPTORS))
def test_bad_descriptor_raises_target_error_naming_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, "bad.toml", text)
    with pytest.raises(TargetError) as info:
        load_target(path)
    message = str(info.value)
    assert str(path) in message
    assert key in message
    assert "\n" not in message


def test_error_in_parent_names_the_parent_file(tmp_path: Path) -> None:
    parent = write(tmp_path, "parent.toml", MINIMAL + "[options]\nthreads = 1.5\n")
    write(tmp_path, "child.toml", 'inherits = "parent.toml"\n')
    with pytest.raises(TargetError, match="options.threads") as info:
        load_target(tmp_path / "child.toml")
    assert str(parent) in str(info.value)


def test_missing_key_can_come_from_parent(tmp_path: Path) -> None:
    write(tmp_path, "parent.toml", 'runtime = "tflite"\n')
    write(tmp_path, "child.toml", 'inherits = "parent.toml"\nprecision = "fp16"\n')
    assert load_target(tmp_path / "child.toml").runtime == "tflite"
    with pytest.raises(TargetError, match="precision"):
        load_target(tmp_path / "parent.toml")


def test_unknown_target_name_lists_known_ones() -> None:
    with pytest.raises(TargetError) as info:
        load_target("cpu-x86-int4")
    message = str(info.value)
    assert "cpu-x86-int4" in message
    assert all(name in message for name in BUILTIN_NAMES)
    assert isinstance(info.value, EdgecError)


def test_missing_file_path(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="does not exist"):
        load_target(tmp_path / "nope.toml")


def test_unknown_parent(tmp_path: Path) -> None:
    path = write(tmp_path, "orphan.toml", 'inherits = "no-such-target"\n')
    with pytest.raises(TargetError, match="no-such-target") as info:
        load_target(path)
    assert str(path) in str(info.value) and "cpu-x86-fp32" in str(info.value)
    path = write(tmp_path, "orphan2.toml", 'inherits = "gone/base.toml"\n')
    with pytest.raises(TargetError, match="base.toml") as info:
        load_target(path)
    assert str(path) in str(info.value)


def test_inheritance_cycle_names_the_chain(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", 'inherits = "b.toml"\n' + MINIMAL)
    write(tmp_path, "b.toml", 'inherits = "c.toml"\n')
    write(tmp_path, "c.toml", 'inherits = "a.toml"\n')
    with pytest.raises(TargetError, match="cycle") as info:
        load_target(tmp_path / "a.toml")
    a, b, c = (str(tmp_path / f"{x}.toml") for x in "abc")
    assert f"{a} -> {b} -> {c} -> {a}" in str(info.value)


def test_self_inheritance_is_a_cycle(tmp_path: Path) -> None:
    path = write(tmp_path, "me.toml", 'inherits = "me.toml"\n' + MINIMAL)
    with pytest.raises(TargetError, match="cycle"):
        load_target(path)


def test_toml_syntax_error_reports_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.toml", 'runtime = "onnxruntime"\nprecision fp32\n')
    with pytest.raises(TargetError, match="line 2") as info:
        load_target(path)
    assert str(path) in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"runtime = \"\xff\xfe\"\n")
    with pytest.raises(TargetError, match="cannot read") as info:
        load_target(path)
    assert str(path) in str(info.value)


# --- quant scheme keys and precision "auto" ------------------------------------------------


def test_quant_scheme_extra_keys_and_their_defaults(tmp_path: Path) -> None:
    base = 'runtime = "onnxruntime"\nprecision = "int8"\n' + INT8_QUANT
    plain = load_target(write(tmp_path, "plain.toml", base)).quant
    assert (plain.dynamic_ops, plain.smoothquant_alpha, plain.bias_correction, plain.keep_float) == ((), 0.0, False, ())
    assert plain.quantize_embeddings is False
    extras = ('[quant]\ndynamic_ops = ["MatMul"]\nsmoothquant_alpha = 1\nbias_correction = true\n'
              'keep_float = ["Add", "fc"]\nquantize_embeddings = true\n')
    quant = load_target(write(tmp_path, "extras.toml", base + extras)).quant
    assert quant.dynamic_ops == ("MatMul",) and quant.keep_float == ("Add", "fc")
    assert quant.smoothquant_alpha == 1.0 and isinstance(quant.smoothquant_alpha, float)  # an int in TOML
    assert quant.bias_correction is True and quant.quantize_embeddings is True


def test_precision_auto_carries_a_quant_scheme(tmp_path: Path) -> None:
    path = write(tmp_path, "auto.toml", 'inherits = "cpu-x86-int8"\nprecision = "auto"\n')
    target = load_target(path)
    assert target.precision == "auto" and target.quant == load_target("cpu-x86-int8").quant


# --- overrides (--set, --precision, --calibrator) -------------------------------------------


def test_override_deep_merges_and_marks_the_source() -> None:
    parent = load_target("cpu-x86-int8")
    overridden = override_target(parent, {"quant": {"calibrator": "mse", "weights": {"reduce_range": True},
                                                    "ops": ["Conv"]}, "options": {"threads": 2}})
    assert overridden.source == "builtin:cpu-x86-int8 (overridden)"
    assert overridden.name == parent.name and overridden.description == parent.description
    assert overridden.quant.calibrator == "mse"
    assert overridden.quant.weights == dataclasses.replace(parent.quant.weights, reduce_range=True)  # siblings kept
    assert overridden.quant.activations == parent.quant.activations
    assert overridden.quant.ops == ("Conv",)  # lists replace
    assert dict(overridden.options) == {**parent.options, "threads": 2}
    assert overridden.device == parent.device and overridden.thresholds == parent.thresholds
    assert overridden.passes == parent.passes and overridden.verify == parent.verify
    assert load_target("cpu-x86-int8") == parent  # the original is untouched


def test_empty_override_returns_the_target_itself() -> None:
    target = load_target("cpu-x86-fp32")
    assert override_target(target, {}) is target


@pytest.mark.parametrize("calibrator", ["minmax", "percentile", "entropy", "mse"])
def test_override_accepts_every_calibrator(calibrator: str) -> None:
    target = override_target(load_target("cpu-x86-int8"), {"quant": {"calibrator": calibrator}})
    assert target.quant.calibrator == calibrator


def test_override_switches_precision_to_auto() -> None:
    parent = load_target("cpu-x86-int8")
    auto = override_target(parent, {"precision": "auto"})
    assert auto.precision == "auto" and auto.quant == parent.quant


BAD_OVERRIDES = {
    "unknown key": ({"quant": {"calibrater": "mse"}}, "quant.calibrater"),
    "bad calibrator": ({"quant": {"calibrator": "kl"}}, "quant.calibrator"),
    "alpha out of range": ({"quant": {"smoothquant_alpha": 2.0}}, "quant.smoothquant_alpha"),
    "bias_correction not bool": ({"quant": {"bias_correction": "yes"}}, "quant.bias_correction"),
    "threads negative": ({"options": {"threads": -1}}, "options.threads"),
    "table given a scalar": ({"quant": "mse"}, "quant"),
}


@pytest.mark.parametrize("overrides, key", list(BAD_OVERRIDES.values()), ids=list(BAD_OVERRIDES))
def test_bad_override_names_override_and_key(overrides: dict, key: str) -> None:
    with pytest.raises(TargetError) as info:
        override_target(load_target("cpu-x86-int8"), overrides)
    message = str(info.value)
    assert message.startswith("override:") and f"'{key}'" in message and "\n" not in message


def test_override_that_breaks_the_merged_target_names_the_overridden_source() -> None:
    """fp32 -> int8 without a [quant] table: caught by the complete check, after merging."""
    with pytest.raises(TargetError, match="quant") as info:
        override_target(load_target("cpu-x86-fp32"), {"precision": "int8"})
    assert "builtin:cpu-x86-fp32 (overridden)" in str(info.value)


PARSED_OVERRIDES = {
    "quant.calibrator=mse": {"quant": {"calibrator": "mse"}},  # a bare word is a string
    'quant.calibrator="mse"': {"quant": {"calibrator": "mse"}},
    " quant . calibrator = mse ": {"quant": {"calibrator": "mse"}},
    "quant.smoothquant_alpha=0.5": {"quant": {"smoothquant_alpha": 0.5}},
    "options.threads=4": {"options": {"threads": 4}},
    "quant.bias_correction=true": {"quant": {"bias_correction": True}},
    'quant.dynamic_ops=["MatMul", "Gemm"]': {"quant": {"dynamic_ops": ["MatMul", "Gemm"]}},
    "quant.weights={reduce_range = true}": {"quant": {"weights": {"reduce_range": True}}},
    "description=my board, rev 2": {"description": "my board, rev 2"},  # not TOML: kept as typed
    "precision=auto": {"precision": "auto"},
}


@pytest.mark.parametrize("text", list(PARSED_OVERRIDES))
def test_parse_override(text: str) -> None:
    assert parse_override(text) == PARSED_OVERRIDES[text]


@pytest.mark.parametrize("text", ["quant.calibrator", "=mse", "quant..calibrator=mse", ".calibrator=mse", "quant.=1"])
def test_parse_override_rejects_malformed_keys(text: str) -> None:
    with pytest.raises(TargetError, match="KEY=VALUE") as info:
        parse_override(text)
    assert text in str(info.value)


def test_merge_overrides_later_wins_key_by_key() -> None:
    first, second = parse_override("quant.calibrator=mse"), parse_override("quant.percentile=99.9")
    merged = merge_overrides([first, second, parse_override("quant.calibrator=entropy")])
    assert merged == {"quant": {"calibrator": "entropy", "percentile": 99.9}}
    assert first == {"quant": {"calibrator": "mse"}} and second == {"quant": {"percentile": 99.9}}  # inputs untouched
    assert merge_overrides([]) == {}
    target = override_target(load_target("cpu-x86-int8"), merged)
    assert (target.quant.calibrator, target.quant.percentile) == ("entropy", 99.9)


# --- serialisation and immutability ---------------------------------------------------------


@pytest.mark.parametrize("name", ["cpu-x86-int8", "tflite-int8", "cuda-fp16"])
def test_to_dict_is_json_and_round_trips(name: str) -> None:
    target = load_target(name)
    data = json.loads(json.dumps(target.to_dict()))
    assert data["name"] == target.name and data["source"] == target.source
    assert data["runtime"] == target.runtime and data["precision"] == target.precision
    assert data["passes"] == list(target.passes)
    assert data["options"] == dict(target.options)
    assert data["thresholds"] == dict(target.thresholds)
    assert data["verify"] == dict(target.verify)
    assert data["device"]["isa" if "isa" in target.device else "arch"] is not None
    if target.quant is None:
        assert data["quant"] is None
    else:
        assert data["quant"]["activations"] == dataclasses.asdict(target.quant.activations)
        assert data["quant"]["ops"] == list(target.quant.ops)


def test_to_dict_serialises_toml_dates_in_extras(tmp_path: Path) -> None:
    path = write(tmp_path, "dated.toml", MINIMAL + "[device]\nmeasured = 2025-01-31\n")
    assert json.loads(json.dumps(load_target(path).to_dict()))["device"]["measured"] == "2025-01-31"


def test_target_is_immutable_but_picklable() -> None:
    target = load_target("cpu-x86-int8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.precision = "fp32"  # type: ignore[misc]
    with pytest.raises(TypeError):
        target.options["threads"] = 8  # type: ignore[index]
    assert pickle.loads(pickle.dumps(target)) == target
    assert dataclasses.asdict(target)["quant"]["weights"]["dtype"] == "int8"


# --- host checks ----------------------------------------------------------------------------


@pytest.mark.skipif(not host_is_x86_64(), reason="the cpu-x86 targets run only on x86-64 hosts")
@pytest.mark.parametrize("name", ["cpu-x86-fp32", "cpu-x86-avx2-int8"])
def test_cpu_x86_targets_run_here(name: str) -> None:
    assert load_target(name).runnable_here() == (True, "ok")


@pytest.mark.skipif(not host_is_x86_64(), reason="x86 ISA flags")
def test_vnni_target_runs_only_where_the_cpu_has_vnni() -> None:
    flags = host_cpu_flags() or frozenset()
    ok, reason = load_target("cpu-x86-int8").runnable_here()
    assert ok == bool({"avx512_vnni", "avx_vnni"} & flags)
    assert ok or "avx512_vnni|avx_vnni" in reason


@pytest.mark.skipif(not host_is_x86_64(), reason="x86 ISA flags")
def test_host_target_picks_the_most_specific_runnable_one() -> None:
    chosen = host_target("onnxruntime", "int8")
    assert chosen.runnable_here()[0]
    has_vnni = bool({"avx512_vnni", "avx_vnni"} & (host_cpu_flags() or frozenset()))
    assert chosen.name == ("cpu-x86-int8" if has_vnni else "cpu-x86-avx2-int8")


def test_device_mismatch_names_the_missing_feature() -> None:
    assert device_mismatch({"arch": platform.machine(), "isa": ["no_such_feature|nor_this"]}) == (
        "needs CPU features no_such_feature|nor_this (this host lacks them)"
    ) or host_cpu_flags() is None
    assert device_mismatch({}) is None


@pytest.mark.skipif(not host_is_x86_64(), reason="asserts what an x86-64 host lacks")
def test_arm_target_is_not_runnable_on_x86() -> None:
    ok, reason = load_target("cpu-arm64-int8").runnable_here()
    assert not ok and reason == "built for aarch64, this host is x86_64"


@pytest.mark.parametrize("name", ["tensorrt-fp16", "tensorrt-int8"])
def test_tensorrt_targets_say_why_they_cannot_run(name: str) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    ok, reason = load_target(name).runnable_here()
    assert not ok and reason == "needs tensorrt (not installed)"


def test_missing_provider_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "npu.toml", MINIMAL + '[options]\nprovider = "MadeUpExecutionProvider"\n')
    ok, reason = load_target(path).runnable_here()
    assert not ok and "MadeUpExecutionProvider" in reason


def test_arch_aliases_are_normalised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "AMD64")
    path = write(tmp_path, "win.toml", MINIMAL + '[device]\narch = "x86_64"\n')
    assert load_target(path).runnable_here() == (True, "ok")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    ok, reason = load_target(path).runnable_here()
    assert not ok and reason == "built for x86_64, this host is aarch64"


def test_target_type_is_exported() -> None:
    assert isinstance(load_target("cpu-x86-fp32"), Target)


@pytest.mark.parametrize("text, needle", [("quant=5", "'quant' must be a table"),
                                          ("quant.calibrator=[1]", "quant.calibrator"),
                                          ("colour=3", "unknown key 'colour'")])
def test_overrides_are_checked_when_merged(text: str, needle: str) -> None:
    with pytest.raises(TargetError, match=needle):
        merge_overrides([parse_override(text)])


def test_a_number_beyond_any_float_is_a_bad_value(tmp_path: Path) -> None:
    path = write(tmp_path, "leaf.toml", f'inherits = "cpu-x86-fp32"\n[verify]\nrtol = {10**400}\n')
    with pytest.raises(TargetError, match="verify.rtol"):
        load_target(path)
