"""`edgec agent` as a real process on loopback, with `edgec bench --device` and raw HTTP against it."""

from __future__ import annotations

import io
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
