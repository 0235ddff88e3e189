"""Mixed precision, observed: which operations autocast runs in 16 bits, and why fp16 needs a gradient scaler.

`record_ops` watches one real forward pass operation by operation (a TorchDispatchMode sees every aten op
after autocast has chosen its dtypes), so the book's table of "bf16 here, fp32 there" is measured, not
recited. `gradient_underflow` runs one forward + backward of the model in fp32, fp16 (with and without
`torch.amp.GradScaler`) and bf16 from the same weights and counts the gradient values that fp16 loses.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

# Ops that only relabel memory or read a scalar: no arithmetic, no dtype decision worth a row.
_BOOKKEEPING = {"view", "_unsafe_view", "t", "transpose", "split", "detach", "expand", "permute", "reshape",
                "unsqueeze", "squeeze", "slice", "select", "alias", "_local_scalar_dense", "clone", "contiguous",
                "lift_fresh", "as_strided", "empty", "empty_like", "zeros", "ones", "arange", "full", "lift_fresh_copy"}

# aten ops that are matrix multiplications: what autocast exists to put in 16 bits
MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_efficient_attention",
              "_scaled_dot_product_cudnn_attention"}
LOSS_OPS = {"_log_softmax", "log_softmax", "nll_loss_forward", "cross_entropy_loss"}


@dataclass(frozen=True)
class OpRecord:
    """One aten operation as it ran: its name, the dtypes of its tensor inputs and outputs."""

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _dtypes(tree) -> tuple[str, ...]:
    return tuple(str(t.dtype).replace("torch.", "") for t in tree_leaves(tree) if isinstance(t, torch.Tensor))


class OpRecorder(TorchDispatchMode):
    """Records every aten operation dispatched inside it, with its input and output dtypes.

    The dispatch mode sits below autocast in PyTorch's dispatcher, so it sees the operations autocast actually
    ran: the casts it inserted (`_to_copy`) and each op with the dtypes autocast gave it.
    """

    def __init__(self):
        super().__init__()
        self.records: list[OpRecord] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.records.append(OpRecord(func.overloadpacket.__name__, _dtypes((args, kwargs)), _dtypes(out)))
        return out


def record_ops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None) -> list[OpRecord]:
    """The aten ops of one forward pass including the loss, under autocast to `dtype` (None: no autocast)."""
    ctx = torch.autocast(x.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with torch.no_grad(), ctx, OpRecorder() as recorder:
        model(x, y)
    return recorder.records


def arithmetic(records: list[OpRecord]) -> list[OpRecord]:
    """The records that do arithmetic on floating-point tensors (bookkeeping and integer-only ops dropped)."""
    floating = ("float", "bfloat16", "half")
    return [r for r in records if r.op not in _BOOKKEEPING and any(d.startswith(floating) for d in r.inputs + r.outputs)]


def summarize_ops(records: list[OpRecord]) -> list[tuple[OpRecord, int]]:
    """Distinct (op, input dtypes, output dtypes) with how often each ran, in order of first appearance."""
    counts: dict[OpRecord, int] = {}
    for r in arithmetic(records):
        counts[r] = counts.get(r, 0) + 1
    return list(counts.items())


def ran_in(records: list[OpRecord], ops: set[str]) -> set[str]:
    """The output dtypes (first output) the given ops produced."""
    return {r.outputs[0] for r in records if r.op in ops and r.outputs}


def ops_table(records: list[OpRecord], caption: str = ""):
    """One row per distinct operation and dtype combination: what autocast decided, as a Table."""
    from gpt2lab.base.table import Table

    def kind(r: OpRecord) -> str:
        if r.op == "_to_copy":
            return "cast inserted by autocast" if r.inputs != r.outputs else "copy"
        if r.op in MATMUL_OPS:
            return "matmul"
        if r.op in LOSS_OPS:
            return "loss"
        return ""

    rows = [[r.op, ", ".join(r.inputs), ", ".join(r.outputs), n, kind(r)] for r, n in summarize_ops(records)]
    return Table(["aten op", "input dtypes", "output dtypes", "calls", "what"], rows, caption=caption)


# ------------------------------------------------------------------------------- range: fp16 underflow


@dataclass
class GradientCount:
    """What one precision did to the gradients of one forward + backward pass, against fp32's."""

    name: str
    loss: float
    logit_grads: int  # entries of d loss / d logits (the first gradient the backward pass computes)
    logit_zero: int  # of those, exactly zero where fp32's is not: underflowed
    logit_subnormal: int  # nonzero but below the format's smallest normal: precision lost
    param_grads: int  # entries of all parameter gradients
    param_zero: int  # zero where fp32's is not
    param_rel_error: float  # ||g - g_fp32|| / ||g_fp32|| over all parameter gradients
    scale: float | None = None  # the loss scale used (GradScaler), None without


