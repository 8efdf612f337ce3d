"""`AgentTransport`: the harness's workers run on a device, behind an `edgec agent`.

`measure(..., transport=AgentTransport(device))` times models on the device with this machine's
harness: the same interleaved rounds, the same worker entry (the agent starts
`python -m edgec.harness.worker` for each model), the same JSON messages and `.npz` files, carried
over HTTP. The transport first takes a measurement session, a job in the agent's queue, so nothing
else measures on the device meanwhile; models are uploaded once by sha256 like `bench --device` does.
Plain blocking HTTP (urllib) because the harness is synchronous.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edgec.device import API_PREFIX
from edgec.device.archive import pack
from edgec.device.inventory import Device
from edgec.device.sessions import npz_arrays, npz_bytes
from edgec.errors import BadInputError, first_line
from edgec.frontends import model_files
from edgec.harness.transport import Channel, Transport, WorkerExited

__all__ = ["AgentTransport"]

#: Seconds an HTTP request may take beyond the wait it asks the agent for.
_REQUEST_S = 60.0
#: Seconds between checks whether the session's turn has come.
_QUEUE_POLL_S = 0.5


class _Http:
    """Blocking calls to one agent; every failure is one line naming the device."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.context = ssl.create_default_context(cafile=device.ca_file) if device.ca_file else None
        self.headers = {"Authorization": f"Bearer {device.token}"} if device.token else {}

    def call(self, method: str, path: str, *, body: bytes | None = None, json_body: Any = None,
             wait_s: float = 0.0, ok: tuple[int, ...] = (200, 201, 202)) -> tuple[int, bytes, Mapping[str, str]]:
        headers = dict(self.headers)
        if json_body is not None:
            body, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        request = urllib.request.Request(f"{self.device.url}{API_PREFIX}{path}", data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=_REQUEST_S + wait_s, context=self.context) as response:
                return response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return exc.code, exc.read(), exc.headers
            if exc.code == 410:
                raise WorkerExited(path) from exc
            try:
                message = json.loads(exc.read()).get("error")
            except (ValueError, AttributeError):
                message = None
            raise BadInputError(f"device {self.device.name} ({self.device.url}): HTTP {exc.code}: {message or exc.reason}"
                                ) from None
        except OSError as exc:  # URLError, timeouts, resets
            raise BadInputError(f"device {self.device.name} ({self.device.url}): agent not reachable: {first_line(exc)}"
                                ) from None

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return json.loads(self.call(method, path, **kwargs)[1] or b"null")


class _AgentChannel(Channel):
    """One worker on the device, reached through its session's HTTP endpoints."""

    def __init__(self, transport: AgentTransport, who: str) -> None:
        self.who = who
        self.transport = transport
        self.http = transport.http
        self.base = f"/jobs/{transport.session}/workers/" + self.http.json("POST", f"/jobs/{transport.session}/workers",
                                                                            json_body={"who": who})["worker"]

    def send(self, message: Mapping[str, Any]) -> None:
        self.http.call("POST", f"{self.base}/send", json_body=dict(message))

    def receive(self, timeout: float) -> dict[str, Any] | None:
        query = urllib.parse.urlencode({"timeout": f"{timeout:g}"})
        reply: dict[str, Any] | None = self.http.json("GET", f"{self.base}/receive?{query}", wait_s=timeout)["reply"]
        return reply

    def put_arrays(self, name: str, arrays: Mapping[str, np.ndarray]) -> None:
        self.http.call("PUT", f"{self.base}/files/{name}", body=npz_bytes(dict(arrays)))

    def take_arrays(self, name: str) -> dict[str, np.ndarray]:
        return npz_arrays(self.http.call("GET", f"{self.base}/files/{name}")[1])

    def model_location(self, path: Path) -> str:
        return self.transport.locate(Path(path))

    def exit_code(self) -> int | None:
        code: int | None = self.http.json("GET", f"{self.base}/exit")["exit_code"]
        return code

    def close(self) -> None:
        try:
            self.http.call("DELETE", self.base, ok=(200, 404, 409))
        except BadInputError:
            pass  # the session (and with it this worker) is ended when the transport closes


class AgentTransport(Transport):
    """Workers on the device behind an agent; use as a context manager around `measure`/`benchmark`.

    Entering waits for the session's turn in the agent's queue (retrying while the queue is full);
    leaving ends the session, which stops every worker it started.
    """

    def __init__(self, device: Device, *, max_wait_s: float = 4 * 3600.0) -> None:
        self.http = _Http(device)
        self.max_wait_s = max_wait_s
        self.session: str | None = None
        self.located: dict[Path, str] = {}

    def __enter__(self) -> AgentTransport:
        deadline = time.monotonic() + self.max_wait_s
        while self.session is None:
            status, body, headers = self.http.call("POST", "/sessions", ok=(202, 429))
            if status == 202:
                self.session = json.loads(body)["id"]
            elif time.monotonic() > deadline:
                raise BadInputError(f"device {self.http.device.name}: the agent's queue stayed full")
            else:
                time.sleep(float(headers.get("Retry-After") or 5))
        while True:
            state = self.http.json("GET", f"/jobs/{self.session}")
            if state["state"] == "running":
                return self
            if state["state"] != "queued" or time.monotonic() > deadline:
                raise BadInputError(f"device {self.http.device.name}: measurement session {self.session} is"
                                    f" {state['state']}: {state.get('error')}")
            time.sleep(_QUEUE_POLL_S)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if self.session is not None:
            self.http.call("DELETE", f"/jobs/{self.session}", ok=(200, 404))
            self.session = None

    def open(self, who: str) -> Channel:
        if self.session is None:
            raise BadInputError("an AgentTransport is used inside `with`: the session holds the device")
        return _AgentChannel(self, who)

    def locate(self, path: Path) -> str:
        """Upload the model (with its external data) unless the device has it; its path there."""
        if path not in self.located:
            blob = pack({file.relative_to(path.parent).as_posix(): file for file in model_files(path)})
            sha = hashlib.sha256(blob).hexdigest()
            if self.http.call("HEAD", f"/artifacts/{sha}", ok=(200, 404))[0] == 404:
                self.http.call("PUT", f"/artifacts/{sha}", body=blob)
            self.located[path] = self.http.json("POST", f"/jobs/{self.session}/models",
                                                json_body={"sha256": sha, "name": path.name})["location"]
        return self.located[path]
