"""One writer per folder: an advisory OS lock (`fcntl.flock`) on a small file inside it.

The lock belongs to the open file, so the operating system drops it when the process ends, however it ends
(kill -9 included): a dead run never leaves a stale lock behind. The file itself stays (it names the pid of
the last holder); deleting it would let two processes lock two different files of the same name.

Limits: the lock is advisory (only processes that ask for it are kept out) and per machine: on NFS and other
network filesystems `flock` may not reach other machines, so two machines can still share a folder.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from gpt2lab.base.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs there are not locked
    fcntl = None

_HELD: dict[Path, tuple[int, int]] = {}  # lock file -> (file descriptor, how many holders in this process)


def holder(path: Path) -> str:
    """The pid written in a lock file, as text ("an unknown pid" if it is empty or unreadable)."""
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "an unknown pid"


def acquire(folder: str | os.PathLike, name: str = "run.lock", what: str = "a run", create: bool = True) -> Path | None:
    """Lock `folder` for this process or raise UserError naming the live holder. With create=False a folder
    without the lock file is left as it is (no process can hold it) and None is returned: a check that
    writes nothing. Reentrant within a process: each acquire that returns a path needs one release."""
    path = Path(folder).resolve() / name
    if path in _HELD:
        fd, count = _HELD[path]
        _HELD[path] = (fd, count + 1)
        return path
    if not create and not path.is_file():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: a refused process changes nothing
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError(f"{Path(folder)} is in use by {what} still running ({holder(path)}, holding "
                            f"{path.name}); wait for it to end or stop it, or pick another folder") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[path] = (fd, 1)
    return path


def release(path: Path) -> None:
    fd, count = _HELD[path]
    if count > 1:
        _HELD[path] = (fd, count - 1)
        return
    del _HELD[path]
    os.close(fd)  # closing the file drops the lock


@contextmanager
def held(folder: str | os.PathLike, name: str = "run.lock", what: str = "a run",
         create: bool = True) -> Iterator[Path | None]:
    """`with held(folder):` the folder is this process's until the block ends (or the process dies)."""
    path = acquire(folder, name, what, create)
    try:
        yield path
    finally:
        if path is not None:
            release(path)
