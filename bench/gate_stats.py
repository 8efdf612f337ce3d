"""How often does `edgec gate --against` cry wolf, and how often does it catch a real 10% slowdown?

Two fp32 ONNX models differ only in depth: `base` is a chain of `--layers` (default 20) MatMul+Relu blocks on a
[64, 256] input, `slow` has 10% more blocks, so it does 10% more arithmetic (its measured slowdown
is printed: the fixed per-call cost makes it a little under 10%). The script runs
`edgec.benchmark.bench` (with `--baseline` a yardstick: a copy of `base`, timed in the same interleaved
rounds; `--absolute` leaves it out) on `base` `--pairs + 1` times and on `slow` `--pairs` times, alternating
`base, slow, slow, base, ...` so slow drift of the machine hits both alike, each bench a separate
call with its own fresh worker, as consecutive CI jobs would be. Then, at each run count in
`--runs` (the first R timed runs of each bench, which is what a bench with `--runs R` times):

- false alarms: `base` bench i+1 gated against `base` bench i, for `--pairs` pairs;
- caught: `slow` bench i gated against `base` bench i, for `--pairs` pairs;
- caught at exactly `--shift`: the false-alarm pairs again, the newer bench's runs multiplied by `1 + shift/100`
  (the model's slowdown is only measured, this one is exact, and keeps the real noise between two benches);

both with `--max-latency-regression --allowed` at 95% confidence (a pair fails when p50 or p90 fails).

    python bench/gate_stats.py                       # 20 pairs, runs 200,400,600,800,1200, allowed 5%
    python bench/gate_stats.py --absolute            # the same without a baseline: absolute latencies
    python bench/gate_stats.py --pairs 20 --runs 100,200 --json gate_stats.json
    python bench/gate_stats.py --save runs/ ...      # also keep every bench report (reports.json) ...
    python bench/gate_stats.py --load runs/ ...      # ... and judge them again without re-measuring
    python bench/gate_stats.py --save runs/ --resume --max-benches 4   # a few benches per call, appended:
                                                     # a long measurement in pieces (under a lock, say)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SEED = 0
WIDTH, ROWS = 256, 64


def chain_model(path: Path, layers: int) -> Path:
    """`layers` x (MatMul [WIDTH, WIDTH] -> Relu) on x[ROWS, WIDTH], seeded weights, opset 17."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)
    nodes, weights, last = [], [], "x"
    for k in range(layers):
        weights.append(numpy_helper.from_array(rng.normal(0, WIDTH ** -0.5, (WIDTH, WIDTH)).astype(np.float32), f"w{k}"))
        nodes += [helper.make_node("MatMul", [last, f"w{k}"], [f"m{k}"]), helper.make_node("Relu", [f"m{k}"], [f"r{k}"])]
        last = f"r{k}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, WIDTH])],
                              [helper.make_tensor_value_info(last, TensorProto.FLOAT, [ROWS, WIDTH])], weights)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def _truncated(report: dict[str, Any], runs: int) -> dict[str, Any]:
    """The report as a bench with `--runs runs` would have it: the first `runs` timed runs."""
    cut = {**report, "latency_ms": {**report["latency_ms"], "samples": report["latency_ms"]["samples"][:runs]}}
    if report["baseline"]:
        base = report["baseline"]
        cut["baseline"] = {**base, "latency_ms": {**base["latency_ms"], "samples": base["latency_ms"]["samples"][:runs]}}
    return cut


def _fails(new: dict[str, Any], old: dict[str, Any], allowed: float) -> bool:
    from edgec.report.regression import RegressionThresholds, compare_reports
    from edgec.report.types import BenchReport

    checks = compare_reports(BenchReport.from_dict(new), BenchReport.from_dict(old), RegressionThresholds(max_latency_regression=allowed))
    return not all(check.passed for check in checks)


