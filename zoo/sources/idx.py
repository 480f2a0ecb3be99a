"""IDX files (the MNIST family's format), gzipped, read with numpy."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from zoo.errors import ZooError, one_line

_IDX_UBYTE = 0x08


def read_idx(path: str | Path, ndim: int, fix: str) -> np.ndarray:
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
        raise ZooError(f"corrupt data file {path} ({one_line(exc)}); {fix}") from exc

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


def read_idx_pair(directory: Path, prefix: str, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """`<prefix>-images-idx3-ubyte.gz` and `<prefix>-labels-idx1-ubyte.gz` as (N,H,W,1), (N,)."""
    images_path = directory / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = directory / f"{prefix}-labels-idx1-ubyte.gz"
    images = read_idx(images_path, ndim=3, fix=fix)
    labels = read_idx(labels_path, ndim=1, fix=fix).astype(np.int64)
    if len(images) != len(labels):
        raise ZooError(f"{images_path} has {len(images)} images but {labels_path} has "
                       f"{len(labels)} labels; {fix}")
    return images[..., None], labels
