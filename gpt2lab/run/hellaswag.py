"""HellaSwag, scored completion-style as in the video: the yardstick a GPT-2 reproduction is measured by.

Each example is a context and four candidate endings, one of them right. A language model "answers" by
finding the ending it thinks most likely after the context: every ending is appended to the context,
and the ending whose tokens get the lowest cross-entropy wins. `acc` compares the summed loss over an
ending's tokens (which favours short endings); `acc_norm` compares the mean per token.

Scoring is batched: many examples go through the model in one forward pass, padded at the END (a causal
model's outputs at real positions cannot see later pad tokens, so padding changes nothing). For a
compiled model the lengths are rounded up to a few fixed buckets, so it compiles once per bucket, not
once per length. Under DDP each rank scores every world_size-th example and the counts are all-reduced.

    python -m gpt2lab hellaswag --pretrained gpt2 --json results/hellaswag-gpt2.json  (gpt2lab.cli.hellaswag)
"""

from __future__ import annotations

import contextlib
from importlib import resources
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from gpt2lab.base.download import DownloadError, cache_dir, fetch
from gpt2lab.engine.model import GPT
from gpt2lab.base.stats import format_accuracy, wilson_interval
from gpt2lab.engine.tokenizer import get_encoding

# The official validation split: rowanz/hellaswag, data/hellaswag_val.jsonl (MIT license).
OFFICIAL_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"
OFFICIAL_SHA256 = "0aa3b88843990f3f10a97b9575c94d7b71fb2205240ba04ae4884d9e9c992588"
OFFICIAL_SIZE = 10042  # examples
DATA_ENV = "GPT2LAB_HELLASWAG"  # a local copy of the file, used instead of the download

# Reference scores on the full validation set.
# OpenAI's GPT-2 124M weights, completion style (the scoring implemented here): the video "Let's
# reproduce GPT-2 (124M)" and karpathy/build-nanogpt (notes at the top of its hellaswag.py).
GPT2_124M = {"acc": 0.2859, "acc_norm": 0.2955}
# GPT-3 Small (125M), zero-shot: Brown et al. 2020, "Language Models are Few-Shot Learners"
# (arXiv:2005.14165), Table H.1, HellaSwag 33.7; the upper line in the video's plot.
GPT3_124M = {"acc_norm": 0.337}
CHANCE = 0.25  # four endings, one right


class HellaSwagDataError(ValueError):
    """A data file that is not HellaSwag jsonl; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    ctx: str
    endings: tuple[str, str, str, str]
    label: int  # index of the right ending

    def __post_init__(self):
        if not isinstance(self.ctx, str) or not self.ctx:
            raise ValueError("'ctx' must be a non-empty string")
        if not isinstance(self.endings, (list, tuple)) or len(self.endings) != 4:
            raise ValueError("'endings' must be a list of 4 strings")
        if not all(isinstance(e, str) for e in self.endings):
            raise ValueError("'endings' must be a list of 4 strings")
        if isinstance(self.label, bool) or not isinstance(self.label, int) or not 0 <= self.label <= 3:
            raise ValueError(f"'label' must be an integer 0-3, got {self.label!r}")
        object.__setattr__(self, "endings", tuple(self.endings))


# ----------------------------------------------------------------------------------------------------
# Data


def sample_path() -> Path:
    """40 real validation rows shipped with the package (see assets/hellaswag/README.md): enough for
    offline tests and the book's smoke runs, far too few for a meaningful score."""
    return Path(str(resources.files("gpt2lab").joinpath("assets", "hellaswag", "hellaswag_val_sample.jsonl")))


