"""`edgec` command line: argument parsing, printing and exit codes only; every command calls the API.

Exit codes: 0 success, 1 a release gate failed or no int8 model met the accuracy budget, 2 bad input, usage or
environment (one-line message, no traceback unless --verbose), 3 a bug in edgec (one line asking for a report; the
traceback with --verbose), 130 interrupted (SIGINT or SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import logging
import errno
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgec import __version__
from edgec.errors import AccuracyBudgetError, EdgecError, first_line
from edgec.quant import tail

if TYPE_CHECKING:
    from edgec.report.types import BenchReport, Fallback, ModelRecord

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
#: `edgec gate --help` text of each threshold: what it bounds, in which unit.
_THRESHOLD_HELP = {
    "max_accuracy_drop_pp": "fail if top-1 accuracy drops more than X percentage points (needs bench --labels)",
    "min_top1_agreement": "fail if the artifact's top-1 class agrees with the baseline's on less than X of samples (0-1)",
    "min_cosine": "fail if any sample of any output has cosine similarity to the baseline below X (-1..1)",
    "max_latency_p90_ms": "fail if the artifact's p90 latency exceeds X milliseconds",
    "min_speedup": "fail if baseline p50 / artifact p50 is below X (1.0 = as fast as the float model)",
    "max_size_mb": "fail if the artifact is larger than X MiB on disk",
    "max_peak_rss_mb": "fail if the artifact's worker peaks above X MiB of resident memory",
}
#: `gate` options that only mean something with an earlier report to compare with.
_REGRESSION_OPTIONS = ("max_latency_regression", "max_accuracy_regression_pp", "max_size_growth", "min_cosine_vs_old",
                       "allow_different_device")
#: Input shapes whose latency the bench table lists (the report has all of them).
_SHAPES_SHOWN = 8


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


def _input_map(texts: Sequence[str]) -> dict[str, str]:
    from edgec.data import parse_input_map

    return parse_input_map(texts)


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
                           labels=args.labels, eval_data=args.eval, input_map=_input_map(args.input_map),
                           slim=args.slim, trust_source=args.trust_source, progress=args.say)
    _print_compile(args, result)
    return EXIT_OK


def _print_compile(args: argparse.Namespace, result: Any) -> None:
    from edgec.report.types import Manifest

    manifest = Manifest.from_dict(result.manifest)
    nodes, source = manifest.nodes, manifest.source
    print(f"compiled {args.model} for {manifest.target.name} -> {result.output_dir}")
    print(f"  nodes: source {nodes.source}, optimized {nodes.optimized}, artifact {nodes.artifact}")
    print(f"  size: {source.size_bytes:,} -> {manifest.artifact.size_bytes:,} bytes")
    imported = source.import_verification
    if imported:
        print(f"  imported from {source.format} in {source.import_seconds:.2f} s;"
              f" ONNX vs source max |diff| {imported.max_abs:.3g}, cosine min {imported.cosine_min:.6f}")
    verified = manifest.verification
    if verified:
        worst = max((verified.max_abs_diff or {}).values(), default=0.0)
        print(f"  verified every pass on {verified.samples} samples (largest change {worst:.3g})")
    quant = manifest.quantization
    if quant and quant.quantized_nodes is not None:
        quantized = ", ".join(f"{op} x{n}" for op, n in quant.quantized_nodes.items())
        calibration = manifest.calibration
        dynamic = ", ".join(f"{op} x{n}" for op, n in ((quant.dynamic and quant.dynamic.dynamic_nodes) or {}).items())
        tables = quant.embeddings
        lookups = f"; int8 tables: {tables.tables} ({tables.bytes_saved / 2**20:.1f} MiB saved)" if tables else ""
        print(f"  int8: {quantized or 'no static nodes'}" + (f"; dynamic: {dynamic}" if dynamic else "") + lookups
              + f"; calibrated {calibration.tensors} tensors on {calibration.samples}"
              f" {calibration.source} samples ({calibration.calibrator})")
        if quant.fallback:
            _print_budget_search(quant.fallback)
    if quant and quant.auto:
        auto = quant.auto
        print(f"  precision auto: int8 {auto.speedup:.2f}x fp32 -> {auto.chosen}")
        for label, option in (auto.options or {}).items():
            if "lost" in option:
                print(f"    {label} lost: {option['lost']}")
    if result.worst_layers:
        print(f"  most sensitive layers (report: {result.output_dir / 'sensitivity.json'}):")
        print("    " + result.worst_layers.replace("\n", "\n    "))


def _print_budget_search(fallback: Fallback) -> None:
    """The accuracy-budget search of a compile: verdict, held-out check, schemes, p50s and the nodes kept float."""
    evaluation, kept = fallback.evaluation, fallback.kept_float or []
    print(f"  accuracy budget {'met' if fallback.met else 'NOT met'}: {len(kept)} node(s) kept"
          " float, " + tail.describe(evaluation.min_cosine, evaluation.expected_worst_cosine)
          + (f", accuracy drop {evaluation.accuracy_drop_pp:.2f} pp" if evaluation.accuracy_drop_pp is not None else ""))
    holdout = fallback.holdout
    if holdout:
        print(f"  held-out check on {holdout.samples} unseen samples: min cosine {holdout.min_cosine:.6f}"
              + (" - holds" if holdout.met else " - MISSED (searched again on all samples)"))
    if fallback.schemes:
        print("  schemes: " + ", ".join(f"{kind} x{n}" for kind, n in fallback.schemes.items()))
    print("  latency p50 (ms): " + ", ".join(f"{k} {v:.3f}" for k, v in (fallback.latency_ms or {}).items()))
    if kept:
        print(f"  kept float: {', '.join(kept)}")


def _format_bench(report: BenchReport) -> str:
    """A readable side-by-side table of a bench report."""
    base = report.baseline
    rows = [("", "artifact", "baseline" if base else "")]

    def row(label: str, value: Any, other: Any, fmt: str) -> None:
        rows.append((label, format(value, fmt) if value is not None else "-", format(other, fmt) if other is not None else ""))

    lat, base_lat = report.latency_ms, base.latency_ms if base else None
    for key in ("p50", "p90", "p99", "mean"):
        row(f"latency {key} (ms)", getattr(lat, key), getattr(base_lat, key) if base_lat else None, ".3f")
    row("throughput (/s)", report.throughput_per_s, base.throughput_per_s if base else None, ".1f")
    row("load (ms)", report.load_ms, base.load_ms if base else None, ".1f")
    row("peak RSS (MiB)", report.peak_rss_mb, base.peak_rss_mb if base else None, ".1f")
    row("size (MiB)", report.size_bytes / 2**20, (base.size_bytes or 0) / 2**20 if base else None, ".3f")
    width = max(len(r[0]) for r in rows)
    lines = [f"{a:<{width}}  {b:>10}  {c:>10}".rstrip() for a, b, c in rows]
    shapes = report.input_shapes or []
    lines.append(f"target {report.target}, {report.threads} thread(s), {lat.runs} runs,"
                 f" {report.samples} samples ({report.data})"
                 + (f", inputs {shapes[0]}" if len(shapes) == 1 else f", {len(shapes)} input shapes" if shapes else ""))
    by_shape = report.latency_by_shape_ms
    if by_shape:
        shown = list(by_shape.items())[:_SHAPES_SHOWN]
        more = f" (first {_SHAPES_SHOWN} of {len(by_shape)}; all in the JSON report)" if len(by_shape) > _SHAPES_SHOWN else ""
        lines.append(f"artifact latency p50 by input shape{more}:")
        lines.extend(f"  {shape}: {summary.p50:.3f} ms ({summary.runs} runs)" for shape, summary in shown)
    if base and base.model:
        lines.append(f"artifact: {_describe_model(report.artifact_model)}")
        lines.append(f"baseline: {_describe_model(base.model)}")
    if report.speedup_p50 is not None:
        lines.append(f"speedup (baseline p50 / artifact p50): {report.speedup_p50:.2f}x")
    framework = report.framework_baseline
    if framework and framework.speedup_p50 is not None and framework.latency_ms:
        lines.append(f"also vs the source in its framework: {_describe_model(framework.model)}:"
                     f" p50 {framework.latency_ms.p50:.3f} ms, speedup {framework.speedup_p50:.2f}x")
    for warning in report.warnings or []:
        lines.append(f"warning: {warning}")
    drift = report.drift
    if drift:
        for name, d in (drift.outputs or {}).items():
            lines.append(f"drift {name}: cosine min {d.cosine_min:.5f} mean {d.cosine_mean:.5f},"
                         f" max |diff| {d.max_abs:.4g}, SQNR {d.sqnr_db:.1f} dB")
        for name, why in (drift.degenerate or {}).items():
            lines.append(f"warning: output '{name}' is degenerate ({why}): its drift figures measure nothing")
        if drift.top1_agreement is not None:
            lines.append(f"top-1 agreement with baseline: {drift.top1_agreement:.4f}")
        if drift.accuracy is not None:
            lines.append(f"accuracy: {drift.accuracy:.4f} (baseline {drift.baseline_accuracy:.4f},"
                         f" drop {drift.accuracy_drop_pp:.2f} pp)")
    return "\n".join(lines)


def _describe_model(record: ModelRecord | None) -> str:
    """'<precision> <description>' of a report's model record (reports from before records: '?')."""
    if not record:
        return "?"
    return " ".join(filter(None, (record.precision, record.description)))


