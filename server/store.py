"""Runs and their events in SQLite (stdlib, WAL), so a restart loses neither the queue nor history.

One connection shared by the event loop and the worker thread behind a lock; every write is one
short transaction. With WAL and synchronous=NORMAL a commit does not wait for the disk, and a
crash loses at most the last commits, never the database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from latentgraph.engine.jsonsafe import json_safe, scrub_text
from latentgraph.server.backup import WatchedConnection

QUEUED, RUNNING = "queued", "running"
SUCCEEDED, FAILED, CANCELLED, INTERRUPTED = "succeeded", "failed", "cancelled", "interrupted"
ACTIVE = frozenset({QUEUED, RUNNING})
FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED, INTERRUPTED})
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)

SCHEMA_VERSION = 2  # 2: runs.seq_reserved
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id        TEXT PRIMARY KEY,
    status    TEXT NOT NULL,
    priority  INTEGER NOT NULL DEFAULT 0,
    position  REAL,              -- order among queued runs; NULL once a run has left the queue
    client_id TEXT,
    workflow  TEXT NOT NULL,     -- the submitted workflow document (JSON)
    outputs   TEXT,              -- requested output nodes (JSON list), NULL for all
    created   REAL NOT NULL,
    started   REAL,
    finished  REAL,
    results   TEXT,              -- output node -> reported results (JSON)
    errors    TEXT,              -- node failures or validation issues (JSON list)
    summary   TEXT,              -- executed, cached, skipped, seconds (JSON)
    error     TEXT,              -- one line for lists: the first error, or why it was interrupted
    seq_reserved INTEGER NOT NULL DEFAULT 0  -- seqs up to this may have reached clients (see reserve_seq)
);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, position);
CREATE TABLE IF NOT EXISTS events (
    run_id    TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    type      TEXT NOT NULL,
    timestamp REAL NOT NULL,
    data      TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS run_extras (  -- what a front end keeps with a run (e.g. 'comfyui': the prompt as sent)
    run_id    TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    data      TEXT NOT NULL,     -- JSON
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS run_extras_by_name ON run_extras (name);
"""


@dataclass
class RunRecord:
    id: str
    status: str
    workflow: dict[str, Any]
    priority: int = 0
    client_id: str | None = None
    outputs: list[str] | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    position: float | None = None
    results: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def name(self) -> str | None:
        meta = self.workflow.get("meta") if isinstance(self.workflow, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else None

    @property
    def images(self) -> list[dict[str, Any]]:
        """Every image the run's output nodes reported, in node order."""
        return [image for results in self.results.values() if isinstance(results, dict)
                for image in results.get("images") or [] if isinstance(image, dict)]


_COLUMNS = ("id", "status", "priority", "position", "client_id", "workflow", "outputs", "created",
            "started", "finished", "results", "errors", "summary", "error")
_JSON_COLUMNS = {"workflow", "outputs", "results", "errors", "summary"}
_LIGHT_COLUMNS = tuple(c for c in _COLUMNS if c != "workflow")  # lists do not need the workflow
# ...only its name: a stand-in workflow {"meta": {"name": ...}} so RunRecord.name works in lists too.
_WORKFLOW_NAME_ONLY = "json_object('meta', json_object('name', json_extract(workflow, '$.meta.name')))"


def _dumps(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), default=str)
    if "\\ud" in text:  # maybe a lone surrogate a node produced: stored, it could never be sent back
        text = json.dumps(json_safe(value), separators=(",", ":"), default=str)
    return text


def _plain(value: Any) -> Any:
    """A text column's value, encodable as UTF-8 (SQLite refuses a lone surrogate)."""
    return scrub_text(value) if isinstance(value, str) else value


class RunStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # WatchedConnection notes SQLite reporting damage (server/backup.py): see `damage`
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, factory=WatchedConnection)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise RuntimeError(f"{path} was written by a newer Latentgraph (schema {row[0]})")
            elif int(row[0]) < SCHEMA_VERSION:
                self._migrate(int(row[0]))

    def _migrate(self, version: int) -> None:
        """Bring a database of an older schema up to SCHEMA_VERSION (called with the lock held)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if version < 2:
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
                if "seq_reserved" not in columns:
                    self._db.execute("ALTER TABLE runs ADD COLUMN seq_reserved INTEGER NOT NULL DEFAULT 0")
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    @property
    def damage(self) -> str | None:
        """What SQLite said when it found this database damaged while serving; None while it looks sound."""
        return self._db.damage

    def mark_damaged(self, reason: str) -> None:
        self._db.mark_damaged(reason)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _transaction(self) -> "_Transaction":
        return _Transaction(self._db, self._lock)

    # --- writing ---------------------------------------------------------------------------------

    def insert(self, run: RunRecord, events: list[dict[str, Any]] = (), extras: dict[str, Any] | None = None) -> None:
        """A new run, with its first events (run_queued) and its extras (name -> JSON value, see
        `extras`), in one transaction."""
        values = [getattr(run, c) for c in _COLUMNS]
        values = [_dumps(v) if c in _JSON_COLUMNS and v is not None else _plain(v) for c, v in zip(_COLUMNS, values)]
        with self._transaction() as db:
            db.execute(f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", values)
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", _event_rows(events))
            db.executemany("INSERT INTO run_extras VALUES (?, ?, ?)",
                           [(run.id, name, _dumps(value)) for name, value in (extras or {}).items()])

    def update(self, run_id: str, **fields: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [_dumps(v) if k in _JSON_COLUMNS and v is not None else _plain(v) for k, v in fields.items()]
        with self._transaction() as db:
            db.execute(f"UPDATE runs SET {assignments} WHERE id = ?", [*values, run_id])

    def set_positions(self, positions: Iterable[tuple[str, float]]) -> None:
        with self._transaction() as db:
            db.executemany("UPDATE runs SET position = ? WHERE id = ?", [(p, i) for i, p in positions])

    def finish(self, run: RunRecord, events: list[dict[str, Any]]) -> None:
        """Store a run's final state and its events in one transaction."""
        with self._transaction() as db:
            db.execute("UPDATE runs SET status=?, position=NULL, started=?, finished=?, results=?, errors=?, "
                       "summary=?, error=? WHERE id=?",
                       (run.status, run.started, run.finished, _dumps(run.results), _dumps(run.errors),
                        _dumps(run.summary), _plain(run.error), run.id))
            db.executemany("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?)", _event_rows(events))

    def reserve_seq(self, run_id: str, upto: int) -> None:
        """Record that events up to seq `upto` may be sent to clients before they are stored. Event
        rows are written in batches a moment after they are sent; after a crash, the event that
        closes the run is numbered past every reserved seq, so it is never a number a client had."""
        with self._transaction() as db:
            db.execute("UPDATE runs SET seq_reserved = MAX(seq_reserved, ?) WHERE id = ?", (upto, run_id))

    def next_seq(self, run_id: str) -> int:
        """The seq of a new event for a run: after every stored and every reserved seq."""
        with self._lock:
            row = self._db.execute("SELECT MAX(COALESCE((SELECT MAX(seq) FROM events WHERE run_id = ?), 0), "
                                   "COALESCE((SELECT seq_reserved FROM runs WHERE id = ?), 0))", (run_id, run_id)).fetchone()
        return int(row[0]) + 1

    def prune(self, *, max_runs: int = 0, max_age: float = 0.0) -> int:
        """History retention: forget the oldest finished runs beyond `max_runs` and those that
        finished more than `max_age` seconds ago (0: no bound). Queued and running runs stay;
        image files stay. Returns how many runs were forgotten."""
        marks = ", ".join("?" * len(FINISHED))
        removed = 0
        with self._transaction() as db:
            if max_age:
                removed += db.execute(f"DELETE FROM runs WHERE status IN ({marks}) AND COALESCE(finished, created) < ?",
                                      (*FINISHED, time.time() - max_age)).rowcount
            if max_runs:
                removed += db.execute(f"DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE status IN ({marks}) "
                                      "ORDER BY COALESCE(finished, created) DESC, rowid DESC LIMIT -1 OFFSET ?)",
                                      (*FINISHED, max_runs)).rowcount
        return removed

    def recover(self) -> list[str]:
        """At start-up: runs left 'running' by a process that died are marked interrupted."""
        now = time.time()
        with self._transaction() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM runs WHERE status = ?", (RUNNING,))]
            db.execute("UPDATE runs SET status=?, position=NULL, finished=?, "
                       "error='the server stopped while this run was running' WHERE status=?",
                       (INTERRUPTED, now, RUNNING))
        return ids

    def delete_finished(self) -> int:
        marks = ", ".join("?" * len(FINISHED))
        with self._transaction() as db:
            return db.execute(f"DELETE FROM runs WHERE status IN ({marks})", tuple(FINISHED)).rowcount

    def delete(self, run_id: str) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount > 0

    def delete_finished_with(self, name: str, run_ids: Iterable[str] | None = None) -> int:
        """Forget the finished runs that have an extra `name` (only those in `run_ids`, when given)."""
        marks = ", ".join("?" * len(FINISHED))
        where, params = "", []
        if run_ids is not None:
            run_ids = list(run_ids)
            if not run_ids:
                return 0
            where, params = f" AND id IN ({', '.join('?' * len(run_ids))})", run_ids
        with self._transaction() as db:
            return db.execute(f"DELETE FROM runs WHERE status IN ({marks}) AND id IN "
                              f"(SELECT run_id FROM run_extras WHERE name = ?){where}",
                              (*FINISHED, name, *params)).rowcount

    # --- reading ---------------------------------------------------------------------------------

    def get(self, run_id: str) -> RunRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _record(_COLUMNS, row) if row else None

    def pending(self) -> list[RunRecord]:
        """Queued runs in queue order, with their workflows (what a restart resumes)."""
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE status = ? "
                                    "ORDER BY position, created", (QUEUED,)).fetchall()
        return [_record(_COLUMNS, r) for r in rows]

    def list(self, *, limit: int, offset: int = 0, statuses: Iterable[str] | None = None,
             client_id: str | None = None) -> tuple[list[RunRecord], int]:
        """Runs, newest first, without their workflows; and how many match in all."""
        where, params = [], []
        if statuses:
            statuses = list(statuses)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        if client_id is not None:
            where.append("client_id = ?")
            params.append(client_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM runs{clause}", params).fetchone()[0]
            rows = self._db.execute(f"SELECT {', '.join(_LIGHT_COLUMNS)}, {_WORKFLOW_NAME_ONLY} FROM runs{clause} "
                                    "ORDER BY created DESC, rowid DESC LIMIT ? OFFSET ?", [*params, limit, offset]).fetchall()
        return [_record((*_LIGHT_COLUMNS, "workflow"), r) for r in rows], total

    def events(self, run_id: str, after: int = 0, exclude: Iterable[str] = ()) -> list[dict[str, Any]]:
        """A run's events after seq `after`, in order; `exclude`: event types left out."""
        exclude = list(exclude)
        skip = f" AND type NOT IN ({', '.join('?' * len(exclude))})" if exclude else ""
        with self._lock:
            rows = self._db.execute("SELECT seq, type, timestamp, data FROM events WHERE run_id = ? AND seq > ?"
                                    f"{skip} ORDER BY seq", (run_id, after, *exclude)).fetchall()
        return [{"type": t, "run_id": run_id, "seq": s, "timestamp": ts, "data": json.loads(d)} for s, t, ts, d in rows]

    def last_seq(self, run_id: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?", (run_id,)).fetchone()[0]

    def extras(self, name: str, run_ids: Iterable[str]) -> dict[str, Any]:
        """The extra `name` of each of these runs that has one: run id -> value."""
        run_ids = list(run_ids)
        found: dict[str, Any] = {}
        for start in range(0, len(run_ids), 500):  # within SQLite's bound on parameters
            chunk = run_ids[start:start + 500]
            with self._lock:
                rows = self._db.execute(f"SELECT run_id, data FROM run_extras WHERE name = ? AND run_id IN "
                                        f"({', '.join('?' * len(chunk))})", (name, *chunk)).fetchall()
            found.update((run_id, json.loads(data)) for run_id, data in rows)
        return found

    def finished_with(self, name: str, *, limit: int | None = None, offset: int = 0
                      ) -> tuple[list[tuple[RunRecord, Any]], int]:
        """Runs that finished after they started (not those cancelled while queued) and have an
        extra `name`, oldest first, without their workflows, each with that extra; and how many there
        are in all."""
        marks = ", ".join("?" * len(FINISHED))
        base = (f"FROM runs JOIN run_extras ON run_extras.run_id = runs.id AND run_extras.name = ? "
                f"WHERE runs.status IN ({marks}) AND runs.started IS NOT NULL")
        columns = ", ".join(f"runs.{c}" for c in _LIGHT_COLUMNS)
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) {base}", (name, *FINISHED)).fetchone()[0]
            rows = self._db.execute(f"SELECT {columns}, run_extras.data {base} ORDER BY runs.finished, runs.rowid "
                                    "LIMIT ? OFFSET ?", (name, *FINISHED, -1 if limit is None else limit,
                                                         max(0, offset))).fetchall()
        return [(_record(_LIGHT_COLUMNS, row[:-1]), json.loads(row[-1])) for row in rows], total

    def extra_max(self, name: str, key: str) -> float | None:
        """The largest number at `key` among the extras `name` (None if there is none)."""
        with self._lock:
            row = self._db.execute("SELECT MAX(json_extract(data, '$.' || ?)) FROM run_extras WHERE name = ?",
                                   (key, name)).fetchone()
        return row[0]

    def add_events(self, events: list[dict[str, Any]]) -> None:
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?)", _event_rows(events))

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()
        return {status: count for status, count in rows}

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())


def _event_rows(events: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["run_id"], e["seq"], e["type"], e["timestamp"], _dumps(e.get("data", {}))) for e in events]


def _record(columns: tuple[str, ...], row: tuple[Any, ...]) -> RunRecord:
    values = {c: (json.loads(v) if c in _JSON_COLUMNS and v is not None else v) for c, v in zip(columns, row)}
    values.setdefault("workflow", {})
    for name, empty in (("results", {}), ("errors", []), ("summary", {})):
        if values.get(name) is None:
            values[name] = empty
    return RunRecord(**values)


class _Transaction:
    """`with store._transaction() as db:` holds the lock and wraps the statements in BEGIN/COMMIT."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self.db, self.lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.db

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        try:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self.lock.release()


__all__ = ["ACTIVE", "CANCELLED", "FAILED", "FINISHED", "INTERRUPTED", "QUEUED", "RUNNING", "RunRecord",
           "RunStore", "STATUSES", "SUCCEEDED"]
