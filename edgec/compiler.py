"""`compile`: the one orchestrator of frontend -> passes -> calibration/Q-DQ -> runtime artifact."""

from __future__ import annotations

import difflib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass

from edgec import __version__, backends
from edgec.artifact import (MANIFEST_SCHEMA, check_output_dir, clean_stale, output_lock, sha256_file, sha256_path,
                            size_on_disk, utc_now, versions, write_artifact)
from edgec.data import load_labels, load_samples, random_samples
from edgec.errors import AccuracyBudgetError, BadInputError, RuntimeUnavailableError, TargetError, first_line
from edgec.frontends import ImportOptions, Imported, import_model, input_specs, model_files
from edgec.frontends.check import verify_import
from edgec.frontends.specs import fix_shapes, parse_tensor_spec
from edgec.passes.manager import PassRecord, count_nodes
from edgec.passes.opset import upgrade_opset
from edgec.passes.pipeline import optimize
from edgec.passes.verify import VerifyInstrument
from edgec.harness.run import exit_if_spawning
from edgec.int8 import Int8Request, Int8Result, quantize
from edgec.limits import FROM_ENV, bounded_steps
from edgec.quant.fallback import Budget
from edgec.tensors import Feeds, TensorSpec
from edgec.target import Target, list_targets, load_target, override_target

__all__ = ["compile", "builds", "CompileResult", "RANDOM_CALIBRATION_SAMPLES"]

logger = logging.getLogger(__name__)

#: The imported float model, kept for every source format: `bench`'s float baseline, inside the artifact
#: (bench loads nothing outside it unless the user names the file).
SOURCE_ONNX = "source.onnx"
CALIBRATION_FILE = "calibration.json"
SENSITIVITY_FILE = "sensitivity.json"
#: Samples drawn for `calib="random"` (latency-only work: the scales mean nothing for accuracy).
RANDOM_CALIBRATION_SAMPLES = 16
#: Samples each pass is verified on (`verify=True`): enough to catch a broken rewrite, cheap per pass.
VERIFY_SAMPLES = 8
#: Per-axis QuantizeLinear/DequantizeLinear need opset 13.
_MIN_QDQ_OPSET = 13

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CompileResult:
    output_dir: Path
    model_path: Path
    manifest: dict[str, Any]
    #: with `report` or a budget: the ten most harmful quantized layers, as a table
    worst_layers: str | None = None


def builds(target: Target) -> tuple[bool, str]:
    """Whether this version of edgec can build `target` at all (on any host), and if not, why.

    Building is separate from running: whether the target's runtime and ISA are on this host is
    `Target.runnable_here`.
    """
    backend = backends.find(target.runtime)
    if backend is None:
        return False, f"edgec {__version__} builds no {target.runtime} artifacts yet"
    if target.precision not in backend.precisions:
        return False, f"edgec {__version__} builds no {target.precision} {backend.title} artifacts yet"
    missing = backend.build_missing()
    if missing:
        return False, f"building {backend.title} artifacts {missing}"
    return True, ""


def _check_buildable(target: Target) -> None:
    """Say which runtime or feature is missing before any work is done."""
    buildable, why = builds(target)
    if not buildable:
        backend = backends.find(target.runtime)
        known_precision = backend is not None and target.precision in backend.precisions
        error = TargetError if backend is not None and not known_precision else RuntimeUnavailableError
        others = ", ".join(t.name for t in list_targets() if builds(t)[0])
        raise error(f"target '{target.name}' cannot be built: {why} (buildable: {others})")
    missing = backends.get(target.runtime).verify_missing(target)
    if missing:
        raise RuntimeUnavailableError(f"target '{target.name}': {missing}")


def _calibration_samples(calib: str | os.PathLike[str] | None, model: ir.Model, target: Target,
                         input_map: Mapping[str, str] | None) -> tuple[list[Feeds], str]:
    if calib is None:
        raise BadInputError(
            f"target '{target.name}' is {target.precision} and needs calibration data: pass --calib DATA.npz"
            " (or --calib random for latency-only work)"
        )
    specs = input_specs(model)
    if str(calib) == "random":
        return random_samples(specs, RANDOM_CALIBRATION_SAMPLES), "random"
    return load_samples(calib, specs, what="calibration data", input_map=input_map), str(Path(calib).resolve())


def _check_settings(target: Target) -> dict[str, Any]:
    """Tolerances and threads for every numerical check against the source (per pass, import)."""
    return {"rtol": float(target.verify["rtol"]), "atol": float(target.verify["atol"]),
            "threads": int(target.options.get("threads", 0))}


