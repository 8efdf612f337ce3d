"""Datasets for calibration, benchmarking and accuracy: `.npz` files keyed by input name.

Each model input is stored in one of two forms (inputs of one file may use different forms):

* stacked, key `NAME`: one array, first axis = samples. It may either keep the model's batch axis
  (rank equal to the input's rank; each sample is a slice of the model's fixed batch size,
  `x[i:i+1]` when the batch is dynamic) or omit it (rank one more than the input's rank; each `x[i]`
  is a complete input).
* ragged, keys `NAME/0`, `NAME/1`, ... `NAME/<N-1>`: one array per sample, each a complete input with
  or without the model's batch axis (a missing batch axis becomes a batch of 1). This is the form for
  samples whose dynamic dims differ, such as token sequences of different lengths: padding them to a
  common length would feed pad tokens into int8 calibration and skew the activation ranges.

Every input must have the same number of samples. `save_samples` writes either form, whichever the
shapes allow. Labels are a `.npy` of integer class ids, one per sample.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import zipfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgec.errors import BadInputError
from edgec.limits import check_npy_sizes, check_tensor_bytes, regular_file
from edgec.tensors import Feeds, TensorSpec

__all__ = ["load_samples", "parse_input_map", "save_samples", "random_samples", "load_labels", "DYNAMIC_DIM_DEFAULT"]

#: Size given to a dynamic non-batch dimension when random feeds are made (e.g. a sequence length).
DYNAMIC_DIM_DEFAULT = 8


def _read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    regular_file(path, what)
    check_npy_sizes(path, what)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:  # unknown zip method, encryption
        raise BadInputError(f"{what}: cannot read {path} as .npz ({exc})") from exc
    # a single .npy loads as a plain ndarray, which is not a context manager
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise BadInputError(f"{what}: {path} is a single .npy array; save a .npz keyed by input name")
    try:
        with loaded as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:  # unknown zip method, encryption
        raise BadInputError(f"{what}: cannot read {path} as .npz ({exc})") from exc


#: A ragged key's sample index: a decimal without leading zeros, so each index has one spelling.
_INDEX = re.compile(r"0|[1-9][0-9]*")
#: How many unknown keys an error message names before it summarizes the rest.
_KEYS_SHOWN = 6


def _check_values(array: np.ndarray, spec: TensorSpec, subject: str, what: str) -> None:
    """Refuse an empty, mistyped or non-finite array: checks that hold whichever form stores it."""
    if array.size == 0:
        raise BadInputError(f"{what}: {subject} is empty (shape {list(array.shape)})")
    if array.dtype != spec.dtype:
        raise BadInputError(
            f"{what}: {subject} has dtype {array.dtype} but the model expects {spec.dtype}"
            f" (save it with .astype(np.{spec.dtype}))"
        )
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise BadInputError(f"{what}: {subject} contains NaN or infinite values")


def _split(name: str, array: np.ndarray, spec: TensorSpec, what: str) -> list[np.ndarray]:
    """Cut one input's stacked array into per-sample feeds, checking dtype, rank, shape and finiteness."""
    if array.ndim == 0:
        raise BadInputError(f"{what}: input '{name}' is a scalar; put its samples on a leading axis")
    _check_values(array, spec, f"input '{name}'", what)
    rank = len(spec.shape)
    if array.ndim == rank:
        batch = spec.shape[0] if rank and isinstance(spec.shape[0], int) and spec.shape[0] > 0 else 1
        if array.shape[0] % batch:
            raise BadInputError(
                f"{what}: input '{name}' has {array.shape[0]} rows, not a multiple of the model's fixed batch {batch}"
            )
        samples = [array[i : i + batch] for i in range(0, array.shape[0], batch)]
    elif array.ndim == rank + 1:
        samples = list(array)
    else:
        raise BadInputError(
            f"{what}: input '{name}' has shape {list(array.shape)}; the model expects {list(spec.shape)}"
            " with the samples on a leading axis"
        )
    problem = spec.accepts(samples[0])
    if problem:
        raise BadInputError(f"{what}: input '{name}' sample has {problem}")
    return samples


