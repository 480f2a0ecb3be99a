"""Text corpora: loading a registered corpus with its schema checked, and where its token
streams are cached.

A text corpus is a registry entry tagged "text" whose factory returns a `datasets.DatasetDict`
with the splits train, validation and test and the columns `title` (str) and `text` (str), one
row per document. Image data sets (tag "image") are refused here, and text corpora never go
through `zoo.data.images.load_dataset`, which checks the image schema.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError
from zoo.registry import DATASETS, Entry
from zoo.registry.kinds import is_text_dataset

if TYPE_CHECKING:
    import datasets

SPLITS = ("train", "validation", "test")
TEXT_SCHEMA = "title: string, text: string (one row per document)"
CACHE_ENV = "ZOO_CACHE_DIR"
FORMAT_VERSION = 1  # of the cached folders; bump when their layout or contents change


def text_corpus_names() -> list[str]:
    return [entry.name for entry in DATASETS if is_text_dataset(entry.name)]


def text_entry(name: str) -> Entry:
    """The registry entry of text corpus `name`; a one-line ZooError for any other name."""
    entry = DATASETS.get(name)  # unknown name: the registry's one-line ZooError
    if "text" not in entry.tags:
        kind = "an image data set" if "image" in entry.tags else "not tagged 'text'"
        raise ZooError(f"{name} is {kind}, not a text corpus; pick one of "
                       f"{', '.join(text_corpus_names())}")
    return entry


def load_text_dataset(name: str) -> datasets.DatasetDict:
    """The registered text corpus `name`, checked against the text schema."""
    entry = text_entry(name)
    ds = entry.create()
    validate_text_dataset(ds, name, source=entry.source)
    return ds


def validate_text_dataset(ds: object, name: str, source: str = "") -> None:
    """Raise a one-line ZooError saying what is wrong if `ds` does not follow the text schema."""
    import datasets

    where = f"text corpus '{name}'" + (f" ({source})" if source and source != "builtin" else "")

    def fail(problem: str) -> ZooError:
        return ZooError(f"{where} {problem}; a text corpus factory must return a DatasetDict "
                        f"with splits {', '.join(SPLITS)} and columns {TEXT_SCHEMA}")

    if not isinstance(ds, datasets.DatasetDict):
        raise fail(f"returned a {type(ds).__name__}, not a datasets.DatasetDict")
    if set(ds) != set(SPLITS):
        raise fail(f"has splits {sorted(ds)}")
    for split in SPLITS:
        features = ds[split].features
        for column in ("title", "text"):
            feature = features.get(column)
            if not (isinstance(feature, datasets.Value)
                    and feature.dtype in ("string", "large_string")):
                raise fail(f"has {column!r} = {feature!r} in '{split}'")
        if len(ds[split]) == 0:
            raise fail(f"has an empty '{split}' split")


def iter_texts(split: datasets.Dataset, batch_size: int = 1000):
    """The documents of one split in order, `batch_size` at a time (lists of str)."""
    for start in range(0, len(split), batch_size):
        yield split[start:start + batch_size]["text"]


# --- Cache folders ------------------------------------------------------------------------------

def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else $ZOO_CACHE_DIR, else ~/.cache/zoo/tokens."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache/zoo/tokens"


def cache_folder(corpus: str, tokenizer: str, options: dict[str, Any],
                 cache_dir: str | Path | None = None, extra: str = "") -> Path:
    """`<root>/<corpus>-<tokenizer>-<hash>`: the hash covers the recipe (corpus and its version,
    tokenizer and its options, the folder format), not the text itself; hashing a hub corpus
    of gigabytes on every call would cost minutes. meta.json records the text's hash."""
    recipe = {"format": FORMAT_VERSION, "corpus": corpus, "corpus_version": corpus_version(corpus),
              "tokenizer": tokenizer, "options": options, "extra": extra}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root(cache_dir) / f"{corpus}-{tokenizer}-{digest}"


def corpus_version(name: str) -> str:
    """The entry's `version` (bumped when its text or split rule changes), "" if none."""
    return str(DATASETS.get(name).extra.get("version", "")) if name in DATASETS else ""