def _verification_feeds(model: ir.Model, samples: Sequence[Feeds], source: str | None) -> list[Feeds]:
    """At most VERIFY_SAMPLES of the calibration data, else seeded random feeds of the model's inputs."""
    if source not in (None, "random"):
        return list(samples[:VERIFY_SAMPLES])
    return random_samples(input_specs(model), VERIFY_SAMPLES)


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


@bounded_steps
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
    precision: str | None = None,
    calibrator: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    keep_float: Sequence[str] = (),
    report: bool = False,
    max_accuracy_drop: float | None = None,
    min_cosine: float | None = None,
    labels: str | os.PathLike[str] | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    input_map: Mapping[str, str] | None = None,
    slim: bool = False,
    trust_source: bool = False,
    step_timeout_s: float | str | None = FROM_ENV,
    progress: Progress | None = None,
) -> CompileResult:
    """Compile `model` for `target` into an artifact directory.

    The directory holds the backend's model file (`model.onnx` for ONNX Runtime, `model.tflite` for
    TFLite) and `manifest.json`, plus `calibration.json` (int8),
    `source.onnx` (the imported float model: bench's baseline) and `source.pt2` (an in-memory
    module's only copy); `slim` leaves out the last two.

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
        precision: override the target's precision: "fp32", "int8", or "auto" (int8 only where it
            is measurably faster than fp32 here).
        calibrator: override the target's calibrator ("minmax", "percentile", "entropy", "mse").
        overrides: a partial target descriptor merged over the target (e.g. {"quant": {"dynamic_ops": ["MatMul"]}}).
        keep_float: node names or op types never quantized (added to the target's `quant.keep_float`).
        report: write `sensitivity.json` (per-layer quantization error, alone and cumulative).
        max_accuracy_drop: accuracy budget in percentage points of top-1 accuracy (needs `labels`);
            the most sensitive nodes are kept float until it holds.
        min_cosine: accuracy budget as the minimum output cosine to the float model on every sample.
        labels: `.npy` integer class per evaluation sample.
        eval_data: `.npz` samples the budget and the report are measured on (default: `calib`).
        input_map: {.npz key: model input name} for data saved under other names than the model's inputs.
        slim: keep only what deployment needs (the model, manifest, calibration table): no `source.onnx`
            or saved module copy; `bench` then needs `--baseline` for a float comparison.
        trust_source: load a source that runs code when loaded (TorchScript, SavedModel, a `.pt2`
            holding pickles; see `edgec.trust`); recorded in the manifest.
        step_timeout_s: seconds each step (loading, verifying, optimizing, calibrating, writing) may take, as
            in the CLI (default: `EDGEC_STEP_TIMEOUT_S`, else 1800; None: no limit); see `edgec.limits`.
        progress: receives one-line status messages.

    Raises:
        AccuracyBudgetError: no int8 model met the budget; the best attempt was still written.
        StepTimeoutError: a step ran past `step_timeout_s` (nothing is left at `output_dir`).
    """
    exit_if_spawning()
    say = progress or (lambda message: logger.info(message))
    target = target if isinstance(target, Target) else load_target(target)
    target = override_target(target, _target_overrides(target, overrides, precision, calibrator, keep_float))
    _check_buildable(target)
    budget = Budget(max_accuracy_drop, min_cosine)
    _check_budget_args(target, budget, labels, report)
    from_file = isinstance(model, (str, os.PathLike))
    if output_dir is None and not from_file:
        raise BadInputError("compiling a Python model object needs output_dir")
    output_dir = Path(output_dir) if output_dir is not None else _default_output_dir(Path(model), target)
    read = [*(model_files(model) if from_file else ()), *(p for p in (calib, eval_data, labels) if p not in (None, "random"))]
    check_output_dir(output_dir, force=force, inputs=read)
    clean_stale(Path(tempfile.gettempdir()), "edgec-")
    options = ImportOptions(tuple(_spec(s) for s in inputs), int(target.options.get("opset", 17)), trust_source)
    with output_lock(output_dir), tempfile.TemporaryDirectory(prefix=f"edgec-{os.getpid()}-") as workdir:
        say(f"loading {model if from_file else type(model).__name__}")
        source_path, imported = _import_source(model, example_inputs, source_format, options, Path(workdir))
        graph = imported.model
        fix_shapes(graph, [_spec(s) for s in fix_shape], target.options.get("fix_dims"))
        int8 = target.precision in ("int8", "auto")
        uses_calib = int8 or verify or (verify_import and imported.format.runtime is not None)
        needs_calib = int8 or (calib is not None and uses_calib)  # otherwise checks run on random feeds
        samples, calib_source = _calibration_samples(calib, graph, target, input_map) if needs_calib else ([], None)
        if calib is not None and not uses_calib:
            say(f"note: target '{target.name}' is {target.precision}; --calib is used only with --verify")
        check = (_check_import(source_path, imported, graph, target, samples, calib_source, say, trust_source)
                 if verify_import else None)
        source_onnx = ir.serde.serialize_model(graph) if not slim else None
        nodes_source = count_nodes(graph)
        graph, records, verifier = _optimize(graph, target, passes, skip_passes, verify, samples, calib_source, say)
        nodes_optimized = count_nodes(graph)
        quantized = None
        if int8:
            _check_keep_float(graph, keep_float)
            request = _int8_request(graph, budget, report, eval_data, labels, samples, calib_source,
                                    input_map)
            quantized = quantize(graph, target, samples, calib_source, request, say)
            graph = quantized.model
        try:
            onnx.checker.check_model(ir.serde.serialize_model(graph))
        except onnx.checker.ValidationError as exc:  # a bug in a pass, not user input: keep the cause
            raise TargetError(f"edgec produced an invalid model (please report): {first_line(exc)}") from exc
        backend = backends.get(target.runtime)
        precision = quantized.precision if quantized is not None else target.precision

        def fill(staging: Path) -> dict[str, Any]:
            say(f"exporting for {backend.title}")
            artifact, *_ = backend.export(graph, table=quantized.table if quantized is not None else None,
                                          precision=precision, staging=staging, target=target)
            if quantized is not None:
                (staging / CALIBRATION_FILE).write_text(quantized.table.to_json() + "\n", encoding="utf-8")
                if quantized.report_json is not None:
                    (staging / SENSITIVITY_FILE).write_text(quantized.report_json + "\n", encoding="utf-8")
            if source_onnx is not None:
                onnx.save_model(source_onnx, staging / SOURCE_ONNX)
            if not from_file and not slim:  # the saved module is the only copy of the source: keep it, by relative name
                shutil.copyfile(source_path, staging / source_path.name)
            source = {
                **_source_record(source_path, kept=not from_file),
                "format": imported.format.name, "import_seconds": round(imported.seconds, 3),
                "import_verification": check, "onnx": SOURCE_ONNX if source_onnx is not None else None,
                "trusted": trust_source,
            }
            if not from_file and slim:
                source["path"] = None  # the module's only saved copy was not kept
            manifest = _manifest(target, source, artifact, records,
                                 (nodes_source, nodes_optimized, count_nodes(graph)), quantized, calib_source)
            manifest["slim"] = slim
            manifest["verification"] = None if verifier is None else {
                "samples": len(verifier.samples), "data": "random" if calib_source in (None, "random") else calib_source,
                "rtol": verifier.rtol, "atol": verifier.atol, "max_abs_diff": verifier.max_abs_diff}
            return manifest

        say(f"writing {output_dir}")
        manifest = write_artifact(output_dir, fill, force=force, inputs=read)
    result = CompileResult(output_dir, output_dir / manifest["artifact"]["file"], manifest,
                           quantized.worst_layers if quantized is not None else None)
    if quantized is not None and quantized.budget_missed:
        raise AccuracyBudgetError(f"{quantized.budget_missed}; the best attempt and its report are in {output_dir}")
    return result


