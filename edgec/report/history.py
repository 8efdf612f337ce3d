"""Run history: bench reports kept in SQLite, so a new build can be gated against the last release.

One row per report, written in one transaction: SQLite commits a transaction entirely or not at
all, also when the writer is killed (kill -9) mid-write, so the history never holds a half-written
row. WAL mode lets readers work while one process writes; concurrent writers queue on SQLite's
lock for up to `BUSY_TIMEOUT_S` (`BEGIN IMMEDIATE` takes the write lock up front, so two writers
never both read and then collide). `synchronous=FULL` makes each commit durable before `add` returns.

A report is filed under its model (the source's file stem, else the artifact's), its target and
its device (the CPU model it was measured on); each row also keeps the sha256 of its JSON text,
which `show` and `get` check, so a damaged row is reported rather than gated against.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgec.artifact import utc_now
from edgec.errors import BadInputError
from edgec.report.types import BenchReport

__all__ = ["BUSY_TIMEOUT_S", "LATEST", "Entry", "History", "default_db_path"]

#: Seconds a writer waits for another writer's lock before the DB counts as locked.
BUSY_TIMEOUT_S = 10.0
#: `--tag` value meaning "the newest tagged report" (the last release).
LATEST = "latest"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    added_utc TEXT NOT NULL,
    created_utc TEXT NOT NULL,
    model TEXT NOT NULL,
    target TEXT NOT NULL,
    device TEXT NOT NULL,
    tag TEXT,
    report_sha256 TEXT NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_by_key ON reports (model, target, device, created_utc);
CREATE UNIQUE INDEX IF NOT EXISTS tags_once ON reports (model, target, device, tag) WHERE tag IS NOT NULL;
"""
_COLUMNS = "id, added_utc, created_utc, model, target, device, tag, report_sha256"


def default_db_path() -> Path:
    """`history.sqlite` in edgec's user data dir (platformdirs: ~/.local/share/edgec on Linux)."""
    import platformdirs

    return platformdirs.user_data_path("edgec") / "history.sqlite"


@dataclass(frozen=True)
class Entry:
    """One history row without its report text."""

    id: int
    added_utc: str
    created_utc: str
    model: str
    target: str
    device: str
    tag: str | None
    report_sha256: str


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class History:
    """The history DB at `path`; every method opens, uses and closes its own connection."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.timeout = timeout

    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """A connection in WAL mode with the schema in place; any SQLite failure becomes one BadInputError line."""
        if not write and not self.path.exists():
            raise BadInputError(f"history DB {self.path} does not exist: add a report with `edgec history add`")
        connection = None
        try:
            if write:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            if write:
                connection.executescript(_SCHEMA)
            yield connection
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        except OSError as exc:
            raise BadInputError(f"history DB {self.path}: {exc.strerror or exc}") from None
        finally:
            if connection is not None:
                connection.close()

    def _error(self, exc: sqlite3.Error) -> BadInputError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            why = f"locked by another process for more than {self.timeout:g} s; retry when it is done"
        elif "readonly" in text or "read-only" in text:
            why = "read-only; pass --db with a writable path"
        elif "not a database" in text or "malformed" in text or "corrupt" in text:
            why = "is not an SQLite database or is corrupt; move it aside or pass another --db"
        elif "no such table" in text:
            why = "holds no edgec history; pass the right --db"
        else:
            why = text
        return BadInputError(f"history DB {self.path}: {why}")

    def add(self, report: BenchReport, *, tag: str | None = None, model: str | None = None) -> Entry:
        """File `report` (a loaded bench report), optionally tagged; a tag is unique per model, target and device."""
        if tag == LATEST:
            raise BadInputError(f"tag {LATEST!r} is reserved: it names the newest tagged report")
        text = json.dumps(report.to_dict(), sort_keys=True)
        row = (utc_now(), str(report.created_utc or ""), model or report.model_name, str(report.target or "unspecified"),
               report.device_name, tag, _sha256(text), text)
        with self._connect(write=True) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                cursor = db.execute("INSERT INTO reports (added_utc, created_utc, model, target, device, tag, report_sha256,"
                                    " report) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            except sqlite3.IntegrityError:
                db.execute("ROLLBACK")
                raise BadInputError(f"tag {tag!r} is already on a report of {row[2]} for {row[3]} on {row[4]}:"
                                    " tags name one report each") from None
            db.execute("COMMIT")
        return Entry(int(cursor.lastrowid or 0), *row[:7])  # type: ignore[arg-type]

    def entries(self, *, model: str | None = None, target: str | None = None, device: str | None = None) -> list[Entry]:
        """Rows matching every filter given, oldest first."""
        where, params = _filters(model=model, target=target, device=device)
        with self._connect(write=False) as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM reports{where} ORDER BY created_utc, id", params).fetchall()
        return [Entry(*row) for row in rows]

    def get(self, entry_id: int) -> tuple[Entry, BenchReport]:
        """One row and its report; an unknown id or a damaged row is a BadInputError."""
        with self._connect(write=False) as db:
            row = db.execute(f"SELECT {_COLUMNS}, report FROM reports WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise BadInputError(f"history DB {self.path} has no report #{entry_id}: see `edgec history list`")
        entry, text = Entry(*row[:-1]), row[-1]
        if _sha256(text) != entry.report_sha256:
            raise BadInputError(f"history DB {self.path}: report #{entry_id} is damaged (its sha256 does not match)")
        return entry, BenchReport.from_dict(json.loads(text), f"history report #{entry_id}")

    def baseline_for(self, report: BenchReport, *, tag: str | None = None) -> tuple[Entry, BenchReport]:
        """The report to gate `report` against: same model, target and device, and not `report` itself.

        Without a tag, the newest one created no later than `report`; with `LATEST`, the newest tagged
        one; with another tag, the one carrying it.
        """
        key = {"model": report.model_name, "target": str(report.target or "unspecified"), "device": report.device_name}
        where, params = _filters(**key)
        clauses = [where, "report_sha256 != ?"]
        params.append(_sha256(json.dumps(report.to_dict(), sort_keys=True)))
        if tag is None:
            clauses.append("created_utc <= ?")
            params.append(str(report.created_utc or ""))
        elif tag == LATEST:
            clauses.append("tag IS NOT NULL")
        else:
            clauses.append("tag = ?")
            params.append(tag)
        with self._connect(write=False) as db:
            row = db.execute(f"SELECT id FROM reports{' AND '.join(clauses)} ORDER BY created_utc DESC, id DESC LIMIT 1",
                             params).fetchone()
        if row is None:
            which = "no earlier report" if tag is None else ("no tagged report" if tag == LATEST else f"no report tagged {tag!r}")
            raise BadInputError(f"history DB {self.path} has {which} of {key['model']} for {key['target']} on {key['device']}")
        return self.get(int(row[0]))


def _filters(**equal: str | None) -> tuple[str, list[str]]:
    """` WHERE a = ? AND b = ?` for the filters given, and their values."""
    given = {name: value for name, value in equal.items() if value is not None}
    where = " WHERE " + " AND ".join(f"{name} = ?" for name in given) if given else " WHERE 1"
    return where, list(given.values())