def data_path(path: str | os.PathLike | None = None) -> Path:
    """The validation file: `path` if given, else $GPT2LAB_HELLASWAG, else the official file, downloaded
    once into the cache folder and checked against its sha256. Local files are taken as they are (a
    subset is fine, e.g. the test fixture); the CLI reports whether a file is the official one."""
    source = "" if path else f" (from ${DATA_ENV})"
    path = path or os.environ.get(DATA_ENV)
    if not path:
        try:
            return fetch(OFFICIAL_URL, OFFICIAL_SHA256, cache_dir() / "hellaswag" / "hellaswag_val.jsonl")
        except DownloadError as e:
            raise DownloadError(f"{e} (give a local copy: `hellaswag --data`, `train --hellaswag-data` or ${DATA_ENV})") from e
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"HellaSwag file {path}{source} does not exist")
    return path


@dataclass(frozen=True)
class DataSource:
    """Which HellaSwag file a page or run uses, and in words why: the full validation set or the packaged sample."""

    path: Path
    sample: bool  # True: the 40-row sample shipped with the package, not the full validation set
    why: str  # one line for the reader

    @property
    def label(self) -> str:
        """A tag for every number measured on this file: '' for the full set, ' (40-row sample)' for the sample."""
        return f" ({SAMPLE_SIZE}-row sample)" if self.sample else ""


SAMPLE_SIZE = 40  # rows in assets/hellaswag/hellaswag_val_sample.jsonl
PROBE_TIMEOUT_S = 3.0  # how long `find_data` waits for the download host before it settles for the sample


def find_data(download: bool = True, probe_timeout: float = PROBE_TIMEOUT_S) -> DataSource:
    """The best HellaSwag file this machine can give without asking anyone, in this order: $GPT2LAB_HELLASWAG;
    the official file already in the cache; the official file downloaded now (only with `download`, and only
    if its host answers within `probe_timeout` seconds); else the packaged sample, with the reason the full
    file was not used. Never raises for a missing network; a $GPT2LAB_HELLASWAG that names no file is an error."""
    from gpt2lab.base.download import unreachable

    if os.environ.get(DATA_ENV):
        path = data_path()  # raises FileNotFoundError naming the variable when the file is not there
        return DataSource(path, False, f"from ${DATA_ENV}")
    cached = cache_dir() / "hellaswag" / "hellaswag_val.jsonl"
    why = "not downloaded at this scale"
    if cached.is_file() or download:
        why = unreachable(OFFICIAL_URL, timeout=probe_timeout) if not cached.is_file() else None
        if not why:
            try:
                return DataSource(fetch(OFFICIAL_URL, OFFICIAL_SHA256, cached, progress=False), False,
                                  "the official validation file, checked against its sha256")
            except (OSError, ValueError) as e:  # a failed download, or a cached file with the wrong bytes
                why = str(e)
    return DataSource(sample_path(), True,
                      f"the full validation file is not here ({why}; set ${DATA_ENV} to a local copy)")


def load_examples(path: str | os.PathLike | None = None, limit: int | None = None) -> list[Example]:
    """The first `limit` (default: all) examples of a HellaSwag jsonl file, located by `data_path`."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    path = data_path(path)
    examples = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and len(examples) == limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
                missing = [k for k in ("ctx", "endings", "label") if k not in row]
                if missing:
                    raise ValueError(f"missing field(s) {', '.join(missing)}")
                examples.append(Example(row["ctx"], row["endings"], row["label"]))
            except ValueError as e:  # json.JSONDecodeError is a ValueError too
                raise HellaSwagDataError(f"{path}, line {lineno}: malformed HellaSwag example: {e}") from None
    if not examples:
        raise HellaSwagDataError(f"{path}: no examples")
    return examples


# ----------------------------------------------------------------------------------------------------
# Scoring


def render(example: Example, enc=None, block_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Four rows `context + " " + ending` as (4, T) token ids, padded with 0 at the end; a (4, T) bool
    mask over each ending's tokens; and the label.

    The space belongs to the ending because GPT-2's BPE attaches spaces to the following word.
    If a row would exceed `block_size`, the context loses its oldest tokens, the same number for all four
    rows so the endings are compared after the same context. At least one context token is kept (the
    first ending token is predicted from it); an ending longer than block_size - 1 tokens, which only toy
    block sizes see, is cut at its end.
    """
    enc = enc or get_encoding()
    ctx = enc.encode_ordinary(example.ctx)
    ends = [enc.encode_ordinary(" " + e) for e in example.endings]
    if block_size is not None:
        ctx = ctx[-max(1, block_size - max(map(len, ends))) :]
        ends = [e[: block_size - len(ctx)] for e in ends]
    T = len(ctx) + max(map(len, ends))
    tokens = torch.zeros(4, T, dtype=torch.long)
    mask = torch.zeros(4, T, dtype=torch.bool)
    for i, end in enumerate(ends):
        tokens[i, : len(ctx) + len(end)] = torch.tensor(ctx + end)
        mask[i, len(ctx) : len(ctx) + len(end)] = True
    return tokens, mask, example.label


