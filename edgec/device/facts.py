"""What a device is: the facts an agent reports and a remote bench report carries."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any

from edgec import __version__
from edgec.artifact import package_versions
from edgec.target import host_cpu_flags, list_targets

__all__ = ["device_facts"]

#: Runtime packages whose versions a device reports.
_RUNTIMES = ("onnxruntime", "ai-edge-litert", "tensorrt", "numpy", "onnx")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def device_facts() -> dict[str, Any]:
    """Hostname, OS, CPU, memory, runtimes and the edgec targets that run here."""
    targets = []
    for target in list_targets():
        runs, why = target.runnable_here()
        targets.append({"name": target.name, "runnable": runs, "why": why})
    flags = host_cpu_flags()
    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu_model": _cpu_model(),
        "isa": sorted(flags) if flags is not None else None,
        "cores": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
        "runtimes": package_versions(_RUNTIMES),
        "targets": targets,
        "agent_version": __version__,
    }
