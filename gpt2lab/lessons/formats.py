"""Number formats: what fp32, TF32, bf16, fp16, fp8 and int8 can hold, and what rounding to fewer bits costs.

A float is sign x 2^exponent x 1.mantissa. The exponent bits decide the range (largest value, smallest normal
value), the mantissa bits the precision (eps, the gap after 1.0). TF32 is fp32's range with fp16's precision:
a tensor core reads fp32 inputs, keeps 10 of their 23 mantissa bits, multiplies, and accumulates in fp32.
No torch dtype holds TF32, so `round_mantissa` emulates it on any hardware, from the bit pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

# (name, torch dtype); TF32 has no dtype: it is described from its bit layout in `float_formats`
FLOAT_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8 e4m3": torch.float8_e4m3fn,
    "fp8 e5m2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class NumberFormat:
    """One number format: its bit layout and what that layout can represent."""

    name: str
    bits: int
    sign_bits: int
    exponent_bits: int
    mantissa_bits: int
    max: float
    eps: float  # the gap between 1 and the next larger value (1 for an integer)
    smallest_normal: float  # below it a float loses precision (subnormals), then rounds to zero
    dtype: torch.dtype | None  # None: no torch dtype (TF32)
    note: str = ""


def _from_finfo(name: str, dtype: torch.dtype) -> NumberFormat:
    """Bit layout derived from torch.finfo, not typed in: eps = 2^-mantissa_bits, the rest is exponent."""
    fi = torch.finfo(dtype)
    mantissa = round(-math.log2(fi.eps))
    return NumberFormat(name, fi.bits, 1, fi.bits - 1 - mantissa, mantissa, float(fi.max), float(fi.eps),
                        float(fi.smallest_normal), dtype)


def tf32_format() -> NumberFormat:
    """TF32: fp32's 8 exponent bits (so fp32's range) and fp16's 10 mantissa bits (so fp16's precision).
    19 bits of information, stored in a 32-bit register; there is no TF32 tensor in memory."""
    fp32 = torch.finfo(torch.float32)
    mantissa = 10
    return NumberFormat("TF32", 19, 1, 8, mantissa, float((2 - 2.0**-mantissa) * 2.0**127), 2.0**-mantissa,
                        float(fp32.smallest_normal), None,
                        "tensor-core input format; values live in fp32 registers")


def int8_format() -> NumberFormat:
    """int8: 256 evenly spaced integers; a scale factor maps them onto real values (quantization)."""
    ii = torch.iinfo(torch.int8)
    return NumberFormat("int8", ii.bits, 1, 0, ii.bits - 1, float(ii.max), 1.0, 1.0, torch.int8,
                        f"integers {ii.min}..{ii.max}, evenly spaced (two's complement)")


def number_formats() -> list[NumberFormat]:
    """fp32, TF32, bf16, fp16, fp8 e4m3, fp8 e5m2 and int8, widest first."""
    floats = {name: _from_finfo(name, dtype) for name, dtype in FLOAT_DTYPES.items()}
    notes = {"bf16": "fp32's range, 7-bit mantissa: autocast's format",
             "fp16": "more precision than bf16, far less range: needs loss scaling",
             "fp8 e4m3": "'fn': finite only, no infinities (forward pass)",
             "fp8 e5m2": "fp16's range, 2-bit mantissa (gradients)"}
    floats = {name: replace(f, note=notes.get(name, "")) for name, f in floats.items()}
    return [floats["fp32"], tf32_format(), floats["bf16"], floats["fp16"], floats["fp8 e4m3"],
            floats["fp8 e5m2"], int8_format()]


def formats_table(formats: list[NumberFormat] | None = None):
    """The formats side by side, as a `gpt2lab.base.table.Table`."""
    from gpt2lab.base.table import Table

    rows = []
    for f in formats or number_formats():
        layout = f"{f.sign_bits} / {f.exponent_bits} / {f.mantissa_bits}" if f.exponent_bits else f"{f.sign_bits} / - / {f.mantissa_bits}"
        rows.append([f.name, str(f.dtype).replace("torch.", "") if f.dtype else "(none)", f.bits, layout,
                     f"{f.max:.5g}", f"{f.eps:.3g}", f"{f.smallest_normal:.3g}", f.note])
    return Table(["format", "torch dtype", "bits", "sign / exponent / mantissa", "max", "eps",
                  "smallest normal", "note"], rows,
                 caption="Number formats, from torch.finfo / torch.iinfo (TF32 from its bit layout)")


# ---------------------------------------------------------------------------------- rounding to fewer bits


def round_mantissa(x: torch.Tensor, bits: int) -> torch.Tensor:
    """fp32 values rounded to `bits` mantissa bits (round to nearest, ties to even), still stored as fp32.

    bits=10 is TF32's rounding of a tensor core's inputs, bits=7 is bf16's (and equals `x.bfloat16().float()`).
    Works on the integer bit pattern: add half of the dropped part (minus one unless the kept part is odd,
    which breaks ties towards even), then clear the dropped bits. A carry out of the mantissa correctly bumps
    the exponent. Infinities and NaNs are left alone.
    """
    if x.dtype != torch.float32:
        raise ValueError(f"round_mantissa takes float32, got {x.dtype}")
    if not 0 <= bits <= 23:
        raise ValueError(f"bits must be in 0..23, got {bits}")
    drop = 23 - bits
    if drop == 0:
        return x.clone()
    i = x.contiguous().view(torch.int32)
    lsb = (i >> drop) & 1  # the last kept bit: 1 means odd, so a tie rounds up to make it even
    rounded = (i + ((1 << (drop - 1)) - 1) + lsb) & ~((1 << drop) - 1)
    out = rounded.view(torch.float32)
    return torch.where(torch.isfinite(x), out, x)


def emulate_tf32(x: torch.Tensor) -> torch.Tensor:
    """What a tensor core reads when it is handed this fp32 tensor in TF32 mode."""
    return round_mantissa(x, 10)


def matmul_errors(n: int, device: torch.device | str = "cpu", seed: int = 0, real_tf32: bool = False) -> dict[str, float]:
    """Relative error ||C - C_exact|| / ||C_exact|| of an n x n x n matmul of random normal matrices.

    The exact product is computed in fp64. Emulations round the inputs and multiply in fp32 (as tensor cores
    do: exact products, fp32 accumulation), so they isolate the cost of rounding the inputs:
    - fp32: the plain fp32 matmul (only the accumulation rounds);
    - TF32 (emulated): inputs rounded to 10 mantissa bits;
    - bf16 inputs (emulated): inputs rounded to 7 mantissa bits;
    - bf16 (torch): torch's own bf16 matmul, whose output is also rounded to bf16, as under autocast;
    - TF32 (real): on a CUDA GPU with TF32, fp32 tensors with matmul precision "high" (if `real_tf32`).
    """
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    a64, b64 = torch.randn(n, n, generator=g, dtype=torch.float64), torch.randn(n, n, generator=g, dtype=torch.float64)
    exact = a64 @ b64
    a, b = a64.float().to(device), b64.float().to(device)

    def err(c: torch.Tensor) -> float:
        return ((c.double().cpu() - exact).norm() / exact.norm()).item()

    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        out = {
            "fp32": err(a @ b),
            "TF32 (emulated)": err(emulate_tf32(a) @ emulate_tf32(b)),
            "bf16 inputs (emulated)": err(round_mantissa(a, 7) @ round_mantissa(b, 7)),
            "bf16 (torch)": err(a.bfloat16() @ b.bfloat16()),
        }
        if real_tf32:
            torch.set_float32_matmul_precision("high")
            out["TF32 (real)"] = err(a @ b)
    finally:
        torch.set_float32_matmul_precision(before)
    return out


def has_tf32(device: torch.device | str) -> bool:
    """TF32 tensor cores: NVIDIA GPUs from Ampere (compute capability 8.0) on."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


