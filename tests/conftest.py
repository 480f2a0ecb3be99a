"""Shared fixtures: tests never touch the user's ./runs or the network."""

from __future__ import annotations

import os

import pytest
import torch

# huggingface_hub and datasets read these once, when first imported (zoo's registry imports them
# while tests are collected), so the fixture below alone would be too late.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

from zoo.registry import REGISTRIES  # noqa: E402  (after the flags above)


@pytest.fixture(autouse=True)
def offline_and_isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def process_state_restored():
    """What a test changes in this process is undone after it, so no later test sees it: entries
    its plugins registered (a later sweep or board would list them) and torch's thread count (an
    in-process sweep job sets it, and a float sum's order depends on it)."""
    before = {plural: set(registry.names()) for plural, registry in REGISTRIES.items()}
    threads = torch.get_num_threads()
    yield
    for plural, registry in REGISTRIES.items():
        for name in set(registry.names()) - before[plural]:
            registry.remove(name)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
