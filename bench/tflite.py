"""TFLite side by side: edgec's `.tflite` targets vs TensorFlow's own converter vs ONNX Runtime, in one run.

For each model and thread count, one interleaved `edgec.harness.measure` run times every variant in
its own fresh worker process (LiteRT with XNNPACK for `.tflite`, ONNX Runtime for `.onnx`), so every
ratio in the table was measured under the same noise:

- `tflite-fp32`: `edgec.compile(model.onnx, "tflite-fp32")`: the yardstick the speedups divide;
- `tflite-int8`: `edgec.compile(model.onnx, "tflite-int8", calib=...)`: edgec's own lowering and
  calibration (minilm also `tflite-int8-dynamic`: dynamic-range int8 MatMuls, edgec's transformer recipe);
- `tf-fp32`, `tf-int8`: TensorFlow's `tf.lite.TFLiteConverter` of the same model (the Keras model;
  for MiniLM the TensorFlow function of `tf_minilm.py`, built from the same weights), plain and full
  int8 (representative dataset = the SAME calibration samples, int8 builtin ops only, float input and
  output); minilm also `tf-dynamic`, the converter's dynamic-range int8 (its recipe for transformers);
- `ort-fp32`: the ONNX model in ONNX Runtime; `ort-int8`: edgec's int8 for this host's CPU
  (`host_target("onnxruntime", "int8")`), calibrated on the same samples.

The drift columns compare each variant with the float model (Keras itself for Keras models, the ONNX
in ONNX Runtime for MiniLM) on held-out data no build saw. See bench/README.md. Run as a script: the
harness's workers re-import this module, so heavy libraries are imported inside functions.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchlib import (SEED, Column, Progress, default_cache_dir, fmt, host_facts, markdown_table, parse_suite_args,
                      progress_printer, stopwatch)
from cpu_int8 import prepared_workloads
from int8_accuracy import DYNAMIC, Failure
from keras_models import digits_keras, load_keras, mobilenetv2_keras, nhwc, onnx_export_cached
from tf_minilm import tf_sentence_embedder
from minilm import minilm_onnx, sentences, tokenize

MODELS = ("mobilenetv2", "digits", "minilm")
MOBILENET_CALIB, MOBILENET_EVAL = 32, 32
#: MiniLM is timed on sentences padded to the bundled tokenizer's own length, one fixed shape: LiteRT
#: re-allocates its tensors whenever an input's shape changes, which ragged feeds would put in every timing.
MINILM_TIMING_TOKENS = 128
MINILM_MIN_COSINE = 0.99
#: The issue's bars: edgec's int8 no slower than 1.05x the converter's, cosine at least the converter's.
MAX_LATENCY_RATIO = 1.05
#: Which converter variant each edgec int8 variant is judged against: full int8 with full int8, and MiniLM's
#: dynamic-range int8 (`int8_accuracy.DYNAMIC`: int8 MatMul weights, activations quantized per call) with the
#: converter's dynamic-range recipe.
VERSUS = {"tflite-int8": "tf-int8", "tflite-int8-dynamic": "tf-dynamic"}


Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class Workload:
    """One model: its ONNX (what edgec compiles), its Keras file (what the converter converts) and its data."""

    name: str
    onnx: Path
    keras: Path | None  # the float reference's Keras file; None: ONNX Runtime fp32 is the reference
    tf_model: Callable[[], Callable[[], Any]] | None  # loads the TF model, returns what makes its TFLiteConverter
    calib: list[Feeds]
    eval: list[Feeds]
    timing: list[Feeds]  # what latency is measured on (eval, or eval at one fixed shape)
    labels: np.ndarray | None
    export_s: float | None  # tf2onnx's Keras -> ONNX seconds; None when cached or not a Keras model
    data_note: str


@dataclass(frozen=True)
class Built:
    """A variant's model file, the runtime that runs it, and the seconds producing it took."""

    label: str
    path: Path
    runtime: str
    build_s: float | None
    note: str


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------


