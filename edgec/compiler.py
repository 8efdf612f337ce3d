"""`compile`: the one orchestrator of frontend -> passes -> calibration/Q-DQ -> runtime artifact."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

from edgec import __version__
from edgec.artifact import MANIFEST_SCHEMA, sha256_file, sha256_path, size_on_disk, utc_now, versions, write_artifact
from edgec.data import load_samples, random_samples
from edgec.errors import BadInputError, RuntimeUnavailableError, TargetError, first_line
from edgec.frontends import ImportOptions, Imported, import_model, input_specs, model_files
from edgec.frontends.check import verify_import
from edgec.frontends.specs import fix_shapes, parse_tensor_spec
from edgec.passes.cleanup import InferShapesPass, RemoveUnusedPass
from edgec.passes.manager import PassRecord, count_nodes
from edgec.passes.opset import upgrade_opset
from edgec.passes.pipeline import optimize
from edgec.passes.verify import VerifyInstrument
from edgec.quant import qdq
from edgec.quant.calibrator import calibrate
from edgec.quant.table import CalibrationTable
from edgec.runtime.base import Feeds, TensorSpec
from edgec.target import Target, list_targets, load_target

__all__ = ["compile", "CompileResult", "ARTIFACT_MODEL", "RANDOM_CALIBRATION_SAMPLES"]

logger = logging.getLogger(__name__)

ARTIFACT_MODEL = "model.onnx"
#: The imported float model, kept for non-ONNX sources: a bench baseline where the framework is absent.
SOURCE_ONNX = "source.onnx"
CALIBRATION_FILE = "calibration.json"
#: Samples drawn for `calib="random"` (latency-only work: the scales mean nothing for accuracy).
RANDOM_CALIBRATION_SAMPLES = 16
#: Samples each pass is verified on (`verify=True`): enough to catch a broken rewrite, cheap per pass.
VERIFY_SAMPLES = 8
#: Per-axis QuantizeLinear/DequantizeLinear need opset 13.
_MIN_QDQ_OPSET = 13
#: (runtime, precision) pairs this version builds.
_BUILDS = {("onnxruntime", "fp32"), ("onnxruntime", "int8")}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CompileResult:
    output_dir: Path
    model_path: Path
    manifest: dict[str, Any]


def _check_buildable(target: Target) -> None:
    """Say which runtime or feature is missing before any work is done."""
    ok, reason = target.runnable_here()
    if target.runtime != "onnxruntime":
        status = "" if ok else f" ({reason})"
        buildable = ", ".join(t.name for t in list_targets() if (t.runtime, t.precision) in _BUILDS)
        raise RuntimeUnavailableError(
            f"target '{target.name}' needs the {target.runtime} runtime{status}; edgec {__version__} builds only "
            f"ONNX Runtime artifacts ({buildable})"
        )
    if (target.runtime, target.precision) not in _BUILDS:
        raise TargetError(
            f"target '{target.name}': precision '{target.precision}' for onnxruntime is not implemented in edgec "
            f"{__version__} (supported: fp32, int8)"
        )
    provider = target.options.get("provider", "CPUExecutionProvider")
    if provider != "CPUExecutionProvider" and not ok:
        raise RuntimeUnavailableError(f"target '{target.name}': {reason}")


def _calibration_samples(calib: str | os.PathLike[str] | None, model: ir.Model, target: Target) -> tuple[list[Feeds], str]:
    if calib is None:
        raise BadInputError(
            f"target '{target.name}' is int8 and needs calibration data: pass --calib DATA.npz"
            " (or --calib random for latency-only work)"
        )
    specs = input_specs(model)
    if str(calib) == "random":
        return random_samples(specs, RANDOM_CALIBRATION_SAMPLES), "random"
    return load_samples(calib, specs, what="calibration data"), str(Path(calib).resolve())


def _check_settings(target: Target) -> dict[str, Any]:
    """Tolerances and threads for every numerical check against the source (per pass, import)."""
    return {"rtol": float(target.verify["rtol"]), "atol": float(target.verify["atol"]),
            "threads": int(target.options.get("threads", 0))}


def _verification_feeds(model: ir.Model, samples: Sequence[Feeds], source: str | None) -> list[Feeds]:
    """At most VERIFY_SAMPLES of the calibration data, else seeded random feeds of the model's inputs."""
    if source not in (None, "random"):
        return list(samples[:VERIFY_SAMPLES])
    return random_samples(input_specs(model), VERIFY_SAMPLES)


