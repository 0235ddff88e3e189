"""The head-matmul sweep and the padded-rows experiment."""

import pytest
import torch

from gpt2lab.lessons import vocab as V
from gpt2lab.engine.knobs import padded_vocab_size
from gpt2lab.engine.model import GPTConfig


def test_power_of_two_factor():
    assert V.power_of_two_factor(50257) == 1
    assert V.power_of_two_factor(50304) == 128 and 50304 == 393 * 128 == padded_vocab_size(50257)
    assert V.power_of_two_factor(50176) == 1024 and V.power_of_two_factor(50176, cap=256) == 256
    with pytest.raises(ValueError):
        V.power_of_two_factor(0)


def test_head_matmul_sweep_times_each_width_round_robin():
    sweep = V.head_matmul_sweep([256, 264, 300], rows=8, device="cpu", n_embd=16, dtype=torch.float32, steps=3)
    assert [h.vocab for h in sweep] == [256, 264, 300]
    assert all(len(h.times_ms) == 3 and h.median_ms > 0 for h in sweep)
    assert sweep[2].flops == 2 * 8 * 16 * 300 and sweep[2].tflops > 0
    with pytest.raises(ValueError):
        V.head_matmul_sweep([], rows=8, device="cpu")


def test_fast_dtype_on_cpu_follows_the_bf16_instructions():
    from gpt2lab.base.hardware import cpu_bf16_instructions

    assert V.fast_dtype("cpu") == (torch.bfloat16 if cpu_bf16_instructions() else torch.float32)


@pytest.mark.slow
def test_padded_rows_lose_their_probability():
    tokens = [(i * 7 + i // 3) % 180 for i in range(3000)]  # a toy text that uses 180 of 200 real tokens
    config = GPTConfig(block_size=16, vocab_size=200, n_layer=1, n_head=2, n_embd=16)
    h = V.padded_rows_experiment(tokens, config, steps=40, batch=4, seq=16, lr=1e-2, every=10)
    assert h.padded_vocab == 256 and h.n_seen == 180 and h.steps == [0, 10, 20, 30, 40]
    assert h.loss[-1] < h.loss[0]
    p = h.probability["padded"]
    assert p[0] == pytest.approx(56 / 256, rel=0.2)  # near-uniform at initialisation
    assert p[-1] < p[0] / 5
    gap = [pad - seen for pad, seen in zip(h.mean_logit["padded"], h.mean_logit["seen"])]
    assert gap[-1] < gap[0] - 0.5  # padded logits fall relative to the real ones that occur
    for step in range(len(h.steps)):
        assert sum(h.probability[g][step] for g in ("seen", "unseen", "padded")) == pytest.approx(1, abs=1e-4)
