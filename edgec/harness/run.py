"""Measure models side by side: latency, throughput, load time, memory, size, and drift.

`measure` times any number of models in one interleaved run; `benchmark` is the artifact-vs-baseline
view of it that `edgec bench` reports (speedup and drift against the baseline).

Measurement design, and why:

- **One fresh worker process per model** ("spawn" start method, never "fork"): a process's peak
  RSS only grows, allocators keep freed memory, and imported libraries stay resident, so a model
  measured in a process that touched another model would be charged for both. A spawned worker
  starts from a bare interpreter; it imports the runtime's library, reads its RSS
  (`rss_before_load_mb`), loads the model (`load_ms`: constructor wall time), and reports its own
  peak RSS at the very end (`peak_rss_mb`), so `peak_rss_mb - rss_before_load_mb` approximates
  what the model itself costs (weights, arena, workspace), separate from the library.
- **Interleaved timing**: after warming up every model, the parent runs timed rounds of
  `ROUND_RUNS` inferences per model, rotating which model goes first each round (with two
  models: alternating), until each has `runs` timings. Noise on a shared machine comes in bursts
  (FINDINGS: medians moving 30% between rounds), and interleaving spreads a burst over all models
  instead of over one of them, so ratios (`speedup_p50`) stay trustworthy even when absolute
  numbers wobble.
- Each timing is `time.perf_counter_ns()` around `Runtime.infer(feeds)` + `Runtime.synchronize()`,
  so GPU runtimes are timed to completion. Python's cyclic GC is paused during a timed round (and
  run between rounds) so a collection does not land inside one inference.
- Outputs for drift (on request) are computed afterwards on every sample, untimed, one sample per
  message so a worker never holds all outputs at once (which would inflate its peak RSS).

The harness knows only the `Runtime` contract: a runtime is named by `ModelRef.runtime` and
resolved by `edgec.backends.runtime_class` inside the worker.

Because workers are spawned, a script calling `measure` or `benchmark` must guard its entry point
with `if __name__ == "__main__":` (the spawned interpreter re-imports the main module).
"""

from __future__ import annotations

import gc
import logging
import math
import multiprocessing
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from edgec import errors
from edgec.errors import BadInputError, EdgecError
from edgec.harness.accuracy import drift
from edgec.harness.latency import summarize
from edgec.harness.memory import current_rss_mb, peak_rss_mb
from edgec.artifact import size_on_disk
from edgec.frontends import model_files
from edgec.backends import runtime_class

__all__ = ["ModelRef", "benchmark", "measure", "model_size_bytes", "exit_if_spawning", "latency_samples_ms", "shape_key", "ROUND_RUNS"]

logger = logging.getLogger(__name__)

#: Timed inferences per model per interleaved round.
ROUND_RUNS = 10
#: Seconds a worker may take to start its interpreter and say it is ready.
_START_TIMEOUT_S = 120.0
#: Seconds a worker may take for one command (load, one round, one sample's outputs, close).
_COMMAND_TIMEOUT_S = 600.0
#: Seconds to wait for a worker to exit by itself before terminating it.
_JOIN_TIMEOUT_S = 5.0
#: Exit code of a worker that found itself re-running the caller's unguarded script (see `exit_if_spawning`).
_UNGUARDED_MAIN_EXIT = 86