def _target_overrides(target: Target, overrides: Mapping[str, Any] | None, precision: str | None,
                      calibrator: str | None, keep_float: Sequence[str]) -> dict[str, Any]:
    """The descriptor keys the compile options change, merged over `overrides`."""
    merged: dict[str, Any] = {key: dict(value) if isinstance(value, Mapping) else value
                              for key, value in (overrides or {}).items()}
    if precision is not None:
        merged["precision"] = precision
    quant = dict(merged.get("quant", {}))
    if calibrator is not None:
        quant["calibrator"] = calibrator
    if keep_float:
        current = quant.get("keep_float", target.quant.keep_float if target.quant else ())
        quant["keep_float"] = [*current, *keep_float]
    if quant:
        merged["quant"] = quant
    return merged


def _check_budget_args(target: Target, budget: Budget, labels: Any, report: bool) -> None:
    if (budget or report) and target.precision == "fp32":
        raise BadInputError(f"target '{target.name}' is fp32: accuracy budgets and --report apply to int8 targets")
    if budget.max_accuracy_drop_pp is not None and labels is None:
        raise BadInputError("--max-accuracy-drop needs --labels (one integer class per evaluation sample)")
    if budget.max_accuracy_drop_pp is not None and budget.max_accuracy_drop_pp < 0:
        raise BadInputError(f"--max-accuracy-drop must be >= 0, got {budget.max_accuracy_drop_pp}")
    if budget.min_cosine is not None and not -1.0 <= budget.min_cosine <= 1.0:
        raise BadInputError(f"--min-cosine must be in [-1, 1], got {budget.min_cosine}")


