"""Past GPT-2's recipe (chapter 15): one small experiment per idea of gpt2lab.engine.recipes, each in seconds.

- the speedrun records that brought the ideas in, read from the registry's own sources;
- rotary positions: an attention score that depends on i - j alone, against a learned position table;
- Muon: the singular values of one update, against SGD's and AdamW's from the same gradient;
- soft-capping: the largest logit of a head scaled up, with and without the cap;
- RMSNorm against LayerNorm: what each leaves of an input's mean and scale;
- zero-initialised projections (and head): the loss before the first step.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gpt2lab.engine.model import GPT, GPTConfig, Rotary
from gpt2lab.engine.recipes import IDEAS, get_recipe

# Speedrun record 1 (KellerJordan/modded-nanogpt README): llm.c's GPT-2 124M baseline, 45 minutes on 8 H100s to
# 3.28 validation loss on FineWeb. Every later record is timed to the same loss on the same hardware.
BASELINE_MINUTES = 45.0
TARGET_VAL = 3.28
_RECORD = re.compile(r"record (\d+), (?:(.*?), )?([\d.]+) -> ([\d.]+) min")


@dataclass(frozen=True)
class Record:
    number: int
    what: str  # the record's change, as the registry's source names it
    before: float  # minutes to 3.28 val loss on 8 H100s, before and after the record
    after: float
    ideas: tuple[str, ...]  # the ideas of gpt2lab.engine.recipes it brought in

    @property
    def speedup(self) -> float:
        return self.before / self.after


def speedrun_records() -> list[Record]:
    """The records behind the registry's ideas, by number, parsed from each idea's `source` (one place for the
    numbers). An idea whose source names no record time (rmsnorm) belongs to no record here."""
    found: dict[int, dict] = {}
    for idea in IDEAS.values():
        m = _RECORD.search(idea.source)
        if not m:
            continue
        rec = found.setdefault(int(m[1]), {"what": "", "before": float(m[3]), "after": float(m[4]), "ideas": []})
        if (rec["before"], rec["after"]) != (float(m[3]), float(m[4])):
            raise ValueError(f"record {m[1]} has two different times in the registry")
        rec["what"] = rec["what"] or (m[2] or "")
        rec["ideas"].append(idea.name)
    return [Record(n, r["what"], r["before"], r["after"], tuple(r["ideas"])) for n, r in sorted(found.items())]


# ------------------------------------------------------------------------------------------------ rotary positions

def position_scores(head_dim: int = 32, length: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    """Attention scores (length x length, float64) of one query vector and one key vector placed at every position,
    with position added GPT-2's way (a learned table, here random, added to both) and RoPE's way (both rotated)."""
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(head_dim, generator=g, dtype=torch.float64) for _ in range(2))
    table = torch.randn(length, head_dim, generator=g, dtype=torch.float64)  # a position table
    learned = (q + table) @ (k + table).T
    rotary = Rotary(head_dim, length).double()
    qs, ks = (rotary(v.expand(1, length, 1, head_dim))[0, :, 0] for v in (q, k))  # (B, T, heads, head_dim)
    return {"learned table (GPT-2)": learned, "rotary (RoPE)": qs @ ks.T}


def diagonal_spread(scores: torch.Tensor) -> float:
    """The largest difference between two scores on one diagonal (same i - j): 0 when scores depend on i - j only."""
    n = scores.size(0)
    return max((d.max() - d.min()).item() for d in (scores.diagonal(o) for o in range(-n + 2, n - 1)))


def plot_position_scores(scores: dict[str, torch.Tensor]):
    from gpt2lab.base import figures

    fig, axes = figures.subplots(1, len(scores), height=3.6)
    for ax, (name, s) in zip(axes, scores.items()):
        image = ax.imshow(s.numpy(), cmap="RdBu_r")
        ax.set_title(name)
        ax.set_xlabel("key position j"), ax.set_ylabel("query position i")
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle("score(i, j) of the same two vectors: RoPE's is constant along every diagonal")
    return fig


# ------------------------------------------------------------------------------------------------------------ Muon

def one_step_updates(rows: int = 64, cols: int = 32, spread: float = 100.0, lr: float = 0.01,
                     seed: int = 0) -> dict[str, torch.Tensor]:
    """Singular values (largest first) of the update each optimizer makes to one weight matrix on its first step,
    from one gradient whose singular values run from 1 down to 1/spread."""
    g = torch.Generator().manual_seed(seed)
    u, _, v = torch.linalg.svd(torch.randn(rows, cols, generator=g), full_matrices=False)
    grad = u @ torch.diag(torch.logspace(0, -math.log10(spread), cols)) @ v
    makers = {
        "SGD": lambda p: torch.optim.SGD([p], lr=lr),
        "AdamW": lambda p: torch.optim.AdamW([p], lr=lr, weight_decay=0.0),
        "Muon": lambda p: torch.optim.Muon([p], lr=lr, weight_decay=0.0, adjust_lr_fn="match_rms_adamw"),
    }
    out = {}
    for name, make in makers.items():
        weight = torch.nn.Parameter(torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed + 1)))
        before = weight.detach().clone()
        weight.grad = grad.clone()
        make(weight).step()
        out[name] = torch.linalg.svdvals(before - weight.detach())
    return out


def plot_singular_values(updates: dict[str, torch.Tensor]):
    from gpt2lab.base import figures

    fig, ax = figures.subplots(height=3.4)
    for name, s in updates.items():
        ax.semilogy(range(1, len(s) + 1), (s / s[0]).numpy(), "o-", markersize=3, label=name)
    ax.set_xlabel("singular value, largest first")
    ax.set_ylabel("relative to the largest")
    ax.set_title("one step from the same gradient: Muon moves every direction nearly alike")
    ax.legend()
    return fig


# ---------------------------------------------------------------------------------------------------- soft-capping

def softcap_logits(scales=(1, 10, 100, 1000), cap: float = 30.0, seed: int = 0) -> list[tuple[float, float, float]]:
    """(head scale, largest |logit| without the cap, with it) for a small model whose untied head is multiplied by
    each scale: the cap holds whatever the head's size."""
    torch.manual_seed(seed)
    config = GPTConfig(block_size=16, vocab_size=256, n_layer=2, n_head=2, n_embd=32, tie_head=False,
                       logit_softcap=cap)
    model = GPT(config).eval()
    idx = torch.randint(0, config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(seed))
    head = model.lm_head.weight.detach().clone()
    out = []
    with torch.no_grad():
        features = model.features(idx)
        for s in scales:
            model.lm_head.weight.copy_(head * s)
            capped, _ = model(idx)
            raw = F.linear(features, model.lm_head.weight)
            out.append((float(s), raw.abs().max().item(), capped.abs().max().item()))
    return out


