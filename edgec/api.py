"""The Python API's `gate` verb (compile and bench live in their own modules)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from edgec.gating import GateResult, evaluate, load_policy
from edgec.report.types import BenchReport, read_bench_report

__all__ = ["gate"]


def gate(
    report: BenchReport | Mapping[str, Any] | str | os.PathLike[str],
    *,
    policy: str | os.PathLike[str] | None = None,
    **thresholds: float,
) -> GateResult:
    """Check a bench report (typed, dict or JSON path) against a policy file and/or keyword thresholds.

    Keyword thresholds (e.g. `max_accuracy_drop_pp=0.5`) override the policy's. The result is truthy
    when every check passes; a metric missing from the report fails its check.
    """
    data = report if isinstance(report, (BenchReport, Mapping)) else read_bench_report(report)
    merged = {**(load_policy(policy) if policy is not None else {}), **thresholds}
    return evaluate(data, merged)
