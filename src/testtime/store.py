"""SQLite store: every generation lands here, keyed by a hash of its full request, before it is used.

A rerun of the same command replays generations from here instead of recomputing them, and a run killed
with SIGKILL loses nothing that was committed: each backend call's results are committed in one
transaction (WAL mode) before the strategy sees them.

Damage and sharing. Opening a store runs SQLite's ``quick_check`` (once per file and process): a file
that is not a database, or one cut short, is a ``StoreError`` naming the file and the way out (``testtime
store check`` / ``testtime store salvage``: ``check_store`` and ``salvage_store`` in ``testtime.store_salvage``),
never a traceback from the middle of a run; so is damage SQLite meets later. Several processes may write one store
at once (two runs, a run and a sweep): writes take the write lock up front (``BEGIN IMMEDIATE``), wait for
it (SQLite's busy timeout) and, should it stay taken longer, retry with backoff; only then is it a
``StoreError``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from testtime.types import Completion, Confidence, Node, Problem, Trace

SCHEMA_VERSION = 1

T = TypeVar("T")

BUSY_TIMEOUT_S = 30.0  # SQLite waits this long for another process's write lock (per statement)
LOCKED_RETRY_S = 300.0  # then testtime retries, with backoff, for this long in all before giving up

_CHECKED: set[tuple[str, int]] = set()  # (file, inode) of the stores this process found sound on opening

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS problems (
    run_id TEXT NOT NULL,
    problem_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    kind TEXT NOT NULL,
    meta TEXT NOT NULL,
    PRIMARY KEY (run_id, problem_id)
);
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    params TEXT NOT NULL,
    seed INTEGER NOT NULL,
    sample_index INTEGER NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    stop TEXT,
    prompt_tokens INTEGER NOT NULL,
    cached_prompt_tokens INTEGER NOT NULL,
    generated_tokens INTEGER NOT NULL,
    created REAL NOT NULL,
    confidence TEXT
);
CREATE TABLE IF NOT EXISTS rewards (
    key TEXT PRIMARY KEY,
    scorer TEXT NOT NULL,
    question TEXT NOT NULL,
    steps TEXT NOT NULL,
    rewards TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS features (
    key TEXT PRIMARY KEY,
    extractor TEXT NOT NULL,
    rows INTEGER NOT NULL,
    dim INTEGER NOT NULL,
    data BLOB NOT NULL,
    tokens INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    run_id TEXT NOT NULL,
    problem_id TEXT NOT NULL,
    strategy TEXT NOT NULL,
    budget INTEGER NOT NULL,
    node_id INTEGER NOT NULL,
    parent INTEGER,
    depth INTEGER NOT NULL,
    step TEXT NOT NULL,
    reward REAL,
    path_rewards TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    finish TEXT NOT NULL,
    answer TEXT,
    terminal INTEGER NOT NULL,
    kept INTEGER NOT NULL,
    pruned TEXT,
    PRIMARY KEY (run_id, problem_id, strategy, budget, node_id)
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL,
    problem_id TEXT NOT NULL,
    strategy TEXT NOT NULL,
    budget INTEGER NOT NULL,
    answer TEXT,
    correct INTEGER,
    compute TEXT NOT NULL,
    trace TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, problem_id, strategy, budget)
);
"""


class StoreLike(Protocol):
    """What replaying generations and rewards needs of a store: the SQLite ``Store``, the engine's ledger
    over it, and a Ray chunk's view of it (``execution.ray.ChunkStore``) all have these."""

    def get_generations(self, keys: Iterable[str]) -> dict[str, Completion]: ...

    def put_generations(self, rows: list[tuple[str, str, str, dict, int, int, Completion]]) -> None: ...

    def get_rewards(self, keys: Iterable[str]) -> dict[str, tuple[list[float], int]]: ...

    def put_rewards(self, rows: list[tuple[str, str, str, Sequence[str], list[float], int]]) -> None: ...


