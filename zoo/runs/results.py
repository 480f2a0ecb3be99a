"""The results database: one SQLite row per run, written safely by many processes at once.

Stdlib `sqlite3` in WAL mode: readers never block the writer, and every write is one short
`BEGIN IMMEDIATE` transaction, so concurrent writers queue on SQLite's lock (busy timeout 60 s)
instead of failing. The schema version lives in `PRAGMA user_version`.

A connection is never used across `fork()`: a store that finds itself in a new process opens a
fresh connection, and a pickled store (spawn-based pools, Ray) reopens its path on arrival.
"""

from __future__ import annotations

import array
import json
import os
import sqlite3
import sys
import time
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any, Callable, TypeVar

from zoo.errors import ZooError

SCHEMA_VERSION = 3  # 2 added the predictions table; 3 each run's kind and protocol name, and meta
STATUSES = ("running", "completed", "diverged", "failed")
BUSY_TIMEOUT_S = 60.0

_T = TypeVar("_T")
_JSON_FIELDS = frozenset({"protocol", "metrics", "environment", "config"})
_INDEXED = ("arch", "act", "init", "quant", "dataset", "seed", "status", "protocol_id")
# Connections inherited through fork(): never used or closed in the child (closing one there could
# disturb the parent's locks), only kept alive so garbage collection does not close them either.
_INHERITED: list[sqlite3.Connection] = []


# A post-training-quantization record (zoo.evaluate.ptq) names its float run here in its config.
PTQ_KEY = "ptq_of"


def is_ptq(record: "RunRecord") -> bool:
    return PTQ_KEY in (record.config or {})


