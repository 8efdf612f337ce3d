"""The workstation side of `edgec bench --device`: upload what the agent lacks, submit, follow, fetch the report.

Uploads are addressed by the sha256 of a deterministic tar, so an artifact the agent already has
costs one HEAD request. A dropped connection is retried against the same job id for a bounded
time; the job keeps running on the device meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from edgec.artifact import MANIFEST, read_manifest
from edgec.device import API_PREFIX
from edgec.device.archive import pack
from edgec.device.inventory import Device
from edgec.device.policy import RUNNABLE_SUFFIXES
from edgec.errors import BadInputError, first_line
from edgec.integrity import check_artifact

__all__ = ["RemoteBench", "bench_on_devices", "device_facts_of", "is_reachable"]

#: Seconds one status request waits on the agent for the job to end: progress arrives at this pace, and the
#: device answers one request per this many seconds while it measures, instead of several a second.
_STATUS_WAIT_S = 2.0
#: Seconds a client keeps retrying an agent that stopped answering before it gives up.
RECONNECT_S = 20.0
#: Upper bound of one job's wait on the client (the agent's own per-job timeout is shorter).
_MAX_WAIT_S = 4 * 3600.0
#: Seconds one HTTP request may take (uploads excepted).
_REQUEST_S = 30.0


@dataclass(frozen=True)
class RemoteBench:
    """What to bench: the local `edgec bench` options that travel to the device."""

    artifact: Path
    baseline: Path | None = None
    data: Path | None = None
    labels: Path | None = None
    runs: int | None = None
    warmup: int | None = None
    threads: int | None = None
    input_map: Sequence[str] = ()
    shapes: Sequence[str] = ()
    job: str | None = None


class _AgentError(BadInputError):
    """The agent answered with an error, or could not be reached."""


def _blobs(spec: RemoteBench) -> dict[str, bytes]:
    """The tars to upload, by role: the artifact (checked against its manifest first), and the float baseline,
    data and labels the user named. Nothing outside the artifact goes unless named."""
    artifact = spec.artifact
    if artifact.is_dir():
        if not (artifact / MANIFEST).is_file():
            raise BadInputError(f"artifact: {artifact} is a directory without {MANIFEST}")
        check_artifact(artifact, read_manifest(artifact))
        blobs = {"artifact": pack({p.name: p for p in artifact.iterdir() if not p.name.startswith(".")})}
    elif artifact.is_file() and artifact.suffix.lower() in RUNNABLE_SUFFIXES:
        blobs = {"artifact": pack({artifact.name: artifact})}
    else:
        raise BadInputError(f"artifact: {artifact} is neither a compile output dir nor a model file the agent runs"
                            f" ({', '.join(RUNNABLE_SUFFIXES)})")
    for role, path, suffix in (("baseline", spec.baseline, ".onnx"), ("data", spec.data, ".npz"),
                               ("labels", spec.labels, ".npy")):
        if path is not None:
            if not path.is_file() or path.suffix.lower() != suffix:
                raise BadInputError(f"--{role}: {path} is not a {suffix} file")
            blobs[role] = pack({f"{role}{suffix}": path})
    return blobs


def _http(device: Device) -> aiohttp.ClientSession:
    """An HTTP session for `device`: HTTPS verified against the system's CAs, or only against its `ca_file`."""
    if device.ca_file is None:
        return aiohttp.ClientSession()
    try:
        context = ssl.create_default_context(cafile=str(Path(device.ca_file).expanduser()))
    except (OSError, ssl.SSLError) as exc:
        raise BadInputError(f"device {device.name}: cannot read the CA file {device.ca_file}: {first_line(exc)}") from exc
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))


class _Session:
    """One device's HTTP calls; every error becomes one line naming the device."""

    def __init__(self, device: Device, http: aiohttp.ClientSession) -> None:
        self.device = device
        self.http = http
        self.headers = {"Authorization": f"Bearer {device.token}"} if device.token else {}

    def _fail(self, message: str) -> _AgentError:
        return _AgentError(f"device {self.device.name} ({self.device.url}): {message}")

    async def call(self, method: str, path: str, *, ok: Sequence[int] = (200,), **kwargs: Any) -> tuple[int, Any]:
        timeout = kwargs.pop("timeout", aiohttp.ClientTimeout(total=_REQUEST_S))
        try:
            async with self.http.request(method, f"{self.device.url}{API_PREFIX}{path}", headers=self.headers,
                                         timeout=timeout, **kwargs) as response:
                body = _json(await response.text()) if method != "HEAD" else None
                if response.status in ok:
                    return response.status, body
                error = body.get("error") if isinstance(body, dict) else None
                retry = response.headers.get("Retry-After")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _Unreachable(self._fail(f"agent not reachable: {first_line(exc) if str(exc) else type(exc).__name__}"))
        if response.status == 429:
            raise _Busy(float(retry or 5))
        raise self._fail(f"HTTP {response.status}: {error or response.reason}")


def _json(text: str) -> Any:
    """A response body as JSON; None when it is not (a proxy's or the server's plain-text error page)."""
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


class _Unreachable(Exception):
    def __init__(self, error: _AgentError) -> None:
        super().__init__(str(error))
        self.error = error


