"""`edgec agent` as a real process on loopback, with `edgec bench --device` and raw HTTP against it."""

from __future__ import annotations

import io
import os
import json
import socket
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
    def __init__(self, tmp: Path, *extra: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token_file = tmp / "token"
        self.token_file.write_text(TOKEN)
        self.workdir = tmp / "agent"
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "edgec", "agent", "--port", str(self.port),
                                         "--token-file", str(self.token_file), "--workdir", str(self.workdir),
                                         *self.extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_S
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/v1/health", timeout=2).read()
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
            with urllib.request.urlopen(req, timeout=30) as response:
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
    assert report["schema"] == "edgec.bench/1" and report["latency_ms"]["runs"] == 20
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
