"""`edgec agent`: an HTTP service on the device that runs `edgec bench` on uploaded artifacts, one at a time.

Each job runs the local `edgec bench` command in a child process (the same harness, its fresh
worker processes and its report), so a timeout or cancel can kill it and a crash fails only that
job. A single runner task takes jobs from a bounded queue: no two measurements share the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hmac
import ipaddress
import json
import os
import shutil
import signal
import ssl
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from edgec import __version__
from edgec.device import API_PREFIX
from edgec.device.archive import UnsafeArchiveError
from edgec.device.cache import ArtifactCache, is_sha256
from edgec.device.facts import device_facts
from edgec.device.policy import bench_target
from edgec.device.sessions import MAX_RECEIVE_S, Session, check_worker_message, model_location, npz_arrays, npz_bytes
from edgec.harness.transport import WorkerExited
from edgec.errors import BadInputError, first_line

__all__ = ["AgentConfig", "make_app", "serve", "is_loopback"]

#: Upload bytes read per chunk.
_CHUNK = 1 << 16
#: Longest a status request may wait for its job to end.
_MAX_STATUS_WAIT_S = 30.0
#: Job request fields that become `edgec bench` options, with their types.
_BENCH_INTS = ("runs", "warmup", "threads")


@dataclass(frozen=True)
class AgentConfig:
    """How an agent runs; `token` None means no authentication (loopback only)."""

    workdir: Path
    token: str | None
    host: str = "127.0.0.1"
    port: int = 8765
    max_upload_bytes: int = 512 << 20
    cache_bytes: int = 4 << 30
    queue_size: int = 32
    job_timeout_s: float = 1800.0
    result_ttl_s: float = 3600.0
    tls_cert: Path | None = None
    tls_key: Path | None = None


@dataclass
class Job:
    id: str
    request: dict[str, Any]
    pins: list[str]
    state: str = "queued"
    progress: list[str] = field(default_factory=list)
    error: str | None = None
    report: dict[str, Any] | None = None
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    process: asyncio.subprocess.Process | None = None
    #: Set once the job is done, failed or cancelled: what a waiting status request wakes on.
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: A measurement session (a remote harness driving workers here) instead of a bench run.
    session: Session | None = None

    def status(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "progress": self.progress[-20:],
                "progress_total": len(self.progress), "error": self.error,
                "queued_at": self.queued_at, "started_at": self.started_at, "ended_at": self.ended_at}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _http_error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    """An aiohttp HTTP exception (raised from a helper) with the same JSON body as `_error`."""
    return cls(text=json.dumps({"error": message}), content_type="application/json")


class Agent:
    """The agent's state: artifact cache, jobs, the queue and its single runner."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.cache = ArtifactCache(config.workdir / "cache", max_bytes=config.cache_bytes,
                                   max_file_bytes=config.max_upload_bytes * 4)
        self.results = config.workdir / "results"
        self.results.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, Job] = {}
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=config.queue_size)
        self.stats = {"submitted": 0, "rejected": 0, "completed": 0, "failed": 0, "max_queue_depth": 0}
        self.facts = device_facts()
        self.unpacking = asyncio.Lock()

    # --- jobs -----------------------------------------------------------------------------------
    async def run_forever(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                if job.state == "queued":
                    await (self._hold(job) if job.session is not None else self._run(job))
            finally:
                for sha in job.pins:
                    self.cache.unpin(sha)
                self.queue.task_done()

    async def _run(self, job: Job) -> None:
        job.state = "running"
        out = Path(tempfile.mkdtemp(prefix=f"{job.id}-", dir=self.results)) / "report.json"
        try:
            command = self._command(job, out)
        except BadInputError as exc:
            self._finish(job, "failed", str(exc))
            return
        job.started_at = time.time()
        job.process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            # Its own process group (so a timeout or cancel kills it with its workers) but the agent's
            # session: a new session would put it in a new scheduler autogroup (Linux), which shares the
            # CPU differently from a local `edgec bench` in its shell's session and biases the comparison.
            process_group=0, preexec_fn=_die_with_parent)
        if job.state == "cancelled":  # cancelled while its process was starting
            _kill(job.process)
        try:
            await asyncio.wait_for(self._follow(job), timeout=self.config.job_timeout_s)
        except asyncio.TimeoutError:
            _kill(job.process)
            await job.process.wait()
            job.ended_at = time.time()
            self._finish(job, "failed", f"timed out after {self.config.job_timeout_s:g} s")
            return
        job.ended_at = time.time()
        code = job.process.returncode
        if job.state == "cancelled":
            job.process = None
            return
        if code == 0 and out.is_file():
            job.report = json.loads(out.read_text(encoding="utf-8"))
            shutil.rmtree(out.parent, ignore_errors=True)
            job.report["job"] = {"id": job.id, "started_at": job.started_at, "ended_at": job.ended_at}
            self._finish(job, "done", None)
        else:
            errors = [line for line in job.progress if line.startswith("edgec: error: ")]
            why = errors[-1].removeprefix("edgec: error: ") if errors else f"the bench process exited with code {code}"
            self._finish(job, "failed", why)

    async def _hold(self, job: Job) -> None:
        """Give the device to a session until its client ends it, goes quiet, or the job timeout passes."""
        assert job.session is not None
        job.state, job.started_at = "running", time.time()
        job.session.last_seen = time.monotonic()
        deadline = time.monotonic() + self.config.job_timeout_s
        while not job.ended.is_set():
            if job.session.expired() or time.monotonic() > deadline:
                why = "its client went quiet" if job.session.expired() else f"timed out after {self.config.job_timeout_s:g} s"
                self._finish(job, "failed", why)
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(job.ended.wait(), timeout=1.0)
        await job.session.close()
        job.ended_at = job.ended_at or time.time()

    async def _follow(self, job: Job) -> None:
        assert job.process is not None and job.process.stderr is not None
        async for line in job.process.stderr:
            text = line.decode("utf-8", errors="replace").rstrip()
            if text:
                job.progress.append(text)
        await job.process.wait()

    def _finish(self, job: Job, state: str, error: str | None) -> None:
        job.state, job.error, job.process = state, error, None
        job.ended.set()
        self.stats["completed" if state == "done" else "failed"] += 1

    def _command(self, job: Job, out: Path) -> list[str]:
        request = job.request
        baseline = self._entry(request.get("baseline"))
        target = bench_target(self._entry(request["artifact"]), has_baseline=baseline is not None)
        command = [sys.executable, "-m", "edgec", "bench", str(target), "--json", str(out), "--baseline-from", "onnx"]
        if baseline is not None:
            command += ["--baseline", str(_single(baseline, ".onnx"))]
        data = self._entry(request.get("data"))
        if data is not None:
            command += ["--data", str(_single(data, ".npz"))]
        labels = self._entry(request.get("labels"))
        if labels is not None:
            command += ["--labels", str(_single(labels, ".npy"))]
        for name in _BENCH_INTS:
            if request.get(name) is not None:
                command += [f"--{name}", str(request[name])]
        for pair in request.get("input_map", []):
            command += ["--input-map", pair]
        for shape in request.get("shapes", []):
            command += ["--shape", shape]
        return command

    def _entry(self, sha: str | None) -> Path | None:
        if sha is None:
            return None
        entry = self.cache.path(sha)
        if entry is None:
            raise BadInputError(f"artifact {sha} is no longer cached on the device; upload it again")
        return entry

    def prune(self) -> None:
        """Forget finished jobs older than the result lifetime."""
        cutoff = time.time() - self.config.result_ttl_s
        for job_id in [j.id for j in self.jobs.values() if j.ended_at is not None and j.ended_at < cutoff]:
            del self.jobs[job_id]

    # --- HTTP -----------------------------------------------------------------------------------
    @web.middleware
    async def auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.config.token is not None and request.path != f"{API_PREFIX}/health":
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
            if not hmac.compare_digest(given, self.config.token.encode()):
                return _error(401, "missing or wrong token")
        return await handler(request)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "agent_version": __version__, "queued": self.queue.qsize(),
                                  "jobs": len(self.jobs), **self.stats})

    async def get_facts(self, request: web.Request) -> web.Response:
        return web.json_response(self.facts)

    async def has_artifact(self, request: web.Request) -> web.Response:
        sha = request.match_info["sha"]
        return web.Response(status=200 if is_sha256(sha) and self.cache.path(sha) else 404)

    async def put_artifact(self, request: web.Request) -> web.Response:
        sha = request.match_info["sha"]
        if not is_sha256(sha):
            return _error(400, "artifacts are addressed by their lowercase hex sha256")
        if self.cache.path(sha) is not None:
            return web.json_response({"sha256": sha, "stored_bytes": 0})
        cap = self.config.max_upload_bytes
        if request.content_length is not None and request.content_length > cap:
            return _error(413, f"upload of {request.content_length} bytes is over the agent's {cap}-byte cap")
        upload = self.cache.new_upload()
        received = 0
        try:
            with open(upload, "wb") as handle:
                async for chunk in request.content.iter_chunked(_CHUNK):
                    received += len(chunk)
                    if received > cap:
                        upload.unlink(missing_ok=True)
                        return _error(413, f"upload is over the agent's {cap}-byte cap")
                    handle.write(chunk)
            async with self.unpacking:  # two clients uploading the same artifact: the second finds it unpacked
                if self.cache.path(sha) is None:
                    await asyncio.to_thread(self.cache.add, sha, upload)
        except UnsafeArchiveError as exc:
            return _error(400, f"archive refused: {exc}")
        except ValueError as exc:
            return _error(400, str(exc))
        finally:
            upload.unlink(missing_ok=True)
        return web.json_response({"sha256": sha, "stored_bytes": received}, status=201)

    async def submit(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        problem = _check_request(body)
        if problem:
            return _error(400, problem)
        shas = [body[k] for k in ("artifact", "baseline", "data", "labels") if body.get(k) is not None]
        missing = [sha for sha in shas if self.cache.path(sha) is None]
        if missing:
            return _error(409, f"upload {missing[0]} first: the device does not have it")
        return self._enqueue(Job(uuid.uuid4().hex, body, shas))

    def _enqueue(self, job: Job) -> web.Response:
        """Queue a job (429 with Retry-After when the queue is full), pinning the uploads it uses."""
        self.prune()
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.stats["rejected"] += 1
            return _error(429, f"the queue is full ({self.config.queue_size} jobs)", **{"Retry-After": "5"})
        for sha in job.pins:
            self.cache.pin(sha)
        self.jobs[job.id] = job
        self.stats["submitted"] += 1
        self.stats["max_queue_depth"] = max(self.stats["max_queue_depth"], self.queue.qsize())
        return web.json_response({"id": job.id, "state": job.state}, status=202)

    # --- sessions: a remote harness drives workers here ------------------------------------------
    async def open_session(self, request: web.Request) -> web.Response:
        job = Job(uuid.uuid4().hex, {}, [], session=Session())
        return self._enqueue(job)

    def _session(self, request: web.Request) -> tuple[Job, Session]:
        job = self._job(request)
        if job.session is None or job.state != "running":
            raise _http_error(web.HTTPConflict, f"job {job.id} is not a running session ({job.state})")
        job.session.last_seen = time.monotonic()
        return job, job.session

    def _channel(self, request: web.Request) -> tuple[Session, Any]:
        _, session = self._session(request)
        channel = session.channels.get(request.match_info["worker"])
        if channel is None:
            raise _http_error(web.HTTPNotFound, "no such worker in this session")
        return session, channel

    async def session_model(self, request: web.Request) -> web.Response:
        """Where a worker finds a model of an upload; only such paths may be loaded in this session."""
        job, session = self._session(request)
        body = await _json_body(request)
        if not isinstance(body, dict) or not is_sha256(str(body.get("sha256"))) or not isinstance(body.get("name"), str):
            return _error(400, "give the upload's 'sha256' and the model file's 'name'")
        entry = self.cache.path(body["sha256"])
        if entry is None:
            return _error(409, f"upload {body['sha256']} first: the device does not have it")
        try:
            path = str(model_location(entry, body["name"]))
        except BadInputError as exc:
            return _error(400, str(exc))
        if body["sha256"] not in job.pins:
            self.cache.pin(body["sha256"])
            job.pins.append(body["sha256"])
        session.models.add(path)
        return web.json_response({"location": path})

    async def open_worker(self, request: web.Request) -> web.Response:
        _, session = self._session(request)
        body = await _json_body(request)
        who = body.get("who") if isinstance(body, dict) else None
        return web.json_response({"worker": await session.open(str(who or "model"))}, status=201)

    async def worker_send(self, request: web.Request) -> web.Response:
        session, channel = self._channel(request)
        message = await _json_body(request)
        problem = check_worker_message(message, session)
        if problem:
            return _error(403, problem)
        try:
            await asyncio.to_thread(channel.send, message)
        except WorkerExited:
            return _error(410, "the worker exited")
        return web.json_response({"sent": True})

    async def worker_receive(self, request: web.Request) -> web.Response:
        session, channel = self._channel(request)
        try:
            timeout = min(float(request.query.get("timeout", 0)), MAX_RECEIVE_S)
        except ValueError:
            return _error(400, "'timeout' must be a number of seconds")
        session.busy += 1
        try:
            reply = await asyncio.to_thread(channel.receive, timeout)
        except WorkerExited:
            return _error(410, "the worker exited")
        finally:
            session.busy -= 1
            session.last_seen = time.monotonic()
        return web.json_response({"reply": reply})

    async def worker_put(self, request: web.Request) -> web.Response:
        _, channel = self._channel(request)
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > self.config.max_upload_bytes:
                return _error(413, f"file is over the agent's {self.config.max_upload_bytes}-byte cap")
            chunks.append(chunk)
        blob = b"".join(chunks)
        try:
            arrays = npz_arrays(blob)
        except (ValueError, OSError) as exc:
            return _error(400, f"not an .npz of plain arrays: {first_line(exc)}")
        try:
            await asyncio.to_thread(channel.put_arrays, _plain_name(request), arrays)
        except BadInputError as exc:
            return _error(400, str(exc))
        return web.json_response({"stored": True}, status=201)

    async def worker_take(self, request: web.Request) -> web.Response:
        _, channel = self._channel(request)
        try:
            arrays = await asyncio.to_thread(channel.take_arrays, _plain_name(request))
        except FileNotFoundError:
            return _error(404, "the worker wrote no such file")
        return web.Response(body=npz_bytes(arrays), content_type="application/octet-stream")

    async def worker_exit_code(self, request: web.Request) -> web.Response:
        _, channel = self._channel(request)
        return web.json_response({"exit_code": await asyncio.to_thread(channel.exit_code)})

    async def close_worker(self, request: web.Request) -> web.Response:
        session, channel = self._channel(request)
        del session.channels[request.match_info["worker"]]
        await asyncio.to_thread(channel.close)
        return web.json_response({"closed": True})

    def _job(self, request: web.Request) -> Job:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            raise _http_error(web.HTTPNotFound, "no such job (unknown, or its result expired)")
        return job

    async def job_status(self, request: web.Request) -> web.Response:
        """The job's status; with `?wait=S` (at most 30) answered when the job ends or S seconds pass.

        Waiting instead of polling keeps the agent (and a client on the same machine) quiet while a
        measurement runs: one request every S seconds rather than several a second.
        """
        job = self._job(request)
        try:
            wait = min(float(request.query.get("wait", 0)), _MAX_STATUS_WAIT_S)
        except ValueError:
            return _error(400, "'wait' must be a number of seconds")
        if wait > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(job.ended.wait(), timeout=wait)
        return web.json_response(job.status())

    async def job_result(self, request: web.Request) -> web.Response:
        job = self._job(request)
        if job.state != "done":
            return _error(409, f"job {job.id} is {job.state}" + (f": {job.error}" if job.error else ""))
        return web.json_response(job.report)

    async def cancel(self, request: web.Request) -> web.Response:
        """Cancel a queued or running job; a running session is ended (its client is done with the device)."""
        job = self._job(request)
        if job.session is not None and job.state == "running":
            job.ended_at = time.time()
            self._finish(job, "done", None)
        elif job.state in ("queued", "running"):
            if job.process is not None:
                _kill(job.process)
            job.state, job.error, job.ended_at = "cancelled", "cancelled by a client", time.time()
            job.ended.set()
        return web.json_response(job.status())


async def _json_body(request: web.Request) -> Any:
    """The request's JSON body; a body that is not JSON is answered with 400."""
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _http_error(web.HTTPBadRequest, "request body is not valid JSON") from None


def _plain_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if Path(name).name != name or not name.endswith(".npz"):
        raise _http_error(web.HTTPBadRequest, "exchange files are plain .npz file names")
    return name


def _check_request(body: Any) -> str | None:
    """Why a job request is malformed, or None."""
    if not isinstance(body, dict):
        return "a job request is a JSON object"
    if not isinstance(body.get("artifact"), str) or not is_sha256(body["artifact"]):
        return "'artifact' must be the sha256 of an uploaded artifact"
    for key in ("baseline", "data", "labels"):
        if body.get(key) is not None and not (isinstance(body[key], str) and is_sha256(body[key])):
            return f"'{key}' must be the sha256 of an upload"
    for key in _BENCH_INTS:
        if body.get(key) is not None and (not isinstance(body[key], int) or isinstance(body[key], bool) or body[key] < 0):
            return f"'{key}' must be a non-negative integer"
    for key in ("input_map", "shapes"):
        value = body.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and not v.startswith("-") for v in value):
            return f"'{key}' must be a list of strings"
    return None


