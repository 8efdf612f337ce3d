"""Which model files can run code when they are loaded, and the one switch that lets them.

Trust model, per format:

- ONNX, TFLite, Keras `.keras` (loaded with Keras' `safe_mode`): data only; always loaded.
- `.pt2` (`torch.export.save`): a graph and tensors, unless the archive holds pickles:
  `torch.export.load` unpickles weights and constants flagged `use_pickle` (and custom or opaque
  objects) with `torch.load(weights_only=False)`, retries sample inputs the same way when the
  safe unpickler refuses them, and loads AOTInductor's compiled libraries. It also parses each
  symbolic-shape expression (`expr_str`, e.g. `Symbol('s77', positive=True, integer=True)`) with
  `sympy.sympify`, which evaluates it as Python. An archive that needs no unpickling, no compiled
  code, and whose expressions call only sympy's and torch's shape functions loads without trust;
  any other needs it.
- TorchScript and TensorFlow SavedModel: model code by nature (TorchScript's `__setstate__`,
  SavedModel resource initializers run on load); never loaded without trust.

Trust is given per run, `--trust-source` / `trust_source=True`, the convention of
`trust_remote_code`. An artifact built with it records so, and `bench` runs such a source in its
framework only when the artifact says it was trusted *and* the user passes the flag again.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edgec.errors import BadInputError, UntrustedSourceError, first_line

__all__ = ["CODE_FORMATS", "TRUST_HINT", "require_trust", "pt2_code_risk", "refuse_untrusted", "framework_trust"]

#: Formats whose loading runs code from the file, whatever the file holds.
CODE_FORMATS: dict[str, str] = {
    "torchscript": "TorchScript runs the model's own code (e.g. __setstate__) when it is loaded",
    "savedmodel": "a TensorFlow SavedModel runs its resource initializers when it is loaded",
}
TRUST_HINT = ("pass --trust-source (API: trust_source=True) only if you trust whoever made the file, or export it"
              " to ONNX yourself")

_CONFIG = "data/{kind}/{model}_{kind}_config.json"
#: What a `.pt2`'s shape expressions may call: sympy's constructors and relations, and the shape functions
#: torch's deserializer passes to `sympy.sympify`.
_SHAPE_FUNCTIONS = frozenset({
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "floor", "ceiling",
    "sqrt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "Piecewise", "ITE",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv", "LShift",
    "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
})
_EXPRESSION_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
                               r"|'[A-Za-z0-9_]*'|\"[A-Za-z0-9_]*\"|(?P<op>\*\*|//|==|!=|<=|>=|[-+*/%()<>=,&|~^]))")
_SAFE_CONSTANT_PREFIX = "tensor_"


def refuse_untrusted(path: str | Path, why: str) -> UntrustedSourceError:
    """The one-line refusal for a file that would run code."""
    return UntrustedSourceError(f"model: {path} is not loaded: {why}; {TRUST_HINT}")


def require_trust(path: str | Path, fmt: str, trust_source: bool) -> None:
    """Refuse a code-bearing format unless the user trusts the source."""
    if fmt in CODE_FORMATS and not trust_source:
        raise refuse_untrusted(path, CODE_FORMATS[fmt])


def _payload_risk(archive: zipfile.ZipFile, root: str, model: str, kind: str) -> str | None:
    """Why a weights or constants config of one program needs pickle; None when every entry is raw tensor data."""
    legacy = f"{root}data/{kind}/{model}.pt"
    if legacy in archive.namelist():
        return f"its {kind} are one pickled file ({legacy}, an older torch.export layout)"
    name = root + _CONFIG.format(kind=kind, model=model)
    try:
        config = json.loads(archive.read(name)).get("config", {})
        entries = list(config.items())
    except (KeyError, ValueError, AttributeError, zipfile.BadZipFile, NotImplementedError, RuntimeError):
        return f"its {kind} config {name} is missing or unreadable"
    for fqn, meta in entries:
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            return f"its {kind} entry '{fqn}' is pickled"
        if kind == "constants" and not str(meta.get("path_name", "")).startswith(_SAFE_CONSTANT_PREFIX):
            return f"its constant '{fqn}' is a pickled object"
    return None


def _unsafe_expression(text: str) -> bool:
    """Whether a shape expression could do more than build a sympy expression when `sympify` evaluates it:
    anything but names, numbers, quoted symbol names and operators, a dunder name, or a call of a name
    outside `_SHAPE_FUNCTIONS`."""
    text, position, tokens = text.strip(), 0, []
    while position < len(text):
        token = _EXPRESSION_TOKEN.match(text, position)
        if token is None:
            return True
        tokens.append(token)
        position = token.end()
    for token, following in zip(tokens, [*tokens[1:], None]):
        name = token.group("name")
        called = following is not None and following.group("op") == "("
        if name is not None and ("__" in name or (called and name not in _SHAPE_FUNCTIONS)):
            return True
    return False


def _expressions(node: Any) -> list[str]:
    """Every `expr_str` in a deserialized program JSON, however deep."""
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found += [value for key, value in item.items() if key == "expr_str" and isinstance(value, str)]
            stack += list(item.values())
        elif isinstance(item, list):
            stack += item
    return found


def pt2_code_risk(data: bytes, load_weights_only: Callable[[bytes], Any]) -> str | None:
    """Why loading this `.pt2` archive could run code (see the module docstring); None when it is safe.

    `load_weights_only` is `torch.load(..., weights_only=True)` on bytes: the sample inputs are
    always pickled, and torch retries them unsafely when the safe unpickler refuses them.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None  # not a zip: torch.export.load refuses it without unpickling anything
    try:
        return _archive_risk(archive, names, load_weights_only)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, zlib.error) as exc:  # damaged, encrypted
        raise BadInputError(f"model: cannot read the .pt2 archive: {first_line(exc)}") from exc


