"""Tokenizers: text <-> token ids, with one end-of-text id (`eot`) that separates documents.

    byte  UTF-8 bytes, ids 0..255, eot 256, vocab 257. Always works.
    bpe   byte-level BPE trained with the `tokenizers` library on the corpus's train split only
          (GPT-2's pre-tokenization, every byte in the base alphabet, so any text round-trips
          exactly); vocab_size (default 4096) counts eot. Trained once, saved as
          tokenizer.json in the corpus's token cache folder and reused.
    gpt2  GPT-2's own BPE through tiktoken (vocab 50257, eot 50256). tiktoken downloads its
          files on first use; offline that fails with a one-line ZooError.

eot is never produced by `encode` (text containing "<|endoftext|>" is encoded as ordinary
text); `decode` writes it as "<|endoftext|>".
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

from zoo.data.text.corpus import cache_folder, iter_texts, load_text_dataset
from zoo.errors import ZooError, one_line
from zoo.registry.core import unknown_name_message
from zoo.runs.files import atomic_write

EOT_TEXT = "<|endoftext|>"
DEFAULT_BPE_VOCAB = 4096
# Each tokenizer's options and their defaults (filled in before hashing the cache folder's name).
TOKENIZER_OPTIONS: dict[str, dict[str, Any]] = {
    "byte": {}, "bpe": {"vocab_size": DEFAULT_BPE_VOCAB}, "gpt2": {}}


@runtime_checkable
class Tokenizer(Protocol):
    name: str
    vocab_size: int  # ids are 0 .. vocab_size - 1, eot included
    eot: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def _decode_pieces(ids: Sequence[int], eot: int, decode_piece) -> str:
    """Decode the runs between eot ids separately, joined by EOT_TEXT."""
    pieces: list[list[int]] = [[]]
    for i in ids:
        if int(i) == eot:
            pieces.append([])
        else:
            pieces[-1].append(int(i))
    return EOT_TEXT.join(decode_piece(p) for p in pieces)


class ByteTokenizer:
    name = "byte"
    vocab_size = 257
    eot = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return _decode_pieces(ids, self.eot, lambda p: bytes(p).decode("utf-8", "replace"))


class BpeTokenizer:
    """A trained `tokenizers.Tokenizer`; eot is the id just past its vocabulary, so no text
    can produce it."""

    name = "bpe"

    def __init__(self, tokenizer: Any):
        self._tok = tokenizer
        self.eot = tokenizer.get_vocab_size()
        self.vocab_size = self.eot + 1

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return _decode_pieces(ids, self.eot, self._tok.decode)

    def to_json(self) -> str:
        return self._tok.to_str()


class TiktokenTokenizer:
    """A tiktoken encoding; `encode_ordinary` so special-token text stays ordinary text."""

    def __init__(self, encoding: Any, name: str = "gpt2"):
        self._enc = encoding
        self.name = name
        self.vocab_size = encoding.n_vocab
        self.eot = encoding.eot_token

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        return self._enc.decode([int(i) for i in ids])


def tokenizer_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of tokenizer `name` with defaults filled in, checked (one-line ZooErrors)."""
    if name not in TOKENIZER_OPTIONS:
        raise ZooError(unknown_name_message("tokenizer", name, sorted(TOKENIZER_OPTIONS)))
    known = TOKENIZER_OPTIONS[name]
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = f"takes {', '.join(sorted(known))}" if known else "takes no options"
        raise ZooError(f"tokenizer '{name}' {takes}, got {', '.join(unknown)}")
    merged = {**known, **options}
    if name == "bpe":
        size = merged["vocab_size"]
        if isinstance(size, bool) or not isinstance(size, int) or not 258 <= size <= 2**20:
            raise ZooError(f"bpe vocab_size must be an integer from 258 (256 bytes, a merge, "
                           f"end-of-text) to {2**20}, got {size!r}")
    return merged


def get_tokenizer(name: str, corpus_name: str | None = None,
                  train_texts: Iterable[str] | None = None, cache_dir: str | Path | None = None,
                  **options: Any) -> Tokenizer:
    """Tokenizer `name`. `bpe` is trained on `train_texts`, or else on `corpus_name`'s train
    split, and cached under `cache_dir` (default: $ZOO_CACHE_DIR or ~/.cache/zoo/tokens)."""
    options = tokenizer_options(name, options)
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        return gpt2_tokenizer()
    if corpus_name is None and train_texts is None:
        raise ZooError("tokenizer 'bpe' is trained on a corpus: name one (or pass train_texts)")
    extra = ""
    if train_texts is not None:
        train_texts = list(train_texts)
        extra = "train_texts:" + _texts_digest(train_texts)
    folder = cache_folder(corpus_name or "texts", "bpe", options, cache_dir, extra=extra)
    if train_texts is None:
        train = load_text_dataset(corpus_name)["train"]
        train_texts = (t for batch in iter_texts(train) for t in batch)
    return load_or_train_bpe(folder / "tokenizer.json", train_texts, options["vocab_size"])


def load_bpe(path: Path) -> BpeTokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    if not path.is_file():
        raise ZooError(f"no trained BPE at {path}; delete its folder to prepare it again")
    return BpeTokenizer(HFTokenizer.from_file(str(path)))


def load_or_train_bpe(path: Path, texts: Iterable[str], vocab_size: int) -> BpeTokenizer:
    """The BPE saved at `path`, else one trained on `texts` and saved there atomically."""
    if path.is_file():
        return load_bpe(path)
    tokenizer = train_bpe(texts, vocab_size)
    atomic_write(path, lambda tmp: tmp.write_text(tokenizer.to_json(), encoding="utf-8"))
    return tokenizer


def train_bpe(texts: Iterable[str], vocab_size: int = DEFAULT_BPE_VOCAB) -> BpeTokenizer:
    """Byte-level BPE with `vocab_size` ids in all (the learned ones plus eot). Deterministic:
    the trainer breaks ties between equally frequent pairs by the pair itself."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    return BpeTokenizer(tok)


def gpt2_tokenizer() -> TiktokenTokenizer:
    try:
        import tiktoken
    except ImportError:
        raise ZooError("tokenizer 'gpt2' needs tiktoken: pip install 'zoo-bench[lm]' "
                       "(or use --tokenizer bpe)") from None
    try:
        encoding = tiktoken.get_encoding("gpt2")
    except Exception as exc:  # requests/urllib/hash failures; one line either way
        raise ZooError("tokenizer 'gpt2' needs GPT-2's BPE files, which tiktoken downloads on "
                       f"first use, and could not get them ({one_line(exc)[:160]}); connect "
                       "to the internet once, or use --tokenizer bpe") from exc
    return TiktokenTokenizer(encoding)


def _texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:16]
