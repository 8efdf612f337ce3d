"""`edgec agent` as a real process on loopback, with `edgec bench --device` and raw HTTP against it."""

from __future__ import annotations

import io
import os
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

pytest.importorskip("aiohttp")

TOKEN = "s3cret-token"
_START_S = 60.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tiny_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


class Agent:
    def __init__(self, tmp: Path, *extra: str, auth: bool = True, ca_file: Path | None = None) -> None:
        self.port = _free_port()
        self.url = f"{'https' if ca_file else 'http'}://127.0.0.1:{self.port}"
        self.context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        self.token_file = tmp / "token"
        self.token_file.write_text(TOKEN)
        self.workdir = tmp / "agent"
        self.extra = (*(("--token-file", str(self.token_file)) if auth else ("--insecure-no-auth",)), *extra)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "edgec", "agent", "--port", str(self.port),
                                         "--workdir", str(self.workdir), *self.extra],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_S
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/v1/health", timeout=2, context=self.context).read()
                return
            except OSError:
                assert self.process.poll() is None, "the agent exited at start"
                time.sleep(0.2)
        raise AssertionError("the agent did not start listening in time")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN
                ) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        req = urllib.request.Request(f"{self.url}/v1{path}", data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.context) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    running = Agent(tmp_path, "--max-upload-mb", "1")
    running.start()
    try:
        yield running
    finally:
        running.kill()


def _edgec(*args: object, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgec", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _tar(members: list[tarfile.TarInfo], data: bytes = b"x") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info in members:
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def _sha(blob: bytes) -> str:
    import hashlib

    return hashlib.sha256(blob).hexdigest()


def test_no_or_wrong_token_is_401_and_stores_nothing(agent: Agent) -> None:
    blob = _tar([tarfile.TarInfo("model.onnx")])
    for token in (None, "wrong"):
        assert agent.request("PUT", f"/artifacts/{_sha(blob)}", blob, token=token)[0] == 401
        assert agent.request("GET", "/facts", token=token)[0] == 401
    assert agent.request("HEAD", f"/artifacts/{_sha(blob)}")[0] == 404
    assert list((agent.workdir / "cache" / "entries").iterdir()) == []


def test_oversize_upload_is_413(agent: Agent) -> None:
    blob = b"\0" * (2 << 20)
    assert agent.request("PUT", f"/artifacts/{_sha(blob)}", blob)[0] == 413
    assert list((agent.workdir / "cache" / "staging").iterdir()) == []


@pytest.mark.parametrize("member", ["../evil", "/etc/evil", "a/../../evil", "link"])
def test_unsafe_archives_are_refused(agent: Agent, member: str) -> None:
    info = tarfile.TarInfo(member)
    if member == "link":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    blob = _tar([info])
    status, body = agent.request("PUT", f"/artifacts/{_sha(blob)}", blob)
    assert status == 400 and "refused" in body["error"]
    assert list((agent.workdir / "cache" / "entries").iterdir()) == []


def test_malformed_json_is_400_and_unknown_job_404(agent: Agent) -> None:
    assert agent.request("POST", "/jobs", b"{not json")[0] == 400
    assert agent.request("GET", "/jobs/nope")[0] == 404
    assert agent.request("GET", "/jobs/nope/result")[0] == 404


def test_bench_on_device_matches_local_schema_and_second_upload_is_free(agent: Agent, tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "tiny.onnx")
    first = _edgec("bench", model, "--device", agent.url, "--token-file", agent.token_file, "--runs", 20,
                   "--warmup", 2, "--threads", 1, "--json", tmp_path / "remote.json")
    assert first.returncode == 0, first.stderr
    assert "device 127.0.0.1" in first.stdout and "latency p50" in first.stdout
    report = json.loads((tmp_path / "remote.json").read_text())
    assert report["schema"] == "edgec.bench/2" and report["latency_ms"]["runs"] == 20
    assert report["device"]["uploaded_bytes"] > 0 and report["device"]["agent_version"]
    second = _edgec("bench", model, "--device", agent.url, "--token-file", agent.token_file, "--runs", 20,
                    "--warmup", 2, "--threads", 1, "--json", tmp_path / "again.json")
    assert second.returncode == 0, second.stderr
    assert json.loads((tmp_path / "again.json").read_text())["device"]["uploaded_bytes"] == 0


def test_client_errors_are_exit_2_with_one_line(agent: Agent, tmp_path: Path) -> None:
    model = _tiny_model(tmp_path / "tiny.onnx")
    (tmp_path / "bad").write_text("wrong")
    result = _edgec("bench", model, "--device", agent.url, "--token-file", tmp_path / "bad")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("edgec: error: device") and "401" in result.stderr
    result = _edgec("bench", model, "--device", agent.url, "--token-file", agent.token_file, "--job", "f" * 32)
    assert result.returncode == 2 and "no longer knows job" in result.stderr


def test_16_concurrent_clients_all_get_results_and_windows_never_overlap(agent: Agent, tmp_path: Path) -> None:
    from edgec.device.client import RemoteBench, bench_on_devices
    from edgec.device.inventory import Device

    model = _tiny_model(tmp_path / "tiny.onnx")
    devices = [Device(f"c{i}", agent.url, TOKEN) for i in range(16)]
    reports = bench_on_devices(devices, RemoteBench(model, runs=5, warmup=1, threads=1))
    assert len(reports) == 16 and len({r["job"]["id"] for r in reports}) == 16
    assert all(r["latency_ms"]["runs"] == 5 for r in reports)
    windows = sorted((r["job"]["started_at"], r["job"]["ended_at"]) for r in reports)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(windows, windows[1:]))
    status, health = agent.request("GET", "/health")
    assert status == 200 and health["completed"] == 16 and health["rejected"] == 0


