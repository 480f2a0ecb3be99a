"""The results database: round trips, replacement, filters, concurrency and bad files."""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import pickle
import random
import sqlite3
import time
from pathlib import Path

import pytest

from zoo.errors import ZooError
from zoo.runs.ids import protocol_id
from zoo.runs.results import SCHEMA_VERSION, ResultsStore, RunRecord, utc_now

PROTOCOL = {"epochs": 3, "batch_size": 64, "lr": 0.01, "weight_decay": 0.05, "warmup": 1}


def make_run(run_id: str, **overrides) -> RunRecord:
    values = dict(
        run_id=run_id,
        arch="resnet18",
        act="gelu",
        init="default",
        quant="fp32",
        dataset="digits",
        seed=0,
        protocol=PROTOCOL,
        protocol_id=protocol_id(PROTOCOL),
        status="completed",
        metrics={"test_acc": 0.9, "params": 11_000, "train_time_s": 1.5},
        environment={"zoo": "0.1.0", "device": "cpu"},
        config={"arch": "resnet18", "data": {"train": 1257, "test": 360}},
        run_dir=f"runs/{run_id}",
        started_at="2025-01-01T00:00:00+00:00",
        finished_at="2025-01-01T00:01:00+00:00",
    )
    values.update(overrides)
    return RunRecord(**values)


def write_runs(db_path: str, worker: int, count: int) -> None:
    """One concurrent writer (module level so the spawn context can import it)."""
    with ResultsStore(db_path) as store:
        for i in range(count):
            store.upsert(make_run(f"w{worker}-{i:03d}", seed=i))


# -- round trips -------------------------------------------------------------------------------


def test_upsert_then_get_round_trips_every_field(tmp_path):
    record = make_run(
        "run-1",
        seed=7,
        status="diverged",
        metrics={"test_acc": 0.125, "test_loss": float("nan"), "history": [1.0, 2.5]},
        environment={"torch": "2.4.1", "device": "NVIDIA H100 80GB HBM3", "git_commit": "ab12"},
        config={"nested": {"list": [1, "two", None], "flag": True}, "name": "ünïcode ✓"},
        finished_at=None,
    )
    with ResultsStore(tmp_path / "results.db") as store:
        store.upsert(record)
        got = store.get("run-1")
    assert got is not None
    for name in RunRecord.__dataclass_fields__:
        if name != "metrics":
            assert getattr(got, name) == getattr(record, name), name
    assert got.metrics["test_acc"] == 0.125
    assert got.metrics["test_loss"] != got.metrics["test_loss"]  # NaN survives
    assert got.metrics["history"] == [1.0, 2.5]


def test_get_of_an_unknown_run_is_none(tmp_path):
    with ResultsStore(tmp_path / "results.db") as store:
        assert store.get("nope") is None


def test_upsert_replaces_the_row_of_the_same_run(tmp_path):
    with ResultsStore(tmp_path / "results.db") as store:
        store.upsert(make_run("run-1", status="running", metrics={}, finished_at=None))
        store.upsert(make_run("run-1", status="completed", metrics={"test_acc": 0.97}))
        assert len(store.runs()) == 1
        got = store.get("run-1")
    assert got.status == "completed"
    assert got.metrics == {"test_acc": 0.97}


def test_rows_survive_closing_and_reopening(tmp_path):
    path = tmp_path / "results.db"
    with ResultsStore(path) as store:
        store.upsert(make_run("run-1"))
    with ResultsStore(path) as store:
        assert store.get("run-1") == make_run("run-1")


def test_numpy_like_scalars_and_paths_are_stored_as_plain_json(tmp_path):
    class Scalar:  # stands in for numpy.int64 / a 0-d torch tensor
        def item(self):
            return 42

    record = make_run("run-1", metrics={"params": Scalar()}, config={"out": tmp_path})
    with ResultsStore(tmp_path / "results.db") as store:
        store.upsert(record)
        got = store.get("run-1")
    assert got.metrics == {"params": 42}
    assert got.config == {"out": str(tmp_path)}


