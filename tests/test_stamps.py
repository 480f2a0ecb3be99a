"""A run's kind and protocol name are stamped on its row once: by the writer of a new run, and
for rows an older zoo stored (schema version 2), when boards are next rendered. Boards read the
stamps, so a recipe changed later cannot rename the protocol of a run already stored."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from zoo.registry.kinds import CLASSIFY, GENERATE, LANGUAGE, run_kind
from zoo.runs.config import TrainConfig
from zoo.runs.ids import protocol_id
from zoo.runs.protocols import PROTOCOLS
from zoo.runs.results import SCHEMA_VERSION, ResultsStore, RunRecord
from zoo.runs.stamps import stamp_stored, stamped


def record(run_id: str, arch: str, dataset: str, protocol: dict, metrics=None) -> RunRecord:
    return RunRecord(run_id=run_id, arch=arch, act="gelu", init="default", quant="none",
                     dataset=dataset, seed=0, protocol=protocol,
                     protocol_id=protocol_id(protocol), status="completed",
                     metrics=metrics or {"test_acc": 0.9}, environment={}, config={},
                     run_dir=f"runs/{run_id}", started_at="2026-01-01T00:00:00+00:00")


def quick(arch: str, dataset: str) -> dict:
    return TrainConfig.for_arch(arch, **PROTOCOLS["quick"].overrides(arch, dataset)).protocol()


def test_the_kind_of_a_run_comes_from_its_arch_and_data_set_tags():
    assert run_kind("vit", "digits") == CLASSIFY
    assert run_kind("gpt2", "shakespeare") == LANGUAGE
    assert run_kind("var", "digits") == GENERATE
    assert TrainConfig.for_arch("gpt2", dataset="shakespeare").kind() == LANGUAGE


def test_a_new_record_is_stamped_with_its_kind_and_named_protocol():
    run = stamped(record("a", "vit", "fashion-mnist", quick("vit", "fashion-mnist")))
    assert (run.kind, run.protocol_name) == (CLASSIFY, "quick")
    custom = stamped(record("b", "vit", "digits", {"lr": 0.123}))
    assert (custom.kind, custom.protocol_name) == (CLASSIFY, None)
    assert stamped(custom) is custom  # stamped once


def test_an_unregistered_arch_is_stamped_from_what_it_measured():
    # a plugin's arch that is not loaded now: its kind still follows its metrics
    run = stamped(record("c", "plugin_lm", "plugin_corpus", {"x": 1}, {"val_bpb": 1.2}))
    assert (run.kind, run.protocol_name) == (LANGUAGE, None)


def test_a_version_2_database_is_migrated_then_stamped_once(tmp_path):
    path = tmp_path / "old.db"
    ResultsStore(path).close()
    conn = sqlite3.connect(path)  # make it look like a database written by schema version 2
    conn.execute("DROP TABLE meta")
    conn.execute("CREATE TABLE runs_v2 AS SELECT run_id, arch, act, init, quant, dataset, seed, "
                 "protocol, protocol_id, status, metrics, environment, config, run_dir, "
                 "started_at, finished_at FROM runs")
    conn.execute("DROP TABLE runs")
    conn.execute("ALTER TABLE runs_v2 RENAME TO runs")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with ResultsStore(path) as store:
        store.upsert(record("lm", "gpt2", "shakespeare", quick("gpt2", "shakespeare")))
        store.upsert(record("img", "resnet", "fashion-mnist", quick("resnet", "fashion-mnist")))
        assert [run.run_id for run in store.unstamped()] == ["img", "lm"]
        assert stamp_stored(store) == 2
        assert stamp_stored(store) == 0
        assert (store.get("lm").kind, store.get("lm").protocol_name) == (LANGUAGE, "quick")
        assert (store.get("img").kind, store.get("img").protocol_name) == (CLASSIFY, "quick")
        store.set_meta("standard_acts", ["gelu", "relu"])
        assert store.meta("standard_acts") == ["gelu", "relu"]
        assert store.meta("absent", default=3) == 3
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    conn.close()


def test_a_stamp_outlives_a_changed_recipe(tmp_path, monkeypatch):
    # the stored name is what boards show: changing quick's budget later renames nothing
    run = stamped(record("d", "vit", "fashion-mnist", quick("vit", "fashion-mnist")))
    with ResultsStore(tmp_path / "r.db") as store:
        store.upsert(run)
        monkeypatch.setitem(PROTOCOLS, "quick", replace(PROTOCOLS["quick"], budgets={}))
        assert stamp_stored(store) == 0
        assert store.get("d").protocol_name == "quick"


def test_runs_of_a_budget_retired_since_take_the_retired_name(tmp_path, monkeypatch):
    # quick's vit budget on Fashion-MNIST changed (6 -> 10 epochs) and the 6-epoch budget was
    # registered as the retired `quick-v2`: the runs stamped `quick` under 6 epochs are renamed
    old = TrainConfig.for_arch("vit", dataset="fashion-mnist", epochs=6).protocol()
    with ResultsStore(tmp_path / "r.db") as store:
        store.upsert(replace(stamped(record("old", "vit", "fashion-mnist", old)),
                             protocol_name="quick"))
        store.upsert(stamped(record("new", "vit", "fashion-mnist", quick("vit", "fashion-mnist"))))
        assert stamp_stored(store) == 1
        assert store.get("old").protocol_name == "quick-v2"
        assert store.get("new").protocol_name == "quick"
        assert stamp_stored(store) == 0
        # without a retired protocol naming the old budget, the stored name stays
        store.upsert(replace(store.get("old"), protocol_name="quick"))
        monkeypatch.delitem(PROTOCOLS, "quick-v2")
        assert stamp_stored(store) == 0
        assert store.get("old").protocol_name == "quick"
