"""A seeded mutation fuzzer for edgec's inputs: ONNX models, `.npz` data, target and policy TOML, manifests
and bench reports.

Each case mutates a valid seed file (byte flips, truncation, insertion, or a structural change made
through the protobuf / TOML / JSON objects), runs the matching `edgec` command in-process through
`edgec.cli.main`, and classifies the end: exit 0, 1 (a failed gate) or 2 with one `edgec: error:` line
are fine; anything else (a traceback, exit 3, another code, a case that outlives its time limit) is a
finding. The same seed gives the same cases.

`tests/fuzz/test_fuzz.py` runs a fixed number of cases per kind; `bench/fuzz.py` runs longer.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import random
import shutil
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.parser
from onnx import TensorProto, helper

from edgec.cli import main

__all__ = ["KINDS", "Fuzzer", "Outcome", "Tally", "run_cases"]

#: Values a structural mutation puts where a valid one was: types, signs, sizes and paths no input should hold.
_ODD_VALUES: tuple[Any, ...] = (
    None, True, -1, 0, 1.5, 7.5, -1e308, 1e308, math.nan, math.inf, -math.inf, 10**400, "", "x" * 5000,
    [], {}, [1, "a"], {"k": {"k": [None]}}, "/etc/passwd", "../../outside.toml", "cpu-x86-fp32", "\u202e\x00",
)
#: Seconds a case may run before it counts as a hang.
CASE_SECONDS = 120

_MODEL = """<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4] x) => (float[N, 3] y) <float[4, 3] w = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2},
                                     float[3] b = {0.1, -0.2, 0.3}> {
    h = MatMul(x, w)
    z = Add(h, b)
    y = Relu(z)
}"""
_REPORT = {
    "schema": "edgec.bench/1", "target": "cpu-x86-fp32", "latency_ms": {"p50": 1.0, "p90": 1.5, "runs": 10},
    "peak_rss_mb": 80.0, "size_bytes": 4096, "speedup_p50": 2.0,
    "drift": {"outputs": {"y": {"cosine_min": 0.99, "cosine_mean": 0.995}}, "top1_agreement": 0.97,
              "accuracy_drop_pp": 0.5},
}
_POLICY = {"thresholds": {"max_latency_p90_ms": 5.0, "min_cosine": 0.9, "max_size_mb": 1.0}}
_TARGET = {"inherits": "cpu-x86-fp32", "description": "fuzz", "options": {"threads": 1, "opset": 17},
           "verify": {"rtol": 0.001, "atol": 0.0001}}


@dataclass(frozen=True)
class Outcome:
    kind: str
    case: str
    code: int
    last_line: str
    problem: str | None  # None: a fine end (0, 1, or 2 with one error line)


@dataclass
class Tally:
    """Counts over a run: cases per kind, exit codes, and the findings."""

    cases: Counter[str] = field(default_factory=Counter)
    exits: Counter[int] = field(default_factory=Counter)
    findings: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.cases[outcome.kind] += 1
        self.exits[outcome.code] += 1
        if outcome.problem:
            self.findings.append(outcome)

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.cases.items()))
        exits = ", ".join(f"exit {code}: {count}" for code, count in sorted(self.exits.items()))
        return f"{sum(self.cases.values())} cases ({kinds}); {exits}; {len(self.findings)} findings"


class _Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang()


def _judge(code: int, err: str, hung: bool) -> str | None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if hung:
        return f"no end within {CASE_SECONDS} s"
    if "Traceback" in err:
        return "traceback"
    if code not in (0, 1, 2):
        return f"exit {code}"
    errors = [line for line in lines if line.startswith("edgec: error:")]
    if code == 2 and (not last.startswith("edgec: error: ") or len(errors) != 1):
        return "exit 2 without exactly one final error line"
    return None


def _bytes_mutation(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One of: flip bytes, truncate, insert random bytes, zero a run, duplicate a chunk."""
    if not data:
        return "grow", bytes(rng.randrange(256) for _ in range(64))
    how = rng.choice(("flip", "truncate", "insert", "zero", "splice"))
    buf = bytearray(data)
    at = rng.randrange(len(buf))
    if how == "flip":
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        del buf[at:]
    elif how == "insert":
        buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    elif how == "zero":
        end = at + rng.randint(1, 64)
        buf[at:end] = bytes(len(buf[at:end]))
    else:
        end = min(len(buf), at + rng.randint(1, 256))
        buf[at:at] = buf[at:end]
    return how, bytes(buf)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _tree_mutation(tree: Any, rng: random.Random) -> tuple[str, Any]:
    """Replace, delete or add a value somewhere in a JSON/TOML tree, or nest it far too deep."""
    tree = copy.deepcopy(tree)
    path = rng.choice([p for p in _paths(tree) if p])
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    how = rng.choice(("replace", "replace", "delete", "add", "deep"))
    if how == "replace":
        parent[key] = rng.choice(_ODD_VALUES)
    elif how == "delete":
        del parent[key]
    elif how == "add" and isinstance(parent, dict):
        parent[rng.choice(("api_token", "inherits", "schema", "extra", "thresholds"))] = rng.choice(_ODD_VALUES)
    else:
        nested: Any = 1
        for _ in range(rng.choice((50, 5000))):
            nested = [nested]
        parent[key] = nested
    return f"{how} {'.'.join(map(str, path))}", tree


