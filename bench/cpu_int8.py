"""CPU int8 side by side: ONNX Runtime fp32 vs edgec's int8 artifact vs ONNX Runtime's own quantizer.

For each model and thread count, one interleaved `edgec.harness.measure` run times four variants in
four fresh worker processes, so every ratio in the table was measured under the same noise:

- `fp32`: the source model in ONNX Runtime (the yardstick: speedup and drift are against it);
- `edgec`: `edgec.compile` for the host's int8 target (`host_target("onnxruntime", "int8")`);
- `ort`: `onnxruntime.quantization.quantize_static`, QDQ, uint8 activations, int8 per-channel
  weights, MinMax, after `quant_pre_process` (ORT's recommended, and fastest, configuration);
- `ort-rr`: the same with `reduce_range=True` (7-bit weights), what a CPU without VNNI needs.

See bench/README.md for what the numbers mean and how to run it. torch, ONNX Runtime and edgec are
imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchlib import (SEED, Column, Progress, default_cache_dir, fmt, host_facts, markdown_table, mobilenetv2_onnx, parse_suite_args,
                      progress_printer, stopwatch)

#: Random images MobileNetV2 is calibrated on, and (different ones) drift is measured on.
MOBILENET_CALIB, MOBILENET_EVAL = 32, 32
MODELS = ("mobilenetv2", "digits")


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


def mobilenetv2_workload(cache_dir: Path) -> Workload:
    """Random weights and random images: the latency is real, the drift only shows the numerics held."""
    rng = np.random.default_rng(SEED)
    images = rng.standard_normal((MOBILENET_CALIB + MOBILENET_EVAL, 1, 3, 224, 224)).astype(np.float32)
    feeds = [{"image": image} for image in images]
    return Workload("mobilenetv2", mobilenetv2_onnx(cache_dir), feeds[:MOBILENET_CALIB], feeds[MOBILENET_CALIB:],
                    None, f"random weights (He init); calib {MOBILENET_CALIB} / eval {MOBILENET_EVAL} random images")


def prepared_workloads(names: Sequence[str], loaders: Mapping[str, Callable[[], Workload]],
                       say: Progress) -> Iterator[tuple[Workload, Path]]:
    """Each named workload with an empty working dir of its own; every dir is removed when the loop ends."""
    with tempfile.TemporaryDirectory(prefix="edgec-bench-") as tmp:
        for name in names:
            say(f"{name}: preparing the model")
            workdir = Path(tmp) / name
            workdir.mkdir()
            yield loaders[name](), workdir


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


def ort_reader(feeds: Sequence[dict[str, np.ndarray]]) -> Any:
    """An ONNX Runtime `CalibrationDataReader` over `feeds` (ORT pulls calibration feeds one at a time)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    return Reader()


def ort_prepare(source: Path, prepped: Path) -> float:
    """`quant_pre_process` `source` into `prepped`; the seconds the second of two runs took.

    Why twice: ORT's first pre-processing imports sympy and its shape inference (~2.5 s); paying
    that untimed keeps build times per-model work. Why `auto_merge`: without it ORT's symbolic shape
    inference gives up on MiniLM's dynamic dims ("Incomplete symbolic shape inference"); a model
    with static shapes has no symbolic dims to merge, so it changes nothing there.
    """
    from onnxruntime.quantization import quant_pre_process

    quant_pre_process(str(source), str(prepped), auto_merge=True)
    with stopwatch() as seconds:
        quant_pre_process(str(source), str(prepped), auto_merge=True)
    return seconds[0]


