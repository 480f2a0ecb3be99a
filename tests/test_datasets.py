"""The data set registry entries and their conversion to device tensors.

Every data set is a DatasetDict with the splits train/validation/test and the fixed schema
image: Array3D((H, W, C), uint8), label: ClassLabel; splits are fixed (stratified, seed 0).
"""

from __future__ import annotations

import gzip
import random
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

import zoo.registry.datasets as builtin
import zoo.sources.hub as hub
from zoo.data.images import (
    DataSpec,
    ShuffledBatches,
    eval_batches,
    load_dataset,
    split_arrays,
    to_device_tensors,
)
from zoo.errors import ZooError
from zoo.registry import DATASETS

SPLITS = ("train", "validation", "test")


# --- helpers ------------------------------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray) -> None:
    """A gzipped IDX file of unsigned bytes: magic 0x0000 08 <ndim>, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def tagged_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images whose first two pixels spell their index, so rows can be traced."""
    images = np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, 0], flat[:, 1] = np.arange(n) % 256, np.arange(n) // 256
    return images


def index_of(images: np.ndarray) -> np.ndarray:
    flat = images.reshape(len(images), -1).astype(np.int64)
    return flat[:, 0] + 256 * flat[:, 1]


def fake_fashion_mnist(directory: Path, n_train: int = 120, n_test: int = 30) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "train": (tagged_images(n_train, (28, 28), 1), np.arange(n_train) % 10),
        "t10k": (tagged_images(n_test, (28, 28), 2), (np.arange(n_test) * 7) % 10),
    }
    for prefix, (images, labels) in data.items():
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return data