def mobilenetv2_workload(cache_dir: Path) -> Workload:
    """Keras MobileNetV2 with He-init random weights; random NHWC images (latency is what matters here)."""
    keras_path = mobilenetv2_keras(cache_dir)
    onnx_path, export_s = onnx_export_cached(keras_path)
    rng = np.random.default_rng(SEED)
    images = rng.standard_normal((MOBILENET_CALIB + MOBILENET_EVAL, 1, 224, 224, 3)).astype(np.float32)
    feeds = [{"image": image} for image in images]
    return Workload("mobilenetv2", onnx_path, keras_path, keras_converter(keras_path), feeds[:MOBILENET_CALIB], feeds[MOBILENET_CALIB:],
                    feeds[MOBILENET_CALIB:], None, export_s,
                    f"keras.applications.MobileNetV2(weights=None), He-init random weights; "
                    f"calib {MOBILENET_CALIB} / eval {MOBILENET_EVAL} random images")


def digits_workload(cache_dir: Path) -> Workload:
    """The Keras twin of the demo CNN, trained on scikit-learn's digits; calibrated and evaluated on held-out splits."""
    from edgec.demo import digits_data

    data = digits_data()
    keras_path = digits_keras(cache_dir, data)
    onnx_path, export_s = onnx_export_cached(keras_path)
    calib = [{"pixels": x[None]} for x in nhwc(data.calib[0])]
    test = [{"pixels": x[None]} for x in nhwc(data.test[0])]
    return Workload("digits", onnx_path, keras_path, keras_converter(keras_path), calib, test, test, data.test[1], export_s,
                    f"Keras twin of edgec's demo CNN, trained; calib {len(calib)} / test {len(test)} held-out digits")


def padded(feeds: Sequence[Feeds], tokens: int) -> list[Feeds]:
    """Each sentence truncated or padded (token 0, mask 0: what the tokenizer pads with) to `tokens`."""
    def fit(array: np.ndarray) -> np.ndarray:
        array = array[:, :tokens]
        return np.pad(array, ((0, 0), (0, tokens - array.shape[1])))

    return [{name: fit(array) for name, array in feed.items()} for feed in feeds]


def minilm_workload(cache_dir: Path) -> Workload:
    """The real all-MiniLM-L6-v2 (no Keras twin: the converter column is n/a) on real sentences."""
    calib, evaluation = tokenize(sentences("calib")), tokenize(sentences("eval"))
    lengths = [feed["input_ids"].shape[1] for feed in calib + evaluation]
    return Workload("minilm", minilm_onnx(cache_dir), None, minilm_converter, calib, evaluation,
                    padded(evaluation, MINILM_TIMING_TOKENS), None, None,
                    f"all-MiniLM-L6-v2, real weights; calib {len(calib)} / eval {len(evaluation)} real sentences, "
                    f"unpadded, {min(lengths)}-{max(lengths)} tokens (drift); timed on the eval sentences padded "
                    f"to {MINILM_TIMING_TOKENS} tokens; the converter converts tf_minilm.py's TensorFlow MiniLM (same weights)")


# --------------------------------------------------------------------------------------------
# Builds
# --------------------------------------------------------------------------------------------


def keras_converter(keras_path: Path) -> Callable[[], Callable[[], Any]]:
    """Loads the Keras file (untimed) and returns what makes its converter (`from_keras_model`, timed)."""
    def load() -> Callable[[], Any]:
        import tensorflow as tf

        model = load_keras(keras_path)
        return lambda: tf.lite.TFLiteConverter.from_keras_model(model)

    return load


def minilm_converter() -> Callable[[], Any]:
    """Builds the TensorFlow MiniLM (untimed) and returns what traces and wraps it in a converter (timed)."""
    import tensorflow as tf

    module = tf_sentence_embedder()
    return lambda: tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)


#: The converter's modes: float, full int8 with the calibration samples, dynamic-range int8.
TF_MODES = {"tf-fp32": "TFLiteConverter, float", "tf-int8": "TFLiteConverter, full int8, same calibration samples",
            "tf-dynamic": "TFLiteConverter, dynamic-range int8 (Optimize.DEFAULT, no dataset)"}