def test_an_unserializable_field_is_named_in_the_error(tmp_path):
    with ResultsStore(tmp_path / "results.db") as store:
        with pytest.raises(TypeError, match="metrics"):
            store.upsert(make_run("run-1", metrics={"bad": object()}))
        assert store.runs() == []


# -- queries -----------------------------------------------------------------------------------


def test_runs_are_filtered_and_ordered_by_run_id(tmp_path):
    records = [
        make_run("c", dataset="digits", arch="vit", status="completed"),
        make_run("a", dataset="digits", arch="resnet18", status="failed"),
        make_run("d", dataset="fashion", arch="resnet18", status="completed"),
        make_run("b", dataset="digits", arch="resnet18", status="completed"),
    ]
    random.Random(0).shuffle(records)
    with ResultsStore(tmp_path / "results.db") as store:
        for record in records:
            store.upsert(record)
        ids = lambda **kw: [r.run_id for r in store.runs(**kw)]  # noqa: E731
        assert ids() == ["a", "b", "c", "d"]
        assert ids(dataset="digits") == ["a", "b", "c"]
        assert ids(arch="resnet18") == ["a", "b", "d"]
        assert ids(status="completed") == ["b", "c", "d"]
        assert ids(dataset="digits", arch="resnet18", status="completed") == ["b"]
        assert ids(dataset="cifar10") == []


# -- protocol ids ------------------------------------------------------------------------------


def test_protocol_id_is_the_sha256_of_canonical_json():
    expected = hashlib.sha256(b'{"batch_size":64,"lr":0.01}').hexdigest()[:10]
    assert protocol_id({"lr": 0.01, "batch_size": 64}) == expected
    assert protocol_id({"batch_size": 64, "lr": 0.01}) == expected
    assert protocol_id({"batch_size": 64, "lr": 0.02}) != expected
    assert len(expected) == 10


# -- validation and the file itself ------------------------------------------------------------


def test_an_unknown_status_is_rejected():
    with pytest.raises(ValueError, match="status"):
        make_run("run-1", status="done")