def arrays(ds: datasets.DatasetDict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {split: split_arrays(ds[split]) for split in SPLITS}


def assert_fixed_schema(ds, shape, class_names):
    assert isinstance(ds, datasets.DatasetDict)
    assert list(ds) == list(SPLITS)
    for split in SPLITS:
        features = ds[split].features
        assert set(features) == {"image", "label"}
        assert isinstance(features["image"], datasets.Array3D)
        assert tuple(features["image"].shape) == tuple(shape)
        assert features["image"].dtype == "uint8"
        assert isinstance(features["label"], datasets.ClassLabel)
        assert features["label"].names == list(class_names)


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message and message.strip() == message and message
    return message


@pytest.fixture
def empty_offline_hf(monkeypatch, tmp_path):
    """Offline, with an empty Hugging Face cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    return tmp_path / "hf"


@pytest.fixture
def temporary_dataset():
    names = []

    def register(name, factory):
        DATASETS.register(name, summary="temporary test entry")(factory)
        names.append(name)
        return name

    yield register
    for name in names:
        DATASETS.remove(name)


# --- digits -------------------------------------------------------------------------------------

def test_digits_is_the_default_and_registered_with_the_hub_sets():
    assert builtin.DEFAULT_DATASET == "digits"
    assert {"digits", "fashion-mnist", "mnist", "cifar10", "cifar100"} <= set(DATASETS.names())
    entry = DATASETS.get("digits")
    assert "embedded" in entry.tags and entry.extra["source_note"]


def test_digits_has_fixed_stratified_splits_of_the_whole_set():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert_fixed_schema(ds, (8, 8, 1), [str(d) for d in range(10)])
    got = arrays(ds)
    assert {s: len(got[s][1]) for s in SPLITS} == {"train": 1257, "validation": 270, "test": 270}

    # Together the splits are exactly the 1797 images, pixels scaled 0..16 -> round(v*255/16).
    bunch = load_digits()
    expected = np.rint(bunch.images * 255 / 16).astype(np.uint8).reshape(len(bunch.target), -1)
    expected_rows = np.column_stack([expected, bunch.target])
    got_rows = np.concatenate([np.column_stack([x.reshape(len(x), -1), y])
                               for x, y in got.values()])
    assert sorted(map(bytes, got_rows.astype(np.uint8))) == \
        sorted(map(bytes, expected_rows.astype(np.uint8)))

    # Stratified: every split has each class in (nearly) the whole set's proportion.
    whole = np.bincount(bunch.target, minlength=10) / len(bunch.target)
    for split, (_, y) in got.items():
        share = np.bincount(y, minlength=10) / len(y)
        assert np.abs(share - whole).max() < 0.01, split


def test_digits_loads_in_well_under_a_second():
    load_dataset("digits")  # first call pays scikit-learn's import
    start = time.perf_counter()
    load_dataset("digits")
    assert time.perf_counter() - start < 0.5


def test_split_does_not_depend_on_training_seed():
    results = []
    for seed in (0, 1234):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        results.append(arrays(load_dataset("digits")))
    for split in SPLITS:
        assert np.array_equal(results[0][split][0], results[1][split][0])
        assert np.array_equal(results[0][split][1], results[1][split][1])


# --- Fashion-MNIST from Debian's IDX files ------------------------------------------------------

def test_fashion_mnist_reads_debian_idx_files(tmp_path, monkeypatch):
    written = fake_fashion_mnist(tmp_path / "fm")
    monkeypatch.setenv("ZOO_FASHION_MNIST_DIR", str(tmp_path / "fm"))

    ds = load_dataset("fashion-mnist")
    assert_fixed_schema(ds, (28, 28, 1), builtin.FASHION_MNIST_CLASSES)
    got = arrays(ds)

    # The official test split, untouched and in order.
    test_images, test_labels = written["t10k"]
    assert np.array_equal(got["test"][0][..., 0], test_images)
    assert np.array_equal(got["test"][1], test_labels)

    # Train and validation partition the official train; validation is stratified (1 per class).
    train_images, train_labels = written["train"]
    train_idx, val_idx = index_of(got["train"][0]), index_of(got["validation"][0])
    assert len(val_idx) == 10 and np.bincount(got["validation"][1], minlength=10).tolist() == [1] * 10
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(120))
    for split, idx in (("train", train_idx), ("validation", val_idx)):
        assert np.array_equal(got[split][0][..., 0], train_images[idx])
        assert np.array_equal(got[split][1], train_labels[idx])

    # Fixed: a second load gives the same validation examples.
    again = index_of(split_arrays(load_dataset("fashion-mnist")["validation"])[0])
    assert np.array_equal(again, val_idx)


@pytest.mark.skipif(not Path(builtin.FASHION_MNIST_DEBIAN_DIR).is_dir(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_installed_debian_package(monkeypatch):
    monkeypatch.delenv("ZOO_FASHION_MNIST_DIR", raising=False)
    start = time.perf_counter()
    ds = load_dataset("fashion-mnist")
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"loading took {elapsed:.1f} s"
    assert_fixed_schema(ds, (28, 28, 1), builtin.FASHION_MNIST_CLASSES)
    assert {s: len(ds[s]) for s in SPLITS} == {"train": 55000, "validation": 5000, "test": 10000}
    validation_labels = split_arrays(ds["validation"])[1]
    assert np.bincount(validation_labels).tolist() == [500] * 10


@pytest.mark.parametrize("defect", ["truncated gzip", "wrong magic", "short data"])
def test_corrupt_idx_file_is_a_one_line_error(tmp_path, monkeypatch, defect):
    fake_fashion_mnist(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    if defect == "truncated gzip":
        bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    elif defect == "wrong magic":
        raw = gzip.decompress(bad.read_bytes())
        bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + raw[4:]))
    else:
        bad.write_bytes(gzip.compress(gzip.decompress(bad.read_bytes())[:-100]))
    monkeypatch.setenv("ZOO_FASHION_MNIST_DIR", str(tmp_path))

    with pytest.raises(ZooError) as exc:
        load_dataset("fashion-mnist")
    message = one_line(exc)
    assert str(bad) in message
    assert "dataset-fashion-mnist" in message


def test_missing_idx_file_and_bad_directory_are_one_line_errors(tmp_path, monkeypatch):
    fake_fashion_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("ZOO_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(ZooError) as exc:
        load_dataset("fashion-mnist")
    assert "t10k-labels-idx1-ubyte.gz" in one_line(exc)

    monkeypatch.setenv("ZOO_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ZooError) as exc:
        load_dataset("fashion-mnist")
    assert "ZOO_FASHION_MNIST_DIR" in one_line(exc)


# --- The Hugging Face hub -----------------------------------------------------------------------

@pytest.mark.parametrize("name, repo", [("cifar10", "uoft-cs/cifar10"),
                                        ("cifar100", "uoft-cs/cifar100"),
                                        ("mnist", "ylecun/mnist")])
def test_missing_hub_dataset_offline_fails_fast_with_instructions(empty_offline_hf, name, repo):
    start = time.perf_counter()
    with pytest.raises(ZooError) as exc:
        load_dataset(name)
    elapsed = time.perf_counter() - start
    message = one_line(exc)
    assert elapsed < 5, f"took {elapsed:.1f} s to fail"
    assert f"'{name}'" in message and repo in message
    assert "connect to the internet once" in message
    assert "digits" in message and "apt-get install dataset-fashion-mnist" in message


def test_fashion_mnist_without_debian_files_falls_back_to_the_hub(empty_offline_hf, monkeypatch,
                                                                  tmp_path):
    monkeypatch.delenv("ZOO_FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(builtin, "FASHION_MNIST_DEBIAN_DIR", str(tmp_path / "not-installed"))
    with pytest.raises(ZooError) as exc:
        load_dataset("fashion-mnist")
    message = one_line(exc)
    assert "zalando-datasets/fashion_mnist" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_unreachable_hub_is_detected_by_a_short_probe(monkeypatch, tmp_path):
    # Not flagged offline: the cache is tried first, then one short probe decides.
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    probes = []
    monkeypatch.setattr(hub, "hub_reachable", lambda: probes.append(1) or False)

    start = time.perf_counter()
    with pytest.raises(ZooError) as exc:
        load_dataset("cifar10")
    assert time.perf_counter() - start < 5
    assert probes == [1]
    assert "uoft-cs/cifar10" in one_line(exc)
    assert datasets.config.HF_HUB_OFFLINE is False  # the cache-only attempt restored the flag


def test_hub_probe_gives_up_quickly_on_an_unresolvable_host(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    for var in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    start = time.perf_counter()
    assert hub.hub_reachable(timeout=1.0) is False
    assert time.perf_counter() - start < 2


def _hub_images(n: int, mode: str, size: int, seed: int) -> tuple[list, np.ndarray]:
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    pixels = tagged_images(n, shape, seed)
    return [Image.fromarray(p, mode=mode) for p in pixels], pixels


@pytest.fixture
def fake_hub(monkeypatch):
    """datasets.load_dataset answers from a DatasetDict built here, like the hub's layout."""
    served = {}

    def fake_load_dataset(repo, **kwargs):
        served.setdefault("calls", []).append(repo)
        return served[repo]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return served


def test_hub_conversion_builds_the_fixed_schema(fake_hub):
    classes = [f"class{i}" for i in range(5)]
    features = datasets.Features(img=datasets.Image(),
                                 fine_label=datasets.ClassLabel(names=classes),
                                 coarse_label=datasets.ClassLabel(names=["x", "y"]))
    raw, pixels = {}, {}
    for split, n, seed in (("train", 100, 3), ("test", 20, 4)):
        images, pixels[split] = _hub_images(n, "RGB", 32, seed)
        labels = (np.arange(n) % 5).tolist()
        raw[split] = datasets.Dataset.from_dict(
            {"img": images, "fine_label": labels, "coarse_label": [0] * n}, features=features)
    fake_hub["uoft-cs/cifar100"] = datasets.DatasetDict(raw)

    ds = load_dataset("cifar100")
    assert fake_hub["calls"] == ["uoft-cs/cifar100"]  # served from the (fake) cache at once
    assert_fixed_schema(ds, (32, 32, 3), classes)
    got = arrays(ds)

    assert np.array_equal(got["test"][0], pixels["test"])
    assert np.array_equal(got["test"][1], np.arange(20) % 5)
    # Validation: a stratified 10% of the official train; train keeps the other 90%.
    assert len(got["validation"][1]) == 10 and np.bincount(got["validation"][1]).tolist() == [2] * 5
    train_idx, val_idx = index_of(got["train"][0]), index_of(got["validation"][0])
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(100))
    assert np.array_equal(got["validation"][0], pixels["train"][val_idx])
    assert np.array_equal(got["validation"][1], val_idx % 5)


