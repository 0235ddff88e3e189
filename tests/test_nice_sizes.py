"""Nice sizes beyond the vocabulary: round-robin sweeps and the quartile verdict."""

import pytest

from gpt2lab.lessons import nice_sizes as N


def test_round_robin_times_every_call_each_round():
    order = []
    times = N.round_robin({1: lambda: order.append(1), 2: lambda: order.append(2)}, "cpu", steps=3, warmup=1)
    assert order == [1, 2] + [1, 2] * 3  # warm-up once each, then one call of each per round
    assert {k: len(v) for k, v in times.items()} == {1: 3, 2: 3}
    with pytest.raises(ValueError):
        N.round_robin({}, "cpu", steps=1)


def test_sweeps_count_their_flops():
    rows = N.rows_sweep([8, 9], "cpu", n_in=16, n_out=32, steps=2)
    assert [(s.size, s.flops, len(s.times_ms)) for s in rows] == [(8, 2 * 8 * 16 * 32, 2), (9, 2 * 9 * 16 * 32, 2)]
    att = N.attention_sweep("head_dim", [8, 16], "cpu", heads=2, seq=32, steps=2)
    assert [s.flops for s in att] == [2 * 2 * 32 * 32 * 8, 2 * 2 * 32 * 32 * 16]
    assert N.attention_sweep("seq", [16], "cpu", heads=1, head_dim=8, steps=1)[0].flops == 2 * 16 * 16 * 8
    with pytest.raises(ValueError):
        N.attention_sweep("batch", [1], "cpu")


def test_nice_verdict_needs_quartiles_apart():
    def timing(size, times):  # flops = size * 1e6: time per FLOP is time / size
        return N.SizeTiming(size, [t * size for t in times], size * 10**6)

    clear = [timing(64, [1.0, 1.0, 1.1, 1.0]), timing(63, [2.0, 2.1, 1.9, 2.0]), timing(65, [2.0, 2.2, 2.0, 1.9])]
    v = N.nice_verdict(clear, 64)
    assert v.verdict == "faster" and v.speed == pytest.approx(2.0, rel=0.05)
    noisy = [timing(64, [1.0, 3.0, 1.0, 3.0]), timing(63, [2.0, 1.0, 3.0, 2.0])]
    assert N.nice_verdict(noisy, 64).verdict == "within noise"
    slow = [timing(64, [3.0, 3.0]), timing(63, [1.0, 1.0])]
    assert N.nice_verdict(slow, 64).verdict == "slower"
    with pytest.raises(ValueError):
        N.nice_verdict([timing(64, [1.0])], 64)
