"""CPU int8 side by side: ONNX Runtime fp32 vs edgec's int8 artifact vs ONNX Runtime's own quantizer.

For each model and thread count, one interleaved `edgec.harness.measure` run times four variants in
four fresh worker processes, so every ratio in the table was measured under the same noise:

- `fp32`: the source model in ONNX Runtime (the yardstick: speedup and drift are against it);
- `edgec`: `edgec.compile` for the host's int8 target (`host_target("onnxruntime", "int8")`);
- `ort`: `onnxruntime.quantization.quantize_static`, QDQ, uint8 activations, int8 per-channel
  weights, MinMax, after `quant_pre_process` (ORT's recommended, and fastest, configuration);
- `ort-rr`: the same with `reduce_range=True` (7-bit weights), what a CPU without VNNI needs.

See bench/README.md for what the numbers mean and how to run it. Run as a script: the harness spawns
worker processes, which re-import this module; that is why torch, ONNX Runtime and edgec are imported
inside the functions that need them, so no worker's memory is charged for libraries it never uses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Bump when the MobileNetV2 architecture, init or export changes, so a stale cached file is not reused.
MOBILENET_VERSION = "mobilenetv2-he-v1"
#: Random images MobileNetV2 is calibrated on, and (different ones) drift is measured on.
MOBILENET_CALIB, MOBILENET_EVAL = 32, 32
SEED = 0
MODELS = ("mobilenetv2", "digits")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Workload:
    """One model with its data: what it is calibrated on, what drift (and accuracy) is measured on."""

    name: str
    source: Path
    calib: list[dict[str, np.ndarray]]
    eval: list[dict[str, np.ndarray]]
    labels: np.ndarray | None
    data_note: str


@dataclass(frozen=True)
class Variant:
    """One model file to measure, and how long producing it took (None for the source model)."""

    label: str
    path: Path
    build_s: float | None
    note: str


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def mobilenet_v2() -> Any:
    """MobileNetV2 (width 1.0, 224x224, 1000 classes) with He fan-in init, in eval mode.

    Why He fan-in instead of PyTorch's defaults: with default inits the logits of a random 53-layer
    network shrink to ~1e-9 (FINDINGS), so int8 drift against them would be noise over noise;
    `std = sqrt(2 / fan_in)` keeps activations ~1 through every ReLU6 layer. BatchNorm keeps its
    identity statistics (mean 0, var 1), so folding it is exact and the weights stay He-scaled.
    """
    import torch
    from torch import nn

    def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if relu:
            layers.append(nn.ReLU6())
        return nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        """1x1 expand -> depthwise 3x3 -> 1x1 linear projection, with a skip when shapes allow."""

        def __init__(self, cin: int, cout: int, stride: int, expand: int):
            super().__init__()
            hidden = cin * expand
            layers = [conv_bn(cin, hidden, 1)] if expand != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, relu=False)]
            self.body = nn.Sequential(*layers)
            self.skip = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.body(x) if self.skip else self.body(x)

    # (expansion t, output channels c, repeats n, first stride s): the paper's Table 2.
    config = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
    layers: list[nn.Module] = [conv_bn(3, 32, 3, 2)]
    cin = 32
    for t, c, n, s in config:
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += [conv_bn(cin, 1280, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 1000)]
    model = nn.Sequential(*layers)
    torch.manual_seed(SEED)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
    return model.eval()


def mobilenetv2_onnx(cache_dir: Path) -> Path:
    """Path of the exported MobileNetV2 (static batch 1, opset 18), exporting and caching it on first use."""
    cached = cache_dir / f"{MOBILENET_VERSION}.onnx"
    if cached.is_file():
        return cached
    import torch

    from edgec.demo import _quiet_exporter

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as staging, _quiet_exporter():
        staged = Path(staging) / cached.name
        torch.onnx.export(mobilenet_v2(), (torch.zeros(1, 3, 224, 224),), str(staged), input_names=["image"],
                          output_names=["logits"], opset_version=18, dynamo=True, external_data=False)
        os.replace(staged, cached)
    return cached


def mobilenetv2_workload(cache_dir: Path) -> Workload:
    """Random weights and random images: the latency is real, the drift only shows the numerics held."""
    rng = np.random.default_rng(SEED)
    images = rng.standard_normal((MOBILENET_CALIB + MOBILENET_EVAL, 1, 3, 224, 224)).astype(np.float32)
    feeds = [{"image": image} for image in images]
    return Workload("mobilenetv2", mobilenetv2_onnx(cache_dir), feeds[:MOBILENET_CALIB], feeds[MOBILENET_CALIB:],
                    None, f"random weights (He init); calib {MOBILENET_CALIB} / eval {MOBILENET_EVAL} random images")


def digits_workload(cache_dir: Path) -> Workload:
    """edgec's demo CNN trained on scikit-learn's digits: real data, so accuracy means something."""
    from edgec.demo import INPUT_NAME, digits_cnn_onnx, digits_data

    data = digits_data()
    calib_x, _ = data.calib
    test_x, test_y = data.test
    return Workload("digits", digits_cnn_onnx(cache_dir / "demo", data),
                    [{INPUT_NAME: x[None]} for x in calib_x], [{INPUT_NAME: x[None]} for x in test_x], test_y,
                    f"trained CNN; calib {len(calib_x)} / test {len(test_x)} held-out digits")


# --------------------------------------------------------------------------------------------
# Quantized variants
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stopwatch() -> Iterator[list[float]]:
    """Yield a one-element list that holds the block's wall time in seconds once it exits."""
    elapsed = [0.0]
    start = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed[0] = time.perf_counter() - start


