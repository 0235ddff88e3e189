"""HellaSwag's two accuracies on one example: the summed and the mean log-probability of each ending's tokens.

`acc` picks the ending whose tokens have the highest summed log-probability (the lowest summed loss); `acc_norm`
the highest mean per token. A long ending sums more negative terms, so `acc` leans towards short endings;
`acc_norm` removes the length. `ending_breakdown` shows every token's log-probability so the two choices can be
read off one example.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gpt2lab.engine.model import GPT
from gpt2lab.engine.tokenizer import get_encoding
from gpt2lab.run.hellaswag import Example, render


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
