"""What kind of run an arch trained on a data set is, answered from their registry tags and
nowhere else: image classification, language modelling or image generation. A run's kind is
stamped on its row in the results database when the run is first stored (zoo.runs.stamps), so
what reads results (boards, evaluation) never has to guess it again."""

from __future__ import annotations

from zoo.registry.core import ARCHS, DATASETS

CLASSIFY, LANGUAGE, GENERATE = "classify", "language", "generate"
KINDS = (CLASSIFY, LANGUAGE, GENERATE)


def is_generator_arch(arch: str) -> bool:
    """Class-conditional image generators (VAR, the raster baseline)."""
    return "generator" in ARCHS.get(arch).tags


def takes_text(arch: str) -> bool:
    """Language models: the arch reads tokens, and trains on text corpora only."""
    return "text" in ARCHS.get(arch).tags


def is_text_dataset(dataset: str) -> bool:
    return "text" in DATASETS.get(dataset).tags


def run_kind(arch: str, dataset: str) -> str:
    """`generate` for generator archs, `language` on text corpora, else `classify`."""
    if is_generator_arch(arch):
        return GENERATE
    if is_text_dataset(dataset):
        return LANGUAGE
    return CLASSIFY
