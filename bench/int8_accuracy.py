"""Accuracy-aware int8 side by side: edgec's calibrators, budgets and dynamic int8 vs every ONNX Runtime quantizer.

For each model and thread count, one interleaved `edgec.harness.measure` run times every variant in
its own fresh worker process (see `cpu_int8.measure_variants`), so every speedup and drift in the
table was measured under the same noise:

- `fp32`: the source model in ONNX Runtime (the yardstick);
- `ort-<calibrator>-<types>`: `quantize_static` (QDQ, per-channel weights, after `quant_pre_process`,
  `reduce_range` unless the CPU has VNNI) with MinMax, Entropy and Percentile, activations/weights
  u8s8 and s8s8;
- `ort-dynamic`: `quantize_dynamic` (per-channel int8 weights, same `reduce_range`);
- `edgec-<calibrator>`: `edgec.compile` for the host's int8 target with each of its calibrators;
- minilm only: `ort-bert-fp32` (ORT's transformer optimizer alone: the fp32 peer), `ort-bert-dynamic`
  (the same, then `quantize_dynamic`: its QAttention recipe), `edgec-dynamic` (dynamic int8
  MatMul/Gemm/Attention), `edgec-dyn-cos<F>` (the same with a `min_cosine` budget), `edgec-cos<F>` (the
  host's plain int8 target with a `min_cosine` budget: the per-node scheme search over static, dynamic,
  per-token and float) and `edgec-auto-cos<F>` (the same with `precision="auto"`). The int8 target runs
  `ort_transformer_fusions` (Attention -> QAttention, SkipLayerNorm, BiasGelu): `unfused-` variants skip
  it, `edgec-fused-fp32` is the fused float model; `smooth-` ones add explicit SmoothQuant (alpha
  SMOOTH_ALPHA, a Mul where no producer absorbs 1/s). Budgets are searched on half the calibration
  sentences and checked on the other half; the table's cosines are on the eval sentences, which no
  build saw;
- digits only: `edgec-auto` (`precision="auto"`) and `edgec-drop<PP>` (an accuracy budget).

A build that fails becomes a row saying why, not the end of the suite. See bench/README.md for how
to run it and read it. The heavy libraries are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchlib import (Column, Progress, default_cache_dir, fmt, parse_suite_args,
                      markdown_table, progress_printer)
from cpu_int8 import (Variant, Workload, digits_workload, host_info, measure_variants, mobilenetv2_workload,
                      ort_prepare, ort_static, prepared_workloads)
from minilm import minilm_onnx, sentences, tokenize

MODELS = ("minilm", "digits", "mobilenetv2")
ORT_METHODS = ("MinMax", "Entropy", "Percentile")
#: Activation and weight `QuantType` of each ORT static variant.
ORT_TYPES = {"u8s8": ("QUInt8", "QInt8"), "s8s8": ("QInt8", "QInt8")}
EDGEC_CALIBRATORS = ("minmax", "percentile", "entropy", "mse")
#: edgec's dynamic int8: weights int8 offline, activations quantized per call; nothing static.
DYNAMIC = {"quant": {"ops": [], "dynamic_ops": ["MatMul", "Gemm"]}}
#: The same with ONNX Runtime's fused Attention (QAttention) among the dynamic ops: ORT int8 targets
#: fuse attention by default (`ort_transformer_fusions`).
FUSED_DYNAMIC = {"quant": {"ops": [], "dynamic_ops": ["MatMul", "Gemm", "Attention"]}}
#: SmoothQuant strength of the `smooth-` variants: on MiniLM, 0.5 took all-per-token dynamic int8
#: from cosine 0.9885 to 0.9954 on the eval sentences (0.8: 0.977).
SMOOTH_ALPHA = 0.5
SMOOTH = {"quant": {"smoothquant_alpha": SMOOTH_ALPHA, "smoothquant_explicit": True}}
FUSION_PASS = "ort_transformer_fusions"
MINILM_MIN_COSINES = (0.99, 0.995)
#: all-MiniLM-L6-v2's attention heads and hidden width (its config.json), for ORT's Attention fusion.
MINILM_HEADS, MINILM_HIDDEN = 12, 384
DIGITS_MAX_DROP_PP = 0.3
#: The summary's drift bars: the best speedup whose every eval sample keeps at least this cosine.
COSINE_BARS = (0.99, 0.995)

#: Does one build; returns what a reader of its row should know ("" when nothing).
Build = Callable[[], str]


@dataclass(frozen=True)
class Step:
    """One variant to build: where its model lands, how to build it, seconds already spent on it."""

    label: str
    path: Path
    build: Build
    shared_s: float = 0.0  # ORT's quant_pre_process, which every ORT variant needs


@dataclass(frozen=True)
class Files:
    """What a model's builds share: the working dir, edgec's data files, ORT's pre-processed model."""

    workdir: Path
    calib: Path
    prepped: Path
    prep_s: float
    reduce_range: bool


