"""One optimizer step: the code the trainer runs and the benchmark times (one implementation, not two)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from gpt2lab.engine.knobs import Built

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class StepResult:
    loss: torch.Tensor  # mean loss over the micro-batches (a detached 0-dim tensor, still on the device)
    grad_norm: torch.Tensor  # global L2 norm of the gradients before clipping
    skipped: bool = False  # the optimizer step was skipped: the gradients were not finite (skip_nonfinite)


def train_step(
    built: Built,
    next_batch: Callable[[], Batch],
    grad_accum: int = 1,
    lr: float | None = None,
    grad_clip: float | None = 1.0,
    skip_nonfinite: bool = False,
) -> StepResult:
    """Forward + backward over `grad_accum` micro-batches, clip, optimizer step, zero grads.

    Each micro-batch loss is divided by grad_accum, so the summed gradients equal those of one batch
    grad_accum times larger. Under DDP the gradient all-reduce runs only on the last micro-batch.
    Returns device tensors; the caller decides when to synchronize (`.item()`).

    skip_nonfinite: if the gradient norm is NaN or infinite, the optimizer step is skipped (weights and
    optimizer state stay as they were, finite) and the result says `skipped`. It waits for the device once
    (the norm's `.item()`), so the trainer asks for it and the benchmark does not. With fp16's gradient scaler
    the scaler already skips such steps (and lowers its scale), as it always has.
    """
    if grad_accum < 1:
        raise ValueError(f"grad_accum must be >= 1, got {grad_accum}")
    model, optimizer, scaler = built.model, built.optimizer, built.scaler
    loss_sum = torch.zeros((), device=built.device)
    for micro in range(grad_accum):
        x, y = next_batch()
        last = micro == grad_accum - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with built.autocast():
                _, loss = model(x, y)
            loss = loss / grad_accum
            loss_sum += loss.detach()
            (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(built.raw.parameters(), grad_clip if grad_clip else float("inf"))
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    if skip_nonfinite and not scaler and not torch.isfinite(norm).item():  # under DDP every rank sees one norm
        optimizer.zero_grad(set_to_none=True)
        return StepResult(loss_sum, norm.detach(), skipped=True)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss_sum, norm.detach())


def capture_gradients(built: Built, next_batch: Callable[[], Batch], grad_accum: int = 1,
                      grad_clip: float | None = None) -> tuple[StepResult, list[torch.Tensor]]:
    """Run one `train_step` and return the gradients the optimizer saw (copied just before its update)."""
    grads: list[torch.Tensor] = []
    hook = built.optimizer.register_step_pre_hook(
        lambda *_: grads.extend(p.grad.detach().clone() for p in built.raw.parameters()))
    try:
        result = train_step(built, next_batch, grad_accum, grad_clip=grad_clip)
    finally:
        hook.remove()
    return result, grads
