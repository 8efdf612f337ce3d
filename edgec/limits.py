"""How much an input may make edgec allocate or compute, so a few crafted bytes cannot take the machine.

Each limit has a default that fits any real edge model and an environment variable that raises it:

- `EDGEC_MAX_TENSOR_MB` (default 4096): the largest tensor a model may declare, or shape inference
  and constant folding may produce; the largest array in a data file.
- `EDGEC_MAX_DATA_MB` (default 8192): all arrays of one `.npz` data file together, by their headers,
  before any is read.
- `EDGEC_MAX_DIM` (default 2**31 - 1): one dimension of a `--fix-shape`, `--input` or `fix_dims`.
- `EDGEC_STEP_TIMEOUT_S` (default 1800): one step of `compile` or `bench` (loading, verifying,
  optimizing, calibrating, measuring), in the CLI and the Python API alike; the API's
  `step_timeout_s` overrides it per call (`None`: no limit). Past it, `StepTimeoutError` is raised
  in the step (CLI: exit 2, one line); a step stuck in a runtime's native code, which Python
  cannot interrupt, ends the process with exit 2 a few seconds later.

Files that are not regular (FIFOs, devices) are refused where a file is read, so no read blocks.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import math
import os
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import numpy as np

from edgec.errors import BadInputError, StepTimeoutError

__all__ = ["max_tensor_bytes", "max_data_bytes", "max_dim", "check_tensor_bytes", "regular_file", "check_npy_sizes",
           "check_dims", "MAX_THREADS", "step_timeout", "step_limit", "bounded_steps", "undo_if_ended", "FROM_ENV",
           "STOP_GRACE_S", "utf8_path"]

#: Most intra-op threads a run may ask for (far beyond any core count; ten thousand crash a runtime).
MAX_THREADS = 1024

_MIB = 2**20


def _limit(variable: str, default: int, scale: int = 1) -> int:
    text = os.environ.get(variable)
    if text is None:
        return default * scale
    try:
        value = int(text)
    except ValueError:
        raise BadInputError(f"{variable}={text!r} must be a whole number") from None
    if value < 1:
        raise BadInputError(f"{variable}={text!r} must be at least 1")
    return value * scale


def max_tensor_bytes() -> int:
    return _limit("EDGEC_MAX_TENSOR_MB", 4096, _MIB)


def max_data_bytes() -> int:
    return _limit("EDGEC_MAX_DATA_MB", 8192, _MIB)


def max_dim() -> int:
    return _limit("EDGEC_MAX_DIM", 2**31 - 1)


def check_tensor_bytes(nbytes: int, what: str) -> None:
    """Refuse a tensor larger than `EDGEC_MAX_TENSOR_MB` before it is allocated."""
    limit = max_tensor_bytes()
    if nbytes > limit:
        raise BadInputError(f"{what} would take {nbytes / _MIB:,.0f} MiB, more than the {limit // _MIB:,} MiB limit;"
                            " raise EDGEC_MAX_TENSOR_MB if this is real")


def regular_file(path: str | os.PathLike[str], what: str) -> Path:
    """`path` if it is a regular file (a FIFO or device would block or never end when read)."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{what}: no such file {path}")
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file (a FIFO, socket or device)"
        raise BadInputError(f"{what}: {path} is {kind}; give a regular file")
    return path


def _npy_header(handle: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(handle)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = reader(handle, max_header_size=10_000)
    return shape, dtype


def check_npy_sizes(path: Path, what: str) -> None:
    """Check the sizes an `.npy` or `.npz` file declares in its headers, before a single array is read."""
    limit, total = max_data_bytes(), 0
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for member in archive.infolist():
                    if member.filename.endswith(".npy"):
                        with archive.open(member) as handle:
                            shape, dtype = _npy_header(handle)
                        total += _declared(shape, dtype, f"{what}: array '{member.filename[:-4]}' of {path}")
        else:
            with open(path, "rb") as handle:
                shape, dtype = _npy_header(handle)
            total += _declared(shape, dtype, f"{what}: {path}")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, SyntaxError, NotImplementedError,
            RuntimeError):  # zipfile's RuntimeError: an encrypted member
        return  # not readable as arrays: numpy's own loader reports that in its words
    if total > limit:
        raise BadInputError(f"{what}: {path} declares {total / _MIB:,.0f} MiB of arrays, more than the"
                            f" {limit // _MIB:,} MiB limit; raise EDGEC_MAX_DATA_MB if this is real")


