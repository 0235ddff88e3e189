import pytest
import torch

from gpt2lab.engine.model import GPTConfig
from gpt2lab.engine.optim import OptimConfig
from gpt2lab.lessons.optimizers import optimizer_runs, update_after_jump

CFG = GPTConfig(block_size=32, vocab_size=64, n_layer=2, n_head=2, n_embd=32)


def test_a_slow_second_moment_lets_adams_step_grow_when_the_gradient_does():
    fast, slow = update_after_jump(0.95), update_after_jump(0.999)
    assert len(fast) == len(slow) == 40
    assert max(fast) < 1.2  # beta2 0.95 catches up within a few dozen steps: the step stays about lr
    assert max(slow) > 4  # 0.999 remembers ~1,000 steps of the small gradient: up to ~5x lr here
    assert update_after_jump(0.95, jump=1.0)[-1] == pytest.approx(1.0, rel=1e-3)  # no jump: steady steps of lr


@pytest.mark.slow
def test_optimizer_runs_share_init_and_batches_and_differ_in_the_optimizer():
    torch.manual_seed(0)
    data = torch.randint(0, 64, (6, 4, 17))

    def loader():
        it = iter((d[:, :-1], d[:, 1:]) for d in data)
        return lambda: next(it)

    optim = OptimConfig(max_lr=3e-3, warmup_steps=1, max_steps=6)
    runs = optimizer_runs(CFG, loader, 6, optim, sgd_lrs=(0.5,))
    assert list(runs) == ["AdamW, betas (0.9, 0.95)", "AdamW, betas (0.9, 0.999)", "SGD + momentum 0.9, lr 0.5"]
    assert len({r.loss[0] for r in runs.values()}) == 1  # same weights, same first batch
    assert runs["SGD + momentum 0.9, lr 0.5"].lr[0] == 0.5 and runs["AdamW, betas (0.9, 0.95)"].lr[0] == 3e-3
    assert len({r.loss[-1] for r in runs.values()}) == 3
