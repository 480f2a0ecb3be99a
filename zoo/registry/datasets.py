"""Built-in image classification data sets.

Every factory returns a `datasets.DatasetDict` with exactly the splits train, validation and test
and one fixed schema:

    image: Array3D(shape=(H, W, C), dtype="uint8")   channels last, 0..255
    label: ClassLabel(names=[...])                    the real class names

Splits are fixed (stratified, split seed 0), so every run sees the same examples whatever its
training seed. Sources, in order of preference: embedded in a dependency (digits), the local
system (Debian's Fashion-MNIST), the Hugging Face hub (downloaded once, then cached).

`datasets`, `pyarrow` and scikit-learn are imported inside the functions: importing the registry
(`zoo list`) must stay fast.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import socket
import threading
import urllib.parse
import urllib.request
import zlib
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from zoo.errors import ZooError
from zoo.registry import DATASETS

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

DEFAULT_DATASET = "digits"
SPLITS = ("train", "validation", "test")
SPLIT_SEED = 0  # fixed on purpose: never derived from the training seed

FASHION_MNIST_ENV = "ZOO_FASHION_MNIST_DIR"
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
OFFLINE_ALTERNATIVES = "digits, fashion-mnist (apt-get install dataset-fashion-mnist)"
HUB_PROBE_TIMEOUT_S = 3.0


# --- Building data sets from numpy arrays ------------------------------------------------------

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
                       f"{_one_line(exc)}") from exc
    return np.sort(kept), np.sort(held)


def _dataset_dict(splits: dict[str, tuple[np.ndarray, np.ndarray]],
                  class_names: Sequence[str]) -> datasets.DatasetDict:
    import datasets

    return datasets.DatasetDict({
        name: image_dataset(images, labels, class_names, split=name)
        for name, (images, labels) in splits.items()
    })


# --- Local files: IDX (the MNIST family's format) ----------------------------------------------

_IDX_UBYTE = 0x08
_FASHION_MNIST_REMEDY = ("reinstall it (apt-get install --reinstall dataset-fashion-mnist) or "
                         f"point {FASHION_MNIST_ENV} at a good copy")


def read_idx(path: str | Path, ndim: int, fix: str = _FASHION_MNIST_REMEDY) -> np.ndarray:
    """A gzipped IDX file (uint8 data) as a numpy array; any defect is a ZooError naming the file.

    Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then
    each dimension as a big-endian uint32 (magic 0x00000801 for labels, 0x00000803 for images).
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ZooError(f"missing data file {path}; {fix}") from None
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise ZooError(f"corrupt data file {path} ({_one_line(exc)}); {fix}") from exc

    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ZooError(f"corrupt data file {path} (only {len(raw)} bytes, shorter than an IDX "
                       f"header); {fix}")
    magic = int.from_bytes(raw[:4], "big")
    if magic != (_IDX_UBYTE << 8 | ndim):
        raise ZooError(f"corrupt data file {path} (IDX magic number 0x{magic:08x}, expected "
                       f"0x{_IDX_UBYTE << 8 | ndim:08x}); {fix}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    found = len(raw) - header_len
    if found != expected:
        raise ZooError(f"corrupt data file {path} (header says {'x'.join(map(str, dims))} = "
                       f"{expected} bytes of data, found {found}); {fix}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


def read_idx_pair(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """`<prefix>-images-idx3-ubyte.gz` and `<prefix>-labels-idx1-ubyte.gz` as (N,H,W,1), (N,)."""
    images_path = directory / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = directory / f"{prefix}-labels-idx1-ubyte.gz"
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1).astype(np.int64)
    if len(images) != len(labels):
        raise ZooError(f"{images_path} has {len(images)} images but {labels_path} has "
                       f"{len(labels)} labels; reinstall dataset-fashion-mnist")
    return images[..., None], labels


def fashion_mnist_dir() -> Path | None:
    """The directory with the Debian IDX files: $ZOO_FASHION_MNIST_DIR, else Debian's, else None."""
    configured = os.environ.get(FASHION_MNIST_ENV)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_dir():
            raise ZooError(f"{FASHION_MNIST_ENV}={configured} is not a directory; point it at the "
                           "folder with the Fashion-MNIST *-ubyte.gz files, or unset it")
        return path
    debian = Path(FASHION_MNIST_DEBIAN_DIR)
    return debian if debian.is_dir() else None


def load_fashion_mnist_idx(directory: str | Path) -> datasets.DatasetDict:
    """Fashion-MNIST from IDX files: official test; 5000 stratified validation from train."""
    directory = Path(directory)
    train_images, train_labels = read_idx_pair(directory, "train")
    test_images, test_labels = read_idx_pair(directory, "t10k")
    for labels, prefix in ((train_labels, "train"), (test_labels, "t10k")):
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise ZooError(f"{directory / f'{prefix}-labels-idx1-ubyte.gz'} has label "
                           f"{labels.max()}, Fashion-MNIST has {len(FASHION_MNIST_CLASSES)} "
                           "classes; reinstall dataset-fashion-mnist")
    kept, held = stratified_split(train_labels, _fashion_mnist_validation_size(len(train_labels)))
    return _dataset_dict({
        "train": (train_images[kept], train_labels[kept]),
        "validation": (train_images[held], train_labels[held]),
        "test": (test_images, test_labels),
    }, FASHION_MNIST_CLASSES)


def _fashion_mnist_validation_size(n_train: int) -> int | float:
    # 5000 of the official 60000; a small synthetic copy (tests) keeps the same 1/12 share.
    return 5000 if n_train > 5000 * 2 else 1 / 12


# --- The Hugging Face hub -----------------------------------------------------------------------

_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline_requested() -> bool:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE (read now, not only when `datasets` was imported)."""
    import datasets

    names = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    if any(os.environ.get(n, "").upper() in _TRUE for n in names):
        return True
    return bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (or the configured proxy) opens within `timeout` s.

    Runs in a daemon thread because a DNS lookup ignores socket timeouts.
    """
    endpoint = urllib.parse.urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    target = endpoint
    proxies = urllib.request.getproxies()
    proxy = proxies.get(endpoint.scheme or "https") or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(endpoint.hostname or ""):
        target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = target.hostname
    if not host:
        return False
    port = target.port or (443 if target.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, name="zoo-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


def _hf_datasets_cache_dir() -> str | None:
    """The cache directory as the environment says now (None: the `datasets` default)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return os.environ["HF_DATASETS_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "datasets")
    return None


@contextlib.contextmanager
def _offline_hub() -> Iterator[None]:
    """Make `load_dataset` read only the local cache: its offline flags are read at import time,
    so they are switched here; without this an uncached data set retries the network ~25 s."""
    import datasets
    import huggingface_hub.constants as hub_constants

    targets = [(datasets.config, "HF_HUB_OFFLINE"), (datasets.config, "HF_DATASETS_OFFLINE"),
               (hub_constants, "HF_HUB_OFFLINE")]
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr in targets if hasattr(obj, attr)]
    verbosity = datasets.utils.logging.get_verbosity()
    try:
        for obj, attr, _ in saved:
            setattr(obj, attr, True)
        # Quiet the "using the latest cached version" warnings: reading the cache is the plan.
        datasets.utils.logging.set_verbosity_error()
        yield
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)
        datasets.utils.logging.set_verbosity(verbosity)


def _hf_load_dataset(repo: str, *, offline: bool) -> datasets.DatasetDict:
    import datasets

    kwargs: dict[str, Any] = {}
    cache_dir = _hf_datasets_cache_dir()
    if cache_dir:
        kwargs["cache_dir"] = cache_dir
    with _offline_hub() if offline else contextlib.nullcontext():
        return datasets.load_dataset(repo, **kwargs)


def load_hub_dataset(name: str, repo: str, offline_hint: str = "") -> datasets.DatasetDict:
    """The raw hub data set: from the local cache if it is there, else downloaded, else a fast
    one-line ZooError when the hub cannot be reached."""
    try:
        return _hf_load_dataset(repo, offline=True)
    except (ConnectionError, FileNotFoundError, ValueError):
        pass  # not in the local cache (ValueError: the cache builder found no usable copy)
    offline = hub_offline_requested()
    if offline or not hub_reachable():
        connect = "connect to the internet once" + (" with HF_HUB_OFFLINE unset" if offline else "")
        hint = offline_hint or f"or pick an offline data set: {OFFLINE_ALTERNATIVES}"
        raise ZooError(f"data set '{name}' is not available offline: it is downloaded from the "
                       f"Hugging Face hub ({repo}) on first use; {connect}, {hint}")
    try:
        return _hf_load_dataset(repo, offline=False)
    except Exception as exc:  # network and hub failures come in many types; show one line
        raise ZooError(f"could not download data set '{name}' from the Hugging Face hub ({repo}): "
                       f"{_one_line(exc)}; check the connection and try again") from exc


def _pil_batch_to_arrow(batch: dict[str, list], *, image_column: str, label_column: str,
                        mode: str, shape: tuple[int, int, int], name: str) -> pa.Table:
    """A batch of PIL images -> the fixed schema (channels last uint8, C=1 for grayscale)."""
    import pyarrow as pa

    arrays = []
    for image in batch[image_column]:
        if image.mode != mode:
            image = image.convert(mode)
        array = np.asarray(image, dtype=np.uint8)
        array = array.reshape(*array.shape[:2], -1)
        if array.shape != shape:
            raise ZooError(f"data set '{name}' has images of shape {array.shape} and {shape}; "
                           "the harness needs one image size per data set")
        arrays.append(array)
    images = np.stack(arrays) if arrays else np.zeros((0, *shape), np.uint8)
    # An Arrow table (not a dict of numpy arrays) skips `datasets`' slow per-row conversion.
    return pa.table({"image": image_arrow_array(images),
                     "label": pa.array(np.asarray(batch[label_column], dtype=np.int64))})


def hub_to_fixed_schema(raw: datasets.DatasetDict, name: str, *, image_column: str = "image",
                        label_column: str = "label", validation_size: int | float = 0.1,
                        class_names: Sequence[str] | None = None) -> datasets.DatasetDict:
    """A hub DatasetDict with PIL `Image` features -> train/validation/test in the fixed schema.

    The official `test` stays the test split; the hub's `validation` split is used if it has
    one, else a stratified `validation_size` of the official train (split seed 0).
    """
    import datasets

    missing = [s for s in ("train", "test") if s not in raw]
    if missing:
        raise ZooError(f"data set '{name}' from the hub has splits {sorted(raw)}, "
                       f"not {', '.join(missing)}; its layout changed, please report it")
    train = raw["train"]
    for column in (image_column, label_column):
        if column not in train.column_names:
            raise ZooError(f"data set '{name}' from the hub has columns {train.column_names}, "
                           f"not '{column}'; its layout changed, please report it")
    label_feature = train.features[label_column]
    if not isinstance(label_feature, datasets.ClassLabel):
        raise ZooError(f"data set '{name}': column '{label_column}' is "
                       f"{type(label_feature).__name__}, not ClassLabel; please report it")
    names = list(class_names) if class_names is not None else list(label_feature.names)
    if len(names) != label_feature.num_classes:
        raise ZooError(f"data set '{name}' has {label_feature.num_classes} classes on the hub, "
                       f"expected {len(names)}; please report it")

    first = train[0][image_column]  # decodes one image: fixes the size and the channel count
    mode = "L" if first.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
    shape = (first.height, first.width, 1 if mode == "L" else 3)
    features = image_features(shape, names)
    convert = partial(_pil_batch_to_arrow, image_column=image_column, label_column=label_column,
                      mode=mode, shape=shape, name=name)

    converted = {}
    for split in ("train", "validation", "test"):
        if split in raw:
            # Cached by `datasets` next to the downloaded files: the decoding runs once.
            converted[split] = raw[split].map(convert, batched=True, batch_size=1000,
                                              features=features,
                                              remove_columns=raw[split].column_names,
                                              desc=f"{name} {split}: images to arrays")
    if "validation" not in converted:
        # Split in numpy and rebuild in memory: `select` would leave an indices mapping, and
        # gathering nested Arrow lists through it costs seconds on every load.
        images, labels = image_arrays(converted["train"])
        kept, held = stratified_split(labels, validation_size)
        converted["train"] = image_dataset(images[kept], labels[kept], names, split="train")
        converted["validation"] = image_dataset(images[held], labels[held], names,
                                                split="validation")
    return datasets.DatasetDict({split: converted[split] for split in SPLITS})


def hub_image_dataset(name: str, repo: str, *, image_column: str = "image",
                      label_column: str = "label", validation_size: int | float = 0.1,
                      class_names: Sequence[str] | None = None,
                      offline_hint: str = "") -> datasets.DatasetDict:
    raw = load_hub_dataset(name, repo, offline_hint=offline_hint)
    return hub_to_fixed_schema(raw, name, image_column=image_column, label_column=label_column,
                               validation_size=validation_size, class_names=class_names)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# --- Entries ------------------------------------------------------------------------------------

@DATASETS.register(
    "digits",
    summary="8x8 grayscale handwritten digits, 1797 images, 10 classes (the default data set)",
    paper=("Methods of Combining Multiple Classifiers and Their Applications to Handwritten "
           "Digit Recognition (C. Kaynak, MSc thesis, 1995)", None),
    tags=("image", "embedded", "offline"),
    source_note="embedded in scikit-learn (sklearn.datasets.load_digits); works offline",
)
def digits() -> datasets.DatasetDict:
    """8x8 handwritten digits from scikit-learn; split 70/15/15 stratified."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixels are counts 0..16 (4x4 blocks of a 32x32 bitmap); scale to the 0..255 schema.
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    train, rest = stratified_split(labels, 0.30)
    validation, test = (rest[i] for i in stratified_split(labels[rest], 0.50))
    return _dataset_dict({
        "train": (images[train], labels[train]),
        "validation": (images[validation], labels[validation]),
        "test": (images[test], labels[test]),
    }, [str(d) for d in range(10)])


@DATASETS.register(
    "fashion-mnist",
    summary="28x28 grayscale Zalando product images, 70000 images, 10 classes",
    paper=("Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms",
           "1708.07747"),
    tags=("image", "local", "offline", "hub"),
    source_note=(f"Debian package dataset-fashion-mnist ({FASHION_MNIST_DEBIAN_DIR}, or "
                 f"${FASHION_MNIST_ENV}); else the Hugging Face hub "
                 "(zalando-datasets/fashion_mnist)"),
)
def fashion_mnist() -> datasets.DatasetDict:
    """Fashion-MNIST; official test, 5000 stratified validation images from the official train."""
    directory = fashion_mnist_dir()
    if directory is not None:
        return load_fashion_mnist_idx(directory)
    return hub_image_dataset(
        "fashion-mnist", "zalando-datasets/fashion_mnist", validation_size=5000,
        class_names=FASHION_MNIST_CLASSES,
        offline_hint=("or install the Debian package: apt-get install dataset-fashion-mnist "
                      f"(or set {FASHION_MNIST_ENV} to a folder with its IDX files)"),
    )


@DATASETS.register(
    "mnist",
    summary="28x28 grayscale handwritten digits, 70000 images, 10 classes",
    paper=("Gradient-Based Learning Applied to Document Recognition", None),
    tags=("image", "hub"),
    source_note="Hugging Face hub (ylecun/mnist), downloaded and cached on first use",
)
def mnist() -> datasets.DatasetDict:
    """MNIST from the hub; validation is a stratified 10% of the official train."""
    return hub_image_dataset("mnist", "ylecun/mnist")


@DATASETS.register(
    "cifar10",
    summary="32x32 colour images, 60000 images, 10 classes",
    paper=("Learning Multiple Layers of Features from Tiny Images", None),
    tags=("image", "hub"),
    source_note="Hugging Face hub (uoft-cs/cifar10), downloaded and cached on first use",
)
def cifar10() -> datasets.DatasetDict:
    """CIFAR-10 from the hub; validation is a stratified 10% of the official train."""
    return hub_image_dataset("cifar10", "uoft-cs/cifar10", image_column="img")


@DATASETS.register(
    "cifar100",
    summary="32x32 colour images, 60000 images, 100 fine classes",
    paper=("Learning Multiple Layers of Features from Tiny Images", None),
    tags=("image", "hub"),
    source_note="Hugging Face hub (uoft-cs/cifar100), downloaded and cached on first use",
)
def cifar100() -> datasets.DatasetDict:
    """CIFAR-100 (fine labels) from the hub; validation is a stratified 10% of the train."""
    return hub_image_dataset("cifar100", "uoft-cs/cifar100", image_column="img",
                             label_column="fine_label")
