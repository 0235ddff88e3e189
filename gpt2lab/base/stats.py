"""How sure a measured accuracy is: a 95% interval for a proportion.

HellaSwag on 24, 500 or 10,042 examples gives accuracies whose noise differs by a factor of twenty; a score
printed without its interval invites reading noise as progress. The Wilson score interval (Wilson 1927)
is used instead of the textbook "p ± 1.96·sqrt(p(1-p)/n)": it stays inside [0, 1] and keeps close to its
nominal coverage for small n and for p near 0 or 1 (Newcombe 1998, "Two-sided confidence intervals for
the single proportion", Statistics in Medicine 17:857-872, compares seven methods).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Lower and upper bound of the Wilson score interval for `successes` out of `n` (95% by default)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def format_accuracy(successes: int, n: int, chance: float | None = None) -> str:
    """`0.2955 [0.2866, 0.3045] (2967/10042)`, with `, chance 0.25` when a chance level is given."""
    lo, hi = wilson_interval(successes, n)
    text = f"{successes / n:.4f} [{lo:.4f}, {hi:.4f}] ({successes}/{n})"
    return text + (f", chance {chance:g}" if chance is not None else "")
