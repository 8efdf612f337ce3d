"""Bench reports side by side: one column per report, one row per figure, for a terminal or Markdown.

The first report is the reference: the p50 and p90 rows of the others also say their change
against it (`new / first - 1`, in percent), which is what a reader scans such a table for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from edgec.report.types import BenchReport

__all__ = ["comparison_rows", "format_markdown", "format_text"]


def _num(value: Any, spec: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-"
    return format(value, spec)


def _scaled(value: Any, scale: float) -> Any:
    return value * scale if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _latency(key: str) -> Callable[[BenchReport], Any]:
    return lambda r: getattr(r.latency_ms, key) if r.latency_ms else None


#: (row label, reader, format) of every figure row, in display order.
_ROWS: tuple[tuple[str, Callable[[BenchReport], Any], str], ...] = (
    ("latency p50 (ms)", _latency("p50"), ".3f"),
    ("latency p90 (ms)", _latency("p90"), ".3f"),
    ("latency p99 (ms)", _latency("p99"), ".3f"),
    ("runs", _latency("runs"), "d"),
    ("throughput (/s)", lambda r: r.throughput_per_s, ".1f"),
    ("speedup vs baseline", lambda r: r.speedup_p50, ".2f"),
    ("size (MiB)", lambda r: _scaled(r.size_bytes, 1 / 2**20), ".3f"),
    ("peak RSS (MiB)", lambda r: r.peak_rss_mb, ".1f"),
    ("min cosine vs baseline", lambda r: r.drift.min_cosine if r.drift else None, ".5f"),
    ("accuracy", lambda r: r.drift.accuracy if r.drift else None, ".4f"),
)
#: Text rows saying what was measured where.
_FACTS: tuple[tuple[str, Callable[[BenchReport], Any]], ...] = (
    ("target", lambda r: r.target),
    ("device", lambda r: r.device_name if r.host else None),
    ("threads", lambda r: r.threads),
    ("batch", lambda r: r.batch),
    ("precision", lambda r: r.artifact_model.precision if r.artifact_model else None),
    ("git describe", lambda r: r.provenance.git_describe if r.provenance else None),
    ("created (UTC)", lambda r: r.created_utc),
)


def _change(value: Any, first: Any) -> str:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (value, first)) or not first:
        return ""
    return f" ({(value / first - 1) * 100:+.1f}%)"


def comparison_rows(reports: Sequence[BenchReport], names: Sequence[str]) -> list[list[str]]:
    """A header row (`names`), then one row per fact and figure; latency rows of later reports carry their change vs the first."""
    rows = [["", *names]]
    rows += [[label, *(str(read(r)) if read(r) is not None else "-" for r in reports)] for label, read in _FACTS]
    for label, read, spec in _ROWS:
        values = [read(r) for r in reports]
        cells = [_num(v, spec) for v in values]
        if label.startswith("latency"):
            cells = [cells[0], *(cell + _change(v, values[0]) for cell, v in zip(cells[1:], values[1:]))]
        rows.append([label, *cells])
    return rows


def format_text(rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns: labels left, values right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(("  ".join([f"{row[0]:<{widths[0]}}", *(f"{c:>{w}}" for c, w in zip(row[1:], widths[1:]))])).rstrip()
                     for row in rows)


def _md(cell: str) -> str:
    return cell.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def format_markdown(rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table, values right-aligned."""
    header, *body = rows
    lines = ["| " + " | ".join(_md(c) for c in header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"