def test_the_database_is_created_with_its_folders_in_wal_mode(tmp_path):
    path = tmp_path / "deep" / "er" / "results.db"
    ResultsStore(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    finally:
        conn.close()
    for column in ("arch", "act", "init", "quant", "dataset", "seed", "status", "protocol_id"):
        assert f"runs_{column}" in indexes


def test_not_a_database_is_a_one_line_error(tmp_path):
    path = tmp_path / "results.db"
    path.write_text("this is a text file, not SQLite\n" * 100)
    with pytest.raises(ZooError) as info:
        ResultsStore(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message


def test_a_newer_schema_is_a_one_line_error(tmp_path):
    path = tmp_path / "results.db"
    ResultsStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(ZooError, match="schema version") as info:
        ResultsStore(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_another_programs_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(ZooError, match="not a zoo results database"):
        ResultsStore(path)


def open_files_under(folder) -> list[str]:
    """The files of `folder` this process has open now (Linux: /proc/self/fd)."""
    fds = Path("/proc/self/fd")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:  # the descriptor listing the folder itself, closed meanwhile
            continue
    return [t for t in targets if t.startswith(str(folder))]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc")
def test_a_store_holds_the_database_open_only_during_an_operation(tmp_path):
    # A run holds its store for an hour: between writes, no handle, no lock, nothing to leak
    # across fork() or to keep a half-written transaction alive.
    store = ResultsStore(tmp_path / "results.db")
    store.upsert(make_run("run-1"))
    assert [r.run_id for r in store.runs()] == ["run-1"]
    assert open_files_under(tmp_path) == []


def test_non_finite_metrics_are_json_null_in_the_database_and_floats_when_read(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    run = make_run("run-nan")
    run.metrics = {"test_loss": float("nan"), "curve": [1.0, float("inf")], "acc": 0.5}
    store.upsert(run)
    conn = sqlite3.connect(tmp_path / "results.db")
    stored = conn.execute("SELECT json_extract(metrics, '$.test_loss'), "
                          "json_extract(metrics, '$.curve[1]'), json_extract(metrics, '$.acc') "
                          "FROM runs").fetchone()
    conn.close()
    assert stored == (None, None, 0.5)  # SQLite's JSON functions read the row
    back = store.get("run-nan").metrics
    assert math.isnan(back["test_loss"]) and back["curve"] == [1.0, float("inf")]
    assert back["acc"] == 0.5 and set(back) == {"test_loss", "curve", "acc"}


def test_a_damaged_json_column_is_a_one_line_error_naming_the_run(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    store.upsert(make_run("run-1"))
    conn = sqlite3.connect(tmp_path / "results.db")
    conn.execute("UPDATE runs SET metrics = 'not json {' WHERE run_id = 'run-1'")
    conn.commit()
    conn.close()
    with pytest.raises(ZooError, match="run 'run-1' is damaged") as info:
        store.runs()
    assert "\n" not in str(info.value)


def test_rows_with_nan_literals_from_older_zoo_are_rewritten_on_upgrade(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    store.upsert(make_run("old"))
    conn = sqlite3.connect(tmp_path / "results.db")
    conn.execute("""UPDATE runs SET metrics = '{"test_loss": NaN}' """)
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    assert math.isnan(ResultsStore(tmp_path / "results.db").get("old").metrics["test_loss"])
    conn = sqlite3.connect(tmp_path / "results.db")
    assert conn.execute("SELECT json_valid(metrics) FROM runs").fetchone() == (1,)
    conn.close()


def test_a_pickled_store_reopens_its_path(tmp_path):
    with ResultsStore(tmp_path / "results.db") as store:
        store.upsert(make_run("run-1"))
        copy = pickle.loads(pickle.dumps(store))
    with copy:
        assert copy.path == tmp_path / "results.db"
        assert [r.run_id for r in copy.runs()] == ["run-1"]


# -- concurrency -------------------------------------------------------------------------------


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "results.db")
    ctx = multiprocessing.get_context("spawn")
    start = time.monotonic()
    workers = [ctx.Process(target=write_runs, args=(path, w, 50)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    with ResultsStore(path) as store:
        runs = store.runs()
    assert len(runs) == 200
    assert len({r.run_id for r in runs}) == 200
    assert time.monotonic() - start < 15


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="no fork on this platform"
)
def test_a_store_inherited_through_fork_writes_through_its_own_connection(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    store.upsert(make_run("parent-0"))
    child = multiprocessing.get_context("fork").Process(
        target=lambda: store.upsert(make_run("child-0"))
    )
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    store.upsert(make_run("parent-1"))
    assert [r.run_id for r in store.runs()] == ["child-0", "parent-0", "parent-1"]
    store.close()


def test_started_at_helper_is_iso_8601_utc():
    stamp = utc_now()
    assert stamp.endswith("+00:00")
    assert "T" in stamp


# -- predictions (for churn) ----------------------------------------------------------------


def test_predictions_are_stored_with_their_run_in_one_write(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        store.upsert(make_run("a"), predictions=[3, 1, 4, 1, 5, 9, 70000], split="test")
        store.upsert(make_run("b"))  # a run without predictions
        found = store.predictions(["a", "b", "missing"])
    assert found == {"a": ("test", [3, 1, 4, 1, 5, 9, 70000])}


def test_a_version_1_database_gains_the_predictions_table_and_keeps_its_runs(tmp_path):
    path = tmp_path / "old.db"
    ResultsStore(path).close()
    conn = sqlite3.connect(path)  # make it look like a database written by schema version 1
    conn.execute("DROP TABLE predictions")
    conn.execute("INSERT INTO runs (run_id, arch, act, init, quant, dataset, seed, protocol, "
                 "protocol_id, status, metrics, environment, config, run_dir, started_at) VALUES "
                 "('old', 'vit', 'gelu', 'default', 'none', 'digits', 0, '{}', 'x', 'completed', "
                 "'{}', '{}', '{}', 'runs/old', '2025-01-01')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with ResultsStore(path) as store:
        assert store.get("old").act == "gelu"
        store.upsert(make_run("new"), predictions=[1, 2])
        assert store.predictions(["new"]) == {"new": ("test", [1, 2])}
