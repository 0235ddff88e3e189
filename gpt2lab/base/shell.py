"""Commands printed for the user to run: they must run as printed, in the shell that ran this one."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def python_command(executable: str | None = None, cwd: str | os.PathLike | None = None,
                   path: str | None = None) -> str:
    """How to name the interpreter running now so that the user's shell starts the same one.

    `python` when that is what the shell's PATH finds (an activated venv, a conda env); otherwise the path:
    relative when it lies under the current folder (`.venv/bin/python`), absolute elsewhere. Paths are
    compared as typed, not resolved: a venv's python is a link to the system's, but only the venv's sees
    the packages installed in it."""
    exe = Path(executable or sys.executable).absolute()
    for name in ("python", "python3"):
        found = shutil.which(name, path=path)
        if found and Path(found).absolute() == exe:
            return name
    here = Path(cwd or os.getcwd()).absolute()
    try:
        return shlex.quote(str(exe.relative_to(here)))
    except ValueError:
        return shlex.quote(str(exe))
