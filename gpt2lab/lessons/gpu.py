"""The GPU the video talks about, drawn from the cited data in `gpt2lab.base.hardware.GPU_ANATOMY`.

`anatomy_table` lists SMs, tensor cores, the memory levels and their sizes, HBM bandwidth and the tensor-core
instructions per GPU; `plot_anatomy` draws the memory hierarchy (whole-chip bytes per level, log scale) and the
work of one tensor-core instruction. `mma_tile` emulates one TF32 instruction on the CPU: inputs rounded to
TF32, products summed in fp32, as chapter 5 describes.
"""

from __future__ import annotations

import torch

from gpt2lab.base.hardware import GPU_ANATOMY, MmaShape
from gpt2lab.lessons.formats import emulate_tf32


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:,.0f} {unit}" if n / size >= 10 else f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def anatomy_table(names: list[str] | None = None):
    from gpt2lab.base.table import Table

    gpus = [GPU_ANATOMY[n] for n in (names or list(GPU_ANATOMY))]
    rows = [["SMs"] + [g.sms for g in gpus],
            ["tensor cores (per SM)"] + [f"{g.tensor_cores} ({g.tensor_cores_per_sm})" for g in gpus],
            ["registers per SM"] + [f"{g.registers_kib_per_sm} KB" for g in gpus],
            ["L1 + shared memory per SM (shared at most)"] + [f"{g.l1_shared_kib_per_sm} KB ({g.shared_kib_per_sm} KB)"
                                                             for g in gpus],
            ["L2 cache"] + [f"{g.l2_mib} MB" for g in gpus],
            ["HBM: size, bandwidth"] + [f"{g.hbm_gb} GB, {g.hbm_gbs / 1000:.2f} TB/s" for g in gpus],
            ["tensor-core instruction (tf32 or fp16 input)"] + [f"{g.mma[0].instruction}: {g.mma[0].m}x{g.mma[0].n}x"
                                                                f"{g.mma[0].k} {g.mma[0].dtype}" for g in gpus]]
    return Table(["", *[g.name for g in gpus]], rows,
                 caption="sources: " + "; ".join(dict.fromkeys(s for g in gpus for s in g.sources)))


def plot_anatomy(names: list[str] | None = None):
    """Left: bytes per memory level on the whole chip (log scale), per GPU, HBM bandwidth in the legend.
    Right: multiply-adds per tensor-core instruction, labelled with its m x n x k tile."""
    import numpy as np

    from gpt2lab.base import figures

    gpus = [GPU_ANATOMY[n] for n in (names or list(GPU_ANATOMY))]
    fig, (left, right) = figures.subplots(2, 1, height=8.4, gridspec_kw={"height_ratios": [1.2, 1]})
    levels = [name for name, _ in gpus[0].levels()]
    width = 0.8 / len(gpus)
    for i, g in enumerate(gpus):
        sizes = [b for _, b in g.levels()]
        bars = left.barh(np.arange(len(levels)) + i * width, sizes, height=width,
                         label=f"{g.name}: {g.sms} SMs, HBM {g.hbm_gbs / 1000:.2f} TB/s")
        for bar, size in zip(bars, sizes):
            left.text(size * 1.15, bar.get_y() + bar.get_height() / 2, _bytes(size), va="center",
                      fontsize=figures.MIN_PT)
    left.set_yticks(np.arange(len(levels)) + 0.4 - width / 2, levels)
    left.invert_yaxis()
    left.set(xscale="log", xlim=(1e6, 3e13), xlabel="bytes on the whole chip (log scale)",
             title="memory levels, fastest at the top")
    left.legend(loc="upper right")
    shapes = [(g.name, s) for g in gpus for s in g.mma if s.dtype in ("tf32", "fp16")]
    shapes = list({(s.instruction, s.dtype): (n, s) for n, s in shapes}.values())
    labels = [f"{n.split()[0]}: {s.m}x{s.n}x{s.k} {s.dtype}\n{s.instruction.split(' (')[0]}" for n, s in shapes]
    right.barh(range(len(shapes)), [s.fmas for _, s in shapes], color="tab:purple")
    right.set_yticks(range(len(shapes)), labels)
    right.invert_yaxis()
    right.set(xscale="log", xlabel="multiply-adds in one instruction (m x n x k)",
              title="one tensor-core instruction: D = A(m x k) B(k x n) + C")
    return fig


def mma_tile(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, shape: MmaShape) -> torch.Tensor:
    """One TF32 tensor-core instruction, emulated: A (m x k) and B (k x n) rounded to TF32 (10 mantissa bits),
    their products summed in fp32 onto C (m x n, fp32). Products of two 11-bit significands are exact in fp32."""
    if shape.dtype != "tf32":
        raise ValueError(f"mma_tile emulates tf32 instructions, not {shape.dtype}")
    if a.shape != (shape.m, shape.k) or b.shape != (shape.k, shape.n) or c.shape != (shape.m, shape.n):
        raise ValueError(f"{shape.instruction} takes A {shape.m}x{shape.k}, B {shape.k}x{shape.n}, C {shape.m}x{shape.n}")
    a32, b32 = emulate_tf32(a.float()), emulate_tf32(b.float())
    out = c.float().clone()
    for kk in range(shape.k):  # accumulate one rank-1 product at a time, in fp32
        out += a32[:, kk : kk + 1] * b32[kk : kk + 1, :]
    return out


def ampere_tf32() -> MmaShape:
    return next(s for s in GPU_ANATOMY["A100 SXM4 80GB"].mma if s.dtype == "tf32")


