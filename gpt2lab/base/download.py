"""Download a file once into a cache folder, verified by sha256.

Evaluation data must be byte-for-byte the file the reference numbers were measured on, so every fetch
is checked against a known sha256. The download goes to a temporary file next to the destination and
is renamed into place only once its hash matches: an interrupted or corrupted download never leaves a
file that a later run would trust.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from gpt2lab.base.atomic import atomic_write

CACHE_ENV = "GPT2LAB_CACHE"


class DownloadError(OSError):
    """The URL could not be read (no network, HTTP error, timeout)."""


class ChecksumError(ValueError):
    """A file's bytes are not the ones expected."""


def cache_dir() -> Path:
    """Where downloads live: $GPT2LAB_CACHE, else ~/.cache/gpt2lab."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/gpt2lab").expanduser()


def sha256_file(path: str | os.PathLike, on_chunk: Callable[[int], object] | None = None) -> str:
    """The file's sha256, read in 1 MiB chunks; `on_chunk(nbytes)` after each (for a progress bar)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
    return h.hexdigest()


def fetch(url: str, sha256: str, dest: str | os.PathLike, *, progress: bool = True, timeout: float = 60) -> Path:
    """`dest`, downloaded from `url` first if it is not there yet; either way its sha256 is checked.

    A cached file with the wrong hash is reported, not silently replaced: it may be a file the user put
    there on purpose, and deleting it is their call.
    """
    dest = Path(dest)
    if dest.exists():
        got = sha256_file(dest)
        if got != sha256:
            raise ChecksumError(
                f"{dest} has sha256 {got}, expected {sha256}: it is not the file from {url}; "
                "delete it to download it again"
            )
        return dest
    with atomic_write(dest) as f:  # readers see no file or the whole verified file
        got = _copy(url, f, desc=dest.name, progress=progress, timeout=timeout)
        if got != sha256:  # raising inside the block discards the temporary file
            raise ChecksumError(f"download of {url} has sha256 {got}, expected {sha256}; nothing was saved to {dest}")
    return dest


def _copy(url: str, f, *, desc: str, progress: bool, timeout: float) -> str:
    """Stream `url` into the open file `f`, returning the sha256 of what was written."""
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
    except OSError as e:  # URLError, HTTPError, timeouts and connection resets are all OSErrors
        reason = getattr(e, "reason", None) or e
        raise DownloadError(f"could not download {url}: {reason}") from e
    return h.hexdigest()


def unreachable(url: str, timeout: float = 2.0) -> str | None:
    """Why `url`'s host cannot be reached within `timeout` seconds, or None if a TCP connection opens (to the
    HTTPS proxy instead, when one is set). A quick probe before a command that needs the network, so an
    offline machine gets one clear line in seconds instead of a library's minute of retries."""
    import socket
    import urllib.parse

    target = urllib.parse.urlsplit(urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme) or url)
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"cannot reach {host}:{port} ({e.strerror or str(e) or type(e).__name__})"
    return None