def build_variants(work: Workload, workdir: Path, say: Progress) -> list[Variant]:
    """The four variants of `work.source`; calibration wall time is measured around each build."""
    import edgec.target
    from edgec.compiler import compile as compile_model
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    class Reader(CalibrationDataReader):
        """ORT pulls calibration feeds one at a time."""

        def __init__(self, feeds: Sequence[dict[str, np.ndarray]]):
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    target = edgec.target.host_target("onnxruntime", "int8")
    prepped = workdir / "ort-prep.onnx"
    # ORT's first pre-processing imports sympy and its shape inference (~2.5 s), and edgec's first
    # compile imports onnxscript (~0.7 s): pay those once, untimed, so build times compare per-model work.
    quant_pre_process(str(work.source), str(prepped))
    calib_npz = workdir / "calib.npz"
    np.savez(calib_npz, **{name: np.concatenate([f[name] for f in work.calib]) for name in work.calib[0]})
    say(f"{work.name}: edgec compile for {target.name}")
    with _stopwatch() as edgec_s:
        result = compile_model(work.source, target, calib=calib_npz, output_dir=workdir / "edgec", force=True,
                               progress=lambda message: say(f"{work.name}: edgec: {message.strip()}"))
    variants = [
        Variant("fp32", work.source, None, "source model"),
        Variant("edgec", result.model_path, edgec_s[0], f"edgec compile ({target.name})"),
    ]
    say(f"{work.name}: ORT quant_pre_process")
    with _stopwatch() as prep_s:
        quant_pre_process(str(work.source), str(prepped))
    for label, reduce_range in (("ort", False), ("ort-rr", True)):
        say(f"{work.name}: ORT quantize_static reduce_range={reduce_range}")
        path = workdir / f"{label}.onnx"
        with _stopwatch() as quant_s:
            quantize_static(str(prepped), str(path), Reader(work.calib), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        variants.append(Variant(label, path, prep_s[0] + quant_s[0],
                                f"quant_pre_process + quantize_static u8s8 per-channel reduce_range={reduce_range}"))
    return variants


# --------------------------------------------------------------------------------------------
# Measurement and reporting
# --------------------------------------------------------------------------------------------


def measure_variants(work: Workload, variants: Sequence[Variant], threads: int, runs: int, warmup: int,
                     say: Progress) -> list[dict[str, Any]]:
    """One interleaved run of every variant; one row per variant with latency, speedup and drift vs fp32."""
    from edgec.harness import ModelRef, drift, measure

    refs = [ModelRef(v.path, "onnxruntime", {}, v.label) for v in variants]
    sections = measure(refs, work.eval, threads=threads, warmup=warmup, runs=runs, collect_outputs=True,
                       progress=lambda message: say(f"{work.name} @ {threads}t: {message}"))
    outputs = {label: section.pop("outputs") for label, section in sections.items()}
    base = sections["fp32"]
    rows = []
    for variant in variants:
        section = sections[variant.label]
        moved = drift(outputs[variant.label], outputs["fp32"], work.labels)
        first = next(iter(moved["outputs"].values()))
        rows.append({
            "model": work.name,
            "threads": threads,
            "variant": variant.label,
            "note": variant.note,
            "build_s": variant.build_s,
            "speedup_p50": base["latency_ms"]["p50"] / section["latency_ms"]["p50"],
            "cosine_min": first["cosine_min"],
            "cosine_mean": first["cosine_mean"],
            "top1_agreement": moved["top1_agreement"],
            "accuracy": moved["accuracy"],
            **section,
        })
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


#: The latency/drift table: (header, how one row's cell is written).
_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("model", lambda r: r["model"]),
    ("threads", lambda r: str(r["threads"])),
    ("variant", lambda r: r["variant"]),
    ("p50 ms", lambda r: f"{r['latency_ms']['p50']:.3f}"),
    ("min ms", lambda r: f"{r['latency_ms']['min']:.3f}"),
    ("p90 ms", lambda r: f"{r['latency_ms']['p90']:.3f}"),
    ("speedup vs fp32", lambda r: f"{r['speedup_p50']:.2f}x"),
    ("cos min", lambda r: f"{r['cosine_min']:.4f}"),
    ("cos mean", lambda r: f"{r['cosine_mean']:.4f}"),
    ("top-1 agree", lambda r: _fmt(r["top1_agreement"], ".3f")),
    ("accuracy", lambda r: _fmt(r["accuracy"], ".4f")),
    ("size MB", lambda r: f"{r['size_bytes'] / 1e6:.2f}"),
    ("peak RSS MB", lambda r: f"{r['peak_rss_mb']:.0f}"),
)


