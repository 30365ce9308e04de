"""Looking into a damaged store and copying out what can be read: ``testtime store check | salvage``.

Both read the file through a read-only connection that never writes it (no WAL checkpoint, no recovery
written back). ``check_store`` runs SQLite's full integrity check and counts each table's rows;
``salvage_store`` copies every row SQLite can still read into a new store, stepping over damaged pages,
and refuses rows whose values were read from lost pages. The live store is ``testtime.store``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testtime.store import Store, StoreError, _connect, generation_key

TABLES = ("meta", "runs", "problems", "generations", "rewards", "features", "nodes", "results")


def store_file(path: str | Path) -> Path:
    """The SQLite file a path names: the file itself, or a folder's ``testtime.sqlite``."""
    path = Path(path)
    return path / Store.FILENAME if path.is_dir() else path


def _open_readonly(path: Path) -> sqlite3.Connection:
    """A connection that never writes the file (no WAL checkpoint, no recovery written back)."""
    try:
        db = _connect(Path(f"file:{path}?mode=ro"), uri=True)
    except sqlite3.OperationalError:
        # read-only WAL needs the -shm file; without it, treat the file as immutable (the WAL is ignored)
        db = _connect(Path(f"file:{path}?immutable=1"), uri=True)
    # a file cut short still states its old page count; this makes SQLite read the pages that remain
    # instead of refusing the whole file (nothing is written: the connection is read-only)
    db.execute("PRAGMA writable_schema=ON")
    return db


@dataclass
class CheckReport:
    """What ``check_store`` found: SQLite's integrity check and the rows each table holds (None: unreadable)."""

    path: str
    problems: list[str] = field(default_factory=list)  # integrity_check's findings; [] when sound
    rows: dict[str, int | None] = field(default_factory=dict)
    error: str | None = None  # the file could not be read as a database at all

    @property
    def ok(self) -> bool:
        return self.error is None and not self.problems


def check_store(path: str | Path, max_problems: int = 20) -> CheckReport:
    """SQLite's full ``integrity_check`` (pages, b-trees, indexes) and a row count per table; never writes."""
    file = store_file(path)
    report = CheckReport(str(file))
    if not file.is_file():
        report.error = "no such file"
        return report
    try:
        db = _open_readonly(file)
    except sqlite3.Error as e:
        report.error = str(e)
        return report
    try:
        try:
            rows = [r[0] for r in db.execute(f"PRAGMA integrity_check({max_problems})")]
        except sqlite3.Error as e:
            report.error = str(e)
            return report
        report.problems = [] if rows == ["ok"] else rows
        for table in TABLES:
            try:
                report.rows[table] = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            except sqlite3.Error:
                report.rows[table] = None
    finally:
        db.close()
    return report


@dataclass
class SalvageReport:
    """What ``salvage_store`` copied (rows per table) and what it could not read."""

    source: str
    target: str
    copied: dict[str, int] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)  # one line per unreadable table, rowid range or row

    @property
    def complete(self) -> bool:
        return not self.lost


def _next_readable(db: sqlite3.Connection, table: str, after: int) -> int | None:
    """The first rowid above ``after`` that SQLite can reach again: probe ever further past the damaged
    spot (a rowid lookup descends from the root, so it steps over a damaged subtree). None: nothing further."""
    step = 1
    while after + step < 2**63:
        try:
            row = db.execute(f"SELECT rowid FROM {table} WHERE rowid >= ? ORDER BY rowid LIMIT 1",
                             (after + step,)).fetchone()
            return None if row is None else int(row[0])
        except sqlite3.DatabaseError:
            step *= 2
    return None