def ort_static(prepped: Path, output: Path, feeds: Sequence[dict[str, np.ndarray]], *, reduce_range: bool,
               activation: str = "QUInt8", weight: str = "QInt8", method: str = "MinMax") -> float:
    """ORT's `quantize_static` (QDQ, per-channel weights) of `prepped` into `output`; its seconds.

    `activation`/`weight` name `QuantType` members, `method` a `CalibrationMethod` member.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with stopwatch() as seconds:
        quantize_static(str(prepped), str(output), ort_reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range, activation_type=QuantType[activation], weight_type=QuantType[weight],
                        calibrate_method=CalibrationMethod[method])
    return seconds[0]


def build_variants(work: Workload, workdir: Path, say: Progress) -> list[Variant]:
    """The four variants of `work.source`; calibration wall time is measured around each build."""
    import edgec.target
    from edgec.compiler import compile as compile_model
    from edgec.data import save_samples

    target = edgec.target.host_target("onnxruntime", "int8")
    prepped = workdir / "ort-prep.onnx"
    say(f"{work.name}: ORT quant_pre_process")
    prep_s = ort_prepare(work.source, prepped)
    calib_npz = workdir / "calib.npz"
    save_samples(calib_npz, work.calib)
    say(f"{work.name}: edgec compile for {target.name}")
    with stopwatch() as edgec_s:
        result = compile_model(work.source, target, calib=calib_npz, output_dir=workdir / "edgec", force=True,
                               progress=lambda message: say(f"{work.name}: edgec: {message.strip()}"))
    variants = [
        Variant("fp32", work.source, None, "source model"),
        Variant("edgec", result.model_path, edgec_s[0], f"edgec compile ({target.name})"),
    ]
    for label, reduce_range in (("ort", False), ("ort-rr", True)):
        say(f"{work.name}: ORT quantize_static reduce_range={reduce_range}")
        path = workdir / f"{label}.onnx"
        quant_s = ort_static(prepped, path, work.calib, reduce_range=reduce_range)
        variants.append(Variant(label, path, prep_s + quant_s,
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


#: The latency/drift table: (header, how one row's cell is written).
_COLUMNS: tuple[Column, ...] = (
    ("model", lambda r: r["model"]),
    ("threads", lambda r: str(r["threads"])),
    ("variant", lambda r: r["variant"]),
    ("p50 ms", lambda r: f"{r['latency_ms']['p50']:.3f}"),
    ("min ms", lambda r: f"{r['latency_ms']['min']:.3f}"),
    ("p90 ms", lambda r: f"{r['latency_ms']['p90']:.3f}"),
    ("speedup vs fp32", lambda r: f"{r['speedup_p50']:.2f}x"),
    ("cos min", lambda r: f"{r['cosine_min']:.4f}"),
    ("cos mean", lambda r: f"{r['cosine_mean']:.4f}"),
    ("top-1 agree", lambda r: fmt(r["top1_agreement"], ".3f")),
    ("accuracy", lambda r: fmt(r["accuracy"], ".4f")),
    ("size MB", lambda r: f"{r['size_bytes'] / 1e6:.2f}"),
    ("peak RSS MB", lambda r: f"{r['peak_rss_mb']:.0f}"),
)


def markdown(rows: Sequence[dict[str, Any]], notes: dict[str, str]) -> str:
    """The latency/drift table, the build-time table (one line per model and variant), the data notes."""
    lines = [
        markdown_table(_COLUMNS, rows, left=("model", "variant")),
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
    import edgec.target

    flags = edgec.target.host_cpu_flags() or frozenset()
    return {
        **host_facts(),
        "vnni": any("vnni" in flag for flag in flags),
        "edgec_target": edgec.target.host_target("onnxruntime", "int8").name,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return parse_suite_args(__doc__.splitlines()[0], MODELS, argv, threads="1,2", runs=200, warmup=20)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cache_dir = args.cache_dir or default_cache_dir()
    started = time.perf_counter()
    say = progress_printer()

    loaders = {"mobilenetv2": lambda: mobilenetv2_workload(cache_dir / "bench"),
               "digits": lambda: digits_workload(cache_dir)}
    rows: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    for work, workdir in prepared_workloads(args.models, loaders, say):
        notes[work.name] = work.data_note
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
