"""Nice numbers beyond the vocabulary: the batch rows B*T, the sequence length T and the head dimension d.

The same argument as for 50,304 applies to every dimension a kernel tiles: a size that is a multiple of the tile
(64, 128, ...) fills every tile, a ragged one leaves a partial last tile. Whether a device shows it, and how
much, is a measurement. Each sweep here times one operation at a nice size and its ragged neighbours, round-robin
(one call of each size per round, so a burst of load from another process hits all sizes alike), and compares
time per FLOP: a larger size does more work, so raw times would favour the smaller ragged sizes.

`nice_verdict` calls it an effect only when the quartiles do not overlap: the nice size's slowest-quarter time
per FLOP beats the neighbours' fastest quarter (or the reverse). Otherwise it reports "within noise" with the
numbers, which on a CPU, whose matmul library blocks for caches and vector registers rather than tensor-core tiles,
is a common and honest answer.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass
class SizeTiming:
    """One size of a sweep: every timed call (ms) and the FLOPs of one call."""

    size: int
    times_ms: list[float]
    flops: int

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def gflops(self) -> float:
        return self.flops / (self.median_ms / 1000) / 1e9

    def ns_per_mflop(self) -> list[float]:
        """Each call's time per million FLOPs, in ns: comparable across sizes that do different work."""
        return [t * 1e6 / (self.flops / 1e6) for t in self.times_ms]


def round_robin(calls: dict[int, Callable[[], object]], device: torch.device | str, steps: int,
                warmup: int = 1) -> dict[int, list[float]]:
    """Time each call `steps` times, one call of each per round; returns the ms of every timed call per key."""
    from gpt2lab.base.timing import measure

    if steps < 1 or not calls:
        raise ValueError(f"need calls and steps >= 1, got {len(calls)} calls and {steps} steps")
    for fn in calls.values():
        if warmup:
            measure(fn, device, steps=warmup, warmup=0)  # untimed in effect: its times are dropped
    times: dict[int, list[float]] = {key: [] for key in calls}
    for _ in range(steps):
        for key, fn in calls.items():
            times[key] += measure(fn, device, steps=1, warmup=0).times_ms
    return times


def rows_sweep(rows: list[int], device: torch.device | str, n_in: int = 768, n_out: int = 3072,
               dtype: torch.dtype = torch.float32, steps: int = 5) -> list[SizeTiming]:
    """The MLP's first matmul, (rows x n_in) @ (n_in x n_out), at each row count: rows is B*T, so this is what a
    ragged batch or sequence length does to the model's matmuls."""
    device = torch.device(device)
    w = torch.randn(n_out, n_in, device=device, dtype=dtype) * 0.02
    xs = {r: torch.randn(r, n_in, device=device, dtype=dtype) for r in rows}
    times = round_robin({r: (lambda x=x: F.linear(x, w)) for r, x in xs.items()}, device, steps)
    return [SizeTiming(r, times[r], 2 * r * n_in * n_out) for r in rows]


def attention_sweep(vary: str, values: list[int], device: torch.device | str, heads: int = 12, seq: int = 256,
                    head_dim: int = 64, dtype: torch.dtype = torch.float32, steps: int = 5) -> list[SizeTiming]:
    """Causal SDPA forward with `vary` ("seq" or "head_dim") set to each value, the other fixed. FLOPs: the two
    matmuls over the causal half of the square, 2 * T^2 * d per head (the diagonal ignored)."""
    if vary not in ("seq", "head_dim"):
        raise ValueError(f"vary must be 'seq' or 'head_dim', got {vary!r}")
    device = torch.device(device)
    calls, flops = {}, {}
    for value in values:
        t, d = (value, head_dim) if vary == "seq" else (seq, value)
        q, k, v = (torch.randn(1, heads, t, d, device=device, dtype=dtype) for _ in range(3))
        calls[value] = lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
        flops[value] = 2 * heads * t * t * d
    times = round_robin(calls, device, steps)
    return [SizeTiming(value, times[value], flops[value]) for value in values]


@dataclass(frozen=True)
class Verdict:
    nice: int
    speed: float  # neighbours' median time per FLOP / the nice size's: above 1, the nice size is faster
    verdict: str  # "faster", "slower" or "within noise"


def nice_verdict(sweep: list[SizeTiming], nice: int) -> Verdict:
    """The nice size against all other sizes of the sweep, in time per FLOP, by quartiles of the calls."""
    def quartiles(values: list[float]) -> tuple[float, float, float]:
        q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
        return q1, q2, q3

    mine = next(s for s in sweep if s.size == nice).ns_per_mflop()
    others = [t for s in sweep if s.size != nice for t in s.ns_per_mflop()]
    if not others:
        raise ValueError("the sweep needs at least one size besides the nice one")
    (m1, m2, m3), (o1, o2, o3) = quartiles(mine), quartiles(others)
    verdict = "faster" if m3 < o1 else "slower" if m1 > o3 else "within noise"
    return Verdict(nice, o2 / m2, verdict)
