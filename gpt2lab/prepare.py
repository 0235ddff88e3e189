"""`python -m gpt2lab prepare`: tokenize a corpus into uint16 shards (see gpt2lab.data for the format).

Every source goes through Hugging Face `datasets` in streaming mode, so a local jsonl/parquet/txt file is
read by the same code path as FineWeb-Edu on the hub. Tokenization runs in worker processes that each
encode a batch of documents and send back one uint16 array: pickling a compact array instead of millions
of Python ints is what makes this faster than mapping `encode_ordinary` over documents one by one.
Interrupted runs resume: finished shards are kept and the stream skips the documents they hold.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from gpt2lab import data
from gpt2lab.corpus import CORPORA, corpus_path
from gpt2lab.download import cache_dir
from gpt2lab.errors import UserError
from gpt2lab.tokenizer import EOT_ID, encode_documents, get_encoding

DEFAULT_SOURCE = "HuggingFaceFW/fineweb-edu"
DEFAULT_NAME = "sample-10BT"
DEFAULT_SHARD_SIZE = 100_000_000
LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}
DOCS_PER_TASK = 256


def iter_document_batches(source: str, name: str | None = None, split: str = "train", text_field: str = "text",
                          skip: int = 0, batch_size: int = DOCS_PER_TASK) -> Iterator[list[str]]:
    """Lists of document texts from `source` (a packaged corpus name, a local file or folder, or a hub dataset),
    after skipping the first `skip` documents. Batches, because `datasets` yields them far faster than rows."""
    import datasets  # imported here: the GPU boxes that only train have no `datasets`

    if source in CORPORA:
        source = corpus_path(source)
    path = Path(source)
    if path.exists():
        files = sorted(p for p in path.rglob("*") if p.suffix in LOCAL_BUILDERS) if path.is_dir() else [path]
        kinds = {LOCAL_BUILDERS.get(p.suffix) for p in files}
        if not files or None in kinds or len(kinds) != 1:
            raise UserError(f"{source}: need .jsonl, .json, .parquet or .txt files of one kind, found {[p.name for p in files]}")
        builder = kinds.pop()
        extra = {"sample_by": "document"} if builder == "text" else {}  # a .txt file is one document
        ds = datasets.load_dataset(builder, data_files=[str(p) for p in files], split="train", streaming=True, **extra)
    else:
        if source.startswith((".", "/", "~")) or path.suffix in LOCAL_BUILDERS or source.count("/") > 1:
            raise UserError(f"{source}: no such file or folder")
        ds = datasets.load_dataset(source, name=name, split=split, streaming=True)

    def batches():
        for batch in ds.skip(skip).iter(batch_size=batch_size):
            if text_field not in batch:
                raise UserError(f"{source}: no {text_field!r} column (columns: {sorted(batch)})")
            yield batch[text_field]

    return batches()  # a plain function around the generator, so a bad source fails here, not mid-run


def _worker_pool(workers: int):
    """Tokenizer processes. Where fork exists they inherit the already-loaded BPE tables and start in
    milliseconds; they run only tiktoken, never torch, so forking a process that imported torch is safe."""
    get_encoding()
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method).Pool(workers)


def prepare(source: str, out_dir: str | os.PathLike, name: str | None = None, split: str = "train",
            shard_size: int = DEFAULT_SHARD_SIZE, max_tokens: int | None = None, workers: int | None = None,
            text_field: str = "text", progress: bool = True) -> dict:
    """Write shards of `shard_size` tokens (shard 0 = validation) into out_dir; returns the manifest."""
    if shard_size < 2:
        raise UserError(f"--shard-size must be at least 2 tokens, got {shard_size}")
    if max_tokens is not None and max_tokens < 1:
        raise UserError(f"--max-tokens must be positive, got {max_tokens}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {"source": str(source), "name": name, "split": split, "text_field": text_field,
              "shard_size": shard_size, "max_tokens": max_tokens}
    manifest = {"format": data.FORMAT, "dtype": "uint16", "eot": EOT_ID, "params": params, "shards": [], "complete": False}
    if (out / data.MANIFEST).exists():
        old = data.read_manifest(out)
        if old["params"] != params:
            raise UserError(f"{out} holds shards prepared with other settings {old['params']}; use another --out")
        if old["complete"]:
            return old
        manifest["shards"] = [e for e in old["shards"] if (out / e["file"]).is_file()]
        for entry in manifest["shards"]:  # a shard from an interrupted run is trusted only if it checks out
            data.open_shard(out, entry, verify=True)
    done = manifest["shards"]
    docs_done = done[-1]["docs_done"] if done else 0
    carry = done[-1]["carry"] if done else 0  # tokens of document `docs_done` already in the last shard
    written = sum(e["tokens"] for e in done)
    budget = max_tokens - written if max_tokens is not None else None

    tasks = iter_document_batches(source, name, split, text_field, skip=docs_done)
    from tqdm.auto import tqdm

    bar = tqdm(total=max_tokens, initial=written, unit="tok", unit_scale=True, disable=not progress,
               desc=f"prepare {Path(str(source)).name}")
    buf = np.empty(shard_size, dtype=np.uint16)
    fill = 0
    workers = workers or min(os.cpu_count() or 1, 16)
    pool = _worker_pool(workers) if workers > 1 else None
    try:
        results = pool.imap(encode_documents, tasks) if pool else map(encode_documents, tasks)
        for tokens, lengths in results:
            stripped = carry  # the first document's head already sits in the previous shard
            if carry:
                tokens, lengths = tokens[carry:], lengths.copy()
                lengths[0] -= carry
            ends = np.cumsum(lengths)  # end offset of each document inside `tokens`
            offset = 0
            while offset < tokens.size and budget != 0:
                take = min(shard_size - fill, tokens.size - offset, budget if budget is not None else tokens.size)
                buf[fill : fill + take] = tokens[offset : offset + take]
                fill, offset = fill + take, offset + take
                if budget is not None:
                    budget -= take
                bar.update(take)
                if fill == shard_size:
                    full_docs = int(np.searchsorted(ends, offset, side="right"))
                    entry = data.write_shard(out, len(done), buf)
                    entry["docs_done"] = docs_done + full_docs
                    entry["carry"] = offset - int(ends[full_docs - 1]) if full_docs else offset + stripped
                    done.append(entry)
                    data.write_manifest(out, manifest)
                    fill = 0
            docs_done += lengths.size
            carry = 0
            if budget == 0:
                break
        if fill:
            done.append({**data.write_shard(out, len(done), buf[:fill]), "docs_done": docs_done, "carry": 0})
    finally:
        if pool:
            pool.terminate()
        bar.close()
    if not done:
        raise UserError(f"{source}: no documents to tokenize")
    manifest["complete"] = True
    data.write_manifest(out, manifest)
    return manifest


def corpus_shards(name: str, shard_size: int) -> Path:
    """Shards of a packaged corpus in the cache folder, prepared on first use (one process: it is small).
    An interrupted earlier prepare (manifest not complete) is finished, not used as if whole."""
    folder = cache_dir() / "shards" / f"{name}-{shard_size}"
    if not (folder / data.MANIFEST).exists() or not data.read_manifest(folder).get("complete"):
        prepare(name, folder, shard_size=shard_size, workers=1, progress=False)
    return folder


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=DEFAULT_SOURCE,
                   help=f"hub dataset id, local .jsonl/.parquet/.txt file or folder, or a packaged corpus "
                        f"({', '.join(CORPORA)}) (default: {DEFAULT_SOURCE})")
    p.add_argument("--name", default=None, help=f"hub dataset config (default for FineWeb-Edu: {DEFAULT_NAME})")
    p.add_argument("--split", default="train", help="hub dataset split (default: train)")
    p.add_argument("--text-field", default="text", help="column holding the document text (default: text)")
    p.add_argument("--out", required=True, help="output folder for shards and manifest.json")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="tokens per shard (default: 100M)")
    p.add_argument("--max-tokens", type=int, default=None, help="stop after this many tokens")
    p.add_argument("--workers", type=int, default=None, help="tokenizer processes (default: number of CPUs)")


def run(args: argparse.Namespace) -> int:
    name = args.name if args.name or args.source != DEFAULT_SOURCE else DEFAULT_NAME
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    manifest = prepare(args.source, args.out, name=name, split=args.split, shard_size=args.shard_size,
                       max_tokens=args.max_tokens, workers=args.workers, text_field=args.text_field)
    total = sum(e["tokens"] for e in manifest["shards"])
    print(f"{args.out}: {len(manifest['shards'])} shards, {total:,} tokens (shard 0 is validation)")
    return 0
