"""Tokens/s of `gpt2lab prepare` against the plain baseline: a process pool mapping
`encode_ordinary` over documents (each result a list of Python ints, pickled back one document at a time).

Same input for both, in one run: Tiny Shakespeare cut into paragraphs, grouped `--per-doc` paragraphs to a
document (web pages, FineWeb's documents, run to hundreds or thousands of tokens; a single Shakespeare
paragraph is only ~46), repeated `--copies` times, written as jsonl. Reports the median of `--repeats`
runs and the ratio.

    .venv/bin/python benchmarks/bench_prepare.py [--copies 64] [--per-doc 20] [--repeats 3] [--workers N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

# Only light imports at module level: spawned pool workers re-import this file, and the baseline
# should not pay for torch (gpt2lab.engine.prepare's workers don't either).
from gpt2lab.engine.tokenizer import EOT_ID, get_encoding


def _encode(text: str) -> list[int]:
    return get_encoding().encode_ordinary(text)


def baseline(jsonl: Path, workers: int) -> int:
    """Read the documents, map encode_ordinary over them in a pool, pack into one uint16 array."""
    with open(jsonl) as f:
        docs = [json.loads(line)["text"] for line in f]
    with mp.Pool(workers) as pool:  # the default start method, as a plain script would
        arrays = [np.array([EOT_ID, *ids], dtype=np.uint16) for ids in pool.imap(_encode, docs, chunksize=16)]
    return int(sum(a.size for a in arrays))


def ours(jsonl: Path, workers: int, out: Path) -> int:
    from gpt2lab.engine.prepare import prepare

    manifest = prepare(str(jsonl), out, shard_size=10_000_000, workers=workers, progress=False)
    return sum(e["tokens"] for e in manifest["shards"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=64, help="repeats of the corpus: ~21.6M tokens at 64, enough that "
                    "start-up (pool, datasets) no longer dominates, as in a real multi-billion-token run")
    ap.add_argument("--per-doc", type=int, default=20, help="paragraphs per document")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--json", default=None, help="write the result here")
    args = ap.parse_args()
    from gpt2lab.base.hardware import hardware_record
    from gpt2lab.engine.corpus import load_text

    paragraphs = [p for p in load_text().split("\n\n") if p.strip()]
    docs = ["\n\n".join(paragraphs[i : i + args.per_doc]) for i in range(0, len(paragraphs), args.per_doc)] * args.copies
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "docs.jsonl"
        jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        times = {"baseline": [], "prepare": []}
        tokens = {}
        for r in range(args.repeats):  # interleaved, so drift in machine load hits both alike
            t0 = time.perf_counter()
            tokens["baseline"] = baseline(jsonl, args.workers)
            times["baseline"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            tokens["prepare"] = ours(jsonl, args.workers, Path(tmp) / f"out{r}")
            times["prepare"].append(time.perf_counter() - t0)
        # the ceiling for any pipeline: the tokenizer alone, in this process, times the number of workers
        with open(jsonl) as f:
            texts = [json.loads(line)["text"] for line in f]
        encode = get_encoding().encode_ordinary
        t0 = time.perf_counter()
        n_serial = sum(len(encode(t)) + 1 for t in texts)
        serial = n_serial / (time.perf_counter() - t0)
    assert tokens["baseline"] == tokens["prepare"] == n_serial, (tokens, n_serial)
    rate = {k: tokens[k] / statistics.median(v) for k, v in times.items()}
    result = {
        "documents": len(docs), "paragraphs_per_doc": args.per_doc, "tokens": tokens["prepare"], "workers": args.workers,
        "baseline_tokens_per_s": rate["baseline"], "prepare_tokens_per_s": rate["prepare"],
        "ratio": rate["prepare"] / rate["baseline"], "times_s": times,
        "single_thread_encode_tokens_per_s": serial, "ceiling_tokens_per_s": serial * args.workers,
        "hardware": {**hardware_record("cpu"), "loadavg": os.getloadavg()},
    }
    print(f"{len(docs):,} documents, {tokens['prepare']:,} tokens, {args.workers} workers")
    print(f"baseline (pool.imap encode_ordinary): {rate['baseline']:,.0f} tok/s")
    print(f"gpt2lab prepare:                      {rate['prepare']:,.0f} tok/s")
    print(f"ratio: {result['ratio']:.2f}x")
    print(f"ceiling ({args.workers} x the tokenizer alone in one thread, {serial:,.0f} tok/s): "
          f"{serial * args.workers:,.0f} tok/s; prepare reaches {rate['prepare'] / (serial * args.workers):.0%} of it")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
