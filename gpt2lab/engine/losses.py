"""The output head and cross-entropy fused and computed in chunks: the `fused_ce` rung.

GPT-2's head turns every position's hidden state into 50,304 logits. At B=64, T=1024 that is a (65,536 x 50,304)
matrix: 6.6 GB in bf16, and cross-entropy makes a float32 copy (13 GB) plus its gradient of the same size. None of
it is needed for long: each row only contributes its log-sum-exp and its target's logit to the loss, and
softmax(row) - one_hot(target) to the gradient. So we walk the rows in chunks and, for each chunk, compute its
logits, its loss and, at once, its share of the gradients of the hidden states and the head weight. Only one
chunk's logits ever exist. The backward pass then has nothing left to do but scale the stored gradients by the
incoming gradient (1 for a plain `loss.backward()`).

Under torch.compile the loss is not traced into the model's graph. Traced, the chunk loop unrolls into one graph
and inductor is free to schedule it as it likes: it kept every chunk's (V x C) share of the weight gradient alive to
add them all in one kernel at the end, and held each chunk's logits four times over (a float32 copy and three
bf16-sized buffers), so the "fused" step used as much memory as the unfused one (notebook 14). Instead the loop runs eagerly, and only the per-chunk softmax arithmetic is
compiled, as a function of its own: one chunk is alive at a time, and its gradient comes out of one fused pass.

Two variants, chosen by measuring peak memory and time (notebook 14 and tests/test_losses.py):
- "forward": gradients in the forward pass (as above): 3 head matmuls per chunk, like the unfused path.
- "recompute": the forward pass keeps only each row's log-sum-exp; backward recomputes the chunk logits.
  4 head matmuls per chunk: slower, and no smaller, since both hold a (rows x C) and a (V x C) tensor in between.

The soft-capped cross-entropy of the `softcap` idea (gpt2lab.engine.recipes) lives here too: the same idea of a loss
that computes its gradient as it goes, applied to the cap's extra arithmetic rather than to the head's memory.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

MAX_CHUNKS = 16  # more chunks save little more memory and unroll into a bigger graph under torch.compile
MIN_ROWS = 256  # fewer rows make the weight-gradient matmul (V x rows @ rows x C) too thin to run efficiently
VARIANTS = ("forward", "recompute")


def chunk_rows(n_rows: int, n_embd: int, vocab: int, max_chunks: int = MAX_CHUNKS, min_rows: int = MIN_ROWS) -> int:
    """Rows per chunk: enough chunks that a chunk's logits are about as big as the hidden states (V/C chunks,
    as Liger-Kernel sizes them), at most `max_chunks` of them and at least `min_rows` rows each (or all rows).
    GPT-2 at B=64, T=1024: 16 chunks of 4,096 rows."""
    n_chunks = max(1, min(max_chunks, math.ceil(vocab / n_embd), n_rows))
    return max(math.ceil(n_rows / n_chunks), min(n_rows, min_rows))


def _chunk_loss_and_grad(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, n_rows: int,
                         with_grad: bool):
    """Loss sum of one chunk, its rows' log-sum-exp and (d loss_mean / d logits) of its rows, in float32."""
    logits = h @ weight.t()
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # under autocast: a bf16 matmul, then
    target_logit = logits.gather(1, targets[:, None]).squeeze(1)         # the float32 copy cross-entropy uses
    if not with_grad:
        lse = torch.logsumexp(logits, dim=-1)
        return (lse - target_logit).sum(), lse, None
    # one pass of exp serves both the loss and the gradient; it overwrites the logits (no autograd in here)
    row_max = logits.amax(dim=-1)
    probs = logits.sub_(row_max[:, None]).exp_()
    total = probs.sum(dim=-1)
    lse = row_max + total.log()
    grad = probs.div_((total * n_rows)[:, None])  # softmax / n_rows
    grad.scatter_add_(1, targets[:, None], torch.full_like(total[:, None], -1.0 / n_rows))  # minus the one-hot
    return (lse - target_logit).sum(), lse, grad


def _softmax_minus_one_hot(logits: torch.Tensor, targets: torch.Tensor, n_rows: int):
    """Loss sum of one chunk and (d loss_mean / d logits), in the logits' dtype, written as one expression so
    that inductor computes it in a single fused pass (the float32 values exist only in registers)."""
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    row_max = x.amax(dim=-1, keepdim=True)
    exp = (x - row_max).exp()
    total = exp.sum(dim=-1, keepdim=True)
    loss_sum = (row_max + total.log() - x.gather(1, targets[:, None])).sum()
    is_target = torch.arange(x.size(1), device=x.device) == targets[:, None]
    grad = (exp / total - is_target.to(x.dtype)) / n_rows
    return loss_sum, grad.to(logits.dtype)


@functools.cache  # compiled once per process, on first use
def _compiled_chunk_math():
    return torch.compile(_softmax_minus_one_hot, dynamic=False)