def _toml(tree: dict[str, Any]) -> str:
    """A small TOML writer (tomllib reads only): scalars and arrays inline, tables as [a.b] sections."""

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, float):
            return "nan" if math.isnan(item) else ("inf" if item > 0 else "-inf") if math.isinf(item) else repr(item)
        if isinstance(item, int):
            return str(item)
        if isinstance(item, list):
            return "[" + ", ".join(value(x) for x in item) + "]"
        if isinstance(item, dict):
            return "{" + ", ".join(f"{json.dumps(str(k))} = {value(v)}" for k, v in item.items()) + "}"
        return json.dumps("" if item is None else str(item))

    lines, tables = [], []
    for key, item in tree.items():
        (tables if isinstance(item, dict) else lines).append((key, item))
    out = [f"{json.dumps(str(k))} = {value(v)}" for k, v in lines]
    for key, table in tables:
        out.append(f"[{json.dumps(str(key))}]")
        out += [f"{json.dumps(str(k))} = {value(v)}" for k, v in table.items()]
    return "\n".join(out) + "\n"


class Fuzzer:
    """Seed files in `workdir` and, per kind, a generator of mutated cases run through `edgec`."""

    def __init__(self, workdir: Path, seed: int) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.model = workdir / "seed.onnx"
        onnx.save_model(onnx.parser.parse_model(_MODEL), self.model)
        self.data = workdir / "seed.npz"
        np.savez(self.data, x=np.random.default_rng(seed).standard_normal((4, 1, 4)).astype(np.float32))
        self.artifact = workdir / "seed-art"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            compiled = main(["compile", str(self.model), "-t", "cpu-x86-fp32", "-o", str(self.artifact)])
        if compiled != 0:
            raise RuntimeError("the seed model does not compile")
        self.report = workdir / "seed-report.json"
        self.report.write_text(json.dumps(_REPORT))
        self._count = 0

    def _path(self, suffix: str) -> Path:
        self._count += 1
        return self.workdir / f"case{self._count}{suffix}"

    # Each case maker writes one mutated file and returns (description, argv).

    def case_onnx(self) -> tuple[str, list[str]]:
        path = self._path(".onnx")
        if self.rng.random() < 0.4:
            how, data = _bytes_mutation(self.model.read_bytes(), self.rng)
            path.write_bytes(data)
        else:
            how, proto = self._onnx_structure(onnx.load(self.model))
            path.write_bytes(proto.SerializeToString())
        extra = self.rng.choice(([], ["--verify"], ["--fix-shape", "x:2x4"]))
        return f"onnx {how}", ["compile", str(path), "-t", "cpu-x86-fp32", "-o", str(self._path("-out")), *extra]

    def _onnx_structure(self, proto: onnx.ModelProto) -> tuple[str, onnx.ModelProto]:
        graph, rng = proto.graph, self.rng
        how = rng.choice(("dim", "opset", "no-outputs", "dup-output", "op", "dtype", "range", "dangling", "name"))
        if how == "dim":
            dim = graph.input[0].type.tensor_type.shape.dim[rng.randrange(2)]
            dim.dim_value = rng.choice((0, 10**12, 2**62))
        elif how == "opset":
            proto.opset_import[0].version = rng.choice((0, 1, 99, 10**6))
        elif how == "no-outputs":
            del graph.output[:]
        elif how == "dup-output":
            graph.output.append(graph.output[0])
        elif how == "op":
            rng.choice(graph.node).op_type = rng.choice(("NoSuchOp", "Loop", "If", "Scan", "Conv", ""))
        elif how == "dtype":
            graph.input[0].type.tensor_type.elem_type = rng.choice(
                (TensorProto.BFLOAT16, TensorProto.FLOAT8E4M3FN, TensorProto.COMPLEX64, TensorProto.STRING, 999))
        elif how == "range":
            limit = helper.make_tensor("limit", TensorProto.FLOAT, [], [rng.choice((1e6, 1e8, 3e9, math.inf))])
            graph.initializer.extend([helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]), limit,
                                      helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
            graph.node.append(helper.make_node("Range", ["zero", "limit", "one"], ["r"]))
            graph.output.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
        elif how == "dangling":
            rng.choice(graph.node).input[0] = "missing"
        else:
            rng.choice(graph.node).output[0] = graph.input[0].name
        return how, proto

    def case_npz(self) -> tuple[str, list[str]]:
        path = self._path(".npz")
        rng = self.rng
        if rng.random() < 0.4:
            how, data = _bytes_mutation(self.data.read_bytes(), rng)
            path.write_bytes(data)
        else:
            how = rng.choice(("dtype", "shape", "nan", "empty", "keys", "huge-header"))
            base = np.load(self.data)["x"]
            arrays = {
                "dtype": {"x": base.astype(rng.choice((np.int64, np.float16, np.complex64, np.bool_, "U3")))},
                "shape": {"x": np.zeros(tuple(rng.randint(0, 5) for _ in range(rng.randint(0, 4))), np.float32)},
                "nan": {"x": np.full_like(base, rng.choice((np.nan, np.inf)))},
                "empty": {},
                "keys": {"x": base, "x/0": base[0], "../y": base},
            }.get(how)
            if arrays is None:
                header = {"descr": "<f4", "fortran_order": False, "shape": (rng.choice((2**31, 10**9)), 1, 4)}
                buffer = io.BytesIO()
                np.lib.format.write_array_header_1_0(buffer, header)
                import zipfile

                with zipfile.ZipFile(path, "w") as archive:
                    archive.writestr("x.npy", buffer.getvalue())
            else:
                np.savez(path, **arrays)
        return f"npz {how}", ["compile", str(self.model), "-t", "cpu-x86-fp32", "--verify", "--passes",
                              "infer_shapes", "--calib", str(path), "-o", str(self._path("-out"))]

    def _toml_case(self, seed: dict[str, Any], suffix: str) -> tuple[str, Path]:
        path = self._path(suffix)
        if self.rng.random() < 0.3:
            how, data = _bytes_mutation(_toml(seed).encode(), self.rng)
            path.write_bytes(data)
        else:
            how, tree = _tree_mutation(seed, self.rng)
            try:
                text = _toml(tree)
            except RecursionError:  # nested too deep for this writer: the same depth, written flat
                text = "x = " + "[" * 5000 + "]" * 5000 + "\n"
            path.write_text(text, encoding="utf-8", errors="surrogateescape")
        return how, path

    def case_target(self) -> tuple[str, list[str]]:
        how, path = self._toml_case(_TARGET, ".toml")
        return f"target {how}", ["target", str(path)]

    def case_policy(self) -> tuple[str, list[str]]:
        how, path = self._toml_case(_POLICY, ".toml")
        return f"policy {how}", ["gate", str(self.report), "--policy", str(path)]

    def _json_case(self, seed: Any, path: Path) -> str:
        rng = self.rng
        text = json.dumps(seed)
        if rng.random() < 0.3:
            how, data = _bytes_mutation(text.encode(), rng)
            path.write_bytes(data)
            return how
        if rng.random() < 0.15:
            path.write_text(text.replace("{", '{"schema": "edgec.bench/1", ', 1))
            return "duplicate key"
        how, tree = _tree_mutation(seed, rng)
        try:
            path.write_text(json.dumps(tree))
        except RecursionError:
            path.write_text("[" * 100000 + "]" * 100000)
        return how

    def case_manifest(self) -> tuple[str, list[str]]:
        art = self._path("-art")
        shutil.copytree(self.artifact, art)
        seed = json.loads((art / "manifest.json").read_text())
        how = self._json_case(seed, art / "manifest.json")
        return f"manifest {how}", ["bench", str(art), "--runs", "1", "--warmup", "0", "--threads", "1"]

    def case_report(self) -> tuple[str, list[str]]:
        path = self._path(".json")
        how = self._json_case(_REPORT, path)
        return f"report {how}", ["gate", str(path), "--max-latency-p90-ms", "5", "--min-cosine", "0.9",
                                 "--max-size-mb", "1", "--min-speedup", "1"]

    def run(self, kind: str) -> Outcome:
        """Make one case of `kind` and run it."""
        case, argv = getattr(self, f"case_{kind}")()
        err, out = io.StringIO(), io.StringIO()
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(CASE_SECONDS)
        hung = False
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                code = main(argv)
        except _Hang:
            code, hung = -1, True
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        text = err.getvalue()
        lines = text.strip().splitlines()
        return Outcome(kind, case, code, lines[-1] if lines else "", _judge(code, text, hung))


#: The kinds of input, each a `Fuzzer.case_<kind>` method.
KINDS: tuple[str, ...] = ("onnx", "npz", "target", "policy", "manifest", "report")


def run_cases(workdir: Path, seed: int, per_kind: dict[str, int], *,
              on_outcome: Callable[[Outcome], None] | None = None) -> Tally:
    """Run `per_kind[kind]` cases of each kind, interleaved; the same seed gives the same cases."""
    fuzzer, tally = Fuzzer(workdir, seed), Tally()
    order = [kind for kind in KINDS for _ in range(per_kind.get(kind, 0))]
    random.Random(seed).shuffle(order)
    for kind in order:
        outcome = fuzzer.run(kind)
        tally.add(outcome)
        if on_outcome:
            on_outcome(outcome)
    return tally

