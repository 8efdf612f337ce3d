"""Datasets for calibration, benchmarking and accuracy: `.npz` files keyed by input name.

Format: one array per model input, first axis = samples. An array may either keep the model's
batch axis (rank equal to the input's rank; each sample is a slice of the model's fixed batch size,
`x[i:i+1]` when the batch is dynamic) or omit it (rank one more than the input's rank; each `x[i]`
is a complete input). Labels are a
`.npy` of integer class ids, one per sample.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgec.errors import BadInputError
from edgec.runtime.base import Feeds, TensorSpec

__all__ = ["load_samples", "random_samples", "load_labels", "DYNAMIC_DIM_DEFAULT"]

#: Size given to a dynamic non-batch dimension when random feeds are made (e.g. a sequence length).
DYNAMIC_DIM_DEFAULT = 8


def _read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise BadInputError(f"{what}: no such file {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BadInputError(f"{what}: cannot read {path} as .npz ({exc})") from exc
    # a single .npy loads as a plain ndarray, which is not a context manager
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise BadInputError(f"{what}: {path} is a single .npy array; save a .npz keyed by input name")
    try:
        with loaded as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BadInputError(f"{what}: cannot read {path} as .npz ({exc})") from exc


def _split(name: str, array: np.ndarray, spec: TensorSpec, what: str) -> list[np.ndarray]:
    """Cut one input's array into per-sample feeds, checking dtype, rank, shape and finiteness."""
    if array.size == 0 or array.ndim == 0:
        raise BadInputError(f"{what}: input '{name}' is empty (shape {list(array.shape)})")
    if array.dtype != spec.dtype:
        raise BadInputError(
            f"{what}: input '{name}' has dtype {array.dtype} but the model expects {spec.dtype}"
            f" (save it with .astype(np.{spec.dtype}))"
        )
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise BadInputError(f"{what}: input '{name}' contains NaN or infinite values")
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


def load_samples(path: str | Path, inputs: Sequence[TensorSpec], *, what: str = "data") -> list[dict[str, np.ndarray]]:
    """Load a `.npz` dataset and return one feed dict per sample, validated against `inputs`."""
    arrays = _read_npz(Path(path), what)
    expected = [spec.name for spec in inputs]
    missing = [n for n in expected if n not in arrays]
    extra = [n for n in arrays if n not in expected]
    if missing or extra:
        raise BadInputError(
            f"{what}: keys {sorted(arrays)} do not match the model's inputs {expected}"
            f" (missing {missing}, unexpected {extra})"
        )
    per_input = {spec.name: _split(spec.name, arrays[spec.name], spec, what) for spec in inputs}
    counts = {name: len(samples) for name, samples in per_input.items()}
    if len(set(counts.values())) != 1:
        raise BadInputError(f"{what}: inputs have different sample counts {counts}")
    count = next(iter(counts.values()))
    return [{name: per_input[name][i] for name in expected} for i in range(count)]


def _random_array(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    shape = [
        dim if isinstance(dim, int) and dim > 0 else (1 if axis == 0 else DYNAMIC_DIM_DEFAULT)
        for axis, dim in enumerate(spec.shape)
    ]
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
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"labels: no such file {path}")
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