def _forward_variant_compiled(hidden, weight, targets, rows: int):
    """The "forward" variant for a compiled model: explicit dtypes (autocast's choice, made here once), eager
    matmuls accumulating in place, compiled softmax arithmetic per chunk."""
    device = hidden.device.type
    mm = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    n = hidden.size(0)
    w = weight.to(mm)
    grad_h = torch.empty_like(hidden)
    grad_w = torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, torch.float32))
    loss = torch.zeros((), dtype=torch.promote_types(mm, torch.float32), device=hidden.device)
    chunk_math = _compiled_chunk_math()
    with torch.autocast(device, enabled=False):
        for start in range(0, n, rows):
            h, t = hidden[start:start + rows].to(mm), targets[start:start + rows]
            loss_sum, g = chunk_math(h @ w.t(), t, n)
            loss += loss_sum
            grad_h[start:start + rows] = g @ w
            grad_w += g.t() @ h  # one (V x C) partial at a time
    return loss, grad_h, grad_w.to(weight.dtype)


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """mean(cross_entropy(hidden @ weight.T, targets)) without the full logits. hidden (N, C), weight (V, C)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, rows: int, variant: str, with_grad: bool, compiled: bool):
        n = hidden.size(0)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        ctx.variant, ctx.rows = variant, rows
        if variant == "forward" and compiled and with_grad:
            loss, grad_h, grad_w = _forward_variant_compiled(hidden, weight, targets, rows)
            ctx.save_for_backward(grad_h, grad_w)
        elif variant == "forward":
            grad_h = torch.empty_like(hidden) if with_grad else None
            grad_w = (torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, torch.float32))
                      if with_grad else None)
            for start in range(0, n, rows):
                h, t = hidden[start:start + rows], targets[start:start + rows]
                loss_sum, _, g = _chunk_loss_and_grad(h, weight, t, n, with_grad)
                loss = loss + loss_sum
                if with_grad:  # under autocast these matmuls run in bf16, as the unfused backward's do
                    grad_h[start:start + rows] = g @ weight
                    grad_w += g.t() @ h
            ctx.save_for_backward(grad_h, grad_w.to(weight.dtype) if with_grad else None)
        else:
            lses = []
            for start in range(0, n, rows):
                loss_sum, lse, _ = _chunk_loss_and_grad(hidden[start:start + rows], weight,
                                                        targets[start:start + rows], n, False)
                loss = loss + loss_sum
                lses.append(lse)
            ctx.autocast = (torch.is_autocast_enabled(hidden.device.type), torch.get_autocast_dtype(hidden.device.type))
            ctx.save_for_backward(hidden, weight, targets, torch.cat(lses))
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.variant == "forward":
            grad_h, grad_w = ctx.saved_tensors
            return grad_h * grad_loss.to(grad_h.dtype), grad_w * grad_loss.to(grad_w.dtype), None, None, None, None, None
        hidden, weight, targets, lse = ctx.saved_tensors
        enabled, dtype = ctx.autocast
        n, rows = hidden.size(0), ctx.rows
        mm = dtype if enabled else hidden.dtype
        grad_h = torch.empty_like(hidden)
        grad_w = torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, torch.float32))
        w = weight.to(mm)
        for start in range(0, n, rows):
            h, t = hidden[start:start + rows].to(mm), targets[start:start + rows]
            g = h @ w.t()
            g = torch.exp(g.to(torch.promote_types(g.dtype, torch.float32)) - lse[start:start + rows, None])
            g.scatter_add_(1, t[:, None], torch.full_like(g[:, :1], -1.0))
            g = (g * (grad_loss / n)).to(mm)
            grad_h[start:start + rows] = g @ w
            grad_w += g.t() @ h
        return grad_h, grad_w.to(weight.dtype), None, None, None, None, None


@torch.compiler.disable  # the chunk loop runs eagerly even inside a compiled model (see the module's docstring)
def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          rows: int | None = None, variant: str = "forward", compiled: bool = False) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T` against `targets`, never holding more than `rows` rows of logits.

    hidden (..., C), weight (V, C), targets (...) of class indices. Equals
    `F.cross_entropy(hidden @ weight.T, targets)` and its gradients up to float rounding. `compiled`: compile the
    per-chunk arithmetic (GPT.forward passes whether it is itself being compiled).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    hidden = hidden.reshape(-1, hidden.size(-1))
    targets = targets.reshape(-1)
    rows = rows or chunk_rows(hidden.size(0), hidden.size(1), weight.size(0))
    with_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    return ChunkedLinearCrossEntropy.apply(hidden, weight, targets, rows, variant, with_grad, compiled)


# Rows of logits per block in CappedCrossEntropy. On a CPU a block's float32 logits (32 x 50,304 x 4 B = 6.4 MB) stay
# in cache through the dozen operations applied to them, instead of each one streaming the whole matrix through
# memory; on a GPU each operation is a kernel launch, so blocks are large (and still bound the float32 copy).
CAP_BLOCK_ROWS = {"cpu": 32}
CAP_BLOCK_ROWS_OTHER = 4096
LOG2_E = 1 / math.log(2)  # exp(x) = 2 ** (x * log2(e))


class CappedCrossEntropy(torch.autograd.Function):
    """mean(cross_entropy(cap * tanh(logits / cap), targets)) and its gradient, computed block by block of rows.

    Written as three operations and a cross-entropy, the soft cap adds about seven passes over the whole
    (rows x vocab) matrix of logits, forward and backward, each allocating a tensor as big as the logits: on a CPU,
    where a small model's step is mostly its head, that made the capped step about 1.4-1.6x slower. Here each block
    of rows is capped, softmaxed and differentiated while it is in cache, and the gradient is computed in the
    forward pass, as `fused_ce` does: d loss / d logits = (softmax(y) - one_hot) / rows * (1 - tanh(logits / cap)^2)
    with y = cap * tanh(logits / cap).

    tanh is computed through the logistic function, tanh(u) = 2 * sigmoid(2u) - 1: PyTorch's CPU sigmoid is about
    2.7x faster than its tanh (26 vs 72 ms over 1,024 x 50,257 float32 logits on a 2-core AMD EPYC), and tanh was
    the single largest cost of the cap. With s = sigmoid(2 * logits / cap), y = 2 * cap * s - cap: the softmax
    ignores the constant -cap, and d y / d logits = 1 - tanh^2 = 4 * s * (1 - s). Likewise the softmax's exp is
    taken as a power of 2 (exp2 was 4x faster than exp over one block of float32 logits on the same CPU).
    On a CPU the gradient is stored in the logits' own dtype (bf16 under autocast), the dtype the unfused path
    returns too, halving the memory the stored gradient streams through; elsewhere it stays float32, so that
    scaling it by a loss weight rounds once."""

    @staticmethod
    def forward(ctx, logits, targets, cap: float, with_grad: bool):
        n, vocab = logits.shape
        wide = torch.promote_types(logits.dtype, torch.float32)
        on_cpu = logits.device.type == "cpu"
        grad = (torch.empty(logits.shape, dtype=logits.dtype if on_cpu else wide, device=logits.device)
                if with_grad else None)
        loss = torch.zeros((), dtype=wide, device=logits.device)
        block = min(n, CAP_BLOCK_ROWS.get(logits.device.type, CAP_BLOCK_ROWS_OTHER))
        s_buf = torch.empty((block, vocab), dtype=wide, device=logits.device)  # reused by every block
        e_buf = torch.empty_like(s_buf)
        for start in range(0, n, block):
            rows, t = slice(start, start + block), targets[start:start + block, None]
            m = t.size(0)
            s = s_buf[:m].copy_(logits[rows]).mul_(2 / cap).sigmoid_()  # tanh(logits / cap) = 2s - 1
            s_max = s.amax(dim=-1, keepdim=True)
            e = torch.sub(s, s_max, out=e_buf[:m]).mul_(2 * cap * LOG2_E).exp2_()  # exp(y - max y)
            total = e.sum(dim=-1, keepdim=True)
            loss += (2 * cap * (s_max - s.gather(1, t)) + total.log()).sum()
            if with_grad:
                e.div_(total * (n / 4))  # softmax(y) / rows, times the 4 of 4 * s * (1 - s)
                e.scatter_add_(1, t, torch.full_like(total, -4.0 / n))  # minus the one-hot
                e.mul_(s.addcmul_(s, s, value=-1.0))  # times s * (1 - s)
                grad[rows].copy_(e)
        ctx.dtype = logits.dtype
        if with_grad:
            ctx.save_for_backward(grad)
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        # not in place (retain_graph). A bf16 gradient times a float32 0-dim tensor is computed in float32 on a CPU.
        return (grad * grad_loss.to(torch.promote_types(grad.dtype, torch.float32))).to(ctx.dtype), None, None, None


def capped_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, cap: float) -> torch.Tensor:
    """The mean cross-entropy of cap * tanh(logits / cap) for uncapped `logits` (..., V), equal to F.cross_entropy on
    the capped logits up to float rounding, without forming them. Runs outside autocast, in float32 or wider, as
    cross-entropy does under autocast."""
    flat = logits.reshape(-1, logits.size(-1))
    with_grad = torch.is_grad_enabled() and logits.requires_grad
    with torch.autocast(logits.device.type, enabled=False):
        return CappedCrossEntropy.apply(flat, targets.reshape(-1), cap, with_grad)


def full_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The unfused path, as GPT.forward computes it: every logit at once, then cross-entropy."""
    logits = hidden @ weight.t()
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def liger_cross_entropy():
    """Liger-Kernel's fused linear cross-entropy (Triton, CUDA only), from the optional `fast` extra."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    return LigerFusedLinearCrossEntropyLoss()