def _bench_all(args: argparse.Namespace, runs: int, slow_layers: int,
               reports: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Bench `base` `pairs + 1` times and `slow` `pairs` times, alternating, each a separate `bench` call.

    Benches already in `reports` (an earlier `--resume`d call) are skipped; at most `--max-benches` new ones run.
    """
    from edgec.benchmark import bench

    order = ["base"] + [name for i in range(args.pairs) for name in (("slow", "base") if i % 2 == 0 else ("base", "slow"))]
    done = len(reports["base"]) + len(reports["slow"])
    todo = order[done:done + args.max_benches] if args.max_benches else order[done:]
    with tempfile.TemporaryDirectory() as tmp:
        models = {"base": chain_model(Path(tmp) / "base.onnx", args.layers),
                  "slow": chain_model(Path(tmp) / "slow.onnx", slow_layers)}
        yardstick = chain_model(Path(tmp) / "yardstick.onnx", args.layers)
        for k, name in enumerate(todo, start=done + 1):
            print(f"bench {k}/{len(order)}: {name}", file=sys.stderr, flush=True)
            reports[name].append(bench(models[name], runs=runs, warmup=20, threads=args.threads,
                                       baseline=None if args.absolute else yardstick))
    return reports


def _scaled(report: dict[str, Any], factor: float) -> dict[str, Any]:
    """The report with every timed run of its artifact (not of its yardstick) `factor` times longer."""
    latency = report["latency_ms"]
    return {**report, "latency_ms": {**latency, "samples": [round(v * factor, 6) for v in latency["samples"]]}}


def _rates(reports: dict[str, list[dict[str, Any]]], run_counts: list[int], pairs: int, allowed: float,
           shift: float) -> list[dict[str, Any]]:
    """False alarms and catches at each run count (the first R runs of each bench)."""
    rows = []
    for runs in run_counts:
        base_reports = [_truncated(r, runs) for r in reports["base"]]
        slow_reports = [_truncated(r, runs) for r in reports["slow"]]
        false_alarms = [_fails(base_reports[i + 1], base_reports[i], allowed) for i in range(pairs)]
        caught = [_fails(slow_reports[i], base_reports[i], allowed) for i in range(pairs)]
        shifted = [_fails(_scaled(base_reports[i + 1], 1 + shift / 100), base_reports[i], allowed) for i in range(pairs)]
        rows.append({"runs": runs, "false_alarms": sum(false_alarms), "caught": sum(caught),
                     "caught_shifted": sum(shifted), "pairs": pairs})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20, help="pairs per rate (default 20)")
    parser.add_argument("--runs", default="200,400,600,800,1200", help="run counts to evaluate, comma-separated (the largest is benched)")
    parser.add_argument("--layers", type=int, default=20, help="MatMul blocks of the base model (default 20)")
    parser.add_argument("--slow-layers", type=int, help="MatMul blocks of the slow model (default: 10%% more than --layers)")
    parser.add_argument("--allowed", type=float, default=5.0, help="--max-latency-regression PCT (default 5)")
    parser.add_argument("--shift", type=float, default=10.0,
                        help="also gate each false-alarm pair with the newer bench's runs made exactly PCT%% slower"
                             " (default 10): catches of an exact slowdown under the real bench-to-bench noise")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--absolute", action="store_true",
                        help="bench without the yardstick baseline, so the gate compares absolute latencies")
    parser.add_argument("--json", type=Path, help="write the rates and every pair's verdicts here")
    parser.add_argument("--save", type=Path, metavar="DIR", help="also write every bench report to DIR/reports.json")
    parser.add_argument("--load", type=Path, metavar="DIR", help="judge the reports an earlier --save kept instead of benching")
    parser.add_argument("--resume", action="store_true", help="continue the benches kept in --save DIR (same options)")
    parser.add_argument("--max-benches", type=int, metavar="N", help="run at most N more benches in this call")
    args = parser.parse_args(argv)
    run_counts = sorted(int(r) for r in args.runs.split(","))
    slow_layers = args.slow_layers or round(args.layers * 1.1)

    from edgec.report.host import cpu_model

    started = time.monotonic()
    if args.load:
        reports = json.loads((args.load / "reports.json").read_text())
    else:
        kept = args.save / "reports.json" if args.resume and args.save else None
        reports = json.loads(kept.read_text()) if kept and kept.exists() else {"base": [], "slow": []}
        reports = _bench_all(args, run_counts[-1], slow_layers, reports)
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        temp = args.save / "reports.json.tmp"
        temp.write_text(json.dumps(reports) + "\n")
        temp.replace(args.save / "reports.json")
    pairs = min(args.pairs, len(reports["slow"]), len(reports["base"]) - 1)
    if pairs < 1:
        print(f"{len(reports['base'])} base and {len(reports['slow'])} slow benches so far: no pair to judge yet")
        return 0
    rows = _rates(reports, run_counts, pairs, args.allowed, args.shift)
    import numpy as np

    p50 = {name: float(np.median([r["latency_ms"]["p50"] for r in rs])) for name, rs in reports.items()}
    spread = [r["latency_ms"]["p50"] / p50["base"] - 1 for r in reports["base"]]
    if args.absolute:
        slowdown = p50["slow"] / p50["base"] - 1
    else:  # slow vs the yardstick (the base model's bytes) timed in the same rounds
        slowdown = float(np.median([1 / r["speedup_p50"] for r in reports["slow"]])) - 1
    print(f"CPU: {cpu_model()}; {args.threads} thread(s); base {args.layers} blocks p50 {p50['base']:.3f} ms,"
          f" slow {slow_layers} blocks p50 {p50['slow']:.3f} ms (+{slowdown * 100:.1f}%"
          f"{' measured interleaved with the base model' if not args.absolute else ''});"
          f" base p50 across benches {min(spread) * 100:+.1f}%..{max(spread) * 100:+.1f}% of its median;"
          f" allowed +{args.allowed:g}% at 95%; {time.monotonic() - started:.0f} s")
    print(f"| runs | false alarms (same model) | slower model caught (+{slowdown * 100:.1f}%) |"
          f" same model's runs x{1 + args.shift / 100:g} caught |")
    print("|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['runs']} | {row['false_alarms']}/{row['pairs']} | {row['caught']}/{row['pairs']} |"
              f" {row['caught_shifted']}/{row['pairs']} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "p50_ms": p50, "cpu_model": cpu_model(), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}},
                                        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
