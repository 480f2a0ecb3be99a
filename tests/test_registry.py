"""The registry: names, metadata, lookups that explain themselves, plugins."""

from __future__ import annotations

import textwrap

import pytest

from zoo.errors import ZooError
from zoo.registry import ACTS, ARCHS, DATASETS, INITS, QUANTS, find, plugins, registry_for
from zoo.registry.core import Registry


def test_every_kind_has_its_builtin_entries():
    assert {"vit", "resnet"} <= set(ARCHS.names())
    assert {"relu", "gelu", "silu", "mish", "golu", "swish", "aglu", "smelu", "sine"} <= set(ACTS.names())
    assert {"default", "kaiming", "xavier", "orthogonal"} <= set(INITS.names())
    assert "none" in QUANTS.names()
    assert {"digits", "fashion-mnist", "mnist", "cifar10", "cifar100"} <= set(DATASETS.names())


def test_every_activation_states_its_formula_and_paper():
    for entry in ACTS:
        assert entry.formula, entry.name
        assert entry.paper is not None and entry.paper.title, entry.name


def test_unknown_name_is_one_line_naming_the_closest_matches():
    with pytest.raises(ZooError) as err:
        ACTS.get("gelo")
    message = str(err.value)
    assert "\n" not in message
    assert "unknown act 'gelo'" in message and "gelu" in message


def test_kinds_accept_singular_and_plural_names():
    assert registry_for("act") is ACTS and registry_for("acts") is ACTS
    with pytest.raises(ZooError, match="unknown kind 'actz'.*acts"):
        registry_for("actz")


def test_a_name_is_registered_once_per_kind():
    registry = Registry("thing", "things")
    registry.register("a")(lambda: 1)
    with pytest.raises(ZooError, match="already registered"):
        registry.register("a")(lambda: 2)


def test_defaults_are_passed_to_the_factory_and_can_be_overridden():
    registry = Registry("thing", "things")
    registry.register("scaled", defaults={"k": 2})(lambda k: k * 10)
    assert registry.get("scaled").create() == 20
    assert registry.get("scaled").create(k=3) == 30


def test_find_searches_every_kind_and_kind_prefix_narrows():
    assert [e.kind for e in find("golu")] == ["act"]
    assert find("act:relu")[0].name == "relu"
    with pytest.raises(ZooError, match="unknown name 'golux'.*golu"):
        find("golux")


@pytest.fixture
def plugin_file(tmp_path):
    path = tmp_path / "my_acts.py"
    path.write_text(textwrap.dedent("""
        import torch
        from zoo.models.activation import Activation
        from zoo.registry import ACTS

        @ACTS.register("softsign_test", formula="x / (1 + |x|)", paper=("A test", None))
        def softsign_test(inplace=False):
            return Activation("softsign_test", lambda x: x / (1 + x.abs()), inplace=inplace)
    """))
    yield path
    ACTS.remove("softsign_test")


def test_a_plugin_file_registers_entries_that_record_their_source(plugin_file):
    plugins.load_plugin_file(plugin_file)
    entry = ACTS.get("softsign_test")
    assert entry.source == "plugin:my_acts.py"
    assert entry.create()(__import__("torch").tensor([1.0])).item() == 0.5


def test_a_broken_plugin_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('oops')\n")
    with pytest.raises(ZooError, match="plugin broken.py failed to load: RuntimeError: oops"):
        plugins.load_plugin_file(path)
    with pytest.raises(ZooError, match="plugin file not found"):
        plugins.load_plugin_file(tmp_path / "absent.py")


def test_installed_packages_register_through_the_entry_point_group(monkeypatch, plugin_file):
    from importlib.metadata import EntryPoint

    monkeypatch.syspath_prepend(str(plugin_file.parent))
    installed = EntryPoint(name="my-acts", value="my_acts", group="zoo.plugins")
    monkeypatch.setattr(plugins, "entry_points",
                        lambda group: [installed] if group == "zoo.plugins" else [])
    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.delitem(__import__("sys").modules, "my_acts", raising=False)

    assert plugins.load_entry_point_plugins() == ["my-acts"]
    assert ACTS.get("softsign_test").source == "plugin:my-acts"
    assert plugins.load_entry_point_plugins() == []  # loaded once per process


# -- names become path components of run ids: a safe character set, checked at registration ----

BAD_NAMES = ["../evil", "a/b", "", ".", "..", "with space", "semi;colon", "é", "tab\t", "a\\b"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_a_name_outside_the_safe_characters_is_refused_at_registration(bad):
    registry = Registry("thing", "things")
    with pytest.raises(ZooError, match="is not allowed: names become part of run ids") as refused:
        registry.register(bad)(lambda: 1)
    assert "\n" not in str(refused.value) and len(registry) == 0


def test_letters_digits_underscores_dashes_and_dots_are_allowed():
    registry = Registry("thing", "things")
    for good in ("gelu_tanh", "fashion-mnist", "int4-g32", "v1.2", "A", ".hidden"):
        registry.register(good)(lambda: 1)
    assert len(registry) == 6


def test_every_builtin_name_is_a_safe_name():
    from zoo.registry import REGISTRIES
    from zoo.registry.core import is_valid_name

    names = [entry.name for registry in REGISTRIES.values() for entry in registry]
    assert names and all(is_valid_name(name) for name in names)


def test_a_plugin_registering_a_bad_name_is_a_one_line_error_naming_the_plugin(tmp_path):
    path = tmp_path / "bad_name.py"
    path.write_text(textwrap.dedent("""
        from zoo.models.activation import Activation
        from zoo.registry import ACTS

        @ACTS.register("../escape", formula="x", paper=("A test", None))
        def make(inplace=False):
            return Activation("../escape", lambda x: x, inplace=inplace)
    """))
    with pytest.raises(ZooError) as refused:
        plugins.load_plugin_file(path)
    message = str(refused.value)
    assert "\n" not in message
    assert "act name '../escape' (plugin:bad_name.py) is not allowed" in message
    assert "../escape" not in ACTS