def exit_if_spawning() -> None:
    """End this process quietly if it is a worker still starting up (re-importing the caller's main module).

    A spawned worker re-runs the top level of the script that started it. When that script calls
    edgec without an `if __name__ == "__main__":` guard, the worker would compile or benchmark all
    over again (or fail inside multiprocessing); instead it exits with `_UNGUARDED_MAIN_EXIT`, which
    the parent turns into an error that says how to fix the script.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        sys.exit(_UNGUARDED_MAIN_EXIT)


@dataclass(frozen=True)
class ModelRef:
    """A model to benchmark: where it is and which runtime runs it with which options.

    Attributes:
        path: The model file (or artifact directory) the runtime loads.
        runtime: A backend's runtime name or a source framework, resolved by `edgec.backends.runtime_class`.
        options: Passed to the `Runtime` constructor as `options=` (e.g. ORT's `provider`).
        label: A human name for progress messages and errors (e.g. "int8", "fp32 source").
    """

    path: Path
    runtime: str
    options: Mapping[str, Any] = field(default_factory=dict)
    label: str = "artifact"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))


# --------------------------------------------------------------------------------------------
# Worker side: runs in the spawned process. Everything it sends is plain tuples of picklable data.
# --------------------------------------------------------------------------------------------


def _error_reply(exc: BaseException) -> tuple[str, str, str, str]:
    """Describe an exception for the parent: class name, one-line message, full traceback."""
    message = str(exc) if isinstance(exc, EdgecError) else (str(exc).strip().splitlines() or [""])[0]
    return ("error", type(exc).__name__, message, traceback.format_exc())


def _timed_runs(runtime: Any, samples: list[dict[str, np.ndarray]], start: int, count: int) -> list[int]:
    """Time `count` inferences cycling through `samples` from index `start`; nanoseconds each."""
    clock = time.perf_counter_ns
    latencies: list[int] = []
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for k in range(count):
            feeds = samples[(start + k) % len(samples)]
            t0 = clock()
            out = runtime.infer(feeds)
            runtime.synchronize()
            t1 = clock()
            del out  # free the outputs outside the timed span
            latencies.append(t1 - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    return latencies


def _worker_main(conn: Connection, path: str, runtime_name: str, options: dict[str, Any], threads: int) -> None:
    """Serve one model to the parent until told to close; exit after the first error.

    Commands (tuples): ("load", samples) -> load stats; ("warmup", n) -> None; ("time", n) ->
    list of ns; ("output", i) -> outputs of sample i; ("close",) -> {"peak_rss_mb"} and exit.
    Every reply is ("ok", payload) or ("error", class name, message, traceback).
    """
    # The parent owns the worker's lifetime: on Ctrl-C it terminates us in its `finally`.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runtime: Any = None
    samples: list[dict[str, np.ndarray]] = []
    cursor = 0
    try:
        conn.send(("ok", "ready"))
        while True:
            command, *args = conn.recv()
            try:
                if command == "load":
                    samples = args[0]
                    cls = runtime_class(runtime_name)
                    cls.preload()  # library import is not the model's cost
                    gc.collect()
                    rss_before = current_rss_mb()
                    t0 = time.perf_counter_ns()
                    runtime = cls(path, threads=threads, options=options)
                    load_ns = time.perf_counter_ns() - t0
                    reply: Any = {
                        "load_ms": load_ns / 1e6,
                        "rss_before_load_mb": rss_before,
                        "rss_after_load_mb": current_rss_mb(),
                    }
                elif command == "warmup":
                    _timed_runs(runtime, samples, cursor, args[0])
                    cursor += args[0]
                    reply = None
                elif command == "time":
                    reply = _timed_runs(runtime, samples, cursor, args[0])
                    cursor += args[0]
                elif command == "output":
                    outputs = runtime.infer(samples[args[0]])
                    runtime.synchronize()
                    reply = {name: np.asarray(value) for name, value in outputs.items()}
                elif command == "close":
                    conn.send(("ok", {"peak_rss_mb": peak_rss_mb()}))
                    return
                else:
                    raise ValueError(f"unknown worker command {command!r}")
            except Exception as exc:  # reported to the parent, which raises it there
                conn.send(_error_reply(exc))
                return
            conn.send(("ok", reply))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent went away; nothing left to serve
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# Parent side.
# --------------------------------------------------------------------------------------------


def _rebuild_error(who: str, class_name: str, message: str) -> EdgecError:
    """Re-create a worker's EdgecError with its original class; wrap anything else in EdgecError."""
    cls = getattr(errors, class_name, None)
    if isinstance(cls, type) and issubclass(cls, EdgecError):
        return cls(f"{who}: {message}")
    return EdgecError(f"{who}: the runtime failed with {class_name}: {message}")


class _Worker:
    """Parent-side handle of one model's worker process: start, request/reply, always stop."""

    def __init__(self, ctx: Any, who: str, ref: ModelRef, threads: int):
        self.who = who
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_worker_main,
            args=(child_conn, str(ref.path), ref.runtime, dict(ref.options), threads),
            name=f"edgec-harness-{who}",
            daemon=True,
        )
        self.process.start()
        # Drop our copy of the child's end so a dead worker reads as EOF instead of silence.
        child_conn.close()

    def call(self, message: tuple[Any, ...], timeout: float = _COMMAND_TIMEOUT_S) -> Any:
        """Send one command and return the worker's payload, raising its error here."""
        try:
            self.conn.send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError) as exc:
            raise self._died() from exc
        return self.receive(timeout)

    def receive(self, timeout: float) -> Any:
        """Wait for one reply, noticing a dead worker at once and a hung one after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EdgecError(
                    f"{self.who}: the worker did not answer within {timeout:.0f} s; "
                    "the model may be too slow for this benchmark or the runtime hung"
                )
            if self.conn.poll(min(0.2, remaining)):
                try:
                    reply = self.conn.recv()
                except (EOFError, ConnectionResetError, OSError) as exc:
                    raise self._died() from exc
                break
            if not self.process.is_alive() and not self.conn.poll(0):
                raise self._died()
        if reply[0] == "error":
            _, class_name, message, trace = reply
            logger.debug("%s worker traceback:\n%s", self.who, trace)
            raise _rebuild_error(self.who, class_name, message)
        return reply[1]

    def _died(self) -> EdgecError:
        self.process.join(timeout=1.0)
        if self.process.exitcode == _UNGUARDED_MAIN_EXIT:
            return BadInputError(
                "the benchmark worker re-ran your script's top level, which calls edgec again: put that code under"
                " `if __name__ == \"__main__\":` (workers are spawned, and spawning re-imports the main module)")
        return EdgecError(
            f"{self.who}: the worker process exited unexpectedly (exit code {self.process.exitcode}); "
            "the runtime may have crashed on this model, or run out of memory; see its stderr above"
        )

    def stop(self) -> None:
        """Close the pipe and make sure the process is gone: join, then terminate, then kill."""
        try:
            self.conn.close()
        except OSError:
            pass
        self.process.join(timeout=_JOIN_TIMEOUT_S)
        if self.process.is_alive():
            logger.warning("%s worker did not exit; terminating it", self.who)
            self.process.terminate()
            self.process.join(timeout=_JOIN_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=_JOIN_TIMEOUT_S)
        if not self.process.is_alive():
            self.process.close()


def model_size_bytes(path: str | Path) -> int:
    """Bytes a model occupies on disk: what a device has to store and ship.

    A directory counts every file under it. An `.onnx` file counts itself plus each distinct
    external-data file its tensors reference (resolved relative to the model's directory, each
    counted once however many tensors it holds; missing files are skipped, the runtime reports
    them). Any other file counts itself. An ONNX file that cannot be parsed counts itself only.

    Args:
        path: The model file or artifact directory.

    Returns:
        The size in bytes.

    Raises:
        BadInputError: If `path` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"model not found: {path}")
    return sum(size_on_disk(file) for file in model_files(path))