def convert_with_tf(make_converter: Callable[[], Any], output: Path, mode: str, calib: Sequence[Feeds]) -> float:
    """Convert with TensorFlow's converter into `output` in `mode` (a `TF_MODES` key); the conversion's seconds.

    `tf-int8` is full int8 (`Optimize.DEFAULT`, a representative dataset over exactly the `calib`
    samples, `TFLITE_BUILTINS_INT8` only, so a layer it cannot quantize fails instead of staying
    float), float input and output (the converter's default), as edgec's `tflite-int8` builds.
    Loading the model is not timed; making the converter (a SavedModel round trip for Keras) is.
    """
    import tensorflow as tf

    with stopwatch() as seconds:
        converter = make_converter()
        if mode != "tf-fp32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "tf-int8":
            converter.representative_dataset = lambda: ([np.asarray(value) for value in feed.values()] for feed in calib)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        with contextlib.redirect_stdout(sys.stderr):  # Keras prints the SavedModel it exports; stdout is the table's
            flatbuffer = converter.convert()
    output.write_bytes(flatbuffer)  # into the suite's own temp dir
    return seconds[0]


def edgec_build(work: Workload, workdir: Path, label: str, target_name: str, say: Progress,
                **options: Any) -> Built:
    """`edgec.compile` of the workload's ONNX for `target_name` ("host-int8": this host's ONNX Runtime int8 target)."""
    import edgec.target
    from edgec.compiler import compile as compile_model

    target = (edgec.target.host_target("onnxruntime", "int8") if target_name == "host-int8"
              else edgec.target.load_target(target_name))
    calib = None
    if target.precision != "fp32":
        calib = workdir / "calib.npz"
        if not calib.is_file():
            from edgec.data import save_samples

            save_samples(calib, work.calib)
    with stopwatch() as seconds:
        result = compile_model(work.onnx, target, calib=calib, output_dir=workdir / label, force=True,
                               progress=lambda message: say(f"{work.name}: {label}: {message.strip()}"), **options)
    note = f"edgec compile -t {target.name}" + (" (dynamic int8 MatMul/Gemm)" if options.get("overrides") else "")
    return Built(label, result.model_path, target.runtime, seconds[0], note)


def build_variants(work: Workload, workdir: Path, say: Progress) -> list[Built | Failure]:
    """Every variant of `work`; a build that raises becomes a `Failure` and the suite goes on."""
    steps: list[tuple[str, Callable[[], Built]]] = [
        ("tflite-fp32", lambda: edgec_build(work, workdir, "tflite-fp32", "tflite-fp32", say)),
        ("tflite-int8", lambda: edgec_build(work, workdir, "tflite-int8", "tflite-int8", say)),
    ]
    if work.name == "minilm":
        steps.append(("tflite-int8-dynamic", lambda: edgec_build(work, workdir, "tflite-int8-dynamic", "tflite-int8",
                                                                 say, overrides=DYNAMIC)))
    if work.tf_model is not None:
        make_converter = work.tf_model()
        modes = ["tf-fp32", "tf-int8"] + (["tf-dynamic"] if work.name == "minilm" else [])
        for label in modes:
            output = workdir / f"{label}.tflite"
            steps.append((label, lambda output=output, label=label: Built(
                label, output, "tflite", convert_with_tf(make_converter, output, label, work.calib), TF_MODES[label])))
    steps.append(("ort-fp32", lambda: Built("ort-fp32", work.onnx, "onnxruntime", None,
                                            "the ONNX model in ONNX Runtime")))
    steps.append(("ort-int8", lambda: edgec_build(work, workdir, "ort-int8", "host-int8", say)))
    if work.name == "minilm":
        steps.append(("ort-int8-dynamic", lambda: edgec_build(work, workdir, "ort-int8-dynamic", "host-int8", say,
                                                              overrides=DYNAMIC)))
    built: list[Built | Failure] = []
    for label, step in steps:
        say(f"{work.name}: building {label}")
        started = time.perf_counter()
        try:
            built.append(step())
        except Exception as exc:  # a failed build is a row that says why, not the end of the suite
            reason = (str(exc).strip().splitlines() or [""])[0]
            say(f"{work.name}: {label} FAILED: {type(exc).__name__}: {reason}")
            built.append(Failure(label, time.perf_counter() - started, f"failed: {type(exc).__name__}: {reason}"))
    return built


