"""Typed bench reports and artifact manifests: what `edgec bench --json` and `edgec compile` write, as dataclasses.

Readers (gate, compare, history, the HTML report) use attributes instead of string keys, so a
renamed or mistyped field is an AttributeError at the reader, not a silent `None` in a verdict.
The JSON form stays the file format: `to_dict` writes every modelled key (null when not measured;
a key the JSON it was read from lacked stays out) and gives back, unchanged, any key this edgec does
not model (`extra`), so a report or manifest survives `from_dict(...).to_dict()` whole, including
keys a newer edgec of the same schema added.

Schemas. `edgec.bench/2` adds `thresholds` (the target's default gate policy, copied from its
descriptor) to `edgec.bench/1`; every field a /2 writer sets may be absent (None) in a /1 report,
whose older writers lacked raw runs, host facts and provenance. A report of a schema newer than
`BENCH_SCHEMA` is refused: its keys may mean other things.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from edgec.artifact import MANIFEST_SCHEMA
from edgec.errors import BadInputError

__all__ = [
    "BENCH_SCHEMA",
    "READABLE_BENCH_SCHEMAS",
    "LatencyStats",
    "ModelRecord",
    "HostFacts",
    "DeviceFacts",
    "Provenance",
    "OutputDrift",
    "Drift",
    "Measurement",
    "BenchReport",
    "TargetRecord",
    "ArtifactRecord",
    "NodeCounts",
    "PassEntry",
    "ImportCheck",
    "SourceRecord",
    "Verification",
    "Calibration",
    "BudgetCheck",
    "Fallback",
    "DynamicQuant",
    "EmbeddingTables",
    "AutoPrecision",
    "Quantization",
    "Manifest",
    "read_bench_report",
]

BENCH_SCHEMA = "edgec.bench/2"
#: Bench schemas this edgec reads, oldest first.
READABLE_BENCH_SCHEMAS = ("edgec.bench/1", BENCH_SCHEMA)

_R = TypeVar("_R", bound="_Record")
#: `_Record` fields that are not JSON keys.
_BOOKKEEPING = ("extra", "absent")


def _nested(kind: type, *, mapping: bool = False, sequence: bool = False) -> Any:
    """A field holding another record (with `mapping`, a {name: record} table; with `sequence`, a list); None when absent."""
    return field(default=None, metadata={"record": kind, "mapping": mapping, "sequence": sequence})


@dataclass(frozen=True, kw_only=True)
class _Record:
    """Shared JSON conversion: known keys become fields, unknown keys are kept in `extra` and written back.

    `absent` names the modelled keys the JSON read lacked: `to_dict` leaves them out again while they
    are None, so a report read and written back is the same JSON (and the gate can still tell a key
    an older edgec never wrote from one that was measured as null).
    """

    extra: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    _WHAT: ClassVar[str] = "record"

    @classmethod
    def from_dict(cls: type[_R], data: Any, where: str | None = None) -> _R:
        """The record in `data` (a JSON object); a nested value that is not an object is a BadInputError."""
        where = where or cls._WHAT
        if not isinstance(data, Mapping):
            raise BadInputError(f"{where} is a JSON {type(data).__name__}, not an object")
        known, values = set(), {}
        for spec in dataclasses.fields(cls):
            if spec.name in _BOOKKEEPING:
                continue
            known.add(spec.name)
            value = data.get(spec.name)
            kind = spec.metadata.get("record")
            if kind is not None and value is not None:
                if spec.metadata["mapping"]:
                    if not isinstance(value, Mapping):
                        raise BadInputError(f"{where}.{spec.name} is a JSON {type(value).__name__}, not an object")
                    value = {str(k): kind.from_dict(v, f"{where}.{spec.name}.{k}") for k, v in value.items()}
                elif spec.metadata["sequence"]:
                    if not isinstance(value, list):
                        raise BadInputError(f"{where}.{spec.name} is a JSON {type(value).__name__}, not an array")
                    value = [kind.from_dict(v, f"{where}.{spec.name}[{i}]") for i, v in enumerate(value)]
                else:
                    value = kind.from_dict(value, f"{where}.{spec.name}")
            values[spec.name] = value
        return cls(**values, extra={k: v for k, v in data.items() if k not in known}, absent=frozenset(known - set(data)))

    def missing(self, name: str) -> str | None:
        """Why field `name` holds no value: "absent" (the JSON lacked the key), "null" (it was null), or None (it has one).

        Readers that fail closed say which, since the advice differs: an absent key was never written by the
        edgec that made the file, a null one was measured as nothing.
        """
        if getattr(self, name) is not None:
            return None
        return "absent" if name in self.absent else "null"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: every field (records as objects), then the unmodelled keys as read."""
        out: dict[str, Any] = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.name in _BOOKKEEPING or (value is None and spec.name in self.absent):
                continue
            if isinstance(value, _Record):
                value = value.to_dict()
            elif spec.metadata.get("mapping") and value is not None:
                value = {k: v.to_dict() for k, v in value.items()}
            elif spec.metadata.get("sequence") and value is not None:
                value = [v.to_dict() for v in value]
            out[spec.name] = value
        return {**out, **{k: v for k, v in self.extra.items() if k not in out}}