def _declared(shape: tuple[int, ...], dtype: np.dtype, what: str) -> int:
    nbytes = math.prod(shape) * max(dtype.itemsize, 1)
    check_tensor_bytes(nbytes, what)
    return nbytes


def check_dims(dims: Sequence[Any], what: str) -> None:
    """Fixed dims must be whole numbers in [1, EDGEC_MAX_DIM] (0 makes an empty tensor nothing can run)."""
    limit = max_dim()
    for dim in dims:
        if isinstance(dim, int) and not 1 <= dim <= limit:
            raise BadInputError(f"{what}: dimension {dim} must be between 1 and {limit:,}")


#: Seconds a step past its limit has to return to Python and raise `StepTimeoutError` before the process ends
#: (once raised, the clean-up after it may take as long as it needs).
STOP_GRACE_S = 5.0
#: `step_timeout_s`'s default: `EDGEC_STEP_TIMEOUT_S`, else 1800 s.
FROM_ENV = "env"


class _Clock:
    """The current step of one call of `compile` or `bench`, in the thread running it."""

    def __init__(self, seconds: float) -> None:
        self.thread = threading.get_ident()
        self.seconds = seconds
        self.name = ""
        self.deadline = math.inf
        self.told: float | None = None  # when StepTimeoutError was sent to the thread
        self.raised = False  # whether it was raised there (the step is back in Python)

    def message(self) -> str:
        return (f"step '{self.name}' ran longer than {self.seconds:g} s, the limit (step_timeout_s,"
                " EDGEC_STEP_TIMEOUT_S); the model may never finish (e.g. a Loop with a huge trip count)")


def _send(thread: int, error: type[BaseException] | None) -> None:
    """Raise `error` in `thread` when it next runs Python code (None: withdraw one not yet raised)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(error) if error else None)


def _stop(clock: _Clock) -> type[StepTimeoutError]:
    """The `StepTimeoutError` to send to a step's thread: a class, as the interpreter instantiates it there, which
    carries the step's message and notes that it was raised."""

    class Stop(StepTimeoutError):
        def __init__(self) -> None:
            clock.raised = True
            super().__init__(clock.message())

    Stop.__name__ = Stop.__qualname__ = StepTimeoutError.__name__
    return Stop


class _Watchdog:
    """Stops steps that run past their limit: first `StepTimeoutError` in the step's thread, so the caller
    gets an exception and everything is cleaned up; then, if the step is stuck in native code (a runtime
    running a Loop with a trip count of 10**15 never returns to Python), the process ends with exit 2,
    after the `undo_if_ended` callbacks (the output lock file). What else it leaves (staging and work
    directories) carries its process id and is cleaned by the next run (`edgec.artifact.clean_stale`).
    """

    def __init__(self) -> None:
        self.clocks: set[_Clock] = set()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        threading.Thread(target=self._watch, name="edgec-step-watchdog", daemon=True).start()

    def start(self, clock: _Clock, name: str) -> None:
        with self.lock:
            clock.name, clock.deadline = name, time.monotonic() + clock.seconds
        self.wake.set()

    def add(self, clock: _Clock) -> None:
        with self.lock:
            self.clocks.add(clock)

    def remove(self, clock: _Clock) -> None:
        with self.lock:
            self.clocks.discard(clock)
            if clock.told is not None and not clock.raised:
                _send(clock.thread, None)

    def _next_wake(self) -> float:
        with self.lock:
            times = [clock.deadline if clock.told is None else clock.told + STOP_GRACE_S
                     for clock in self.clocks if not clock.raised]
        return min(times, default=math.inf)

    def _watch(self) -> None:
        while True:
            wake = self._next_wake()
            self.wake.wait(max(wake - time.monotonic(), 0.0) if math.isfinite(wake) else None)
            self.wake.clear()
            now = time.monotonic()
            with self.lock:
                for clock in self.clocks:
                    if clock.told is None and now >= clock.deadline:
                        clock.told = now
                        _send(clock.thread, _stop(clock))
                    elif clock.told is not None and not clock.raised and now >= clock.told + STOP_GRACE_S:
                        for undo in list(_before_forced_exit):
                            with contextlib.suppress(Exception):
                                undo()
                        sys.stderr.write(f"edgec: error: {clock.message()}; it is stuck where Python cannot stop it,"
                                         " so the process ends\n")
                        sys.stderr.flush()
                        os._exit(2)


