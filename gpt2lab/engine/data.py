"""Token shards on disk and the loader that turns them into (x, y) batches.

A dataset folder holds `manifest.json` and shards `shard_000000.bin`, ... Each shard is a flat array of
uint16 token ids (GPT-2's 50257 ids fit in 16 bits, halving disk and memory against int32). Every document
starts with `<|endoftext|>`, so document boundaries can be recovered from the tokens alone; documents may
continue from one shard into the next. Shard 0 is the validation split, the rest are training.

Shards are written to a temporary name and renamed into place, and the manifest records each shard's
token count and sha256: a partial or corrupt shard is refused with an error that names the file. A loader
checks every shard's size when it starts (a `stat`, instant: a shard cut short by a failed copy is found
before training, not hours in) and each shard's sha256 when it first reads it; `python -m gpt2lab verify DIR`
checks every sha256 up front. A loader's saved position carries the dataset's fingerprint (the sha256 of its
list of shards), so a run is never resumed on data that changed since.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gpt2lab.base import atomic
from gpt2lab.base.download import sha256_file
from gpt2lab.base.errors import UserError
from gpt2lab.engine.tokenizer import EOT_ID, VOCAB_SIZE

MANIFEST = "manifest.json"
FORMAT = "gpt2lab-shards-v1"
DTYPE = np.uint16


def shard_name(index: int) -> str:
    return f"shard_{index:06d}.bin"


def write_shard(folder: Path, index: int, tokens: np.ndarray) -> dict:
    """Write one shard atomically; returns its manifest entry."""
    tokens = np.ascontiguousarray(tokens, dtype=DTYPE)
    path = folder / shard_name(index)
    atomic.write_bytes(path, tokens.tobytes())
    return {
        "file": path.name,
        "split": "val" if index == 0 else "train",
        "tokens": int(tokens.size),
        "sha256": hashlib.sha256(tokens.tobytes()).hexdigest(),
    }


def read_manifest(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise UserError(f"{folder} is not a prepared dataset (no {MANIFEST}); run `python -m gpt2lab prepare` first")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path} is not a gpt2lab manifest (a JSON {type(manifest).__name__}, not an object)")
    if manifest.get("format") != FORMAT:
        raise UserError(f"{path}: unknown format {manifest.get('format')!r}, expected {FORMAT!r}")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(isinstance(e, dict) and {"file", "split", "tokens", "sha256"} <= set(e)
                                               for e in shards):
        raise UserError(f"{path}: its `shards` must be a list of {{file, split, tokens, sha256}} entries; "
                        "prepare the dataset again")
    return manifest


def fingerprint(manifest: dict) -> str:
    """The sha256 of a dataset's list of shards (name, split, tokens, sha256 of each): equal only for the same
    tokens in the same shards. A checkpoint records it, so a resume on other data is refused."""
    rows = [[e["file"], e["split"], e["tokens"], e["sha256"]] for e in manifest["shards"]]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def write_manifest(folder: Path, manifest: dict) -> None:
    atomic.write_text(folder / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def require_complete(folder: Path, manifest: dict) -> None:
    """Refuse the shards of a `prepare` that did not finish: training on them would silently use a prefix."""
    if manifest.get("complete") is not True:
        raise UserError(f"{folder} holds an unfinished prepare ({MANIFEST} says complete: false, "
                        f"{len(manifest.get('shards', []))} shards so far); run the same `python -m gpt2lab prepare` "
                        "command again to finish it")


def shard_problem(folder: Path, entry: dict, sha256: bool = False, on_chunk=None) -> str | None:
    """What is wrong with one shard (missing, wrong size, wrong sha256), or None. The size is a `stat`;
    the sha256 reads the whole file."""
    path = folder / entry["file"]
    if not path.is_file():
        return f"shard {path} listed in the manifest is missing"
    size, expected = path.stat().st_size, entry["tokens"] * np.dtype(DTYPE).itemsize
    if size != expected:
        return f"shard {path} is truncated or corrupt: {size} bytes, manifest says {expected}"
    if sha256 and sha256_file(path, on_chunk) != entry["sha256"]:
        return f"shard {path} is corrupt: its sha256 does not match the manifest"
    return None


def open_shard(folder: Path, entry: dict, verify: bool = True) -> np.ndarray:
    """Memory-map a shard after checking its size (always) and its sha256 (when verify)."""
    problem = shard_problem(folder, entry, sha256=verify)
    if problem:
        raise UserError(problem)
    return np.memmap(folder / entry["file"], dtype=DTYPE, mode="r")


def permute_documents(tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The shard's documents in a random order (a copy). Documents start at each <|endoftext|>;
    a leading piece continued from the previous shard counts as one document."""
    starts = np.flatnonzero(tokens == EOT_ID)
    if starts.size == 0 or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    bounds = np.append(starts, tokens.size)
    order = rng.permutation(starts.size)
    return np.concatenate([tokens[bounds[i] : bounds[i + 1]] for i in order])


