"""The run history: filing and finding reports, concurrent writers, kill -9 mid-write, and a bad DB."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from edgec.errors import BadInputError
from edgec.report.history import LATEST, History
from edgec.report.types import BenchReport

# A writer process: files COUNT reports of PAD bytes each into DB, printing each id as it commits.
_WRITER = """
import sys
from edgec.report.history import History
from edgec.report.types import BenchReport
db, name, count, pad = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
history = History(db, timeout=60)
for k in range(count):
    report = {"schema": "edgec.bench/1", "target": "t", "created_utc": f"2026-01-01T00:00:{k % 60:02d}+00:00",
              "host": {"cpu_model": "cpu"}, "provenance": {"model": name}, "k": k, "pad": "x" * pad}
    print(history.add(BenchReport.from_dict(report)).id, flush=True)
"""


def _report(model: str = "m", created: str = "2026-01-01T00:00:00+00:00", **extra: object) -> BenchReport:
    return BenchReport.from_dict({"schema": "edgec.bench/1", "target": "cpu-x86-fp32", "created_utc": created,
                                  "host": {"cpu_model": "Test CPU"}, "provenance": {"model": model}, **extra})


def _writer(db, name: str, count: int, pad: int = 10) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(db), name, str(count), str(pad)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _intact(db) -> list[tuple]:
    """Every row, after checking the file's integrity and that each row's JSON matches its sha256."""
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        ids = [row[0] for row in connection.execute("SELECT id FROM reports")]
    history = History(db)
    return [history.get(entry_id) for entry_id in ids]


def test_add_list_show_and_filters(tmp_path) -> None:
    history = History(tmp_path / "h.sqlite")
    first = history.add(_report("a"), tag="v1.0")
    second = history.add(_report("b", "2026-01-02T00:00:00+00:00"))
    assert (first.id, first.model, first.device, first.tag) == (1, "a", "Test CPU", "v1.0")
    assert [e.id for e in history.entries()] == [1, 2]
    assert [e.model for e in history.entries(model="b")] == ["b"]
    assert history.entries(device="Other CPU") == []
    entry, report = history.get(second.id)
    assert entry == second and report == _report("b", "2026-01-02T00:00:00+00:00")
    assert history.add(_report("a"), model="renamed").model == "renamed"
    with pytest.raises(BadInputError, match="has no report #99"):
        history.get(99)
    with pytest.raises(BadInputError, match="already on a report of a"):
        history.add(_report("a"), tag="v1.0")
    with pytest.raises(BadInputError, match="reserved"):
        history.add(_report("a"), tag=LATEST)


def test_baseline_is_the_newest_earlier_or_the_tagged_report(tmp_path) -> None:
    history = History(tmp_path / "h.sqlite")
    history.add(_report(created="2026-01-01T00:00:00+00:00", n=1), tag="v1.2")
    history.add(_report(created="2026-01-02T00:00:00+00:00", n=2), tag="v1.3")
    history.add(_report(created="2026-01-03T00:00:00+00:00", n=3))
    history.add(_report("other", created="2026-01-04T00:00:00+00:00", n=9))
    new = _report(created="2026-01-05T00:00:00+00:00", n=4)
    assert history.baseline_for(new)[1].extra["n"] == 3
    assert history.baseline_for(new, tag=LATEST)[1].extra["n"] == 2
    assert history.baseline_for(new, tag="v1.2")[1].extra["n"] == 1
    history.add(new)  # filed before it is gated: never its own baseline
    assert history.baseline_for(new)[1].extra["n"] == 3
    with pytest.raises(BadInputError, match="no report tagged 'v9'"):
        history.baseline_for(new, tag="v9")
    with pytest.raises(BadInputError, match="no earlier report of m for cpu-x86-fp32 on Test CPU"):
        history.baseline_for(_report(created="2025-01-01T00:00:00+00:00"))


def test_concurrent_writers_lose_nothing(tmp_path) -> None:
    db = tmp_path / "h.sqlite"
    writers = [_writer(db, f"model{k}", 25) for k in range(4)]
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
    rows = _intact(db)
    assert len(rows) == 100 and len({entry.id for entry, _ in rows}) == 100
    assert sorted((r.provenance.model, r.extra["k"]) for _, r in rows) == sorted((f"model{m}", k) for m in range(4) for k in range(25))
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_kill_9_mid_write_leaves_only_whole_rows(tmp_path) -> None:
    """A writer filing 2 MB reports in a loop is killed with SIGKILL; every row it committed is whole."""
    db = tmp_path / "h.sqlite"
    writer = _writer(db, "big", 10_000, pad=2_000_000)
    committed = [writer.stdout.readline() for _ in range(3)]  # it is mid-stream of writes by now
    assert all(line.strip() for line in committed)
    time.sleep(0.05)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    rows = _intact(db)
    assert len(rows) >= 3 and all(len(report.extra["pad"]) == 2_000_000 for _, report in rows)
    assert History(db).add(_report()).id > max(entry.id for entry, _ in rows)  # still writable


def test_a_locked_db_is_one_line(tmp_path) -> None:
    db = tmp_path / "h.sqlite"
    History(db).add(_report())
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(BadInputError, match="locked by another process"):
            History(db, timeout=0.2).add(_report())
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_corrupt_db_is_one_line(tmp_path) -> None:
    db = tmp_path / "h.sqlite"
    db.write_bytes(os.urandom(8192))
    for use in (lambda h: h.add(_report()), lambda h: h.entries()):
        with pytest.raises(BadInputError, match="not an SQLite database or is corrupt"):
            use(History(db))


def test_a_read_only_db_is_one_line(tmp_path) -> None:
    db = tmp_path / "h.sqlite"
    History(db).add(_report())
    readonly = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        with pytest.raises(sqlite3.OperationalError) as raised:
            readonly.execute("INSERT INTO reports (added_utc, created_utc, model, target, device, report_sha256, report)"
                             " VALUES ('', '', '', '', '', '', '')")
    finally:
        readonly.close()
    assert "read-only; pass --db" in str(History(db)._error(raised.value))
    if os.geteuid() != 0:  # root writes through file permissions
        db.chmod(0o444)
        (tmp_path / "h.sqlite-wal").unlink(missing_ok=True)
        with pytest.raises(BadInputError, match="history DB"):
            History(db).add(_report())


def test_a_foreign_sqlite_file_is_one_line(tmp_path) -> None:
    db = tmp_path / "other.sqlite"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE t (x)")
    with pytest.raises(BadInputError, match="holds no edgec history"):
        History(db).entries()