def ending_losses(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: summed and mean cross-entropy over the masked (ending) tokens, as float64 on the CPU.

    The logits at position t predict token t+1. Only ending positions go through the softmax: computing
    it over the whole vocabulary at every context and pad position would cost as much as the forward.
    """
    rows, pos = mask[:, 1:].nonzero(as_tuple=True)
    return _masked_losses(logits[rows, pos], tokens[rows, pos + 1], rows, mask)


def _masked_losses(picked: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor):
    """Summed and mean cross-entropy per row, from the logits at the ending positions only."""
    ce = F.cross_entropy(picked.float(), targets, reduction="none")
    sums = torch.zeros(len(mask), dtype=torch.float64).index_add_(0, rows.cpu(), ce.double().cpu())
    return sums, sums / mask.sum(1).cpu()


COMPILED_BUCKET = 32  # the default length granularity for a compiled model: HellaSwag needs <= 6 shapes


def pack(rendered: list, rows: int, bucket: int, block_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and ending masks of a batch (sorted by length), padded at the end to the longest row rounded up
    to a multiple of `bucket` (capped at block_size), with empty rows up to `rows`."""
    longest = rendered[-1][0].size(1)  # sorted: the last one is the longest
    L = -(-longest // bucket) * bucket
    L = min(L, block_size) if block_size else L
    tokens = torch.zeros(rows, L, dtype=torch.long)
    mask = torch.zeros(rows, L, dtype=torch.bool)
    for j, (t, m, _) in enumerate(rendered):
        tokens[4 * j : 4 * j + 4, : t.size(1)] = t
        mask[4 * j : 4 * j + 4, : m.size(1)] = m
    return tokens, mask


def score(
    model: Callable,
    examples: Sequence[Example],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    bucket: int | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean loss of every ending, each (len(examples), 4) float64, in the examples' order.

    Examples are sorted by length and scored `batch_size` at a time (4 rows each), padded to the batch's
    longest row rounded up to a multiple of `bucket` (capped at block_size). With bucket > 1 the short
    last batch is also filled with empty rows, so every forward has shape (4 * min(batch_size, n), L)
    with L one of a few buckets: a compiled model compiles once per bucket. bucket=None means
    COMPILED_BUCKET for a torch.compile'd model and 1 otherwise, since for an eager model padding is
    only wasted work.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if bucket is not None and bucket < 1:
        raise ValueError(f"bucket must be >= 1 or None, got {bucket}")
    net = _undistributed(model)
    if bucket is None:
        bucket = COMPILED_BUCKET if hasattr(net, "_orig_mod") else 1  # torch.compile's wrapper has _orig_mod
    block_size = getattr(getattr(net, "config", None), "block_size", None)
    # An eager GPT gets logits only at the positions that predict ending tokens (about a third of the
    # rows' tokens): the output head over 50,257 entries dominates a small model's forward pass.
    head_only_where_needed = isinstance(net, GPT)
    enc = get_encoding()
    rendered = [render(ex, enc, block_size) for ex in examples]
    order = sorted(range(len(examples)), key=lambda i: rendered[i][0].size(1))
    B = max(1, min(batch_size, len(examples)))
    sums = torch.empty(len(examples), 4, dtype=torch.float64)
    means = torch.empty(len(examples), 4, dtype=torch.float64)
    autocast = autocast or contextlib.nullcontext
    with tqdm(total=len(examples), unit="ex", desc="hellaswag", disable=not progress) as bar:
        for start in range(0, len(order), B):
            batch = order[start : start + B]
            tokens, mask = pack([rendered[i] for i in batch], 4 * (B if bucket > 1 else len(batch)), bucket, block_size)
            tokens = tokens.to(device, non_blocking=True)
            mask = mask.to(device, non_blocking=True)
            with torch.no_grad(), autocast():
                if head_only_where_needed:
                    rows_, pos = mask[:, 1:].nonzero(as_tuple=True)
                    picked = net.lm_head(net.features(tokens)[rows_, pos])
                    s, m = _masked_losses(picked, tokens[rows_, pos + 1], rows_, mask)
                else:
                    logits, _ = net(tokens)
                    s, m = ending_losses(logits, tokens, mask)
            n = len(batch)
            sums[batch] = s[: 4 * n].view(n, 4)
            means[batch] = m[: 4 * n].view(n, 4)
            bar.update(n)
    return sums, means


@dataclass
class HellaSwagResult:
    n: int
    correct: int  # lowest summed loss is the right ending
    correct_norm: int  # lowest mean loss per token is the right ending

    @property
    def acc(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def acc_norm(self) -> float:
        return self.correct_norm / self.n if self.n else float("nan")

    def interval(self, norm: bool = True) -> tuple[float, float]:
        """95% Wilson interval of acc_norm (or acc): how far the score on these n examples can be trusted."""
        return wilson_interval(self.correct_norm if norm else self.correct, self.n)

    def describe(self, norm: bool = True) -> str:
        """`0.2955 [0.2866, 0.3045] (2967/10042), chance 0.25`: the score, its 95% interval and chance."""
        return format_accuracy(self.correct_norm if norm else self.correct, self.n, chance=CHANCE)

    def to_dict(self) -> dict:
        out = {**asdict(self), "acc": self.acc, "acc_norm": self.acc_norm, "chance": CHANCE}
        if self.n:
            out |= {"acc_ci95": list(self.interval(norm=False)), "acc_norm_ci95": list(self.interval(norm=True))}
        return out


def evaluate(
    model: Callable,
    examples: Sequence[Example],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    bucket: int | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> HellaSwagResult:
    """Accuracy of `model` (anything called as `model(idx) -> (logits, loss)`: a GPT, compiled or
    DDP-wrapped) on `examples`. This rank scores examples[rank::world_size]; when torch.distributed is
    initialized the counts are summed over ranks, so every rank returns the totals.

    The model is only called, never switched to eval mode: GPT has no dropout, so it does not matter.
    """
    shard = list(examples[rank::world_size])
    counts = torch.zeros(3, dtype=torch.long)
    if shard:
        sums, means = score(
            model, shard, device=device, batch_size=batch_size, bucket=bucket, autocast=autocast,
            progress=progress and rank == 0,
        )
        labels = torch.tensor([ex.label for ex in shard])
        right = [int((losses.argmin(1) == labels).sum()) for losses in (sums, means)]
        counts += torch.tensor([len(shard), *right])
    if world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        counts = counts.to(device)
        torch.distributed.all_reduce(counts)
    n, correct, correct_norm = counts.tolist()
    return HellaSwagResult(n, correct, correct_norm)


def _undistributed(model: Callable) -> Callable:
    """The module inside a DDP wrapper. Inference needs no gradient sync, and calling DDP's forward on
    ranks that run different numbers of batches could wait on a collective that never comes."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model