def test_hub_grayscale_gets_one_channel_and_a_hub_validation_split_is_kept(fake_hub):
    features = datasets.Features(image=datasets.Image(),
                                 label=datasets.ClassLabel(names=[str(d) for d in range(10)]))
    raw = {}
    for split, n, seed in (("train", 40, 5), ("validation", 12, 6), ("test", 10, 7)):
        images, _ = _hub_images(n, "L", 28, seed)
        raw[split] = datasets.Dataset.from_dict({"image": images, "label": list(np.arange(n) % 10)},
                                                features=features)
    fake_hub["ylecun/mnist"] = datasets.DatasetDict(raw)

    ds = load_dataset("mnist")
    assert_fixed_schema(ds, (28, 28, 1), [str(d) for d in range(10)])
    assert {s: len(ds[s]) for s in SPLITS} == {"train": 40, "validation": 12, "test": 10}


# --- Device tensors -----------------------------------------------------------------------------

def test_device_tensors_are_normalized_with_train_statistics():
    ds = load_dataset("digits")
    raw = arrays(ds)
    tensors = to_device_tensors(ds, "digits", device="cpu")
    spec = tensors.spec

    train_pixels = raw["train"][0].astype(np.float64) / 255
    assert isinstance(spec, DataSpec)
    assert (spec.image_size, spec.channels, spec.num_classes) == ((8, 8), 1, 10)
    assert spec.class_names == tuple(str(d) for d in range(10))
    assert spec.mean == pytest.approx([train_pixels.mean()], rel=1e-9)
    assert spec.std == pytest.approx([train_pixels.std()], rel=1e-9)
    assert spec.sizes == {"train": 1257, "validation": 270, "test": 270}

    for split in SPLITS:
        x, y = getattr(tensors, split)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.device.type == "cpu" and x.shape == (len(y), 1, 8, 8) and x.is_contiguous()
        expected = (raw[split][0].transpose(0, 3, 1, 2) / 255 - spec.mean[0]) / spec.std[0]
        assert torch.allclose(x, torch.from_numpy(expected).float(), atol=1e-5)
        assert torch.equal(y, torch.from_numpy(raw[split][1]))
    x_train = tensors.train[0]
    assert abs(x_train.mean().item()) < 1e-4 and abs(x_train.std().item() - 1) < 1e-3
    # The held-out splits use the train statistics, so they are not exactly standardized.
    assert abs(tensors.test[0].mean().item()) > 1e-4


