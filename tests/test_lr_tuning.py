"""A learning rate per variant: `zoo sweep --tune-lr` trains the first seed at each multiple of
the protocol's lr, picks by validation score, trains the other seeds at the pick, and the
boards show the pick and its candidates."""

from __future__ import annotations

import pytest

from zoo.boards.classification import leaderboard_markdown
from zoo.cli import main
from zoo.errors import ZooError
from zoo.runs.config import TrainConfig
from zoo.runs.ids import protocol_id
from zoo.runs.lr_tuning import parse_scales, pick
from zoo.runs.results import ResultsStore
from zoo.train.trainer import make_optimizer


def test_multiples_parse_sorted_and_bad_lists_are_one_line_errors():
    assert parse_scales("2, 0.5,1") == [0.5, 1.0, 2.0]
    for bad, message in (("1", "at least two"), ("1,1", "at least two"), ("0,1", "positive"),
                         ("nan,1", "positive"), ("a,b", "multiples of the recipe's lr")):
        with pytest.raises(ZooError, match=message):
            parse_scales(bad)


def test_the_best_validation_score_picks_and_ties_go_to_the_multiple_nearest_one():
    assert pick({0.5: 0.91, 1.0: 0.90, 2.0: 0.85}) == 0.5
    assert pick({0.5: 0.90, 1.0: 0.90, 2.0: 0.90}) == 1.0
    assert pick({0.5: 0.90, 2.0: 0.90}) == 0.5
    assert pick({0.5: None, 2.0: 0.2}) == 2.0  # a diverged candidate is never picked
    assert pick({0.5: None}) is None and pick({}) is None


def test_a_tuned_run_is_its_own_run_but_stays_in_its_protocols_comparison():
    plain = TrainConfig.for_arch("vit", act="gelu")
    tuned = TrainConfig.for_arch("vit", act="gelu", lr_scale=0.5)
    assert "lr_scale" not in plain.to_dict() and tuned.to_dict()["lr_scale"] == 0.5
    assert tuned.run_id() != plain.run_id()
    assert protocol_id(tuned.protocol()) == protocol_id(plain.protocol())
    from torch import nn

    optimizer = make_optimizer(nn.Linear(2, 2), tuned)
    assert {group["lr"] for group in optimizer.param_groups} == {plain.lr * 0.5}
    with pytest.raises(ZooError, match="--lr-scale must be positive"):
        TrainConfig.for_arch("vit", lr_scale=0)


def test_a_tuning_sweep_trains_the_first_seed_at_each_multiple_then_the_rest_at_the_pick(
        tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["sweep", "--protocol", "smoke", "--archs", "vit", "--datasets", "digits",
            "--acts", "gelu", "--seeds", "0,1", "--tune-lr", "0.5,4", "--workers", "1",
            "--threads", "1", "--out", str(out)]
    assert main(args) == 0
    log = capsys.readouterr().err
    assert "lr pick for vit·gelu·default: x" in log
    with ResultsStore(out / "results.sqlite") as store:
        runs = store.runs()
    first = {(run.config["config"].get("lr_scale", 1.0)): run for run in runs if run.seed == 0}
    assert sorted(first) == [0.5, 4.0]
    best = max(first, key=lambda s: first[s].metrics["val_acc"])
    (second,) = [run for run in runs if run.seed == 1]
    assert second.config["config"]["lr_scale"] == best
    assert len({run.protocol_id for run in runs}) == 1  # one comparison

    board = leaderboard_markdown("digits", "vit", runs)
    assert f"gelu · lr x{best:g} (lr tuned x{best:g})" in board
    other = 4.0 if best == 0.5 else 0.5
    assert f"| gelu · lr x{other:g} " not in board  # the candidate not picked is no row
    assert "Learning rates tuned" in board and f"pick x{best:g}" in board
    assert f"x{other:g} " in board.split("Learning rates tuned")[1]

    assert main(args) == 0  # idempotent: everything is stored now
    assert "nothing to train" in capsys.readouterr().err
