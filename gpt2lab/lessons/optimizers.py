"""Why the recipe uses AdamW, and why with beta2 = 0.95: short runs against SGD, and Adam's step size when the
gradient's scale changes."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from gpt2lab.engine.model import GPTConfig
from gpt2lab.engine.optim import OptimConfig
from gpt2lab.lessons.short_runs import ShortRun, short_run


def sgd(momentum: float = 0.9) -> Callable:
    """An optimizer factory for `short_run`: SGD with momentum (the schedule sets its learning rate)."""
    return lambda model: torch.optim.SGD(model.parameters(), lr=0.0, momentum=momentum)


def optimizer_runs(model_config: GPTConfig, loader: Callable[[], Callable], steps: int, optim: OptimConfig,
                   sgd_lrs: tuple[float, ...] = (0.3, 1.0), device: str = "cpu", seed: int = 0) -> dict[str, ShortRun]:
    """The same steps (same seed, same batches: `loader()` gives a fresh `next_batch`) with AdamW at the recipe's
    betas and at beta2 = 0.999, and with SGD + momentum at each peak rate of `sgd_lrs` (SGD wants rates ~100x
    larger than Adam's). Every run keeps `optim`'s schedule, clipping and weight decay."""
    runs = {}
    for beta2 in (optim.betas[1], 0.999):
        runs[f"AdamW, betas (0.9, {beta2:g})"] = short_run(
            model_config, loader(), steps, replace(optim, betas=(optim.betas[0], beta2)), device=device, seed=seed)
    for lr in sgd_lrs:
        runs[f"SGD + momentum 0.9, lr {lr:g}"] = short_run(
            model_config, loader(), steps, replace(optim, max_lr=lr), device=device, seed=seed, optimizer=sgd())
    return runs


def update_after_jump(beta2: float, before: int = 2000, after: int = 40, jump: float = 10.0,
                      beta1: float = 0.9) -> list[float]:
    """|Adam's update| / lr on each step after the gradient suddenly grows `jump`-fold, following `before` steps
    of a steady gradient (one weight, gradient of fixed sign, no weight decay). Adam's step is about lr while
    its estimate of the gradient's size (the second moment, averaged over ~1/(1 - beta2) steps) keeps up; a slow
    average lets the step grow towards `jump` times that."""
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([w], lr=1.0, betas=(beta1, beta2), eps=1e-8)
    sizes = []
    for step in range(before + after):
        w.grad = torch.full((1,), 1e-3 * (jump if step >= before else 1.0))
        old = w.detach().clone()
        opt.step()
        if step >= before:
            sizes.append(abs((w.detach() - old).item()))
    return sizes
