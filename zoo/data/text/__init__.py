"""The language side's data layer: text corpora, tokenizers, memory-mapped token streams.

    ds = load_text_dataset("shakespeare")                       # DatasetDict: title, text
    streams = prepare_token_streams("shakespeare", "bpe", vocab_size=4096)
    x, y = random_windows(streams.train, 32, 256, generator)    # int64 (32, 256), y = x shifted
    for x, y in sequential_windows(streams.validation, 32, 256): ...
    bits_per_byte(mean_loss, streams.validation.targets, streams.validation.bytes)
"""

from zoo.data.text.corpus import (
                                     SPLITS,
                                     cache_root,
                                     load_text_dataset,
                                     text_corpus_names,
                                     validate_text_dataset,
)
from zoo.data.text.streams import (
                                     IGNORE_INDEX,
                                     TokenSplit,
                                     TokenStreams,
                                     bits_per_byte,
                                     open_streams,
                                     perplexity,
                                     prepare_token_streams,
                                     random_windows,
                                     sequential_windows,
)
from zoo.data.text.tokenizer import (
                                     EOT_TEXT,
                                     BpeTokenizer,
                                     ByteTokenizer,
                                     TiktokenTokenizer,
                                     Tokenizer,
                                     get_tokenizer,
                                     train_bpe,
)

__all__ = ["SPLITS", "cache_root", "load_text_dataset", "text_corpus_names",
           "validate_text_dataset", "IGNORE_INDEX", "TokenSplit", "TokenStreams", "bits_per_byte",
           "open_streams", "perplexity", "prepare_token_streams", "random_windows",
           "sequential_windows", "EOT_TEXT", "BpeTokenizer", "ByteTokenizer", "TiktokenTokenizer",
           "Tokenizer", "get_tokenizer", "train_bpe"]