@dataclass(frozen=True)
class Failure:
    """A build that raised: the seconds it took and its one-line reason."""

    label: str
    build_s: float
    reason: str


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------


def minilm_workload(cache_dir: Path) -> Workload:
    """The real all-MiniLM-L6-v2 on real sentences, unpadded: calibrate on one split, measure on the other."""
    calib, evaluation = tokenize(sentences("calib")), tokenize(sentences("eval"))
    lengths = [feed["input_ids"].shape[1] for feed in calib + evaluation]
    return Workload("minilm", minilm_onnx(cache_dir), calib, evaluation, None,
                    f"all-MiniLM-L6-v2, real weights; calib {len(calib)} / eval {len(evaluation)} real sentences, "
                    f"unpadded, {min(lengths)}-{max(lengths)} tokens; timing cycles the eval sentences")


# --------------------------------------------------------------------------------------------
# Builds
# --------------------------------------------------------------------------------------------


def ort_static_step(work: Workload, files: Files, method: str, types: str) -> Step:
    """`quantize_static` with one calibrator and one activation/weight type pair."""
    label = f"ort-{method.lower()}-{types}"
    path = files.workdir / f"{label}.onnx"
    activation, weight = ORT_TYPES[types]

    def build() -> str:
        ort_static(files.prepped, path, work.calib, reduce_range=files.reduce_range, activation=activation,
                   weight=weight, method=method)
        return ""

    return Step(label, path, build, files.prep_s)


def ort_dynamic_step(files: Files) -> Step:
    """`quantize_dynamic`: per-channel int8 weights, activations quantized at run time, no calibration."""
    path = files.workdir / "ort-dynamic.onnx"

    def build() -> str:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(files.prepped), str(path), per_channel=True, reduce_range=files.reduce_range,
                         weight_type=QuantType.QInt8)
        return ""

    return Step("ort-dynamic", path, build, files.prep_s)


def ort_bert_fused(work: Workload, fused: Path) -> str:
    """ORT's transformer optimizer (fusions, then its basic graph optimizations) on the source model."""
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(str(work.source), model_type="bert", num_heads=MINILM_HEADS,
                                         hidden_size=MINILM_HIDDEN, opt_level=1)
    optimized.save_model_to_file(str(fused))
    counts = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    return "fused " + ", ".join(f"{op} x{n}" for op, n in counts.items())


def ort_bert_fp32_step(work: Workload, files: Files) -> Step:
    """ORT's transformer optimizer alone: the best fp32 model ORT's own tools make."""
    path = files.workdir / "ort-bert-fp32.onnx"
    return Step("ort-bert-fp32", path, lambda: ort_bert_fused(work, path))


