import pytest

from gpt2lab.base.stats import format_accuracy, wilson_interval


# Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score, no continuity
# correction), to the four decimals printed there.
@pytest.mark.parametrize("x, n, lo, hi", [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_published_values(x, n, lo, hi):
    got = wilson_interval(x, n)
    assert got == pytest.approx((lo, hi), abs=5e-5)


def test_interval_contains_the_estimate_and_narrows_with_n():
    small, large = wilson_interval(25, 100), wilson_interval(2500, 10000)
    assert small[0] < 0.25 < small[1] and large[0] < 0.25 < large[1]
    assert (large[1] - large[0]) < (small[1] - small[0]) / 9  # ~1/sqrt(100) as wide


def test_all_or_nothing_stays_in_unit_interval():
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0


@pytest.mark.parametrize("x, n", [(1, 0), (-1, 5), (6, 5)])
def test_bad_counts(x, n):
    with pytest.raises(ValueError):
        wilson_interval(x, n)


def test_format_accuracy():
    assert format_accuracy(81, 263, chance=0.25) == "0.3080 [0.2553, 0.3662] (81/263), chance 0.25"