def _ragged_sample(spec: TensorSpec, index: int, array: np.ndarray, what: str) -> np.ndarray:
    """Check one sample alone (its dynamic dims may differ from the others') and add a missing batch axis."""
    subject = f"input '{spec.name}' sample {index} (key '{spec.name}/{index}')"
    _check_values(array, spec, subject, what)
    if array.ndim == len(spec.shape) - 1:
        array = array[np.newaxis]
    problem = spec.accepts(array)
    if problem:
        raise BadInputError(f"{what}: {subject} has {problem}")
    return array


def _ragged(spec: TensorSpec, parts: dict[int, np.ndarray], what: str) -> list[np.ndarray]:
    """Order one input's `NAME/INDEX` arrays by index, refusing gaps so that no sample is silently lost."""
    gaps = [i for i in range(len(parts)) if i not in parts]
    if gaps:
        raise BadInputError(
            f"{what}: input '{spec.name}' has {len(parts)} per-sample keys up to '{spec.name}/{max(parts)}'"
            f" but lacks '{spec.name}/{gaps[0]}'; number the samples 0..N-1 without gaps"
        )
    return [_ragged_sample(spec, i, parts[i], what) for i in range(len(parts))]


def _owner(key: str, names: Collection[str]) -> tuple[str, int | None] | None:
    """The input a key belongs to and its sample index (None when stacked), or None for an unknown key.

    An exact input name wins, so an input whose own name ends in `/<digits>` is still read stacked.
    """
    if key in names:
        return key, None
    name, _, index = key.rpartition("/")
    if name in names and _INDEX.fullmatch(index):
        return name, int(index)
    return None


@dataclass
class _Stored:
    """How one input was saved: a stacked array, or ragged arrays by sample index (at most one in a valid file)."""

    stacked: np.ndarray | None = None
    ragged: dict[int, np.ndarray] = field(default_factory=dict)


def _group(arrays: Mapping[str, np.ndarray], expected: Sequence[str], what: str) -> dict[str, _Stored]:
    """Sort the archive's keys by the input they belong to, refusing unknown keys and inputs without any."""
    grouped = {name: _Stored() for name in expected}
    unknown = []
    for key, array in arrays.items():
        owner = _owner(key, grouped)
        if owner is None:
            unknown.append(key)
        elif owner[1] is None:
            grouped[owner[0]].stacked = array
        else:
            grouped[owner[0]].ragged[owner[1]] = array
    missing = [name for name, stored in grouped.items() if stored.stacked is None and not stored.ragged]
    if missing or unknown:
        unknown.sort()
        more = len(unknown) - _KEYS_SHOWN
        shown = f"{unknown[:_KEYS_SHOWN]}" + (f" and {more} more" if more > 0 else "")
        raise BadInputError(
            f"{what}: keys do not match the model's inputs {list(expected)}: missing {missing}, unexpected {shown}"
            " (use NAME for stacked samples or NAME/0, NAME/1, ... for one array per sample)"
        )
    return grouped


def _samples_of(spec: TensorSpec, stored: _Stored, what: str) -> list[np.ndarray]:
    """One input's per-sample feeds from whichever form it was saved in."""
    if stored.stacked is None:
        return _ragged(spec, stored.ragged, what)
    if stored.ragged:
        raise BadInputError(
            f"{what}: input '{spec.name}' is given both stacked (key '{spec.name}') and per sample"
            f" (keys '{spec.name}/INDEX'); keep one form"
        )
    return _split(spec.name, stored.stacked, spec, what)


def load_samples(path: str | Path, inputs: Sequence[TensorSpec], *, what: str = "data",
                 input_map: Mapping[str, str] | None = None) -> list[dict[str, np.ndarray]]:
    """Load a `.npz` dataset and return one feed dict per sample, validated against `inputs`.

    `input_map` ({archive key: input name}) reads inputs stored under other names, e.g. data saved
    as `x` for a model whose input the Keras export called `input_layer`.
    """
    key_of = {name: key for key, name in (input_map or {}).items()}
    unknown = sorted(set(key_of) - {spec.name for spec in inputs})
    if unknown:
        raise BadInputError(f"--input-map names {unknown}, but the model's inputs are {[spec.name for spec in inputs]}")
    keyed = [replace(spec, name=key_of.get(spec.name, spec.name)) for spec in inputs]
    grouped = _group(_read_npz(Path(path), what), [spec.name for spec in keyed], what)
    per_input = {spec.name: _samples_of(key, grouped[key.name], what) for spec, key in zip(inputs, keyed)}
    counts = {name: len(samples) for name, samples in per_input.items()}
    if len(set(counts.values())) != 1:
        raise BadInputError(f"{what}: inputs have different sample counts {counts}")
    count = next(iter(counts.values()))
    return [{spec.name: per_input[spec.name][i] for spec in inputs} for i in range(count)]


