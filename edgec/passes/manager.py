"""Runs a pipeline of onnx-ir passes with instruments hooked around each pass.

onnx-ir's own `PassManager` has no before/after hooks; edgec needs them for per-pass statistics
now and per-pass numerical verification and dumps later (as TVM's `PassContext(instruments=...)`),
so the loop lives here while the passes stay plain `onnx_ir.passes.PassBase` objects.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import onnx_ir as ir
from onnx_ir.passes import PassBase, PassResult

from edgec.errors import EdgecError, VerificationError

__all__ = ["PassInstrument", "PassRecord", "StatsInstrument", "run_passes", "count_nodes"]


def count_nodes(model: ir.Model) -> int:
    """Nodes in the main graph and all subgraphs."""
    return sum(1 for _ in model.graph.all_nodes())


class PassInstrument(Protocol):
    """Something that observes each pass: statistics, verification, dumps."""

    def before_pass(self, name: str, model: ir.Model) -> None: ...

    def after_pass(self, name: str, result: PassResult) -> None: ...


@dataclass
class PassRecord:
    """What one pass did: the manifest's `passes` entries."""

    name: str
    nodes_before: int
    nodes_after: int = 0
    modified: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "modified": self.modified,
            "seconds": round(self.seconds, 6),
        }


@dataclass
class StatsInstrument:
    """Records node counts and wall time per pass."""

    records: list[PassRecord] = field(default_factory=list)
    _started: float = 0.0

    def before_pass(self, name: str, model: ir.Model) -> None:
        self.records.append(PassRecord(name, count_nodes(model)))
        self._started = time.perf_counter()

    def after_pass(self, name: str, result: PassResult) -> None:
        record = self.records[-1]
        record.seconds = time.perf_counter() - self._started
        record.nodes_after = count_nodes(result.model)
        record.modified = result.modified


def run_passes(
    model: ir.Model,
    passes: Sequence[tuple[str, PassBase]],
    instruments: Sequence[PassInstrument] = (),
) -> ir.Model:
    """Run named passes in order; a pass that raises is reported by name.

    Instruments' `EdgecError`s (e.g. a verification failure) propagate unchanged.
    """
    for name, pass_ in passes:
        for instrument in instruments:
            instrument.before_pass(name, model)
        try:
            result = pass_(model)
        except EdgecError:
            raise
        except Exception as exc:
            raise VerificationError(f"pass '{name}' failed: {type(exc).__name__}: {exc}") from exc
        model = result.model
        for instrument in instruments:
            instrument.after_pass(name, result)
    return model
