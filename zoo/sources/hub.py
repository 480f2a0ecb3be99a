"""Image data sets from the Hugging Face hub: cached copy first, a fast one-line error offline,
and conversion of PIL `Image` columns to the fixed schema."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import urllib.parse
import urllib.request
from functools import partial
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from zoo.errors import ZooError, one_line
from zoo.sources.arrow_images import (
    SPLITS,
    image_arrays,
    image_arrow_array,
    image_dataset,
    image_features,
    stratified_split,
)

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

OFFLINE_ALTERNATIVES = "digits, fashion-mnist (apt-get install dataset-fashion-mnist)"
HUB_PROBE_TIMEOUT_S = 3.0


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


def hf_datasets_cache_dir() -> str | None:
    """The cache directory as the environment says now (None: the `datasets` default)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return os.environ["HF_DATASETS_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "datasets")
    return None


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
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
    cache_dir = hf_datasets_cache_dir()
    if cache_dir:
        kwargs["cache_dir"] = cache_dir
    with offline_hub() if offline else contextlib.nullcontext():
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
                       f"{one_line(exc)}; check the connection and try again") from exc


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
