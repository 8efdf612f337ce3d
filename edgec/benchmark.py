"""`bench`: measure an artifact against its float baseline and produce the `edgec.bench/1` report."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgec import backends
from edgec.artifact import MANIFEST, check_writable, read_manifest, strict_json, utc_now, versions, write_text_atomic
from edgec.data import load_labels, load_samples, random_samples
from edgec.errors import BadInputError
from edgec.frontends import FORMATS
from edgec.frontends.specs import parse_tensor_spec
from edgec.gating import MIN_LATENCY_RUNS
from edgec.harness.run import ModelRef, benchmark, exit_if_spawning, shape_key
from edgec.integrity import check_artifact, kept_file, vet_framework
from edgec.limits import FROM_ENV, MAX_THREADS, bounded_steps, regular_file, utf8_path
from edgec.report.host import host_facts, provenance
from edgec.backends import runtime_class
from edgec.report.types import BENCH_SCHEMA as REPORT_SCHEMA, BenchReport
from edgec.tensors import TensorSpec
from edgec.target import device_mismatch

__all__ = ["bench", "BENCH_RUNS", "REPORT_SCHEMA", "RANDOM_BENCH_SAMPLES", "resolve_artifact"]

#: Default timed runs per model: `bench/gate_stats.py` found the regression gate's false alarms at 95%
#: (same model, 20 benches on a shared 2-core machine) at most 1 in 20 from 400 runs and none at 600.
BENCH_RUNS = 600
#: Random feeds used when no --data is given (latency and drift on noise; no accuracy).
RANDOM_BENCH_SAMPLES = 16


def _model_file(path: Path, what: str) -> ModelRef:
    """A plain model file, run by the backend whose runtime loads its suffix (`.onnx`, `.tflite`)."""
    backend = backends.for_file(path)
    if backend is None:
        raise BadInputError(f"{what}: {path} is not a model file edgec runs (suffixes: "
                            f"{', '.join(backends.file_suffixes())})")
    return ModelRef(path, backend.name, {}, what)


def resolve_artifact(path: str | os.PathLike[str]) -> tuple[ModelRef, dict[str, Any] | None]:
    """An artifact is a `compile` output dir (with manifest) or a plain model file (`.onnx`, `.tflite`)."""
    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise BadInputError(f"artifact: {path} is a directory without {MANIFEST}; pass a compile output dir"
                                " or a model file")
        manifest = read_manifest(path)
        descriptor = manifest["target"]["descriptor"]
        backend = backends.get(descriptor["runtime"])
        options = {k: v for k, v in descriptor.get("options", {}).items() if k in backend.runtime_options}
        model = ModelRef(path / manifest["artifact"]["file"], backend.name, options, "artifact")
        return model, manifest
    if not path.is_file():
        raise BadInputError(f"artifact: no such file or directory {path}")
    return _model_file(path, "artifact"), None


def _model_record(ref: ModelRef, precision: str | None, what: str) -> dict[str, Any]:
    """What a report says a measured model is: file, runtime, precision, and a phrase for people."""
    return {"path": str(ref.path), "runtime": ref.runtime, "precision": precision, "description": what}


def _baseline(baseline: str | os.PathLike[str] | None, manifest: dict[str, Any] | None, artifact_dir: Path,
              options: dict[str, Any]) -> tuple[ModelRef, dict[str, Any]] | None:
    """The float model on the artifact's own runtime: what a deployment decision compares with.

    An explicit file wins; else the float ONNX of the source kept in the artifact (`source.onnx`).
    Nothing outside the artifact is loaded unless the user names it: an artifact of an older edgec,
    whose manifest points at an ONNX source elsewhere, needs `--baseline`. It runs with the
    artifact's runtime options; a runtime that cannot load ONNX (LiteRT) leaves it to the backend that
    can, and the record says which ran it (pass an fp32 artifact of the artifact's runtime as
    `--baseline` to compare within one runtime).
    """
    if baseline is not None:
        path = Path(baseline)
        if not path.is_file():
            raise BadInputError(f"baseline: no such file {path}")
        ref = _model_file(path, "baseline")
        return ref, _model_record(ref, None, f"{path.name} (given with --baseline)")
    if manifest is None:
        return None
    source = manifest["source"]
    runtime = manifest["target"]["descriptor"]["runtime"]
    if not source["onnx"]:
        if manifest.get("slim") is True or FORMATS[source["format"]].runtime is not None:
            return None  # a slim artifact keeps no float ONNX of its source
        raise BadInputError(f"baseline: {artifact_dir} keeps no float ONNX of its source (an older edgec compiled it);"
                            f" bench loads no file outside the artifact unless you name it: pass --baseline"
                            f" {source['path'] or 'MODEL.onnx'}")
    path = kept_file(artifact_dir, manifest, source["onnx"], "the float ONNX source")
    ref = ModelRef(path, runtime, options, "baseline")
    if path.suffix.lower() not in backends.get(runtime).suffixes:
        ref = _model_file(path, "baseline")
    return ref, _model_record(ref, "fp32", f"{path.name} (the float ONNX of the source, kept in the artifact) on"
                                           f" {ref.runtime}")


def _framework(manifest: dict[str, Any] | None, artifact_dir: Path, baseline_from: str | None,
               named: str | os.PathLike[str] | None) -> tuple[ModelRef | None, dict[str, Any] | None, str | None]:
    """The source in its own framework (PyTorch eager, TensorFlow, LiteRT): an extra comparison.

    Returns (reference, its record, a warning when the comparison was wanted but cannot run).
    `baseline_from="onnx"` skips it; "source" makes it required. The source runs from the copy the
    artifact keeps (a compiled Python object's), else only from the file the user `named`.
    """
    if manifest is None or baseline_from == "onnx":
        if named is not None:
            raise BadInputError("--source names the source for the comparison in its own framework; it needs a"
                                " compile output dir, without --baseline-from onnx")
        return None, None, None
    source = manifest["source"]
    fmt = FORMATS[source["format"]]
    if fmt.runtime is None:
        if baseline_from == "source" or named is not None:
            raise BadInputError(f"{'--source' if named is not None else '--baseline-from source'}: the source is ONNX;"
                                " its float ONNX kept in the artifact already is the baseline")
        return None, None, None
    recorded = source["path"]
    path, problem = None, None
    if named is not None:
        path = Path(named)
        if not path.is_dir():  # a SavedModel is a directory
            regular_file(path, "--source")
    elif recorded and not Path(recorded).is_absolute():  # a copy kept in the artifact, by relative name
        path = kept_file(artifact_dir, manifest, recorded, "the saved source")
    elif recorded is None:
        problem = "the artifact was compiled --slim from a Python object, whose saved copy it does not keep"
    else:
        problem = (f"the source model {recorded} lies outside the artifact, and bench loads it only when you name it:"
                   f" pass --source {recorded}")
    if path is not None and not runtime_class(fmt.runtime).is_available():
        problem = f"{fmt.runtime} is not installed here"
    if problem:
        if baseline_from == "source" or named is not None:
            raise BadInputError(f"{'--source' if named is not None else '--baseline-from source'}: {problem}")
        return None, None, f"no comparison with the {fmt.description} in its own framework: {problem}"
    ref = ModelRef(path, fmt.runtime, {}, "framework")
    return ref, _model_record(ref, "fp32", f"{path.name} ({fmt.description}) in {fmt.runtime}"), None


def _shaped(specs: list[TensorSpec], shapes: Sequence[TensorSpec]) -> list[TensorSpec]:
    """The model's input specs with `--shape` declarations applied: random feeds of those shapes.

    Only dynamic dims may change (a fixed dim is what the model computes with), and every name must
    be an input; like trtexec's `--shapes`, this is how a batch or sequence length is chosen.
    """
    by_name = {spec.name: spec for spec in specs}
    unknown = sorted({shape.name for shape in shapes} - set(by_name))
    if unknown:
        raise BadInputError(f"--shape names {unknown}, but the model's inputs are {list(by_name)}")
    for shape in shapes:
        model = by_name[shape.name]
        fixed = [d for d in shape.shape if isinstance(d, int)]
        if len(shape.shape) != len(model.shape) or len(fixed) != len(shape.shape) or min(fixed, default=1) < 1:
            raise BadInputError(f"--shape {shape.name}: give {len(model.shape)} positive sizes, e.g."
                                f" {shape.name}:{'x'.join(str(d) if isinstance(d, int) else '1' for d in model.shape)}")
        for axis, (have, want) in enumerate(zip(model.shape, shape.shape)):
            if isinstance(have, int) and have != want:
                raise BadInputError(f"--shape {shape.name}: dim {axis} is fixed at {have} in the model")
        by_name[shape.name] = replace(model, shape=shape.shape)
    return [by_name[spec.name] for spec in specs]


def _batch(samples: Sequence[Mapping[str, np.ndarray]]) -> int | None:
    """The leading dim every input of every sample shares (the batch size), else None."""
    leading = {np.shape(value)[0] if np.ndim(value) else None for sample in samples for value in sample.values()}
    return leading.pop() if len(leading) == 1 and None not in leading else None


def _default_threads(manifest: dict[str, Any] | None) -> int:
    configured = (manifest or {}).get("target", {}).get("descriptor", {}).get("options", {}).get("threads", 0)
    return int(configured) or (os.cpu_count() or 1)


@bounded_steps
def bench(
    artifact: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    baseline: str | os.PathLike[str] | None = None,
    baseline_from: str | None = None,
    source: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    warmup: int = 10,
    runs: int = BENCH_RUNS,
    json_path: str | os.PathLike[str] | None = None,
    input_map: Mapping[str, str] | None = None,
    shapes: Sequence[str | TensorSpec] = (),
    trust_source: bool = False,
    step_timeout_s: float | str | None = FROM_ENV,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark `artifact` side by side with its float baseline; returns (and optionally writes) the report.

    Args:
        artifact: a `compile` output directory or a plain model file (`.onnx`, `.tflite`).
        data: `.npz` samples keyed by input name (default: seeded random feeds, no accuracy).
        labels: `.npy` integer class per sample; needs `data`.
        baseline: model file to compare with, `.onnx` or `.tflite` (default: the float ONNX of the source
            the artifact keeps, run on the artifact's runtime where it loads ONNX, else on the backend that
            does: `speedup_p50` is the gain of deploying the artifact instead). Nothing outside the
            artifact is loaded unless named here or in `source`.
        baseline_from: for non-ONNX sources, whether the source also runs in its own framework as an
            extra comparison (`framework_baseline`): "source" requires it, "onnx" skips it; default:
            when the source is at hand (kept in the artifact, or named by `source`) and its framework
            is installed (else a report warning).
        source: the source model file for that comparison, when the artifact does not keep it; it must
            be the file that was compiled (its sha256 is checked against the manifest).
        threads: intra-op threads for both models (default: the target's, else all cores).
        warmup, runs: untimed and timed inferences per model (batch 1).
        json_path: where to write the report (atomically).
        input_map: {.npz key: model input name} for data saved under other names than the model's inputs.
        shapes: `NAME:SHAPE` for the random feeds (without `data`): sizes of the model's dynamic dims,
            e.g. a batch of 8 or a sequence length of 128.
        trust_source: run a source that runs code when loaded (TorchScript, SavedModel) in its framework,
            if the artifact was compiled with trust too (`edgec.trust`).
        step_timeout_s: seconds each step (loading, each measuring round, drift) may take, as in the CLI
            (default: `EDGEC_STEP_TIMEOUT_S`, else 1800; None: no limit); past it `StepTimeoutError`.
        progress: receives one-line status messages.
    """
    exit_if_spawning()
    if runs < 1 or warmup < 0:
        raise BadInputError("--runs must be >= 1 and --warmup >= 0")
    if threads is not None and not 0 <= threads <= MAX_THREADS:
        raise BadInputError(f"--threads must be between 0 (the runtime's default) and {MAX_THREADS}")
    utf8_path(artifact, "artifact")
    if labels is not None and data is None:
        raise BadInputError("--labels needs --data (the samples the labels belong to)")
    if json_path is not None:
        check_writable(json_path, "--json")
    model, manifest = resolve_artifact(artifact)
    if manifest is not None:
        check_artifact(artifact, manifest)
    warnings = []
    found = _baseline(baseline, manifest, Path(artifact), dict(model.options))
    reference, reference_record = found if found else (None, None)
    if baseline is not None and source is not None:
        raise BadInputError("give --baseline or --source, not both: --baseline replaces the comparison with the source")
    framework, framework_record, skipped = (None, None, None) if baseline is not None else \
        _framework(manifest, Path(artifact), baseline_from, source)
    framework, skipped = vet_framework(framework, skipped, manifest, named=source is not None,
                                       baseline_from=baseline_from, trust_source=trust_source)
    specs = backends.get(model.runtime).file_input_specs(model.path)
    if shapes and data is not None:
        raise BadInputError("--shape sets the shapes of random inputs; with --data the samples carry their own")
    specs = _shaped(specs, [parse_tensor_spec(s) if isinstance(s, str) else s for s in shapes])
    if data is not None:
        samples = load_samples(data, specs, what="data", input_map=input_map)
    else:
        samples = random_samples(specs, RANDOM_BENCH_SAMPLES)
    label_array: np.ndarray | None = load_labels(labels, len(samples)) if labels is not None else None
    threads = threads if threads else _default_threads(manifest)
    mismatch = device_mismatch(manifest["target"]["descriptor"].get("device", {})) if manifest else None
    if mismatch:
        warnings.append(f"target '{manifest['target']['name']}' {mismatch}: figures are not representative of it")
    if skipped:
        warnings.append(skipped)
    if manifest is not None and reference is None:
        warnings.append("no float baseline: the artifact was compiled --slim and keeps no float ONNX of its source;"
                        " pass --baseline MODEL.onnx for speedup and drift")
    if runs < MIN_LATENCY_RUNS:
        warnings.append(f"only {runs} timed runs: latency and speedup are not significant, and the gate fails"
                        f" latency thresholds below {MIN_LATENCY_RUNS} (use --runs {MIN_LATENCY_RUNS} or more)")
    for warning in warnings:
        if progress:
            progress(f"warning: {warning}")
    measured = benchmark(model, reference, samples, threads=threads, warmup=warmup, runs=runs, labels=label_array,
                         framework=framework, progress=progress)
    if measured["baseline"] is not None:
        measured["baseline"]["model"] = reference_record
    if measured["framework_baseline"] is not None:
        measured["framework_baseline"]["model"] = framework_record
    report = BenchReport.from_dict({
        "schema": REPORT_SCHEMA,
        "target": manifest["target"]["name"] if manifest else "unspecified",
        "created_utc": utc_now(),
        "artifact": str(model.path),
        "artifact_model": _model_record(model, manifest["artifact"]["precision"] if manifest else None,
                                        f"{model.path.name} on {model.runtime}"),
        "baseline_model": str(reference.path) if reference else None,
        "data": str(data) if data is not None else "random",
        "samples": len(samples),
        "input_shapes": list(dict.fromkeys(shape_key(sample) for sample in samples)),
        "batch": _batch(samples),
        "warmup": warmup,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "versions": versions(), **host_facts()},
        "provenance": provenance(model.path, manifest, reference.path if reference else None),
        "thresholds": dict(manifest["target"]["descriptor"].get("thresholds") or {}) if manifest else None,
        "warnings": warnings,
        **measured,
    })
    if json_path is not None:
        write_text_atomic(json_path, strict_json(report.to_dict()))
    return report.to_dict()
