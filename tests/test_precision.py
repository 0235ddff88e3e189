"""Autocast's choices, recorded op by op; fp16 gradients underflowing without a scaler, and not with one."""

import pytest
import torch

from gpt2lab.engine.knobs import RUNGS, build
from gpt2lab.measure.ladder import fixed_batch
from gpt2lab.engine.model import get_config
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