# -------------------------------------------------------------------------------------------------------- the norms

def norm_stats(n_embd: int = 64, rows: int = 2048, offset: float = 3.0, scale: float = 5.0,
               seed: int = 0) -> dict[str, dict[str, float]]:
    """Mean over rows of each output row's mean, standard deviation and root mean square, for inputs with a mean of
    `offset` and a spread of `scale`; and each norm's parameter count."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n_embd, generator=g) * scale + offset
    norms = {"input": torch.nn.Identity(), "LayerNorm": torch.nn.LayerNorm(n_embd), "RMSNorm": torch.nn.RMSNorm(n_embd)}
    out = {}
    with torch.no_grad():
        for name, norm in norms.items():
            y = norm(x)
            out[name] = {"mean": y.mean(-1).mean().item(), "std": y.std(-1, correction=0).mean().item(),
                         "rms": y.pow(2).mean(-1).sqrt().mean().item(),
                         "params": sum(p.numel() for p in norm.parameters())}
    return out


# ------------------------------------------------------------------------------------------------------ zero-init

def starting_losses(recipes=("gpt2", "zeroinit", "modern"), vocab_size: int = 50257, seed: int = 0) -> dict[str, float]:
    """The loss before any step of a small model under each recipe, on random tokens at GPT-2's vocabulary. A
    zeroed head gives every token the same logit, so the loss is exactly ln(vocab_size)."""
    idx = torch.randint(0, vocab_size, (4, 32), generator=torch.Generator().manual_seed(seed))
    out = {}
    with torch.no_grad():
        for recipe in recipes:
            torch.manual_seed(seed)
            config = GPTConfig(block_size=32, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=32,
                               **get_recipe(recipe).model)
            _, loss = GPT(config)(idx[:, :-1], idx[:, 1:])
            out[recipe] = loss.item()
    return out
