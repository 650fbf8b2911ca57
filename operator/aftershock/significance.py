"""`aftershock compare`'s significance test and verdict rule, in plain Python, for the operator.

The operator judges every finished run against the previous run and a baseline run (the
``Regressed`` condition). Its image carries neither numpy nor scipy (they would add ~60 MiB
of resident memory to a process that otherwise needs ~90), so the test `aftershock.analysis`
runs with them is here in plain Python:

- Mann-Whitney U, two-sided, exactly as ``scipy.stats.mannwhitneyu(b, a)`` with its defaults:
  the exact distribution when both samples have no ties and one has at most 8 values, else the
  normal approximation with tie and continuity correction. The unit tests check the U and the
  p-value against scipy's on random samples.
- the percentile bootstrap of ``median(B) - median(A)`` at level ``1 - alpha``, drawn with
  Python's ``random.Random(seed)`` (numpy's generator cannot be reproduced without numpy: the
  interval's ends can differ from `aftershock compare`'s in the last digits);
- the same verdict rule (`judge`), which `aftershock.analysis` uses too.

Rule: no I/O.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from aftershock import stats

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 20_240_501


class ComparisonVerdict(enum.StrEnum):
    IMPROVED = "Improved"
    REGRESSED = "Regressed"
    NO_CHANGE = "NoChange"

    @property
    def exit_code(self) -> int:
        """What ``aftershock compare`` exits with: 1 only for a regression (2 is a usage error)."""
        return 1 if self is ComparisonVerdict.REGRESSED else 0


@dataclass(frozen=True)
class Interval:
    """A confidence interval ``[low, high]`` for a statistic whose point estimate is ``estimate``."""

    estimate: float
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        return value < self.low or value > self.high


@dataclass(frozen=True)
class Judgement:
    """B against A: the test, the interval of the median difference, and the verdict."""

    n_a: int
    n_b: int
    u_statistic: float
    p_value: float
    median_difference: Interval
    verdict: ComparisonVerdict
    evidence: tuple[str, ...]


def _average_ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """1-based ranks, ties sharing their average rank; and the size of each group of ties."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def _u_counts(m: int, n: int) -> list[int]:
    """How many orderings of m and n values give each U (0..m*n): the coefficients of the
    Gaussian binomial coefficient [m+n choose m]_q, in exact integers."""
    coeffs = [1]
    for i in range(1, m + 1):
        # multiply by (1 - q^(n+i)), then divide by (1 - q^i): exact, the quotient is a polynomial
        grown = [*coeffs, *[0] * (n + i)]
        for k in range(len(coeffs)):
            grown[k + n + i] -= coeffs[k]
        for k in range(i, len(grown)):
            grown[k] += grown[k - i]
        while len(grown) > 1 and grown[-1] == 0:
            grown.pop()
        coeffs = grown
    return coeffs


def check_samples(a: Sequence[float], b: Sequence[float], *, alpha: float, min_effect_seconds: float) -> None:
    """Raise ValueError when there is nothing to compare or the settings make no sense: an empty
    sample, alpha outside (0, 1), a negative (or NaN) minimum effect."""
    if not a or not b:
        which = " and ".join(x for x, s in (("A", a), ("B", b)) if not s)
        raise ValueError(f"nothing to compare: {which} has no recovered trials")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if min_effect_seconds < 0 or math.isnan(min_effect_seconds):
        raise ValueError(f"the minimum effect must be 0 or more seconds, got {min_effect_seconds}")