def _quantize(model: ir.Model, target: Target, samples: Sequence[Feeds], source: str, progress: Progress) -> tuple[CalibrationTable, dict[str, Any]]:
    scheme = target.quant
    assert scheme is not None, "int8 targets always carry a quant scheme (validated by edgec.target)"
    if scheme.activations.granularity != "per_tensor":
        raise TargetError(f"target '{target.name}': per-channel activation quantization is not supported")
    InferShapesPass()(model)  # the planner quantizes only values whose float type is known
    quant_plan = qdq.plan(model, scheme.ops, asymmetric_activations=not scheme.activations.symmetric)
    tensors = quant_plan.calibration_tensors
    progress(f"calibrating {len(tensors)} tensors on {len(samples)} samples ({scheme.calibrator})")
    step = max(1, len(samples) // 10)

    def report(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            progress(f"  calibration {done}/{total}")

    table = calibrate(model, tensors, samples, calibrator=scheme.calibrator, percentile=scheme.percentile,
                      levels=256, symmetric=scheme.activations.symmetric,
                      source="random" if source == "random" else "data",
                      threads=int(target.options.get("threads", 0)), progress=report)
    stats = qdq.apply(model, quant_plan, table, scheme)
    RemoveUnusedPass()(model)
    TopologicalSortPass()(model)
    return table, stats


def _import_source(
    model: str | os.PathLike[str] | Any,
    example_inputs: Sequence[Any] | None,
    fmt: str | None,
    options: ImportOptions,
    workdir: Path,
) -> tuple[Path, Imported]:
    """Bring the source into the IR; an in-memory `torch.nn.Module` is first saved as an ExportedProgram."""
    if isinstance(model, (str, os.PathLike)):
        return Path(model), import_model(model, fmt=fmt, options=options)
    if example_inputs is None:
        raise BadInputError("compiling a Python model object needs example_inputs (a tuple of tensors)")
    from edgec.frontends.torch_frontend import save_module

    if not isinstance(example_inputs, (tuple, list)):  # one tensor, not a sequence of its rows
        example_inputs = (example_inputs,)
    path = save_module(model, tuple(example_inputs), workdir / "source.pt2")
    return path, import_model(path, fmt="torch-export", options=options)


def compile(  # noqa: A001 - the public verb of the API, mirrors `edgec compile`
    model: str | os.PathLike[str] | Any,
    target: str | os.PathLike[str] | Target,
    *,
    calib: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    passes: Sequence[str] | None = None,
    skip_passes: Sequence[str] = (),
    verify: bool = False,
    source_format: str | None = None,
    inputs: Sequence[TensorSpec | str] = (),
    fix_shape: Sequence[TensorSpec | str] = (),
    verify_import: bool = True,
    example_inputs: Sequence[Any] | None = None,
    progress: Progress | None = None,
) -> CompileResult:
    """Compile `model` for `target` into an artifact directory.

    The directory holds `model.onnx` and `manifest.json`, plus `calibration.json` (int8),
    `source.onnx` (the imported float model, for non-ONNX sources) and `source.pt2` (an in-memory
    module's only copy).

    Args:
        model: path of the source model (ONNX, .pt2, TorchScript, SavedModel dir, .keras, .tflite), or a
            `torch.nn.Module` together with `example_inputs`.
        target: built-in target name, path of a descriptor `.toml`, or a loaded `Target`.
        calib: `.npz` calibration data keyed by input name, or "random" (latency-only); int8 only.
        output_dir: where the artifact goes; default `<model stem>-<target name>` beside the model.
        force: replace an existing output directory.
        passes: override the target's pass pipeline; `skip_passes` removes passes from it.
        verify: run the model before and after every pass (on `calib` data, else random feeds) and
            stop with `VerificationError` naming the first pass whose outputs leave the target's
            `verify` tolerance.
        source_format: force the input format (see `edgec.frontends.FORMATS`) instead of detecting it.
        inputs: declared inputs `NAME:SHAPE[:DTYPE]` for frameworks without static shapes.
        fix_shape: make inputs static, `NAME:SHAPE` (targets that need static shapes).
        verify_import: run the source in its own framework and the imported ONNX on the same feeds,
            and stop when they differ beyond the target's `verify` tolerance.
        example_inputs: for a `torch.nn.Module`, the tensors (or one tensor) to export it with.
        progress: receives one-line status messages.
    """
    say = progress or (lambda message: logger.info(message))
    target = target if isinstance(target, Target) else load_target(target)
    _check_buildable(target)
    from_file = isinstance(model, (str, os.PathLike))
    if output_dir is None and not from_file:
        raise BadInputError("compiling a Python model object needs output_dir")
    output_dir = Path(output_dir) if output_dir is not None else _default_output_dir(Path(model), target)
    if output_dir.exists() and not force:
        raise BadInputError(f"output directory {output_dir} already exists; pass --force to replace it")
    options = ImportOptions(tuple(_spec(s) for s in inputs), int(target.options.get("opset", 17)))
    with tempfile.TemporaryDirectory(prefix="edgec-") as workdir:
        say(f"loading {model if from_file else type(model).__name__}")
        source_path, imported = _import_source(model, example_inputs, source_format, options, Path(workdir))
        graph = imported.model
        fix_shapes(graph, [_spec(s) for s in fix_shape], target.options.get("fix_dims"))
        int8 = target.precision == "int8"
        uses_calib = int8 or verify or (verify_import and imported.format.runtime is not None)
        needs_calib = int8 or (calib is not None and uses_calib)  # otherwise checks run on random feeds
        samples, calib_source = _calibration_samples(calib, graph, target) if needs_calib else ([], None)
        if calib is not None and not uses_calib:
            say(f"note: target '{target.name}' is {target.precision}; --calib is used only with --verify")
        check = _check_import(source_path, imported, graph, target, samples, calib_source, say) if verify_import else None
        source_onnx = ir.serde.serialize_model(graph) if imported.format.runtime else None
        nodes_source = count_nodes(graph)
        graph, records, verifier = _optimize(graph, target, passes, skip_passes, verify, samples, calib_source, say)
        nodes_optimized = count_nodes(graph)
        table, quant_stats = _quantize(graph, target, samples, calib_source, say) if int8 else (None, None)
        proto = ir.serde.serialize_model(graph)
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as exc:  # a bug in a pass, not user input: keep the cause
            raise TargetError(f"edgec produced an invalid model (please report): {first_line(exc)}") from exc

        def fill(staging: Path) -> dict[str, Any]:
            onnx.save_model(proto, staging / ARTIFACT_MODEL)
            if table is not None:
                (staging / CALIBRATION_FILE).write_text(table.to_json() + "\n", encoding="utf-8")
            if source_onnx is not None:
                onnx.save_model(source_onnx, staging / SOURCE_ONNX)
            if not from_file:  # the saved module is the only copy of the source: keep it, by relative name
                shutil.copyfile(source_path, staging / source_path.name)
            source = {
                **_source_record(source_path, kept=not from_file),
                "format": imported.format.name, "import_seconds": round(imported.seconds, 3),
                "import_verification": check, "onnx": SOURCE_ONNX if source_onnx is not None else None,
            }
            manifest = _manifest(target, source, staging / ARTIFACT_MODEL, records,
                                 (nodes_source, nodes_optimized, count_nodes(graph)), table, calib_source, quant_stats)
            manifest["verification"] = None if verifier is None else {
                "samples": len(verifier.samples), "data": "random" if calib_source in (None, "random") else calib_source,
                "rtol": verifier.rtol, "atol": verifier.atol, "max_abs_diff": verifier.max_abs_diff}
            return manifest

        say(f"writing {output_dir}")
        manifest = write_artifact(output_dir, fill, force=force)
    return CompileResult(output_dir, output_dir / ARTIFACT_MODEL, manifest)


def _default_output_dir(source: Path, target: Target) -> Path:
    """`<model stem>-<target>` beside the model (a target name may hold '/', as in "rpi/4b")."""
    source = source.resolve()
    return source.parent / f"{source.stem or 'model'}-{target.name.replace('/', '_')}"


def _spec(spec: TensorSpec | str) -> TensorSpec:
    return spec if isinstance(spec, TensorSpec) else parse_tensor_spec(spec)


def _check_import(source: Path, imported: Imported, graph: ir.Model, target: Target, samples: Sequence[Feeds],
                  calib_source: str | None, say: Progress) -> dict[str, Any] | None:
    """Import verification for non-ONNX sources, on the calibration data or seeded random feeds."""
    if imported.format.runtime is None:
        return None
    feeds = _verification_feeds(graph, samples, calib_source)
    say(f"verifying the import against {imported.format.description} on {len(feeds)} samples")
    return verify_import(source, imported.format, graph, feeds, **_check_settings(target))


def _optimize(graph: ir.Model, target: Target, passes: Sequence[str] | None, skip_passes: Sequence[str], verify: bool,
              samples: Sequence[Feeds], calib_source: str | None, say: Progress
              ) -> tuple[ir.Model, list[PassRecord], VerifyInstrument | None]:
    names = [name for name in (passes if passes is not None else target.passes) if name not in set(skip_passes)]
    say(f"optimizing: {', '.join(names) or 'no passes'}" + (" (verifying each pass)" if verify else ""))
    if target.precision == "int8":
        graph = upgrade_opset(graph, _MIN_QDQ_OPSET)
    verifier = None
    if verify:
        verifier = VerifyInstrument(_verification_feeds(graph, samples, calib_source), **_check_settings(target))
    graph, records = optimize(graph, names, [verifier] if verifier else (), target=target)
    return graph, records, verifier


def _source_record(source: Path, *, kept: bool) -> dict[str, Any]:
    """Where the source is (a copy kept in the artifact is named relative to it), its hash and size;
    an ONNX source's external-data files count as part of it."""
    files = model_files(source)
    return {"path": source.name if kept else str(source.resolve()), "sha256": sha256_path(*files),
            "size_bytes": sum(size_on_disk(path) for path in files)}


def _manifest(
    target: Target,
    source: dict[str, Any],
    artifact: Path,
    records: Sequence[Any],
    node_counts: tuple[int, int, int],
    table: CalibrationTable | None,
    calib_source: str | None,
    quant_stats: dict[str, Any] | None,
) -> dict[str, Any]:
    calibration = None
    if table is not None:
        calibration = {**table.summary(), "data": calib_source, "file": CALIBRATION_FILE}
        if calib_source != "random":
            calibration["data_sha256"] = sha256_file(calib_source)
    return {
        "schema": MANIFEST_SCHEMA,
        "edgec_version": __version__,
        "created_utc": utc_now(),
        "target": {"name": target.name, "source": target.source, "descriptor": target.to_dict()},
        "source": source,
        "artifact": {"file": ARTIFACT_MODEL, "runtime": target.runtime, "precision": target.precision,
                     "sha256": sha256_file(artifact), "size_bytes": artifact.stat().st_size},
        "passes": [record.to_dict() for record in records],
        "nodes": dict(zip(("source", "optimized", "artifact"), node_counts)),
        "calibration": calibration,
        "quantization": quant_stats,
        "versions": versions(),
    }
