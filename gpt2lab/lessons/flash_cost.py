"""What flash attention costs, counted rather than argued: FLOPs per implementation, and the T x T buffers.

Two claims are easy to state from a formula and worth checking against a counter and a memory probe:

- "Flash attention does more FLOPs." Its backward recomputes the scores, so over the full T x T square it does
  five matmuls where the textbook backward does four. But GPT-2's attention is causal: the textbook version
  computes the whole square and then masks the upper half away, while a causal flash kernel skips the tiles that
  lie wholly in the future. `flop_rows` counts each version with `torch.utils.flop_counter.FlopCounterMode`,
  which counts what ran (matmuls dispatched) where it can, and applies its registered formulas to the fused
  SDPA kernels, where it cannot see inside. Those formulas count the full square: PyTorch's source says "We
  aren't accounting for causal attention here". On a CPU the fused kernel has no formula at all, so the counter
  reports 0 for it; the rows say which is which.
- "A compiler cannot find flash attention." `score_buffers` runs one forward + backward of naive attention,
  eager and through `torch.compile`, and of SDPA, and lists the allocations at least as big as one B x H x T x T
  score matrix. Fusing the scale, mask and softmax saves passes over that matrix, but the matmul still writes it
  and the backward still needs it; only a different algorithm (tiles + online softmax) removes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from gpt2lab.lessons import attention


@dataclass(frozen=True)
class FlopRow:
    """One attention implementation's FLOPs for one forward and one backward, and where the number comes from."""

    name: str
    forward: int
    backward: int
    source: str

    @property
    def training(self) -> int:
        return self.forward + self.backward


def count_flops(forward: Callable[[], object], backward: Callable[[object], object]) -> tuple[int, int]:
    """FLOPs FlopCounterMode counts in `forward()` and then in `backward(out)`, separately."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = forward()
    fwd = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        backward(out)
    return fwd, counter.get_total_flops()


def causal_tile_fraction(seq: int, block_q: int, block_k: int) -> float:
    """Share of the full T x T square of scores a causal tiled kernel computes: every (query tile, key tile) pair
    up to the diagonal, in the same loop as `attention.tiled_attention`."""
    done = 0
    for q0 in range(0, seq, block_q):
        q1 = min(q0 + block_q, seq)
        done += (q1 - q0) * q1  # keys 0 .. q1-1, in tiles of block_k that stop at q1
    return done / (seq * seq)


def flop_rows(device: torch.device | str, heads: int = 12, seq: int = 1024, head_dim: int = 64,
              dtype: torch.dtype = torch.float32, block: int = 64) -> list[FlopRow]:
    """One layer's attention FLOPs (batch 1) five ways; see the module docstring for what each number means."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    device = torch.device(device)
    shape = (1, heads, seq, head_dim)

    def qkv():
        return [torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]

    def autograd(fn):
        q, k, v = qkv()
        return count_flops(lambda: fn(q, k, v), lambda out: out.sum().backward())

    def tiled():
        q, k, v = (t.detach() for t in qkv())
        return count_flops(lambda: attention.tiled_attention(q, k, v, block, block, return_lse=True),
                           lambda out_lse: attention.tiled_attention_backward(q, k, v, *out_lse, torch.ones_like(q),
                                                                              block, block))

    where = f"counted on {device.type}"
    rows = [FlopRow("naive: matmul, mask, softmax, matmul", *autograd(attention.naive_attention), where),
            FlopRow("SDPA, is_causal=True", *autograd(attention.sdpa_attention), where),
            FlopRow("SDPA, no mask", *autograd(F.scaled_dot_product_attention), where),
            FlopRow("the counter's formula for a GPU flash kernel", sdpa_flop_count(shape, shape, shape),
                    sdpa_backward_flop_count(shape, shape, shape, shape), "registered formula, causal or not"),
            FlopRow(f"tiled flash, causal, {block}x{block} tiles", *tiled(), where + ", future tiles skipped")]
    return rows


# ------------------------------------------------------------------------------------------------ memory


@dataclass(frozen=True)
class ScoreBuffers:
    """One forward + backward: the allocations of at least one score matrix's size, and the peak tensor memory."""

    name: str
    score_mb: float  # one B x H x T x T matrix in this dtype
    big_allocations_mb: list[float]  # every allocation >= score_mb, in order
    step_mb: float | None  # peak tensor memory above the start (`base.timing.tensor_step_mb`)

    @property
    def score_sized(self) -> int:
        return len(self.big_allocations_mb)


def score_buffers(heads: int = 12, seq: int = 512, head_dim: int = 64, batch: int = 1,
                  compiled: Callable | None = None) -> list[ScoreBuffers]:
    """Naive attention eagerly and through torch.compile (`compiled`, or a fresh `torch.compile` of it), and
    SDPA: which allocations of one forward + backward on the CPU are as big as a T x T score matrix."""
    from gpt2lab.base.timing import cpu_allocations, tensor_step_mb

    q, k, v = (torch.randn(batch, heads, seq, head_dim, requires_grad=True) for _ in range(3))
    score = attention.score_matrix_bytes(batch, heads, seq, q.element_size())
    compiled = compiled or torch.compile(attention.naive_attention)
    rows = []
    for name, fn in (("naive, eager", attention.naive_attention), ("naive, torch.compile", compiled),
                     ("SDPA (flash on this CPU)", attention.sdpa_attention)):
        def step(fn=fn):
            fn(q, k, v).sum().backward()
            q.grad = k.grad = v.grad = None

        step()  # warm-up: compiles, and first-call allocations are not the step's
        events = cpu_allocations(step) or []
        rows.append(ScoreBuffers(name, score / 2**20, [e / 2**20 for e in events if e >= score],
                                 tensor_step_mb(step, "cpu")))
    return rows