def _check_keep_float(model: ir.Model, keep_float: Sequence[str]) -> None:
    """Every `--keep-float` entry must name a node or an op type of the optimized model.

    A typo would otherwise quantize the layer the user meant to protect, without a word. Nodes get
    the names the sensitivity report shows (unnamed ones are named first, as the quantizer does).
    """
    if not keep_float:
        return
    NameFixPass()(model)
    known = {node.name for node in model.graph.all_nodes()} | {node.op_type for node in model.graph.all_nodes()}
    unknown = [name for name in keep_float if name not in known]
    if unknown:
        near = sorted({match for name in unknown for match in difflib.get_close_matches(name, known, n=3, cutoff=0.6)})
        hint = f"; did you mean {', '.join(near)}?" if near else "; see the node names in sensitivity.json (--report)"
        raise BadInputError(f"--keep-float: {', '.join(unknown)} names no node or op type of the optimized model{hint}")


def _int8_request(model: ir.Model, budget: Budget, report: bool, eval_data: Any, labels: Any,
                  samples: Sequence[Feeds], calib_source: str | None, input_map: Mapping[str, str] | None
                  ) -> Int8Request:
    """Evaluation samples and labels for the budget and the report, checked against each other."""
    eval_samples = None
    if eval_data is not None:
        eval_samples = load_samples(eval_data, input_specs(model), what="evaluation data", input_map=input_map)
    elif (budget or report) and calib_source == "random":
        raise BadInputError("accuracy budgets and --report need real data: give --calib DATA.npz or --eval DATA.npz")
    count = len(eval_samples if eval_samples is not None else samples)
    label_array = load_labels(labels, count) if labels is not None else None
    return Int8Request(budget, eval_samples, label_array, report)


def _default_output_dir(source: Path, target: Target) -> Path:
    """`<model stem>-<target>` beside the model (a target name may hold '/', as in "rpi/4b")."""
    source = source.resolve()
    return source.parent / f"{source.stem or 'model'}-{target.name.replace('/', '_')}"


def _spec(spec: TensorSpec | str) -> TensorSpec:
    return spec if isinstance(spec, TensorSpec) else parse_tensor_spec(spec)


def _check_import(source: Path, imported: Imported, graph: ir.Model, target: Target, samples: Sequence[Feeds],
                  calib_source: str | None, say: Progress, trust_source: bool) -> dict[str, Any] | None:
    """Import verification for non-ONNX sources, on the calibration data or seeded random feeds."""
    if imported.format.runtime is None:
        return None
    feeds = _verification_feeds(graph, samples, calib_source)
    say(f"verifying the import against {imported.format.description} on {len(feeds)} samples")
    return verify_import(source, imported.format, graph, feeds, trust_source=trust_source, **_check_settings(target))


def _optimize(graph: ir.Model, target: Target, passes: Sequence[str] | None, skip_passes: Sequence[str], verify: bool,
              samples: Sequence[Feeds], calib_source: str | None, say: Progress
              ) -> tuple[ir.Model, list[PassRecord], VerifyInstrument | None]:
    names = [name for name in (passes if passes is not None else target.passes) if name not in set(skip_passes)]
    say(f"optimizing: {', '.join(names) or 'no passes'}" + (" (verifying each pass)" if verify else ""))
    if target.precision in ("int8", "auto"):
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
    quantized: Int8Result | None,
    calib_source: str | None,
) -> dict[str, Any]:
    calibration = None
    if quantized is not None:
        calibration = {**quantized.table.summary(), "data": calib_source, "file": CALIBRATION_FILE}
        if calib_source != "random":
            calibration["data_sha256"] = sha256_file(calib_source)
    return {
        "schema": MANIFEST_SCHEMA,
        "edgec_version": __version__,
        "created_utc": utc_now(),
        "target": {"name": target.name, "source": target.source, "descriptor": target.to_dict()},
        "source": source,
        "artifact": {"file": artifact.name, "runtime": target.runtime, "precision": quantized.precision if quantized is not None else target.precision,
                     "sha256": sha256_file(artifact), "size_bytes": artifact.stat().st_size},
        "passes": [record.to_dict() for record in records],
        "nodes": dict(zip(("source", "optimized", "artifact"), node_counts)),
        "calibration": calibration,
        "quantization": None if quantized is None else {**quantized.stats, "precision": quantized.precision,
                                                         "sensitivity": SENSITIVITY_FILE if quantized.report_json else None},
        "versions": versions(backends.get(target.runtime).distributions),
    }
