"""The comparison table's rows and renderings."""

from __future__ import annotations

from edgec.report.compare import comparison_rows, format_markdown, format_text
from edgec.report.types import BenchReport


def _report(p50: float, **extra: object) -> BenchReport:
    return BenchReport.from_dict({"schema": "edgec.bench/2", "target": "t", "threads": 1, "latency_ms": {"p50": p50, "p90": p50 * 2, "p99": p50 * 3, "runs": 100},
            "size_bytes": 2**20, "drift": {"outputs": {"y": {"cosine_min": 0.99}, "z": {"cosine_min": 0.98}}}, **extra})


def test_rows_carry_the_change_against_the_first_report() -> None:
    rows = {row[0]: row[1:] for row in comparison_rows([_report(2.0), _report(2.2, drift=None)], ["a", "b"])}
    assert rows[""] == ["a", "b"]
    assert rows["latency p50 (ms)"] == ["2.000", "2.200 (+10.0%)"]
    assert rows["size (MiB)"] == ["1.000", "1.000"] and rows["min cosine vs baseline"] == ["0.98000", "-"]
    assert rows["accuracy"] == ["-", "-"] and rows["threads"] == ["1", "1"] and rows["batch"] == ["-", "-"]


def test_renderings() -> None:
    rows = comparison_rows([_report(2.0), _report(1.0)], ["a|1", "b"])
    text = format_text(rows).splitlines()
    assert len({len(line) for line in text if line.startswith("latency")}) == 1  # aligned
    markdown = format_markdown(rows)
    assert markdown.splitlines()[0] == "|  | a\\|1 | b |" and "1.000 (-50.0%)" in markdown
