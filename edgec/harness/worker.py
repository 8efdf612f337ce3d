"""The benchmark worker: one model in one fresh process, driven by JSON messages and `.npz` files.

Run as `python -m edgec.harness.worker EXCHANGE_DIR`. It reads one JSON command per line on stdin
and answers each with one JSON line on stdout; arrays (the input samples, a sample's outputs) travel
as `.npz` files in EXCHANGE_DIR, loaded with `allow_pickle=False`. Nothing is ever unpickled, so the
same worker can serve a parent on this machine or an agent serving a remote client, and a process
boundary never runs code it was sent.

It first says `{"ok": "ready"}`. Commands and replies (every reply is `{"ok": payload}` or `{"error": class, "message", "trace"}`):
- `{"command": "load", "model", "runtime", "options", "threads", "samples": [[input names] per sample],
  "arrays": file}` -> `{"load_ms", "rss_before_load_mb", "rss_after_load_mb"}`
- `{"command": "warmup", "count"}` -> null; `{"command": "time", "count"}` -> [ns per inference]
- `{"command": "output", "index", "file"}` -> [output names], the outputs written to `file`
- `{"command": "close"}` -> `{"peak_rss_mb"}`, then the worker exits.
The worker exits after the first error, and when stdin closes.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from edgec.errors import BadInputError, EdgecError
from edgec.harness.memory import current_rss_mb, peak_rss_mb
from edgec.harness.wire import read_arrays, unflatten_samples, write_arrays
from edgec.backends import runtime_class

__all__ = ["serve", "main"]


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


def _error_reply(exc: BaseException) -> dict[str, str]:
    """Describe an exception for the parent: class name, one-line message, full traceback."""
    message = str(exc) if isinstance(exc, EdgecError) else (str(exc).strip().splitlines() or [""])[0]
    return {"error": type(exc).__name__, "message": message, "trace": traceback.format_exc()}


class _Model:
    """The worker's state: the loaded runtime, its samples, and where the next inference starts."""

    def __init__(self, exchange: Path) -> None:
        self.exchange = exchange
        self.runtime: Any = None
        self.samples: list[dict[str, np.ndarray]] = []
        self.cursor = 0

    def file(self, name: str) -> Path:
        """A file in the exchange directory; a name that would leave it is refused."""
        if not name or Path(name).name != name:
            raise BadInputError(f"exchange file names are plain file names, got {name!r}")
        return self.exchange / name

    def handle(self, message: Mapping[str, Any]) -> Any:
        command = message.get("command")
        if command == "load":
            self.samples = unflatten_samples(read_arrays(self.file(message["arrays"])), message["samples"])
            cls = runtime_class(message["runtime"])
            cls.preload()  # library import is not the model's cost
            gc.collect()
            rss_before = current_rss_mb()
            t0 = time.perf_counter_ns()
            self.runtime = cls(message["model"], threads=int(message["threads"]), options=message.get("options") or {})
            load_ns = time.perf_counter_ns() - t0
            return {"load_ms": load_ns / 1e6, "rss_before_load_mb": rss_before, "rss_after_load_mb": current_rss_mb()}
        if command in ("warmup", "time"):
            count = int(message["count"])
            latencies = _timed_runs(self.runtime, self.samples, self.cursor, count)
            self.cursor += count
            return latencies if command == "time" else None
        if command == "output":
            outputs = self.runtime.infer(self.samples[int(message["index"])])
            self.runtime.synchronize()
            arrays = {name: np.asarray(value) for name, value in outputs.items()}
            write_arrays(self.file(message["file"]), arrays)
            return list(arrays)
        if command == "close":
            return {"peak_rss_mb": peak_rss_mb()}
        raise ValueError(f"unknown worker command {command!r}")


def serve(exchange: Path, commands: TextIO, replies: TextIO) -> None:
    """Answer commands until `close`, the first error, or the end of `commands`."""
    model = _Model(exchange)
    replies.write(json.dumps({"ok": "ready"}) + "\n")  # the interpreter and edgec are imported
    replies.flush()
    for line in commands:
        message: Any = None
        try:
            message = json.loads(line)
            reply: dict[str, Any] = {"ok": model.handle(message)}
        except Exception as exc:  # reported to the parent, which raises it there
            reply = _error_reply(exc)
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
        if "error" in reply or (isinstance(message, dict) and message.get("command") == "close"):
            return


def _exit_with_parent() -> None:
    """End this worker when its parent is gone (killed, or ended by edgec's step watchdog): a model that never
    finishes would otherwise keep a core busy forever. A thread watches, as the main one may be inside a runtime."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="edgec-worker-parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: `python -m edgec.harness.worker EXCHANGE_DIR`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not Path(args[0]).is_dir():
        sys.stderr.write("usage: python -m edgec.harness.worker EXCHANGE_DIR\n")
        return 2
    # The parent owns the worker's lifetime: on Ctrl-C it stops us itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    # Replies go to a private copy of stdout; anything a native library prints goes to stderr instead.
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        serve(Path(args[0]), sys.stdin, replies)
    except BrokenPipeError:
        pass  # the parent went away; nothing left to serve
    return 0


if __name__ == "__main__":
    sys.exit(main())