_watchdog: _Watchdog | None = None
_watchdog_lock = threading.Lock()
#: What to undo before the watchdog ends the process (`os._exit` runs no `finally`): e.g. an output lock file.
_before_forced_exit: list[Callable[[], None]] = []


@contextlib.contextmanager
def undo_if_ended(undo: Callable[[], None]) -> Iterator[None]:
    """Run `undo` should the watchdog end the process within the block (a step stuck in native code)."""
    _before_forced_exit.append(undo)
    try:
        yield
    finally:
        _before_forced_exit.remove(undo)


def step_timeout() -> float:
    """Seconds one step may take by default (`EDGEC_STEP_TIMEOUT_S`, default 1800)."""
    return float(_limit("EDGEC_STEP_TIMEOUT_S", 1800))


def _seconds(step_timeout_s: Any) -> float | None:
    if step_timeout_s == FROM_ENV:
        return step_timeout()
    if step_timeout_s is None:
        return None
    if isinstance(step_timeout_s, bool) or not isinstance(step_timeout_s, (int, float)) \
            or not 0 < step_timeout_s < math.inf:
        raise BadInputError(f"step_timeout_s={step_timeout_s!r} must be a positive number of seconds, or None for"
                            " no limit")
    return float(step_timeout_s)


@contextlib.contextmanager
def step_limit(step_timeout_s: float | str | None, progress: Callable[[str], None]) -> Iterator[Callable[[str], None]]:
    """Within the block, each message to the returned `progress` starts a step bounded by `step_timeout_s`
    (`FROM_ENV`: `EDGEC_STEP_TIMEOUT_S`; None: unbounded); a step past it raises `StepTimeoutError`."""
    global _watchdog
    seconds = _seconds(step_timeout_s)
    if seconds is None:
        yield progress
        return
    with _watchdog_lock:
        _watchdog = _watchdog or _Watchdog()
    watchdog, clock = _watchdog, _Clock(seconds)

    def say(message: str) -> None:
        watchdog.start(clock, message)
        progress(message)

    watchdog.add(clock)
    try:
        yield say
    finally:
        watchdog.remove(clock)


_Function = TypeVar("_Function", bound=Callable[..., Any])


def bounded_steps(function: _Function) -> _Function:
    """Bound each step (each progress message) of an API verb by its `step_timeout_s` keyword, as the CLI is:
    `compile` and `bench` call it with the messages they would show."""
    log = logging.getLogger(function.__module__)

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        with step_limit(kwargs.get("step_timeout_s", FROM_ENV), kwargs.get("progress") or log.info) as say:
            return function(*args, **{**kwargs, "progress": say})

    return cast(_Function, call)


def utf8_path(path: str | os.PathLike[str], what: str) -> None:
    """Runtimes take paths as UTF-8 strings; refuse one that is not, in one line, before a runtime fails on it."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{what}: the path {os.fsdecode(path)!r} is not valid UTF-8; rename it") from None