@dataclass(frozen=True, kw_only=True)
class LatencyStats(_Record):
    """Per-inference wall time in ms: numpy "linear" percentiles, mean, population std, and every timed run in order."""

    _WHAT: ClassVar[str] = "latency_ms"
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    runs: int | None = None
    samples: list[float] | None = None


@dataclass(frozen=True, kw_only=True)
class ModelRecord(_Record):
    """Which model a section measured: its file, runtime, precision and a phrase for people."""

    path: str | None = None
    runtime: str | None = None
    precision: str | None = None
    description: str | None = None


@dataclass(frozen=True, kw_only=True)
class HostFacts(_Record):
    """The machine a report was measured on: latencies compare only between equal ones."""

    machine: str | None = None
    cpus: int | None = None
    versions: dict[str, str] | None = None
    cpu_model: str | None = None
    isa: list[str] | None = None
    usable_cpus: int | None = None
    system: str | None = None

    @property
    def device(self) -> str:
        """The device's name for history and tables: the CPU model (older reports: the architecture)."""
        return str(self.cpu_model or self.machine or "unknown")


@dataclass(frozen=True, kw_only=True)
class DeviceFacts(_Record):
    """The remote device a report was benched on through its agent (`bench --device`): where, and what it is."""

    name: str | None = None
    url: str | None = None
    uploaded_bytes: int | None = None
    hostname: str | None = None
    os: str | None = None
    arch: str | None = None
    cpu_model: str | None = None
    isa: list[str] | None = None
    cores: int | None = None
    memory_bytes: int | None = None
    python: str | None = None
    runtimes: dict[str, str] | None = None
    targets: list[dict[str, Any]] | None = None
    agent_version: str | None = None


@dataclass(frozen=True, kw_only=True)
class Provenance(_Record):
    """Which bytes and which code were measured (sha256s, edgec version, `git describe`)."""

    model: str | None = None
    artifact_sha256: str | None = None
    baseline_sha256: str | None = None
    source_sha256: str | None = None
    edgec_version: str | None = None
    git_describe: str | None = None


@dataclass(frozen=True, kw_only=True)
class OutputDrift(_Record):
    """One output's distance from the float baseline across samples."""

    cosine_min: float | None = None
    cosine_mean: float | None = None
    max_abs: float | None = None
    mean_abs: float | None = None
    sqnr_db: float | None = None
    nonfinite: int | None = None
    #: Every sample's cosine in sample order, rounded; absent from reports written before it was recorded.
    cosines: list[float] | None = None


@dataclass(frozen=True, kw_only=True)
class Drift(_Record):
    """The artifact's outputs against the baseline's on the same samples, per output, plus top-1 figures."""

    _WHAT: ClassVar[str] = "drift"
    outputs: dict[str, OutputDrift] | None = _nested(OutputDrift, mapping=True)
    degenerate: dict[str, str] | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None
    baseline_accuracy: float | None = None
    accuracy_drop_pp: float | None = None

    @property
    def min_cosine(self) -> float | None:
        """The worst sample's cosine over every output; None unless every output has one."""
        values = [o.cosine_min for o in (self.outputs or {}).values()]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return min(numbers) if numbers and len(numbers) == len(values) else None


@dataclass(frozen=True, kw_only=True)
class Measurement(_Record):
    """What one model measured in a bench: latency, throughput, load time, memory and size."""

    latency_ms: LatencyStats | None = _nested(LatencyStats)
    latency_by_shape_ms: dict[str, LatencyStats] | None = _nested(LatencyStats, mapping=True)
    throughput_per_s: float | None = None
    load_ms: float | None = None
    peak_rss_mb: float | None = None
    rss_before_load_mb: float | None = None
    size_bytes: int | None = None
    model: ModelRecord | None = _nested(ModelRecord)
    speedup_p50: float | None = None


