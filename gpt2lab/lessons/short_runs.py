"""Small, fast experiments behind the training recipe: why overfit one batch first, why warm up.

Each one runs the very training step the trainer runs (`knobs.build` + `step.train_step`), on a model small
enough to finish in seconds, so chapter 3 can show the effect instead of asserting it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from gpt2lab.engine.knobs import Knobs, build, get_rung
from gpt2lab.engine.model import GPTConfig
from gpt2lab.engine.optim import OptimConfig, lr_at
from gpt2lab.engine.step import train_step


@dataclass
class ShortRun:
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # before clipping
    lr: list[float] = field(default_factory=list)


def short_run(model_config: GPTConfig, next_batch: Callable, steps: int, optim: OptimConfig,
              knobs: Knobs | None = None, device: str = "cpu", seed: int = 0) -> ShortRun:
    """`steps` optimizer steps with `optim`'s schedule, clipping and weight decay; per-step loss and norm."""
    knobs = knobs or get_rung("fp32").knobs
    built = build(knobs, model_config, device, optim, seed=seed)
    out = ShortRun()
    for step in range(steps):
        lr = lr_at(step, optim)
        result = train_step(built, next_batch, lr=lr, grad_clip=optim.grad_clip)
        out.loss.append(result.loss.item())
        out.grad_norm.append(result.grad_norm.item())
        out.lr.append(lr)
    return out


def overfit_one_batch(model_config: GPTConfig, x: torch.Tensor, y: torch.Tensor, steps: int,
                      lr: float = 3e-4, device: str = "cpu", seed: int = 0) -> ShortRun:
    """Train on one fixed batch at a constant learning rate (the video's first check, with AdamW at 3e-4).

    A correct model and training step drive this loss towards zero: the network memorizes the batch. A loss
    that stalls points at a bug (targets not shifted, a detached graph, a wrong mask) before any real run."""
    x, y = x.to(device), y.to(device)
    constant = OptimConfig(max_lr=lr, min_lr_ratio=1.0, warmup_steps=0, max_steps=steps, weight_decay=0.0,
                           grad_clip=1.0)
    return short_run(model_config, lambda: (x, y), steps, constant, device=device, seed=seed)