def warm_toolchains(workdir: Path, say: Progress) -> None:
    """One untimed tiny build with each toolchain, so no model's build time pays TensorFlow's, the converter's,
    tf2onnx's or edgec's one-time imports. A failure here is only reported: the real builds say why."""
    import keras

    say("warming up the converter, tf2onnx and edgec on a tiny model")
    tiny = keras.Sequential([keras.Input((4, 4, 1), batch_size=1, name="x"), keras.layers.Conv2D(2, 3),
                             keras.layers.Flatten(), keras.layers.Dense(2)])
    keras_path = workdir / "tiny.keras"
    tiny.save(keras_path)
    feeds = [{"x": np.random.default_rng(SEED).standard_normal((1, 4, 4, 1)).astype(np.float32)}]

    def edgec_warm(target: str) -> None:
        onnx_path, _ = onnx_export_cached(keras_path)
        work = Workload("tiny", onnx_path, keras_path, None, feeds, feeds, feeds, None, None, "")
        edgec_build(work, workdir, f"tiny-{target}", target, lambda message: None)

    steps = {"converter": lambda: convert_with_tf(keras_converter(keras_path)(), workdir / "tiny-int8.tflite",
                                                  "tf-int8", feeds),
             "edgec tflite-int8": lambda: edgec_warm("tflite-int8"),
             "edgec host int8": lambda: edgec_warm("host-int8")}
    for name, step in steps.items():
        try:
            step()
        except Exception as exc:
            say(f"warm-up of {name} failed ({type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}); "
                "its build times may include one-time imports")


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def reference_outputs(work: Workload, outputs: Mapping[str, list[dict[str, np.ndarray]]]) -> list[dict[str, np.ndarray]]:
    """The float model's outputs on the eval samples: Keras itself, or ONNX Runtime's fp32 where there is no Keras."""
    if work.keras is None:
        return outputs["ort-fp32"]
    model = load_keras(work.keras)
    return [{"output": np.asarray(model(*feed.values(), training=False))} for feed in work.eval]


def variant_outputs(work: Workload, variants: list[Built | Failure],
                    say: Progress) -> dict[str, list[dict[str, np.ndarray]]]:
    """Every built variant's outputs on every eval sample, untimed (one run, one thread, fresh workers).

    A variant whose runtime fails on the data becomes a `Failure` in `variants` (its row says why) and
    the others are collected without it.
    """
    from edgec.errors import EdgecError
    from edgec.harness import ModelRef, measure

    while True:
        built = [v for v in variants if isinstance(v, Built)]
        refs = [ModelRef(b.path, b.runtime, {}, b.label) for b in built]
        try:
            sections = measure(refs, work.eval, threads=1, warmup=0, runs=1, collect_outputs=True,
                               progress=lambda message: say(f"{work.name} outputs: {message}")) if refs else {}
        except EdgecError as exc:
            message = str(exc)
            broken = next((b for b in built if message.startswith(f"{b.label}: ")), None)
            if broken is None:
                raise
            say(f"{work.name}: {broken.label} fails in its runtime: {message}")
            variants[variants.index(broken)] = Failure(broken.label, broken.build_s or 0.0,
                                                       f"fails in its runtime: {message.split(': ', 1)[1]}")
            continue
        return {label: section["outputs"] for label, section in sections.items()}


