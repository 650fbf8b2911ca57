"""Statistics beyond the summary: bootstrap confidence intervals and comparing two campaigns.

Rule: no I/O, and numpy is imported inside the functions that need it, never at module import.
It comes with the ``analysis`` extra (``pip install 'aftershock[analysis]'``); the operator's
image does not carry it, and importing this module must not need it. A missing package raises
`AnalysisUnavailableError`, whose message says what to install.

The significance test and the verdict rule are `aftershock.significance`'s, the same code the
operator judges its runs with (``Regressed``): one Mann-Whitney U, checked against scipy's by
the unit tests, so `aftershock compare` and the operator cannot disagree on a p-value. numpy
only makes the bootstrap here fast enough for 10,000 resamples of both percentiles.

Percentiles everywhere are type 7 (numpy's default ``method="linear"``), the same definition as
`aftershock.stats.percentile`, so a median printed with its interval is the median the summary
prints.

The bootstrap is the plain percentile bootstrap: draw ``resamples`` samples of the same size
with replacement, compute the statistic on each, and take the ``(1 - level) / 2`` and
``(1 + level) / 2`` percentiles of those values. Random draws come from
``numpy.random.default_rng(seed)`` as ``integers(0, n, size=(resamples, n))`` (drawn in chunks,
which yields the same stream), so a result can be reproduced with a few lines of numpy. With
two samples (a comparison), each gets its own stream: ``SeedSequence(seed).spawn(2)``, first
for A, second for B.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aftershock import significance
from aftershock.significance import ComparisonVerdict, Interval

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "INSTALL_HINT",
    "AnalysisUnavailableError",
    "Bootstrap",
    "Comparison",
    "ComparisonVerdict",
    "Interval",
    "available",
    "compare",
    "percentile_intervals",
]

INSTALL_HINT: Final = "pip install 'aftershock[analysis]'"
DEFAULT_RESAMPLES: Final = 10_000
DEFAULT_SEED: Final = 20_240_501
DEFAULT_LEVEL: Final = 0.95
#: Resampled values held in memory at once (resamples x sample size), to bound memory use.
_CHUNK_VALUES: Final = 2_000_000


class AnalysisUnavailableError(ImportError):
    """numpy is not installed; the message says how to install it."""


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:
        raise AnalysisUnavailableError(
            f"confidence intervals, comparisons and plots need numpy: {INSTALL_HINT}"
        ) from exc
    return numpy


def available() -> bool:
    """Whether numpy can be imported (without importing it twice)."""
    try:
        _numpy()
    except AnalysisUnavailableError:
        return False
    return True


@dataclass(frozen=True)
class Bootstrap:
    """How to bootstrap: the settings a result must be reported with to be reproducible."""

    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    level: float = DEFAULT_LEVEL  # e.g. 0.95 for a 95 % interval

    def __post_init__(self) -> None:
        if self.resamples < 1:
            raise ValueError(f"resamples must be at least 1, got {self.resamples}")
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"the confidence level must be between 0 and 1, got {self.level}")


def _as_array(values: Sequence[float]) -> npt.NDArray[np.float64]:
    xp = _numpy()
    array: npt.NDArray[np.float64] = xp.asarray(values, dtype=xp.float64)
    if array.ndim != 1:
        raise ValueError("expected a flat sequence of seconds")
    if not xp.all(xp.isfinite(array)):
        raise ValueError("bootstrap needs finite values (recovered trials' recovery seconds)")
    return array


def _resampled_percentiles(
    sample: npt.NDArray[np.float64], qs: Sequence[float], resamples: int, rng: Any
) -> npt.NDArray[np.float64]:
    """Shape (len(qs), resamples): each percentile of each bootstrap resample of ``sample``."""
    xp = _numpy()
    n = len(sample)
    out: npt.NDArray[np.float64] = xp.empty((len(qs), resamples), dtype=xp.float64)
    chunk = max(1, _CHUNK_VALUES // n)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        drawn = sample[rng.integers(0, n, size=(rows, n))]
        out[:, start : start + rows] = xp.percentile(drawn, list(qs), axis=1)
    return out


def _interval(estimate: float, distribution: npt.NDArray[np.float64], level: float) -> Interval:
    xp = _numpy()
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = xp.percentile(distribution, [tail, 100.0 - tail])
    return Interval(estimate=float(estimate), low=float(low), high=float(high))


def percentile_intervals(
    values: Sequence[float], qs: Sequence[float], bootstrap: Bootstrap = Bootstrap()
) -> tuple[Interval, ...] | None:
    """A bootstrap interval for each percentile ``q`` (0..100) of ``values``; None for no values.

    One value gives the degenerate interval ``[v, v]``: there is nothing to resample, which is
    also what the bootstrap would say. Read such an interval as "no evidence", not certainty.
    """
    if not values:
        return None
    xp = _numpy()
    sample = _as_array(values)
    rng = xp.random.default_rng(bootstrap.seed)
    distribution = _resampled_percentiles(sample, qs, bootstrap.resamples, rng)
    estimates = xp.percentile(sample, list(qs))
    return tuple(_interval(float(estimates[i]), distribution[i], bootstrap.level) for i in range(len(qs)))


# --- comparing two campaigns -------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """B against A, in seconds; a positive difference means B is slower (worse)."""

    n_a: int
    n_b: int
    median_a: float
    median_b: float
    p95_a: float
    p95_b: float
    median_difference: Interval  # median(B) - median(A)
    p95_difference: Interval  # p95(B) - p95(A)
    u_statistic: float  # Mann-Whitney U of B (pairs where B is slower, ties count one half)
    p_value: float  # two-sided
    probability_b_slower: float  # U / (n_a n_b): chance a random B trial is slower than a random A one
    alpha: float
    min_effect_seconds: float
    bootstrap: Bootstrap
    verdict: ComparisonVerdict
    evidence: tuple[str, ...]  # the rule's conditions, each as a sentence, in order


def compare(
    a: Sequence[float],
    b: Sequence[float],
    *,
    alpha: float = 0.05,
    min_effect_seconds: float = 0.0,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Comparison:
    """Compare the recovery times of campaign B with those of campaign A.

    Verdict rules (the interval level is ``1 - alpha``):

    - ``Regressed``: the Mann-Whitney U test (two-sided) gives ``p < alpha`` AND the whole
      interval of ``median(B) - median(A)`` lies above ``min_effect_seconds`` (so above 0 by
      default): B is slower, and by at least that much.
    - ``Improved``: ``p < alpha`` AND the whole interval lies below ``-min_effect_seconds``.
    - ``NoChange``: anything else. It means "no evidence of a change this size", not "equal".

    Raises ValueError when a sample is empty (nothing to compare), alpha is not in (0, 1) or
    the minimum effect is negative.
    """
    significance.check_samples(a, b, alpha=alpha, min_effect_seconds=min_effect_seconds)
    xp = _numpy()
    settings = Bootstrap(resamples=resamples, seed=seed, level=1.0 - alpha)
    xa, xb = _as_array(a), _as_array(b)
    rng_a, rng_b = (xp.random.default_rng(s) for s in xp.random.SeedSequence(seed).spawn(2))
    dist_a = _resampled_percentiles(xa, (50, 95), resamples, rng_a)
    dist_b = _resampled_percentiles(xb, (50, 95), resamples, rng_b)
    (median_a, p95_a), (median_b, p95_b) = xp.percentile(xa, [50, 95]), xp.percentile(xb, [50, 95])
    median_diff = _interval(median_b - median_a, dist_b[0] - dist_a[0], settings.level)
    p95_diff = _interval(p95_b - p95_a, dist_b[1] - dist_a[1], settings.level)

    u, p = significance.mann_whitney_u(list(b), list(a))
    verdict, evidence = significance.judge(median_diff, p, alpha, min_effect_seconds, settings.level)
    return Comparison(
        n_a=len(xa),
        n_b=len(xb),
        median_a=float(median_a),
        median_b=float(median_b),
        p95_a=float(p95_a),
        p95_b=float(p95_b),
        median_difference=median_diff,
        p95_difference=p95_diff,
        u_statistic=u,
        p_value=p,
        probability_b_slower=u / (len(xa) * len(xb)),
        alpha=alpha,
        min_effect_seconds=min_effect_seconds,
        bootstrap=settings,
        verdict=verdict,
        evidence=evidence,
    )
