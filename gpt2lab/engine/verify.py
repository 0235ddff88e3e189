"""`python -m gpt2lab verify DIR`: check every shard of a prepared dataset against its manifest.

Training checks each shard's size when it starts and its sha256 when it first reads the shard, which for
FineWeb-Edu's 100 shards can be hours in. Run this after copying a dataset to a new machine: it reads every
byte once (about as long as copying it) and names each bad shard.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from gpt2lab.engine import data
from gpt2lab.base.errors import UserError


def verify(folder, progress: bool = True) -> dict:
    """Check every shard's size and sha256; returns {"shards", "tokens"}, or raises UserError naming the bad ones."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    manifest = data.read_manifest(folder)
    data.require_complete(folder, manifest)
    entries = manifest["shards"]
    total_bytes = sum(e["tokens"] for e in entries) * np.dtype(data.DTYPE).itemsize
    problems = []
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc=f"verify {folder.name}", disable=not progress) as bar:
        for entry in entries:
            problem = data.shard_problem(folder, entry, sha256=True, on_chunk=bar.update)
            if problem:
                problems.append(problem)
    if problems:
        more = f" (and {len(problems) - 1} more bad shard(s))" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}; {len(problems)} of {len(entries)} shards are bad: re-copy them, "
                        "or run `python -m gpt2lab prepare` again into a fresh folder")
    return {"shards": len(entries), "tokens": sum(e["tokens"] for e in entries)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="a prepared dataset folder (holding manifest.json and the shards)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    result = verify(args.dir, progress=not args.no_progress)
    print(f"{args.dir}: all {result['shards']} shards match the manifest ({result['tokens']:,} tokens, sha256 checked)")
    return 0