def _damaged_values(table: str, row: dict[str, Any]) -> str | None:
    """Why a row that SQLite did read is still not to be trusted, or None. A file cut short reads its lost
    pages as zeros, so a value running into NUL bytes is damage; a generation must also hash to its key."""
    if any(isinstance(v, str) and "\x00" in v for v in row.values()):
        return "NUL bytes in its values: read from a lost page"
    if table == "generations":
        try:
            key = generation_key(row["model"], row["prompt"], json.loads(row["params"]), row["seed"],
                                 row["sample_index"])
        except (TypeError, ValueError) as e:
            return f"unreadable fields: {e}"
        if key != row["key"]:
            return "its fields do not hash to its key"
    return None


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, report: SalvageReport) -> None:
    """Copy a table in rowid order, in batches; over a damaged part, row by row, skipping what cannot be read.
    Past damage SQLite cannot step over, the table is read again from its end backwards. Each stretch of
    rowids neither pass could read is one line of ``report.lost``."""
    cols = [r[1] for r in dst.execute(f"PRAGMA table_info({table})")]
    what = f"rowid, {', '.join(cols)}"
    forward = f"SELECT {what} FROM {table} WHERE rowid >= ? ORDER BY rowid LIMIT ?"
    backward = f"SELECT {what} FROM {table} WHERE rowid <= ? ORDER BY rowid DESC LIMIT ?"
    insert = f"INSERT OR IGNORE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    copied = 0
    gaps: list[list[Any]] = []  # [first rowid, last rowid (None: to the end), error]

    def put(rows: list[tuple]) -> None:
        nonlocal copied
        for row in rows:
            why = _damaged_values(table, dict(zip(cols, row[1:], strict=True)))
            if why:
                report.lost.append(f"{table}: rowid {row[0]} unusable ({why})")
                continue
            try:
                copied += dst.execute(insert, row[1:]).rowcount
            except sqlite3.Error as e:  # values that came back damaged (a NULL where none may be)
                report.lost.append(f"{table}: rowid {row[0]} unusable ({e})")

    start, batch, clean = -(2**63), 256, 0
    while True:
        try:
            rows = src.execute(forward, (start, batch)).fetchall()
        except sqlite3.DatabaseError as e:
            if batch > 1:  # narrow the damage down row by row
                batch, clean = 1, 0
                continue
            resume = _next_readable(src, table, start)
            gaps.append([start, None if resume is None else resume - 1, str(e)])
            if resume is None:
                break
            start = resume
            continue
        if not rows:
            break
        put(rows)
        start = int(rows[-1][0]) + 1
        clean += 1
        if batch == 1 and clean >= 32:  # past the damage: batches again
            batch = 256
    if gaps:  # read from the end backwards, down to where that breaks too
        top, low = 2**63 - 1, None
        while True:
            try:
                rows = src.execute(backward, (top, 256)).fetchall()
            except sqlite3.DatabaseError:
                break
            if not rows:
                break
            put(rows)
            low = top = int(rows[-1][0]) - 1
            low += 1
        for first, last, err in gaps:
            if low is not None and first >= low:
                continue  # the backward pass got all of it
            if low is not None and (last is None or last >= low):
                last = low - 1
            report.lost.append(f"{table}: rowids {first} to {'the end' if last is None else last} unreadable "
                               f"({err})")
    report.copied[table] = copied


def salvage_store(path: str | Path, new: str | Path) -> SalvageReport:
    """Copy every row SQLite can still read from the store at ``path`` into a new store ``new`` (which must
    not exist), table by table; the report says what was copied and what could not be read."""
    src_file = store_file(path)
    new = Path(new)
    dst_file = new / Store.FILENAME if new.suffix != ".sqlite" else new
    if not src_file.is_file():
        raise StoreError(src_file, "no such file")
    if dst_file.exists():
        raise StoreError(dst_file, "already exists; salvage writes a new store (pick another path)")
    report = SalvageReport(str(src_file), str(dst_file))
    Store(dst_file).close()  # the schema, empty
    dst = _connect(dst_file)
    try:
        try:
            src = _open_readonly(src_file)
            have = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.Error as e:
            report.lost.append(f"every table: the file cannot be read as a database ({e})")
            return report
        try:
            for table in TABLES:
                if table not in have:
                    report.lost.append(f"{table}: table missing")
                    continue
                dst.execute("BEGIN")
                _copy_table(src, dst, table, report)
                dst.execute("COMMIT")
        finally:
            src.close()
    finally:
        dst.close()
    return report
