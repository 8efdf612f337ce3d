"""The calibration table: one calibrated float range per activation tensor, as versioned JSON.

Ranges, not scales, are stored so that one table serves every target: each target derives its own
scale and zero point (u8 asymmetric for ONNX Runtime, s8 symmetric for TensorRT) from the same range.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CalibrationTable", "SCHEMA"]

SCHEMA = "edgec.calibration/1"


@dataclass
class CalibrationTable:
    calibrator: str
    samples: int
    source: str  # "data" (user samples) or "random" (latency-only)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "calibrator": self.calibrator,
            "samples": self.samples,
            "source": self.source,
            "ranges": {name: [lo, hi] for name, (lo, hi) in sorted(self.ranges.items())},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationTable:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a calibration table (schema {data.get('schema')!r}, expected {SCHEMA})")
        ranges = {name: (float(lo), float(hi)) for name, (lo, hi) in data["ranges"].items()}
        return cls(data["calibrator"], int(data["samples"]), data["source"], ranges)

    def summary(self) -> dict[str, Any]:
        """What the manifest records: method, sample count and source, and how many tensors."""
        return {"calibrator": self.calibrator, "samples": self.samples, "source": self.source,
                "tensors": len(self.ranges)}
