"""Chapter 2's questions about depth: why weights start at std 0.02, and why GPT-2 puts LayerNorm first.

- `linear_output_std`: what one linear layer does to the scale of unit-variance inputs, measured, beside the
  rule std_out = std_w * sqrt(fan_in) that Xavier/LeCun initialization (std_w = 1/sqrt(fan_in)) holds at 1.
- `post_ln`: the same GPT with the original Transformer's LayerNorm placement, `x = LN(x + f(x))`, built from
  the engine's own blocks (same parameters, same init), so a pre-LN vs post-LN comparison changes one thing.
- `compare_placements`: trains both from the same weights on the same batches at the same learning rate and
  records each step's loss and each block's gradient norm.
- `position_embedding_rows`: the rows of `wpe` (one per position) and how alike neighbouring rows are.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from gpt2lab.engine.model import GPT, Block, GPTConfig


@torch.no_grad()
def linear_output_std(fan_in: int, weight_std: float, rows: int = 4096, fan_out: int = 256, seed: int = 0) -> float:
    """Std of y = W x for x ~ N(0, 1) with `fan_in` entries and W ~ N(0, weight_std^2), measured on `rows` inputs."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, fan_in, generator=gen)
    w = torch.randn(fan_in, fan_out, generator=gen) * weight_std
    return (x @ w).std().item()


class PostLNBlock(nn.Module):
    """A GPT-2 block's four parts (ln_1, attn, ln_2, mlp) wired as in the original Transformer: each sub-block's
    output is added to the stream and the sum is normalized, so the residual stream itself passes a LayerNorm."""

    def __init__(self, block: Block):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = block.ln_1, block.attn, block.ln_2, block.mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(x + self.attn(x))
        return self.ln_2(x + self.mlp(x))


def post_ln(model: GPT) -> GPT:
    """A deep copy of `model` whose blocks are post-LN: the same weights, only the LayerNorms move.
    (The final ln_f stays; after a post-LN block it normalizes an already normalized stream, a no-op up to its
    own gain and bias, which start at 1 and 0.)"""
    other = copy.deepcopy(model)
    other.transformer.h = nn.ModuleList(PostLNBlock(b) for b in other.transformer.h)
    return other


def block_grad_norms(model: GPT) -> list[float]:
    """The L2 norm of each block's parameter gradients, block 0 (next to the embeddings) first."""
    norms = []
    for block in model.transformer.h:
        grads = [p.grad.detach().flatten() for p in block.parameters() if p.grad is not None]
        norms.append(torch.cat(grads).norm().item() if grads else 0.0)
    return norms


@dataclass
class PlacementRun:
    name: str
    loss: list[float] = field(default_factory=list)
    grad_norms: list[list[float]] = field(default_factory=list)  # per step: one norm per block, before clipping
    model: GPT | None = None  # the trained model

    def mean_loss(self, last: int) -> float:
        return float(np.mean(self.loss[-last:]))

    def mean_grad_norms(self, first: int, last: int) -> list[float]:
        """Each block's gradient norm averaged over steps first..last-1."""
        return np.mean(self.grad_norms[first:last], axis=0).tolist()


def train_placement(model: GPT, name: str, next_batch: Callable, steps: int, lr: float,
                    grad_clip: float | None = 1.0) -> PlacementRun:
    """`steps` AdamW steps (betas 0.9/0.95, no weight decay, constant lr, no warm-up) on `model`."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    run = PlacementRun(name, model=model)
    model.train()
    for _ in range(steps):
        x, y = next_batch()
        _, loss = model(x, y)
        loss.backward()
        run.loss.append(loss.item())
        run.grad_norms.append(block_grad_norms(model))
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return run


def compare_placements(config: GPTConfig, batches: Callable[[], Callable], steps: int, lr: float,
                       seed: int = 0) -> dict[str, PlacementRun]:
    """Pre-LN (GPT-2) and post-LN from the same initial weights, each fed the same batches (`batches()`
    returns a fresh `next_batch` that replays the same stream), at the same learning rate."""
    torch.manual_seed(seed)
    pre = GPT(replace(config, dropout=0.0))
    post = post_ln(pre)
    return {"pre-LN (GPT-2)": train_placement(pre, "pre-LN (GPT-2)", batches(), steps, lr),
            "post-LN (original Transformer)": train_placement(post, "post-LN (original Transformer)", batches(), steps, lr)}


def frequent_token_table(tokens: np.ndarray, vocab: int, size: int = 50257) -> np.ndarray:
    """A lookup table from GPT-2 ids (`size` of them) into a `vocab`-sized vocabulary: the vocab - 1 most
    frequent tokens of `tokens` keep an id each (most frequent first), every other id maps to vocab - 1."""
    counts = np.bincount(tokens, minlength=size)
    keep = np.argsort(-counts, kind="stable")[: vocab - 1]
    table = np.full(counts.size, vocab - 1, dtype=np.int64)
    table[keep] = np.arange(keep.size)
    return table


def frequent_token_ids(tokens: np.ndarray, vocab: int) -> np.ndarray:
    """Tokens rewritten into a `vocab`-sized vocabulary (`frequent_token_table`). Lets a tiny model skip a
    50,257-wide output head."""
    return frequent_token_table(tokens, vocab, size=int(tokens.max()) + 1)[tokens]


def random_windows(tokens: np.ndarray, batch: int, seq: int, seed: int = 0) -> Callable:
    """A `next_batch` yielding (x, y) of `batch` random windows of `seq` tokens; the same seed, the same stream."""
    data = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    gen = torch.Generator().manual_seed(seed)

    def next_batch():
        starts = torch.randint(0, data.numel() - seq - 1, (batch,), generator=gen)
        rows = torch.stack([data[s : s + seq + 1] for s in starts.tolist()])
        return rows[:, :-1], rows[:, 1:]

    return next_batch


@torch.no_grad()
def position_embedding_rows(model: GPT) -> torch.Tensor:
    """wpe as a (positions, channels) float tensor on the CPU."""
    return model.transformer.wpe.weight.detach().float().cpu()


def neighbour_similarity(wpe: torch.Tensor) -> float:
    """Mean cosine similarity of the embeddings of positions p and p + 1, over all p. Random rows (as at init)
    give about 0; a table that varies smoothly with position gives a value near 1."""
    a, b = wpe[:-1], wpe[1:]
    return torch.nn.functional.cosine_similarity(a, b, dim=1).mean().item()