def drift_columns(outputs: list[dict[str, np.ndarray]], reference: list[dict[str, np.ndarray]],
                  labels: np.ndarray | None) -> dict[str, Any]:
    """Cosine (min, mean) of the first output vs the float model, top-1 agreement, accuracy on real labels."""
    from edgec.harness import drift

    moved = drift(outputs, reference, labels)
    first = next(iter(moved["outputs"].values()))
    return {"cosine_min": first["cosine_min"], "cosine_mean": first["cosine_mean"],
            "top1_agreement": moved["top1_agreement"], "accuracy": moved["accuracy"],
            "reference_accuracy": moved["baseline_accuracy"]}


def measure_variants(work: Workload, variants: Sequence[Built | Failure], drifts: Mapping[str, dict[str, Any]],
                     threads: int, runs: int, warmup: int, say: Progress) -> list[dict[str, Any]]:
    """One interleaved run of every built variant at `threads`; one row per variant (a failed build's row
    says why), speedup vs `tflite-fp32`."""
    from edgec.harness import ModelRef, measure

    built = [v for v in variants if isinstance(v, Built)]
    refs = [ModelRef(b.path, b.runtime, {}, b.label) for b in built]
    sections = measure(refs, work.timing, threads=threads, warmup=warmup, runs=runs,
                       progress=lambda message: say(f"{work.name} @ {threads}t: {message}")) if refs else {}
    yardstick = sections.get("tflite-fp32")
    rows = []
    for variant in variants:
        note = variant.reason if isinstance(variant, Failure) else variant.note
        row = {"model": work.name, "threads": threads, "variant": variant.label, "note": note,
               "build_s": variant.build_s}
        section = sections.get(variant.label)
        if section is None:
            rows.append({**row, "failed": True})
            continue
        section["latency_ms"].pop("samples", None)
        speedup = None if yardstick is None else yardstick["latency_ms"]["p50"] / section["latency_ms"]["p50"]
        rows.append({**row, "speedup": speedup, **drifts[variant.label], **section})
    return rows


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def _cell(key: str, spec: str, scale: float = 1.0) -> Callable[[dict[str, Any]], str]:
    def cell(row: dict[str, Any]) -> str:
        value = row.get(key)
        return "—" if value is None else format(value * scale, spec)
    return cell


_COLUMNS: tuple[Column, ...] = (
    ("model", lambda r: r["model"]),
    ("threads", lambda r: str(r["threads"])),
    ("variant", lambda r: r["variant"]),
    ("p50 ms", lambda r: fmt(r["latency_ms"]["p50"], ".3f") if "latency_ms" in r else "—"),
    ("min ms", lambda r: fmt(r["latency_ms"]["min"], ".3f") if "latency_ms" in r else "—"),
    ("speedup vs tflite-fp32", lambda r: fmt(r.get("speedup"), ".2f") + ("x" if r.get("speedup") else "")),
    ("cos min", _cell("cosine_min", ".4f")),
    ("cos mean", _cell("cosine_mean", ".4f")),
    ("top-1 agree", _cell("top1_agreement", ".3f")),
    ("accuracy", _cell("accuracy", ".4f")),
    ("size MB", _cell("size_bytes", ".2f", 1 / 2**20)),
    ("build s", _cell("build_s", ".1f")),
    ("note", lambda r: short(r["note"])),
)


#: A note longer than this is cut in the table (an unsupported-op error lists every supported op); --json keeps it.
NOTE_CHARS = 160


def short(note: str) -> str:
    """`note` cut to `NOTE_CHARS`, with an ellipsis where it was cut."""
    return note if len(note) <= NOTE_CHARS else note[:NOTE_CHARS - 1] + "…"


def host_line(host: Mapping[str, Any]) -> str:
    """The CPU and library versions every number in the table depends on, as one line."""
    return (f"CPU: {host['cpu_model']}, {host['usable_cpus']} usable cores; int8 ISA flags: {', '.join(host['isa'])}; "
            f"LiteRT {host['ai_edge_litert']} (XNNPACK), ONNX Runtime {host['onnxruntime']}, "
            f"TensorFlow {host['tensorflow']}; batch 1")