def test_limit_keeps_the_first_examples_and_the_full_train_statistics():
    ds = load_dataset("digits")
    full = to_device_tensors(ds, "digits")
    small = to_device_tensors(ds, "digits", limit={"train": 100, "test": 7})
    assert small.spec.sizes == {"train": 100, "validation": 270, "test": 7}
    assert small.spec.mean == full.spec.mean and small.spec.std == full.spec.std
    assert torch.equal(small.train[0], full.train[0][:100])
    assert torch.equal(small.test[1], full.test[1][:7])
    with pytest.raises(ZooError):
        to_device_tensors(ds, "digits", limit={"tran": 5})


def test_split_arrays_follow_selections_and_slices():
    ds = load_dataset("digits")["train"]
    images, labels = split_arrays(ds)
    picked = [17, 3, 1000, 3]
    sub_images, sub_labels = split_arrays(ds.select(picked))
    assert np.array_equal(sub_images, images[picked]) and np.array_equal(sub_labels, labels[picked])
    head_images, _ = split_arrays(ds.select(range(5, 50)), 10)
    assert np.array_equal(head_images, images[5:15])


# --- Minibatches --------------------------------------------------------------------------------

def test_shuffled_batches_cover_each_example_once_per_epoch():
    x = torch.arange(50, dtype=torch.float32).view(50, 1) * 10
    y = torch.arange(50)
    batches = ShuffledBatches(x, y, batch_size=7, seed=3)
    assert len(batches) == 8
    orders = []
    for epoch in range(3):
        seen = []
        for xb, yb in batches.epoch(epoch):
            assert len(yb) <= 7
            assert torch.equal(xb[:, 0], yb.float() * 10)  # pairs stay together
            seen.append(yb)
        order = torch.cat(seen)
        assert sorted(order.tolist()) == list(range(50))
        orders.append(order)
    assert not torch.equal(orders[0], orders[1])  # reshuffled every epoch
    assert not torch.equal(orders[0], y)

    dropped = ShuffledBatches(x, y, batch_size=7, seed=3, drop_last=True)
    sizes = [len(yb) for _, yb in dropped.epoch(0)]
    assert len(dropped) == 7 and sizes == [7] * 7


