"""The roofline: measured roofs, which operations each roof limits, and the plot."""

import matplotlib
import pytest

from gpt2lab.measure.flops import Operation, gpt2_operations
from gpt2lab.engine.model import get_config
from gpt2lab.lessons.roofline import (bound, forward_operations, human, ideal_seconds, measure_roofs, memory_bound_share,
                               plot_roofline, plot_roofs, roofline_table, roofs_table)

matplotlib.use("Agg")


def test_bound_splits_at_the_ridge_point():
    peak, bw = 100e12, 2e12  # ridge: 50 FLOPs per byte
    assert bound(Operation("a", 50e9, 1e9), peak, bw) == "compute"
    assert bound(Operation("b", 49e9, 1e9), peak, bw) == "memory"
    ops = gpt2_operations(get_config("gpt2"), 16, 1024)
    table = roofline_table(ops, peak, bw)
    by_name = {row[0]: row for row in table.rows}
    assert by_name["GELU"][6] == "memory" and by_name["MLP up (c_fc)"][6] == "compute"
    assert by_name["MLP up (c_fc)"][5] == "100%"
    # a memory-bound operation takes longer than its FLOPs alone would say: its bytes at full bandwidth
    gelu = next(op for op in ops if op.name == "GELU")
    assert ideal_seconds(gelu, peak, bw) == pytest.approx(gelu.bytes / bw)
    assert ideal_seconds(gelu, peak, bw) > gelu.flops / peak
    assert sum(float(row[-1].rstrip("%")) for row in table.rows) == pytest.approx(100, abs=0.5)  # rounded to 0.1% each


def test_plot_roofline_draws_each_operation_on_the_roof():
    ops = gpt2_operations(get_config("cpu-small"), 4, 128, bytes_per_value=4)
    fig = plot_roofline(ops, 1e11, 2e10)
    ax = fig.axes[0]
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert len(dots) == len(ops)
    for line in dots:
        x, y = line.get_xdata()[0], line.get_ydata()[0]
        assert y == pytest.approx(min(1e11, 2e10 * x))  # every dot sits on the roof
    assert ax.get_xscale() == ax.get_yscale() == "log"


def test_measure_roofs_on_this_cpu():
    roofs = measure_roofs("cpu", n=128, copy_bytes=2**22, steps=2, warmup=1)
    assert set(roofs.measured_flops) == {"fp32", "bf16"}
    assert all(f > 1e6 for f in roofs.measured_flops.values()) and roofs.measured_bandwidth > 1e6
    assert roofs.datasheet_bandwidth is None and roofs.datasheet_flops == {"fp32": None, "bf16": None}
    assert roofs.best()[1] == max(roofs.measured_flops.values())
    assert roofs.ridge("fp32") == roofs.measured_flops["fp32"] / roofs.measured_bandwidth
    rows = roofs_table(roofs).rows
    assert [r[0] for r in rows] == ["matmul fp32", "matmul bf16", "copy (read + write)"] and rows[0][2] == "n/a"
    assert len(plot_roofs(roofs).axes) == 1


def test_human_units():
    assert human(1.234e12, "FLOP/s") == "1.23 TFLOP/s" and human(5e9, "B/s") == "5 GB/s" and human(None, "x") == "n/a"


def test_forward_operations_count_every_layer():
    cfg = get_config("gpt2")
    one = {op.name: op for op in gpt2_operations(cfg, 16, 1024)}
    ops = {op.name: op for op in forward_operations(cfg, 16, 1024)}
    assert ops["MLP up (c_fc) x12"].flops == 12 * one["MLP up (c_fc)"].flops
    assert ops["LayerNorm x25"].bytes == 25 * one["LayerNorm"].bytes
    assert ops["output head (lm_head)"].flops == one["output head (lm_head)"].flops
    assert ops["GELU x12"].intensity == pytest.approx(one["GELU"].intensity)
    # the weight matmuls of a forward pass: 2 FLOPs per weight per token (no biases, no embeddings lookup)
    weights = 12 * (768 * 3 * 768 + 768 * 768 + 2 * 768 * 3072) + 768 * 50257
    names = ("qkv projection x12", "attention out projection x12", "MLP up (c_fc) x12", "MLP down (c_proj) x12",
             "output head (lm_head)")
    assert sum(ops[n].flops for n in names) == 2 * weights * 16 * 1024


def test_on_h200_roofs_the_memory_bound_ops_take_far_more_time_than_their_flops():
    ops = forward_operations(get_config("gpt2"), 16, 1024, bytes_per_value=2)
    flops_share, time_share = memory_bound_share(ops, 989.5e12, 4.8e12)  # H200 datasheet, bf16
    assert flops_share < 0.1 and time_share > 0.4 and time_share > 5 * flops_share