def _single(entry: Path, suffix: str) -> Path:
    files = [p for p in entry.iterdir() if p.is_file()]
    if len(files) != 1 or files[0].suffix.lower() != suffix:
        raise BadInputError(f"expected one {suffix} file in the upload")
    return files[0]


def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill a bench process with its harness workers (its own process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _die_with_parent() -> None:
    """In the child: be killed when the agent dies, so no orphaned measurement competes with later jobs (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def make_app(config: AgentConfig) -> web.Application:
    """The agent's aiohttp application; its runner task starts and stops with the app."""
    agent = Agent(config)
    app = web.Application(middlewares=[agent.auth], client_max_size=1 << 20)
    app.add_routes([
        web.get(f"{API_PREFIX}/health", agent.health),
        web.get(f"{API_PREFIX}/facts", agent.get_facts),
        web.head(f"{API_PREFIX}/artifacts/{{sha}}", agent.has_artifact),
        web.put(f"{API_PREFIX}/artifacts/{{sha}}", agent.put_artifact),
        web.post(f"{API_PREFIX}/jobs", agent.submit),
        web.get(f"{API_PREFIX}/jobs/{{id}}", agent.job_status),
        web.get(f"{API_PREFIX}/jobs/{{id}}/result", agent.job_result),
        web.delete(f"{API_PREFIX}/jobs/{{id}}", agent.cancel),
        web.post(f"{API_PREFIX}/sessions", agent.open_session),
        web.post(f"{API_PREFIX}/jobs/{{id}}/models", agent.session_model),
        web.post(f"{API_PREFIX}/jobs/{{id}}/workers", agent.open_worker),
        web.post(f"{API_PREFIX}/jobs/{{id}}/workers/{{worker}}/send", agent.worker_send),
        web.get(f"{API_PREFIX}/jobs/{{id}}/workers/{{worker}}/receive", agent.worker_receive),
        web.put(f"{API_PREFIX}/jobs/{{id}}/workers/{{worker}}/files/{{name}}", agent.worker_put),
        web.get(f"{API_PREFIX}/jobs/{{id}}/workers/{{worker}}/files/{{name}}", agent.worker_take),
        web.get(f"{API_PREFIX}/jobs/{{id}}/workers/{{worker}}/exit", agent.worker_exit_code),
        web.delete(f"{API_PREFIX}/jobs/{{id}}/workers/{{worker}}", agent.close_worker),
    ])

    async def runner(app: web.Application) -> Any:
        task = asyncio.create_task(agent.run_forever())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(runner)
    return app


def serve(config: AgentConfig, *, ready: Any = None) -> None:
    """Run the agent until interrupted; `ready(url)` is called once it listens."""
    if config.token is None and not is_loopback(config.host):
        raise BadInputError("--insecure-no-auth is allowed only on a loopback --host")
    context = None
    if config.tls_cert or config.tls_key:
        if not (config.tls_cert and config.tls_key):
            raise BadInputError("--tls-cert and --tls-key go together")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(config.tls_cert, config.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise BadInputError(f"cannot load the TLS certificate: {first_line(exc)}") from exc
    scheme = "https" if context else "http"
    web.run_app(make_app(config), host=config.host, port=config.port, ssl_context=context,
                print=(lambda _: ready(f"{scheme}://{config.host}:{config.port}")) if ready else None,
                access_log=None, handle_signals=True)
