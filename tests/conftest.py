"""Shared fixtures: tests never touch the user's ./runs or the network."""

from __future__ import annotations

import os

import pytest

# huggingface_hub and datasets read these once, when first imported (zoo's registry imports them
# while tests are collected), so the fixture below alone would be too late.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def offline_and_isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
