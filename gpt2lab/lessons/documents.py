"""Document permutation, observed: several epochs over the same documents, in the same order or reshuffled.

Without permutation every epoch feeds the model the same batches in the same order, so the per-step loss of
one epoch repeats the shape of the previous one (the periodic training loss the video saw in its 4-epoch run).
`ShardLoader(permute=True)` reshuffles the documents inside each shard every epoch, and the repetition goes.
`epoch_correlation` measures it: how well one epoch's per-step losses (each epoch's own trend removed) predict
the next epoch's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gpt2lab.engine.data import FORMAT, ShardLoader, open_shard, write_manifest, write_shard
from gpt2lab.engine.model import GPT, GPTConfig
from gpt2lab.engine.tokenizer import EOT_ID, encode
from gpt2lab.lessons.depth import frequent_token_table


def speeches(text: str) -> list[str]:
    """Tiny Shakespeare cut into its speeches: the blocks between blank lines (each starts with its speaker)."""
    return [block.strip() for block in text.split("\n\n") if block.strip()]


def write_documents(documents: list[str], folder: str | Path, val_documents: int = 1) -> Path:
    """A shard folder for `ShardLoader`: <|endoftext|> before every document; the first `val_documents`
    documents form the validation shard 0, the rest one training shard."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def tokens(docs):
        return np.array([t for d in docs for t in [EOT_ID, *encode(d)]], dtype=np.int64)

    entries = [write_shard(folder, 0, tokens(documents[:val_documents])),
               write_shard(folder, 1, tokens(documents[val_documents:]))]
    write_manifest(folder, {"format": FORMAT, "complete": True, "shards": entries})
    return folder


@dataclass
class EpochRun:
    permute: bool
    steps_per_epoch: int
    loss: list[float]

    def epochs(self) -> np.ndarray:
        """The per-step losses as (epochs, steps_per_epoch), whole epochs only."""
        n = len(self.loss) // self.steps_per_epoch
        return np.asarray(self.loss[: n * self.steps_per_epoch]).reshape(n, self.steps_per_epoch)


def train_epochs(folder: str | Path, config: GPTConfig, batch: int, seq: int, epochs: int, permute: bool,
                 lr: float = 1e-3, seed: int = 0) -> EpochRun:
    """AdamW at a constant `lr` for `epochs` passes over the training shard, loss recorded at every step.
    A `config.vocab_size` below GPT-2's reads the batches through `frequent_token_table` (the shard's
    vocab_size - 1 commonest tokens and one "other"), so a tiny model need not carry a 50,257-wide head."""
    loader = ShardLoader(folder, "train", batch, seq, seed=seed, permute=permute)
    shard = np.concatenate([np.asarray(open_shard(loader.folder, e)) for e in loader.entries]).astype(np.int64)
    table = torch.from_numpy(frequent_token_table(shard, config.vocab_size))
    torch.manual_seed(seed)
    model = GPT(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    per_epoch = loader.batches_per_epoch()
    losses = []
    for _ in range(epochs * per_epoch):
        x, y = loader.next_batch()
        _, loss = model(table[x], table[y])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return EpochRun(permute, per_epoch, losses)


def _detrend(row: np.ndarray) -> np.ndarray:
    steps = np.arange(row.size)
    return row - np.polyval(np.polyfit(steps, row, 1), steps)


def epoch_correlation(run: EpochRun, skip: int = 1) -> float:
    """Mean Pearson correlation between consecutive epochs' per-step losses, each epoch's linear trend removed
    first (the loss falls within an epoch either way). The first `skip` epochs (the steepest descent) are left
    out. About 1: every epoch repeats the last; about 0: no repetition."""
    rows = [_detrend(r) for r in run.epochs()[skip:]]
    if len(rows) < 2:
        raise ValueError("need at least two epochs after the skipped ones")
    return float(np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(rows, rows[1:])]))
