"""The results database: one SQLite row per run, written safely by many processes at once.

Stdlib `sqlite3` in WAL mode: readers never block the writer, and every write is one short
`BEGIN IMMEDIATE` transaction, so concurrent writers queue on SQLite's lock (busy timeout 60 s)
instead of failing. The schema version lives in `PRAGMA user_version`.

A connection lives for one operation only: a store held through an hour-long run keeps no file
handle or lock between its writes, is safe across `fork()`, and pickles as its path (spawn-based
pools, Ray).

JSON columns stay valid JSON for SQLite's own functions (`json_extract`): a NaN or infinite
metric is stored as null, and the column's `NONFINITE_KEY` lists where and what it was, so that
reading the row back gives the float again.
"""

from __future__ import annotations

import array
import contextlib
import json
import math
import sqlite3
import sys
import time
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any, Callable, Iterator, TypeVar

from zoo.errors import ZooError

# 2 added the predictions table; 3 each run's kind and protocol name, and meta; 4 stores
# non-finite numbers as null (NONFINITE_KEY), so SQLite's JSON functions read every row
SCHEMA_VERSION = 4
STATUSES = ("running", "completed", "diverged", "failed")
BUSY_TIMEOUT_S = 60.0

_T = TypeVar("_T")
_JSON_FIELDS = frozenset({"protocol", "metrics", "environment", "config"})
_INDEXED = ("arch", "act", "init", "quant", "dataset", "seed", "status", "protocol_id")
# In a JSON column: [[path, "nan" | "inf" | "-inf"], ...] for the values stored as null.
NONFINITE_KEY = "__nonfinite__"


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