def _cmd_bench(args: argparse.Namespace) -> int:
    from edgec.artifact import check_writable, strict_json
    from edgec.benchmark import bench
    from edgec.report.types import BenchReport

    if args.html:
        if args.device:
            raise EdgecError("--html writes a local bench's page; with --device, run `edgec report` on the --json files")
        check_writable(args.html, "--html")
    if args.device:
        return _bench_on_devices(args)

    to_stdout = args.json == "-"
    report = bench(args.artifact, data=args.data, labels=args.labels, baseline=args.baseline,
                   baseline_from=args.baseline_from, source=args.source, threads=args.threads, warmup=args.warmup,
                   runs=args.runs, json_path=None if to_stdout else args.json, input_map=_input_map(args.input_map),
                   shapes=args.shape, trust_source=args.trust_source, progress=args.say)
    typed = BenchReport.from_dict(report)
    if to_stdout:
        print(strict_json(report))
    else:
        print(_format_bench(typed))
    if args.json and not to_stdout:
        print(f"report written to {args.json}")
    if args.html:
        _write_html(args.html, [(Path(args.json).name if args.json else typed.model_name, typed)])
        print(f"HTML report written to {args.html}", file=sys.stderr if to_stdout else sys.stdout)
    return EXIT_OK


def _require_aiohttp() -> None:
    """The agent and its client need the `agent` extra; say so in one line instead of a bug report."""
    import importlib.util

    if importlib.util.find_spec("aiohttp") is None:
        raise EdgecError("the device agent and --device need aiohttp: pip install 'edgec[agent]'")


