"""HellaSwag's two accuracies on one example: the summed and the mean log-probability of each ending's tokens.

`acc` picks the ending whose tokens have the highest summed log-probability (the lowest summed loss); `acc_norm`
the highest mean per token. A long ending sums more negative terms, so `acc` leans towards short endings;
`acc_norm` removes the length. `ending_breakdown` shows every token's log-probability so the two choices can be
read off one example.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch

from gpt2lab.engine.model import GPT
from gpt2lab.engine.tokenizer import get_encoding
from gpt2lab.run.hellaswag import Example, pack, render


@dataclass(frozen=True)
class Ending:
    text: str
    tokens: list[str]  # the ending's tokens as text
    logprobs: list[float]  # ln p(token | context and earlier ending tokens), one per token

    @property
    def total(self) -> float:
        return sum(self.logprobs)

    @property
    def mean(self) -> float:
        return self.total / len(self.logprobs)


@dataclass(frozen=True)
class Breakdown:
    endings: list[Ending]
    label: int

    @property
    def acc_pick(self) -> int:
        """The ending `acc` chooses: highest summed log-probability."""
        return max(range(len(self.endings)), key=lambda i: self.endings[i].total)

    @property
    def acc_norm_pick(self) -> int:
        """The ending `acc_norm` chooses: highest mean log-probability per token."""
        return max(range(len(self.endings)), key=lambda i: self.endings[i].mean)


@torch.no_grad()
def ending_breakdown(model: GPT, example: Example, device: str | torch.device = "cpu") -> Breakdown:
    """Each ending's per-token log-probabilities under `model`, one row at a time (no padding involved)."""
    enc = get_encoding()
    tokens, mask, label = render(example, enc, model.config.block_size)
    endings = []
    for row in range(4):
        n = int(mask[row].nonzero().max()) + 1  # this row's length without the padding
        ids = tokens[row, :n].unsqueeze(0).to(device)
        logp = model(ids)[0][0].float().log_softmax(-1)  # position t predicts token t + 1
        where = mask[row, 1:n].nonzero().flatten().tolist()
        endings.append(Ending(example.endings[row],
                              [enc.decode([int(tokens[row, p + 1])]) for p in where],
                              [logp[p, int(tokens[row, p + 1])].item() for p in where]))
    return Breakdown(endings, label)


def first_disagreement(sums: torch.Tensor, means: torch.Tensor) -> int | None:
    """Index of the first example whose `acc` choice (lowest summed loss) differs from its `acc_norm` choice
    (lowest mean loss), from `hellaswag.score`'s two (n, 4) loss tables; None if they always agree."""
    differ = (sums.argmin(1) != means.argmin(1)).nonzero().flatten()
    return int(differ[0]) if differ.numel() else None


@dataclass(frozen=True)
class ForwardCost:
    """Where scoring's forward passes spend their arithmetic and their time: the body vs the output head."""

    tokens: int  # tokens through the transformer body (padding included)
    scored: int  # positions that go through the output head (those predicting an ending token)
    body_flops: float
    head_flops: float
    body_s: float
    head_s: float


@torch.no_grad()
def forward_cost(model: GPT, examples: Sequence[Example], *, device: str | torch.device = "cpu",
                 batch_size: int = 16) -> ForwardCost:
    """Time the body (`features`) and the head (`lm_head` at ending positions) separately, as `score` runs
    them, and count their multiply-adds: 2 FLOPs per weight per token, plus attention's two T x T products."""
    cfg = model.config
    block_params = sum(p.numel() for p in model.transformer.h.parameters())
    enc = get_encoding()
    rendered = sorted((render(ex, enc, cfg.block_size) for ex in examples), key=lambda r: r[0].size(1))
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tokens = scored = 0
    body_flops = head_flops = body_s = head_s = 0.0
    for start in range(0, len(rendered), batch_size):
        batch = rendered[start : start + batch_size]
        idx, mask = (t.to(device) for t in pack(batch, 4 * len(batch), 1, None))
        L = idx.size(1)
        rows, pos = mask[:, 1:].nonzero(as_tuple=True)
        sync()
        t0 = time.perf_counter()
        h = model.features(idx)
        sync()
        t1 = time.perf_counter()
        model.lm_head(h[rows, pos])
        sync()
        t2 = time.perf_counter()
        body_s, head_s = body_s + (t1 - t0), head_s + (t2 - t1)
        tokens, scored = tokens + idx.numel(), scored + len(rows)
        body_flops += 2 * block_params * idx.numel() + cfg.n_layer * 4 * idx.size(0) * L * L * cfg.n_embd
        head_flops += 2 * cfg.vocab_size * cfg.n_embd * len(rows)
    return ForwardCost(tokens, scored, body_flops, head_flops, body_s, head_s)
