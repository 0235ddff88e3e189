"""Flash attention, for teaching: the online softmax in tiles, the T x T matrix it never stores, and its FLOPs.

Naive attention computes all T x T scores, writes them to memory, softmaxes them (another round trip) and
multiplies by V; for training it also keeps the T x T probabilities for the backward pass. FlashAttention
(Dao et al., 2022, arXiv:2205.14135) computes the same output one tile of keys at a time: a running maximum and a
running sum per query row let each tile's exponentials be rescaled when a larger score arrives later ("online
softmax", Milakov & Gimelshein 2018, arXiv:1805.02867), so no T x T matrix ever exists. `tiled_attention` is that
algorithm in plain PyTorch loops: slow in Python, exact in arithmetic, and readable. The real kernel does the same
in on-chip SRAM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention the textbook way (as `gpt2lab.engine.model` does with attn="naive"): the full T x T scores."""
    T = q.size(-2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1) @ v


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_q: int = 64, block_k: int = 64,
                    return_lse: bool = False):
    """Causal attention one (query tile, key tile) pair at a time, with the online softmax.

    q, k, v: (..., T, d). For each tile of `block_q` query rows, walk the key/value tiles up to the diagonal
    (later keys are masked anyway, so their tiles are skipped), keeping per row:
      m: the largest score seen so far,  l: the sum of exp(score - m) so far,  acc: the sum of exp(score - m) * v.
    When a tile brings a larger maximum, the old l and acc are rescaled by exp(m_old - m_new). At the end
    acc / l is exactly softmax(scores) @ v. Memory per step: one block_q x block_k tile, never T x T.
    With `return_lse`, also returns m + log(l), the log-sum-exp per row: all the backward pass needs to
    recompute any tile's probabilities.
    """
    if block_q < 1 or block_k < 1:
        raise ValueError(f"tile sizes must be positive, got block_q={block_q}, block_k={block_k}")
    T, scale = q.size(-2), 1.0 / math.sqrt(q.size(-1))
    out = torch.empty_like(q)
    lse = q.new_empty(q.shape[:-1])
    for q0 in range(0, T, block_q):
        q1 = min(q0 + block_q, T)
        qi = q[..., q0:q1, :] * scale
        m = qi.new_full((*qi.shape[:-1], 1), float("-inf"))
        l = qi.new_zeros((*qi.shape[:-1], 1))
        acc = torch.zeros_like(qi)
        rows = torch.arange(q0, q1, device=q.device)[:, None]
        for k0 in range(0, q1, block_k):  # causal: keys beyond the last query row of this tile are never seen
            k1 = min(k0 + block_k, q1)
            s = qi @ k[..., k0:k1, :].transpose(-2, -1)  # this tile's scores only: (..., block_q, block_k)
            if k1 - 1 > q0:  # the tile reaches past some row's diagonal: mask those future keys
                cols = torch.arange(k0, k1, device=q.device)[None, :]
                s = s.masked_fill(cols > rows, float("-inf"))
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            p = torch.exp(s - m_new)
            rescale = torch.exp(m - m_new)  # 0 on the first tile (m = -inf), < 1 when the maximum grew
            l = l * rescale + p.sum(dim=-1, keepdim=True)
            acc = acc * rescale + p @ v[..., k0:k1, :]
            m = m_new
        out[..., q0:q1, :] = acc / l
        lse[..., q0:q1] = (m + torch.log(l)).squeeze(-1)
    return (out, lse) if return_lse else out


def tiled_attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                             lse: torch.Tensor, dout: torch.Tensor, block_q: int = 64, block_k: int = 64):
    """Gradients of causal attention with respect to q, k, v, one tile at a time, from what the forward kept.

    `out` and `lse` come from `tiled_attention(..., return_lse=True)`, `dout` is the gradient of the loss with
    respect to the output. No T x T probability matrix was stored, so each visited tile recomputes its scores
    S = q k^T and its probabilities P = exp(S - lse), then adds its share of the gradients:
      dV += P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),  dQ += dS K,  dK += dS^T Q.
    Five matmuls per tile (the forward has two), and tiles wholly in the future are skipped as in the forward.
    """
    T, scale = q.size(-2), 1.0 / math.sqrt(q.size(-1))
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    delta = (dout * out).sum(dim=-1, keepdim=True)  # rowsum(dO * O) = rowsum(P * dP): one number per query row
    for q0 in range(0, T, block_q):
        q1 = min(q0 + block_q, T)
        qi, doi, lse_i = q[..., q0:q1, :] * scale, dout[..., q0:q1, :], lse[..., q0:q1, None]
        rows = torch.arange(q0, q1, device=q.device)[:, None]
        for k0 in range(0, q1, block_k):
            k1 = min(k0 + block_k, q1)
            s = qi @ k[..., k0:k1, :].transpose(-2, -1)  # recomputed, not read back
            if k1 - 1 > q0:
                cols = torch.arange(k0, k1, device=q.device)[None, :]
                s = s.masked_fill(cols > rows, float("-inf"))
            p = torch.exp(s - lse_i)
            dv[..., k0:k1, :] += p.transpose(-2, -1) @ doi
            ds = p * (doi @ v[..., k0:k1, :].transpose(-2, -1) - delta[..., q0:q1, :])
            dq[..., q0:q1, :] += (ds @ k[..., k0:k1, :]) * scale
            dk[..., k0:k1, :] += ds.transpose(-2, -1) @ qi
    return dq, dk, dv


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PyTorch's fused attention (what the model's attn="flash" calls): the backend is PyTorch's choice."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