def _bench_on_devices(args: argparse.Namespace) -> int:
    _require_aiohttp()
    from edgec.artifact import write_text_atomic
    from edgec.device.client import RemoteBench, bench_on_devices
    from edgec.device.inventory import resolve_device
    from edgec.limits import FROM_ENV, step_limit
    from edgec.report.types import BenchReport

    if args.json == "-":
        raise EdgecError("--device writes one report per device: give --json a file name, not '-'")
    if args.source or args.baseline_from == "source":
        raise EdgecError("--device: the agent runs no framework code; --source and --baseline-from source run only"
                         " locally")
    devices = [resolve_device(name, args.token_file, args.ca_file) for name in args.device]
    spec = RemoteBench(Path(args.artifact), baseline=Path(args.baseline) if args.baseline else None,
                       data=Path(args.data) if args.data else None,
                       labels=Path(args.labels) if args.labels else None, runs=args.runs, warmup=args.warmup,
                       threads=args.threads, input_map=args.input_map, shapes=args.shape, job=args.job)
    with step_limit(FROM_ENV, args.say) as say:
        reports = bench_on_devices(devices, spec, progress=say)
    for device, report in zip(devices, reports):
        typed = BenchReport.from_dict(report)
        facts = typed.device
        print(_format_bench(typed))
        print(f"device {device.name} ({device.url}): {facts.hostname}, {facts.cpu_model}, {facts.cores} cores,"
              f" {facts.os} {facts.arch}")
        if args.json:
            path = Path(args.json)
            if len(devices) > 1:
                path = path.with_name(f"{path.stem}.{device.name}{path.suffix}")
            write_text_atomic(path, json.dumps(report, indent=2) + "\n")
            print(f"report written to {path}")
    return EXIT_OK


def _cmd_agent(args: argparse.Namespace) -> int:
    _require_aiohttp()
    from edgec.device.agent import AgentConfig, serve

    if args.insecure_no_auth == bool(args.token_file):
        raise EdgecError("give exactly one of --token-file and --insecure-no-auth")
    token = None
    if args.token_file:
        from edgec.device.inventory import read_token

        token = read_token(args.token_file)
    workdir = Path(args.workdir) if args.workdir else Path(_user_cache("agent"))
    config = AgentConfig(workdir=workdir, token=token, host=args.host, port=args.port,
                         max_upload_bytes=int(args.max_upload_mb * 2**20), cache_bytes=int(args.cache_mb * 2**20),
                         queue_size=args.queue, job_timeout_s=args.job_timeout,
                         tls_cert=Path(args.tls_cert) if args.tls_cert else None,
                         tls_key=Path(args.tls_key) if args.tls_key else None)
    serve(config, ready=lambda url: args.say(f"edgec agent listening on {url} (artifacts in {workdir})"))
    return EXIT_OK


def _user_cache(name: str) -> str:
    import platformdirs

    return str(Path(platformdirs.user_cache_dir("edgec")) / name)


def _cmd_devices(args: argparse.Namespace) -> int:
    _require_aiohttp()
    from edgec.device.client import device_facts_of
    from edgec.device.inventory import inventory_path, load_inventory

    devices = load_inventory()
    if not devices:
        print(f"no devices in {inventory_path()}")
        return EXIT_OK
    for device in devices.values():
        try:
            facts = device_facts_of(device)
            runnable = ", ".join(t["name"] for t in facts["targets"] if t["runnable"]) or "none"
            print(f"{device.name}  {device.url}  reachable  runnable targets: {runnable}")
        except EdgecError as exc:
            print(f"{device.name}  {device.url}  unreachable ({exc})")
    return EXIT_OK


