"""Where a benchmark worker runs, kept apart from what it runs (`edgec.harness.worker`).

The harness talks to each worker through a `Channel`: JSON messages both ways plus named `.npz`
files beside them. A `Transport` opens channels. `LocalTransport` starts each worker as a fresh
`python -m edgec.harness.worker` process on this machine; a transport that reaches a worker on
another machine only has to carry the same messages and files. Because the protocol is data only
(JSON, and `.npz` read without pickle), neither side can make the other run code.
"""

from __future__ import annotations

import abc
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

import edgec
from edgec.harness.wire import read_arrays, write_arrays

__all__ = ["Channel", "Transport", "LocalTransport", "WorkerExited"]

#: Seconds to wait for a worker to exit by itself before terminating it.
_JOIN_TIMEOUT_S = 5.0
#: Longest single wait for a worker's reply (see `_LocalChannel.receive`).
_RECEIVE_SLICE_S = 0.2


class WorkerExited(Exception):
    """The worker ended (or its connection did) before answering."""


class Channel(abc.ABC):
    """One worker process, wherever it runs: send a JSON message, receive its JSON reply, swap `.npz` files."""

    who: str

    @abc.abstractmethod
    def send(self, message: Mapping[str, Any]) -> None:
        """Send one command; raises `WorkerExited` when the worker is gone."""

    @abc.abstractmethod
    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next reply, None if none came within `timeout` s; raises `WorkerExited` when the worker is gone."""

    @abc.abstractmethod
    def put_arrays(self, name: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Make named arrays available to the worker as the `.npz` file `name`."""

    @abc.abstractmethod
    def take_arrays(self, name: str) -> dict[str, np.ndarray]:
        """Read (and remove) the `.npz` file `name` the worker wrote."""

    @abc.abstractmethod
    def model_location(self, path: Path) -> str:
        """The path under which the worker finds the model at `path`."""

    @abc.abstractmethod
    def exit_code(self) -> int | None:
        """The worker's exit status once it has ended, else None."""

    @abc.abstractmethod
    def close(self) -> None:
        """End the worker (asking first, then forcing) and release what the channel created."""


class Transport(abc.ABC):
    """Opens channels to fresh workers somewhere."""

    @abc.abstractmethod
    def open(self, who: str) -> Channel:
        """Start a fresh worker for the model called `who` (in progress messages and errors)."""


class _LocalChannel(Channel):
    """A worker subprocess on this machine: stdin/stdout pipes, an exchange directory it created."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.exchange = Path(tempfile.mkdtemp(prefix="edgec-worker-"))
        env = dict(os.environ)
        # The worker imports the same edgec as this process, however this process found it.
        package_root = str(Path(edgec.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgec.harness.worker", str(self.exchange)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, encoding="utf-8",
        )
        self.replies: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        self.reader = threading.Thread(target=self._read, args=(self.process.stdout,), name=f"edgec-harness-{who}",
                                       daemon=True)
        self.reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.replies.put(line)
        self.replies.put(None)  # end of stream: the worker exited

    def send(self, message: Mapping[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise WorkerExited(self.who) from exc

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """Wait in short slices: an exception sent to this thread (a step past its time limit) is raised
        between two of them, where one long wait inside the lock would hold it until the reply came."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.replies.get(timeout=max(min(_RECEIVE_SLICE_S, deadline - time.monotonic()), 0.0))
                break
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return None
        if line is None:
            self.replies.put(None)  # stays ended for any later call
            raise WorkerExited(self.who)
        reply: dict[str, Any] = json.loads(line)
        return reply

    def put_arrays(self, name: str, arrays: Mapping[str, np.ndarray]) -> None:
        write_arrays(self.exchange / name, arrays)

    def take_arrays(self, name: str) -> dict[str, np.ndarray]:
        path = self.exchange / name
        try:
            return read_arrays(path)
        finally:
            path.unlink(missing_ok=True)

    def model_location(self, path: Path) -> str:
        return str(Path(path).resolve())

    def exit_code(self) -> int | None:
        try:
            return self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()  # a worker waiting for a command reads end-of-input and exits
        except OSError:
            pass
        try:
            self.process.wait(timeout=_JOIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(timeout=_JOIN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reader.join(timeout=_JOIN_TIMEOUT_S)  # the worker's end of the pipe is closed: it reads EOF
        if self.process.stdout is not None and not self.reader.is_alive():
            self.process.stdout.close()
        shutil.rmtree(self.exchange, ignore_errors=True)


class LocalTransport(Transport):
    """Each worker is a fresh `python -m edgec.harness.worker` process on this machine, with its own exchange directory."""

    def open(self, who: str) -> Channel:
        return _LocalChannel(who)
