"""Tiled online-softmax attention against the naive and PyTorch versions; memory, FLOPs, backends."""

import pytest
import torch

from gpt2lab.lessons import attention as A


@pytest.mark.parametrize("shape,block_q,block_k", [((2, 3, 100, 16), 32, 24), ((1, 2, 64, 8), 64, 64),
                                                   ((1, 1, 17, 4), 1, 5), ((2, 2, 33, 8), 7, 128)])
def test_tiled_attention_equals_naive_and_sdpa(shape, block_q, block_k):
    q, k, v = (torch.randn(shape) for _ in range(3))
    tiled = A.tiled_attention(q, k, v, block_q, block_k)
    torch.testing.assert_close(tiled, A.naive_attention(q, k, v), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(tiled, A.sdpa_attention(q, k, v), atol=1e-6, rtol=1e-5)


def test_tiled_attention_returns_the_log_sum_exp_the_backward_needs():
    q, k, v = (torch.randn(1, 2, 50, 8) for _ in range(3))
    _, lse = A.tiled_attention(q, k, v, 16, 16, return_lse=True)
    scores = (q @ k.transpose(-2, -1)) / 8**0.5
    scores = scores.masked_fill(torch.ones(50, 50, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(lse, scores.logsumexp(-1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        A.tiled_attention(q, k, v, 0, 16)


def test_tiled_attention_survives_scores_that_would_overflow_exp():
    q, k, v = (torch.randn(1, 1, 40, 8) * 30 for _ in range(3))  # scores in the hundreds: exp() overflows fp32
    out = A.tiled_attention(q, k, v, 8, 8)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, A.naive_attention(q, k, v), atol=1e-4, rtol=1e-4)


def test_score_matrix_bytes():
    assert A.score_matrix_bytes(16, 12, 1024, 2) == 16 * 12 * 1024 * 1024 * 2 == 384 * 2**20


def test_attention_flops_match_pytorchs_counts():
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    B, H, T, d = 2, 3, 64, 16
    f = A.attention_flops(B, H, T, d)
    with torch.device("meta"):
        q, k, v = (torch.empty(B, H, T, d, requires_grad=True) for _ in range(3))
        with FlopCounterMode(display=False) as counter:
            A.naive_attention(q, k, v).sum().backward()
    assert counter.get_total_flops() == f.naive_training == 12 * B * H * T * T * d
    assert f.forward == sdpa_flop_count((B, H, T, d), (B, H, T, d), (B, H, T, d))
    assert f.backward_recompute == sdpa_backward_flop_count((B, H, T, d), (B, H, T, d), (B, H, T, d), (B, H, T, d))
    assert f.flash_training / f.naive_training == pytest.approx(14 / 12)


def test_backend_names():
    cpu = ["aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu"]
    assert A.backend_name(cpu) == "flash attention (PyTorch's CPU kernel)"
    assert A.backend_name(["aten::_scaled_dot_product_flash_attention", "pytorch_flash::flash_fwd_kernel<...>"]) \
        == "flash attention"
    assert A.backend_name(["aten::_scaled_dot_product_efficient_attention", "fmha_cutlassF"]).startswith("memory-eff")
    assert A.backend_name(["aten::_scaled_dot_product_cudnn_attention"]) == "cuDNN attention"
    assert A.backend_name(["aten::scaled_dot_product_attention", "aten::_scaled_dot_product_attention_math"]) \
        .startswith("math")


def test_sdpa_backend_on_this_cpu():
    ops = A.sdpa_ops("cpu")
    assert any(op.startswith("aten::_scaled_dot_product") for op in ops), ops
    assert A.available_backends("cpu")["math"] == "runs"


def test_memory_sweep_sees_the_score_matrix_in_naive_attention_only():
    points = {p.impl: p for p in A.memory_sweep([512], "cpu", heads=12, steps=1)}
    naive, sdpa = points["naive"], points["sdpa"]
    assert naive.score_mb == 12 * 512 * 512 * 4 / 2**20
    if naive.step_mb is not None:  # Linux: the process's peak resident size during the step
        assert naive.step_mb >= naive.score_mb, points
        assert sdpa.step_mb < naive.step_mb, points


@pytest.mark.parametrize("T,block_q,block_k", [(100, 32, 24), (33, 7, 128), (64, 64, 64)])
def test_tiled_backward_gives_autograds_gradients(T, block_q, block_k):
    q, k, v = (torch.randn(2, 3, T, 16, requires_grad=True) for _ in range(3))
    dout = torch.randn(2, 3, T, 16)
    A.naive_attention(q, k, v).backward(dout)
    with torch.no_grad():
        out, lse = A.tiled_attention(q, k, v, block_q, block_k, return_lse=True)
        grads = A.tiled_attention_backward(q, k, v, out, lse, dout, block_q, block_k)
    for mine, theirs in zip(grads, (q.grad, k.grad, v.grad)):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)
