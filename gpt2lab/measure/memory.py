"""How much memory a training step needs, and which part grows with the micro-batch.

Two parts. The *state* is fixed: fp32 weights, their gradients and AdamW's two moments, 16 bytes per
parameter whatever the batch. The *activations* are what the forward pass keeps for the backward pass;
they grow linearly with the micro-batch B. We do not guess them from a formula: `saved_activation_bytes`
runs one forward pass and adds up every tensor autograd saves (each storage counted once, the weights
left out), so the count follows the model as it is written, with its attention and autocast settings.
Measured at B=1 and B=2, the difference is what each sequence adds; multiplied by B, it answers "does
B=64, T=1024 fit on my card?".

What it leaves out: the allocator's rounding and fragmentation, temporary buffers that live only inside
one kernel, and torch.compile, which saves fewer tensors because it recomputes cheap elementwise ops in
the backward. A measured peak on a GPU is therefore a little above (eager) or below (compiled) it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch

from gpt2lab.engine.model import GPT, GPTConfig

GIB = 2**30
STATE_BYTES_PER_PARAM = 4 + 4 + 8  # fp32 weight, fp32 gradient, AdamW exp_avg and exp_avg_sq


def saved_activation_bytes(model: torch.nn.Module, idx: torch.Tensor, targets: torch.Tensor | None = None,
                           autocast: str = "none") -> int:
    """Bytes of the tensors autograd keeps from one forward pass of `model(idx, targets)` for the backward."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:  # weights are counted in the state, not here
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[autocast]
    ctx = torch.autocast(idx.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        out = model(idx, targets) if targets is not None else model(idx)
    del out
    return sum(kept.values())


@dataclass(frozen=True)
class TrainingMemory:
    params: int
    state_bytes: int  # weights + gradients + AdamW moments: independent of the batch
    fixed_activation_bytes: int  # saved once per forward whatever B is: autocast's bf16 copies of the weights
    activation_bytes_per_sequence: int  # what one more sequence of `seq` tokens keeps for the backward
    seq: int
    settings: str  # attention and autocast it was measured with

    def total_bytes(self, batch: int) -> int:
        return self.state_bytes + self.fixed_activation_bytes + batch * self.activation_bytes_per_sequence

    def largest_batch(self, budget_bytes: float) -> int:
        """The largest micro-batch whose estimate fits in `budget_bytes` (0 if not even one sequence does)."""
        free = budget_bytes - self.state_bytes - self.fixed_activation_bytes
        return max(0, int(free // self.activation_bytes_per_sequence))


def training_memory(config: GPTConfig, seq: int, autocast: str = "bf16", device: str = "cpu",
                    seed: int = 0) -> TrainingMemory:
    """State bytes of `config` and the activations of a forward pass, measured at batch 1 and batch 2 on
    `device`: the difference is what one sequence of `seq` tokens adds, the rest is saved once per pass
    whatever the batch (under autocast, the low-precision copies of the weights the matmuls use)."""
    if not 1 <= seq <= config.block_size:
        raise ValueError(f"seq must lie in [1, block_size={config.block_size}], got {seq}")
    torch.manual_seed(seed)
    model = GPT(config).to(device)
    idx = torch.randint(0, config.vocab_size, (2, seq), device=device)
    targets = torch.randint(0, config.vocab_size, (2, seq), device=device)
    one = saved_activation_bytes(model, idx[:1], targets[:1], autocast)
    two = saved_activation_bytes(model, idx, targets, autocast)
    per_seq = two - one
    n = model.num_params()
    return TrainingMemory(n, n * STATE_BYTES_PER_PARAM, one - per_seq, per_seq, seq,
                          f"attn={config.attn}, autocast={autocast}")