def _cmd_device(args: argparse.Namespace) -> int:
    _require_aiohttp()
    from edgec.device.client import device_facts_of
    from edgec.device.inventory import resolve_device

    print(json.dumps(device_facts_of(resolve_device(args.name)), indent=2))
    return EXIT_OK


def _cmd_gate(args: argparse.Namespace) -> int:
    from edgec.api import gate
    from edgec.artifact import check_writable, write_text_atomic
    from edgec.gating import THRESHOLD_NAMES, default_thresholds, format_table, to_junit, to_markdown
    from edgec.report.types import read_bench_report

    for option, path in (("--junit", args.junit), ("--markdown", args.markdown)):
        if path:
            check_writable(path, option)
    report = read_bench_report(args.report)
    thresholds = {name: getattr(args, name) for name in THRESHOLD_NAMES if getattr(args, name) is not None}
    against = _against_report(args, report)
    if against:
        result = _regression_gate(args, report, against, thresholds)
    else:
        if not thresholds and args.policy is None:
            thresholds, source = default_thresholds(report)
            print(f"no thresholds given: using {source}")
        result = gate(report, policy=args.policy, **thresholds)
    print(format_table(result))
    if args.junit:
        write_text_atomic(args.junit, to_junit(result))
    if args.markdown:
        write_text_atomic(args.markdown, to_markdown(result))
    return EXIT_OK if result.passed else EXIT_GATE_FAILED


def _against_report(args: argparse.Namespace, report: Any) -> Any:
    """The earlier report `gate` compares with: --against's file, or history's pick, else None (absolute thresholds only)."""
    from edgec.errors import BadInputError
    from edgec.report.types import read_bench_report

    if args.against and args.against_history:
        raise BadInputError("give --against OLD.json or --against-history, not both")
    if args.against_history:
        from edgec.report.history import History

        entry, old = History(args.db).baseline_for(report, tag=args.tag)
        print(f"history #{entry.id}" + (f" ({entry.tag})" if entry.tag else "") + f" from {entry.created_utc}")
        return old
    if args.tag or args.db:
        raise BadInputError("--tag and --db choose the report --against-history compares with: add --against-history")
    if not args.against:
        given = [f"--{name.replace('_', '-')}" for name in _REGRESSION_OPTIONS if getattr(args, name)]
        if given:
            raise BadInputError(f"{', '.join(given)} compare with an earlier report: add --against OLD.json or --against-history")
        return None
    return read_bench_report(args.against)


def _regression_gate(args: argparse.Namespace, new: Any, old: Any, thresholds: dict[str, float]) -> Any:
    """The regression checks of the report against `old`, after any absolute thresholds the command also gave."""
    from edgec.api import gate
    from edgec.gating import GateResult
    from edgec.report.regression import RegressionThresholds, compare_reports

    limits = RegressionThresholds(args.max_latency_regression, args.max_accuracy_regression_pp, args.max_size_growth,
                                  args.min_cosine_vs_old, args.confidence)
    absolute = gate(new, policy=args.policy, **thresholds).checks if args.policy or thresholds else ()
    regression = compare_reports(new, old, limits, allow_different_device=args.allow_different_device)
    print(f"against {(old.provenance.git_describe if old.provenance else None) or old.created_utc or 'the old report'}:")
    for check in regression:
        print(f"  {check.message}")
    print()
    return GateResult((*absolute, *regression))


def _cmd_history_add(args: argparse.Namespace) -> int:
    from edgec.report.history import History
    from edgec.report.types import read_bench_report

    entry = History(args.db).add(read_bench_report(args.report), tag=args.tag, model=args.model)
    print(f"added #{entry.id}: {entry.model} for {entry.target} on {entry.device}" + (f", tagged {entry.tag}" if entry.tag else ""))
    return EXIT_OK


def _cmd_history_list(args: argparse.Namespace) -> int:
    from edgec.report.history import History

    entries = History(args.db).entries(model=args.model, target=args.target, device=args.device)
    rows = [("id", "created (UTC)", "model", "target", "device", "tag")]
    rows += [(str(e.id), e.created_utc, e.model, e.target, e.device, e.tag or "") for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths)).rstrip())
    if not entries:
        print("(no reports match)")
    return EXIT_OK


def _cmd_history_show(args: argparse.Namespace) -> int:
    from edgec.report.history import History

    entry, report = History(args.db).get(args.id)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return EXIT_OK
    print(f"#{entry.id} {entry.model} for {entry.target} on {entry.device}" + (f", tagged {entry.tag}" if entry.tag else "")
          + f"; created {entry.created_utc}, added {entry.added_utc}")
    print(_format_bench(report))
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from edgec.errors import BadInputError
    from edgec.report.compare import comparison_rows, format_markdown, format_text
    from edgec.report.types import read_bench_report

    if len(args.reports) < 2:
        raise BadInputError("compare needs two or more reports")
    reports = [read_bench_report(path) for path in args.reports]
    names = [Path(path).name for path in args.reports]
    rows = comparison_rows(reports, names if len(set(names)) == len(names) else list(args.reports))
    print(format_markdown(rows) if args.markdown else format_text(rows), end="\n" if not args.markdown else "")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from edgec.artifact import check_writable
    from edgec.report.types import read_bench_report

    check_writable(args.output, "--output")
    paths = ([args.against] if args.against else []) + list(args.reports)
    reports = [read_bench_report(path) for path in paths]
    names = [Path(path).name for path in paths]
    names = names if len(set(names)) == len(names) else [str(path) for path in paths]
    if args.against:
        names[0] = f"old: {names[0]}"
    gates = _report_gates(args, names, reports)
    _write_html(args.output, list(zip(names, reports)), gates)
    print(f"report written to {args.output}")
    return EXIT_OK