def ort_bert_dynamic_step(work: Workload, files: Files) -> Step:
    """ORT's own best transformer recipe: its BERT fusions (Attention, SkipLayerNorm...), then `quantize_dynamic`.

    The fused Attention becomes QAttention. ORT cannot detect MiniLM's head count and width from
    the graph (without them it fuses no Attention), so they come from the model's config.
    """
    path = files.workdir / "ort-bert-dynamic.onnx"

    def build() -> str:
        from onnx import TensorProto
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fused = files.workdir / "ort-bert-fused.onnx"
        note = ort_bert_fused(work, fused)
        # the fused ops are com.microsoft, which ONNX shape inference cannot type: say the weights are float
        quantize_dynamic(str(fused), str(path), per_channel=True, reduce_range=files.reduce_range,
                         weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": TensorProto.FLOAT})
        return note

    return Step("ort-bert-dynamic", path, build)


def edgec_step(work: Workload, files: Files, label: str, say: Progress, *, fused: bool = False,
               unfused: bool = False, **options: Any) -> Step:
    """`edgec.compile` for the host's int8 target with `options`; a missed budget still yields its best attempt.

    The int8 target runs the ORT transformer fusions; `fused` keeps them under another precision
    (fp32), `unfused` skips them (the comparison rows).
    """
    from edgec import backends, compiler  # noqa: F401 - pays edgec's imports (~0.7 s) before any build is timed

    output_dir = files.workdir / label

    def build() -> str:
        import edgec.target
        from edgec.artifact import read_manifest
        from edgec.compiler import compile as compile_model
        from edgec.errors import AccuracyBudgetError

        target = edgec.target.host_target("onnxruntime", "int8")
        if fused:
            options["passes"] = list(target.passes)
        if unfused:
            options["skip_passes"] = [FUSION_PASS]
        try:
            compile_model(work.source, target, calib=files.calib, output_dir=output_dir, force=True,
                          progress=lambda message: say(f"{work.name}: {label}: {message.strip()}"), **options)
            missed = False
        except AccuracyBudgetError:
            missed = True
        return edgec_note(read_manifest(output_dir), missed)

    return Step(label, output_dir / backends.get("onnxruntime").artifact_file, build)


def edgec_note(manifest: dict[str, Any], missed: bool) -> str:
    """What a budget or "auto" decided, from the artifact's manifest: the table's note for the row."""
    quantization = manifest["quantization"] or {}
    parts = []
    if "fallback" in quantization:
        fallback = quantization["fallback"]
        found = fallback["evaluation"]
        drop = found["accuracy_drop_pp"]
        schemes = ", ".join(f"{kind} {n}" for kind, n in fallback.get("schemes", {}).items())
        parts.append(f"{len(fallback['kept_float'])} node(s) kept float ({schemes}); on the budget's data: min cos "
                     f"{found['min_cosine']:.4f}" + ("" if drop is None else f", drop {drop:+.2f} pp"))
        holdout = fallback.get("holdout")
        if holdout:
            parts.append(f"held-out check {holdout['min_cosine']:.4f}" + ("" if holdout["met"] else " MISSED"))
    if "auto" in quantization:
        auto = quantization["auto"]
        parts.append(f"auto chose {auto.get('variant', auto['chosen'])} (int8 {auto['speedup']:.2f}x fp32 at build, "
                     f"needs {auto['min_speedup']:.2f}x)")
    if missed:
        parts.insert(0, "budget missed, best attempt")
    return "; ".join(parts)


def prepare(work: Workload, workdir: Path, reduce_range: bool, say: Progress) -> Files:
    """Write edgec's data files and run ORT's pre-processing once (its time is charged to every ORT row)."""
    from edgec.data import save_samples

    calib = workdir / "calib.npz"
    save_samples(calib, work.calib)
    say(f"{work.name}: ORT quant_pre_process")
    prepped = workdir / "ort-prep.onnx"
    return Files(workdir, calib, prepped, ort_prepare(work.source, prepped), reduce_range)


def extra_steps(work: Workload, files: Files, say: Progress) -> list[Step]:
    """Model-specific variants: ORT's BERT recipe, dynamic int8 and cosine budgets (minilm), auto and accuracy budget (digits)."""
    if work.name == "minilm":
        bar = MINILM_MIN_COSINES[0]
        return [ort_bert_fp32_step(work, files), ort_bert_dynamic_step(work, files),
                edgec_step(work, files, "edgec-fused-fp32", say, fused=True, precision="fp32"),
                edgec_step(work, files, "edgec-dynamic", say, overrides=FUSED_DYNAMIC),
                edgec_step(work, files, "edgec-unfused-dynamic", say, unfused=True, overrides=DYNAMIC),
                edgec_step(work, files, "edgec-smooth-dynamic", say, overrides=_merged(FUSED_DYNAMIC, SMOOTH)),
                edgec_step(work, files, f"edgec-smooth-dyn-cos{bar:g}", say,
                           overrides=_merged(FUSED_DYNAMIC, SMOOTH), min_cosine=bar),
                edgec_step(work, files, f"edgec-smooth-cos{bar:g}", say, overrides=SMOOTH, min_cosine=bar),
                edgec_step(work, files, f"edgec-smooth-auto-cos{bar:g}", say, overrides=SMOOTH, precision="auto",
                           min_cosine=bar),
                *(edgec_step(work, files, f"edgec-dyn-cos{bar:g}", say, overrides=FUSED_DYNAMIC, min_cosine=bar)
                  for bar in MINILM_MIN_COSINES),
                edgec_step(work, files, f"edgec-cos{bar:g}", say, min_cosine=bar),
                edgec_step(work, files, f"edgec-unfused-cos{bar:g}", say, unfused=True, min_cosine=bar),
                edgec_step(work, files, f"edgec-auto-cos{bar:g}", say, precision="auto", min_cosine=bar)]
    if work.name == "digits":
        assert work.labels is not None, "the digits workload carries its test labels"
        from edgec.data import save_samples

        eval_npz, labels = files.workdir / "eval.npz", files.workdir / "labels.npy"
        save_samples(eval_npz, work.eval)
        np.save(labels, work.labels)
        return [edgec_step(work, files, "edgec-auto", say, precision="auto"),
                edgec_step(work, files, f"edgec-drop{DIGITS_MAX_DROP_PP:g}", say, max_accuracy_drop=DIGITS_MAX_DROP_PP,
                           labels=labels, eval_data=eval_npz)]
    return []


def _merged(*overrides: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Target overrides of the `quant` table merged key by key."""
    return {"quant": {key: value for override in overrides for key, value in override["quant"].items()}}


def plan(work: Workload, files: Files, say: Progress, only: Sequence[str] = ()) -> list[Step]:
    """Every quantized variant of `work` (those matching an `only` pattern, when given), ORT's first, then edgec's."""
    steps = [
        *(ort_static_step(work, files, method, types) for method in ORT_METHODS for types in ORT_TYPES),
        ort_dynamic_step(files),
        *(edgec_step(work, files, f"edgec-{name}", say, calibrator=name) for name in EDGEC_CALIBRATORS),
        *extra_steps(work, files, say),
    ]
    return [step for step in steps if not only or any(fnmatch.fnmatchcase(step.label, pattern) for pattern in only)]


def attempt(work: Workload, step: Step, say: Progress) -> Variant | Failure:
    """Run one build under a stopwatch; an exception becomes a Failure row instead of ending the suite."""
    from edgec.errors import first_line

    say(f"{work.name}: building {step.label}")
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # ORT's calibrators print progress; stdout is the table's
            note = step.build()
    except Exception as exc:  # noqa: BLE001 - any quantizer's crash is a row of the table, not the suite's end
        reason = first_line(exc)
        say(f"{work.name}: {step.label} failed: {type(exc).__name__}: {reason}")
        return Failure(step.label, step.shared_s + time.perf_counter() - started, f"{type(exc).__name__}: {reason}")
    return Variant(step.label, step.path, step.shared_s + time.perf_counter() - started, note)


# --------------------------------------------------------------------------------------------
# Measurement and reporting
# --------------------------------------------------------------------------------------------


def failure_row(work: Workload, failure: Failure) -> dict[str, Any]:
    """A row for a variant that could not be built: no latency, no drift, the reason in its note."""
    return {"model": work.name, "threads": None, "variant": failure.label, "build_s": failure.build_s,
            "note": f"failed: {failure.reason}"}


def _measured(cell: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
    """`cell`, or an em dash for a row that was never measured (a failed build)."""
    return lambda row: cell(row) if "latency_ms" in row else "—"


_COLUMNS: tuple[Column, ...] = (
    ("model", lambda r: r["model"]),
    ("threads", lambda r: fmt(r["threads"], "d")),
    ("variant", lambda r: r["variant"]),
    ("p50 ms", _measured(lambda r: f"{r['latency_ms']['p50']:.3f}")),
    ("speedup vs fp32", _measured(lambda r: f"{r['speedup_p50']:.2f}x")),
    ("cos min", _measured(lambda r: f"{r['cosine_min']:.4f}")),
    ("cos mean", _measured(lambda r: f"{r['cosine_mean']:.4f}")),
    ("accuracy", _measured(lambda r: fmt(r["accuracy"], ".4f"))),
    ("size MB", _measured(lambda r: f"{r['size_bytes'] / 1e6:.2f}")),
    ("build + calib s", lambda r: fmt(r["build_s"], ".2f")),
    ("note", lambda r: r["note"]),
)


def best_under(rows: Sequence[dict[str, Any]], bar: float) -> str:
    """The fastest quantized variant whose worst eval sample keeps cosine >= `bar`, as "label 1.23x"."""
    fits = [r for r in rows if r["variant"] != "fp32" and r["cosine_min"] >= bar]
    if not fits:
        return f"cos min >= {bar:g}: none"
    best = max(fits, key=lambda r: r["speedup_p50"])
    return f"cos min >= {bar:g}: **{best['variant']}** {best['speedup_p50']:.2f}x"


def accuracy_drops(rows: Sequence[dict[str, Any]]) -> str:
    """Each variant's top-1 accuracy drop vs fp32 in percentage points (positive: int8 is worse)."""
    base = next(r["accuracy"] for r in rows if r["variant"] == "fp32")
    drops = ", ".join(f"{r['variant']} {(base - r['accuracy']) * 100:+.2f}" for r in rows if r["variant"] != "fp32")
    return f"accuracy drop vs fp32 {base:.4f}, pp: {drops}"


def summary(model: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Per thread count: the best speedup at each cosine bar, and (with labels) every variant's accuracy drop."""
    lines = [f"**{model}**"]
    measured = [r for r in rows if r["model"] == model and "latency_ms" in r]
    for threads in sorted({r["threads"] for r in measured}):
        block = [r for r in measured if r["threads"] == threads]
        bests = "; ".join(best_under(block, bar) for bar in COSINE_BARS)
        lines.append(f"- {threads} thread(s): best speedup with {bests}")
        if block[0]["accuracy"] is not None:
            lines.append(f"  - {accuracy_drops(block)}")
    return lines


def markdown(rows: Sequence[dict[str, Any]], notes: dict[str, str]) -> str:
    """The table, then per model a summary and what its data is."""
    lines = [markdown_table(_COLUMNS, rows, left=("model", "variant", "note")), ""]
    for model, note in notes.items():
        lines += [*summary(model, rows), f"- data: {note}", ""]
    return "\n".join(lines)


def run_model(work: Workload, args: argparse.Namespace, workdir: Path, reduce_range: bool,
              say: Progress) -> list[dict[str, Any]]:
    """Build every variant once, then one interleaved measurement per thread count; failed builds get a row each."""
    files = prepare(work, workdir, reduce_range, say)
    built = [attempt(work, step, say) for step in plan(work, files, say, args.only)]
    variants = [Variant("fp32", work.source, None, "source model"), *(b for b in built if isinstance(b, Variant))]
    rows: list[dict[str, Any]] = []
    for threads in args.threads:
        rows += measure_variants(work, variants, threads, args.runs, args.warmup, say)
    return rows + [failure_row(work, b) for b in built if isinstance(b, Failure)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = parse_suite_args(__doc__.splitlines()[0], MODELS, argv, threads="1,2", runs=100, warmup=10,
                            more=lambda parser: parser.add_argument(
                                "--only", default="", metavar="PATTERN,...",
                                help="build only the variants whose label matches one of these shell patterns "
                                     "(e.g. 'ort-bert-*,edgec-fused-*'); fp32 is always measured"))
    args.only = [pattern.strip() for pattern in args.only.split(",") if pattern.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cache_dir = args.cache_dir or default_cache_dir()
    started = time.perf_counter()
    say = progress_printer()
    host = host_info()
    reduce_range = not host["vnni"]  # u8 x s8 kernels without VNNI saturate on 8-bit weights
    loaders = {"minilm": lambda: minilm_workload(cache_dir / "bench"),
               "mobilenetv2": lambda: mobilenetv2_workload(cache_dir / "bench"),
               "digits": lambda: digits_workload(cache_dir)}
    rows: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    for work, workdir in prepared_workloads(args.models, loaders, say):
        notes[work.name] = work.data_note
        rows += run_model(work, args, workdir, reduce_range, say)
    wall_s = time.perf_counter() - started
    print(markdown(rows, notes))
    print(f"{args.runs} timed runs per variant (warmup {args.warmup}), batch 1; ORT reduce_range={reduce_range} "
          f"(VNNI: {host['vnni']}); edgec target {host['edgec_target']}; wall time {wall_s:.0f} s")
    if args.json is not None:
        from edgec.artifact import write_text_atomic

        report = {"schema": "edgec.bench.int8_accuracy/1", "host": host, "runs": args.runs, "warmup": args.warmup,
                  "reduce_range": reduce_range, "wall_s": wall_s, "models": notes, "rows": rows}
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
