"""The roofline of this device: its measured roofs (matmul FLOP/s per dtype, copy bandwidth) beside the datasheet,
and GPT-2's operations placed under them.

An operation that does I FLOPs per byte it moves can run no faster than min(peak FLOP/s, bandwidth x I). The
ridge point peak / bandwidth splits operations in two: above it arithmetic limits them (compute-bound), below it
memory does (memory-bound), and no amount of faster arithmetic helps a memory-bound one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gpt2lab.measure.flops import Operation, gpt2_operations
from gpt2lab.base.hardware import (copy_bandwidth, hardware_record, matmul_flops, peak_bandwidth, peak_flops,
                              supported_dtypes)
from gpt2lab.engine.model import GPTConfig


@dataclass
class Roofs:
    """What this device measured and what its datasheet promises (None where unknown, e.g. any CPU)."""

    device_name: str
    device: str
    matmul_n: int
    copy_bytes: int
    measured_flops: dict[str, float] = field(default_factory=dict)  # dtype -> FLOP/s
    measured_bandwidth: float = 0.0  # bytes/s
    datasheet_flops: dict[str, float | None] = field(default_factory=dict)
    datasheet_bandwidth: float | None = None

    def best(self) -> tuple[str, float]:
        """The fastest dtype measured and its FLOP/s: the compute roof."""
        dtype = max(self.measured_flops, key=self.measured_flops.get)
        return dtype, self.measured_flops[dtype]

    def ridge(self, dtype: str) -> float:
        """FLOPs per byte an operation needs before arithmetic, not memory, limits it (measured roofs)."""
        return self.measured_flops[dtype] / self.measured_bandwidth


def measure_roofs(device: torch.device | str, n: int, copy_bytes: int, steps: int = 5, warmup: int = 1) -> Roofs:
    """Time an n x n x n matmul in each dtype this device supports and a copy of `copy_bytes` bytes."""
    device = torch.device(device)
    name = hardware_record(device)["device_name"]
    dtypes = supported_dtypes(device)
    on_gpu = device.type == "cuda"
    return Roofs(
        name, device.type, n, copy_bytes,
        {d: matmul_flops(d, n, device, steps=steps, warmup=warmup) for d in dtypes},
        copy_bandwidth(copy_bytes, device, steps=steps, warmup=warmup),
        {d: peak_flops(name, d) if on_gpu else None for d in dtypes},
        peak_bandwidth(name) if on_gpu else None,
    )


def human(value: float | None, unit: str) -> str:
    """1.23e12 -> '1.23 T' + unit; None -> 'n/a'."""
    if value is None:
        return "n/a"
    for prefix, factor in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def roofs_table(roofs: Roofs):
    """Measured next to datasheet, one row per dtype and one for memory bandwidth (a gpt2lab.base.table.Table)."""
    from gpt2lab.base.table import Table

    def share(measured, sheet):
        return f"{100 * measured / sheet:.0f}%" if sheet else "n/a"

    rows = [[f"matmul {d}", human(f, "FLOP/s"), human(roofs.datasheet_flops.get(d), "FLOP/s"),
             share(f, roofs.datasheet_flops.get(d))] for d, f in roofs.measured_flops.items()]
    rows.append(["copy (read + write)", human(roofs.measured_bandwidth, "B/s"), human(roofs.datasheet_bandwidth, "B/s"),
                 share(roofs.measured_bandwidth, roofs.datasheet_bandwidth)])
    return Table(["probe", "measured here", "datasheet peak", "measured / datasheet"], rows,
                 caption=f"{roofs.device_name} ({roofs.device}): {roofs.matmul_n}^3 matmul, "
                         f"{roofs.copy_bytes / 2**20:.0f} MiB copy")


def plot_roofs(roofs: Roofs):
    """Bars: measured FLOP/s per dtype beside the datasheet peak where there is one. Returns the Figure."""
    from gpt2lab.base import figures

    dtypes = list(roofs.measured_flops)
    sheet = [(x, roofs.datasheet_flops.get(d)) for x, d in enumerate(dtypes) if roofs.datasheet_flops.get(d)]
    values = list(roofs.measured_flops.values()) + [s for _, s in sheet]
    unit, factor = ("TFLOP/s", 1e12) if max(values) >= 1e12 else ("GFLOP/s", 1e9)
    fig, ax = figures.subplots(height=3.6)
    xs = range(len(dtypes))
    bars = ax.bar([x - 0.2 for x in xs], [roofs.measured_flops[d] / factor for d in dtypes], 0.4,
                  label="measured here", color="tab:blue")
    ax.bar_label(bars, labels=[f"{roofs.measured_flops[d] / factor:.3g}" for d in dtypes])
    if sheet:
        ax.bar([x + 0.2 for x, _ in sheet], [s / factor for _, s in sheet], 0.4, label="datasheet peak", color="tab:gray")
    ax.set_xticks(list(xs), dtypes)
    ax.set_ylabel(unit)
    ax.set_title(f"{roofs.device_name}: matmul throughput per dtype\n"
                 f"copy bandwidth {human(roofs.measured_bandwidth, 'B/s')} measured"
                 + (f", {human(roofs.datasheet_bandwidth, 'B/s')} datasheet" if roofs.datasheet_bandwidth else ""))
    ax.margins(y=0.15)  # room for the bar labels
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return fig


def forward_operations(config: GPTConfig, batch: int, seq: int, bytes_per_value: int = 2) -> list[Operation]:
    """`gpt2lab.measure.flops.gpt2_operations` for a whole forward pass: each per-layer operation times the number of
    times it runs (n_layer; LayerNorm 2 * n_layer + 1, the residual add 2 * n_layer; the head once), so that
    shares of FLOPs and of time add up over the pass. Intensities are unchanged."""
    L = config.n_layer
    times = {"LayerNorm": 2 * L + 1, "residual add": 2 * L, "output head (lm_head)": 1}
    out = []
    for op in gpt2_operations(config, batch, seq, bytes_per_value):
        k = times.get(op.name, L)
        out.append(Operation(f"{op.name} x{k}" if k > 1 else op.name, op.flops * k, op.bytes * k))
    return out


def memory_bound_share(operations: list[Operation], peak: float, bandwidth: float) -> tuple[float, float]:
    """(share of FLOPs, share of the ideal time on the roofs) of the memory-bound operations."""
    memory = [op for op in operations if bound(op, peak, bandwidth) == "memory"]
    flops = sum(op.flops for op in memory) / sum(op.flops for op in operations)
    time = sum(ideal_seconds(op, peak, bandwidth) for op in memory) / sum(
        ideal_seconds(op, peak, bandwidth) for op in operations)
    return flops, time


def bound(op: Operation, peak: float, bandwidth: float) -> str:
    """'compute' if the operation's intensity reaches the ridge point peak / bandwidth, else 'memory'."""
    return "compute" if op.intensity >= peak / bandwidth else "memory"