@dataclass(frozen=True, kw_only=True)
class BenchReport(_Record):
    """`edgec bench`'s report: the artifact's measurement at the top, its float baseline nested, drift, facts."""

    _WHAT: ClassVar[str] = "report"
    schema: str = BENCH_SCHEMA
    target: str | None = None
    created_utc: str | None = None
    artifact: str | None = None
    artifact_model: ModelRecord | None = _nested(ModelRecord)
    baseline_model: str | None = None
    data: str | None = None
    samples: int | None = None
    input_shapes: list[str] | None = None
    batch: int | None = None
    warmup: int | None = None
    host: HostFacts | None = _nested(HostFacts)
    provenance: Provenance | None = _nested(Provenance)
    thresholds: dict[str, float] | None = None
    warnings: list[str] | None = None
    threads: int | None = None
    latency_ms: LatencyStats | None = _nested(LatencyStats)
    latency_by_shape_ms: dict[str, LatencyStats] | None = _nested(LatencyStats, mapping=True)
    throughput_per_s: float | None = None
    load_ms: float | None = None
    peak_rss_mb: float | None = None
    rss_before_load_mb: float | None = None
    size_bytes: int | None = None
    baseline: Measurement | None = _nested(Measurement)
    speedup_p50: float | None = None
    drift: Drift | None = _nested(Drift)
    framework_baseline: Measurement | None = _nested(Measurement)
    device: DeviceFacts | None = _nested(DeviceFacts)

    @classmethod
    def from_dict(cls, data: Any, where: str | None = None) -> BenchReport:
        """A report of any schema in `READABLE_BENCH_SCHEMAS`; a newer or foreign one is a BadInputError."""
        where = where or "report"
        schema = data.get("schema") if isinstance(data, Mapping) else None
        if schema not in READABLE_BENCH_SCHEMAS:
            if isinstance(schema, str) and schema.startswith("edgec.bench/"):
                raise BadInputError(f"{where} has schema {schema!r}, newer than this edgec reads ({BENCH_SCHEMA}): upgrade edgec")
            raise BadInputError(f"{where} has schema {schema!r}, not an edgec bench report: pass the file written by"
                                " `edgec bench --json`")
        return super().from_dict(data, where)

    @property
    def model_name(self) -> str:
        """The name a report is filed and shown under: the source model's file stem, else the artifact's."""
        named = self.provenance.model if self.provenance else None
        return str(named) if named else Path(str(self.artifact or "unknown")).stem

    @property
    def device_name(self) -> str:
        """The device reports are filed and compared under: the measuring host's CPU model."""
        return self.host.device if self.host else "unknown"


def read_bench_report(path: str | os.PathLike[str]) -> BenchReport:
    """A bench report from disk (see `edgec.gating.load_report` for what is refused), typed."""
    from edgec.gating import load_report  # deferred: gating reads reports through this module's types

    return BenchReport.from_dict(load_report(path), f"report {path}")


@dataclass(frozen=True, kw_only=True)
class TargetRecord(_Record):
    """The target an artifact was built for, with its resolved descriptor (so a build is reproducible)."""

    name: str | None = None
    source: str | None = None
    descriptor: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class ArtifactRecord(_Record):
    """The deployable file of an artifact directory."""

    file: str | None = None
    runtime: str | None = None
    precision: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None


@dataclass(frozen=True, kw_only=True)
class NodeCounts(_Record):
    """Graph nodes of the source, after the optimization passes, and in the artifact."""

    source: int | None = None
    optimized: int | None = None
    artifact: int | None = None


@dataclass(frozen=True, kw_only=True)
class PassEntry(_Record):
    """What one optimization pass did to the graph, and how long it took."""

    name: str | None = None
    nodes_before: int | None = None
    nodes_after: int | None = None
    modified: bool | None = None
    seconds: float | None = None


@dataclass(frozen=True, kw_only=True)
class ImportCheck(_Record):
    """A converted source (PyTorch, TFLite, ...) against its ONNX import on the same samples."""

    max_abs: float | None = None
    cosine_min: float | None = None


@dataclass(frozen=True, kw_only=True)
class SourceRecord(_Record):
    """The model an artifact was compiled from: where it is, its hash and size, and how it was imported."""

    path: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    format: str | None = None
    import_seconds: float | None = None
    import_verification: ImportCheck | None = _nested(ImportCheck)
    onnx: str | None = None
    trusted: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Verification(_Record):
    """How much each optimization pass changed the model's outputs, on how many samples."""

    samples: int | None = None
    data: str | None = None
    rtol: float | None = None
    atol: float | None = None
    max_abs_diff: dict[str, float] | None = None


