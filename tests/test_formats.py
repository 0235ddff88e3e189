"""Number formats: bit layouts from torch.finfo, mantissa rounding against torch's own conversions, matmul error."""

import math

import pytest
import torch

from gpt2lab.lessons.formats import (emulate_tf32, formats_table, matmul_error_table, matmul_errors, number_formats,
                             plot_representable, rounding_table, stored_as,
                             relative_gaps, representable_values, round_mantissa)


def test_bit_layouts_and_ranges():
    f = {fmt.name: fmt for fmt in number_formats()}
    layout = {name: (fmt.sign_bits, fmt.exponent_bits, fmt.mantissa_bits) for name, fmt in f.items()}
    assert layout == {"fp32": (1, 8, 23), "TF32": (1, 8, 10), "bf16": (1, 8, 7), "fp16": (1, 5, 10),
                      "fp8 e4m3": (1, 4, 3), "fp8 e5m2": (1, 5, 2), "int8": (1, 0, 7)}
    for name, fmt in f.items():
        if name != "int8":
            assert fmt.bits == sum(layout[name]) or name == "TF32"
    assert f["fp16"].max == 65504 and f["fp8 e4m3"].max == 448 and f["fp8 e5m2"].max == 57344
    assert f["int8"].max == 127 and f["int8"].eps == 1
    # TF32 and bf16 keep fp32's exponent: the same smallest normal, nearly the same max
    assert f["TF32"].smallest_normal == f["bf16"].smallest_normal == f["fp32"].smallest_normal == 2.0**-126
    assert f["TF32"].max == pytest.approx(f["fp32"].max, rel=2**-10) and f["TF32"].bits == 19
    # TF32 has fp16's precision
    assert f["TF32"].eps == f["fp16"].eps == 2.0**-10
    table = formats_table()
    assert len(table.rows) == 7 and "65504" in table._repr_html_()


def test_round_mantissa_to_7_bits_is_bf16_conversion():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, generator=g) * torch.exp(torch.randn(200_000, generator=g) * 20)
    specials = torch.tensor([0.0, -0.0, 1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), torch.finfo(torch.float32).max,
                             float("inf"), float("-inf"), 2.0**-130])
    x = torch.cat([x, specials])
    assert torch.equal(round_mantissa(x, 7), x.bfloat16().float())
    # ties go to the even neighbour: 1 + 2^-8 sits halfway between 1 and 1 + 2^-7
    assert round_mantissa(torch.tensor([1 + 2**-8, 1 + 3 * 2**-8]), 7).tolist() == [1.0, 1 + 2**-6]
    assert round_mantissa(torch.tensor([float("nan")]), 7).isnan().all()


def test_round_mantissa_to_10_bits_is_fp16_precision():
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(200_000, generator=g) * 2 - 1) * 60000  # inside fp16's normal range...
    x = x[x.abs() > 2**-14]
    assert torch.equal(emulate_tf32(x), x.half().float())  # ...fp16 rounds to the same 10 bits
    # ...while TF32 keeps fp32's range where fp16 overflows or flushes
    assert emulate_tf32(torch.tensor([1e30, 1e-30])).tolist() == pytest.approx([1e30, 1e-30], rel=2**-10)
    assert round_mantissa(x, 23).equal(x)
    with pytest.raises(ValueError):
        round_mantissa(x.double(), 10)


def test_matmul_error_grows_as_mantissa_bits_shrink():
    e = matmul_errors(128, seed=0)
    assert e["fp32"] < 1e-6
    # rounding each input to 10 bits: relative error ~ 2^-11 per input, averaging down over the sum
    assert 1e-4 < e["TF32 (emulated)"] < 1e-3
    # three fewer mantissa bits: about 8x the error
    assert 4 < e["bf16 inputs (emulated)"] / e["TF32 (emulated)"] < 16
    assert e["bf16 (torch)"] >= e["bf16 inputs (emulated)"] * 0.9  # also rounds its output


def test_representable_values_enumerated_from_bit_patterns():
    # 256 patterns: e4m3fn has 2 NaNs and two zeros; e5m2 has 6 NaNs, 2 infinities and two zeros
    assert len(representable_values(torch.float8_e4m3fn)) == 253
    assert len(representable_values(torch.float8_e5m2)) == 247
    assert len(representable_values(torch.float16)) == 65536 - 2 * 1023 - 2 - 1
    assert representable_values(torch.int8).tolist() == list(range(-128, 128))
    # floats: the relative gap between neighbours stays within [eps/2, eps] over the normal range
    x, gap = relative_gaps(representable_values(torch.float16))
    normal = x >= 2**-14
    assert gap[normal].min() >= 2**-11 and gap[normal].max() <= 2**-10
    # integers: the absolute gap is constant, so the relative gap falls as 1/x
    x, gap = relative_gaps(representable_values(torch.int8))
    assert torch.allclose(gap, 1 / x)
    with pytest.raises(ValueError):
        representable_values(torch.float32)


def test_plot_representable():
    import matplotlib

    matplotlib.use("Agg")
    fig = plot_representable()
    assert len(fig.axes) == 2 and len(fig.axes[1].lines) == 5  # gaps of int8, two fp8s, fp16, bf16


def test_stored_as_shows_range_and_precision():
    pi = stored_as(3.14159265)
    assert pi["TF32"] == pi["fp16"] == 3.140625 and pi["bf16"] == 3.140625 and pi["fp8 e4m3"] == 3.25
    big = stored_as(70000.0)  # above fp16's 65504
    assert math.isinf(big["fp16"]) and big["bf16"] == 70144 and big["TF32"] == 70016
    small = stored_as(1e-9)  # below fp16's smallest subnormal 6e-8
    assert small["fp16"] == 0 and small["bf16"] == pytest.approx(1e-9, rel=2**-8)
    assert len(rounding_table([1.0, 2.0]).rows) == 2


def test_matmul_error_table():
    table, errors = matmul_error_table([32, 64])
    assert list(errors) == ["fp32", "TF32 (emulated)", "bf16 inputs (emulated)", "bf16 (torch)"]
    assert all(len(v) == 2 for v in errors.values()) and len(table.rows) == 4