def ideal_seconds(op: Operation, peak: float, bandwidth: float) -> float:
    """The least time the operation can take on these roofs: its FLOPs at its attainable rate."""
    return op.flops / op.attainable(peak, bandwidth)


def roofline_table(operations: list[Operation], peak: float, bandwidth: float):
    """Each operation's FLOPs, bytes, intensity, attainable FLOP/s and what limits it (a Table)."""
    from gpt2lab.base.table import Table

    total_flops = sum(op.flops for op in operations)
    total_time = sum(ideal_seconds(op, peak, bandwidth) for op in operations)
    rows = [[op.name, human(op.flops, "FLOP"), human(op.bytes, "B"), f"{op.intensity:.1f}",
             human(op.attainable(peak, bandwidth), "FLOP/s"), f"{100 * op.attainable(peak, bandwidth) / peak:.0f}%",
             bound(op, peak, bandwidth), f"{100 * op.flops / total_flops:.1f}%",
             f"{100 * ideal_seconds(op, peak, bandwidth) / total_time:.1f}%"] for op in operations]
    return Table(["operation", "FLOPs", "bytes moved (min)", "FLOPs/byte", "attainable", "of peak", "bound by",
                  "share of FLOPs", "share of time on the roof"], rows,
                 caption=f"roofs: {human(peak, 'FLOP/s')} and {human(bandwidth, 'B/s')}; "
                         f"ridge point {peak / bandwidth:.1f} FLOPs/byte")


def plot_roofline(operations: list[Operation], peak: float, bandwidth: float, title: str = "", ax=None):
    """Log-log roofline: attainable FLOP/s against FLOPs per byte, the two roofs meeting at the ridge point,
    each operation a dot on the roof at its intensity (red: memory-bound, blue: compute-bound), numbered, with
    the numbers' key under the axes (two panels stack: `figures.subplots(2, 1, height=...)`). Returns the Figure."""
    import matplotlib.transforms as transforms

    from gpt2lab.base import figures

    if ax is None:
        fig, ax = figures.subplots(height=5.2)
    else:
        fig = ax.figure
    ridge = peak / bandwidth
    intensities = [op.intensity for op in operations]
    lo, hi = min(min(intensities), ridge) / 4, max(max(intensities), ridge) * 4
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(peak, bandwidth * x) for x in xs], color="black", linewidth=2)
    ax.axvline(ridge, color="gray", linestyle=":", linewidth=1)
    # the ridge's label at the top of the axes, clear of the roof and the points on it
    ax.text(ridge, 0.97, f" ridge: {ridge:.0f} FLOPs/byte", ha="left", va="top", color="dimgray",
            transform=transforms.blended_transform_factory(ax.transData, ax.transAxes))
    groups: list[list[tuple[int, Operation]]] = []  # operations at the same intensity share one number label
    for i, op in enumerate(sorted(operations, key=lambda o: o.intensity), start=1):
        y = op.attainable(peak, bandwidth)
        memory = bound(op, peak, bandwidth) == "memory"
        ax.plot(op.intensity, y, "o", color="tab:red" if memory else "tab:blue",
                label=f"{i}: {op.name} ({op.intensity:.1f} FLOPs/B)")
        if groups and op.intensity < groups[-1][0][1].intensity * 1.02:
            groups[-1].append((i, op))
        else:
            groups.append([(i, op)])
    for g, group in enumerate(groups):
        i, op = group[0]
        memory = bound(op, peak, bandwidth) == "memory"
        ax.annotate(",".join(str(j) for j, _ in group), (op.intensity, op.attainable(peak, bandwidth)),
                    textcoords="offset points", fontsize=figures.MIN_PT, ha="center",
                    xytext=(0, -15 if memory or g % 2 else 6))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, frameon=False,
              title="red: memory-bound, blue: compute-bound")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(top=peak * 12)
    ax.set_xlabel("arithmetic intensity (FLOPs per byte moved, log scale)")
    ax.set_ylabel("attainable FLOP/s (log scale)")
    ax.set_title(title or f"roofline: {human(peak, 'FLOP/s')} compute roof, {human(bandwidth, 'B/s')} memory roof")
    ax.grid(alpha=0.3, which="both")
    return fig
