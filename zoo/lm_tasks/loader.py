"""Functions the task YAMLs of this folder name with `!function`: loading their local data and
building the speaker task's choices. Kept free of zoo imports beyond this package: lm-eval
imports this module when it builds a task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TASKS_DIR = Path(__file__).resolve().parent


def load_jsonl(data_files: dict[str, str] | None = None, **_metadata: Any):
    """The task's `custom_dataset`: a `datasets.DatasetDict` with one split per entry of the
    YAML's `dataset_kwargs.data_files` (split -> jsonl path, relative to this folder).

    lm-eval calls it with the task's metadata and dataset_kwargs as keywords. The rows are read
    into memory: no network, no Hugging Face cache, whatever the working folder."""
    import datasets

    if not data_files:
        raise ValueError("a zoo task needs dataset_kwargs.data_files: {split: path.jsonl}")
    splits = {}
    for split, name in data_files.items():
        path = Path(name) if Path(name).is_absolute() else TASKS_DIR / name
        with open(path, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        splits[split] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(splits)


def speaker_choices(doc: dict[str, Any]) -> list[str]:
    """shakespeare_speaker: the speech under each candidate's name, in the corpus's layout."""
    return [f"{name}:\n{doc['speech']}" for name in doc["speakers"]]