def _archive_risk(archive: zipfile.ZipFile, names: list[str], load_weights_only: Callable[[bytes], Any]) -> str | None:
    roots = {name.partition("/")[0] for name in names}
    if len(roots) != 1 or not all("/" in name for name in names):
        return "its members are not under one archive root, which torch reads with its legacy, pickle-based loader"
    root = f"{roots.pop()}/"
    try:
        layout = archive.read(f"{root}archive_format").decode("utf-8", "replace").strip()
    except KeyError:
        layout = ""
    if layout != "pt2":
        return "it is an older torch.export layout, whose weights torch unpickles"
    if any(name.startswith(f"{root}data/aotinductor/") for name in names):
        return "it holds AOTInductor compiled code"
    models = [name[len(f"{root}models/"):-len(".json")] for name in names
              if name.startswith(f"{root}models/") and name.endswith(".json") and name.count("/") == 2]
    for model in models:
        name = f"{root}models/{model}.json"
        try:
            program = json.loads(archive.read(name))
        except (ValueError, RecursionError):
            return f"its program {name} is unreadable"
        unsafe = next((text for text in _expressions(program) if _unsafe_expression(text)), None)
        if unsafe is not None:
            return f"its shape expression {unsafe[:60]!r} is Python that sympy would evaluate"
        for kind in ("weights", "constants"):
            risk = _payload_risk(archive, root, model, kind)
            if risk:
                return risk
        sample = f"{root}data/sample_inputs/{model}.pt"
        if sample in names:
            try:
                load_weights_only(archive.read(sample))
            except Exception:  # noqa: BLE001 - whatever the safe unpickler refuses, torch would unpickle unsafely
                return f"its sample inputs ({sample}) need the unsafe unpickler"
    return None


def framework_trust(reference: Any, source: Mapping[str, Any], *, baseline_from: str | None,
                    trust_source: bool) -> tuple[Any, str | None]:
    """The bench comparison with the source in its own framework (a `ModelRef`) as trust allows it, and the
    warning when it is skipped.

    A code-bearing source runs only when the artifact was compiled with trust (`source.trusted`) and the
    user trusts it again now; otherwise the comparison is skipped with a warning (refused when
    `--baseline-from source` asked for it). Other formats run with trust passed on as given, so a
    `.pt2` holding pickles is refused when it loads.
    """
    fmt = source.get("format", "onnx")
    trusted = source.get("trusted") is True and trust_source
    if fmt in CODE_FORMATS and not trusted:
        why = (f"{CODE_FORMATS[fmt]}; bench runs it only when the artifact was compiled with --trust-source and"
               " bench is given --trust-source too")
        if baseline_from == "source":
            raise refuse_untrusted(reference.path, why)
        return None, f"no comparison with the source in its own framework: {why}"
    return dataclasses.replace(reference, options={**reference.options, "trust_source": trusted}), None
