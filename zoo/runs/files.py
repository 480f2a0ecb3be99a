"""Files that a kill cannot damage, in one place.

- Writes: a temporary file beside the target, flushed to disk, then renamed over the target
  (rename is atomic on POSIX file systems), so a reader sees the old file or the new one.
- Locks: `flock` on a lock file; the OS drops the lock when its holder dies, so a killed
  process never blocks the next one.
- Checksums: the sha256 of a file, read in chunks.
- Containment: a path built from stored data or names stays inside its folder (`inside`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from zoo.errors import ZooError

FILE_MODE = 0o644
TEMP_SUFFIX = ".tmp"


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed atomic writes left under `folder` (call it only
    while holding the folder's lock: a live writer's temporary file looks the same)."""
    removed = []
    for stale in Path(folder).rglob(f".*{TEMP_SUFFIX}"):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """`write(tmp_path)` produces the file; it becomes `path` only once complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp's 0600 (and safetensors', which writes a file of its own) would hide results
        # from the machine's other users: every file zoo writes is 0644
        os.chmod(tmp, FILE_MODE)
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


def writable_folder(path: str | Path, flag: str) -> Path:
    """`path` as a folder zoo can write into (created if missing), or a one-line error naming
    `flag`: checked before any work, so that a long run does not fail at its first write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ZooError(f"{flag} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZooError(f"{flag} {path}: cannot create the folder ({exc.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ZooError(f"{flag} {path}: the folder is not writable")
    return path


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# One component of a path zoo builds from stored data or names (run ids, protocol ids, registry
# names): no separator, no `..`, nothing a shell or a markdown link would read differently.
PATH_PART = re.compile(r"[A-Za-z0-9_.+-]+")


def path_part(text: str, what: str) -> str:
    """`text` if it can be one component of a path, else a one-line error naming it as `what`
    (e.g. "run id"): letters, digits, `_`, `.`, `+` and `-`, and neither `.` nor `..`."""
    if not isinstance(text, str) or not PATH_PART.fullmatch(text) or text in (".", ".."):
        raise ZooError(f"{what} {text!r} cannot be part of a file name: only letters, digits, "
                       "'_', '.', '+' and '-' are allowed, and not '.' or '..'")
    return text


def within(root: str | Path, path: str | Path) -> bool:
    """Whether `path`, symbolic links resolved, is `root` or inside it."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def inside(root: str | Path, *parts: str) -> Path:
    """`root` joined with `parts` (relative paths, `/` between components), or a one-line error
    when a component is not a `path_part` or, through a symbolic link, the path leaves `root`:
    for every path built from stored data or names."""
    path = Path(root)
    for part in parts:
        for component in str(part).split("/"):
            path = path / path_part(component, f"path {'/'.join(parts)!r}: component")
    if not within(root, path):
        raise ZooError(f"{path} leads outside {root} through a symbolic link; refusing to use it")
    return path
