"""Built-in image classification data sets.

Every factory returns a `datasets.DatasetDict` with exactly the splits train, validation and test
and one fixed schema:

    image: Array3D(shape=(H, W, C), dtype="uint8")   channels last, 0..255
    label: ClassLabel(names=[...])                    the real class names

Tags: "hflip" marks data sets whose labels survive a horizontal mirror (clothes, objects; not
digits), where flip augmentation and flip test-time augmentation are allowed.

Splits are fixed (stratified, split seed 0), so every run sees the same examples whatever its
training seed. Sources, in order of preference: embedded in a dependency (digits), the local
system (Debian's Fashion-MNIST), the Hugging Face hub (downloaded once, then cached).

`datasets`, `pyarrow` and scikit-learn are imported inside the functions: importing the registry
(`zoo list`) must stay fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zoo.errors import ZooError
from zoo.registry.core import DATASETS
from zoo.sources.arrow_images import dataset_dict, stratified_split
from zoo.sources.hub import hub_image_dataset
from zoo.sources.idx import read_idx_pair

if TYPE_CHECKING:
    import datasets

DEFAULT_DATASET = "digits"

FASHION_MNIST_ENV = "ZOO_FASHION_MNIST_DIR"
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
_FASHION_MNIST_REMEDY = ("reinstall it (apt-get install --reinstall dataset-fashion-mnist) or "
                         f"point {FASHION_MNIST_ENV} at a good copy")


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
    train_images, train_labels = read_idx_pair(directory, "train", _FASHION_MNIST_REMEDY)
    test_images, test_labels = read_idx_pair(directory, "t10k", _FASHION_MNIST_REMEDY)
    for labels, prefix in ((train_labels, "train"), (test_labels, "t10k")):
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise ZooError(f"{directory / f'{prefix}-labels-idx1-ubyte.gz'} has label "
                           f"{labels.max()}, Fashion-MNIST has {len(FASHION_MNIST_CLASSES)} "
                           "classes; reinstall dataset-fashion-mnist")
    kept, held = stratified_split(train_labels, _fashion_mnist_validation_size(len(train_labels)))
    return dataset_dict({
        "train": (train_images[kept], train_labels[kept]),
        "validation": (train_images[held], train_labels[held]),
        "test": (test_images, test_labels),
    }, FASHION_MNIST_CLASSES)


def _fashion_mnist_validation_size(n_train: int) -> int | float:
    # 5000 of the official 60000; a small synthetic copy (tests) keeps the same 1/12 share.
    return 5000 if n_train > 5000 * 2 else 1 / 12


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
    return dataset_dict({
        "train": (images[train], labels[train]),
        "validation": (images[validation], labels[validation]),
        "test": (images[test], labels[test]),
    }, [str(d) for d in range(10)])


@DATASETS.register(
    "fashion-mnist",
    summary="28x28 grayscale Zalando product images, 70000 images, 10 classes",
    paper=("Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms",
           "1708.07747"),
    tags=("image", "local", "offline", "hub", "hflip"),
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
    tags=("image", "hub", "hflip"),
    source_note="Hugging Face hub (uoft-cs/cifar10), downloaded and cached on first use",
)
def cifar10() -> datasets.DatasetDict:
    """CIFAR-10 from the hub; validation is a stratified 10% of the official train."""
    return hub_image_dataset("cifar10", "uoft-cs/cifar10", image_column="img")


@DATASETS.register(
    "cifar100",
    summary="32x32 colour images, 60000 images, 100 fine classes",
    paper=("Learning Multiple Layers of Features from Tiny Images", None),
    tags=("image", "hub", "hflip"),
    source_note="Hugging Face hub (uoft-cs/cifar100), downloaded and cached on first use",
)
def cifar100() -> datasets.DatasetDict:
    """CIFAR-100 (fine labels) from the hub; validation is a stratified 10% of the train."""
    return hub_image_dataset("cifar100", "uoft-cs/cifar100", image_column="img",
                             label_column="fine_label")
