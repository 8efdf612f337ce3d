"""What flows in and out of a model: feeds, outputs and tensor specs, shared by every layer.

A leaf module (numpy only), so data loading, frontends, passes, quantization, backends and the
harness can all name these types without importing one another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Feeds", "Outputs", "TensorSpec"]

Feeds = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: `shape` holds ints for fixed dims and str/None for dynamic ones."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype

    def accepts(self, array: np.ndarray) -> str | None:
        """Return why `array` cannot be fed as this tensor, or None when it can."""
        if array.dtype != self.dtype:
            return f"dtype {array.dtype} but the model expects {self.dtype}"
        if array.ndim != len(self.shape):
            return f"rank {array.ndim} (shape {list(array.shape)}) but the model expects rank {len(self.shape)}"
        for axis, (got, want) in enumerate(zip(array.shape, self.shape)):
            if isinstance(want, int) and want > 0 and got != want:
                return f"shape {list(array.shape)} but the model expects {list(self.shape)} (axis {axis})"
        return None