# ------------------------------------------------------------------------------ where the values lie


def representable_values(dtype: torch.dtype) -> torch.Tensor:
    """Every finite value of an 8- or 16-bit format, sorted, as fp64 (enumerated from all bit patterns)."""
    if dtype == torch.int8:
        return torch.arange(-128, 128, dtype=torch.float64)
    bits = torch.finfo(dtype).bits
    if bits == 8:
        patterns = torch.arange(256, dtype=torch.int16).to(torch.uint8)
    elif bits == 16:
        patterns = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    else:
        raise ValueError(f"{dtype} has {bits} bits: too many values to enumerate (8 or 16 only)")
    values = patterns.view(dtype).double()
    return torch.unique(values[torch.isfinite(values)])  # unique also merges +0 and -0, and sorts


def relative_gaps(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For the positive values: each value and the relative gap to the next one, (next - x) / x."""
    pos = values[values > 0]
    return pos[:-1], (pos[1:] - pos[:-1]) / pos[:-1]


def plot_representable(dtypes: dict[str, torch.dtype] | None = None):
    """Left: the positive values of the 8-bit formats on a log axis (int8 crowds the top decade, floats
    spread evenly over decades). Right: the relative gap to the next value, for 8- and 16-bit formats:
    constant for floats (about eps, within a factor 2), falling as 1/x for integers. Returns the Figure."""
    from gpt2lab.base import figures

    dtypes = dtypes or {"int8": torch.int8, "fp8 e4m3": torch.float8_e4m3fn, "fp8 e5m2": torch.float8_e5m2,
                        "fp16": torch.float16, "bf16": torch.bfloat16}
    fig, (ax_vals, ax_gap) = figures.subplots(2, 1, height=6.4)
    eight = [(n, d) for n, d in dtypes.items() if d == torch.int8 or torch.finfo(d).bits == 8]
    for row, (name, dtype) in enumerate(eight):
        v = representable_values(dtype)
        v = v[v > 0]
        ax_vals.plot(v.numpy(), [row] * len(v), "|", markersize=14, label=f"{name}: {len(v)} positive values")
    ax_vals.set_xscale("log")
    ax_vals.set_yticks(range(len(eight)), [n for n, _ in eight])
    ax_vals.set_ylim(-0.7, len(eight) - 0.3)
    ax_vals.set_xlabel("value (log scale)")
    ax_vals.set_title("every positive value of the 8-bit formats")
    ax_vals.grid(axis="x", alpha=0.3)
    for name, dtype in dtypes.items():
        x, gap = relative_gaps(representable_values(dtype))
        ax_gap.plot(x.numpy(), gap.numpy(), drawstyle="steps-post", label=name)
    ax_gap.set_xscale("log")
    ax_gap.set_yscale("log")
    ax_gap.set_xlabel("value x (log scale)")
    ax_gap.set_ylabel("(next value - x) / x")
    ax_gap.set_title("relative gap to the next value: precision")
    ax_gap.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax_gap.grid(alpha=0.3)
    return fig


# ------------------------------------------------------------------------------------------ for the book


def stored_as(value: float) -> dict[str, float]:
    """`value` after a round trip through each format (TF32 emulated): what the format can keep of it."""
    x = torch.tensor([value], dtype=torch.float32)
    out = {"fp32": x.item(), "TF32": emulate_tf32(x).item()}
    for name in ("bf16", "fp16", "fp8 e4m3", "fp8 e5m2"):
        out[name] = x.to(FLOAT_DTYPES[name]).float().item()
    return out


def rounding_table(values: list[float]):
    """A few numbers as each format stores them: precision (digits kept) and range (overflow, flush to zero)."""
    from gpt2lab.base.table import Table

    rows = [[f"{v:.10g}"] + [f"{s:.8g}" for s in stored_as(v).values()] for v in values]
    return Table(["value", "fp32", "TF32 (emulated)", "bf16", "fp16", "fp8 e4m3", "fp8 e5m2"], rows,
                 caption="each value after a round trip through the format (round to nearest even)",
                 notes=("fp8 e4m3fn has no infinity: a value past its max 448 shows what torch's conversion "
                        "returns for it (saturation or NaN)",))


def matmul_error_table(sizes: list[int], device: torch.device | str = "cpu", real_tf32: bool = False):
    """`matmul_errors` for several sizes: (Table, {kind: [error per size]})."""
    from gpt2lab.base.table import Table

    errors = [matmul_errors(n, device, seed=n, real_tf32=real_tf32) for n in sizes]
    by_kind = {kind: [e[kind] for e in errors] for kind in errors[0]}
    rows = [[kind] + [f"{e:.2e}" for e in errs] for kind, errs in by_kind.items()]
    return (Table(["inputs rounded to"] + [f"n={n}" for n in sizes], rows,
                  caption="relative error ||C - C_exact|| / ||C_exact|| of an n x n x n matmul of N(0,1) matrices "
                          "(exact: fp64)"), by_kind)