def markdown(rows: Sequence[dict[str, Any]], notes: dict[str, str]) -> str:
    """The latency/drift table, the build-time table (one line per model and variant), the data notes."""
    lines = [
        "| " + " | ".join(header for header, _ in _COLUMNS) + " |",
        "|" + "|".join("---" if header in ("model", "variant") else "---:" for header, _ in _COLUMNS) + "|",
        *("| " + " | ".join(cell(r) for _, cell in _COLUMNS) + " |" for r in rows),
        "",
        "| model | variant | build + calibration s |",
        "|---|---|---:|",
    ]
    builds = {(r["model"], r["variant"]): r["build_s"] for r in rows if r["build_s"] is not None}
    lines += [f"| {model} | {variant} | {seconds:.2f} |" for (model, variant), seconds in builds.items()]
    lines += ["", *(f"- {model}: {note}" for model, note in notes.items())]
    return "\n".join(lines)


def host_info() -> dict[str, Any]:
    """What the numbers depend on: CPU flags that pick ORT's int8 kernels, library versions, edgec's target."""
    import onnxruntime

    import edgec.target

    flags = edgec.target.host_cpu_flags() or frozenset()
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "vnni": any("vnni" in flag for flag in flags),
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "edgec_target": edgec.target.host_target("onnxruntime", "int8").name,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts (default 1,2)")
    parser.add_argument("--runs", type=int, default=200, help="timed inferences per variant per thread count")
    parser.add_argument("--warmup", type=int, default=20, help="untimed inferences per variant first")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--json", type=Path, help="write the rows and host facts to this file")
    parser.add_argument("--cache-dir", type=Path, help="where exported models are cached (default: user cache)")
    args = parser.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    if args.runs < 1 or args.warmup < 0 or not args.threads or min(args.threads) < 1:
        parser.error("--runs must be >= 1, --warmup >= 0 and every thread count >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import platformdirs

    cache_dir = args.cache_dir or Path(platformdirs.user_cache_dir("edgec"))

    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    loaders = {"mobilenetv2": lambda: mobilenetv2_workload(cache_dir / "bench"),
               "digits": lambda: digits_workload(cache_dir)}
    rows: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="edgec-bench-") as tmp:
        for name in args.models:
            say(f"{name}: preparing the model")
            work = loaders[name]()
            notes[name] = work.data_note
            workdir = Path(tmp) / name
            workdir.mkdir()
            variants = build_variants(work, workdir, say)
            for threads in args.threads:
                rows += measure_variants(work, variants, threads, args.runs, args.warmup, say)
    wall_s = time.perf_counter() - started
    print(markdown(rows, notes))
    print(f"\n{args.runs} timed runs per variant, batch 1; wall time {wall_s:.0f} s")
    if args.json is not None:
        from edgec.artifact import write_text_atomic

        report = {"schema": "edgec.bench.cpu_int8/1", "host": host_info(), "runs": args.runs, "warmup": args.warmup,
                  "wall_s": wall_s, "models": notes, "rows": rows}
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
