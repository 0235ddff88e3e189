import math

import pytest
import torch

from gpt2lab.engine.model import GPT, get_config
from gpt2lab.engine.optim import OptimConfig, lr_at, make_adamw

CFG = OptimConfig(max_lr=6e-4, warmup_steps=715, max_steps=19073)


def test_schedule_key_points():
    assert lr_at(0, CFG) == pytest.approx(6e-4 / 715)  # warmup starts at max/warmup, not zero
    assert lr_at(714, CFG) == pytest.approx(6e-4)  # end of warmup reaches max
    assert lr_at(715, CFG) == pytest.approx(6e-4)  # cosine starts at max
    mid = 715 + (19073 - 715) // 2
    assert lr_at(mid, CFG) == pytest.approx((6e-4 + 6e-5) / 2, rel=1e-3)
    assert lr_at(19073, CFG) == pytest.approx(6e-5)
    assert lr_at(50_000, CFG) == pytest.approx(6e-5)


def test_schedule_is_monotone_after_warmup():
    values = [lr_at(s, CFG) for s in range(715, 19074, 97)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    warm = [lr_at(s, CFG) for s in range(715)]
    assert all(a < b for a, b in zip(warm, warm[1:]))


def test_weight_decay_groups_for_gpt2_124m():
    with torch.device("meta"):
        model = GPT(get_config("gpt2"))
    opt, report = make_adamw(model, CFG, fused=False, device_type="cpu")
    # 2-D: wte (tied head), wpe, and 4 matrices per block; 1-D: 2 LayerNorms x2 + 4 biases per block, ln_f x2
    assert report.decay_tensors == 2 + 4 * 12 and report.no_decay_tensors == 8 * 12 + 2
    assert report.decay_params + report.no_decay_params == 124_439_808
    assert report.no_decay_params == 121_344
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["eps"] == 1e-8
    assert "decay on 50 tensors" in str(report)


def test_fused_flag_follows_request_and_device():
    model = GPT(get_config("test"))
    opt, report = make_adamw(model, CFG, fused=True, device_type="cpu")
    assert report.fused and opt.defaults["fused"]  # torch >= 2.4 has a fused CPU kernel
    opt, report = make_adamw(model, CFG, fused=False, device_type="cpu")
    assert not report.fused and not opt.defaults["fused"]
    _, report = make_adamw(model, CFG, fused=True, device_type="no-such-device")
    assert not report.fused


def test_min_lr_is_a_tenth():
    assert CFG.min_lr == pytest.approx(6e-5)
    assert math.isclose(lr_at(10**9, OptimConfig(max_lr=1.0, min_lr_ratio=0.1)), 0.1)


def test_the_three_adamw_implementations_compute_the_same_update():
    """Same arithmetic, different scheduling: one step's update agrees to float32 rounding (the fused kernel
    orders its operations differently, so not bit for bit)."""
    from gpt2lab.engine.optim import ADAMW_IMPLEMENTATIONS, fused_supported

    updates = {}
    for name, options in ADAMW_IMPLEMENTATIONS.items():
        if options["fused"] and not fused_supported("cpu"):
            continue
        torch.manual_seed(0)
        model = GPT(get_config("test"))
        before = torch.cat([p.detach().flatten() for p in model.parameters()])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, **options)
        x = torch.randint(0, 512, (2, 8))
        model(x, x)[1].backward()
        opt.step()
        updates[name] = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
    base = updates.pop("for-loop")
    assert base.abs().max() > 1e-4  # a real update happened
    for name, update in updates.items():
        assert (update - base).abs().max() < 1e-6, name


@pytest.mark.slow
def test_adamw_step_costs_count_fewer_operations_when_fused():
    from gpt2lab.engine.optim import adamw_step_costs, fused_supported

    model = GPT(get_config("test"))
    before = [p.detach().clone() for p in model.parameters()]
    costs = {c.implementation: c for c in adamw_step_costs(model, "cpu", steps=2, warmup=1)}
    n_tensors = len(list(model.parameters()))
    # the for-loop issues several operations per parameter tensor; foreach a handful for all of them
    assert costs["for-loop"].operations >= 5 * n_tensors
    assert costs["foreach"].operations < costs["for-loop"].operations / 3
    if fused_supported("cpu"):
        assert costs["fused"].operations <= 3  # the fused kernel (plus the step-count increment)
    assert all(c.ms_median > 0 and c.ms_min <= c.ms_median <= c.ms_max for c in costs.values())
    # the measurement leaves the weights as they were and the gradients cleared
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
