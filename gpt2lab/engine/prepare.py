"""`python -m gpt2lab prepare`: tokenize a corpus into uint16 shards (see gpt2lab.engine.data for the format).

Every source goes through Hugging Face `datasets` in streaming mode, so a local jsonl/parquet/txt file is
read by the same code path as FineWeb-Edu on the hub. Tokenization runs in worker processes that each
encode a batch of documents and send back one uint16 array: pickling a compact array instead of millions
of Python ints is what makes this faster than mapping `encode_ordinary` over documents one by one.
Interrupted runs resume: finished shards are kept and the stream skips the documents they hold.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from gpt2lab.engine import data
from gpt2lab.base.atomic import abandoned_temporaries
from gpt2lab.base.checks import output_folder
from gpt2lab.base.hub import hub_unreachable
from gpt2lab.engine.corpus import CORPORA, corpus_path
from gpt2lab.base.download import cache_dir
from gpt2lab.base.errors import UserError
from gpt2lab.engine.tokenizer import EOT_ID, encode_documents, get_encoding

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
    files = local_files(source)
    try:
        if files:
            builder = LOCAL_BUILDERS[files[0].suffix]
            extra = {"sample_by": "document"} if builder == "text" else {}  # a .txt file is one document
            ds = datasets.load_dataset(builder, data_files=[str(p) for p in files], split="train", streaming=True,
                                       **extra)
        else:
            ds = datasets.load_dataset(source, name=name, split=split, streaming=True)
    except (OSError, ValueError) as e:  # not on the hub, no such config or split, unreadable file
        given = f"--source {source}" + (f" --name {name}" if name else "") + (f" --split {split}" if split != "train" else "")
        raise UserError(f"{given}: {e}") from None

    def batches():
        index = skip  # of the next document in the stream
        try:
            for batch in ds.skip(skip).iter(batch_size=batch_size):
                if text_field not in batch:
                    raise UserError(f"--source {source}: no {text_field!r} column (columns: {sorted(batch)}); "
                                    "name the text column with --text-field")
                texts = batch[text_field]
                for i, text in enumerate(texts):
                    if not isinstance(text, str):
                        what = (f"no {text_field!r} field (--text-field names the text column)" if text is None
                                else f"{text_field!r} is {type(text).__name__} {str(text)[:40]!r}, not text")
                        raise UserError(f"--source {_where(source, files, index + i)}: {what}")
                index += len(texts)
                yield texts
        except ValueError as e:  # a line that is not JSON, a column whose type changes, a broken parquet file
            where = _first_bad_json_line(files) or source
            raise UserError(f"--source {where}: cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None

    return batches()  # a plain function around the generator, so a bad source fails here, not mid-run


def is_local(source: str) -> bool:
    """A path (existing or meant as one) rather than a hub dataset id like HuggingFaceFW/fineweb-edu."""
    path = Path(source)
    return path.exists() or source.startswith((".", "/", "~")) or path.suffix in LOCAL_BUILDERS or source.count("/") > 1


def local_files(source: str) -> list[Path]:
    """The files of a local source (a file, or a folder searched recursively), checked; [] for a hub id."""
    if source in CORPORA:
        source = corpus_path(source)
    if not is_local(source):
        return []
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"--source {source}: no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in LOCAL_BUILDERS) if path.is_dir() else [path]
    kinds = {LOCAL_BUILDERS.get(p.suffix) for p in files}
    if not files or None in kinds or len(kinds) != 1:
        raise UserError(f"--source {source}: need .jsonl, .json, .parquet or .txt files of one kind, "
                        f"found {[p.name for p in files]}")
    unreadable = [p for p in files if not os.access(p, os.R_OK)]
    if unreadable:
        raise UserError(f"--source {source}: no permission to read {unreadable[0]}")
    if all(p.stat().st_size == 0 for p in files):  # nothing to tokenize: a dataset of one end-of-text token
        raise UserError(f"--source {source}: {'the file is' if len(files) == 1 else 'every file is'} empty (0 bytes)")
    return files


def _where(source: str, files: list[Path], index: int) -> str:
    """Where document `index` (0-based, counted across `files` in order) is: file and line for JSON Lines."""
    for f in files:
        if f.suffix == ".jsonl":
            with open(f, encoding="utf-8", errors="replace") as lines:
                for lineno, line in enumerate(lines, 1):
                    if line.strip():
                        if index == 0:
                            return f"{f}, line {lineno}"
                        index -= 1
        else:
            return f"{source}, document {index + 1}"  # parquet rows and .json arrays have no useful line
    return f"{source}, document {index + 1}"


def _first_bad_json_line(files: list[Path]) -> str | None:
    """'file, line N' of the first line of a JSON Lines source that is not a JSON object, if there is one."""
    import json

    for f in files:
        if f.suffix != ".jsonl":
            return None
        with open(f, encoding="utf-8", errors="replace") as lines:
            for lineno, line in enumerate(lines, 1):
                try:
                    if line.strip() and not isinstance(json.loads(line), dict):
                        return f"{f}, line {lineno}"
                except ValueError:
                    return f"{f}, line {lineno}"
    return None


def _worker_pool(workers: int):
    """Tokenizer processes. Where fork exists they inherit the already-loaded BPE tables and start in
    milliseconds; they run only tiktoken, never torch, so forking a process that imported torch is safe."""
    get_encoding()
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(method).Pool(workers)


def prepare(source: str, out_dir: str | os.PathLike, name: str | None = None, split: str = "train",
            shard_size: int = DEFAULT_SHARD_SIZE, max_tokens: int | None = None, workers: int | None = None,
            text_field: str = "text", progress: bool = True) -> dict:
    """Write shards of `shard_size` tokens (shard 0 = validation) into out_dir; returns the manifest.
    An earlier, interrupted prepare into out_dir with the same settings is resumed (see resume_point)."""
    if shard_size < 2:
        raise UserError(f"--shard-size must be at least 2 tokens, got {shard_size}")
    if max_tokens is not None and max_tokens < 1:
        raise UserError(f"--max-tokens must be positive, got {max_tokens}")
    out = Path(out_dir)  # created with the first shard: a run that fails before it leaves no empty folder
    params = {"source": str(source), "name": name, "split": split, "text_field": text_field,
              "shard_size": shard_size, "max_tokens": max_tokens}
    manifest = resume_point(out, params)
    if manifest["complete"]:
        return manifest
    done = manifest["shards"]
    written = sum(e["tokens"] for e in done)

    tasks = iter_document_batches(source, name, split, text_field, skip=done[-1]["docs_done"] if done else 0)
    first = next(tasks, None)  # read and check the first documents before a progress bar or workers start
    tasks = itertools.chain([first] if first is not None else [], tasks)
    from tqdm.auto import tqdm

    bar = tqdm(total=max_tokens, initial=written, unit="tok", unit_scale=True, disable=not progress,
               desc=f"prepare {Path(str(source)).name}")
    workers = workers or min(os.cpu_count() or 1, 16)
    pool = _worker_pool(workers) if workers > 1 else None
    try:
        results = pool.imap(encode_documents, tasks) if pool else map(encode_documents, tasks)
        budget = max_tokens - written if max_tokens is not None else None
        write_shards(out, manifest, results, shard_size, budget, bar.update)
    finally:
        if pool:
            pool.terminate()
        bar.close()
    if not done:
        raise UserError(f"{source}: no documents to tokenize")
    manifest["complete"] = True
    data.write_manifest(out, manifest)
    return manifest


def resume_point(out: Path, params: dict) -> dict:
    """The manifest to continue from: a new one, an earlier prepare's finished one (returned as it is when every
    shard it lists is there at its size), or an unfinished one cut to the longest run of its shards, from shard 0,
    that are present and whole (sha256 checked). Shards after the first missing or damaged one are written again,
    and temporary files a kill -9 left are removed, so any state an interrupted prepare can leave resumes to the
    same shards as one uninterrupted run."""
    for leftover in abandoned_temporaries(out) if out.is_dir() else []:
        leftover.unlink(missing_ok=True)
    new = {"format": data.FORMAT, "dtype": "uint16", "eot": EOT_ID, "params": params, "shards": [], "complete": False}
    if not (out / data.MANIFEST).exists():
        return new
    old = data.read_manifest(out)
    if old.get("params") != params:
        raise UserError(f"{out} holds shards prepared with other settings {old.get('params')}; use another --out")
    if old.get("complete") and not any(data.shard_problem(out, e) for e in old["shards"]):
        return old
    for i, entry in enumerate(old["shards"]):
        problem = data.shard_problem(out, entry, sha256=True)
        if problem:
            print(f"gpt2lab prepare: {problem}; it and the {len(old['shards']) - i - 1} listed after it are "
                  "written again", file=sys.stderr, flush=True)
            break
        new["shards"].append(entry)
    return new


def write_shards(out: Path, manifest: dict, results, shard_size: int, budget: int | None, advance) -> None:
    """Pack the tokenized batches (`results`: (tokens, document lengths) pairs, from the first document after
    the manifest's last shard) into shards, each written with the manifest as soon as it is full, then the
    partial last one. Each entry records where the stream stands, so a resume skips exactly what it holds."""
    done = manifest["shards"]
    docs_done = done[-1]["docs_done"] if done else 0
    carry = done[-1]["carry"] if done else 0  # tokens of document `docs_done` already in the last shard
    buf = np.empty(shard_size, dtype=np.uint16)
    fill = 0
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
            advance(take)
            if fill == shard_size:
                out.mkdir(parents=True, exist_ok=True)
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
        out.mkdir(parents=True, exist_ok=True)
        done.append({**data.write_shard(out, len(done), buf[:fill]), "docs_done": docs_done, "carry": 0})


def corpus_shards(name: str, shard_size: int) -> Path:
    """Shards of a packaged corpus in the cache folder, prepared on first use (one process: it is small).
    An interrupted earlier prepare (manifest not complete) is finished, not used as if whole."""
    folder = cache_dir() / "shards" / f"{name}-{shard_size}"
    if not (folder / data.MANIFEST).exists() or not data.read_manifest(folder).get("complete"):
        prepare(name, folder, shard_size=shard_size, workers=1, progress=False)
    return folder


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=DEFAULT_SOURCE, metavar="ID_OR_PATH",
                   help=f"hub dataset id, local .jsonl/.json/.parquet/.txt file or folder, or a packaged corpus "
                        f"({', '.join(CORPORA)}) (default: {DEFAULT_SOURCE})")
    p.add_argument("--name", default=None, help=f"hub dataset config (default for FineWeb-Edu: {DEFAULT_NAME})")
    p.add_argument("--split", default="train", help="hub dataset split (default: train)")
    p.add_argument("--text-field", default="text", metavar="COLUMN",
                   help="column holding the document text (default: text)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder for shards and manifest.json: a new or empty folder, or one holding an "
                        "interrupted prepare with the same settings, which is resumed")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="N",
                   help="tokens per shard (default: 100M); shard 0 is the validation split")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help="stop after this many tokens (default: the whole source)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="tokenizer processes (default: number of CPUs, at most 16)")


def check_inputs(args: argparse.Namespace) -> None:
    """What `prepare` can check before it reads a document: numbers, the output folder, the source."""
    for option, value, least in (("--shard-size", args.shard_size, 2), ("--max-tokens", args.max_tokens, 1),
                                 ("--workers", args.workers, 1)):
        if value is not None and value < least:
            raise UserError(f"{option} must be at least {least}, got {value}")
    out = output_folder(args.out, "--out")
    left = set(abandoned_temporaries(out)) if out.is_dir() else set()  # a kill -9 in the first shard's write
    if out.is_dir() and any(p not in left for p in out.iterdir()) and not (out / data.MANIFEST).is_file():
        raise UserError(f"--out {out}: the folder holds other files and no {data.MANIFEST}; give a new or empty "
                        "folder (shards would be mixed with, or overwrite, what is there)")
    if not local_files(args.source) and args.source not in CORPORA:
        reason = hub_unreachable()
        if reason:
            raise UserError(f"--source {args.source} streams from the Hugging Face hub, but {reason}; give a local "
                            f".jsonl/.parquet/.txt file or folder with --source, or a packaged corpus "
                            f"({', '.join(CORPORA)})")


def run(args: argparse.Namespace) -> int:
    name = args.name if args.name or args.source != DEFAULT_SOURCE else DEFAULT_NAME
    check_inputs(args)
    import datasets

    datasets.utils.logging.set_verbosity(datasets.logging.CRITICAL)  # its errors reach the user as our one line
    manifest = prepare(args.source, args.out, name=name, split=args.split, shard_size=args.shard_size,
                       max_tokens=args.max_tokens, workers=args.workers, text_field=args.text_field)
    total = sum(e["tokens"] for e in manifest["shards"])
    print(f"{args.out}: {len(manifest['shards'])} shards, {total:,} tokens (shard 0 is validation)")
    return 0
