"""Target descriptors: where a compiled model will run, and how edgec should compile it for there.

A target is data, not code (see `targets/*.toml`): the runtime, the precision, the quantization
scheme, the pass list, runtime options, facts about the device, default release-gate thresholds and
verification tolerances. Keeping it data means adding a target is adding a file, and a user can
describe their own board by inheriting a built-in one and overriding a few keys.

Loading is three steps, each kept separate so errors point at the right file:

1. read one TOML file and check it *partially* (known keys, types, enum values) so a typo is
   reported against the file that contains it, not against a child that inherits it;
2. resolve `inherits` (a built-in name, or a path relative to the inheriting file that stays in its
   directory or in one of the directories of `EDGEC_TARGET_PATH`, so a descriptor cannot pull in
   any other file on the system) recursively, at most
   `MAX_INHERITANCE` deep, and deep-merge the child over its parent (tables merge key by key,
   scalars and lists replace);
3. check the merged result *completely* (required keys, int8 needs a quant scheme) and freeze it.

This is the only module in edgec that reads TOML.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import math
import os
import platform
import tomllib
import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from edgec import backends
from edgec.errors import TargetError
from edgec.limits import MAX_THREADS, max_dim

__all__ = [
    "TensorQuant",
    "QuantScheme",
    "Target",
    "builtin_targets_dir",
    "list_targets",
    "load_target",
    "override_target",
    "parse_override",
    "merge_overrides",
    "host_target",
    "host_cpu_flags",
    "device_mismatch",
    "DEFAULT_PASSES",
    "DEFAULT_QUANT_OPS",
    "MAX_INHERITANCE",
    "shown",
    "check_descriptor",
]

logger = logging.getLogger(__name__)

#: The graph clean-ups every target benefits from: what a backend's default pipeline starts from, and
#: the pipeline of a runtime without a backend yet.
DEFAULT_PASSES: tuple[str, ...] = (
    "upgrade_opset", "freeze_initializers", "infer_shapes", "fold_constants", "eliminate_identity", "fold_pad", "fold_batchnorm",
    "fold_affine", "matmul_add_to_gemm", "deduplicate", "fuse_gelu", "fuse_layernorm", "fuse_activations",
    "remove_unused",
)  # fmt: skip
#: ONNX op types a quant scheme quantizes when it names none.
DEFAULT_QUANT_OPS: tuple[str, ...] = (
    "Conv", "Gemm", "MatMul", "Add", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat",
)  # fmt: skip
#: Precisions that carry a quant scheme: "auto" compiles int8 and keeps it only where it is faster.
_QUANTIZED_PRECISIONS = ("int8", "auto")
#: How deep `inherits` chains may go (the built-ins use two levels).
MAX_INHERITANCE = 16
#: What `edgec target` shows instead of the value of a key the schema does not know.
HIDDEN = "<not shown: unknown key>"
_DEFAULT_VERIFY = {"rtol": 1e-3, "atol": 1e-4}

#: /proc/cpuinfo spells Arm features differently from the names descriptors use.
_ISA_ALIASES = {"asimd": "neon", "asimddp": "dotprod", "asimdhp": "fp16"}
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


# --------------------------------------------------------------------------------------------
# Public data model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorQuant:
    """How one kind of tensor (weights or activations) is quantized.

    Attributes:
        dtype: "int8" or "uint8". Runtimes differ on what they fuse fast: ONNX Runtime on x86 wants
            uint8 activations, TensorRT and TFLite want int8.
        symmetric: zero point fixed at 0 (int8) / 128 (uint8) when true; TensorRT requires it.
        granularity: "per_tensor" (one scale) or "per_channel" (one scale per output channel).
        reduce_range: use 7 bits of the 8. x86 CPUs without VNNI multiply u8 x s8 pairs with
            `vpmaddubsw`, whose int16 pair sums saturate (255*127*2 > 32767) and corrupt results;
            7-bit weights (255*63*2 < 32767) cannot overflow.
    """

    dtype: str
    symmetric: bool
    granularity: str
    reduce_range: bool = False


@dataclass(frozen=True)
class QuantScheme:
    """The int8 recipe a target asks for; the calibrator and Q/DQ insertion both read it.

    Attributes:
        weights: how weight initializers are quantized.
        activations: how activation tensors are quantized.
        calibrator: how activation ranges are chosen ("minmax", "percentile", "entropy", "mse").
        percentile: the clipping percentile for the "percentile" calibrator, in (50, 100].
        ops: ONNX op types whose inputs get Q/DQ pairs.
        dynamic_ops: op types (MatMul, Gemm) whose activations are quantized at run time per call
            (DynamicQuantizeLinear + MatMulInteger) instead of from calibrated ranges; their weights
            follow `weights`. Transformers keep far more accuracy this way (no calibrated range has
            to cover every sentence's outliers).
        smoothquant_alpha: SmoothQuant migration strength in [0, 1]; 0 disables it. Per input
            channel, activations are divided and weights multiplied by max|x|^a / max|w|^(1-a), so
            outlier channels stop dominating the activation scale.
        smoothquant_explicit: also smooth inputs whose producer cannot absorb the division (a
            LayerNorm that also feeds a residual Add, a fused GELU) through an inserted Mul.
        bias_correction: shift each quantized Conv/Gemm/MatMul bias by the mean output error its
            weight quantization causes on the calibration data.
        keep_float: op types or node names never quantized (Softmax, LayerNorm... are never
            quantized anyway; this is for ops in `ops`, e.g. residual "Add").
        quantize_embeddings: store constant float lookup tables (Gather data: word and position
            embeddings) as int8 with one scale per row, dequantizing only the rows looked up.
            Weight-only: it shrinks the artifact, not the arithmetic.
    """

    weights: TensorQuant
    activations: TensorQuant
    calibrator: str = "minmax"
    percentile: float = 99.99
    ops: tuple[str, ...] = DEFAULT_QUANT_OPS
    dynamic_ops: tuple[str, ...] = ()
    smoothquant_alpha: float = 0.0
    smoothquant_explicit: bool = False
    bias_correction: bool = False
    keep_float: tuple[str, ...] = ()
    quantize_embeddings: bool = False


class _FrozenMap(Mapping[str, Any]):
    """A read-only dict that, unlike `types.MappingProxyType`, pickles and deep-copies.

    Targets travel to fresh subprocesses (memory measurement) and through `dataclasses.asdict`,
    so their mappings must survive both while staying immutable.
    """

    def __init__(self, data: Mapping[str, Any]):
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self._data)


@dataclass(frozen=True)
class Target:
    """A resolved, validated target descriptor (inheritance applied, defaults filled in).

    Attributes:
        name: the descriptor's `name` key, else its file stem.
        description: one human line, shown by `edgec targets`.
        runtime: "onnxruntime", "tensorrt" or "tflite".
        precision: "fp32", "fp16", "int8" or "auto".
        quant: the int8 recipe; set exactly when precision is "int8" or "auto" (int8 if it pays).
        passes: graph pass names, in the order the pipeline should consider them.
        options: runtime options (provider, threads, graph_optimization, opset, free-form extras).
        device: facts about the device (arch, isa, memory_mb, gpu, free-form extras).
        thresholds: default release-gate thresholds, overridable by a gate policy.
        verify: rtol/atol for numerical verification against the source model.
        source: "builtin:NAME" or the absolute path of the descriptor file.
    """

    name: str
    description: str
    runtime: str
    precision: str
    quant: QuantScheme | None
    passes: tuple[str, ...]
    options: Mapping[str, Any]
    device: Mapping[str, Any]
    thresholds: Mapping[str, float]
    verify: Mapping[str, float]
    source: str

    def to_dict(self) -> dict[str, Any]:
        """Return the resolved descriptor as plain JSON types, for manifests and reports.

        Written into every artifact so a build can be reproduced from its manifest alone, even
        after the descriptor file changed.
        """
        return _plain(self)

    def runnable_here(self) -> tuple[bool, str]:
        """Say whether this host can run artifacts for this target, and if not, why.

        Tests and `edgec targets` use this to skip or label targets instead of failing late. It
        probes packages with `find_spec`; the backend imports its runtime only to list what it
        offers (e.g. ONNX Runtime's providers).

        Returns:
            (ok, reason): reason is "ok" or a short phrase such as "needs tensorrt (not installed)".
        """
        backend = backends.find(self.runtime)
        if backend is None:
            package = backends.PLANNED[self.runtime]
            if importlib.util.find_spec(package) is None:
                return False, f"needs {package} (not installed)"
            return False, f"edgec has no {self.runtime} backend yet"
        missing = backend.run_missing(self)
        if missing:
            return False, missing
        mismatch = device_mismatch(self.device)
        if mismatch:
            return False, mismatch
        return True, "ok"


# --------------------------------------------------------------------------------------------
# Finding and loading descriptors
# --------------------------------------------------------------------------------------------


def builtin_targets_dir() -> Path:
    """Return the folder holding the shipped descriptors.

    A wheel carries them as `edgec/_targets` (see pyproject's force-include); an editable or
    source checkout reads `<repo>/targets` directly so edits show up without reinstalling.
    """
    packaged = importlib.resources.files("edgec") / "_targets"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "targets"


def list_targets() -> list[Target]:
    """Return every built-in target, resolved and validated, sorted by name."""
    return sorted((load_target(name) for name in _builtin_names()), key=lambda t: t.name)


def load_target(name_or_path: str | os.PathLike[str]) -> Target:
    """Load a target by built-in name (e.g. "cpu-x86-int8") or from a user's `.toml` file.

    The argument is a path when it ends in `.toml`, contains a path separator, or names an
    existing file; otherwise it is a built-in name.

    Raises:
        TargetError: unknown name, unreadable or malformed descriptor, bad inheritance.
    """
    path = _locate(name_or_path, base=Path.cwd(), referrer=None)
    merged = _resolve(path, chain=())
    return _build(merged, _label(path), path.stem)


def override_target(target: Target, overrides: Mapping[str, Any]) -> Target:
    """`target` with `overrides` (a partial descriptor, e.g. from `--set quant.calibrator=mse`) deep-merged over it.

    The result is validated like a file, and its `source` says it was overridden, so a manifest
    records what was really built.
    """
    if not overrides:
        return target
    _check(overrides, _SCHEMA, "override", prefix="", complete=False)
    base = {key: value for key, value in target.to_dict().items() if key != "source" and value is not None}
    return _build(_deep_merge(base, overrides), f"{target.source} (overridden)", target.name)


def _builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_targets_dir().glob("*.toml"))


def _label(path: Path) -> str:
    """How a descriptor file is named in messages and in `Target.source`."""
    builtin = builtin_targets_dir().resolve()
    return f"builtin:{path.stem}" if path.parent == builtin else str(path)


def _locate(ref: str | os.PathLike[str], base: Path, referrer: str | None) -> Path:
    """Turn a name or path into an absolute descriptor path; `base` anchors relative paths.

    A path the user names may be anywhere; one an `inherits` key names must stay under `base`,
    the inheriting file's own directory.
    """
    text = os.fspath(ref)
    candidate = base / text
    is_path = text.endswith(".toml") or os.sep in text or "/" in text or candidate.is_file()
    where = f"{referrer}: " if referrer else ""
    if is_path:
        if referrer and not any(candidate.resolve().is_relative_to(root) for root in _inheritable_roots(base)):
            raise TargetError(f"{where}inherits '{text}', outside the descriptor's directory {base}; inherit a"
                              " built-in target, a .toml file beside the descriptor, or add its directory to"
                              " EDGEC_TARGET_PATH")
        if not candidate.is_file():
            raise TargetError(f"{where}target file '{candidate}' does not exist (or is not a regular file); check the path")
        return candidate.resolve()
    builtin = builtin_targets_dir() / f"{text}.toml"
    if not builtin.is_file():
        known = ", ".join(_builtin_names())
        what = "inherits unknown target" if referrer else "unknown target"
        raise TargetError(f"{where}{what} '{text}'; use one of: {known}, or a path to a .toml file")
    return builtin.resolve()


def _inheritable_roots(base: Path) -> list[Path]:
    """Directories whose descriptors `inherits` may name: the inheriting file's own and `EDGEC_TARGET_PATH`'s."""
    extra = [Path(entry).resolve() for entry in os.environ.get("EDGEC_TARGET_PATH", "").split(os.pathsep) if entry]
    return [base.resolve(), *extra]


def _read(path: Path) -> dict[str, Any]:
    """Read one TOML file, turning I/O and syntax errors into TargetErrors that name the file."""
    label = _label(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:  # its message ends with "(at line L, column C)"
        raise TargetError(f"{label}: TOML syntax error: {exc}; fix the file") from exc
    except RecursionError as exc:
        raise TargetError(f"{label}: tables or arrays nested too deeply to read; fix the file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise TargetError(f"{label}: cannot read target file ({exc}); check the path and permissions") from exc


def _resolve(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """Return the descriptor at `path` deep-merged over its resolved ancestors.

    `name` and `inherits` belong to the file that states them and are never inherited.
    """
    if path in chain:
        cycle = " -> ".join(_label(p) for p in (*chain, path))
        raise TargetError(f"inheritance cycle: {cycle}; remove one of these `inherits` keys")
    if len(chain) >= MAX_INHERITANCE:
        raise TargetError(f"{_label(chain[0])}: inherits more than {MAX_INHERITANCE} descriptors deep; flatten the chain")
    raw = _read(path)
    _check(raw, _SCHEMA, _label(path), prefix="", complete=False)
    parent_ref = raw.pop("inherits", None)
    if parent_ref is None:
        return raw
    parent_path = _locate(parent_ref, base=path.parent, referrer=_label(path))
    parent = _resolve(parent_path, (*chain, path))
    parent.pop("name", None)
    return _deep_merge(parent, raw)


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------------------------
# Validation: one schema table, one walker
# --------------------------------------------------------------------------------------------


class _Field(NamedTuple):
    """A leaf key: `ok` decides validity, `expect` completes "must be ..." in the error message."""

    expect: str
    ok: Callable[[Any], bool]


class _Table(NamedTuple):
    """A TOML table: its known keys, the ones required after merging, and whether extras are allowed."""

    fields: Mapping[str, _Field | _Table]
    required: tuple[str, ...] = ()
    open: bool = False


def _is_number(v: Any) -> bool:
    try:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    except OverflowError:  # an integer beyond any float
        return False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _enum(*choices: str) -> _Field:
    return _Field(f"one of {', '.join(choices)}", lambda v: isinstance(v, str) and v in choices)


_STR = _Field("a string", lambda v: isinstance(v, str))
_BOOL = _Field("true or false", lambda v: isinstance(v, bool))
_STR_LIST = _Field("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
_NUMBER = _Field("a number", _is_number)
_NON_NEGATIVE = _Field("a number >= 0", lambda v: _is_number(v) and v >= 0)
_THREADS = _Field(f"an integer in [0, {MAX_THREADS}] (0 = runtime default)", lambda v: _is_int(v) and 0 <= v <= MAX_THREADS)
_POSITIVE_INT = _Field("an integer >= 1", lambda v: _is_int(v) and v >= 1)
_UNIT_INTERVAL = _Field("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1)
_PERCENTILE = _Field("a number in (50, 100]", lambda v: _is_number(v) and 50 < v <= 100)

_TENSOR_QUANT = _Table(
    {
        "dtype": _enum("int8", "uint8"),
        "symmetric": _BOOL,
        "granularity": _enum("per_tensor", "per_channel"),
        "reduce_range": _BOOL,
    },
    required=("dtype", "symmetric", "granularity"),
)

_THRESHOLD_KEYS = (
    "max_accuracy_drop_pp", "min_top1_agreement", "min_cosine",
    "max_latency_p90_ms", "min_speedup", "max_size_mb", "max_peak_rss_mb",
)  # fmt: skip

_SCHEMA = _Table(
    {
        "name": _STR,
        "description": _STR,
        "inherits": _STR,
        "runtime": _enum(*backends.runtime_names()),
        "precision": _enum("fp32", "fp16", "int8", "auto"),
        "passes": _STR_LIST,
        "add_passes": _STR_LIST,
        "remove_passes": _STR_LIST,
        "quant": _Table(
            {
                "weights": _TENSOR_QUANT,
                "activations": _TENSOR_QUANT,
                "calibrator": _enum("minmax", "percentile", "entropy", "mse"),
                "percentile": _PERCENTILE,
                "ops": _STR_LIST,
                "dynamic_ops": _STR_LIST,
                "smoothquant_alpha": _UNIT_INTERVAL,
                "smoothquant_explicit": _BOOL,
                "bias_correction": _BOOL,
                "keep_float": _STR_LIST,
                "quantize_embeddings": _BOOL,
            },
            required=("weights", "activations"),
        ),
        "options": _Table(
            {
                "threads": _THREADS,
                "opset": _POSITIVE_INT,
                "fix_dims": _Field("a table of dim names to integers >= 1, e.g. {batch = 1}",
                                   lambda v: isinstance(v, dict) and all(_is_int(d) and 1 <= d <= max_dim() for d in v.values())),
            },
            open=True,
        ),
        "device": _Table(
            {"arch": _STR, "isa": _STR_LIST, "memory_mb": _POSITIVE_INT, "gpu": _STR},
            open=True,
        ),
        "thresholds": _Table({key: _NUMBER for key in _THRESHOLD_KEYS}),
        "verify": _Table({"rtol": _NON_NEGATIVE, "atol": _NON_NEGATIVE}),
    },
    required=("runtime", "precision"),
)


@functools.cache
def _schema_for(runtime: Any) -> _Table:
    """The descriptor schema with the `[options]` the runtime's backend reads (validated once merged,
    when the runtime is known); an unknown runtime gets the common schema, which rejects it."""
    backend = backends.find(runtime) if isinstance(runtime, str) and runtime in backends.FAMILIES else None
    if backend is None:
        return _SCHEMA
    options = _SCHEMA.fields["options"]
    fields = {**options.fields, **{key: _Field(*field) for key, field in backend.options.items()}}
    return _SCHEMA._replace(fields={**_SCHEMA.fields, "options": options._replace(fields=fields)})


def _passes(merged: Mapping[str, Any]) -> tuple[str, ...]:
    """The pass pipeline: `passes` replaces the backend's default phases; `remove_passes` drops names
    from it and `add_passes` inserts names before the final clean-up (`remove_unused`)."""
    backend = backends.find(merged["runtime"])
    if "passes" in merged:
        passes = list(merged["passes"])
    else:
        passes = list(backend.default_passes(merged["precision"]) if backend else DEFAULT_PASSES)
    removed = set(merged.get("remove_passes", ()))
    passes = [name for name in passes if name not in removed]
    added = [name for name in merged.get("add_passes", ()) if name not in passes]
    tail = passes[-1:] if passes[-1:] == ["remove_unused"] else []
    return (*passes[: len(passes) - len(tail)], *added, *tail)


def _check(data: Mapping[str, Any], table: _Table, label: str, prefix: str, complete: bool) -> None:
    """Raise TargetError for the first unknown key, bad value or (if `complete`) missing key.

    Partial checks run on each file as read; complete checks run once on the merged result,
    where a key may legitimately have come from a parent.
    """
    for key, value in data.items():
        where = f"{prefix}{key}"
        spec = table.fields.get(key)
        if spec is None:
            if not table.open:
                allowed = ", ".join(sorted(table.fields))
                raise TargetError(f"{label}: unknown key '{where}'; allowed here: {allowed}")
        elif isinstance(spec, _Table):
            if not isinstance(value, dict):
                raise TargetError(f"{label}: '{where}' must be a table ([{where}]), got {value!r}")
            _check(value, spec, label, f"{where}.", complete)
        elif not spec.ok(value):
            raise TargetError(f"{label}: '{where}' must be {spec.expect}, got {value!r}")
    if complete:
        for key in table.required:
            if key not in data:
                raise TargetError(
                    f"{label}: missing required key '{prefix}{key}'; add it or inherit a target that sets it"
                )


def shown(target: Target) -> dict[str, Any]:
    """`target.to_dict()` for printing: the value of a key the schema does not know (free-form extras of
    `[options]` and `[device]`) is hidden, so a descriptor cannot make edgec echo a secret it holds."""

    def hide(data: Mapping[str, Any], table: _Table) -> dict[str, Any]:
        result = {}
        for key, value in data.items():
            spec = table.fields.get(key)
            if spec is None:
                result[key] = HIDDEN
            elif isinstance(spec, _Table) and isinstance(value, Mapping):
                result[key] = hide(value, spec)
            else:
                result[key] = value
        return result

    plain = {k: v for k, v in target.to_dict().items() if k != "source"}
    return {**hide(plain, _schema_for(target.runtime)), "source": target.source}


def check_descriptor(data: Any, label: str) -> None:
    """Check a resolved descriptor read back from JSON (a manifest's copy) the way a descriptor file is checked."""

    def present(value: Any) -> Any:
        return {k: present(v) for k, v in value.items() if v is not None} if isinstance(value, Mapping) else value

    if not isinstance(data, Mapping):
        raise TargetError(f"{label}: the target descriptor must be a table")
    _check({k: v for k, v in present(data).items() if k != "source"}, _schema_for(data.get("runtime")), label,
           prefix="", complete=True)


def merge_overrides(overrides: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several partial descriptors deep-merged in order (a later key wins), checked like a descriptor file."""
    merged: dict[str, Any] = {}
    for override in overrides:
        merged = _deep_merge(merged, override)
    _check(merged, _SCHEMA, "--set", prefix="", complete=False)
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """`KEY.PATH=VALUE` (VALUE in TOML syntax; a bare word is a string) as a nested partial descriptor.

    `quant.calibrator=mse` -> {"quant": {"calibrator": "mse"}}; `quant.dynamic_ops=["MatMul"]` gives a list.
    """
    key, sep, raw = text.partition("=")
    parts = [part.strip() for part in key.split(".")]
    if not sep or not all(parts):
        raise TargetError(f"override '{text}' must look like KEY=VALUE, e.g. quant.calibrator=mse")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    except RecursionError as exc:
        raise TargetError(f"override '{key}': its value is nested too deeply") from exc
    for part in reversed(parts):
        value = {part: value}
    return value


def _build(merged: dict[str, Any], label: str, default_name: str) -> Target:
    """Check the merged descriptor completely, fill defaults and freeze it into a `Target`."""
    quant_table = merged.get("quant")
    if merged.get("precision") in _QUANTIZED_PRECISIONS and quant_table is None:
        raise TargetError(
            f"{label}: precision '{merged['precision']}' needs a [quant] table with weights and activations; add one"
        )
    _check(merged, _SCHEMA, label, prefix="", complete=True)
    _check(merged, _schema_for(merged["runtime"]), label, prefix="", complete=True)
    quant = None
    if merged["precision"] in _QUANTIZED_PRECISIONS:
        quant = QuantScheme(
            weights=TensorQuant(**quant_table["weights"]),
            activations=TensorQuant(**quant_table["activations"]),
            calibrator=quant_table.get("calibrator", "minmax"),
            percentile=float(quant_table.get("percentile", 99.99)),
            ops=tuple(quant_table.get("ops", DEFAULT_QUANT_OPS)),
            dynamic_ops=tuple(quant_table.get("dynamic_ops", ())),
            smoothquant_alpha=float(quant_table.get("smoothquant_alpha", 0.0)),
            smoothquant_explicit=bool(quant_table.get("smoothquant_explicit", False)),
            bias_correction=bool(quant_table.get("bias_correction", False)),
            keep_float=tuple(quant_table.get("keep_float", ())),
            quantize_embeddings=bool(quant_table.get("quantize_embeddings", False)),
        )
    elif quant_table is not None:
        logger.debug("%s: [quant] ignored because precision is %s", label, merged["precision"])
    return Target(
        name=merged.get("name", default_name),
        description=merged.get("description", ""),
        runtime=merged["runtime"],
        precision=merged["precision"],
        quant=quant,
        passes=_passes(merged),
        options=_freeze(merged.get("options", {})),
        device=_freeze(merged.get("device", {})),
        thresholds=_FrozenMap({k: float(v) for k, v in merged.get("thresholds", {}).items()}),
        verify=_FrozenMap({k: float(v) for k, v in {**_DEFAULT_VERIFY, **merged.get("verify", {})}.items()}),
        source=label,
    )


def _freeze(value: Any) -> Any:
    """Make TOML values immutable: tables become read-only maps, arrays become tuples."""
    if isinstance(value, Mapping):
        return _FrozenMap({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    """Inverse of `_freeze` for JSON: dataclasses and maps become dicts, tuples become lists.

    TOML dates and times (only possible in free-form extras) become ISO 8601 strings.
    """
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def host_cpu_flags() -> frozenset[str] | None:
    """The host CPU's feature flags (Linux /proc/cpuinfo), or None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(_ISA_ALIASES.get(flag, flag) for flag in value.split())
    return None


def device_mismatch(device: Mapping[str, Any]) -> str | None:
    """Why this host is not the device a descriptor's `[device]` table describes, or None if it is."""
    want_arch = device.get("arch")
    host_arch = _normalise_arch(platform.machine())
    if want_arch and _normalise_arch(want_arch) != host_arch:
        return f"built for {want_arch}, this host is {host_arch}"
    missing = _missing_isa(device.get("isa", ()))
    if missing:
        return f"needs CPU features {', '.join(missing)} (this host lacks them)"
    return None


def _missing_isa(required: Iterable[str]) -> list[str]:
    """Required ISA entries the host lacks; an entry "a|b" is met by either. Unknown host: none missing."""
    flags = host_cpu_flags()
    if flags is None:
        return []
    return [entry for entry in required if not any(option in flags for option in entry.split("|"))]


def host_target(runtime: str, precision: str) -> Target:
    """The built-in target for this host: runnable here, and the most specific (most ISA requirements)."""
    candidates = [t for t in list_targets() if t.runtime == runtime and t.precision == precision and t.runnable_here()[0]]
    if not candidates:
        raise TargetError(f"no built-in {runtime} {precision} target runs on this host")
    return max(candidates, key=lambda t: (len(t.device.get("isa", ())), t.name))


def _normalise_arch(arch: str) -> str:
    arch = arch.lower()
    return _ARCH_ALIASES.get(arch, arch)
