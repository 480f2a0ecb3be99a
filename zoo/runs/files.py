"""Files that a kill cannot damage, in one place.

- Writes: a temporary file beside the target, flushed to disk, then renamed over the target
  (rename is atomic on POSIX file systems), so a reader sees the old file or the new one.
- Locks: `flock` on a lock file; the OS drops the lock when its holder dies, so a killed
  process never blocks the next one.
- Checksums: the sha256 of a file, read in chunks.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """`write(tmp_path)` produces the file; it becomes `path` only once complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from other users of the machine
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def file_lock(path: str | Path, wait: bool = True, owner: str | None = None) -> Iterator[bool]:
    """Holds an exclusive lock on `path` (created if missing) for the block. With `wait`, blocks
    until the lock is free and yields True. Without, yields False at once if another process
    holds it (the lock file then says who: its `owner`). `owner`, if given, is written into the
    lock file while the lock is held."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            acquired = True
        except BlockingIOError:
            acquired = False
        if not acquired:  # outside the except: an error raised by the caller chains nothing
            yield False
            return
        if owner is not None:
            handle.seek(0)
            handle.truncate()
            handle.write(owner)
            handle.flush()
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_owner(path: str | Path) -> str:
    """Who holds the lock file at `path`, as its holder wrote it ("" if it did not)."""
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
