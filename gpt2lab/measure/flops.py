"""How much arithmetic a training step does, and how much of the hardware it uses (MFU).

`flops_per_token` is the closed form everyone quotes (PaLM, appendix B); `counted_flops_per_token` counts
the matmul FLOPs of one real training step with PyTorch's FlopCounterMode, so the formula is checked, not
trusted. `gpt2_operations` places GPT-2's main operations on a roofline: how many FLOPs each does per byte
it must move decides whether memory bandwidth or arithmetic limits it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gpt2lab.engine.model import GPT, GPTConfig


def flops_per_token(config: GPTConfig, seq: int) -> float:
    """Training FLOPs per token, forward + backward: 6*N + 12*n_layer*n_embd*seq (PaLM paper, appendix B).

    6*N: each weight does one multiply-add (2 FLOPs) per token in the forward pass and two in the backward
    (gradient with respect to the input, and with respect to the weight): 2 + 4 = 6. N counts every parameter
    except the position embedding, which is a lookup and does no arithmetic; the token embedding stays in
    because it is also the output head. (Biases and LayerNorm gains are counted too, a <1% overestimate.)
    12*n_layer*n_embd*seq: attention's two weightless matmuls, q@k^T and att@v, cost 2*seq*n_embd FLOPs each
    per token and layer in the forward pass, so 4*seq*n_embd, times 3 with the backward. Like PaLM we count
    the full seq x seq square although the causal mask zeroes half of it.
    Use the unpadded vocabulary: padding to 50304 adds work but no useful work, so MFU stays proportional to
    tokens/s across rungs.
    """
    with torch.device("meta"):  # shapes only: no memory, no init time
        n = GPT(config).num_params(non_embedding=True)
    return 6 * n + 12 * config.n_layer * config.n_embd * seq


def counted_flops_per_token(config: GPTConfig, batch: int, seq: int) -> float:
    """FLOPs per token of one forward + backward pass, counted operation by operation by PyTorch.

    FlopCounterMode counts matmuls (and attention) only, which is what the closed form counts too; the
    element-wise work (GELU, LayerNorm, softmax, AdamW) is a rounding error in FLOPs, though not in time.
    Runs on the meta device: shapes, no arithmetic, so even GPT-2 124M at T=1024 counts in a second.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = GPT(config)
        x = torch.zeros(batch, seq, dtype=torch.long)
        with FlopCounterMode(display=False) as counter:
            _, loss = model(x, x)
            loss.backward()
    return counter.get_total_flops() / (batch * seq)


def mfu(tokens_per_s: float, flops_per_tok: float, peak: float) -> float:
    """Model FLOP utilization: the useful FLOP/s achieved as a fraction of a peak FLOP/s."""
    return tokens_per_s * flops_per_tok / peak


# ------------------------------------------------------------------------------------------------ roofline


@dataclass(frozen=True)
class Operation:
    """One operation of a training step, forward pass, for a roofline: its FLOPs and the bytes it must move."""

    name: str
    flops: float
    bytes: float

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved: above the device's ridge point the arithmetic limits, below it the memory."""
        return self.flops / self.bytes

    def attainable(self, peak_flops: float, bandwidth: float) -> float:
        """The roofline: min(compute roof, bandwidth x intensity)."""
        return min(peak_flops, bandwidth * self.intensity)


def gpt2_operations(config: GPTConfig, batch: int, seq: int, bytes_per_value: int = 2) -> list[Operation]:
    """GPT-2's main forward operations for one micro-batch, with the minimum bytes each must read and write.

    Matmuls read both operands and write the result once; element-wise operations read and write every
    value. `bytes_per_value` = 2 for bf16 activations. Naive attention writes and reads the T x T scores.
    """
    b = bytes_per_value
    m, c, v, h = batch * seq, config.n_embd, config.vocab_size, config.n_head

    def matmul(name, rows, inner, cols, batches=1):
        return Operation(name, 2 * rows * inner * cols * batches, b * batches * (rows * inner + inner * cols + rows * cols))

    scores = batch * h * seq * seq
    return [
        matmul("qkv projection", m, c, 3 * c),
        matmul("attention q@k^T", seq, c // h, seq, batch * h),
        Operation("softmax over T x T scores", 5 * scores, 2 * b * scores),
        matmul("attention out projection", m, c, c),
        matmul("MLP up (c_fc)", m, c, 4 * c),
        Operation("GELU", 8 * m * 4 * c, 2 * b * m * 4 * c),
        matmul("MLP down (c_proj)", m, 4 * c, c),
        Operation("LayerNorm", 8 * m * c, 2 * b * m * c),
        Operation("residual add", m * c, 3 * b * m * c),
        matmul("output head (lm_head)", m, c, v),
    ]


# ------------------------------------------------------------------------------------ MFU of a cited ladder


@dataclass(frozen=True)
class RungMfu:
    """One rung of a measured ladder against two yardsticks: the peak of the dtype its matmuls run in, and the
    device's best dense 16-bit peak (one yardstick for every rung)."""

    rung: str
    ms_per_step: float
    tokens_per_s: float
    matmul_dtype: str
    own_peak: float
    own: float
    best: float


def ladder_mfu(ladder, device_name: str, rungs: tuple[str, ...], config: GPTConfig, seq: int) -> list[RungMfu]:
    """MFU of each of `rungs` in `ladder` (a `gpt2lab.measure.reference.LadderReference`) on `device_name`, with
    the PaLM count of FLOPs per token of `config` at `seq`."""
    from gpt2lab.base.hardware import best_peak_flops, peak_flops
    from gpt2lab.engine.knobs import RUNGS

    per_token, best = flops_per_token(config, seq), best_peak_flops(device_name)
    if best is None:
        raise ValueError(f"no datasheet peak for {device_name!r}")
    rows = []
    for name in rungs:
        dtype = RUNGS[name].knobs.matmul_dtype
        own_peak, tps = peak_flops(device_name, dtype), ladder.tokens_per_s(name)
        rows.append(RungMfu(name, ladder.ms_per_step[name], tps, dtype, own_peak, mfu(tps, per_token, own_peak),
                            mfu(tps, per_token, best)))
    return rows
