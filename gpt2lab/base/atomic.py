"""Atomic file writes: readers see the old file or the whole new one, never a torn one.

Checkpoints, shards, manifests, downloads and the training log are all written this way. The bytes go to a
temporary file beside the destination (same folder, so the rename never crosses a filesystem), are flushed
to disk, and only then renamed over the destination. If anything fails on the way (a full disk, a crash,
a checksum that does not match), the temporary file is removed and the destination is untouched.
"""

from __future__ import annotations

import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def temporary_name(path: Path) -> Path:
    """A hidden name beside `path`, unique per write, so two writers (or a crashed one) never collide."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")


def abandoned_temporaries(folder: str | os.PathLike) -> list[Path]:
    """The temporary files in `folder` that a write killed mid-way left (kill -9 skips the cleanup): those whose
    writing process no longer exists. A live writer's file is never listed."""
    found = []
    for path in sorted(Path(folder).glob(".*.tmp")):
        match = _TEMPORARY.fullmatch(path.name)
        if match and not _alive(int(match["pid"])):
            found.append(path)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """`with atomic_write(path) as f: f.write(...)`: `path` is replaced only if the block finishes."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes whole files: mode 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, mode.replace("w", "x")) as f:  # "x": never reuse an existing file
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a power cut right after it must not bring back the old file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
