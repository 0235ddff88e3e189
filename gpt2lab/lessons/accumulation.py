"""What the `/ grad_accum` in the training step is for, and what forgetting it does to SGD and to AdamW.

Without the division, K micro-batches sum their gradients instead of averaging them: the gradient is K times
too large. Plain SGD turns that into a K times larger step. Adam divides each gradient by a running estimate
of its own size, so a constant factor cancels (up to its epsilon); what remains is the clipping threshold,
which a K times larger gradient crosses on steps where the right one would not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from gpt2lab.engine.model import GPT, GPTConfig
from gpt2lab.engine.optim import OptimConfig, make_adamw

Batch = tuple[torch.Tensor, torch.Tensor]


def accumulated_gradients(model: GPT, micro_batches: list[Batch], divide: bool = True) -> list[torch.Tensor]:
    """Forward and backward over the micro-batches, each loss divided by their number (or not): the summed
    gradients, one tensor per parameter."""
    model.zero_grad(set_to_none=True)
    for x, y in micro_batches:
        _, loss = model(x, y)
        (loss / len(micro_batches) if divide else loss).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def _norm(tensors: list[torch.Tensor]) -> float:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors])).item()


def seeded_model(config: GPTConfig, seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(config)


@dataclass
class Trajectory:
    """Several optimizer steps, each on its own K micro-batches: the gradient norms before clipping and the
    total change of the weights."""
    grad_norms: list[float] = field(default_factory=list)
    change: list[torch.Tensor] = field(default_factory=list)


def train_steps(config: GPTConfig, steps: list[list[Batch]], make_optimizer: Callable, divide: bool,
                clip: float | None, seed: int = 0) -> Trajectory:
    """One optimizer step per entry of `steps` (a list of micro-batches), from the weights `seed` gives."""
    model = seeded_model(config, seed)
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = make_optimizer(model)
    out = Trajectory()
    for micro_batches in steps:
        accumulated_gradients(model, micro_batches, divide)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip else float("inf"))
        out.grad_norms.append(norm.item())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    out.change = [p.detach() - s for p, s in zip(model.parameters(), start)]
    return out


@dataclass
class ForgottenDivision:
    micro: int  # K, the number of micro-batches
    grad_ratio: float  # |gradient without the division| / |with it|
    sgd_ratio: float  # |SGD update without| / |with|, one step
    adamw: dict[str, dict[str, Trajectory]]  # "no clipping", "clip at 1", ... -> "divided"/"forgotten"

    def adamw_difference(self, clipping: str) -> float:
        """|change without the division - change with it| / |change with it|, after the AdamW steps."""
        runs = self.adamw[clipping]
        right, wrong = runs["divided"].change, runs["forgotten"].change
        return _norm([w - r for w, r in zip(wrong, right)]) / _norm(right)


def forgotten_division(config: GPTConfig, steps: list[list[Batch]], clips: tuple[float | None, ...] = (None, 1.0),
                       sgd_lr: float = 0.1, optim: OptimConfig | None = None, seed: int = 0) -> ForgottenDivision:
    """Gradients, one SGD step, and len(steps) AdamW steps (the recipe's betas, eps and weight decay at a
    constant rate) under each clipping threshold of `clips` (None: none), each with and without the division
    by the number of micro-batches."""
    optim = optim or OptimConfig(max_lr=1e-3)
    micro = len(steps[0])
    model = seeded_model(config, seed)
    right = accumulated_gradients(model, steps[0], divide=True)
    wrong = accumulated_gradients(model, steps[0], divide=False)
    sgd = lambda m: torch.optim.SGD(m.parameters(), lr=sgd_lr)  # noqa: E731
    sgd_right, sgd_wrong = (train_steps(config, steps[:1], sgd, d, None, seed).change for d in (True, False))
    adamw = lambda m: make_adamw(m, optim, fused=False, device_type="cpu")[0]  # noqa: E731
    runs = {}
    for clip in clips:
        name = f"clip at {clip:g}" if clip else "no clipping"
        runs[name] = {label: train_steps(config, steps, adamw, divide, clip, seed)
                      for label, divide in (("divided", True), ("forgotten", False))}
    return ForgottenDivision(micro, _norm(wrong) / _norm(right), _norm(sgd_wrong) / _norm(sgd_right), runs)
