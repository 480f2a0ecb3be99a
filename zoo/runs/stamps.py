"""What the readers of results need to know about a run that its config does not say outright:
its kind (classify, language, generate) and the name of its protocol (`quick`, `full`...; none
for a protocol of one's own). The writer of a new run stamps both on its record, and rows that
an older zoo stored are stamped once, when boards are next rendered; from then on boards read
them instead of re-deriving them from today's registries, so a recipe changed later, or a
plugin not loaded, cannot change what an old run was. The one rename is explicit: when a
protocol's budget changes and the old budget is registered as a retired protocol, the runs of
the old budget take the retired name (and leave the boards)."""

from __future__ import annotations

from dataclasses import replace

from zoo.errors import ZooError
from zoo.registry.kinds import CLASSIFY, GENERATE, LANGUAGE, run_kind
from zoo.runs.protocols import PROTOCOLS, protocol_name_for
from zoo.runs.results import ResultsStore, RunRecord


def kind_of(record: RunRecord) -> str:
    """From the registries; for an arch or data set not registered here (a plugin's, not
    loaded), from what the run stored: a generator pins its tokenizer (`dependencies`) and
    measures FID, a language model has a block size and measures bits per byte."""
    try:
        return run_kind(record.arch, record.dataset)
    except ZooError:
        config = record.config or {}
        if "dependencies" in config or "gen_protocol" in record.metrics:
            return GENERATE
        if (config.get("config") or {}).get("block_size") is not None or any(
                key.endswith("_bpb") for key in record.metrics):
            return LANGUAGE
        return CLASSIFY


def stamp(record: RunRecord) -> tuple[str, str | None]:
    """(kind, protocol name) of a run, as stored with it."""
    return kind_of(record), protocol_name_for(record.protocol_id, record.arch, record.dataset)


def stamped(record: RunRecord) -> RunRecord:
    """`record` with its stamps (a copy; as it is if it has them)."""
    if record.kind is not None:
        return record
    kind, name = stamp(record)
    return replace(record, kind=kind, protocol_name=name)


def stamp_stored(store: ResultsStore) -> int:
    """Stamp the store's runs that have no stamps yet, and give the runs of a retired budget
    its name (`retired_stamps`); returns how many rows changed."""
    runs = store.unstamped()
    store.set_stamps({run.run_id: stamp(run) for run in runs})
    retired = retired_stamps(store.runs())
    store.set_stamps(retired)
    return len(runs) + len(retired)


def retired_stamps(runs: list[RunRecord]) -> dict[str, tuple[str, str]]:
    """run_id -> (kind, retired name) for the runs stamped with a current protocol whose budget
    for their (arch, data set) has since changed, where a retired protocol names the old one."""
    names: dict[tuple[str, str, str], str | None] = {}
    renamed = {}
    for run in runs:
        current = PROTOCOLS.get(run.protocol_name or "")
        if current is None or current.retired or run.kind is None:
            continue
        key = (run.protocol_id, run.arch, run.dataset)
        if key not in names:
            names[key] = protocol_name_for(*key)
        name = names[key]
        if name is not None and PROTOCOLS[name].retired:
            renamed[run.run_id] = (run.kind, name)
    return renamed