def test_epoch_order_is_reproducible_without_earlier_epochs():
    x, y = torch.randn(64, 3), torch.arange(64)
    first = ShuffledBatches(x, y, batch_size=16, seed=11)
    for epoch in range(3):
        order_in_sequence = torch.cat([yb for _, yb in first.epoch(epoch)])
    torch.manual_seed(999)  # the global RNG state must not matter
    resumed = ShuffledBatches(x, y, batch_size=16, seed=11)
    assert torch.equal(torch.cat([yb for _, yb in resumed.epoch(2)]), order_in_sequence)
    other_seed = ShuffledBatches(x, y, batch_size=16, seed=12)
    assert not torch.equal(torch.cat([yb for _, yb in other_seed.epoch(2)]), order_in_sequence)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_shuffled_order_is_the_same_on_cpu_and_cuda():
    x, y = torch.randn(100, 2), torch.arange(100)
    on_cpu = ShuffledBatches(x, y, batch_size=32, seed=5)
    on_gpu = ShuffledBatches(x.cuda(), y.cuda(), batch_size=32, seed=5)
    for (_, y_cpu), (_, y_gpu) in zip(on_cpu.epoch(4), on_gpu.epoch(4)):
        assert y_gpu.is_cuda and torch.equal(y_cpu, y_gpu.cpu())


def test_eval_batches_are_in_order_and_complete():
    x, y = torch.arange(10).view(10, 1), torch.arange(10)
    batches = list(eval_batches(x, y, 4))
    assert [len(yb) for _, yb in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([yb for _, yb in batches]), y)


# --- Plugins and names --------------------------------------------------------------------------

def _good_split(n=20, dtype="uint8"):
    features = datasets.Features(image=datasets.Array3D(shape=(4, 4, 1), dtype=dtype),
                                 label=datasets.ClassLabel(names=["a", "b"]))
    return datasets.Dataset.from_dict(
        {"image": np.zeros((n, 4, 4, 1), dtype=dtype), "label": [i % 2 for i in range(n)]},
        features=features)


@pytest.mark.parametrize("problem, factory, expected", [
    ("not a DatasetDict", lambda: _good_split(), "Dataset"),
    ("missing split", lambda: datasets.DatasetDict(train=_good_split(), test=_good_split()),
     "splits"),
    ("float images", lambda: datasets.DatasetDict(
        {s: _good_split(dtype="float32") for s in SPLITS}), "image"),
    ("plain int labels", lambda: datasets.DatasetDict(
        {s: _good_split().cast_column("label", datasets.Value("int64")) for s in SPLITS}),
     "label"),
])
def test_plugin_dataset_with_wrong_schema_is_rejected(temporary_dataset, problem, factory,
                                                      expected):
    name = temporary_dataset("zz-test-bad", factory)
    with pytest.raises(ZooError) as exc:
        load_dataset(name)
    message = one_line(exc)
    assert f"'{name}'" in message and expected in message


def test_plugin_dataset_with_the_fixed_schema_is_accepted(temporary_dataset):
    name = temporary_dataset("zz-test-good",
                             lambda: datasets.DatasetDict({s: _good_split() for s in SPLITS}))
    tensors = to_device_tensors(load_dataset(name), name)
    assert tensors.spec.input_shape == (1, 4, 4)
    assert tensors.spec.std == (1.0,)  # constant images: no division by zero


def test_unknown_dataset_name_suggests_the_closest():
    with pytest.raises(ZooError) as exc:
        load_dataset("digit")
    assert "digits" in one_line(exc)
