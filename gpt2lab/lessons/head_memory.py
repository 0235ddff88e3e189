"""The output head and its loss, alone: memory and time of the full logits against the chunked, fused loss.

`head_and_loss` runs forward and backward of (rows x width) hidden states through a (vocab x width) head and
cross-entropy, with one of `gpt2lab.engine.losses`'s implementations, and reports the peak memory the step added
(`gpt2lab.base.timing.peak_memory`: the process's peak resident size on a CPU, the allocator's peak on a GPU) and
its median time. The full path holds (rows x vocab) logits, their gradient and a float32 copy; the chunked path
holds one chunk of them at a time.
"""

from __future__ import annotations

from typing import Callable

import torch

GPT2_VOCAB, PADDED_VOCAB = 50257, 50304


def head_and_loss(loss_fn: Callable, rows: int, width: int, device: torch.device | str, variant: str | None = None,
                  vocab: int = PADDED_VOCAB, steps: int = 3, seed: int = 0) -> tuple[float | None, float]:
    """(MiB the step added at its peak, median ms) of `loss_fn(h, w, targets[, variant=...]).backward()`, with
    random hidden states, a GPT-2-scale initialised head and targets that are real tokens (below 50,257, so padded
    rows are never a target)."""
    from gpt2lab.base.timing import measure, peak_memory

    device = torch.device(device)
    torch.manual_seed(seed)
    h = torch.randn(rows, width, device=device, requires_grad=True)
    w = (0.02 * torch.randn(vocab, width, device=device)).requires_grad_()
    t = torch.randint(0, min(vocab, GPT2_VOCAB), (rows,), device=device)
    kwargs = {"variant": variant} if variant else {}

    def step():
        loss_fn(h, w, t, **kwargs).backward()
        h.grad = w.grad = None

    step()  # once before measuring: the allocator's first-use costs are not the loss's
    with peak_memory(device) as mem:
        timing = measure(step, device, steps=steps, warmup=0)
    return mem.step_mb, timing.median_ms
