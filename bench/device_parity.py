"""`edgec bench --device` on loopback vs a local `edgec bench`: does the agent add cost inside the timed region?

Why: a device report is only comparable with a local one if the agent measures the artifact exactly as a
local bench does (same harness, fresh workers, nothing of the agent's running during the timed runs). On
loopback both measure the same CPU, so their p50s must agree within noise. The pairs alternate which of
the two goes first, so drift on a shared machine hits both alike; the figure is the median of the
per-pair ratios. It also reports what the second upload of the same artifact sent (the agent caches
by sha256), and a load test: N concurrent clients, their wall time, the deepest queue the agent saw and
how many it rejected.

On a shared machine back-to-back benches differ by far more than 3%, so it also times the artifact
in ONE interleaved harness run with four workers: two started locally, two by the agent
(`AgentTransport`), rounds alternating between them. Noise then hits all alike; the device/local p50
ratio is read against how far the twins differ.

    python bench/device_parity.py                          # MobileNetV2 int8, 5 pairs x 600 runs, 1 thread
    python bench/device_parity.py --pairs 3 --runs 300 --clients 16 --json parity.json
    python bench/device_parity.py --cpu 1                  # everything (agent, workers) on core 1

`--cpu` pins the script, the agent and every worker to one core: on a shared machine, where the
scheduler puts a worker (next to which other process) otherwise moves its p50 by several percent.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import benchlib


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _edgec(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "edgec", *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def _compile(cache_dir: Path, work: Path) -> Path:
    """MobileNetV2 (its 14 MB float source kept in the artifact) compiled for this host's int8 target."""
    artifact = work / "mobilenetv2-int8"
    _edgec("compile", benchlib.mobilenetv2_onnx(cache_dir), "-t", "cpu-x86-int8", "--calib", "random",
           "-o", artifact, "-q")
    return artifact


class LoopbackAgent:
    """An `edgec agent` child process on 127.0.0.1 with a fresh token and cache."""

    def __init__(self, work: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.token_file = work / "token"
        self.token_file.write_text(self.token)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgec", "agent", "--port", str(self.port), "--token-file", str(self.token_file),
             "--workdir", str(work / "agent")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                self.health()
                return
            except OSError:
                if self.process.poll() is not None:
                    raise SystemExit("the agent exited at start") from None
                time.sleep(0.2)
        raise SystemExit("the agent did not start listening within 60 s")

    def health(self) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.url}/v1/health", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _bench(artifact: Path, out: Path, runs: int, threads: int, agent: LoopbackAgent | None) -> dict[str, Any]:
    device = ("--device", agent.url, "--token-file", agent.token_file) if agent else ()
    _edgec("bench", artifact, "--runs", runs, "--threads", threads, "--json", out, "-q", *device)
    return json.loads(out.read_text())


def parity(artifact: Path, agent: LoopbackAgent, work: Path, args: argparse.Namespace,
           say: benchlib.Progress) -> dict[str, Any]:
    pairs, uploads = [], []
    for index in range(args.pairs):
        order = ("local", "device") if index % 2 == 0 else ("device", "local")
        p50 = {}
        for where in order:
            say(f"pair {index + 1}/{args.pairs}: {where} bench")
            report = _bench(artifact, work / f"{where}-{index}.json", args.runs, args.threads,
                            agent if where == "device" else None)
            p50[where] = report["latency_ms"]["p50"]
            if where == "device":
                uploads.append(report["device"]["uploaded_bytes"])
        pairs.append({"pair": index + 1, "first": order[0], "local_p50_ms": p50["local"],
                      "device_p50_ms": p50["device"], "ratio": p50["device"] / p50["local"]})
    return {"pairs": pairs, "median_ratio": statistics.median(p["ratio"] for p in pairs), "uploaded_bytes": uploads}


class _ByLabel:
    """A harness transport that starts workers whose label begins with "device" through `remote`, the rest locally."""

    def __init__(self, remote: Any) -> None:
        from edgec.harness.transport import LocalTransport

        self.remote, self.local = remote, LocalTransport()

    def open(self, who: str) -> Any:
        return (self.remote if who.startswith("device") else self.local).open(who)


