"""How arrays cross a process boundary in the harness: `.npz` files loaded without pickle.

Why a module of its own: the parent (`transport`, `run`) and the worker both need it, and the worker
runs as `python -m edgec.harness.worker`; if the package imported the worker module, Python would warn
at every worker start that the module was already imported before running it as `__main__`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgec.errors import BadInputError

__all__ = ["flatten_samples", "read_arrays", "unflatten_samples", "write_arrays"]


def write_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Save named arrays as an `.npz` the other side can load without pickle; object arrays are refused."""
    for name, array in arrays.items():
        if np.asarray(array).dtype.hasobject:
            raise BadInputError(f"array {name!r} holds Python objects; the benchmark exchanges only numeric and string tensors")
    np.savez(path, **{name: np.asarray(array) for name, array in arrays.items()})


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Load an `.npz` written by `write_arrays` (never unpickling)."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def flatten_samples(samples: Sequence[Mapping[str, np.ndarray]]) -> tuple[list[list[str]], dict[str, np.ndarray]]:
    """Per-inference feed dicts as (input names per sample, one flat mapping for an `.npz`).

    Arrays are keyed "sample/input" by position, not by name, because input names may hold any character.
    """
    index = [list(sample) for sample in samples]
    arrays = {f"{i}/{j}": np.asarray(array) for i, sample in enumerate(samples) for j, array in enumerate(sample.values())}
    return index, arrays


def unflatten_samples(arrays: Mapping[str, np.ndarray], index: Sequence[Sequence[str]]) -> list[dict[str, np.ndarray]]:
    """The feed dicts `flatten_samples` took apart, in order."""
    return [{name: arrays[f"{i}/{j}"] for j, name in enumerate(names)} for i, names in enumerate(index)]