def _grads_of(model, x, y, dtype, scaler=None):
    """One forward + backward under autocast to `dtype` (None: fp32); returns loss, dlogits, parameter grads."""
    model.zero_grad(set_to_none=True)
    ctx = torch.autocast(x.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with ctx:
        logits, loss = model(x, y)
    logits.retain_grad()
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(_OneParamGroup(model))
    grads = torch.cat([p.grad.detach().float().flatten() for p in model.parameters() if p.grad is not None])
    return loss.item(), logits.grad.detach(), grads


class _OneParamGroup(torch.optim.SGD):
    """GradScaler unscales through an optimizer's parameter groups; this one is never stepped."""

    def __init__(self, model):
        super().__init__(model.parameters(), lr=0.0)


def gradient_underflow(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                       init_scale: float = 2.0**16) -> list[GradientCount]:
    """fp32, fp16 without a scaler, fp16 with `torch.amp.GradScaler(init_scale)`, and bf16: one forward +
    backward each from the same weights on the same batch, counted against fp32.

    d loss / d logits is about (softmax - one-hot) / (B*T): for GPT-2's 50,257-way softmax near uniform and
    thousands of tokens per batch that is below 1e-7, under fp16's smallest normal (6.1e-5) and near or below
    its smallest subnormal (6e-8). The scaler multiplies the loss (so every gradient) by `init_scale` before
    the backward pass and divides the fp32 parameter gradients by it afterwards, keeping them in range.
    """
    device = x.device
    reference = _grads_of(model, x, y, None)
    _, g_logits32, g32 = reference
    nonzero = g_logits32 != 0
    out = []
    for name, dtype, scaled in (("fp32", None, False), ("fp16, no scaler", torch.float16, False),
                                ("fp16 + GradScaler", torch.float16, True), ("bf16, no scaler", torch.bfloat16, False)):
        scaler = torch.amp.GradScaler(device.type, init_scale=init_scale) if scaled else None
        loss, g_logits, g = reference if dtype is None else _grads_of(model, x, y, dtype, scaler)
        tiny = torch.finfo(g_logits.dtype).smallest_normal
        out.append(GradientCount(
            name, loss, g_logits.numel(),
            int(((g_logits == 0) & nonzero).sum()),
            int(((g_logits != 0) & (g_logits.abs() < tiny)).sum()),
            g.numel(), int(((g == 0) & (g32 != 0)).sum()),
            ((g - g32).norm() / g32.norm()).item(), init_scale if scaled else None))
    model.zero_grad(set_to_none=True)
    return out


def underflow_table(counts: list[GradientCount]):
    from gpt2lab.base.table import Table

    rows = [[c.name, f"{c.loss:.4f}", f"{c.logit_zero:,} ({100 * c.logit_zero / c.logit_grads:.1f}%)",
             f"{c.logit_subnormal:,} ({100 * c.logit_subnormal / c.logit_grads:.1f}%)",
             f"{c.param_zero:,} ({100 * c.param_zero / c.param_grads:.2f}%)", f"{c.param_rel_error:.2e}"]
            for c in counts]
    return Table(["precision", "loss", "d loss/d logits: zero (fp32's is not)", "... subnormal (precision lost)",
                  "param grads: zero (fp32's is not)", "param grad error vs fp32"], rows,
                 caption=f"one forward + backward, same weights and batch; "
                         f"{counts[0].logit_grads:,} logit gradients, {counts[0].param_grads:,} parameter gradients")


# ------------------------------------------------------------------------------- range: the picture


def format_limits(dtype: torch.dtype) -> tuple[float, float]:
    """(smallest subnormal, smallest normal) of a float format. Below the normal limit a value keeps fewer
    significant bits (subnormal); below half the subnormal limit it rounds to zero."""
    info = torch.finfo(dtype)
    return info.smallest_normal * info.eps, info.smallest_normal


def logit_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|d loss / d logits| of one fp32 forward + backward, flattened, on the CPU: the values fp16 would have to hold."""
    _, g_logits, _ = _grads_of(model, x, y, None)
    model.zero_grad(set_to_none=True)
    return g_logits.abs().flatten().cpu()


@dataclass(frozen=True)
class CastFate:
    """What rounding fp32 values to a 16-bit format does to them, counted by casting."""

    dtype: str
    scale: float  # the values were multiplied by this first (a loss scale)
    total: int
    zero: int  # nonzero in fp32, exactly 0 after the cast
    subnormal: int  # nonzero but below the format's smallest normal: fewer bits kept
    overflow: int  # infinite after the cast

    def share(self, what: str) -> float:
        return getattr(self, what) / self.total


def cast_fate(values: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> CastFate:
    """Cast `values * scale` (fp32) to `dtype` and count the values that vanish, turn subnormal or overflow."""
    v = values.float() * scale
    cast = v.to(dtype)
    nonzero = v != 0
    tiny = torch.finfo(dtype).smallest_normal
    return CastFate(str(dtype).replace("torch.", ""), scale, int(nonzero.sum()),
                    int(((cast == 0) & nonzero).sum()),
                    int(((cast != 0) & (cast.abs() < tiny)).sum()),
                    int(torch.isinf(cast).sum()))
