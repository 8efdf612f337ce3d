"""Measure models side by side: latency, throughput, load time, memory, size, and drift.

`measure` times any number of models in one interleaved run; `benchmark` is the artifact-vs-baseline
view of it that `edgec bench` reports (speedup and drift against the baseline).

Measurement design, and why:

- **One fresh worker process per model** (`python -m edgec.harness.worker`, never a fork): a
  process's peak RSS only grows, allocators keep freed memory, and imported libraries stay resident,
  so a model measured in a process that touched another model would be charged for both. A worker
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

- **Where is apart from what**: the parent drives each worker with JSON messages and `.npz` files
  through a `Channel` that a `Transport` opens (`edgec.harness.transport`); the default starts a
  local subprocess. No message is pickled, so a worker never runs code it was sent, wherever it runs.

The harness knows only the `Runtime` contract: a runtime is named by `ModelRef.runtime` and
resolved by `edgec.backends.runtime_class` inside the worker.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgec import errors
from edgec.errors import BadInputError, EdgecError
from edgec.harness.accuracy import drift
from edgec.harness.latency import summarize
from edgec.harness.transport import LocalTransport, Transport, WorkerExited
from edgec.harness.wire import flatten_samples
from edgec.artifact import size_on_disk
from edgec.frontends import model_files

__all__ = ["ModelRef", "benchmark", "measure", "model_size_bytes", "exit_if_spawning", "latency_samples_ms", "shape_key", "ROUND_RUNS"]

logger = logging.getLogger(__name__)

#: Timed inferences per model per interleaved round.
ROUND_RUNS = 10
#: Seconds a worker may take to start its interpreter and say it is ready.
_START_TIMEOUT_S = 120.0
#: Seconds a worker may take for one command (load, one round, one sample's outputs, close).
_COMMAND_TIMEOUT_S = 600.0
#: Exchange-file names: the samples a worker loads, and one sample's outputs it writes.
_SAMPLES_FILE = "samples.npz"
_OUTPUTS_FILE = "outputs.npz"
#: Exit code of a worker that found itself re-running the caller's unguarded script (see `exit_if_spawning`).
_UNGUARDED_MAIN_EXIT = 86


def exit_if_spawning() -> None:
    """End this process quietly if it is a multiprocessing child still starting up (re-importing the main module).

    The harness's own workers are plain subprocesses that never re-import the caller's script, but a
    caller that runs edgec inside its own "spawn" multiprocessing pool without an
    `if __name__ == "__main__":` guard would otherwise compile or benchmark again in every child.
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


def _rebuild_error(who: str, class_name: str, message: str) -> EdgecError:
    """Re-create a worker's EdgecError with its original class; wrap anything else in EdgecError."""
    cls = getattr(errors, class_name, None)
    if isinstance(cls, type) and issubclass(cls, EdgecError):
        return cls(f"{who}: {message}")
    return EdgecError(f"{who}: the runtime failed with {class_name}: {message}")


class _Worker:
    """Request/reply with one model's worker over a `Channel`: errors re-raised here, a dead or hung worker noticed."""

    def __init__(self, transport: Transport, who: str):
        self.who = who
        self.channel = transport.open(who)

    def call(self, message: dict[str, Any], timeout: float = _COMMAND_TIMEOUT_S) -> Any:
        """Send one command and return the worker's payload, raising its error here."""
        try:
            self.channel.send(message)
        except WorkerExited as exc:
            raise self._died() from exc
        return self.receive(timeout)

    def receive(self, timeout: float) -> Any:
        """Wait for one reply, noticing a dead worker at once and a hung one after `timeout` s."""
        try:
            reply = self.channel.receive(timeout)
        except WorkerExited as exc:
            raise self._died() from exc
        if reply is None:
            raise EdgecError(
                f"{self.who}: the worker did not answer within {timeout:.0f} s; "
                "the model may be too slow for this benchmark or the runtime hung"
            )
        if "error" in reply:
            logger.debug("%s worker traceback:\n%s", self.who, reply.get("trace", ""))
            raise _rebuild_error(self.who, reply["error"], reply.get("message", ""))
        return reply["ok"]

    def _died(self) -> EdgecError:
        return EdgecError(
            f"{self.who}: the worker process exited unexpectedly (exit code {self.channel.exit_code()}); "
            "the runtime may have crashed on this model, or run out of memory; see its stderr above"
        )

    def stop(self) -> None:
        """End the worker and release its channel, whatever state it is in."""
        self.channel.close()


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
    transport: Transport | None = None,
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
        transport: Where the workers run; a fresh local process each (`LocalTransport`) by default.

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
    index, arrays = flatten_samples(feeds)
    transport = transport or LocalTransport()
    workers: list[_Worker] = []
    latencies: list[list[int]] = [[] for _ in refs]
    outputs: list[list[dict[str, np.ndarray]]] = [[] for _ in refs]
    try:
        say("starting workers")
        for ref in refs:
            workers.append(_Worker(transport, ref.label))
        for worker in workers:  # interpreters start in parallel; models then load one at a time
            worker.receive(_START_TIMEOUT_S)
        loads = []
        for ref, worker in zip(refs, workers):
            say(f"loading {worker.who}")
            worker.channel.put_arrays(_SAMPLES_FILE, arrays)
            loads.append(worker.call({
                "command": "load", "model": worker.channel.model_location(ref.path), "runtime": ref.runtime,
                "options": dict(ref.options), "threads": threads, "samples": index, "arrays": _SAMPLES_FILE,
            }))
            logger.debug("%s loaded: %s", worker.who, loads[-1])
        if warmup:
            say("warming up")
            for worker in workers:
                worker.call({"command": "warmup", "count": warmup})
        rounds = math.ceil(runs / ROUND_RUNS)
        for index in range(rounds):
            count = min(ROUND_RUNS, runs - index * ROUND_RUNS)
            say(f"round {index + 1}/{rounds}")
            for k in _round_order(len(workers), index):
                latencies[k].extend(workers[k].call({"command": "time", "count": count}))
        if collect_outputs:
            say("collecting outputs")
            for k, worker in enumerate(workers):
                outputs[k] = [_sample_outputs(worker, i) for i in range(len(feeds))]
        say("measuring memory")
        peaks = [worker.call({"command": "close"})["peak_rss_mb"] for worker in workers]
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


def _sample_outputs(worker: _Worker, index: int) -> dict[str, np.ndarray]:
    """One sample's outputs, untimed: one file per sample so a worker never holds all outputs at once."""
    names = worker.call({"command": "output", "index": index, "file": _OUTPUTS_FILE})
    arrays = worker.channel.take_arrays(_OUTPUTS_FILE)
    return {name: arrays[name] for name in names}


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
    transport: Transport | None = None,
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
        transport: Where the workers run (see `measure`).

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
        collect_outputs=baseline is not None, progress=progress, transport=transport,
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
