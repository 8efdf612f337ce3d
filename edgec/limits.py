"""How much an input may make edgec allocate or compute, so a few crafted bytes cannot take the machine.

Each limit has a default that fits any real edge model and an environment variable that raises it:

- `EDGEC_MAX_TENSOR_MB` (default 4096): the largest tensor a model may declare, or shape inference
  and constant folding may produce; the largest array in a data file.
- `EDGEC_MAX_DATA_MB` (default 8192): all arrays of one `.npz` data file together, by their headers,
  before any is read.
- `EDGEC_MAX_DIM` (default 2**31 - 1): one dimension of a `--fix-shape`, `--input` or `fix_dims`.
- `EDGEC_STEP_TIMEOUT_S` (default 1800): one step of an `edgec` command (loading, verifying,
  optimizing, calibrating, measuring); past it the command ends with exit 2.

Files that are not regular (FIFOs, devices) are refused where a file is read, so no read blocks.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgec.errors import BadInputError

__all__ = ["max_tensor_bytes", "max_data_bytes", "max_dim", "check_tensor_bytes", "regular_file", "check_npy_sizes",
           "check_dims", "MAX_THREADS", "step", "step_timeout", "watch_steps", "utf8_path"]

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


class _Watchdog:
    """Ends the process (exit 2, one line) when one step runs past its limit.

    Runtimes cannot be interrupted from Python while they run a graph (a Loop with a trip count of
    10**15 never returns to the interpreter), so the only bound is the process itself. What a killed
    run leaves (its staging and work directories) carries its process id and is cleaned by the next
    run (`edgec.artifact.clean_stale`).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.name = ""
        self.deadline = math.inf
        self.wake = threading.Event()
        threading.Thread(target=self._watch, name="edgec-step-watchdog", daemon=True).start()

    def step(self, name: str) -> None:
        self.name, self.deadline = name, time.monotonic() + self.seconds
        self.wake.set()

    def _watch(self) -> None:
        while True:
            self.wake.wait(max(self.deadline - time.monotonic(), 0.0) if math.isfinite(self.deadline) else None)
            self.wake.clear()
            if time.monotonic() >= self.deadline:
                sys.stderr.write(f"edgec: error: step '{self.name}' ran longer than {self.seconds:g} s, the limit"
                                 " (EDGEC_STEP_TIMEOUT_S); the model may never finish (e.g. a Loop with a huge trip"
                                 " count)\n")
                sys.stderr.flush()
                os._exit(2)


_watchdog: _Watchdog | None = None


def step_timeout() -> float:
    """Seconds one step of a command may take (`EDGEC_STEP_TIMEOUT_S`, default 1800)."""
    return float(_limit("EDGEC_STEP_TIMEOUT_S", 1800))


def step(name: str) -> None:
    """A command's next step begins: its time limit starts now (only where `watch_steps` was called)."""
    if _watchdog is not None:
        _watchdog.step(name)


def watch_steps() -> None:
    """Bound every later `step` by `step_timeout()`; for a process that is edgec's own (the CLI)."""
    global _watchdog
    if _watchdog is None:
        _watchdog = _Watchdog(step_timeout())


def utf8_path(path: str | os.PathLike[str], what: str) -> None:
    """Runtimes take paths as UTF-8 strings; refuse one that is not, in one line, before a runtime fails on it."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{what}: the path {os.fsdecode(path)!r} is not valid UTF-8; rename it") from None
