"""Paths built from stored data stay inside their folder: `zoo leaderboard` names plots and
sample grids after database fields (protocol id, run id, arch) and copies grids from each run's
`run_dir`, so a crafted database must not make it write, or copy a file, anywhere else."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from zoo.boards.render import render_leaderboards
from zoo.cli import main
from zoo.errors import ZooError
from zoo.runs.files import inside, path_part, within
from zoo.runs.ids import protocol_id
from zoo.runs.results import ResultsStore, RunRecord

PROTOCOL = {"epochs": 3, "lr": 0.01}
PID = protocol_id(PROTOCOL)


def run(run_id, *, arch="resnet18", pid=PID, run_dir=None, **metrics):
    """A completed run of digits: a classifier, or with arch="var" an image generator."""
    return RunRecord(
        run_id=run_id, arch=arch, act="gelu", init="default", quant="none", dataset="digits",
        seed=0, protocol=PROTOCOL, protocol_id=pid, status="completed",
        metrics={"test_acc": 0.9, "fid": 10.0, **metrics}, environment={}, config={},
        run_dir=str(run_dir or f"runs/{run_id}"), started_at="2025-01-01T00:00:00+00:00",
        finished_at="2025-01-01T00:10:00+00:00")


@pytest.fixture
def site(tmp_path):
    """(the results folder, the leaderboard folder two levels down, every file outside the
    leaderboard folder and the database now): '../..' from a board lands in tmp_path."""
    results = tmp_path / "results"
    results.mkdir()
    to = tmp_path / "site" / "boards"
    to.mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "samples.png").write_bytes(b"\x89PNG not for publishing")
    return results, to


def files_outside(tmp_path: Path, to: Path, results: Path) -> dict[str, bytes]:
    """Every file under tmp_path but outside the leaderboard folder and the results folder."""
    found = {}
    for folder, _, names in os.walk(tmp_path):
        for name in names:
            path = Path(folder) / name
            if not (path.is_relative_to(to) or path.is_relative_to(results)):
                found[path.relative_to(tmp_path).as_posix()] = path.read_bytes()
    return found


def render(results: Path, to: Path, runs: list[RunRecord]) -> list[Path]:
    with ResultsStore(results / "results.sqlite") as store:
        for record in runs:
            store.upsert(record)
        return render_leaderboards(store, to)


CRAFTED = {
    "a run id that climbs out": [run("../../x", arch="var")],
    "a protocol id that climbs out": [run("a", pid="../../evil")],
    "a protocol id with a folder in it": [run("a", pid="sub/evil")],
    # a generator's arch names its plot; the stored kind says it is a generator
    "an arch that climbs out": [replace(run("a", arch="../../x"), kind="generate")],
    "an absolute protocol id": [run("a", pid="/tmp/evil")],
}


@pytest.mark.parametrize("runs", CRAFTED.values(), ids=CRAFTED.keys())
def test_a_crafted_database_is_refused_before_anything_is_written(site, tmp_path, runs):
    results, to = site
    before = files_outside(tmp_path, to, results)
    with pytest.raises(ZooError) as refused:
        render(results, to, runs)
    message = str(refused.value)
    assert "\n" not in message and "cannot be part of a file name" in message
    assert "the results database's" in message
    assert files_outside(tmp_path, to, results) == before  # nothing written outside --to
    assert list(to.iterdir()) == []  # nor half a set of boards inside it


def test_zoo_leaderboard_refuses_a_crafted_database_in_one_line(site, tmp_path, capsys):
    results, to = site
    with ResultsStore(results / "results.sqlite") as store:
        store.upsert(run("../../x", arch="var"))
    before = files_outside(tmp_path, to, results)
    code = main(["leaderboard", "--out", str(results), "--to", str(to)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'../../x' cannot be part of a file name" in err[0]
    assert "Traceback" not in err[0]
    assert files_outside(tmp_path, to, results) == before and list(to.iterdir()) == []


def test_a_grid_is_not_copied_from_a_run_folder_outside_the_results_folder(site, tmp_path):
    results, to = site
    outside = run("var-0", arch="var", run_dir=tmp_path / "secret")
    with pytest.warns(UserWarning, match=r"1 sample grid\(s\) not copied: the database puts"):
        paths = render(results, to, [outside])
    assert to / "var-digits.md" in paths  # the board itself is rendered
    assert not (to / "var-digits" / "var-0.png").exists()
    assert all(b"not for publishing" not in p.read_bytes() for p in to.rglob("*") if p.is_file())


def test_a_grid_from_a_run_folder_beside_the_database_is_copied(site):
    results, to = site
    (results / "var-0").mkdir()
    (results / "var-0" / "samples.png").write_bytes(b"\x89PNG grid")
    render(results, to, [run("var-0", arch="var", run_dir=results / "var-0")])
    assert (to / "var-digits" / "var-0.png").read_bytes() == b"\x89PNG grid"


def test_a_symbolic_link_in_the_leaderboard_folder_cannot_lead_a_write_outside(site, tmp_path):
    results, to = site
    (tmp_path / "elsewhere").mkdir()
    (to / "digits-resnet18").symlink_to(tmp_path / "elsewhere")  # where the plot would go
    with pytest.raises(ZooError, match="leads outside .* through a symbolic link"):
        render(results, to, [run("a")])
    assert list((tmp_path / "elsewhere").iterdir()) == []


# -- the helpers, for every path zoo builds from stored data or names -------------------------


@pytest.mark.parametrize("bad", ["..", ".", "", "a/b", "/etc", "a b", "x\n", "é", "a\\b"])
def test_a_path_part_is_one_safe_component(bad):
    with pytest.raises(ZooError, match="cannot be part of a file name") as refused:
        path_part(bad, "run id")
    assert "\n" not in str(refused.value)


def test_safe_components_pass_unchanged():
    for good in ("digits-vit-gelu-default-none-s0-1a2b3c4d+int8-wo", "4cb6b53a13", "a.b_c"):
        assert path_part(good, "run id") == good


def test_inside_joins_safe_relative_parts_and_refuses_the_rest(tmp_path):
    assert inside(tmp_path, "a/b.png", "c") == tmp_path / "a" / "b.png" / "c"
    for escape in ("../x", "a/../../x", "/etc/passwd", "a//b"):
        with pytest.raises(ZooError):
            inside(tmp_path, escape)
    assert within(tmp_path, tmp_path / "a") and not within(tmp_path / "a", tmp_path)


def test_the_run_ids_zoo_makes_are_safe_path_parts():
    from zoo.evaluate.ptq import ptq_run_id
    from zoo.runs.config import TrainConfig

    run_id = TrainConfig.for_arch("vit", act="gelu", seed=3).run_id()
    for made in (run_id, ptq_run_id(run_id, "int4-g32", {"skip": "first"})):
        assert path_part(made, "run id") == made