@dataclass(frozen=True, kw_only=True)
class Calibration(_Record):
    """What the int8 ranges were calibrated on: calibrator, samples, data, and the table file."""

    calibrator: str | None = None
    samples: int | None = None
    source: str | None = None
    tensors: int | None = None
    data: str | None = None
    data_sha256: str | None = None
    file: str | None = None


@dataclass(frozen=True, kw_only=True)
class BudgetCheck(_Record):
    """An int8 model's distance from the float one on evaluation (or held-out) samples, and whether it kept the budget."""

    min_cosine: float | None = None
    #: where the worst of more samples is expected (`edgec.quant.tail`; the search judges its cosine bar on it)
    expected_worst_cosine: float | None = None
    accuracy_drop_pp: float | None = None
    samples: int | None = None
    met: bool | None = None


@dataclass(frozen=True, kw_only=True)
class Fallback(_Record):
    """The accuracy-budget search: which nodes it kept float, what the result measured, and p50s of the candidates."""

    met: bool | None = None
    kept_float: list[str] | None = None
    evaluation: BudgetCheck | None = _nested(BudgetCheck)
    holdout: BudgetCheck | None = _nested(BudgetCheck)
    schemes: dict[str, int] | None = None
    latency_ms: dict[str, float] | None = None


@dataclass(frozen=True, kw_only=True)
class DynamicQuant(_Record):
    """Nodes quantized dynamically (activations' ranges measured at run time), by op type."""

    dynamic_nodes: dict[str, int] | None = None
    skipped: Any = None
    per_token: Any = None


@dataclass(frozen=True, kw_only=True)
class EmbeddingTables(_Record):
    """Lookup tables stored int8 (weight-only) and the bytes that saved."""

    tables: int | None = None
    bytes_saved: int | None = None


@dataclass(frozen=True, kw_only=True)
class AutoPrecision(_Record):
    """What precision "auto" timed and chose, and why each other option lost."""

    speedup: float | None = None
    min_speedup: float | None = None
    chosen: str | None = None
    options: dict[str, dict[str, Any]] | None = None


@dataclass(frozen=True, kw_only=True)
class Quantization(_Record):
    """The int8 build: nodes quantized statically and dynamically, lookup tables, budget search, precision choice."""

    precision: str | None = None
    quantized_nodes: dict[str, int] | None = None
    dynamic: DynamicQuant | None = _nested(DynamicQuant)
    embeddings: EmbeddingTables | None = _nested(EmbeddingTables)
    kept_float: list[str] | None = None
    fallback: Fallback | None = _nested(Fallback)
    auto: AutoPrecision | None = _nested(AutoPrecision)
    sensitivity: str | None = None


@dataclass(frozen=True, kw_only=True)
class Manifest(_Record):
    """`manifest.json` of a compile output: target, source, artifact, passes, calibration and quantization."""

    _WHAT: ClassVar[str] = "manifest"
    schema: str = MANIFEST_SCHEMA
    edgec_version: str | None = None
    created_utc: str | None = None
    target: TargetRecord | None = _nested(TargetRecord)
    source: SourceRecord | None = _nested(SourceRecord)
    artifact: ArtifactRecord | None = _nested(ArtifactRecord)
    passes: list[PassEntry] | None = _nested(PassEntry, sequence=True)
    nodes: NodeCounts | None = _nested(NodeCounts)
    calibration: Calibration | None = _nested(Calibration)
    quantization: Quantization | None = _nested(Quantization)
    verification: Verification | None = _nested(Verification)
    slim: bool | None = None
    versions: dict[str, str] | None = None
    files: dict[str, str] | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str | None = None) -> Manifest:
        """A manifest of schema `MANIFEST_SCHEMA`; another schema is a BadInputError."""
        where = where or "manifest"
        schema = data.get("schema") if isinstance(data, Mapping) else None
        if schema != MANIFEST_SCHEMA:
            raise BadInputError(f"{where} has schema {schema!r}, not {MANIFEST_SCHEMA!r}: compile the artifact again")
        return super().from_dict(data, where)

    @classmethod
    def read(cls, artifact_dir: str | os.PathLike[str]) -> Manifest:
        """The manifest of a compile output directory, checked as `edgec.artifact.read_manifest` checks it."""
        from edgec.artifact import read_manifest

        return cls.from_dict(read_manifest(artifact_dir), f"manifest of {artifact_dir}")