def interleaved(artifact: Path, agent: LoopbackAgent, args: argparse.Namespace, say: benchlib.Progress
                ) -> dict[str, Any]:
    """The artifact's model timed by two local and two agent-started workers in one interleaved run.

    Why twins: how far two workers started the same way differ is the noise floor the device/local
    ratio must be read against.
    """
    import numpy as np

    from edgec.device.inventory import Device
    from edgec.device.transport import AgentTransport
    from edgec.harness import ModelRef, measure

    model = artifact / "model.onnx"
    labels = ("local", "device", "local2", "device2")
    refs = [ModelRef(model, "onnxruntime", label=label) for label in labels]
    rng = np.random.default_rng(benchlib.SEED)
    samples = [{"image": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(16)]
    runs = args.runs * args.pairs // 2
    say(f"interleaved: two local and two agent-started workers, {runs} runs each")
    with AgentTransport(Device("loopback", agent.url, agent.token)) as remote:
        result = measure(refs, samples, threads=args.threads, runs=runs, transport=_ByLabel(remote))  # type: ignore[arg-type]
    p50 = {label: result[label]["latency_ms"]["p50"] for label in labels}
    local, device = (p50["local"] + p50["local2"]) / 2, (p50["device"] + p50["device2"]) / 2
    return {"runs": runs, "p50_ms": p50, "ratio": device / local,
            "twin_gap": max(abs(p50["local2"] / p50["local"] - 1), abs(p50["device2"] / p50["device"] - 1))}


def load_test(agent: LoopbackAgent, artifact: Path, clients: int, say: benchlib.Progress) -> dict[str, Any]:
    """`clients` concurrent benches of one artifact: all must come back, their timed windows never overlap."""
    from edgec.device.client import RemoteBench, bench_on_devices
    from edgec.device.inventory import Device

    say(f"load test: {clients} concurrent clients")
    before = agent.health()
    devices = [Device(f"client{i}", agent.url, agent.token) for i in range(clients)]
    with benchlib.stopwatch() as wall:
        reports = bench_on_devices(devices, RemoteBench(artifact, runs=50, warmup=5, threads=1))
    after = agent.health()
    windows = sorted((r["job"]["started_at"], r["job"]["ended_at"]) for r in reports)
    overlaps = sum(end > next_start for (_, end), (next_start, _) in zip(windows, windows[1:]))
    return {"clients": clients, "results": len(reports), "wall_s": round(wall[0], 1), "overlapping_windows": overlaps,
            "completed": after["completed"] - before["completed"], "rejected": after["rejected"] - before["rejected"],
            "max_queue_depth": after["max_queue_depth"]}


def _cpu_facts() -> str:
    from edgec.report.host import host_facts

    facts = host_facts()
    return f"{facts['cpu_model']}; int8-relevant flags: {', '.join(facts['isa']) or 'none'}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="local/device bench pairs (default 5)")
    parser.add_argument("--runs", type=int, default=600, help="timed inferences per bench (default 600)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients in the load test (0: skip)")
    parser.add_argument("--cpu", type=int, help="pin everything to this core (default: no pinning)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--cache-dir", type=Path, help="where the exported model is cached (default: user cache)")
    args = parser.parse_args(argv)
    if args.pairs < 1 or args.runs < 1 or args.clients < 0:
        parser.error("--pairs and --runs must be >= 1, --clients >= 0")
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # inherited by the agent and every worker
    say = benchlib.progress_printer()
    with tempfile.TemporaryDirectory(prefix="edgec-parity-") as tmp:
        work = Path(tmp)
        say("compiling MobileNetV2 for cpu-x86-int8")
        artifact = _compile(args.cache_dir or benchlib.default_cache_dir() / "bench", work)
        agent = LoopbackAgent(work)
        try:
            result = parity(artifact, agent, work, args, say)
            result["interleaved"] = interleaved(artifact, agent, args, say)
            if args.clients:
                result["load"] = load_test(agent, artifact, args.clients, say)
        finally:
            agent.stop()
    result["cpu"] = _cpu_facts()
    pinned = f", pinned to core {args.cpu}" if args.cpu is not None else ""
    print(f"CPU: {result['cpu']}; {args.runs} runs per bench, {args.threads} thread(s){pinned}\n")
    print(benchlib.markdown_table(
        [("pair", lambda r: str(r["pair"])), ("first", lambda r: r["first"]),
         ("local p50 ms", lambda r: f"{r['local_p50_ms']:.3f}"), ("device p50 ms", lambda r: f"{r['device_p50_ms']:.3f}"),
         ("device/local", lambda r: f"{r['ratio']:.3f}")], result["pairs"], left=("first",)))
    print(f"\nmedian device/local p50: {result['median_ratio']:.3f}; bytes uploaded per device bench: "
          f"{result['uploaded_bytes']}")
    both = result["interleaved"]
    print(f"one interleaved run, {both['runs']} runs per worker, p50 ms: "
          + ", ".join(f"{label} {p50:.3f}" for label, p50 in both["p50_ms"].items())
          + f"; device/local {both['ratio']:.3f}, twins differ by up to {both['twin_gap']:.1%}")
    if "load" in result:
        print("load test: " + ", ".join(f"{k} {v}" for k, v in result["load"].items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
