"""`edgec` command line: argument parsing, printing and exit codes only; every command calls the API.

Exit codes: 0 success, 1 a release gate failed or no int8 model met the accuracy budget, 2 bad input or usage (one-line message, no traceback
unless --verbose), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgec import __version__
from edgec.errors import AccuracyBudgetError, EdgecError

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


def _overrides(texts: Sequence[str]) -> dict[str, Any]:
    from edgec.target import merge_overrides, parse_override

    return merge_overrides([parse_override(text) for text in texts])


def _cmd_compile(args: argparse.Namespace) -> int:
    from edgec.compiler import compile as compile_model

    result = compile_model(args.model, args.target, calib=args.calib, output_dir=args.output, force=args.force,
                           passes=_names(args.passes), skip_passes=_names(args.skip_passes) or (), verify=args.verify,
                           source_format=args.source_format, inputs=args.input, fix_shape=args.fix_shape,
                           verify_import=not args.no_verify_import, precision=args.precision,
                           calibrator=args.calibrator, overrides=_overrides(args.set), keep_float=_names(args.keep_float) or (),
                           report=args.report, max_accuracy_drop=args.max_accuracy_drop, min_cosine=args.min_cosine,
                           labels=args.labels, eval_data=args.eval, progress=_say)
    _print_compile(args, result)
    return EXIT_OK


def _print_compile(args: argparse.Namespace, result: Any) -> None:
    manifest = result.manifest
    nodes = manifest["nodes"]
    print(f"compiled {args.model} for {manifest['target']['name']} -> {result.output_dir}")
    print(f"  nodes: source {nodes['source']}, optimized {nodes['optimized']}, artifact {nodes['artifact']}")
    print(f"  size: {manifest['source']['size_bytes']:,} -> {manifest['artifact']['size_bytes']:,} bytes")
    imported = manifest["source"].get("import_verification")
    if imported:
        print(f"  imported from {manifest['source']['format']} in {manifest['source']['import_seconds']:.2f} s;"
              f" ONNX vs source max |diff| {imported['max_abs']:.3g}, cosine min {imported['cosine_min']:.6f}")
    if manifest["verification"]:
        worst = max(manifest["verification"]["max_abs_diff"].values(), default=0.0)
        print(f"  verified every pass on {manifest['verification']['samples']} samples (largest change {worst:.3g})")
    if manifest["quantization"] and "quantized_nodes" in manifest["quantization"]:
        quantized = ", ".join(f"{op} x{n}" for op, n in manifest["quantization"]["quantized_nodes"].items())
        calibration = manifest["calibration"]
        quant = manifest["quantization"]
        dynamic = ", ".join(f"{op} x{n}" for op, n in quant.get("dynamic", {}).get("dynamic_nodes", {}).items())
        tables = quant.get("embeddings")
        lookups = f"; int8 tables: {tables['tables']} ({tables['bytes_saved'] / 2**20:.1f} MiB saved)" if tables else ""
        print(f"  int8: {quantized or 'no static nodes'}" + (f"; dynamic: {dynamic}" if dynamic else "") + lookups
              + f"; calibrated {calibration['tensors']} tensors on {calibration['samples']}"
              f" {calibration['source']} samples ({calibration['calibrator']})")
        fallback = quant.get("fallback")
        if fallback:
            evaluation = fallback["evaluation"]
            print(f"  accuracy budget {'met' if fallback['met'] else 'NOT met'}: {len(fallback['kept_float'])} node(s) kept"
                  f" float, min cosine {evaluation['min_cosine']:.6f}"
                  + (f", accuracy drop {evaluation['accuracy_drop_pp']:.2f} pp" if evaluation["accuracy_drop_pp"] is not None else ""))
            holdout = fallback.get("holdout")
            if holdout:
                print(f"  held-out check on {holdout['samples']} unseen samples: min cosine {holdout['min_cosine']:.6f}"
                      + (" - holds" if holdout["met"] else " - MISSED (searched again on all samples)"))
            if fallback.get("schemes"):
                print("  schemes: " + ", ".join(f"{kind} x{n}" for kind, n in fallback["schemes"].items()))
            print("  latency p50 (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in fallback["latency_ms"].items()))
            if fallback["kept_float"]:
                print(f"  kept float: {', '.join(fallback['kept_float'])}")
    if manifest["quantization"] and manifest["quantization"].get("auto"):
        auto = manifest["quantization"]["auto"]
        print(f"  precision auto: int8 {auto['speedup']:.2f}x fp32 -> {auto['chosen']}")
        for label, option in auto.get("options", {}).items():
            if "lost" in option:
                print(f"    {label} lost: {option['lost']}")
    if result.worst_layers:
        print(f"  most sensitive layers (report: {result.output_dir / 'sensitivity.json'}):")
        print("    " + result.worst_layers.replace("\n", "\n    "))


def _format_bench(report: dict[str, Any]) -> str:
    """A readable side-by-side table of a bench report."""
    base = report.get("baseline") or {}
    rows = [("", "artifact", "baseline" if base else "")]

    def row(label: str, value: Any, other: Any, fmt: str) -> None:
        rows.append((label, format(value, fmt) if value is not None else "-", format(other, fmt) if other is not None else ""))

    lat, base_lat = report["latency_ms"], base.get("latency_ms", {})
    for key in ("p50", "p90", "p99", "mean"):
        row(f"latency {key} (ms)", lat[key], base_lat.get(key), ".3f")
    row("throughput (/s)", report["throughput_per_s"], base.get("throughput_per_s"), ".1f")
    row("load (ms)", report["load_ms"], base.get("load_ms"), ".1f")
    row("peak RSS (MiB)", report["peak_rss_mb"], base.get("peak_rss_mb"), ".1f")
    row("size (MiB)", report["size_bytes"] / 2**20, base.get("size_bytes", 0) / 2**20 if base else None, ".3f")
    width = max(len(r[0]) for r in rows)
    lines = [f"{a:<{width}}  {b:>10}  {c:>10}".rstrip() for a, b, c in rows]
    lines.append(f"target {report['target']}, {report['threads']} thread(s), {lat['runs']} runs, batch 1,"
                 f" {report['samples']} samples ({report['data']})")
    if report.get("speedup_p50") is not None:
        lines.append(f"speedup (baseline p50 / artifact p50): {report['speedup_p50']:.2f}x")
    drift = report.get("drift")
    if drift:
        for name, d in drift["outputs"].items():
            lines.append(f"drift {name}: cosine min {d['cosine_min']:.5f} mean {d['cosine_mean']:.5f},"
                         f" max |diff| {d['max_abs']:.4g}, SQNR {d['sqnr_db']:.1f} dB")
        if drift.get("top1_agreement") is not None:
            lines.append(f"top-1 agreement with baseline: {drift['top1_agreement']:.4f}")
        if drift.get("accuracy") is not None:
            lines.append(f"accuracy: {drift['accuracy']:.4f} (baseline {drift['baseline_accuracy']:.4f},"
                         f" drop {drift['accuracy_drop_pp']:.2f} pp)")
    return "\n".join(lines)


def _cmd_bench(args: argparse.Namespace) -> int:
    from edgec.benchmark import bench

    report = bench(args.artifact, data=args.data, labels=args.labels, baseline=args.baseline,
                   baseline_from=args.baseline_from, threads=args.threads,
                   warmup=args.warmup, runs=args.runs, json_path=args.json, progress=_say)
    print(_format_bench(report))
    if args.json:
        print(f"report written to {args.json}")
    return EXIT_OK


def _cmd_gate(args: argparse.Namespace) -> int:
    from edgec.api import gate
    from edgec.artifact import write_text_atomic
    from edgec.gating import THRESHOLD_NAMES, format_table, to_junit, to_markdown

    thresholds = {name: getattr(args, name) for name in THRESHOLD_NAMES if getattr(args, name) is not None}
    result = gate(args.report, policy=args.policy, **thresholds)
    print(format_table(result))
    if args.junit:
        write_text_atomic(args.junit, to_junit(result))
    if args.markdown:
        write_text_atomic(args.markdown, to_markdown(result))
    return EXIT_OK if result.passed else EXIT_GATE_FAILED


def _cmd_targets(args: argparse.Namespace) -> int:
    from edgec.target import list_targets

    rows = []
    for target in list_targets():
        ok, reason = target.runnable_here()
        rows.append({"name": target.name, "runtime": target.runtime, "precision": target.precision,
                     "runs_here": ok, "why": reason, "description": target.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        here = "yes" if r["runs_here"] else f"no ({r['why']})"
        print(f"{r['name']:<{width}}  {r['runtime']:<11} {r['precision']:<5} runs here: {here}")
        print(f"{'':<{width}}  {r['description']}")
    return EXIT_OK


def _cmd_target(args: argparse.Namespace) -> int:
    from edgec.target import load_target

    print(json.dumps(load_target(args.name).to_dict(), indent=2))
    return EXIT_OK


def _cmd_passes(args: argparse.Namespace) -> int:
    from edgec.passes.pipeline import PASSES

    width = max(map(len, PASSES))
    for name, (_, description) in PASSES.items():
        print(f"{name:<{width}}  {description}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from edgec.demo import run_demo
    from edgec.gating import format_table

    result = run_demo(Path(args.output), runs=args.runs, threads=args.threads, progress=_say)
    print(_format_bench(result.report))
    print()
    print(format_table(result.gate))
    print()
    print(f"files written to {result.workdir.resolve()}:")
    for role, path in result.files.items():
        print(f"  {role:<9} {path}")
    return EXIT_OK if result.gate.passed else EXIT_GATE_FAILED


def build_parser() -> argparse.ArgumentParser:
    from edgec.gating import THRESHOLD_NAMES

    parser = argparse.ArgumentParser(prog="edgec", description="Compile a trained model for an edge target, "
                                     "benchmark it against the float model, and gate its release.")
    parser.add_argument("--version", action="version", version=f"edgec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from edgec.frontends import FORMATS

    p = commands.add_parser("compile", help="compile a model for a target into an artifact directory")
    p.add_argument("model", help="source model: .onnx, .pt2, TorchScript .pt, SavedModel dir, .keras or .tflite")
    p.add_argument("-t", "--target", required=True, help="target name (see `edgec targets`) or path to a .toml descriptor")
    p.add_argument("--calib", metavar="DATA.npz|random", help="calibration data for int8 targets, also the samples --verify and import checks run on;"
                        " 'random' for latency-only work")
    p.add_argument("-o", "--output", metavar="OUTDIR", help="output directory (default: <model>-<target> beside the model)")
    p.add_argument("--force", action="store_true", help="replace an earlier edgec artifact at the output path")
    p.add_argument("--passes", metavar="A,B,C", help="run these passes instead of the target's pipeline")
    p.add_argument("--skip-passes", metavar="A,B", help="remove these passes from the pipeline")
    p.add_argument("--verify", action="store_true",
                   help="check after every pass that outputs still match (on --calib data, else random inputs)")
    p.add_argument("--from", dest="source_format", choices=list(FORMATS), help="the model's format (default: detected)")
    p.add_argument("--input", action="append", default=[], metavar="NAME:SHAPE[:DTYPE]",
                   help="declare an input, e.g. pixel_values:1x3x224x224 or input_ids:batchxseq:int64 (repeatable)")
    p.add_argument("--fix-shape", action="append", default=[], metavar="NAME:SHAPE",
                   help="make an input's shape static, e.g. input_ids:1x128 (repeatable)")
    p.add_argument("--no-verify-import", action="store_true",
                   help="skip comparing the imported ONNX with the source model run in its own framework")
    q = p.add_argument_group("int8 options")
    q.add_argument("--precision", choices=["fp32", "int8", "auto"],
                   help="override the target's precision; 'auto' keeps int8 only where it is measurably faster than fp32 here")
    q.add_argument("--calibrator", choices=["minmax", "percentile", "entropy", "mse"], help="override the target's calibrator")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a target descriptor key, e.g. quant.dynamic_ops='[\"MatMul\"]' or quant.smoothquant_alpha=0.5 (repeatable)")
    q.add_argument("--keep-float", metavar="A,B", help="node names or op types never quantized, e.g. Add or a node name from the report")
    q.add_argument("--report", action="store_true",
                   help="write sensitivity.json (each quantized layer's error alone and cumulative) and print the worst ten")
    q.add_argument("--max-accuracy-drop", type=float, metavar="PP",
                   help="keep the most sensitive layers float until top-1 accuracy drops at most PP points (needs --labels)")
    q.add_argument("--min-cosine", type=float, metavar="F",
                   help="keep the most sensitive layers float until every sample's output cosine to fp32 is >= F")
    q.add_argument("--labels", metavar="L.npy", help="integer class per evaluation sample, for --max-accuracy-drop")
    q.add_argument("--eval", metavar="DATA.npz", help="samples the budget and --report are measured on (default: --calib)")
    p.set_defaults(func=_cmd_compile)

    p = commands.add_parser("bench", help="measure an artifact against its float baseline")
    p.add_argument("artifact", help="compile output directory or .onnx file")
    p.add_argument("--data", metavar="DATA.npz", help="samples keyed by input name (default: random feeds)")
    p.add_argument("--labels", metavar="L.npy", help="integer class per sample, for accuracy")
    p.add_argument("--baseline", metavar="MODEL.onnx", help="float model to compare with (default: the source in the manifest)")
    p.add_argument("--baseline-from", choices=["source", "onnx"],
                   help="for non-ONNX sources: run the source in its own framework, or its imported float ONNX"
                        " (default: source when its framework is installed)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: the target's, else all cores)")
    p.add_argument("--warmup", type=int, default=10, help="untimed inferences per model (default 10)")
    p.add_argument("--runs", type=int, default=100, help="timed inferences per model (default 100)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.set_defaults(func=_cmd_bench)

    p = commands.add_parser("gate", help="check a bench report against release thresholds (exit 1 on failure)")
    p.add_argument("report", help="report JSON written by `edgec bench --json`")
    p.add_argument("--policy", metavar="gate.toml", help="thresholds file; command-line thresholds override it")
    for name in THRESHOLD_NAMES:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, metavar="X")
    p.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report")
    p.add_argument("--markdown", metavar="FILE", help="also write a Markdown summary")
    p.set_defaults(func=_cmd_gate)

    p = commands.add_parser("targets", help="list the built-in targets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_targets)

    p = commands.add_parser("target", help="show one resolved target descriptor")
    p.add_argument("name", help="target name or path to a .toml descriptor")
    p.set_defaults(func=_cmd_target)

    p = commands.add_parser("passes", help="list the available graph passes")
    p.set_defaults(func=_cmd_passes)

    p = commands.add_parser("demo", help="train a digits CNN, compile it to int8, benchmark and gate it (no files needed)")
    p.add_argument("-o", "--output", default="edgec-demo", help="working directory for the demo's files (default ./edgec-demo)")
    p.add_argument("--runs", type=int, default=200, help="timed inferences per model (default 200)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for the benchmark (default 1)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, when a frontend loads it
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except AccuracyBudgetError as exc:  # the artifact was written; like a failed gate, not bad usage
        print(f"edgec: error: {exc}", file=sys.stderr)
        return EXIT_GATE_FAILED
    except EdgecError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"edgec: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("edgec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