def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    from edgec.device.archive import pack

    running = Agent(tmp_path, "--queue", "1")
    running.start()
    try:
        blob = pack({"tiny.onnx": _tiny_model(tmp_path / "tiny.onnx")})
        assert running.request("PUT", f"/artifacts/{_sha(blob)}", blob)[0] == 201
        job = json.dumps({"artifact": _sha(blob), "runs": 50000, "warmup": 0}).encode()
        codes = [running.request("POST", "/jobs", job)[0] for _ in range(3)]
        assert 429 in codes and codes[0] == 202
    finally:
        running.kill()


def test_agent_killed_mid_job_then_restarted(tmp_path: Path) -> None:
    running = Agent(tmp_path)
    running.start()
    model = _tiny_model(tmp_path / "tiny.onnx")
    client = subprocess.Popen([sys.executable, "-m", "edgec", "bench", str(model), "--device", running.url,
                               "--token-file", str(running.token_file), "--runs", "1000000", "--warmup", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + _START_S
        while time.monotonic() < deadline and running.request("GET", "/health")[1].get("jobs", 0) == 0:
            time.sleep(0.2)
        time.sleep(1.0)
        running.kill()
        _, err = client.communicate(timeout=120)
        assert client.returncode == 2 and "lost the agent during job" in err.strip().splitlines()[-1]
    finally:
        client.kill()
    (running.workdir / "cache" / "staging" / "1-1.part").write_bytes(b"half")
    running.start()
    try:
        again = _edgec("bench", model, "--device", running.url, "--token-file", running.token_file, "--runs", 5,
                       "--warmup", 1)
        assert again.returncode == 0, again.stderr
        assert not (running.workdir / "cache" / "staging" / "1-1.part").exists()
    finally:
        running.kill()


def test_client_killed_mid_job_result_still_fetchable(agent: Agent, tmp_path: Path) -> None:
    from edgec.device.archive import pack

    blob = pack({"tiny.onnx": _tiny_model(tmp_path / "tiny.onnx")})
    assert agent.request("PUT", f"/artifacts/{_sha(blob)}", blob)[0] == 201
    status, body = agent.request("POST", "/jobs", json.dumps({"artifact": _sha(blob), "runs": 5, "warmup": 1}).encode())
    assert status == 202  # the submitting client goes away here; the job stays on the device
    fetched = _edgec("bench", tmp_path / "tiny.onnx", "--device", agent.url, "--token-file", agent.token_file,
                     "--job", body["id"], "--json", tmp_path / "later.json")
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads((tmp_path / "later.json").read_text())["job"]["id"] == body["id"]


def test_devices_and_device_read_devices_toml(agent: Agent, tmp_path: Path) -> None:
    config = tmp_path / "config" / "edgec"
    config.mkdir(parents=True)
    (config / "devices.toml").write_text(f'[devices.board]\nurl = "{agent.url}"\ntoken_file = "{agent.token_file}"\n'
                                         '[devices.gone]\nurl = "http://127.0.0.1:9"\n')
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    listed = subprocess.run([sys.executable, "-m", "edgec", "devices"], capture_output=True, text=True, timeout=120, env=env)
    assert listed.returncode == 0, listed.stderr
    assert f"board  {agent.url}  reachable" in listed.stdout and "gone  http://127.0.0.1:9  unreachable" in listed.stdout
    shown = subprocess.run([sys.executable, "-m", "edgec", "device", "board"], capture_output=True, text=True, timeout=120, env=env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["agent_version"]


def test_the_agent_benches_against_the_artifacts_own_baseline_and_nothing_from_outside(agent: Agent,
                                                                                       tmp_path: Path) -> None:
    source = _tiny_model(tmp_path / "tiny.onnx")
    art = tmp_path / "art"
    assert _edgec("compile", source, "-t", "cpu-x86-fp32", "-o", art).returncode == 0
    remote = ("--device", agent.url, "--token-file", agent.token_file, "--runs", 20, "--warmup", 1, "--threads", 1)
    result = _edgec("bench", art, *remote, "--json", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r.json").read_text())["baseline"] is not None  # from the upload's source.onnx

    manifest = json.loads((art / "manifest.json").read_text())  # what an older edgec wrote: the source elsewhere
    manifest["source"]["onnx"] = None
    manifest["files"].pop("source.onnx")
    (art / "manifest.json").write_text(json.dumps(manifest))
    (art / "source.onnx").unlink()
    result = _edgec("bench", art, *remote)
    assert result.returncode == 2 and "--baseline" in result.stderr.strip().splitlines()[-1], result.stderr
    result = _edgec("bench", art, *remote, "--baseline", source, "--json", tmp_path / "named.json")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "named.json").read_text())["baseline"] is not None


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def _upload(agent: Agent, model: Path) -> str:
    from edgec.device.archive import pack

    blob = pack({model.name: model})
    assert agent.request("PUT", f"/artifacts/{_sha(blob)}", blob)[0] in (200, 201)
    return _sha(blob)


def _submit(agent: Agent, sha: str, runs: int, warmup: int = 0) -> str:
    status, body = agent.request("POST", "/jobs", json.dumps({"artifact": sha, "runs": runs, "warmup": warmup,
                                                               "threads": 1}).encode())
    assert status == 202, body
    return body["id"]


def _wait(agent: Agent, job: str, states: tuple[str, ...], timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = agent.request("GET", f"/jobs/{job}")[1]
        if status["state"] in states:
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job} never reached {states}: {status}")


def _bench_process_group(agent: Agent) -> int | None:
    """The process group of the agent's running bench child (it leads its own group), found in /proc."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and b"bench" in cmdline and any(str(agent.workdir).encode() in arg for arg in cmdline):
            return int(proc.name)
    return None


def _group_alive(group: int) -> bool:
    for proc in Path("/proc").iterdir():
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if proc.name.isdigit() and int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def test_tls_agent_is_trusted_through_the_ca_file_only(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    running = Agent(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), ca_file=cert)
    running.start()
    try:
        model = _tiny_model(tmp_path / "tiny.onnx")
        trusted = _edgec("bench", model, "--device", running.url, "--token-file", running.token_file, "--ca-file", cert,
                         "--runs", 5, "--warmup", 1, "--threads", 1, "--json", tmp_path / "tls.json")
        assert trusted.returncode == 0, trusted.stderr
        report = json.loads((tmp_path / "tls.json").read_text())
        assert report["device"]["url"].startswith("https://") and report["latency_ms"]["runs"] == 5
        untrusted = _edgec("bench", model, "--device", running.url, "--token-file", running.token_file, "--runs", 5)
        assert untrusted.returncode == 2
        assert "certificate verify failed" in untrusted.stderr.strip().splitlines()[-1]
        with pytest.raises(OSError):  # plain HTTP gets no answer from the TLS port
            urllib.request.urlopen(f"http://127.0.0.1:{running.port}/v1/health", timeout=10).read()
    finally:
        running.kill()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's processes in /proc")
def test_a_job_over_the_timeout_fails_alone_and_leaves_no_process(tmp_path: Path) -> None:
    running = Agent(tmp_path, "--job-timeout", "90")
    running.start()
    try:
        sha = _upload(running, _tiny_model(tmp_path / "tiny.onnx"))
        slow, quick = _submit(running, sha, runs=10**9), _submit(running, sha, runs=5, warmup=1)
        _wait(running, slow, ("running",))
        group = None
        while group is None and running.request("GET", f"/jobs/{slow}")[1]["state"] == "running":
            group = _bench_process_group(running)
            time.sleep(0.1)
        # Same session (so the same Linux scheduler autogroup) as the agent, like a local bench and its shell.
        assert group is not None and os.getsid(group) == os.getsid(running.process.pid)  # type: ignore[union-attr]
        failed = _wait(running, slow, ("done", "failed", "cancelled"))
        assert failed["state"] == "failed" and failed["error"] == "timed out after 90 s"
        assert group is not None and not _group_alive(group)  # the bench and its harness workers are gone
        assert _wait(running, quick, ("done", "failed"))["state"] == "done"
        assert running.request("GET", f"/jobs/{quick}/result")[1]["latency_ms"]["runs"] == 5
        health = running.request("GET", "/health")[1]
        assert (health["failed"], health["completed"]) == (1, 1)
    finally:
        running.kill()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's processes in /proc")
def test_cancel_a_running_and_a_queued_job(agent: Agent, tmp_path: Path) -> None:
    sha = _upload(agent, _tiny_model(tmp_path / "tiny.onnx"))
    running, queued = _submit(agent, sha, runs=10**9), _submit(agent, sha, runs=10**9)
    _wait(agent, running, ("running",))
    group = None
    while group is None:
        group = _bench_process_group(agent)
        time.sleep(0.1)
    status, body = agent.request("DELETE", f"/jobs/{queued}")
    assert status == 200 and body["state"] == "cancelled"
    status, body = agent.request("DELETE", f"/jobs/{running}")
    assert status == 200 and body["state"] == "cancelled"
    deadline = time.monotonic() + 30
    while _group_alive(group) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group_alive(group)
    assert agent.request("GET", f"/jobs/{running}/result")[0] == 409
    after = _submit(agent, sha, runs=5, warmup=1)  # the agent goes on serving; the cancelled queued job never ran
    assert _wait(agent, after, ("done", "failed"))["state"] == "done"
    assert agent.request("GET", f"/jobs/{queued}")[1]["started_at"] is None


def test_no_auth_is_allowed_on_loopback_only(tmp_path: Path) -> None:
    refused = _edgec("agent", "--insecure-no-auth", "--host", "0.0.0.0", "--port", _free_port(), "--workdir",
                     tmp_path / "refused", timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == ["edgec: error: --insecure-no-auth is allowed only on a loopback --host"]
    running = Agent(tmp_path, auth=False)
    running.start()
    try:
        status, facts = running.request("GET", "/facts", token=None)
        assert status == 200 and facts["agent_version"]
        model = _tiny_model(tmp_path / "tiny.onnx")
        result = _edgec("bench", model, "--device", running.url, "--runs", 5, "--warmup", 1, "--threads", 1)
        assert result.returncode == 0, result.stderr
    finally:
        running.kill()


def test_a_tflite_model_is_benchmarked_on_the_agent_like_locally(agent: Agent, tmp_path: Path) -> None:
    pytest.importorskip("ai_edge_litert", reason="the TFLite runtime needs edgec[tflite]")
    tf = pytest.importorskip("tensorflow")

    @tf.function(input_signature=[tf.TensorSpec((1, 6), tf.float32)])
    def scaled(x: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(x * 2.0 + 1.0)

    model = tmp_path / "scaled.tflite"
    model.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([scaled.get_concrete_function()], scaled).convert())
    args = ("--runs", 5, "--warmup", 1, "--threads", 1)
    remote = _edgec("bench", model, "--device", agent.url, "--token-file", agent.token_file, *args,
                    "--json", tmp_path / "remote.json")
    assert remote.returncode == 0, remote.stderr
    local = _edgec("bench", model, *args, "--json", tmp_path / "local.json")
    assert local.returncode == 0, local.stderr
    remote_report, local_report = (json.loads((tmp_path / f"{w}.json").read_text()) for w in ("remote", "local"))
    assert set(remote_report) - {"device", "job"} == set(local_report)
    assert remote_report["artifact_model"]["runtime"] == local_report["artifact_model"]["runtime"] == "tflite"
    assert remote_report["latency_ms"]["runs"] == 5 and remote_report["device"]["uploaded_bytes"] > 0


def test_the_harness_measures_on_the_agent_through_a_transport(agent: Agent, tmp_path: Path) -> None:
    """measure() here, workers on the device: same sections as a local measure, outputs from the device's runs."""
    import numpy as np

    from edgec.device.inventory import Device
    from edgec.device.transport import AgentTransport
    from edgec.harness.run import ModelRef, measure

    relu = _tiny_model(tmp_path / "tiny.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    neg = tmp_path / "neg.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "neg", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17)]), neg)
    refs = [ModelRef(relu, "onnxruntime", label="relu"), ModelRef(neg, "onnxruntime", label="neg")]
    samples = [{"x": np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32) * k} for k in (1, 2, 3)]
    with AgentTransport(Device("loop", agent.url, TOKEN)) as transport:
        session = transport.session
        assert agent.request("GET", f"/jobs/{session}")[1]["state"] == "running"
        remote = measure(refs, samples, threads=1, warmup=1, runs=12, collect_outputs=True, transport=transport)
        bench_job = _submit(agent, _upload(agent, relu), runs=5)  # waits: the session holds the device
        time.sleep(1.0)
        assert agent.request("GET", f"/jobs/{bench_job}")[1]["state"] == "queued"
    local = measure(refs, samples, threads=1, warmup=1, runs=12, collect_outputs=True)
    for label, expected in (("relu", lambda a: np.maximum(a, 0)), ("neg", np.negative)):
        assert set(remote[label]) == set(local[label]) and remote[label]["latency_ms"]["runs"] == 12
        for sample, out in zip(samples, remote[label]["outputs"]):
            np.testing.assert_array_equal(out["y"], expected(sample["x"]))
    ended = agent.request("GET", f"/jobs/{session}")[1]
    assert ended["state"] == "done"
    assert _wait(agent, bench_job, ("done", "failed"))["started_at"] >= ended["ended_at"]


