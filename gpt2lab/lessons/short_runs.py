"""Small, fast experiments behind the training recipe: why overfit one batch first, why warm up.

Each one runs the very training step the trainer runs (`knobs.build` + `step.train_step`), on a model small
enough to finish in seconds, so chapter 3 can show the effect instead of asserting it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from gpt2lab.engine.knobs import Knobs, build, get_rung
from gpt2lab.engine.model import GPTConfig
from gpt2lab.engine.optim import OptimConfig, lr_at
from gpt2lab.engine.step import capture_gradients, train_step


@dataclass
class ShortRun:
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # before clipping
    lr: list[float] = field(default_factory=list)


def short_run(model_config: GPTConfig, next_batch: Callable, steps: int, optim: OptimConfig,
              knobs: Knobs | None = None, device: str = "cpu", seed: int = 0,
              optimizer: Callable | None = None) -> ShortRun:
    """`steps` optimizer steps with `optim`'s schedule, clipping and weight decay; per-step loss and norm.
    `optimizer(model)` replaces the recipe's AdamW (the schedule still sets its learning rate)."""
    knobs = knobs or get_rung("fp32").knobs
    built = build(knobs, model_config, device, optim, seed=seed)
    if optimizer is not None:
        built.optimizer = optimizer(built.raw)
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


@dataclass
class ClipStep:
    """One optimizer step taken twice from the same weights, optimizer state and batch: with clipping and
    without. Norms are L2 norms over all parameters."""
    step: int  # optimizer steps taken before this one
    lr: float
    grad_norm: float  # before clipping
    clipped_norm: float  # what the optimizer saw with clipping
    update_norm: dict[str, float] = field(default_factory=dict)  # "clipped" / "not clipped" -> |new - old weights|
    update_max: dict[str, float] = field(default_factory=dict)  # largest change of any single weight


def _global_norm(tensors) -> float:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors])).item()


def clipping_step(model_config: GPTConfig, next_batch: Callable, optim: OptimConfig, before: int,
                  device: str = "cpu", seed: int = 0) -> ClipStep:
    """Train `before` steps with `optim`'s recipe, then take the next step with and without clipping."""
    built = build(get_rung("fp32").knobs, model_config, device, optim, seed=seed)
    for step in range(before):
        train_step(built, next_batch, lr=lr_at(step, optim), grad_clip=optim.grad_clip)
    batch = next_batch()
    params = list(built.raw.parameters())
    weights = [p.detach().clone() for p in params]
    state = copy.deepcopy(built.optimizer.state_dict())
    lr = lr_at(before, optim)
    out = None
    for name, clip in (("clipped", optim.grad_clip), ("not clipped", None)):
        with torch.no_grad():
            for p, w in zip(params, weights):
                p.copy_(w)
        built.optimizer.load_state_dict(copy.deepcopy(state))
        for group in built.optimizer.param_groups:
            group["lr"] = lr
        result, grads = capture_gradients(built, lambda: batch, grad_clip=clip)
        if out is None:
            out = ClipStep(before, lr, result.grad_norm.item(), _global_norm(grads))
        change = [p.detach() - w for p, w in zip(params, weights)]
        out.update_norm[name] = _global_norm(change)
        out.update_max[name] = max(c.abs().max().item() for c in change)
    return out


def warmup_runs(model_config: GPTConfig, loader: Callable[[], Callable], steps: int, optim: OptimConfig,
                peak_lr: float, warmup: int, device: str = "cpu", seed: int = 0) -> dict[str, ShortRun]:
    """The first `steps` steps at a constant `peak_lr`, reached after `warmup` linear steps and with none (same
    seed, same batches: `loader()` gives a fresh `next_batch`)."""
    runs = {}
    for name, w in ((f"warmup {warmup} steps", warmup), ("no warmup", 0)):
        schedule = replace(optim, max_lr=peak_lr, warmup_steps=w, max_steps=steps, min_lr_ratio=1.0)
        runs[name] = short_run(model_config, loader(), steps, schedule, device=device, seed=seed)
    return runs


def largest_spike(run: ShortRun) -> tuple[float, int]:
    """The largest gradient norm after step 0 (where every run starts from the same weights), and its step."""
    peak = max(run.grad_norm[1:])
    return peak, run.grad_norm.index(peak, 1)


def spike_verdict(with_warmup: ShortRun, without: ShortRun) -> str:
    """One line on which run's gradient norm spiked higher, by more than a factor of two or not."""
    peak_with, peak_without = largest_spike(with_warmup)[0], largest_spike(without)[0]
    if peak_without > 2 * peak_with:
        return "without warmup the gradient norm spiked more than twice as high"
    if peak_with > 2 * peak_without:
        return "warmup did not prevent the largest spike; it came once the rate had ramped up to this peak"
    return "the two runs' largest norms are within a factor of two of each other"
