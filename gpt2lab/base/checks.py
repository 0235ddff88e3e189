"""Checks of command-line inputs, run before a command starts its work.

A path that cannot be written, found after an hour of evaluation, loses the hour; so every command checks its
outputs and inputs first, writing nothing while it checks. Each check raises a one-line `UserError` that names
the flag as the user typed it and the value.
"""

from __future__ import annotations

import os
from pathlib import Path

from gpt2lab.base.errors import UserError

def flag(field: str) -> str:
    """The command-line spelling of a setting: max_steps -> --max-steps."""
    return "--" + field.replace("_", "-")


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable_place(path: Path, option: str) -> None:
    """`path` can be created: its nearest existing ancestor is a folder we may write into."""
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise UserError(f"{option} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: no permission to write in {base}")
    _try_writing_in(base, path, option)


def _try_writing_in(folder: Path, path: Path, option: str) -> None:
    """Create and drop a file in `folder`: permissions alone do not tell (root may write anywhere by them, yet
    not in /proc, a read-only mount or a full disk's inode table), and finding out at the end loses the work."""
    import tempfile

    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        raise UserError(f"{option} {path}: cannot write in {folder} ({e.strerror or e})") from None


def output_folder(path: str | os.PathLike, option: str) -> Path:
    """A folder a command will create or write into."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{option} {path}: is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{option} {path}: no permission to write in this folder")
        _try_writing_in(path, path, option)
    else:
        _writable_place(path, option)
    return path


def output_file(path: str | os.PathLike, option: str) -> Path:
    """A file a command will write (or replace) at the end of its work."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder; give a file name, e.g. {path / 'result.json'}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{option} {path}: no permission to write this file")
    _writable_place(path, option)
    return path


def input_file(path: str | os.PathLike, option: str) -> Path:
    """An existing, readable file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{option} {path}: no such file")
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise UserError(f"{option} {path}: no permission to read this file")
    return path
