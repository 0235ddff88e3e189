import pytest
import torch

from gpt2lab.base.hardware import GPU_ANATOMY, peak_flops
from gpt2lab.lessons.formats import emulate_tf32
from gpt2lab.lessons.gpu import ampere_tf32, anatomy_table, mma_tile, plot_anatomy


@pytest.mark.parametrize("name,datasheet,dtype", [("V100 SXM2", "Tesla V100-SXM2", "fp16"),
                                                  ("A100 SXM4 80GB", "NVIDIA A100-SXM4-80GB", "bf16")])
def test_tensor_core_counts_clocks_and_instruction_size_give_the_datasheet_peak(name, datasheet, dtype):
    g = GPU_ANATOMY[name]
    # Volta: one 4x4x4 op per tensor core per clock. Ampere: 256 FMAs per tensor core per clock, i.e. one
    # m16n8k16 (2,048 FMAs) per SM sub-partition every 8 clocks. 2 FLOPs per FMA.
    fma_per_clock = {"V100 SXM2": g.mma[0].fmas, "A100 SXM4 80GB": 256}[name]
    assert 2 * g.tensor_cores * g.boost_mhz * 1e6 * fma_per_clock == pytest.approx(peak_flops(datasheet, dtype), rel=0.005)


def test_anatomy_is_consistent_with_the_bandwidth_table_and_itself():
    from gpt2lab.base.hardware import peak_bandwidth

    for name, g in GPU_ANATOMY.items():
        assert g.shared_kib_per_sm < g.l1_shared_kib_per_sm
        sizes = dict(g.levels())
        assert sizes["HBM"] > 100 * max(v for k, v in sizes.items() if k != "HBM")  # HBM dwarfs every on-chip level
        assert sizes["registers"] == g.sms * 256 * 1024  # 64K 32-bit registers per SM on all of them
        for s in g.mma:
            assert s.fmas == s.m * s.n * s.k and s.source
    assert GPU_ANATOMY["A100 SXM4 80GB"].tensor_cores == 432 and GPU_ANATOMY["H100 SXM5"].tensor_cores == 528
    assert peak_bandwidth("NVIDIA H200") == GPU_ANATOMY["H200 SXM"].hbm_gbs * 1e9
    assert peak_bandwidth("NVIDIA A100-SXM4-80GB") == GPU_ANATOMY["A100 SXM4 80GB"].hbm_gbs * 1e9


def test_mma_tile_rounds_inputs_to_tf32_and_accumulates_in_fp32():
    shape = ampere_tf32()
    assert (shape.m, shape.n, shape.k) == (16, 8, 8)
    gen = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(*s, generator=gen) for s in ((16, 8), (8, 8), (16, 8)))
    d = mma_tile(a, b, c, shape)
    exact_rounded = c.double() + emulate_tf32(a).double() @ emulate_tf32(b).double()
    exact = c.double() + a.double() @ b.double()
    assert torch.allclose(d.double(), exact_rounded, rtol=0, atol=1e-5)  # only fp32 accumulation error left
    rel = ((d.double() - exact).norm() / exact.norm()).item()
    assert 1e-5 < rel < 2.0**-10  # the inputs' rounding to 10 mantissa bits is the error
    one = mma_tile(a[:, :1].expand(16, 8).contiguous(), b, torch.zeros(16, 8), shape)
    assert one.dtype == torch.float32
    with pytest.raises(ValueError):
        mma_tile(a, b[:4], c, shape)


def test_table_and_figure_show_every_gpu():
    import matplotlib

    matplotlib.use("Agg")
    table = anatomy_table()
    assert len(table.header) == 1 + len(GPU_ANATOMY)
    fig = plot_anatomy(["A100 SXM4 80GB", "H200 SXM"])
    assert len(fig.axes) == 2
