"""Measurement sessions on the agent: a remote harness drives benchmark workers on this device.

A session is a job in the agent's queue: while it runs, nothing else measures, and its client opens
workers (each a fresh local `python -m edgec.harness.worker`, exactly as a local bench starts them)
and relays the harness's JSON messages and `.npz` files to them. The agent lets a worker load only a
model the session uploaded, on a runtime that reads data (ONNX Runtime, LiteRT), never a framework
that runs code; arrays are checked to load without pickle before a worker sees them.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgec.device.policy import RUNNABLE_SUFFIXES
from edgec.errors import BadInputError
from edgec.harness.transport import Channel, LocalTransport

__all__ = ["Session", "SAFE_RUNTIMES", "LEASE_S", "MAX_RECEIVE_S", "check_worker_message", "model_location", "npz_bytes",
           "npz_arrays"]

#: Runtimes a remote client may load models with: they read model files as data.
SAFE_RUNTIMES = ("onnxruntime", "tflite")
#: Seconds without any request after which a session is ended (its client is gone).
LEASE_S = 120.0
#: Longest a single receive may wait on the agent.
MAX_RECEIVE_S = 600.0


@dataclass
class Session:
    """A running session's workers and the model paths it may load."""

    channels: dict[str, Channel] = field(default_factory=dict)
    models: set[str] = field(default_factory=set)
    last_seen: float = field(default_factory=time.monotonic)
    busy: int = 0

    def expired(self) -> bool:
        return self.busy == 0 and time.monotonic() - self.last_seen > LEASE_S

    async def open(self, who: str) -> str:
        worker = uuid.uuid4().hex
        self.channels[worker] = await asyncio.to_thread(LocalTransport().open, who)
        return worker

    async def close(self) -> None:
        channels, self.channels = list(self.channels.values()), {}
        for channel in channels:
            await asyncio.to_thread(channel.close)


def check_worker_message(message: Any, session: Session) -> str | None:
    """Why the agent refuses to pass `message` to a worker, or None."""
    if not isinstance(message, dict):
        return "a worker message is a JSON object"
    if message.get("command") != "load":
        return None
    if message.get("runtime") not in SAFE_RUNTIMES:
        return f"runtime {message.get('runtime')!r} is not one the agent runs (it runs {', '.join(SAFE_RUNTIMES)})"
    if message.get("model") not in session.models:
        return "the worker may load only a model this session uploaded"
    options = message.get("options") or {}
    if not isinstance(options, dict) or options.get("trust_source"):
        return "'options' must be an object, without trust_source"
    return None


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npz_arrays(blob: bytes) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` held in memory, never unpickling (raises ValueError for object arrays)."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def model_location(entry: Path, name: str) -> Path:
    """The model file `name` inside an unpacked upload, refusing other suffixes and paths that leave it."""
    path = (entry / name).resolve()
    if entry.resolve() not in path.parents or not path.is_file():
        raise BadInputError(f"no model {name!r} in that upload")
    if path.suffix.lower() not in RUNNABLE_SUFFIXES:
        raise BadInputError(f"the agent loads only {', '.join(RUNNABLE_SUFFIXES)} models, not {path.name}")
    return path
