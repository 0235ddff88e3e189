"""Autocast's choices, recorded op by op; fp16 gradients underflowing without a scaler, and not with one."""

import pytest
import torch

from gpt2lab.engine.knobs import RUNGS, build
from gpt2lab.measure.ladder import fixed_batch
from gpt2lab.engine.model import GPT, GPTConfig, get_config
from gpt2lab.lessons.precision import (LOSS_OPS, MATMUL_OPS, gradient_underflow, ops_table, ran_in, record_ops,
                               summarize_ops, underflow_table)


@pytest.fixture(scope="module")
def tiny():
    cfg = get_config("test")
    model = build(RUNGS["bf16"].knobs, cfg, "cpu", seed=0).raw
    x, y = fixed_batch(cfg, 2, 16, torch.device("cpu"))
    return model, x, y


def test_autocast_runs_matmuls_in_bf16_and_the_loss_in_fp32(tiny):
    model, x, y = tiny
    records = record_ops(model, x, y, torch.bfloat16)
    assert ran_in(records, MATMUL_OPS) == {"bfloat16"}
    assert ran_in(records, LOSS_OPS) == {"float32"}
    ops = {r.op for r in records}
    assert {"addmm", "bmm", "mm", "_log_softmax", "nll_loss_forward"} <= ops
    # the casts autocast inserted: fp32 weights and activations down to bf16, the logits back up to fp32
    casts = {(r.inputs, r.outputs) for r in records if r.op == "_to_copy"}
    assert (("float32",), ("bfloat16",)) in casts and (("bfloat16",), ("float32",)) in casts
    # the recorder does not change the result
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = model(x, y)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        from gpt2lab.lessons.precision import OpRecorder

        with OpRecorder():
            _, recorded_loss = model(x, y)
    assert recorded_loss.item() == loss.item()


def test_without_autocast_everything_is_fp32(tiny):
    model, x, y = tiny
    records = record_ops(model, x, y, None)
    assert ran_in(records, MATMUL_OPS) == ran_in(records, LOSS_OPS) == {"float32"}
    assert not any(r.op == "_to_copy" for r in records)
    table = ops_table(records)
    assert len(table.rows) == len(summarize_ops(records)) and sum(row[3] for row in table.rows) > 10


@pytest.mark.slow
def test_fp16_gradients_underflow_without_a_scaler():
    # GPT-2's 50,257-way softmax over 4 x 64 tokens: d loss / d logits ~ 1 / (256 * 50257) = 7.8e-8, below
    # fp16's smallest normal 6.1e-5 and around its smallest subnormal 6e-8
    cfg = get_config("cpu-tiny")
    model = build(RUNGS["fp32"].knobs, cfg, "cpu", seed=0).raw
    x, y = fixed_batch(cfg, 4, 64, torch.device("cpu"))
    counts = {c.name: c for c in gradient_underflow(model, x, y)}
    fp32, fp16, scaled, bf16 = (counts[n] for n in ("fp32", "fp16, no scaler", "fp16 + GradScaler", "bf16, no scaler"))
    assert fp32.param_rel_error == 0 and fp32.logit_zero == fp32.logit_subnormal == 0
    lost = fp16.logit_zero + fp16.logit_subnormal
    assert lost > 0.9 * fp16.logit_grads and fp16.param_zero > 0
    # the scaler moves them back into fp16's normal range, and the parameter gradients get closer to fp32's
    assert scaled.logit_zero == scaled.logit_subnormal == 0 and scaled.scale == 2**16
    # a parameter gradient that fp32 computes as ~1e-12 can still round to zero in fp16's 10-bit mantissa: what
    # the scaler removes is underflow, not every zero (1 of 3.3M entries on some CPUs, against 22k unscaled)
    assert scaled.param_zero <= fp16.param_zero / 1000
    assert scaled.param_rel_error < fp16.param_rel_error / 5
    # bf16 has fp32's exponent range: nothing underflows, without a scaler
    assert bf16.logit_zero == bf16.logit_subnormal == bf16.param_zero == 0
    assert len(underflow_table(list(counts.values())).rows) == 4


def test_format_limits_are_the_ieee_values():
    from gpt2lab.lessons.precision import format_limits

    assert format_limits(torch.float16) == (2.0**-24, 2.0**-14)
    assert format_limits(torch.bfloat16) == (2.0**-133, 2.0**-126)
    assert format_limits(torch.float32) == (2.0**-149, 2.0**-126)


def test_cast_fate_counts_what_fp16_and_bf16_lose():
    from gpt2lab.lessons.precision import cast_fate

    # fp16: 2^-26 is under half the smallest subnormal (rounds to 0); 2^-20 is subnormal; 1e-3 normal; 7e4 overflows
    values = torch.tensor([2.0**-26, 2.0**-20, 1e-3, 7e4, 0.0])
    fp16 = cast_fate(values, torch.float16)
    assert (fp16.total, fp16.zero, fp16.subnormal, fp16.overflow) == (4, 1, 1, 1)
    bf16 = cast_fate(values, torch.bfloat16)
    assert (bf16.zero, bf16.subnormal, bf16.overflow) == (0, 0, 0)
    scaled = cast_fate(values[:3], torch.float16, scale=2.0**16)  # a loss scale lifts all three into normal range
    assert (scaled.zero, scaled.subnormal, scaled.overflow) == (0, 0, 0) and scaled.share("zero") == 0.0


def test_logit_gradients_are_softmax_minus_onehot_over_tokens():
    from gpt2lab.lessons.precision import logit_gradients

    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=16, vocab_size=64, n_layer=1, n_head=2, n_embd=16))
    x = torch.randint(0, 64, (2, 8))
    y = torch.randint(0, 64, (2, 8))
    g = logit_gradients(model, x, y)
    with torch.no_grad():
        probs = model(x)[0].softmax(-1)
    expected = (probs - torch.nn.functional.one_hot(y, 64)).abs() / y.numel()
    assert torch.allclose(g, expected.flatten(), atol=1e-7)
    assert all(p.grad is None for p in model.parameters())
