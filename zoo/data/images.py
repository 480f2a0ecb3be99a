"""From a registered data set to tensors on the device.

Small image data sets live on the device for the whole run: they are converted once (Arrow ->
numpy -> torch, no per-example Python work), normalized with the train split's per-channel
mean/std, and minibatches are drawn by indexing device tensors with a permutation.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from zoo.errors import ZooError
from zoo.registry import DATASETS
from zoo.sources.arrow_images import image_arrays

if TYPE_CHECKING:
    import datasets

SPLITS = ("train", "validation", "test")
SCHEMA = "image: Array3D(shape=(H, W, C), dtype='uint8'), label: ClassLabel(names=[...])"


# --- Loading and validating ---------------------------------------------------------------------

def load_dataset(name: str) -> datasets.DatasetDict:
    """The registered data set `name`, checked against the fixed image schema."""
    entry = DATASETS.get(name)  # unknown name: the registry's one-line ZooError
    ds = entry.create()
    validate_image_dataset(ds, name, source=entry.source)
    return ds


def validate_image_dataset(ds: object, name: str, source: str = "") -> None:
    """Raise a one-line ZooError saying what is wrong if `ds` does not follow the fixed schema."""
    import datasets

    where = f"data set '{name}'" + (f" ({source})" if source and source != "builtin" else "")

    def fail(problem: str) -> ZooError:
        return ZooError(f"{where} {problem}; a data set factory must return a DatasetDict with "
                        f"splits {', '.join(SPLITS)} and features {SCHEMA}")

    if not isinstance(ds, datasets.DatasetDict):
        raise fail(f"returned a {type(ds).__name__}, not a datasets.DatasetDict")
    if set(ds) != set(SPLITS):
        raise fail(f"has splits {sorted(ds)}")
    reference = None
    for split in SPLITS:
        features = ds[split].features
        if set(features) != {"image", "label"}:
            raise fail(f"has columns {sorted(features)} in '{split}'")
        image, label = features["image"], features["label"]
        if not isinstance(image, datasets.Array3D) or image.dtype != "uint8":
            raise fail(f"has an 'image' feature {image!r} in '{split}'")
        if not all(isinstance(s, int) and s > 0 for s in image.shape):
            raise fail(f"has no fixed image shape ({image.shape}) in '{split}'")
        if not isinstance(label, datasets.ClassLabel) or label.num_classes < 2:
            raise fail(f"has a 'label' feature {label!r} in '{split}'")
        if reference is None:
            reference = (tuple(image.shape), tuple(label.names))
        elif (tuple(image.shape), tuple(label.names)) != reference:
            raise fail(f"has different image shapes or class names in '{split}' and 'train'")
        if len(ds[split]) == 0:
            raise fail(f"has an empty '{split}' split")


# --- Device tensors -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DataSpec:
    """What a model and a trainer need to know about a data set as it sits on the device.

    `mean`/`std` are per channel, in [0, 1] pixel units, from the whole train split (also when
    `limit` truncated it, so a quick run normalizes like a full one). `sizes` are the numbers of
    examples held per split (after `limit`).
    """

    name: str
    image_size: tuple[int, int]
    channels: int
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sizes: dict[str, int] = field(default_factory=dict, hash=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one example, as the tensors hold it."""
        return (self.channels, *self.image_size)


@dataclass
class ImageTensors:
    """Each split as (x float32 NCHW normalized, y int64), all on one device."""

    spec: DataSpec
    train: tuple[torch.Tensor, torch.Tensor]
    validation: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in SPLITS:
            raise ZooError(f"unknown split '{name}'; pick one of {', '.join(SPLITS)}")
        return getattr(self, name)


def to_device_tensors(ds: datasets.DatasetDict, name: str, device: torch.device | str = "cpu",
                      limit: dict[str, int] | None = None) -> ImageTensors:
    """Convert a fixed-schema DatasetDict to normalized device tensors.

    `limit` keeps the first N examples of the named splits (deterministic; for quick tests).
    """
    validate_image_dataset(ds, name)
    limit = dict(limit or {})
    unknown = set(limit) - set(SPLITS)
    if unknown:
        raise ZooError(f"limit names unknown splits {sorted(unknown)}; use {', '.join(SPLITS)}")
    if any(not isinstance(n, int) or n < 0 for n in limit.values()):
        raise ZooError(f"limit must map splits to non-negative integers, got {limit}")
    features = ds["train"].features
    height, width, channels = features["image"].shape
    class_names = tuple(features["label"].names)
    device = torch.device(device)

    train_images, train_labels = split_arrays(ds["train"])
    mean, std = channel_mean_std(train_images)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    tensors = {}
    for split in SPLITS:
        n = limit.get(split)
        if split == "train":
            images, labels = train_images[:n], train_labels[:n]
        else:
            images, labels = split_arrays(ds[split], n)
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ZooError(f"data set '{name}' has labels outside 0..{len(class_names) - 1} in "
                           f"'{split}'; its ClassLabel names do not match the labels")
        # uint8 travels to the device (4x less than float32); the conversion happens there.
        x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2)
        x = x.to(torch.float32, memory_format=torch.contiguous_format)
        x = x.mul_(1 / 255).sub_(mean_t).div_(std_t)
        y = torch.from_numpy(labels).to(device)
        tensors[split] = (x, y)

    spec = DataSpec(
        name=name, image_size=(height, width), channels=channels, num_classes=len(class_names),
        class_names=class_names, mean=mean, std=std,
        sizes={split: len(tensors[split][1]) for split in SPLITS},
    )
    return ImageTensors(spec=spec, **tensors)


