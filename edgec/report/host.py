"""Provenance a bench report records: which CPU, which ISA, which code measured what.

A latency is only comparable with one measured on the same device, and a regression is only
traceable to a build when the report names the exact bytes (sha256) and the source revision.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from edgec import __version__
from edgec.artifact import sha256_path
from edgec.frontends import model_files
from edgec.target import host_cpu_flags

__all__ = ["INT8_ISA_FLAGS", "cpu_model", "host_facts", "git_describe", "provenance"]

#: CPU features that decide int8 speed (VNNI/AMX dot products on x86, dotprod/i8mm on Arm), in
#: /proc/cpuinfo spelling after `edgec.target`'s Arm aliases.
INT8_ISA_FLAGS: tuple[str, ...] = (
    "sse4_1", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "amx_tile", "amx_int8", "neon", "dotprod", "i8mm", "sve", "fp16",
)  # fmt: skip
_GIT_TIMEOUT_S = 5.0


def cpu_model() -> str:
    """The CPU's marketing name ("model name" on x86, "Hardware"/"Model" on Arm), else `platform.processor()`."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Hardware", "Model"):
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def host_facts() -> dict[str, Any]:
    """CPU model, the int8-relevant ISA flags present, logical cores and the cores this process may use."""
    flags = host_cpu_flags()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "isa": [flag for flag in INT8_ISA_FLAGS if flags is not None and flag in flags],
        "usable_cpus": usable,
        "system": f"{platform.system()} {platform.release()}",
    }


def git_describe(where: str | os.PathLike[str] = ".") -> str | None:
    """`git describe --tags --always --dirty` of the work tree `where` is in; None outside one or without git."""
    try:
        done = subprocess.run(["git", "describe", "--tags", "--always", "--dirty"], cwd=where, capture_output=True,
                              text=True, timeout=_GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def provenance(model_path: str | os.PathLike[str], manifest: dict[str, Any] | None,
               baseline_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What was measured and by which code: the model's name (its source's file stem, else the file's own),
    sha256 of the model's files (external data included), of the float baseline's when there is one, the
    source's sha256 from the manifest, edgec's version, and `git describe` of the current directory."""
    source = (manifest or {}).get("source", {})
    return {
        "model": Path(source.get("path") or model_path).stem,
        "artifact_sha256": sha256_path(*model_files(Path(model_path))),
        "baseline_sha256": sha256_path(*model_files(Path(baseline_path))) if baseline_path is not None else None,
        "source_sha256": source.get("sha256"),
        "edgec_version": __version__,
        "git_describe": git_describe(),
    }