def parse_input_map(texts: Sequence[str]) -> dict[str, str]:
    """`KEY=NAME` pairs (each text may hold several, comma-separated) as {archive key: input name}."""
    mapping: dict[str, str] = {}
    for pair in (part.strip() for text in texts for part in text.split(",") if part.strip()):
        key, sep, name = pair.partition("=")
        if not sep or not key.strip() or not name.strip():
            raise BadInputError(f"--input-map '{pair}': expected KEY=NAME (an .npz key, then the model input it feeds)")
        mapping[key.strip()] = name.strip()
    return mapping


def _input_arrays(name: str, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
    """One input's archive entries: stacked when every sample has the same shape, ragged otherwise."""
    dtypes = {str(array.dtype) for array in arrays}
    if len(dtypes) > 1:
        # np.stack would silently promote them, feeding the model a dtype nobody saved
        raise ValueError(f"input '{name}' has samples of different dtypes {sorted(dtypes)}")
    if len({array.shape for array in arrays}) == 1:
        return {name: np.stack(arrays)}
    return {f"{name}/{i}": array for i, array in enumerate(arrays)}


def save_samples(path: str | Path, samples: Sequence[Mapping[str, np.ndarray]]) -> None:
    """Write feeds as a dataset `load_samples` reads back, the stacked form where shapes allow.

    Why atomic (a temp file in the same directory, then a rename): an interrupted write must never
    leave a truncated archive that a later run would take for the dataset.
    """
    if not samples:
        raise ValueError("save_samples needs at least one sample")
    names = list(samples[0])
    for index, sample in enumerate(samples):
        if set(sample) != set(names):
            raise ValueError(f"sample {index} has inputs {sorted(sample)} but sample 0 has {sorted(names)}")
    entries: dict[str, np.ndarray] = {}
    for name in names:
        entries.update(_input_arrays(name, [np.asarray(sample[name]) for sample in samples]))
    path = Path(path)
    # a file created in a temp dir (not by mkstemp) gets the usual umask permissions, not 0600
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as staging:
        staged = Path(staging) / path.name
        with staged.open("wb") as file:  # a file object, so np.savez does not append ".npz" to the name
            np.savez(file, **entries)
        os.replace(staged, path)


def _random_array(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    shape = [
        dim if isinstance(dim, int) and dim > 0 else (1 if axis == 0 else DYNAMIC_DIM_DEFAULT)
        for axis, dim in enumerate(spec.shape)
    ]
    check_tensor_bytes(math.prod(shape) * max(spec.dtype.itemsize, 1), f"a random feed for input '{spec.name}'")
    if np.issubdtype(spec.dtype, np.floating):
        return rng.standard_normal(shape).astype(spec.dtype)
    if spec.dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    return rng.integers(0, 10, shape).astype(spec.dtype)


def random_samples(inputs: Sequence[TensorSpec], count: int, *, seed: int = 0) -> list[Feeds]:
    """Seeded random feeds: standard-normal floats, integers in [0, 10), dynamic dims 1 (batch) or 8.

    Good for latency and for proving two graphs compute the same function; meaningless for accuracy.
    """
    rng = np.random.default_rng(seed)
    return [{spec.name: _random_array(spec, rng) for spec in inputs} for _ in range(count)]


def load_labels(path: str | Path, samples: int) -> np.ndarray:
    """Load integer class labels (`.npy`, 1-D), one per sample."""
    path = regular_file(path, "labels")
    check_npy_sizes(path, "labels")
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise BadInputError(f"labels: cannot read {path} as .npy ({exc})") from exc
    if isinstance(labels, np.lib.npyio.NpzFile):
        labels.close()
        raise BadInputError(f"labels: {path} is an .npz archive; save the labels with np.save as a 1-D .npy")
    if not isinstance(labels, np.ndarray) or labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise BadInputError(f"labels: {path} must be a 1-D integer array (got {getattr(labels, 'dtype', '?')})")
    if len(labels) != samples:
        raise BadInputError(f"labels: {path} has {len(labels)} labels but the data has {samples} samples")
    return labels
