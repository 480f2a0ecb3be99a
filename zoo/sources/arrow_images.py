"""numpy <-> the fixed image schema as Arrow, without per-image Python work, and fixed splits."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Sequence

import numpy as np

from zoo.errors import ZooError, one_line

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

SPLITS = ("train", "validation", "test")
SPLIT_SEED = 0  # fixed on purpose: never derived from the training seed


def image_features(shape: Sequence[int], class_names: Sequence[str]) -> datasets.Features:
    """The fixed schema for an image classification data set of (H, W, C) uint8 images."""
    import datasets

    return datasets.Features(
        image=datasets.Array3D(shape=tuple(int(s) for s in shape), dtype="uint8"),
        label=datasets.ClassLabel(names=list(class_names)),
    )


def array3d_arrow_type(shape: Sequence[int]) -> pa.DataType:
    """The Arrow extension type `datasets` uses for an Array3D uint8 column of this shape."""
    import datasets

    features = datasets.Features(image=datasets.Array3D(shape=tuple(shape), dtype="uint8"))
    return features.type.field("image").type


def image_arrow_array(images: np.ndarray,
                      arrow_type: pa.DataType | None = None) -> pa.ChunkedArray:
    """(N, H, W, C) uint8 -> the Arrow storage of an Array3D column, without per-image work.

    Array3D stores list<list<list<uint8>>>; the offsets of every level are a regular arange, so
    they are built in numpy and wrapped with `from_buffers` (from_arrays would validate 47M
    offsets for Fashion-MNIST). Chunks keep each level's int32 offsets below 2**31.
    """
    import pyarrow as pa

    images = np.ascontiguousarray(images, dtype=np.uint8)
    if arrow_type is None:
        arrow_type = array3d_arrow_type(images.shape[1:])
    n, per_image = len(images), int(np.prod(images.shape[1:]))
    rows_per_chunk = max(1, (2**31 - 1) // max(per_image, 1))
    chunks = []
    for start in range(0, max(n, 1), rows_per_chunk):
        block = images[start:start + rows_per_chunk]
        arr: pa.Array = pa.array(block.reshape(-1))
        for size in reversed(block.shape[1:]):
            rows = len(arr) // size
            offsets = np.arange(0, (rows + 1) * size, size, dtype=np.int32)
            arr = pa.Array.from_buffers(pa.list_(arr.type), rows, [None, pa.py_buffer(offsets)],
                                        children=[arr])
        chunks.append(pa.ExtensionArray.from_storage(arrow_type, arr))
    return pa.chunked_array(chunks, type=arrow_type)


def image_dataset(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                  split: str | None = None) -> datasets.Dataset:
    """An in-memory `datasets.Dataset` with the fixed schema, built from numpy arrays."""
    import datasets
    import pyarrow as pa

    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    features = image_features(images.shape[1:], class_names)
    table = pa.table({
        "image": image_arrow_array(images, features.type.field("image").type),
        "label": pa.array(np.asarray(labels, dtype=np.int64)),
    })
    # An explicit content fingerprint: the default one pickles and hashes the whole table (~1 s).
    digest = hashlib.blake2b(digest_size=16)
    for part in (repr(features).encode(), np.ascontiguousarray(images).data,
                 np.ascontiguousarray(labels, dtype=np.int64).data):
        digest.update(part)
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features),
                            split=split, fingerprint=digest.hexdigest())


def image_arrays(split: datasets.Dataset, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` (or all) examples of a fixed-schema split as (N, H, W, C) uint8 and (N,)
    int64 numpy arrays; the inverse of `image_dataset`.

    Read through Arrow: `with_format("numpy")` gives int64 pixels (8x the memory) and is slow.
    The image column is list<list<list<uint8>>> with regular offsets, so each chunk's pixels are
    one contiguous slice of its innermost values (zero-copy).
    """
    shape = tuple(split.features["image"].shape)
    table = split.with_format("arrow")[:n] if n is not None else split.with_format("arrow")[:]
    parts = [_list_values(chunk.storage, depth=3) for chunk in table.column("image").chunks]
    pixels = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    if pixels.size != table.num_rows * int(np.prod(shape)):
        where = f"split '{split.split}'" if split.split else "a split"
        raise ZooError(f"{where} has images that are missing or not all of shape {shape}; every "
                       "image must be a full Array3D of that shape")
    labels = np.array(table.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)
    return pixels.reshape(-1, *shape), labels


def _list_values(array: pa.Array, depth: int) -> np.ndarray:
    # The values a (possibly sliced) list array covers, `depth` levels down; flatten() would
    # walk every offset.
    for _ in range(depth):
        if array.null_count:
            return np.zeros(0, np.uint8)  # a missing image: reported by the caller's size check
        start, stop = array.offsets[0].as_py(), array.offsets[-1].as_py()
        array = array.values.slice(start, stop - start)
    return array.to_numpy(zero_copy_only=False)


def stratified_split(labels: np.ndarray, held_out: int | float,
                     seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out) of a stratified split, each sorted so the original order stays.

    `held_out` is a count or a fraction, as in sklearn's `train_test_split(test_size=...)`.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    try:
        kept, held = train_test_split(np.arange(len(labels)), test_size=held_out,
                                      stratify=labels, random_state=seed)
    except ValueError as exc:  # e.g. a class with a single example
        raise ZooError(f"cannot split {len(labels)} examples stratified by label: "
                       f"{one_line(exc)}") from exc
    return np.sort(kept), np.sort(held)


def dataset_dict(splits: dict[str, tuple[np.ndarray, np.ndarray]],
                  class_names: Sequence[str]) -> datasets.DatasetDict:
    import datasets

    return datasets.DatasetDict({
        name: image_dataset(images, labels, class_names, split=name)
        for name, (images, labels) in splits.items()
    })