def without_nonfinite(value: Any, path: tuple = (), found: list | None = None) -> Any:
    """`value` with every NaN or infinite float replaced by None; their paths and values are
    appended to `found`."""
    if isinstance(value, float) and not math.isfinite(value):
        if found is not None:
            found.append([list(path), repr(value)])
        return None
    if isinstance(value, dict):
        return {k: without_nonfinite(v, (*path, k), found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nonfinite(v, (*path, i), found) for i, v in enumerate(value)]
    return value


def _encode_json(value: Any) -> str:
    value = json.loads(json.dumps(value, default=_json_default))  # tensors, paths -> plain JSON
    found: list = []
    clean = without_nonfinite(value, found=found)
    if found:
        if not isinstance(clean, dict):
            raise TypeError("a non-finite value outside a JSON object")
        clean[NONFINITE_KEY] = found
    return json.dumps(clean, sort_keys=True, allow_nan=False)


def _decode_json(text: str) -> Any:
    value = json.loads(text)
    if isinstance(value, dict) and NONFINITE_KEY in value:
        for path, number in value.pop(NONFINITE_KEY):
            *parents, last = path
            holder = value
            for key in parents:
                holder = holder[key]
            holder[last] = float(number)
    return value


def _to_row(record: RunRecord) -> tuple[Any, ...]:
    row = []
    for name in _COLUMNS:
        value = getattr(record, name)
        if name in _JSON_FIELDS:
            try:
                value = _encode_json(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"run {record.run_id}: field {name!r}: {exc}") from exc
        row.append(value)
    return tuple(row)


def _from_row(row: tuple[Any, ...], path: Path) -> RunRecord:
    values = dict(zip(_COLUMNS, row))
    try:
        for name in _JSON_FIELDS:
            values[name] = _decode_json(values[name])
        return RunRecord(**values)
    except (ValueError, TypeError, KeyError, IndexError) as exc:  # a damaged or edited row
        raise ZooError(f"results database {path}: the row of run {values.get('run_id')!r} is "
                       f"damaged ({' '.join(str(exc).split())[:200]}); restore the database "
                       "from a backup or delete that row") from None


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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ZooError(f"cannot create the folder of results database {self.path}: {exc}") from exc
        with self._connect():  # creates or migrates the schema, or fails here, at once
            pass

    # -- public API --------------------------------------------------------------------------

    def upsert(self, record: RunRecord, predictions: list[int] | None = None,
               split: str = "test") -> None:
        """Insert `record`, or replace the row with the same run_id; with `predictions` (the
        predicted class of every example of `split`), store them in the same transaction."""
        row = _to_row(record)  # serialize before taking the write lock
        blob = None if predictions is None else array.array("I", predictions)
        if blob is not None and sys.byteorder != "little":
            blob.byteswap()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(_UPSERT, row)
            if blob is not None:
                conn.execute("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?)",
                             (record.run_id, split, blob.tobytes()))

        self._write(write)

    def get(self, run_id: str) -> RunRecord | None:
        rows = self._read(lambda conn: conn.execute(f"{_SELECT} WHERE run_id = ?",
                                                    (run_id,)).fetchall())
        return _from_row(rows[0], self.path) if rows else None

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
        rows = self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [_from_row(row, self.path) for row in rows]

    def predictions(self, run_ids: list[str]) -> dict[str, tuple[str, list[int]]]:
        """run_id -> (split, predicted classes) for the runs among `run_ids` that stored them."""
        found = {}
        for start in range(0, len(run_ids), 500):  # SQLite limits bound parameters
            chunk = run_ids[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            rows = self._read(lambda conn: conn.execute(
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
        """Nothing to release: connections live for one operation. Kept for `with` blocks."""

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = Path(state["path"])

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    # -- internals ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection for one operation, closed after it."""
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._unusable(exc) from exc
        try:
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchall())
            self._retry(lambda: self._ensure_schema(conn))
            yield conn
        finally:
            conn.close()

    def _read(self, query: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._connect() as conn:
            return self._retry(lambda: query(conn))

    def _write(self, change: Callable[[sqlite3.Connection], None]) -> None:
        """`change` in one `BEGIN IMMEDIATE` transaction: all of it is stored, or none."""
        with self._connect() as conn:

            def transaction() -> None:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    change(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise

            self._retry(transaction)

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
            if self._schema_version(conn) < 4:
                reencode_nonfinite(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def unstamped(self) -> list[RunRecord]:
        """The runs whose kind is not stamped yet (stored by zoo before schema version 3)."""
        rows = self._read(lambda conn: conn.execute(
            f"{_SELECT} WHERE kind IS NULL ORDER BY run_id").fetchall())
        return [_from_row(row, self.path) for row in rows]

    def set_stamps(self, stamps: dict[str, tuple[str, str | None]]) -> None:
        """run_id -> (kind, protocol name), written in one transaction."""
        rows = [(kind, name, run_id) for run_id, (kind, name) in stamps.items()]
        if not rows:
            return
        self._write(lambda conn: conn.executemany(
            "UPDATE runs SET kind = ?, protocol_name = ? WHERE run_id = ?", rows))

    def set_meta(self, key: str, value: Any) -> None:
        """Store `value` (JSON) under `key`, replacing what was there."""
        text = json.dumps(value, sort_keys=True)
        self._write(lambda conn: conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                              (key, text)))

    def meta(self, key: str, default: Any = None) -> Any:
        rows = self._read(lambda conn: conn.execute("SELECT value FROM meta WHERE key = ?",
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


def reencode_nonfinite(conn: sqlite3.Connection) -> None:
    """Rows written before schema 4 hold NaN / Infinity literals, which are not JSON to SQLite:
    rewrite their JSON columns in the current encoding (values unchanged when read back)."""
    json_columns = sorted(_JSON_FIELDS)
    suspects = " OR ".join(f"{c} LIKE '%NaN%' OR {c} LIKE '%Infinity%'" for c in json_columns)
    rows = conn.execute(f"SELECT run_id, {', '.join(json_columns)} FROM runs WHERE {suspects}")
    for run_id, *texts in rows.fetchall():
        try:
            values = [_encode_json(json.loads(text)) for text in texts]
        except (TypeError, ValueError):  # a damaged row stays as it is: reading it says so
            continue
        assignments = ", ".join(f"{c} = ?" for c in json_columns)
        conn.execute(f"UPDATE runs SET {assignments} WHERE run_id = ?", (*values, run_id))


def results_path(out: str | Path) -> Path:
    """The results database of a runs folder."""
    return Path(out) / "results.sqlite"