def verdicts(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's bars per model and thread count: edgec int8 vs the converter's int8, and MiniLM's cosine."""
    lines = []
    by_key = {(r["model"], r["threads"], r["variant"]): r for r in rows if not r.get("failed")}
    for (model, threads, variant), row in by_key.items():
        reference = VERSUS.get(variant)
        tf_row = by_key.get((model, threads, reference))
        if tf_row is not None:
            ratio = row["latency_ms"]["p50"] / tf_row["latency_ms"]["p50"]
            lines.append(
                f"- {model} @ {threads}t, {variant} vs {reference}: p50 {ratio:.2f}x "
                f"({'PASS' if ratio <= MAX_LATENCY_RATIO else 'FAIL'} <= {MAX_LATENCY_RATIO}x); cos min "
                f"{row['cosine_min']:.4f} vs {tf_row['cosine_min']:.4f} "
                f"({'PASS' if row['cosine_min'] >= tf_row['cosine_min'] else 'FAIL'} >=); build "
                f"{row['build_s']:.1f} s vs {tf_row['build_s']:.1f} s "
                f"({'PASS' if row['build_s'] <= tf_row['build_s'] else 'FAIL'} <=)")
    minilm = {r["variant"]: r["cosine_min"] for r in by_key.values()
              if r["model"] == "minilm" and r["variant"].startswith("tflite-int8")}
    if minilm:
        variant, cosine = max(minilm.items(), key=lambda item: item[1])
        lines.append(f"- minilm: best .tflite int8 cos min {cosine:.4f} ({variant}) "
                     f"({'PASS' if cosine >= MINILM_MIN_COSINE else 'FAIL'} >= {MINILM_MIN_COSINE})")
    return lines


def markdown(rows: Sequence[dict[str, Any]], notes: Mapping[str, str], host: Mapping[str, Any]) -> str:
    return "\n".join([host_line(host), "", markdown_table(_COLUMNS, rows, left=("model", "variant", "note")), "",
                      *verdicts(rows), "", *(f"- {model}: {note}" for model, note in notes.items())])


def host_info() -> dict[str, Any]:
    """What the numbers depend on: the CPU and its int8 flags, core counts, every runtime's version."""
    from importlib.metadata import version

    from edgec.report.host import host_facts as cpu_facts

    return {**host_facts(), **cpu_facts(), "ai_edge_litert": version("ai-edge-litert"),
            "tensorflow": version("tensorflow-cpu")}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_suite_args(__doc__.splitlines()[0], MODELS, argv, threads="1,2", runs=100, warmup=10)
    cache_dir = (args.cache_dir or default_cache_dir()) / "bench"
    started = time.perf_counter()
    say = progress_printer()
    loaders = {"mobilenetv2": lambda: mobilenetv2_workload(cache_dir),
               "digits": lambda: digits_workload(cache_dir),
               "minilm": lambda: minilm_workload(cache_dir)}
    rows: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="edgec-bench-warm-") as warm:
        warm_toolchains(Path(warm), say)
    for work, workdir in prepared_workloads(args.models, loaders, say):
        notes[work.name] = work.data_note + ("" if work.export_s is None else
                                             f"; tf2onnx Keras -> ONNX export took {work.export_s:.1f} s")
        variants = build_variants(work, workdir, say)
        outputs = variant_outputs(work, variants, say)
        reference = reference_outputs(work, outputs)
        drifts = {label: drift_columns(found, reference, work.labels) for label, found in outputs.items()}
        for threads in args.threads:
            rows += measure_variants(work, variants, drifts, threads, args.runs, args.warmup, say)
    wall_s = time.perf_counter() - started
    host = host_info()
    print(markdown(rows, notes, host))
    print(f"\n{args.runs} timed runs per variant, batch 1; wall time {wall_s:.0f} s")
    if args.json is not None:
        from edgec.artifact import write_text_atomic

        report = {"schema": "edgec.bench.tflite/1", "host": host, "runs": args.runs, "warmup": args.warmup,
                  "wall_s": wall_s, "models": notes, "rows": rows}
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