IMPLEMENTATIONS = {"naive": naive_attention, "sdpa": sdpa_attention, "tiled": tiled_attention}


# ------------------------------------------------------------------------------------------ memory and FLOPs


def score_matrix_bytes(batch: int, heads: int, seq: int, bytes_per_value: int = 4) -> int:
    """Bytes of one layer's attention scores (or probabilities): B x H x T x T values. Naive attention writes
    this matrix to memory and, for training, keeps the probabilities until the backward pass."""
    return batch * heads * seq * seq * bytes_per_value


@dataclass(frozen=True)
class AttentionFlops:
    """Matmul FLOPs of one layer's attention (the two weightless matmuls), full T x T square, no causal saving."""

    forward: int  # S = Q K^T and O = P V
    backward_stored: int  # dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q, with P kept from the forward
    backward_recompute: int  # the same four, plus S = Q K^T again: FlashAttention keeps no P to reuse

    @property
    def naive_training(self) -> int:
        return self.forward + self.backward_stored

    @property
    def flash_training(self) -> int:
        return self.forward + self.backward_recompute


def attention_flops(batch: int, heads: int, seq: int, head_dim: int) -> AttentionFlops:
    """Each (T x d) @ (d x T) or (T x T) @ (T x d) matmul costs 2 T^2 d FLOPs per head and batch element."""
    one = 2 * batch * heads * seq * seq * head_dim
    return AttentionFlops(forward=2 * one, backward_stored=4 * one, backward_recompute=5 * one)


# ---------------------------------------------------------------------------------------- which backend ran


def sdpa_ops(device: torch.device | str, dtype: torch.dtype = torch.float32, seq: int = 128,
             heads: int = 2, head_dim: int = 64) -> list[str]:
    """Names of the attention ops and kernels one causal SDPA call (forward + backward) ran here, from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    from gpt2lab.base.timing import quiet_stderr

    device = torch.device(device)
    q, k, v = (torch.randn(1, heads, seq, head_dim, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with quiet_stderr(), profile(activities=activities) as prof:
        sdpa_attention(q, k, v).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    names = dict.fromkeys(e.name for e in prof.events())
    keys = ("scaled_dot_product", "flash", "efficient", "fmha", "cudnn", "attention")
    return [n for n in names if any(key in n.lower() for key in keys)]


def backend_name(ops: list[str]) -> str:
    """The SDPA backend that `sdpa_ops` saw: flash, memory-efficient, cuDNN or math (plain matmul + softmax)."""
    aten = [n for n in ops if n.startswith("aten::_scaled_dot_product")]
    text = " ".join(aten or ops).lower()
    if "flash" in text:
        return "flash attention" + (" (PyTorch's CPU kernel)" if "for_cpu" in text else "")
    if "efficient" in text:
        return "memory-efficient attention (xFormers kernel)"
    if "cudnn" in text:
        return "cuDNN attention"
    return "math (unfused: matmul, softmax, matmul)"


def available_backends(device: torch.device | str, dtype: torch.dtype = torch.float32) -> dict[str, str]:
    """Each SDPA backend, forced with `torch.nn.attention.sdpa_kernel`: "runs" or the reason it cannot here."""
    import warnings

    from torch.nn.attention import SDPBackend, sdpa_kernel

    device = torch.device(device)
    q = torch.randn(1, 2, 64, 64, device=device, dtype=dtype)
    result = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                    SDPBackend.MATH):
        with warnings.catch_warnings(record=True) as caught:  # PyTorch warns why a backend was refused
            warnings.simplefilter("always")
            try:
                with sdpa_kernel(backend):
                    sdpa_attention(q, q, q)
                result[backend.name.lower()] = "runs"
                continue
            except RuntimeError as e:
                error = str(e).strip().splitlines()[0]
        reasons = [str(w.message).strip().splitlines()[0] for w in caught]
        result[backend.name.lower()] = "cannot run here: " + (
            reasons[0][:120] if reasons else f"PyTorch has no such kernel for {device.type} with {dtype}")
    return result


# ------------------------------------------------------------------------------------------ the experiment


@dataclass
class MemoryPoint:
    """One implementation at one sequence length: what a forward + backward added to memory, and its time."""

    impl: str
    seq: int
    step_mb: float | None
    score_mb: float  # one layer's B x H x T x T score matrix in this dtype
    median_ms: float


def memory_sweep(seqs: list[int], device: torch.device | str, batch: int = 1, heads: int = 12, head_dim: int = 64,
                 dtype: torch.dtype = torch.float32, impls: tuple[str, ...] = ("naive", "sdpa"),
                 steps: int = 2) -> list[MemoryPoint]:
    """Peak memory (`gpt2lab.base.timing.peak_memory`) and time of one attention forward + backward per T."""
    from gpt2lab.base.timing import measure, peak_memory

    device = torch.device(device)
    points = []
    for seq in seqs:
        q, k, v = (torch.randn(batch, heads, seq, head_dim, device=device, dtype=dtype, requires_grad=True)
                   for _ in range(3))
        for impl in impls:
            fn = IMPLEMENTATIONS[impl]

            def step():
                fn(q, k, v).sum().backward()
                q.grad = k.grad = v.grad = None

            step()  # warm-up outside the probe: first-call allocations are not the step's memory
            with peak_memory(device) as mem:
                m = measure(step, device, steps=steps, warmup=0)
            points.append(MemoryPoint(impl, seq, mem.step_mb,
                                      score_matrix_bytes(batch, heads, seq, q.element_size()) / 2**20, m.median_ms))
        del q, k, v
    return points