def _report_gates(args: argparse.Namespace, names: list[str], reports: list[Any]) -> list[tuple[str, Any]]:
    """The verdicts `edgec report` shows: each report against its target's thresholds (--gate), and against --against."""
    from edgec.api import gate
    from edgec.gating import GateResult, default_thresholds
    from edgec.report.regression import RegressionThresholds, compare_reports

    gates = []
    new = list(zip(names, reports))[1 if args.against else 0:]
    if args.gate:
        for name, report in new:
            thresholds, source = default_thresholds(report)
            gates.append((f"{name} against {source}", gate(report, **thresholds)))
    if args.against:
        limits = RegressionThresholds(max_latency_regression=args.max_latency_regression)
        for name, report in new:
            gates.append((f"{name} against {names[0]} (latency growth at most {args.max_latency_regression:g}%)",
                          GateResult(tuple(compare_reports(report, reports[0], limits)))))
    return gates


def _write_html(path: str, named_reports: list[tuple[str, Any]], gates: Sequence[tuple[str, Any]] = ()) -> None:
    from edgec.artifact import write_text_atomic
    from edgec.report.html import render_html

    write_text_atomic(path, render_html(named_reports, gates=gates))


def _cmd_targets(args: argparse.Namespace) -> int:
    from edgec.compiler import builds
    from edgec.target import list_targets

    rows = []
    for target in list_targets():
        buildable, build_reason = builds(target)
        runs, run_reason = target.runnable_here()
        rows.append({"name": target.name, "runtime": target.runtime, "precision": target.precision,
                     "builds": buildable, "why_not_builds": build_reason, "runs_here": runs, "why": run_reason,
                     "description": target.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        built = "yes" if r["builds"] else f"no ({r['why_not_builds']})"
        here = "yes" if r["runs_here"] else f"no ({r['why']})"
        print(f"{r['name']:<{width}}  {r['runtime']:<11} {r['precision']:<5} builds: {built}; runs on this host: {here}")
        print(f"{'':<{width}}  {r['description']}")
    return EXIT_OK


def _cmd_target(args: argparse.Namespace) -> int:
    from edgec.target import load_target, shown

    print(json.dumps(shown(load_target(args.name)), indent=2))
    return EXIT_OK


def _cmd_inspect(args: argparse.Namespace) -> int:
    from edgec.model_info import format_info, inspect_model

    info = inspect_model(args.model, fmt=args.source_format, inputs=args.input, trust_source=args.trust_source)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
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
    from edgec.report.types import BenchReport

    result = run_demo(Path(args.output) if args.output else None, runs=args.runs, threads=args.threads, progress=args.say)
    print(_format_bench(BenchReport.from_dict(result.report)))
    print(result.precision)
    print()
    print(format_table(result.gate))
    print()
    print(f"files written to {result.workdir.resolve()}:")
    for role, path in result.files.items():
        print(f"  {role:<9} {path}")
    return EXIT_OK if result.gate.passed else EXIT_GATE_FAILED


def _add_input_map(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-map", action="append", default=[], metavar="KEY=NAME",
                        help="feed the .npz key KEY to the model input NAME (`edgec inspect` shows input names; repeatable)")


def _trust_flag(parser: argparse.ArgumentParser, action: str, condition: str = "") -> None:
    parser.add_argument("--trust-source", action="store_true",
                        help=f"{action} runs code when loaded (TorchScript, SavedModel, a .pt2 holding pickles){condition};"
                             " only for files from someone you trust")


def _add_db(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--db", metavar="PATH", help="history database (default: history.sqlite in edgec's user data dir)")


def _add_history_parser(commands: Any, verbose: argparse.ArgumentParser) -> None:
    history = commands.add_parser("history", parents=[verbose], help="keep bench reports to gate later builds against")
    actions = history.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("add", parents=[verbose], help="file a bench report, e.g. a release's with --tag v1.3")
    p.add_argument("report", help="report JSON written by `edgec bench --json`")
    p.add_argument("--tag", help="a release name for the report (one report per tag, model, target and device)")
    p.add_argument("--model", help="the name to file it under (default: the source model's file stem)")
    _add_db(p)
    p.set_defaults(func=_cmd_history_add)
    p = actions.add_parser("list", parents=[verbose], help="list filed reports, oldest first")
    p.add_argument("--model", help="only this model")
    p.add_argument("--target", help="only this target")
    p.add_argument("--device", help="only this device (CPU model, as listed)")
    _add_db(p)
    p.set_defaults(func=_cmd_history_list)
    p = actions.add_parser("show", parents=[verbose], help="show one filed report")
    p.add_argument("id", type=int, help="the report's id from `edgec history list`")
    p.add_argument("--json", action="store_true", help="print the report JSON as filed")
    _add_db(p)
    p.set_defaults(func=_cmd_history_show)


def _add_regression_options(parser: argparse.ArgumentParser) -> None:
    from edgec.report.regression import DEFAULT_CONFIDENCE

    g = parser.add_argument_group("regression against an earlier report (same device, threads and batch)")
    g.add_argument("--against", metavar="OLD.json", help="the report of the build to compare with, e.g. the last release's")
    g.add_argument("--against-history", action="store_true",
                   help="compare with a report from `edgec history` of the same model, target and device: the newest"
                        " earlier one, or the one --tag names")
    g.add_argument("--tag", help="with --against-history: the report tagged TAG, or 'latest' for the newest tagged one")
    _add_db(g)
    g.add_argument("--max-latency-regression", type=float, metavar="PCT",
                   help="fail if p50 or p90 grew more than PCT%% beyond noise: the bootstrap confidence interval of"
                        " new/old lies wholly above +PCT%% (judged on the raw timed runs)")
    g.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE, metavar="C",
                   help=f"two-sided confidence of the latency intervals (default {DEFAULT_CONFIDENCE})")
    g.add_argument("--max-accuracy-regression-pp", type=float, metavar="PP",
                   help="fail if top-1 accuracy fell more than PP percentage points (both reports need --labels)")
    g.add_argument("--max-size-growth", type=float, metavar="PCT", help="fail if the artifact grew more than PCT%% on disk")
    g.add_argument("--min-cosine-vs-old", type=float, metavar="F",
                   help="fail unless every sample's output provably has cosine >= F to the old artifact's (bounded from"
                        " both reports' cosine to the same float baseline on the same data)")
    g.add_argument("--allow-different-device", action="store_true",
                   help="compare reports measured on different CPUs, threads, batch or input shapes (refused otherwise)")


def build_parser() -> argparse.ArgumentParser:
    from edgec.benchmark import BENCH_RUNS
    from edgec.gating import THRESHOLD_NAMES

    parser = argparse.ArgumentParser(prog="edgec", description="Compile a trained model for an edge target, "
                                     "benchmark it against the float model, and gate its release.")
    parser.add_argument("--version", action="version", version=f"edgec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and show tracebacks on errors")
    # also accepted after the subcommand; SUPPRESS keeps a subcommand without it from resetting the global one
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="log details and show tracebacks on errors")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true",
                       help="no progress output (a terminal shows bars with ETA; a pipe gets one line per step)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from edgec.frontends import FORMATS

    p = commands.add_parser("compile", parents=[verbose, quiet], help="compile a model for a target into an artifact directory")
    p.add_argument("model", help="source model: .onnx, .pt2, TorchScript .pt, SavedModel dir, .keras or .tflite")
    p.add_argument("-t", "--target", required=True, help="target name (see `edgec targets`) or path to a .toml descriptor")
    p.add_argument("--calib", metavar="DATA.npz|random", help="calibration data for int8 targets, also the samples --verify and import checks run on;"
                        " 'random' for latency-only work")
    p.add_argument("-o", "--output", metavar="OUTDIR", help="output directory (default: <model>-<target> beside the model)")
    p.add_argument("--force", action="store_true", help="replace an earlier edgec artifact at the output path")
    p.add_argument("--slim", action="store_true",
                   help="keep only the deployable files (model, manifest, calibration): no source.onnx or saved"
                        " module copy; bench then needs --baseline for a float comparison")
    p.add_argument("--passes", metavar="A,B,C", help="run these passes instead of the target's pipeline")
    p.add_argument("--skip-passes", metavar="A,B", help="remove these passes from the pipeline")
    p.add_argument("--verify", action="store_true",
                   help="check after every pass that outputs still match (on --calib data, else random inputs)")
    p.add_argument("--from", dest="source_format", choices=list(FORMATS), help="the model's format (default: detected)")
    p.add_argument("--input", action="append", default=[], metavar="NAME:SHAPE[:DTYPE]",
                   help="declare an input, e.g. pixel_values:1x3x224x224 or input_ids:batchxseq:int64 (repeatable)")
    p.add_argument("--fix-shape", action="append", default=[], metavar="NAME:SHAPE",
                   help="make an input's shape static, e.g. input_ids:1x128 (repeatable)")
    _add_input_map(p)
    p.add_argument("--no-verify-import", action="store_true",
                   help="skip comparing the imported ONNX with the source model run in its own framework")
    _trust_flag(p, "load a model file even if it")
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

    p = commands.add_parser("bench", parents=[verbose, quiet], help="measure an artifact against its float baseline")
    p.add_argument("artifact", help="compile output directory, or a model file (.onnx, .tflite)")
    p.add_argument("--data", metavar="DATA.npz", help="samples keyed by input name (default: random feeds)")
    p.add_argument("--labels", metavar="L.npy", help="integer class per sample, for accuracy")
    _add_input_map(p)
    p.add_argument("--baseline", metavar="MODEL",
                   help="model to compare with, .onnx or .tflite, e.g. another toolchain's build (default: the"
                        " source's float ONNX kept in the artifact, on the artifact's runtime, or on ONNX Runtime"
                        " where that cannot load it); bench loads no file outside the artifact unless you name it")
    p.add_argument("--baseline-from", choices=["source", "onnx"],
                   help="for non-ONNX sources, the extra comparison with the source run in its own framework:"
                        " 'source' requires it, 'onnx' skips it (default: when the source is at hand and its"
                        " framework is installed)")
    p.add_argument("--source", metavar="MODEL",
                   help="the source model file for that comparison when the artifact does not keep it (it must be"
                        " the file that was compiled: its sha256 is checked)")
    p.add_argument("--shape", action="append", default=[], metavar="NAME:SHAPE",
                   help="shape of an input's random feeds (without --data), e.g. input_ids:8x128 (repeatable)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: the target's, else all cores)")
    p.add_argument("--warmup", type=int, default=10, help="untimed inferences per model (default 10)")
    p.add_argument("--runs", type=int, default=BENCH_RUNS,
                   help=f"timed inferences per model (default {BENCH_RUNS}: with fewer, `gate --against` missed a 10%% slowdown"
                        " more than once in 20 on a shared machine)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON ('-': print it to stdout instead of the table,"
                                                  " without progress)")
    p.add_argument("--html", metavar="FILE", help="also write the report as a self-contained HTML page with plots (as `edgec report`)")
    _trust_flag(p, "run the source in its framework even if it", " (only if compile had --trust-source too)")
    p.add_argument("--device", action="append", default=[], metavar="URL|NAME",
                   help="bench on an `edgec agent` (a URL or a name in devices.toml); repeatable: devices run"
                        " concurrently, one report each (--json gets a .NAME suffix)")
    p.add_argument("--token-file", metavar="FILE", help="the agent's bearer token (with --device URL)")
    p.add_argument("--ca-file", metavar="PEM", help="with --device https://...: trust the agent's certificate if this CA"
                                                   " (or the self-signed certificate itself) signed it")
    p.add_argument("--job", metavar="ID", help="with --device: fetch the result of an earlier job instead of submitting one")
    p.set_defaults(func=_cmd_bench)

    p = commands.add_parser("agent", parents=[verbose], help="serve benchmarks on this device over HTTP for `bench --device`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--token-file", metavar="FILE", help="file holding the bearer token clients must send")
    p.add_argument("--insecure-no-auth", action="store_true", help="accept requests without a token (loopback --host only)")
    p.add_argument("--workdir", metavar="DIR", help="artifact cache and job files (default: edgec's user cache dir)")
    p.add_argument("--max-upload-mb", type=float, default=512, help="largest upload accepted (default 512)")
    p.add_argument("--cache-mb", type=float, default=4096, help="artifact cache size; least recently used out first (default 4096)")
    p.add_argument("--queue", type=int, default=32, help="jobs waiting at most; beyond it clients get 429 (default 32)")
    p.add_argument("--job-timeout", type=float, default=1800, help="seconds a job may run (default 1800)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (with --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    p.set_defaults(func=_cmd_agent)

    p = commands.add_parser("devices", parents=[verbose], help="list the devices in devices.toml and whether they answer")
    p.set_defaults(func=_cmd_devices)

    p = commands.add_parser("device", parents=[verbose], help="show the facts an agent reports about its device")
    p.add_argument("name", help="device name in devices.toml")
    p.set_defaults(func=_cmd_device)

    p = commands.add_parser("gate", parents=[verbose], help="check a bench report against release thresholds (exit 1 on failure)")
    p.add_argument("report", help="report JSON written by `edgec bench --json`")
    p.add_argument("--policy", metavar="gate.toml",
                   help="thresholds file; command-line thresholds override it (with neither, and no --against: the"
                        " [thresholds] of the report's target)")
    for name in THRESHOLD_NAMES:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float, metavar="X", help=_THRESHOLD_HELP[name])
    _add_regression_options(p)
    p.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report")
    p.add_argument("--markdown", metavar="FILE", help="also write a Markdown summary")
    p.set_defaults(func=_cmd_gate)

    _add_history_parser(commands, verbose)

    p = commands.add_parser("compare", parents=[verbose], help="bench reports side by side (the first is the reference)")
    p.add_argument("reports", nargs="+", metavar="REPORT.json", help="reports written by `edgec bench --json`")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table instead of aligned text")
    p.set_defaults(func=_cmd_compare)

    p = commands.add_parser("report", parents=[verbose],
                            help="write bench reports as one self-contained HTML page with latency and drift plots")
    p.add_argument("reports", nargs="+", metavar="REPORT.json", help="reports written by `edgec bench --json`")
    p.add_argument("-o", "--output", required=True, metavar="report.html", help="the HTML file to write")
    p.add_argument("--gate", action="store_true", help="also show each report's verdicts against its target's [thresholds]")
    p.add_argument("--against", metavar="OLD.json",
                   help="an earlier report (e.g. the last release's): drawn alongside, with each report's latency regression verdict")
    p.add_argument("--max-latency-regression", type=float, default=5.0, metavar="PCT",
                   help="with --against: the p50/p90 growth allowed beyond noise (default 5)")
    p.set_defaults(func=_cmd_report)

    p = commands.add_parser("targets", parents=[verbose], help="list the built-in targets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_targets)

    p = commands.add_parser("target", parents=[verbose], help="show one resolved target descriptor")
    p.add_argument("name", help="target name or path to a .toml descriptor")
    p.set_defaults(func=_cmd_target)

    p = commands.add_parser("inspect", parents=[verbose],
                            help="show a model's inputs, outputs, opset, size and ops (any format edgec reads)")
    p.add_argument("model", help="model file or SavedModel dir, as for compile, or a compile output dir")
    p.add_argument("--from", dest="source_format", choices=list(FORMATS), help="the model's format (default: detected)")
    p.add_argument("--input", action="append", default=[], metavar="NAME:SHAPE[:DTYPE]",
                   help="declare an input for formats that record no shapes (TorchScript)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _trust_flag(p, "read a model file even if it")
    p.set_defaults(func=_cmd_inspect)

    p = commands.add_parser("passes", parents=[verbose], help="list the available graph passes")
    p.set_defaults(func=_cmd_passes)

    p = commands.add_parser("demo", parents=[verbose, quiet], help="train a digits CNN, compile it to int8, benchmark and gate it (no files needed)")
    p.add_argument("-o", "--output", help="working directory for the demo's files (default: edgec's folder in the"
                                          " user cache dir, printed at the end)")
    p.add_argument("--runs", type=int, default=200, help="timed inferences per model (default 200)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for the benchmark (default 1)")
    p.set_defaults(func=_cmd_demo)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that it unwinds (and cleans up) exactly as on Ctrl-C."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


#: Libraries every build reads or evaluates the model with (module -> name): their exceptions mean the
#: model given was refused.
_MODEL_LIBRARIES = {"onnx": "ONNX", "onnxruntime": "ONNX Runtime"}


def _environment_error(exc: BaseException) -> str | None:
    """The one line for failures the machine or the input's sheer size causes, not edgec; None for bugs."""
    if isinstance(exc, MemoryError):
        return "out of memory: the input declares more data than this machine can hold; use smaller inputs"
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply to read; flatten it"
    if isinstance(exc, UnicodeError):  # edgec writes only valid text: the undecodable bytes came in with the input
        return f"the input holds text that is not valid UTF-8 ({first_line(exc)})"
    library = _MODEL_LIBRARIES.get(type(exc).__module__.split(".")[0])
    if library:  # the libraries that read and evaluate every model refuse the one the user gave
        return f"{library} cannot process the model: {first_line(exc)}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.EACCES,
                                                  errno.EPERM, errno.EROFS, errno.ELOOP, errno.EMFILE, errno.EIO):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or first_line(exc)}{where}"
    return None


def _quiet_stdout() -> None:
    """Point stdout at /dev/null once its reader is gone (`edgec passes | head -1`), so the final flush is silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter, when a frontend loads it
    in_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    verbose = False
    try:
        args = build_parser().parse_args(argv)
        verbose = args.verbose
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        from edgec.progress import Progress

        with Progress(quiet=getattr(args, "quiet", False) or getattr(args, "json", None) == "-") as args.say:
            code = args.func(args)
        sys.stdout.flush()
        return code
    except AccuracyBudgetError as exc:  # the artifact was written; like a failed gate, not bad usage
        print(f"edgec: error: {exc}", file=sys.stderr)
        return EXIT_GATE_FAILED
    except EdgecError as exc:
        if verbose:
            traceback.print_exc()
        print(f"edgec: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK
    except KeyboardInterrupt as exc:
        print(f"edgec: {'terminated' if isinstance(exc, _Terminated) else 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a bare traceback
        if verbose:
            traceback.print_exc()
        line = _environment_error(exc)
        if line is not None:
            print(f"edgec: error: {line}", file=sys.stderr)
            return EXIT_USAGE
        print(f"edgec: internal error: {type(exc).__name__}: {first_line(exc)}; this is a bug in edgec, please report"
              " it with the output of the same command run with --verbose", file=sys.stderr)
        return EXIT_BUG
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