def test_a_session_refuses_code_running_runtimes_and_foreign_paths(agent: Agent, tmp_path: Path) -> None:
    import numpy as np

    from edgec.device.inventory import Device
    from edgec.device.transport import AgentTransport
    from edgec.errors import BadInputError

    model = _tiny_model(tmp_path / "tiny.onnx")
    with AgentTransport(Device("loop", agent.url, TOKEN)) as transport:
        channel = transport.open("probe")
        assert channel.receive(120) == {"ok": "ready"}
        location = channel.model_location(model)
        base = {"command": "load", "threads": 1, "samples": [], "arrays": "samples.npz"}
        with pytest.raises(BadInputError, match="HTTP 403: runtime 'torch' is not one the agent runs"):
            channel.send({**base, "model": location, "runtime": "torch"})
        with pytest.raises(BadInputError, match="HTTP 403: the worker may load only a model this session uploaded"):
            channel.send({**base, "model": str(model), "runtime": "onnxruntime"})
        pickled = io.BytesIO()
        np.savez(pickled, **{"0/0": np.array([{"payload": 1}], dtype=object)})  # loading it would unpickle
        with pytest.raises(BadInputError, match="HTTP 400: not an .npz of plain arrays"):
            transport.http.call("PUT", f"{channel.base}/files/samples.npz", body=pickled.getvalue())  # type: ignore[attr-defined]
        channel.close()