def mann_whitney_u(b: Sequence[float], a: Sequence[float]) -> tuple[float, float]:
    """(U of B, two-sided p-value): ``scipy.stats.mannwhitneyu(b, a)`` with its defaults, except
    that every value tied (scipy: NaN) gives p = 1, no evidence either way."""
    n1, n2 = len(b), len(a)
    ranks, ties = _average_ranks([*b, *a])
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    u = max(u1, n1 * n2 - u1)
    if (n1 > 8 and n2 > 8) or any(t > 1 for t in ties):
        n = n1 + n2
        tie_term = sum(t**3 - t for t in ties)
        spread = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
        numerator = u - n1 * n2 / 2 - 0.5
        if spread == 0:  # every value tied, so U = n1 n2 / 2: no evidence either way
            return u1, 1.0
        p = math.erfc(numerator / spread / math.sqrt(2))  # 2 x the normal survival function at z
    else:
        counts = _u_counts(min(n1, n2), max(n1, n2))
        p = 2 * sum(counts[int(u) :]) / sum(counts)
    return u1, min(max(p, 0.0), 1.0)


def median_difference(
    a: Sequence[float], b: Sequence[float], *, level: float, resamples: int, seed: int
) -> Interval:
    """``median(B) - median(A)`` with its percentile-bootstrap interval at `level`."""
    rng_a, rng_b = random.Random(f"{seed}/A"), random.Random(f"{seed}/B")
    diffs = [
        _percentile([b[rng_b.randrange(len(b))] for _ in b], 50)
        - _percentile([a[rng_a.randrange(len(a))] for _ in a], 50)
        for _ in range(resamples)
    ]
    tail = (1.0 - level) / 2.0 * 100.0
    return Interval(
        estimate=_percentile(b, 50) - _percentile(a, 50),
        low=_percentile(diffs, tail),
        high=_percentile(diffs, 100.0 - tail),
    )


def _percentile(values: Sequence[float], q: float) -> float:
    found = stats.percentile(values, q)
    if found is None:
        raise ValueError("a percentile of no values")
    return found


def judge(
    median_diff: Interval, p: float, alpha: float, min_effect: float, level: float
) -> tuple[ComparisonVerdict, tuple[str, ...]]:
    """The verdict rule of `aftershock compare` (docs/results.md): Regressed when the test is
    significant AND the whole interval of the median difference lies above the minimum effect
    (B slower); Improved for the mirror case; NoChange otherwise ("no evidence of a change this
    size", not "equal"). Returns the verdict and its conditions as sentences."""
    significant = p < alpha
    ci = f"{level:.0%} CI [{median_diff.low:+.3f}, {median_diff.high:+.3f}] s"
    test = f"Mann-Whitney U two-sided p = {p:.4g} {'<' if significant else '>='} alpha {alpha:g}"
    bound = f"{min_effect:g} s minimum effect" if min_effect > 0 else "0"
    negative = f"-{min_effect:g} s minimum effect" if min_effect > 0 else "0"
    if median_diff.low > min_effect:
        effect = f"median B - A = {median_diff.estimate:+.3f} s, {ci}: entirely above {bound} (B slower)"
        direction: ComparisonVerdict | None = ComparisonVerdict.REGRESSED
    elif median_diff.high < -min_effect:
        effect = f"median B - A = {median_diff.estimate:+.3f} s, {ci}: entirely below {negative} (B faster)"
        direction = ComparisonVerdict.IMPROVED
    else:
        where = f"does not clear the {min_effect:g} s minimum effect" if min_effect > 0 else "includes 0"
        effect = f"median B - A = {median_diff.estimate:+.3f} s, {ci}: {where}"
        direction = None
    if significant and direction is not None:
        return direction, (test, effect)
    return ComparisonVerdict.NO_CHANGE, (test, effect)


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    alpha: float = 0.05,
    min_effect_seconds: float = 0.0,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Judgement:
    """B's recovery times against A's, by `aftershock compare`'s test and rule. Raises
    ValueError as `check_samples` does."""
    check_samples(a, b, alpha=alpha, min_effect_seconds=min_effect_seconds)
    level = 1.0 - alpha
    u, p = mann_whitney_u(b, a)
    diff = median_difference(a, b, level=level, resamples=resamples, seed=seed)
    verdict, evidence = judge(diff, p, alpha, min_effect_seconds, level)
    return Judgement(
        n_a=len(a),
        n_b=len(b),
        u_statistic=u,
        p_value=p,
        median_difference=diff,
        verdict=verdict,
        evidence=evidence,
    )
