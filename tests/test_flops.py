"""FLOPs per token: the closed form against a hand count and PyTorch's own counter; MFU; the roofline."""

import pytest

from gpt2lab.measure.flops import counted_flops_per_token, flops_per_token, gpt2_operations, mfu
from gpt2lab.base.hardware import peak_flops
from gpt2lab.engine.model import get_config

def test_flops_per_token_hand_computed():
    # test preset: vocab 512, 2 layers, n_embd 32. Parameters that do matmuls (all but wpe):
    # wte/lm_head 512*32 = 16384; per layer 2 LayerNorms 2*64, c_attn 32*96+96, attn c_proj 32*32+32,
    # c_fc 32*128+128, mlp c_proj 128*32+32 = 12704; final LayerNorm 64. N = 16384 + 2*12704 + 64 = 41856.
    assert flops_per_token(get_config("test"), 16) == 6 * 41856 + 12 * 2 * 32 * 16
    # GPT-2 124M at T=1024: N = 124,439,808 - 1024*768 (wpe) = 123,653,376
    fpt = flops_per_token(get_config("gpt2"), 1024)
    assert fpt == 6 * 123_653_376 + 12 * 12 * 768 * 1024 == 855_166_464
    # the video's last rung, 16*1024 tokens in 90 ms on an A100 in bf16: about 50% MFU
    mfu = 16 * 1024 / 0.090 * fpt / peak_flops("NVIDIA A100-SXM4-80GB", "bf16")
    assert mfu == pytest.approx(0.499, abs=1e-3)




@pytest.mark.parametrize("model, batch, seq", [("test", 2, 16), ("cpu-small", 2, 64), ("gpt2", 1, 1024)])
def test_counted_flops_match_the_closed_form(model, batch, seq):
    """PyTorch's FlopCounterMode counts the matmuls of a real forward + backward pass. The closed form also
    counts biases and LayerNorm gains (6 FLOPs per token each) and the full T x T attention square, while the
    counter sees what runs: the difference is below 1% for GPT-2 124M."""
    cfg = get_config(model)
    counted, formula = counted_flops_per_token(cfg, batch, seq), flops_per_token(cfg, seq)
    assert counted <= formula
    assert counted == pytest.approx(formula, rel=0.01 if model == "gpt2" else 0.05)


def test_mfu_and_matmul_dtype():
    from gpt2lab.engine.knobs import RUNGS, Knobs

    assert mfu(1000.0, 6e9, 1e13) == pytest.approx(0.6)
    assert [RUNGS[n].knobs.matmul_dtype for n in ("fp32", "tf32", "bf16", "fused_adamw")] == ["fp32", "tf32", "bf16", "bf16"]
    assert RUNGS["fp8"].knobs.matmul_dtype == "fp8"  # the blocks' matmuls, though autocast is bf16
    assert Knobs(autocast="fp16", matmul_precision="high").matmul_dtype == "fp16"


def test_roofline_places_gpt2_operations():
    ops = {op.name: op for op in gpt2_operations(get_config("gpt2"), 16, 1024)}
    # an H100's bf16 ridge point: 989.5 TFLOP/s over 3.35 TB/s = ~295 FLOPs per byte
    ridge = 989.5e12 / 3.35e12
    assert ops["MLP up (c_fc)"].intensity > ridge  # big matmuls: compute-bound
    assert ops["output head (lm_head)"].intensity > ridge
    for name in ("GELU", "LayerNorm", "residual add", "softmax over T x T scores"):
        assert ops[name].intensity < 10  # element-wise: a few FLOPs per byte, memory-bound
    gelu = ops["GELU"]
    assert gelu.attainable(989.5e12, 3.35e12) == pytest.approx(3.35e12 * gelu.intensity)
    assert ops["MLP up (c_fc)"].attainable(989.5e12, 3.35e12) == 989.5e12
    # the c_fc matmul: 2 * (16*1024) * 768 * 3072 FLOPs
    assert ops["MLP up (c_fc)"].flops == 2 * 16 * 1024 * 768 * 3072


def test_ladder_mfu_of_the_h200_reference():
    from gpt2lab.engine.model import get_config
    from gpt2lab.measure.flops import flops_per_token, ladder_mfu
    from gpt2lab.measure.reference import PROJECT_H200_LADDER as H200

    rows = ladder_mfu(H200, "NVIDIA H200", ("fp32", "tf32", "bf16"), get_config("gpt2"), 1024)
    assert [(r.rung, r.matmul_dtype) for r in rows] == [("fp32", "fp32"), ("tf32", "tf32"), ("bf16", "bf16")]
    fp32 = rows[0]
    assert fp32.own_peak == 67e12
    assert fp32.own == pytest.approx(fp32.tokens_per_s * flops_per_token(get_config("gpt2"), 1024) / 67e12)
    assert round(100 * fp32.own, 1) == 56.6 and round(100 * rows[1].own, 1) == 17.9
    assert rows[0].best < rows[1].best < rows[2].best  # one yardstick: only the time moves it
    with pytest.raises(ValueError):
        ladder_mfu(H200, "a toaster", ("fp32",), get_config("gpt2"), 1024)