def generation_key(model: str, prompt: str, params: dict[str, Any], seed: int, sample_index: int) -> str:
    """Hash of everything that determines a generation. Key order is canonicalised."""
    payload = json.dumps(
        {"model": model, "prompt": prompt, "params": params, "seed": seed, "sample_index": sample_index},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def reward_key(scorer: str, question: str, steps: Sequence[str], reference: str | None = None) -> str:
    """Hash of everything that determines a solution's step rewards (reference only for outcome scorers)."""
    payload = json.dumps(
        {"scorer": scorer, "question": question, "steps": list(steps), "reference": reference},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class StoreError(RuntimeError):
    """A store that cannot be used as it is (damaged, another schema, locked for too long); the message is
    one line naming the file and what to do."""

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        super().__init__(f"{path}: {message}")


def damaged(path: str | Path, detail: str) -> StoreError:
    """The error for a store SQLite cannot read: what it said, and the two commands that help."""
    detail = " ".join(detail.split())[:200]
    return StoreError(path, f"the store is damaged ({detail}); see `testtime store check {path}`, and copy "
                            f"every readable row into a new store with `testtime store salvage {path} NEW.sqlite`")


def _is_locked(err: sqlite3.Error) -> bool:
    text = str(err).lower()
    return isinstance(err, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def _is_corrupt(err: sqlite3.Error) -> bool:
    text = str(err).lower()
    return "malformed" in text or "not a database" in text or "corrupt" in text


def _connect(path: Path, uri: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None,
                         uri=uri)
    db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    return db


def _problems(db: sqlite3.Connection, max_errors: int = 5) -> list[str]:
    """SQLite's quick_check: structure and page accounting (not index contents); [] when sound."""
    rows = [r[0] for r in db.execute(f"PRAGMA quick_check({max_errors})")]
    return [] if rows == ["ok"] else rows


class Store:
    """One SQLite file per output folder; safe to share between threads of one process and, for writing,
    between processes (see the module docstring)."""

    FILENAME = "testtime.sqlite"

    def __init__(self, path: str | Path, *, retry_s: float = LOCKED_RETRY_S):
        path = Path(path)
        if path.suffix != ".sqlite":
            path.mkdir(parents=True, exist_ok=True)
            path = path / self.FILENAME
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.retry_s = retry_s
        self.lock_retries = 0  # times a statement found the store locked past the busy timeout and was retried
        self._lock = threading.Lock()
        try:
            self._db = _connect(path)
        except sqlite3.Error as e:
            raise StoreError(path, f"cannot open the store ({e})") from None
        try:
            self._retrying(self._open)
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        # WAL + synchronous=NORMAL: a committed transaction survives a killed process, and readers never
        # wait for a writer.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        key = (str(self.path.resolve()), os.stat(self.path).st_ino)
        if key not in _CHECKED:  # once per file and process: a sweep opens its store once per run
            problems = _problems(self._db)
            if problems:
                raise damaged(self.path, "; ".join(problems))
            _CHECKED.add(key)
        self._db.executescript(_SCHEMA)
        self._add_columns()
        self._db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        found = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        if int(found) != SCHEMA_VERSION:
            raise StoreError(self.path, f"store schema version {found}, this testtime reads {SCHEMA_VERSION}; "
                                        "open it with the testtime that wrote it, or start a new --out folder")

    def _retrying(self, fn: Callable[[], T]) -> T:
        """``fn`` under the connection's lock, retried while another process holds the store's write lock
        past the busy timeout; any other SQLite error becomes a one-line ``StoreError``."""
        deadline = time.monotonic() + self.retry_s
        delay = 0.05
        while True:
            with self._lock:
                try:
                    return fn()
                except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
                    self._rollback()
                    raise  # testtime's own mistake, not the file's: a traceback is the right report
                except sqlite3.Error as e:
                    self._rollback()
                    if _is_corrupt(e):
                        raise damaged(self.path, str(e)) from None
                    if not _is_locked(e):  # disk full, I/O error, a read-only file
                        raise StoreError(self.path, str(e)) from None
                    if time.monotonic() >= deadline:
                        raise StoreError(self.path, f"still locked by another process after {self.retry_s:g} s "
                                                    f"of retries ({e})") from None
                    self.lock_retries += 1
            time.sleep(delay)
            delay = min(2 * delay, 2.0)

    def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the transaction is gone with the failure that ended it

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(db)`` in one transaction that takes the write lock at its start (``BEGIN IMMEDIATE``: a
        transaction that read first could not be granted the lock later without failing at once)."""

        def tx() -> T:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self._db)
                self._db.execute("COMMIT")
                return out
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

        return self._retrying(tx)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._retrying(lambda: fn(self._db))

    def _add_columns(self) -> None:
        """Columns added since a store was created (additive: older rows read them as NULL)."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(generations)")}
        if "confidence" not in have:  # per-sample confidence summaries (JSON), from backends with logprobs
            self._db.execute("ALTER TABLE generations ADD COLUMN confidence TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- generations -------------------------------------------------------------------------------

    def get_generations(self, keys: Iterable[str]) -> dict[str, Completion]:
        keys = list(keys)

        def read(db: sqlite3.Connection) -> dict[str, Completion]:
            out: dict[str, Completion] = {}
            for i in range(0, len(keys), 500):  # stay under SQLite's host-parameter limit
                chunk = keys[i : i + 500]
                rows = db.execute(
                    "SELECT key, text, finish_reason, stop, prompt_tokens, cached_prompt_tokens, "
                    f"generated_tokens, confidence FROM generations WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                for key, text, finish, stop, pt, cpt, gt, conf in rows:
                    out[key] = Completion(text, finish, pt, cpt, gt, stop=stop, from_store=True,
                                          confidence=Confidence(**json.loads(conf)) if conf else None)
            return out

        return self._read(read)

    def put_generations(self, rows: list[tuple[str, str, str, dict, int, int, Completion]]) -> None:
        """Rows of (key, model, prompt, params, seed, sample_index, completion), one transaction."""
        now = time.time()
        values = [
            (
                key, model, prompt, json.dumps(params, sort_keys=True), seed, idx,
                c.text, c.finish_reason, c.stop, c.prompt_tokens, c.cached_prompt_tokens,
                c.generated_tokens, now, None if c.confidence is None else json.dumps(asdict(c.confidence)),
            )
            for key, model, prompt, params, seed, idx, c in rows
        ]
        self._write(lambda db: db.executemany(
            "INSERT OR IGNORE INTO generations (key, model, prompt, params, seed, sample_index, text, "
            "finish_reason, stop, prompt_tokens, cached_prompt_tokens, generated_tokens, created, confidence) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", values))

    def count_generations(self) -> int:
        return self._read(lambda db: db.execute("SELECT COUNT(*) FROM generations").fetchone()[0])

    # -- rewards ---------------------------------------------------------------------------------------

    def get_rewards(self, keys: Iterable[str]) -> dict[str, tuple[list[float], int]]:
        """key -> (step rewards, tokens scored) for the keys present."""
        keys = list(keys)

        def read(db: sqlite3.Connection) -> dict[str, tuple[list[float], int]]:
            out: dict[str, tuple[list[float], int]] = {}
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                rows = db.execute(
                    f"SELECT key, rewards, tokens FROM rewards WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                for key, rewards, tokens in rows:
                    out[key] = (json.loads(rewards), tokens)
            return out

        return self._read(read)

    def put_rewards(self, rows: list[tuple[str, str, str, Sequence[str], list[float], int]]) -> None:
        """Rows of (key, scorer, question, steps, rewards, tokens), one transaction."""
        now = time.time()
        values = [
            (key, scorer, q, json.dumps(list(steps), ensure_ascii=False), json.dumps(r), tok, now)
            for key, scorer, q, steps, r, tok in rows
        ]
        self._write(lambda db: db.executemany("INSERT OR IGNORE INTO rewards VALUES (?,?,?,?,?,?,?)", values))

    def count_rewards(self) -> int:
        return self._read(lambda db: db.execute("SELECT COUNT(*) FROM rewards").fetchone()[0])

    # -- features (a policy's hidden states at step ends, for probe PRMs) --------------------------------

    def get_features(self, keys: Iterable[str]) -> dict[str, tuple[np.ndarray, int]]:
        """key -> (float32 array of shape (steps, dim), tokens run) for the keys present."""
        keys = list(keys)

        def read(db: sqlite3.Connection) -> dict[str, tuple[np.ndarray, int]]:
            out: dict[str, tuple[np.ndarray, int]] = {}
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                rows = db.execute(
                    f"SELECT key, rows, dim, data, tokens FROM features WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                for key, n, dim, data, tokens in rows:
                    out[key] = (np.frombuffer(data, dtype=np.float32).reshape(n, dim).copy(), tokens)
            return out

        return self._read(read)

    def put_features(self, rows: list[tuple[str, str, np.ndarray, int]]) -> None:
        """Rows of (key, extractor, array (steps, dim), tokens), one transaction."""
        now = time.time()
        values = [
            (key, ex, int(a.shape[0]), int(a.shape[1]), np.ascontiguousarray(a, np.float32).tobytes(), tok, now)
            for key, ex, a, tok in rows
        ]
        self._write(lambda db: db.executemany("INSERT OR IGNORE INTO features VALUES (?,?,?,?,?,?,?)", values))

    # -- runs, problems, results -------------------------------------------------------------------

    def start_run(self, run_id: str, config: dict[str, Any], problems: list[Problem]) -> None:
        now = time.time()
        self._write(lambda db: self._insert_run(db, run_id, now, config, problems))

    @staticmethod
    def _insert_run(db: sqlite3.Connection, run_id: str, now: float, config: dict[str, Any],
                    problems: list[Problem]) -> None:
        db.execute(
            "INSERT INTO runs(run_id, created, updated, status, config) VALUES (?,?,?,?,?) "
            "ON CONFLICT(run_id) DO UPDATE SET updated=excluded.updated, status='running'",
            (run_id, now, now, "running", json.dumps(config, sort_keys=True, default=str)),
        )
        db.executemany(
            "INSERT OR IGNORE INTO problems VALUES (?,?,?,?,?,?,?)",
            [
                (run_id, p.id, i, p.question, p.answer, p.kind, json.dumps(p.meta, default=str))
                for i, p in enumerate(problems)
            ],
        )

    def finish_run(self, run_id: str, summary: dict[str, Any]) -> None:
        values = (time.time(), json.dumps(summary, default=str), run_id)
        self._write(lambda db: db.execute("UPDATE runs SET status='done', updated=?, summary=? WHERE run_id=?",
                                          values))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self._read(lambda db: db.execute(
            "SELECT run_id, created, updated, status, config, summary FROM runs WHERE run_id=?", (run_id,)
        ).fetchone())
        if row is None:
            return None
        return {
            "run_id": row[0], "created": row[1], "updated": row[2], "status": row[3],
            "config": json.loads(row[4]), "summary": json.loads(row[5]) if row[5] else None,
        }

    def list_runs(self) -> list[dict[str, Any]]:
        ids = self._read(lambda db: [r[0] for r in db.execute("SELECT run_id FROM runs ORDER BY created")])
        return [r for r in (self.get_run(i) for i in ids) if r is not None]

    def put_result(self, run_id: str, trace: Trace) -> None:
        """The trace, and its search tree (``trace.tree``) as rows of the nodes table, in one transaction."""
        record = trace.record()  # without the tree: stored once, as rows, not again inside the JSON
        tree = trace.tree
        key = (run_id, trace.problem_id, trace.strategy, trace.budget)
        result = (
            *key, trace.answer, None if trace.correct is None else int(trace.correct),
            json.dumps(trace.compute.to_dict()), json.dumps(record, default=str), time.time(),
        )

        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?)", result)
            if tree is not None:
                db.execute("DELETE FROM nodes WHERE run_id=? AND problem_id=? AND strategy=? AND budget=?", key)
                db.executemany(
                    "INSERT INTO nodes VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            *key, n.id, n.parent, n.depth, n.step, n.reward, json.dumps(n.path_rewards),
                            n.tokens, n.finish, n.answer, int(n.terminal), int(n.kept), n.pruned,
                        )
                        for n in tree
                    ],
                )

        self._write(write)

    def get_problem(self, run_id: str, problem_id: str) -> dict[str, Any]:
        """A run's problem as stored (question, answer, kind, meta); {} when absent."""
        row = self._read(lambda db: db.execute(
            "SELECT question, answer, kind, meta FROM problems WHERE run_id=? AND problem_id=?",
            (run_id, problem_id),
        ).fetchone())
        if row is None:
            return {}
        return {"question": row[0], "answer": row[1], "kind": row[2], "meta": json.loads(row[3])}

    def get_tree(self, run_id: str, problem_id: str) -> list[Node]:
        """The search tree a tree strategy recorded for one problem of a run, in node order."""
        cols = ("node_id", "parent", "depth", "step", "reward", "path_rewards", "tokens", "finish", "answer",
                "terminal", "kept", "pruned")
        rows = self._read(lambda db: db.execute(
            f"SELECT {', '.join(cols)} FROM nodes WHERE run_id=? AND problem_id=? ORDER BY node_id",
            (run_id, problem_id),
        ).fetchall())
        return [
            Node(node_id, parent, depth, step, reward, json.loads(path_rewards), tokens, finish, answer,
                 bool(terminal), bool(kept), pruned)
            for node_id, parent, depth, step, reward, path_rewards, tokens, finish, answer, terminal, kept, pruned
            in rows
        ]

    def get_results(self, run_id: str, problem_ids: Collection[str] | None = None) -> list[dict[str, Any]]:
        """The run's stored results (all, or those of `problem_ids`: a long-lived server's run keeps growing,
        and each request batch must not read back every earlier request's results)."""
        if problem_ids is None:
            rows = self._read(lambda db: db.execute(
                "SELECT trace FROM results WHERE run_id=? ORDER BY rowid", (run_id,)
            ).fetchall())
            return [json.loads(r[0]) for r in rows]
        ids = list(dict.fromkeys(problem_ids))
        found: list[tuple[int, str]] = []
        for i in range(0, len(ids), 500):  # below SQLite's limit on bound parameters
            chunk = ids[i:i + 500]
            found.extend(self._read(lambda db, chunk=chunk: db.execute(
                f"SELECT rowid, trace FROM results WHERE run_id=? AND problem_id IN ({','.join('?' * len(chunk))})",
                (run_id, *chunk)).fetchall()))
        return [json.loads(t) for _r, t in sorted(found)]
