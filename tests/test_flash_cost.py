"""Flash attention's cost counted: FLOPs per implementation (causal skipping included) and T x T buffers."""

import pytest

from gpt2lab.lessons import flash_cost as C


def test_causal_tile_fraction():
    assert C.causal_tile_fraction(4, 1, 1) == 10 / 16  # rows keep 1, 2, 3, 4 keys
    assert C.causal_tile_fraction(256, 256, 256) == 1.0  # one tile: nothing skipped
    assert C.causal_tile_fraction(1024, 64, 64) == pytest.approx(0.5 + 0.5 / 16)  # half, plus the diagonal tiles


def test_flop_rows_count_the_full_square_except_the_causal_tiles():
    H, T, d = 2, 96, 16
    one = 2 * H * T * T * d  # one (T x d) @ (d x T) matmul
    naive, causal, unmasked, formula, tiled = C.flop_rows("cpu", heads=H, seq=T, head_dim=d, block=32)
    assert naive.name.startswith("naive") and formula.name.startswith("the counter") and tiled.name.startswith("tiled")
    assert (naive.forward, naive.backward) == (2 * one, 4 * one)  # P is stored: the backward does not recompute S
    assert (formula.forward, formula.backward) == (2 * one, 5 * one)  # full square, plus the recomputed S
    frac = C.causal_tile_fraction(T, 32, 32)
    assert (tiled.forward, tiled.backward) == (round(2 * one * frac), round(5 * one * frac))
    assert tiled.training < naive.training < formula.training
    for r in (causal, unmasked):
        assert r.training in (0, formula.training)  # 0: the counter has no formula for the CPU's fused kernel


@pytest.mark.slow
def test_compiled_naive_attention_still_allocates_score_matrices():
    eager, compiled, sdpa = C.score_buffers(heads=2, seq=128, head_dim=16)
    assert eager.score_mb == 2 * 128 * 128 * 4 / 2**20
    assert eager.score_sized > compiled.score_sized >= 1  # fusion saves some passes, not the matrix
    assert sdpa.score_sized == 0
    if sdpa.step_mb is not None:
        assert sdpa.step_mb < compiled.step_mb <= eager.step_mb