def utc_now() -> str:
    """The current time as ISO-8601 UTC, to the second (for `started_at` / `finished_at`)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunRecord:
    """One run: what was trained, under which protocol, how it ended and what it measured.

    `protocol`, `metrics`, `environment` and `config` are stored as JSON, so they must hold
    JSON values (tuples come back as lists, non-string keys as strings).
    """

    run_id: str
    arch: str
    act: str
    init: str
    quant: str
    dataset: str
    seed: int
    protocol: dict[str, Any]
    protocol_id: str
    status: str
    metrics: dict[str, Any]
    environment: dict[str, Any]
    config: dict[str, Any]
    run_dir: str
    started_at: str
    finished_at: str | None = None
    # Stamped by the writer of a new run (zoo.runs.stamps); rows of older zoo versions get them
    # when boards are next rendered. None in a stored row: not stamped yet.
    kind: str | None = None  # classify, language or generate
    protocol_name: str | None = None  # quick, full, ...; None for a protocol of one's own

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"run status {self.status!r} is not one of {', '.join(STATUSES)}")


_COLUMNS = tuple(f.name for f in fields(RunRecord))

_CREATE_TABLE = f"""
CREATE TABLE runs (
    run_id      TEXT PRIMARY KEY NOT NULL,
    arch        TEXT NOT NULL,
    act         TEXT NOT NULL,
    init        TEXT NOT NULL,
    quant       TEXT NOT NULL,
    dataset     TEXT NOT NULL,
    seed        INTEGER NOT NULL,
    protocol    TEXT NOT NULL,  -- JSON
    protocol_id TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ({", ".join(f"'{s}'" for s in STATUSES)})),
    metrics     TEXT NOT NULL,  -- JSON
    environment TEXT NOT NULL,  -- JSON
    config      TEXT NOT NULL,  -- JSON
    run_dir     TEXT NOT NULL,
    started_at  TEXT NOT NULL,  -- ISO-8601 UTC
    finished_at TEXT            -- ISO-8601 UTC, NULL while running
)
"""
# What the boards were rendered with that is not a run (e.g. the standard grid's activations),
# keyed by name, values JSON: boards are a function of this database alone.
_CREATE_META = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
)
"""
# A run's test-set predictions (class indices as little-endian uint32), for churn across seeds.
_CREATE_PREDICTIONS = """
CREATE TABLE predictions (
    run_id  TEXT PRIMARY KEY NOT NULL,
    split   TEXT NOT NULL,
    classes BLOB NOT NULL
)
"""
_UPSERT = (
    f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM runs"


def _json_default(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    if callable(getattr(value, "item", None)):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _to_row(record: RunRecord) -> tuple[Any, ...]:
    row = []
    for name in _COLUMNS:
        value = getattr(record, name)
        if name in _JSON_FIELDS:
            try:
                value = json.dumps(value, sort_keys=True, default=_json_default)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"run {record.run_id}: field {name!r}: {exc}") from exc
        row.append(value)
    return tuple(row)


def _from_row(row: tuple[Any, ...]) -> RunRecord:
    values = {
        name: json.loads(value) if name in _JSON_FIELDS else value
        for name, value in zip(_COLUMNS, row)
    }
    return RunRecord(**values)


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (and their extended codes)
    message = str(exc).lower()
    return "locked" in message or "busy" in message


class ResultsStore:
    """The results database at `path` (created, with its parent directories, if missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ZooError(f"cannot create the folder of results database {self.path}: {exc}") from exc
        self._pid = os.getpid()
        self._conn = self._open()

    # -- public API --------------------------------------------------------------------------

    def upsert(self, record: RunRecord, predictions: list[int] | None = None,
               split: str = "test") -> None:
        """Insert `record`, or replace the row with the same run_id; with `predictions` (the
        predicted class of every example of `split`), store them in the same transaction."""
        row = _to_row(record)  # serialize before taking the write lock
        blob = None if predictions is None else array.array("I", predictions)
        if blob is not None and sys.byteorder != "little":
            blob.byteswap()
        conn = self._connection()

        def write() -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_UPSERT, row)
                if blob is not None:
                    conn.execute("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?)",
                                 (record.run_id, split, blob.tobytes()))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        self._retry(write)

    def get(self, run_id: str) -> RunRecord | None:
        conn = self._connection()
        rows = self._retry(lambda: conn.execute(f"{_SELECT} WHERE run_id = ?", (run_id,)).fetchall())
        return _from_row(rows[0]) if rows else None

    def runs(
        self,
        *,
        dataset: str | None = None,
        arch: str | None = None,
        status: str | None = None,
    ) -> list[RunRecord]:
        """All runs matching every filter given, ordered by run_id."""
        filters = {"dataset": dataset, "arch": arch, "status": status}
        clauses = [(f"{name} = ?", value) for name, value in filters.items() if value is not None]
        sql = _SELECT
        if clauses:
            sql += " WHERE " + " AND ".join(clause for clause, _ in clauses)
        sql += " ORDER BY run_id"
        params = tuple(value for _, value in clauses)
        conn = self._connection()
        rows = self._retry(lambda: conn.execute(sql, params).fetchall())
        return [_from_row(row) for row in rows]

    def predictions(self, run_ids: list[str]) -> dict[str, tuple[str, list[int]]]:
        """run_id -> (split, predicted classes) for the runs among `run_ids` that stored them."""
        conn = self._connection()
        found = {}
        for start in range(0, len(run_ids), 500):  # SQLite limits bound parameters
            chunk = run_ids[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            rows = self._retry(lambda: conn.execute(
                f"SELECT run_id, split, classes FROM predictions WHERE run_id IN ({marks})",
                chunk).fetchall())
            for run_id, split, blob in rows:
                classes = array.array("I")
                classes.frombytes(blob)
                if sys.byteorder != "little":
                    classes.byteswap()
                found[run_id] = (split, classes.tolist())
        return found

    def close(self) -> None:
        if self._conn is not None:
            if os.getpid() == self._pid:
                self._conn.close()
            else:
                _INHERITED.append(self._conn)
            self._conn = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    # -- internals ---------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError(f"{self!r} is closed")
        if os.getpid() != self._pid:  # forked: the parent's connection must not be used here
            _INHERITED.append(self._conn)
            self._conn = None
            self._pid = os.getpid()
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._unusable(exc) from exc
        try:
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchall())
            self._retry(lambda: self._ensure_schema(conn))
        except BaseException:
            conn.close()
            raise
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        if self._schema_version(conn) == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")  # another process may be creating it right now
        try:
            if self._schema_version(conn) == 0:
                if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise ZooError(f"{self.path} is an SQLite database but not a zoo results database")
                conn.execute(_CREATE_TABLE)
                for column in _INDEXED:
                    conn.execute(f"CREATE INDEX runs_{column} ON runs ({column})")
            if self._schema_version(conn) < 2:  # version 1 databases gain the table, keep runs
                conn.execute(_CREATE_PREDICTIONS)
            if self._schema_version(conn) < 3:  # rows keep NULL stamps until stamped
                have = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
                for column in ("kind", "protocol_name"):
                    if column not in have:
                        conn.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")
                conn.execute(_CREATE_META)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def unstamped(self) -> list[RunRecord]:
        """The runs whose kind is not stamped yet (stored by zoo before schema version 3)."""
        conn = self._connection()
        rows = self._retry(lambda: conn.execute(
            f"{_SELECT} WHERE kind IS NULL ORDER BY run_id").fetchall())
        return [_from_row(row) for row in rows]

    def set_stamps(self, stamps: dict[str, tuple[str, str | None]]) -> None:
        """run_id -> (kind, protocol name), written in one transaction."""
        rows = [(kind, name, run_id) for run_id, (kind, name) in stamps.items()]
        if not rows:
            return
        conn = self._connection()

        def write() -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("UPDATE runs SET kind = ?, protocol_name = ? WHERE run_id = ?",
                                 rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        self._retry(write)

    def set_meta(self, key: str, value: Any) -> None:
        """Store `value` (JSON) under `key`, replacing what was there."""
        text = json.dumps(value, sort_keys=True)
        conn = self._connection()
        self._retry(lambda: conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, text)))

    def meta(self, key: str, default: Any = None) -> Any:
        conn = self._connection()
        rows = self._retry(lambda: conn.execute("SELECT value FROM meta WHERE key = ?",
                                                (key,)).fetchall())
        return json.loads(rows[0][0]) if rows else default

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ZooError(
                f"results database {self.path} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this zoo understands; upgrade zoo"
            )
        return version

    def _unusable(self, exc: sqlite3.Error) -> ZooError:
        detail = " ".join(str(exc).split())
        return ZooError(f"{self.path} is not a usable zoo results database ({detail})")

    def _retry(self, operation: Callable[[], _T]) -> _T:
        """Run `operation`, retrying while the database is locked by another process.

        SQLite's busy timeout covers most waits; this covers the cases where it answers
        SQLITE_BUSY at once (WAL recovery, journal mode change). Other database errors become
        one-line ZooErrors naming the file; misuse (programming errors) propagates as is.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.01
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise self._unusable(exc) from exc
                if time.monotonic() >= deadline:
                    raise ZooError(
                        f"results database {self.path} stayed locked for "
                        f"{BUSY_TIMEOUT_S:.0f} s; is another process stuck holding it?"
                    ) from exc
                time.sleep(delay)
                delay = min(2 * delay, 0.5)
            except sqlite3.DatabaseError as exc:
                if type(exc) is not sqlite3.DatabaseError:  # IntegrityError, ProgrammingError, ...
                    raise
                raise self._unusable(exc) from exc


def results_path(out: str | Path) -> Path:
    """The results database of a runs folder."""
    return Path(out) / "results.sqlite"