@dataclass
class LoaderState:
    epoch: int = 0
    shard: int = 0  # index into this epoch's shard order
    pos: int = 0  # token offset of the current global batch within the (permuted) shard


class ShardLoader:
    """Yields (x, y) int64 batches of shape (B, T) from one split, forever (epoch after epoch).

    Each global batch is world_size * B * T consecutive tokens; rank r takes the r-th slice, so ranks never
    read the same token and together cover every full global batch. For the training split, the shard order
    and the document order inside each shard are re-permuted every epoch from (seed, epoch): the same seed
    gives the same stream on any number of ranks. Validation is read in file order.
    `state_dict()` / `load_state_dict()` restore the exact position.
    """

    def __init__(self, folder, split: str, batch_size: int, seq_len: int, rank: int = 0, world_size: int = 1,
                 seed: int = 1337, permute: bool | None = None, verify: bool = True):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if batch_size < 1 or seq_len < 1:
            raise UserError(f"batch size and sequence length must be positive, got B={batch_size}, T={seq_len}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        require_complete(self.folder, manifest)
        self.fingerprint = fingerprint(manifest)
        self.entries = [e for e in manifest["shards"] if e["split"] == split]
        if not self.entries:
            raise UserError(f"{self.folder} has no {split} shards")
        for entry in self.entries:  # sizes now (instant); each sha256 when the shard is first read
            problem = shard_problem(self.folder, entry)
            if problem:
                raise UserError(f"{problem}; `python -m gpt2lab verify {self.folder}` checks every shard")
        self.B, self.T, self.rank, self.world = batch_size, seq_len, rank, world_size
        self.global_tokens = batch_size * seq_len * world_size
        usable = [e for e in self.entries if e["tokens"] > self.global_tokens]
        if not usable:
            biggest = max(e["tokens"] for e in self.entries)
            raise UserError(
                f"{split} shards in {self.folder} are too small for one batch: need more than "
                f"B*T*world = {self.global_tokens} tokens per shard, the largest has {biggest}"
            )
        self.entries = usable
        self.seed = seed
        self.permute = (split == "train") if permute is None else permute
        self.verify = verify
        self.state = LoaderState()
        self._cache: tuple[tuple[int, int], np.ndarray] | None = None
        self._verified: set[str] = set()

    def _order(self, epoch: int) -> list[int]:
        if not self.permute:
            return list(range(len(self.entries)))
        return [int(i) for i in np.random.default_rng((self.seed, epoch)).permutation(len(self.entries))]

    def _tokens(self) -> np.ndarray:
        key = (self.state.epoch, self.state.shard)
        if self._cache is None or self._cache[0] != key:
            index = self._order(self.state.epoch)[self.state.shard]
            entry = self.entries[index]
            verify = self.verify and entry["file"] not in self._verified
            tokens = open_shard(self.folder, entry, verify=verify)
            self._verified.add(entry["file"])
            if self.permute:
                tokens = permute_documents(tokens, np.random.default_rng((self.seed, self.state.epoch, index)))
            self._cache = (key, tokens)
        return self._cache[1]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self._tokens()
        start = self.state.pos + self.rank * self.B * self.T
        chunk = torch.from_numpy(tokens[start : start + self.B * self.T + 1].astype(np.int64))
        x, y = chunk[:-1].view(self.B, self.T), chunk[1:].view(self.B, self.T)
        self._advance(tokens.size)
        return x, y

    def _advance(self, shard_tokens: int) -> None:
        self.state.pos += self.global_tokens
        if self.state.pos + self.global_tokens + 1 > shard_tokens:  # next global batch would not fit
            self.state.pos = 0
            self.state.shard += 1
            if self.state.shard == len(self.entries):
                self.state.shard = 0
                self.state.epoch += 1

    def reset(self) -> None:
        self.state = LoaderState()

    def state_dict(self) -> dict:
        return {"epoch": self.state.epoch, "shard": self.state.shard, "pos": self.state.pos,
                "seed": self.seed, "global_tokens": self.global_tokens, "data": self.fingerprint}

    def load_state_dict(self, state: dict) -> None:
        """Continue at a saved position; refused if it was saved over other data (positions from before the
        fingerprint was saved are taken as they are)."""
        if state.get("data", self.fingerprint) != self.fingerprint:
            raise UserError(f"{self.folder} is not the data the checkpoint was trained on: its {MANIFEST} lists other "
                            f"shards (data fingerprint {self.fingerprint[:12]}, the checkpoint's {state['data'][:12]}); "
                            "resume on the data the run started with, or start a new run")
        if state["global_tokens"] != self.global_tokens or state["seed"] != self.seed:
            raise UserError(
                "the checkpoint's data position was saved with a different global batch or seed "
                f"({state['global_tokens']} tokens, seed {state['seed']}; now {self.global_tokens}, seed {self.seed})"
            )
        self.state = LoaderState(state["epoch"], state["shard"], state["pos"])

    def batches_per_epoch(self) -> int:
        return sum((e["tokens"] - 1) // self.global_tokens for e in self.entries)


def val_loss_pairs(folder, batch_size: int, seq_len: int, steps: int,
                   world_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The (input, target) token pairs a validation loss of `steps` batches scores, read by the very loader
    the trainer uses: the first steps * batch_size * seq_len * world_size validation tokens, in file order
    (under DDP each rank reads its slice of every global batch, and the ranks' mean covers them all)."""
    loader = ShardLoader(folder, "val", batch_size * world_size, seq_len, verify=False)
    xs, ys = zip(*(loader.next_batch() for _ in range(steps)))
    return torch.cat(xs).flatten().numpy(), torch.cat(ys).flatten().numpy()


def _whole_val_pairs(folder, manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    prev, nxt = [], []
    for entry in manifest["shards"]:
        if entry["split"] == "val":  # pairs never cross shards
            tokens = np.asarray(open_shard(Path(folder), entry, verify=False), dtype=np.int64)
            prev.append(tokens[:-1])
            nxt.append(tokens[1:])
    return np.concatenate(prev), np.concatenate(nxt)


def _train_unigram(folder, manifest: dict) -> np.ndarray:
    """Token probabilities on the training split, add-one smoothed over GPT-2's vocabulary."""
    counts = np.ones(VOCAB_SIZE, dtype=np.float64)  # add-one: unseen tokens keep non-zero probability
    for entry in manifest["shards"]:
        if entry["split"] == "train":
            counts += np.bincount(open_shard(Path(folder), entry, verify=False), minlength=VOCAB_SIZE)[:VOCAB_SIZE]
    return counts / counts.sum()


def unigram_baseline(folder, pairs: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """Validation loss (nats/token) of the best model that ignores context: each token predicted with its
    training-split frequency (add-one smoothed over GPT-2's vocabulary). A trained GPT must beat it.
    Scored on the targets of `pairs` (see `val_loss_pairs`: the tokens a run's val loss scores), or on every
    token of the validation split when None."""
    manifest = read_manifest(folder)
    logp = np.log(_train_unigram(folder, manifest))
    if pairs is None:
        val = [open_shard(Path(folder), e, verify=False) for e in manifest["shards"] if e["split"] == "val"]
        targets = np.concatenate([np.asarray(t) for t in val])
    else:
        targets = np.asarray(pairs[1])
    return float(-logp[targets.astype(np.int64)].mean())


def bigram_baseline(folder, discount: float = 0.75, pairs: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """Validation loss (nats/token) of a table of counts with one token of context: P(next | previous) counted
    on the training split, with absolute discounting (each seen pair gives up `discount` of a count, shared out
    by the unigram of `unigram_baseline`; a previous token never seen falls back to that unigram). No training
    and no network: the yardstick for what one token of context is worth on this corpus. Scored on `pairs`
    (input, target), or on every adjacent pair of the validation split when None."""
    if not 0 < discount < 1:
        raise ValueError(f"discount must be between 0 and 1, got {discount}")
    vocab = VOCAB_SIZE
    manifest = read_manifest(folder)
    unigram = _train_unigram(folder, manifest)
    train_pairs = []
    for entry in manifest["shards"]:
        if entry["split"] == "train":
            tokens = np.asarray(open_shard(Path(folder), entry, verify=False), dtype=np.int64)
            train_pairs.append(tokens[:-1] * vocab + tokens[1:])  # (previous, next) as one integer
    seen, counts = np.unique(np.concatenate(train_pairs), return_counts=True)
    previous = seen // vocab
    context = np.bincount(previous, weights=counts, minlength=vocab)  # how often each token has a successor
    kinds = np.bincount(previous, minlength=vocab)  # how many different successors it has
    a, b = (np.asarray(t, dtype=np.int64) for t in (pairs or _whole_val_pairs(folder, manifest)))
    query = a * vocab + b
    at = np.minimum(np.searchsorted(seen, query), len(seen) - 1)
    pair_count = np.where(seen[at] == query, counts[at], 0)
    c = np.maximum(context[a], 1)
    p = np.where(context[a] > 0,
                 np.maximum(pair_count - discount, 0) / c + discount * kinds[a] / c * unigram[b],
                 unigram[b])
    return float(-np.log(p).mean())