def split_arrays(split: datasets.Dataset, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` (or all) examples as (N, H, W, C) uint8 and (N,) int64 numpy arrays."""
    return image_arrays(split, n)


def channel_mean_std(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (N, H, W, C) uint8 images, in [0, 1] units.

    Exact, from a 256-bin histogram per channel (no float copy of the whole set); a channel with
    zero spread gets std 1 so normalizing never divides by zero.
    """
    channels = images.shape[-1]
    flat = images.reshape(-1, channels)
    counts = np.zeros((channels, 256), dtype=np.int64)
    step = 1 << 20
    for start in range(0, len(flat), step):
        block = flat[start:start + step]
        for c in range(channels):
            counts[c] += np.bincount(block[:, c], minlength=256)
    levels = np.arange(256, dtype=np.float64) / 255
    total = max(len(flat), 1)
    mean = counts @ levels / total
    var = np.maximum(counts @ levels**2 / total - mean**2, 0.0)
    std = np.sqrt(var)
    std[std == 0] = 1.0
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# --- Minibatches --------------------------------------------------------------------------------

def epoch_seed(seed: int, epoch: int) -> int:
    """The generator seed of one epoch: a hash of (seed, epoch), so epoch k's order is fixed by
    the pair alone and a resumed run draws the same order as an uninterrupted one."""
    digest = hashlib.blake2b(f"zoo-shuffle:{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # < 2**63


class ShiftFlip:
    """Random translations by up to `shift` pixels (the border filled with `fill`, per channel:
    black after normalization) and, with `flip`, random horizontal mirrors; each example draws
    its own. The draws come from a CPU generator, so they are the same on every device."""

    def __init__(self, shift: int = 0, flip: bool = False, fill: tuple[float, ...] = (0.0,)):
        self.shift, self.flip, self.fill = int(shift), bool(flip), fill

    def __bool__(self) -> bool:
        return self.shift > 0 or self.flip

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, channels, height, width = x.shape
        if self.flip:
            mirrored = (torch.rand(n, generator=generator) < 0.5).to(x.device)
            x = torch.where(mirrored.view(n, 1, 1, 1), x.flip(3), x)
        if self.shift:
            s = self.shift
            fill = torch.tensor(self.fill, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            padded = fill.expand(n, channels, height + 2 * s, width + 2 * s).clone()
            padded[:, :, s:s + height, s:s + width] = x
            # each example's window: rows dy..dy+H-1 and columns dx..dx+W-1 of its padded copy
            dy, dx = torch.randint(0, 2 * s + 1, (2, n), generator=generator).to(x.device)
            rows = (dy[:, None] + torch.arange(height, device=x.device)).view(n, 1, height, 1)
            cols = (dx[:, None] + torch.arange(width, device=x.device)).view(n, 1, 1, width)
            x = padded.gather(2, rows.expand(n, channels, height, width + 2 * s))
            x = x.gather(3, cols.expand(n, channels, height, width))
        return x


class ShuffledBatches:
    """Shuffled (x, y) minibatches of tensors already on the device, optionally augmented.

    The permutation and the augmentation's draws come from CPU generators seeded by (seed,
    epoch) (the same on every device, and on resume) and move to the tensors' device; batches
    are index_select calls, no per-example Python work.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int,
                 drop_last: bool = False, augment: ShiftFlip | None = None):
        if len(x) != len(y):
            raise ZooError(f"x has {len(x)} examples but y has {len(y)}")
        if batch_size < 1:
            raise ZooError(f"batch size must be at least 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = drop_last
        self.augment = augment if augment else None

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator(device="cpu").manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(len(self.x), generator=generator).to(self.x.device)

    def epoch(self, k: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.permutation(k)
        draws = torch.Generator(device="cpu").manual_seed(epoch_seed(self.seed, k) ^ 0x5A5A)
        for i in range(len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.x.index_select(0, index)
            yield (self.augment(x, draws) if self.augment else x), self.y.index_select(0, index)


def black_level(spec: DataSpec) -> tuple[float, ...]:
    """A black pixel after normalization, per channel (what shifted-in borders show)."""
    return tuple(-m / s for m, s in zip(spec.mean, spec.std))


def eval_batches(x: torch.Tensor, y: torch.Tensor,
                 batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x, y) minibatches in order (views, no copies)."""
    if batch_size < 1:
        raise ZooError(f"batch size must be at least 1, got {batch_size}")
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size], y[start:start + batch_size]