def _throughput(latencies_ns: Sequence[int]) -> float:
    """Batch-1 throughput: `runs / sum(latencies in s)`; the sum is floored at 1 ns (never /0)."""
    return len(latencies_ns) * 1e9 / max(1, sum(latencies_ns))


def _round_order(models: int, index: int) -> list[int]:
    """Which model times first, second, ... in round `index`: `0..models-1` rotated left by `index`.

    Why rotate: over any `models` consecutive rounds every model holds every position exactly once,
    so none is always the one that runs first after a pause or right behind a noisy neighbour. With
    two models this is plain alternation (AB, BA, AB, ...).
    """
    shift = index % models
    return [*range(shift, models), *range(shift)]


def measure(
    refs: Sequence[ModelRef],
    samples: Sequence[Mapping[str, np.ndarray]],
    *,
    threads: int,
    warmup: int = 10,
    runs: int = 100,
    collect_outputs: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Measure N models side by side, each in its own fresh worker process, in interleaved rounds.

    See the module docstring for the measurement design. Every model sees the same sequence of
    `samples`, the same thread count and the same rounds, so ratios between any two of them are
    comparable; measuring them in one run (rather than pairwise runs) keeps every pair under the
    same noise.

    Args:
        refs: The models, each with a unique `label` (the key of its section in the result).
        samples: Per-inference feed dicts (batch 1 each), already validated against the models' inputs.
        threads: Intra-op threads for every runtime (0 lets the runtime choose).
        warmup: Untimed inferences per model before timing.
        runs: Timed inferences per model.
        collect_outputs: Also run every sample once more, untimed, and return each model's outputs
            (for drift); off by default because it costs one extra inference per sample per model.
        progress: Called with short human messages ("loading int8", "round 3/10").

    Returns:
        `{label: section}` in the order of `refs`, each section
        `{"latency_ms" (see `summarize`, plus "samples": every timed run in order, see
        `latency_samples_ms`), "latency_by_shape_ms" ({input shapes: summary} when samples
        differ in shape, else None), "throughput_per_s", "load_ms", "peak_rss_mb",
        "rss_before_load_mb", "size_bytes"}` plus, with `collect_outputs`, `"outputs"`: one
        `{output name: array}` per sample, in sample order.

    Raises:
        BadInputError: For no models, repeated labels, a missing model, no samples, nonsensical
            counts, or a model the runtime cannot load (the worker's own error class is kept).
        EdgecError: If a worker fails otherwise, crashes or stops answering.
    """
    exit_if_spawning()
    if not refs:
        raise BadInputError("no models to measure; give at least one")
    names = [ref.label for ref in refs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BadInputError(f"model labels must be unique, but {repeated} repeat; give each ModelRef its own label")
    if not samples:
        raise BadInputError("no samples to run; give at least one input sample")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise BadInputError(f"threads must be a non-negative integer (0 = runtime default), got {threads!r}")
    if runs < 1:
        raise BadInputError(f"runs must be at least 1, got {runs}")
    if warmup < 0:
        raise BadInputError(f"warmup must be 0 or more, got {warmup}")
    sizes = [model_size_bytes(ref.path) for ref in refs]  # also fails fast on a missing file

    def say(message: str) -> None:
        logger.info(message)
        if progress is not None:
            progress(message)

    feeds = [{name: np.asarray(value) for name, value in sample.items()} for sample in samples]
    ctx = multiprocessing.get_context("spawn")
    workers: list[_Worker] = []
    latencies: list[list[int]] = [[] for _ in refs]
    outputs: list[list[dict[str, np.ndarray]]] = [[] for _ in refs]
    try:
        say("starting workers")
        for ref in refs:
            workers.append(_Worker(ctx, ref.label, ref, threads))
        for worker in workers:  # interpreters start in parallel; models then load one at a time
            worker.receive(_START_TIMEOUT_S)
        loads = []
        for worker in workers:
            say(f"loading {worker.who}")
            loads.append(worker.call(("load", feeds)))
            logger.debug("%s loaded: %s", worker.who, loads[-1])
        if warmup:
            say("warming up")
            for worker in workers:
                worker.call(("warmup", warmup))
        rounds = math.ceil(runs / ROUND_RUNS)
        for index in range(rounds):
            count = min(ROUND_RUNS, runs - index * ROUND_RUNS)
            say(f"round {index + 1}/{rounds}")
            for k in _round_order(len(workers), index):
                latencies[k].extend(workers[k].call(("time", count)))
        if collect_outputs:
            say("collecting outputs")
            for k, worker in enumerate(workers):
                outputs[k] = [worker.call(("output", i)) for i in range(len(feeds))]
        say("measuring memory")
        peaks = [worker.call(("close",))["peak_rss_mb"] for worker in workers]
    finally:
        for worker in workers:
            worker.stop()

    shapes = _timed_shapes(feeds, warmup, runs)
    sections: dict[str, dict[str, Any]] = {}
    for k, ref in enumerate(refs):
        section: dict[str, Any] = {
            "latency_ms": {**summarize([ns / 1e6 for ns in latencies[k]]), "samples": latency_samples_ms(latencies[k])},
            "latency_by_shape_ms": _by_shape(latencies[k], shapes),
            "throughput_per_s": _throughput(latencies[k]),
            "load_ms": float(loads[k]["load_ms"]),
            "peak_rss_mb": float(peaks[k]),
            "rss_before_load_mb": float(loads[k]["rss_before_load_mb"]),
            "size_bytes": int(sizes[k]),
        }
        if collect_outputs:
            section["outputs"] = outputs[k]
        sections[ref.label] = section
    return sections


def latency_samples_ms(latencies_ns: Sequence[int]) -> list[float]:
    """Each timed run in ms rounded to 6 decimals: exact, since `round(ms * 1e6)` gives back the ns.

    The raw runs are what a regression test between two reports needs; percentiles alone cannot
    say whether a difference is beyond noise.
    """
    return [round(ns / 1e6, 6) for ns in latencies_ns]


def shape_key(feeds: Mapping[str, np.ndarray]) -> str:
    """A sample's input shapes, e.g. "input_ids=1x7, attention_mask=1x7"."""
    return ", ".join(f"{name}={'x'.join(map(str, np.shape(value))) or 'scalar'}" for name, value in feeds.items())


def _timed_shapes(feeds: Sequence[Mapping[str, np.ndarray]], warmup: int, runs: int) -> list[str]:
    """The shape key of each timed run: workers cycle through the samples, warm-up runs first."""
    keys = [shape_key(sample) for sample in feeds]
    return [keys[(warmup + i) % len(keys)] for i in range(runs)]


def _by_shape(latencies_ns: Sequence[int], shapes: Sequence[str]) -> dict[str, dict[str, Any]] | None:
    """Latency summaries per input shape when samples differ in shape (token sequences of different
    lengths), in the order the shapes were first timed; None when every sample has one shape, where
    the overall summary already is the per-shape one."""
    if len(set(shapes)) < 2:
        return None
    groups: dict[str, list[float]] = {}
    for latency, shape in zip(latencies_ns, shapes):
        groups.setdefault(shape, []).append(latency / 1e6)
    return {shape: summarize(values) for shape, values in groups.items()}


def _describe(role: str, ref: ModelRef) -> str:
    """'artifact', 'baseline' or 'framework', plus the user's label when it says more than the default does."""
    return role if ref.label in ("", role, "artifact") else f"{role} '{ref.label}'"


def benchmark(
    artifact: ModelRef,
    baseline: ModelRef | None,
    samples: Sequence[Mapping[str, np.ndarray]],
    *,
    threads: int,
    warmup: int = 10,
    runs: int = 100,
    labels: np.ndarray | None = None,
    framework: ModelRef | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure an artifact (and optionally its baseline) with `measure`, and compare the two.

    The report is the artifact's section at the top level with the baseline's nested under it,
    because the artifact is what a release gate judges and the baseline is its yardstick. Each
    model is measured under a role name ("artifact", "baseline", plus its own label when it says
    more) so progress messages and errors say which of the two failed even when the caller's
    labels coincide.

    Args:
        artifact: The compiled model.
        baseline: The reference model (usually the fp32 source), or None to measure the artifact alone.
        samples: Per-inference feed dicts (batch 1 each), already validated against the models' inputs.
        threads: Intra-op threads for both runtimes (0 lets the runtime choose).
        warmup: Untimed inferences per model before timing.
        runs: Timed inferences per model.
        labels: Optional 1-D integer class per sample for accuracy; only used with a baseline.
        framework: Optional second reference timed in the same rounds (the source model in its own
            framework): reported with its own speedup, never used for drift.
        progress: Called with short human messages ("loading artifact", "round 3/10").

    Returns:
        `{"threads", "latency_ms" (see `summarize`), "throughput_per_s", "load_ms", "peak_rss_mb",
        "size_bytes", "rss_before_load_mb", "baseline": {the same keys but threads} | None,
        "speedup_p50": baseline p50 / artifact p50 | None, "drift": `drift(...)` | None,
        "framework_baseline": {the same keys as baseline, plus its "speedup_p50"} | None}`.
        `speedup_p50` above 1 means the artifact is faster.

    Raises:
        BadInputError: For a missing model, no samples, nonsensical counts, labels that do not
            fit, or a model the runtime cannot load (the worker's own error class is kept).
        EdgecError: If a worker fails otherwise, crashes or stops answering.
    """
    if labels is not None:
        label_shape = np.shape(labels)
        if len(label_shape) != 1 or label_shape[0] != len(samples):
            raise BadInputError(
                f"labels have shape {list(label_shape)} for {len(samples)} samples; give one label per sample"
            )
        if baseline is None:
            logger.warning("labels are ignored without a baseline: accuracy is reported as part of drift")
    roles = [("artifact", artifact), ("baseline", baseline), ("framework", framework)]
    present = [(role, replace(ref, label=_describe(role, ref))) for role, ref in roles if ref is not None]
    measured = measure(
        [ref for _, ref in present], samples, threads=threads, warmup=warmup, runs=runs,
        collect_outputs=baseline is not None, progress=progress,
    )
    sections = {role: measured[ref.label] for role, ref in present}
    outputs = {role: section.pop("outputs", None) for role, section in sections.items()}
    report: dict[str, Any] = {
        "threads": threads,
        **sections["artifact"],
        "baseline": sections.get("baseline"),
        "speedup_p50": None,
        "drift": None,
        "framework_baseline": sections.get("framework"),
    }
    for section in filter(None, (report["baseline"], report["framework_baseline"])):
        section["speedup_p50"] = _speedup(section, sections["artifact"])
    if baseline is not None:
        logger.info("computing drift")
        if progress is not None:
            progress("computing drift")
        report["speedup_p50"] = report["baseline"].pop("speedup_p50")
        report["drift"] = drift(outputs["artifact"], outputs["baseline"], labels)
    return report


def _speedup(reference: Mapping[str, Any], artifact: Mapping[str, Any]) -> float | None:
    """reference p50 / artifact p50: above 1 means the artifact is faster."""
    artifact_p50 = artifact["latency_ms"]["p50"]
    return reference["latency_ms"]["p50"] / artifact_p50 if artifact_p50 > 0 else None
