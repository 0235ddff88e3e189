import pytest
import torch

from gpt2lab.engine.model import GPTConfig
from gpt2lab.engine.optim import OptimConfig
from gpt2lab.lessons.short_runs import (
    ShortRun, clipping_step, largest_spike, overfit_one_batch, short_run, spike_verdict, warmup_runs)

CFG = GPTConfig(block_size=32, vocab_size=64, n_layer=2, n_head=2, n_embd=32)


@pytest.mark.slow
def test_one_batch_is_memorized():
    torch.manual_seed(0)
    x = torch.randint(0, 64, (4, 16))
    y = torch.roll(x, -1, dims=1)
    run = overfit_one_batch(CFG, x, y, steps=150, lr=3e-3)
    assert run.loss[0] > 3.5 and run.loss[-1] < 0.1 and set(run.lr) == {3e-3}


@pytest.mark.slow
def test_short_run_follows_the_schedule_and_is_seeded():
    torch.manual_seed(0)
    data = torch.randint(0, 64, (8, 4, 17))
    batches = lambda: iter((d[:, :-1], d[:, 1:]) for d in data)  # noqa: E731
    optim = OptimConfig(max_lr=1e-3, warmup_steps=3, max_steps=8)
    runs = []
    for _ in range(2):
        it = batches()
        runs.append(short_run(CFG, lambda: next(it), 8, optim, seed=5))
    assert runs[0].loss == runs[1].loss and runs[0].grad_norm == runs[1].grad_norm
    assert runs[0].lr[:3] == [1e-3 / 3, 2e-3 / 3, 1e-3] and runs[0].lr[-1] < 1e-3


@pytest.mark.slow
def test_clipping_caps_the_gradient_norm_not_the_adamw_update():
    torch.manual_seed(0)
    data = torch.randint(0, 64, (6, 4, 17))
    it = iter((d[:, :-1], d[:, 1:]) for d in data)
    optim = OptimConfig(max_lr=1e-2, warmup_steps=0, max_steps=10, grad_clip=0.05)
    first = clipping_step(CFG, lambda: next(it), optim, before=0)
    assert first.grad_norm > 0.05 and first.clipped_norm == pytest.approx(0.05, rel=1e-4)
    # Adam's first step moves every weight by about lr whatever the gradient's scale: clipping changes nothing
    assert first.update_norm["clipped"] == pytest.approx(first.update_norm["not clipped"], rel=0.02)  # up to eps
    assert first.update_max["clipped"] == pytest.approx(1e-2, rel=0.02)
    later = clipping_step(CFG, lambda: next(it), optim, before=3)
    assert later.step == 3 and later.clipped_norm <= 0.05 * (1 + 1e-4) < later.grad_norm
    assert later.update_norm["clipped"] > 0.05  # the step is not bounded by the clipping threshold


@pytest.mark.slow
def test_warmup_runs_differ_only_in_the_schedule():
    torch.manual_seed(0)
    data = torch.randint(0, 64, (6, 4, 17))

    def loader():
        it = iter((d[:, :-1], d[:, 1:]) for d in data)
        return lambda: next(it)

    runs = warmup_runs(CFG, loader, 6, OptimConfig(), peak_lr=1e-2, warmup=3)
    warm, cold = runs["warmup 3 steps"], runs["no warmup"]
    assert warm.lr == pytest.approx([1e-2 / 3, 2e-2 / 3, 1e-2, 1e-2, 1e-2, 1e-2]) and cold.lr == [1e-2] * 6
    assert warm.loss[0] == cold.loss[0] and warm.grad_norm[0] == cold.grad_norm[0]  # same weights, same batch
    peak, at = largest_spike(cold)
    assert at >= 1 and peak == max(cold.grad_norm[1:])


def test_spike_verdict_names_the_higher_spike_by_a_factor_of_two():
    quiet, spiky = ShortRun(grad_norm=[5.0, 1.0, 1.5]), ShortRun(grad_norm=[5.0, 4.0, 1.0])
    assert spike_verdict(quiet, spiky).startswith("without warmup")  # step 0 is left out of the comparison
    assert spike_verdict(spiky, quiet).startswith("warmup did not")
    assert spike_verdict(quiet, quiet).startswith("the two runs")
