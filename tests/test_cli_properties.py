"""Property: whatever bad value any option of any command gets, `zoo` answers with one line, a
non-zero exit and no traceback, and the results database is left exactly as it was. The
options and what they accept come from the parser itself, so a new flag is covered at once."""

from __future__ import annotations

import argparse
import hashlib
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from zoo.cli import main
from zoo.cli.parser import build_parser
from zoo.registry import ARCHS
from zoo.registry.core import REGISTRIES
from zoo.runs.results import ResultsStore, RunRecord, utc_now

# Words that break numbers, counts and seeds in every way we know, and whatever else hypothesis
# makes up.
TRICKY = ["nan", "NaN", "inf", "-inf", "1e400", "-1", "0", "-0.5", "0.5", "1.5", "2", "abc", "",
          " ", "99999999999999999999999", "-99999999999999999999999", "0x10", "1e-400", "½",
          "--", "1,2", "None"]
bad_words = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12))
PLACEHOLDERS = {"arch": "vit", "name": "golu", "run": "some-run", "runs": "some-run"}


def typed_options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, option action) for every option with a type or choices, in every
    (sub)command."""
    found = []
    for action in parser._actions:  # argparse has no public way to list them
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += typed_options(sub, (*path, name))
        elif action.option_strings and (callable(action.type) and action.type is not Path
                                        or action.choices):
            found.append((path, parser, action))
    return found


OPTIONS = typed_options(build_parser())


def positionals(parser: argparse.ArgumentParser) -> list[str]:
    return [PLACEHOLDERS.get(a.dest, "x") for a in parser._actions
            if not a.option_strings and a.nargs in (None, "+")
            and not isinstance(a, argparse._SubParsersAction)]


def refused_by_the_parser(action: argparse.Action, value: str) -> bool:
    if action.choices is not None and value not in action.choices:
        return True
    if action.type is None:
        return False
    try:
        action.type(value)
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return True
    return False


@pytest.fixture(scope="module")
def database(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("db") / "runs"
    with ResultsStore(out / "results.sqlite") as store:
        store.upsert(RunRecord(
            run_id="digits-vit-gelu-default-none-s0-00000000", arch="vit", act="gelu",
            init="default", quant="none", dataset="digits", seed=0, protocol={},
            protocol_id="p", status="completed", metrics={"test_acc": 0.9}, environment={},
            config={}, run_dir=str(out / "x"), started_at=utc_now(), finished_at=utc_now()))
    return out


def fingerprint(out: Path) -> str:
    return hashlib.sha256((out / "results.sqlite").read_bytes()).hexdigest()


def assert_one_line_refusal(capsys, code: int, *fragments: str) -> None:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("zoo: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_the_parser_has_typed_options_in_every_command():
    commands = {path[0] for path, _, _ in OPTIONS}
    assert {"train", "sweep", "submit", "eval", "sample", "bench", "probe"} <= commands
    assert len(OPTIONS) >= 40


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(OPTIONS), value=bad_words)
def test_any_bad_value_of_any_option_is_one_line_and_changes_nothing(option, value, database,
                                                                      capsys):
    path, parser, action = option
    assume(refused_by_the_parser(action, value))
    before = fingerprint(database)
    flag = action.option_strings[-1]
    args = [*path, *positionals(parser), f"{flag}={value}"]
    if "--out" in parser._option_string_actions and flag != "--out":
        args += ["--out", str(database)]
    assert_one_line_refusal(capsys, main(args), flag)
    assert fingerprint(database) == before


def arch_options():
    """(arch, option, range) for every declared option range of a registered architecture."""
    return [(entry.name, name, bounds) for entry in ARCHS
            for name, bounds in entry.extra.get("option_ranges", {}).items()]


def outside(bounds) -> st.SearchStrategy:
    numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                        st.integers(-10**6, 10**6))
    return numbers.filter(lambda v: not (math.isfinite(v) and bounds.accepts(v)))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_architecture_option_outside_its_range_is_one_line(data, database, capsys):
    arch, name, bounds = data.draw(st.sampled_from(arch_options()))
    value = data.draw(outside(bounds))
    before = fingerprint(database)
    code = main(["train", arch, "--arch-param", f"{name}={value}", "--out", str(database)])
    assert_one_line_refusal(capsys, code, f"{name}=")
    assert fingerprint(database) == before


def train_word_options() -> list[str]:
    """`zoo train`'s options that take a word (a name, a device, NAME=VALUE)."""
    train = next(sub for path, sub, _ in OPTIONS if path == ("train",))
    return [a.option_strings[-1] for a in train._actions
            if a.option_strings and a.nargs in (None, "+") and a.type is None and not a.choices
            and a.dest not in ("help", "plugin", "arch")]


REGISTERED = {name for registry in REGISTRIES.values() for name in registry.names()}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flag=st.sampled_from(train_word_options()), value=st.text(min_size=1, max_size=12))
def test_any_unknown_word_for_a_train_option_is_one_line_and_changes_nothing(flag, value,
                                                                           database, capsys):
    assume(value not in REGISTERED and value.strip() not in ("auto", "cpu"))
    before = fingerprint(database)
    code = main(["train", "vit", f"{flag}={value}", "--out", str(database)])
    assert_one_line_refusal(capsys, code)
    assert fingerprint(database) == before
