"""`bench`: measure an artifact against its float baseline and produce the `edgec.bench/1` report."""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgec.artifact import MANIFEST, check_writable, read_manifest, strict_json, utc_now, versions, write_text_atomic
from edgec.data import load_labels, load_samples, random_samples
from edgec.errors import BadInputError
from edgec.frontends import FORMATS, file_input_specs
from edgec.harness.run import ModelRef, benchmark
from edgec.integrity import check_artifact, vet_baseline
from edgec.limits import MAX_THREADS, utf8_path
from edgec.runtime.base import runtime_class
from edgec.target import device_mismatch

logger = logging.getLogger(__name__)

__all__ = ["bench", "REPORT_SCHEMA", "RANDOM_BENCH_SAMPLES", "resolve_artifact"]

REPORT_SCHEMA = "edgec.bench/1"
#: Random feeds used when no --data is given (latency and drift on noise; no accuracy).
RANDOM_BENCH_SAMPLES = 16
#: Runtime options that change how a model runs, copied from the target descriptor.
_RUNTIME_OPTIONS = ("provider", "graph_optimization")


def resolve_artifact(path: str | os.PathLike[str]) -> tuple[ModelRef, dict[str, Any] | None]:
    """An artifact is a `compile` output dir (with manifest) or a plain `.onnx` file."""
    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise BadInputError(f"artifact: {path} is a directory without {MANIFEST}; pass a compile output dir or an .onnx")
        manifest = read_manifest(path)
        descriptor = manifest["target"]["descriptor"]
        options = {k: v for k, v in descriptor.get("options", {}).items() if k in _RUNTIME_OPTIONS}
        model = ModelRef(path / manifest["artifact"]["file"], descriptor["runtime"], options, "artifact")
        return model, manifest
    if not path.is_file():
        raise BadInputError(f"artifact: no such file or directory {path}")
    if path.suffix.lower() != ".onnx":
        raise BadInputError(f"artifact: {path} is neither a compile output dir nor an .onnx file")
    return ModelRef(path, "onnxruntime", {}, "artifact"), None


def _baseline(baseline: str | os.PathLike[str] | None, manifest: dict[str, Any] | None, artifact_dir: Path,
              baseline_from: str | None) -> ModelRef | None:
    """The float reference: an explicit file, else the manifest's source (in its own framework when
    that is installed or asked for, else the imported float ONNX kept in the artifact)."""
    if baseline is not None:
        path = Path(baseline)
        if not path.is_file():
            raise BadInputError(f"baseline: no such file {path}")
        return ModelRef(path, "onnxruntime", {}, "baseline")
    if manifest is None:
        return None
    source = manifest["source"]
    path = artifact_dir / source["path"]  # an absolute path stays as it is; a kept copy is relative
    runtime = FORMATS[source.get("format", "onnx")].runtime
    kept_onnx = artifact_dir / source["onnx"] if source.get("onnx") else None
    if runtime is not None and kept_onnx is not None and (
        baseline_from == "onnx" or not path.exists()
        or (baseline_from is None and not runtime_class(runtime).is_available())
    ):
        if baseline_from != "onnx":
            logger.warning("baseline: using the imported float ONNX %s (the source %s cannot run here)", kept_onnx, path)
        path, runtime = kept_onnx, None
    if not path.exists():
        raise BadInputError(f"baseline: the source model {path} named in the manifest is gone; pass --baseline MODEL.onnx")
    return ModelRef(path, runtime or "onnxruntime", {}, "baseline")


def _default_threads(manifest: dict[str, Any] | None) -> int:
    configured = (manifest or {}).get("target", {}).get("descriptor", {}).get("options", {}).get("threads", 0)
    return int(configured) or (os.cpu_count() or 1)


def bench(
    artifact: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    baseline: str | os.PathLike[str] | None = None,
    baseline_from: str | None = None,
    threads: int | None = None,
    warmup: int = 10,
    runs: int = 100,
    json_path: str | os.PathLike[str] | None = None,
    trust_source: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark `artifact` side by side with its float baseline; returns (and optionally writes) the report.

    Args:
        artifact: a `compile` output directory or a plain `.onnx` file.
        data: `.npz` samples keyed by input name (default: seeded random feeds, no accuracy).
        labels: `.npy` integer class per sample; needs `data`.
        baseline: float model to compare with (default: the source model named in the manifest).
        baseline_from: for non-ONNX sources, "source" (its own framework) or "onnx" (the imported float
            ONNX kept in the artifact); default: "source" when that framework is installed.
        threads: intra-op threads for both models (default: the target's, else all cores).
        warmup, runs: untimed and timed inferences per model (batch 1).
        json_path: where to write the report (atomically).
        trust_source: run a source baseline that runs code when loaded, if the artifact was compiled
            with trust too (`edgec.trust`).
    """
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
    reference = vet_baseline(_baseline(baseline, manifest, Path(artifact), baseline_from), manifest, Path(artifact),
                             explicit=baseline is not None, baseline_from=baseline_from, trust_source=trust_source)
    specs = file_input_specs(model.path)
    samples = load_samples(data, specs, what="data") if data is not None else random_samples(specs, RANDOM_BENCH_SAMPLES)
    label_array: np.ndarray | None = load_labels(labels, len(samples)) if labels is not None else None
    threads = threads if threads else _default_threads(manifest)
    warnings = []
    mismatch = device_mismatch(manifest["target"]["descriptor"].get("device", {})) if manifest else None
    if mismatch:
        warnings.append(f"target '{manifest['target']['name']}' {mismatch}: figures are not representative of it")
        if progress:
            progress(f"warning: {warnings[-1]}")
    measured = benchmark(model, reference, samples, threads=threads, warmup=warmup, runs=runs, labels=label_array,
                         progress=progress)
    report = {
        "schema": REPORT_SCHEMA,
        "target": manifest["target"]["name"] if manifest else "unspecified",
        "created_utc": utc_now(),
        "artifact": str(model.path),
        "baseline_model": str(reference.path) if reference else None,
        "data": str(data) if data is not None else "random",
        "samples": len(samples),
        "warmup": warmup,
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "versions": versions()},
        "warnings": warnings,
        **measured,
    }
    if json_path is not None:
        write_text_atomic(json_path, strict_json(report))
    return report
