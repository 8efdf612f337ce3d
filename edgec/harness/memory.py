"""Resident-memory readings for the process that calls them (the harness calls them in a worker).

Why a fresh worker per model (see `edgec.harness.run`): a process's peak RSS never goes down, so
the peak of a process that already loaded another model, or imported a framework, says nothing
about this model. Each reading here is of the calling process only.

Why not `getrusage(RUSAGE_SELF).ru_maxrss` first: on Linux the kernel carries the pre-`exec`
high-water mark across `execve` (`exec_mmap` folds the old address space's peak into the
process's `maxrss`), and Python's "spawn" start method forks (or vforks) the parent before
exec'ing the new interpreter. A worker spawned by a 400 MiB parent therefore reports
`ru_maxrss` ~400 MiB before it has allocated anything (measured: 431 MiB against a true 32 MiB).
`VmHWM` in `/proc/self/status` is the high-water mark of the current address space only, so it
starts fresh at `exec`; it is used where it exists and `ru_maxrss` is the fallback elsewhere.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from pathlib import Path

__all__ = ["peak_rss_mb", "current_rss_mb"]

logger = logging.getLogger(__name__)

_MIB = 1024.0 * 1024.0
_STATUS = Path("/proc/self/status")
_STATM = Path("/proc/self/statm")


def _status_kib(field: str) -> float | None:
    """Return a `kB` field of /proc/self/status (e.g. VmHWM) in KiB, or None where unavailable."""
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return float(parts[1])
    return None


def _ru_maxrss_mb() -> float:
    """`ru_maxrss` in MiB: the field is KiB on Linux and BSDs, bytes on macOS."""
    maxrss = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    if sys.platform == "darwin":
        return maxrss / _MIB
    return maxrss / 1024.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (1 MiB = 2**20 bytes).

    Reads `VmHWM` from /proc/self/status (KiB) where it exists, since it is not inflated by the
    parent's memory after a spawn (see the module docstring); elsewhere falls back to
    `getrusage(RUSAGE_SELF).ru_maxrss` (KiB on Linux, bytes on macOS).

    Returns:
        The high-water mark of resident memory, in MiB.
    """
    hwm_kib = _status_kib("VmHWM")
    if hwm_kib is not None:
        return hwm_kib / 1024.0
    return _ru_maxrss_mb()


def current_rss_mb() -> float:
    """Resident set size of this process right now, in MiB.

    Formula: `resident_pages * page_size / 2**20`, with `resident_pages` the second field of
    /proc/self/statm. Where /proc is unavailable (macOS, Windows) there is no portable cheap
    reading of the current RSS, so this returns `peak_rss_mb()`, an upper bound.

    Returns:
        The current resident memory in MiB (or the peak where the current value cannot be read).
    """
    try:
        fields = _STATM.read_text().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") / _MIB
    except (OSError, IndexError, ValueError):
        return peak_rss_mb()
