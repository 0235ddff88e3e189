import pytest
import torch

from gpt2lab.engine.model import GPTConfig
from gpt2lab.lessons.accumulation import accumulated_gradients, forgotten_division, seeded_model

CFG = GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32)
K = 4


def micro_batches(n_steps: int) -> list:
    torch.manual_seed(1)
    data = torch.randint(0, 64, (n_steps, 8, 17))
    return [list(zip(d[:, :-1].chunk(K), d[:, 1:].chunk(K))) for d in data]


def test_divided_micro_batch_gradients_equal_the_big_batch_and_undivided_ones_are_k_times_larger():
    steps = micro_batches(1)
    x = torch.cat([b[0] for b in steps[0]])
    y = torch.cat([b[1] for b in steps[0]])
    model = seeded_model(CFG, 0)
    big = accumulated_gradients(model, [(x, y)])
    right = accumulated_gradients(model, steps[0], divide=True)
    wrong = accumulated_gradients(model, steps[0], divide=False)
    for b, r, w in zip(big, right, wrong):
        torch.testing.assert_close(r, b, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(w, K * b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_sgd_scales_with_the_mistake_adamw_does_not_and_clipping_decides():
    steps = micro_batches(4)
    probe = forgotten_division(CFG, steps[:1], clips=(None,))
    right_norm = probe.adamw["no clipping"]["divided"].grad_norms[0]
    between = 2 * right_norm  # above the right gradient's norm, below the 4x one's
    r = forgotten_division(CFG, steps, clips=(None, right_norm / 100, between))
    assert r.micro == K and r.grad_ratio == pytest.approx(K, rel=1e-4) and r.sgd_ratio == pytest.approx(K, rel=1e-4)
    assert r.adamw_difference("no clipping") < 0.05  # Adam divides the factor out, up to its epsilon
    assert r.adamw_difference(f"clip at {right_norm / 100:g}") < 1e-4  # both clipped to the same norm: same run
    runs = r.adamw[f"clip at {between:g}"]
    assert runs["forgotten"].grad_norms[0] > between > runs["divided"].grad_norms[0]