class _Busy(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


async def _upload(session: _Session, blobs: Mapping[str, bytes], say: Callable[[str], None]) -> tuple[dict[str, str], int]:
    shas, sent = {}, 0
    for role, blob in blobs.items():
        sha = hashlib.sha256(blob).hexdigest()
        shas[role] = sha
        status, _ = await session.call("HEAD", f"/artifacts/{sha}", ok=(200, 404))
        if status == 404:
            say(f"uploading {role} ({len(blob) / 2**20:.2f} MiB)")
            await session.call("PUT", f"/artifacts/{sha}", ok=(200, 201), data=blob,
                               timeout=aiohttp.ClientTimeout(total=None, sock_read=_REQUEST_S * 4))
            sent += len(blob)
    return shas, sent


async def _submit(session: _Session, request: dict[str, Any], say: Callable[[str], None]) -> str:
    deadline = time.monotonic() + _MAX_WAIT_S
    while True:
        try:
            _, body = await session.call("POST", "/jobs", ok=(202,), json=request)
            return body["id"]
        except _Busy as busy:
            if time.monotonic() > deadline:
                raise session._fail("the agent's queue stayed full") from None
            say(f"agent queue full; retrying in {busy.retry_after:g} s")
            await asyncio.sleep(busy.retry_after)


async def _follow(session: _Session, job: str, say: Callable[[str], None], reconnect_s: float) -> dict[str, Any]:
    """Follow the job until it ends, resuming by id across dropped connections; returns its report."""
    shown, lost_since = 0, None
    deadline = time.monotonic() + _MAX_WAIT_S
    while time.monotonic() < deadline:
        try:
            _, status = await session.call("GET", f"/jobs/{job}", ok=(200, 404), params={"wait": f"{_STATUS_WAIT_S:g}"})
        except _Unreachable as exc:
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > reconnect_s:
                raise session._fail(f"lost the agent during job {job} ({exc.error}); the job may still finish:"
                                    f" rerun with --job {job} to fetch it") from None
            await asyncio.sleep(1.0)
            continue
        lost_since = None
        if "state" not in status:
            raise session._fail(f"the agent no longer knows job {job} (it restarted, or the result expired)")
        new = status["progress_total"] - shown
        for line in status["progress"][-new:] if new > 0 else []:
            say(line)
        shown = status["progress_total"]
        if status["state"] == "done":
            _, report = await session.call("GET", f"/jobs/{job}/result")
            return report
        if status["state"] in ("failed", "cancelled"):
            raise session._fail(f"job {job} {status['state']}: {status['error']}")
    raise session._fail(f"job {job} did not finish within {_MAX_WAIT_S:g} s")


async def _bench_one(device: Device, spec: RemoteBench, blobs: Mapping[str, bytes], progress: Callable[[str], None],
                     reconnect_s: float) -> dict[str, Any]:
    def say(line: str) -> None:
        progress(f"[{device.name}] {line}")

    async with _http(device) as http:
        session = _Session(device, http)
        try:
            _, facts = await session.call("GET", "/facts")
            sent = 0
            if spec.job is None:
                shas, sent = await _upload(session, blobs, say)
                request = {"artifact": shas["artifact"], **{k: shas.get(k) for k in ("baseline", "data", "labels")},
                           "runs": spec.runs, "warmup": spec.warmup, "threads": spec.threads,
                           "input_map": list(spec.input_map), "shapes": list(spec.shapes)}
                job = await _submit(session, request, say)
                say(f"job {job} submitted (uploaded {sent:,} bytes)")
            else:
                job = spec.job
                say(f"following job {job}")
            report = await _follow(session, job, say, reconnect_s)
        except _Unreachable as exc:
            raise exc.error from None
    report["device"] = {"name": device.name, "url": device.url, "uploaded_bytes": sent, **facts}
    return report


def bench_on_devices(devices: Sequence[Device], spec: RemoteBench, *, progress: Callable[[str], None] | None = None,
                     reconnect_s: float = RECONNECT_S) -> list[dict[str, Any]]:
    """Bench `spec` on every device concurrently; one report per device, in order.

    Raises the first device's error (each failure is also announced through `progress`).
    """
    say = progress or (lambda _: None)
    blobs = {} if spec.job else _blobs(spec)

    async def everything() -> list[Any]:
        return await asyncio.gather(*(_bench_one(d, spec, blobs, say, reconnect_s) for d in devices),
                                    return_exceptions=True)

    results = asyncio.run(everything())
    errors = [r for r in results if isinstance(r, BaseException)]
    for error in errors[1:]:
        say(f"error: {error}")
    if errors:
        raise errors[0]
    return results


def device_facts_of(device: Device) -> dict[str, Any]:
    """The agent's device facts (raises one clear line when it cannot be asked)."""

    async def ask() -> dict[str, Any]:
        async with _http(device) as http:
            try:
                return (await _Session(device, http).call("GET", "/facts"))[1]
            except _Unreachable as exc:
                raise exc.error from None

    return asyncio.run(ask())


def is_reachable(device: Device) -> bool:
    try:
        device_facts_of(device)
    except BadInputError:
        return False
    return True
