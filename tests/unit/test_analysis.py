"""Bootstrap intervals and the comparison of two campaigns, against independent computations:
numpy's percentile, a direct resampling written out here with the same seed, brute-force
Mann-Whitney U, coverage on data whose true median is known, and seeded synthetic campaigns
whose difference is known (lognormal recovery times, B shifted by +30 %)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from aftershock import analysis, stats
from aftershock.analysis import Bootstrap, ComparisonVerdict


def direct_bootstrap(
    values: list[float], q: float, resamples: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """The percentile bootstrap written out in full: one (resamples x n) draw, then percentiles."""
    x = np.asarray(values)
    rng = np.random.default_rng(seed)
    stat = np.percentile(x[rng.integers(0, len(x), size=(resamples, len(x)))], q, axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(stat, [tail, 100 - tail])
    return float(low), float(high)


def lognormal(n: int, seed: int, scale: float = 1.0) -> list[float]:
    """Recovery-like times: median 12 s (times ``scale``), right-skewed."""
    return [float(v) for v in np.random.default_rng(seed).lognormal(math.log(12.0 * scale), 0.5, n)]


class TestPercentileIntervals:
    @pytest.mark.parametrize("n", [2, 7, 50])
    @pytest.mark.parametrize("q", [50, 95])
    def test_matches_direct_resampling_with_the_same_seed(self, n: int, q: float) -> None:
        values = lognormal(n, seed=n)
        (got,) = analysis.percentile_intervals(values, (q,), Bootstrap(resamples=3000, seed=11)) or ()
        assert (got.low, got.high) == direct_bootstrap(values, q, 3000, 11)

    def test_drawing_in_chunks_changes_nothing(self) -> None:
        # 1001 values: 2,000,000 // 1001 = 1998 resamples per chunk, so 5000 resamples take 3 chunks.
        values = lognormal(1001, seed=1)
        p50, p95 = analysis.percentile_intervals(values, (50, 95), Bootstrap(resamples=5000, seed=2)) or ()
        assert (p50.low, p50.high) == direct_bootstrap(values, 50, 5000, 2)
        assert (p95.low, p95.high) == direct_bootstrap(values, 95, 5000, 2)

    def test_estimates_are_the_summary_percentiles(self) -> None:
        values = lognormal(37, seed=4)
        p50, p95 = analysis.percentile_intervals(values, (50, 95), Bootstrap(resamples=100)) or ()
        assert p50.estimate == pytest.approx(stats.percentile(values, 50), rel=1e-12)
        assert p95.estimate == pytest.approx(stats.percentile(values, 95), rel=1e-12)
        assert p50.estimate == pytest.approx(float(np.percentile(values, 50)), rel=1e-12)

    def test_other_levels(self) -> None:
        values = lognormal(40, seed=5)
        (narrow,) = analysis.percentile_intervals(values, (50,), Bootstrap(2000, seed=1, level=0.5)) or ()
        (wide,) = analysis.percentile_intervals(values, (50,), Bootstrap(2000, seed=1, level=0.99)) or ()
        assert (narrow.low, narrow.high) == direct_bootstrap(values, 50, 2000, 1, level=0.5)
        assert wide.low < narrow.low < narrow.high < wide.high

    def test_coverage_of_the_true_median(self) -> None:
        """Over 300 samples of 40 from a distribution with median 12 s, the 95 % interval of the
        median must contain 12 about 95 % of the time (the percentile bootstrap of a median with
        n = 40 is known to be slightly liberal; 88-99 % is a loose sanity band)."""
        hits = 0
        for seed in range(300):
            (ci,) = (
                analysis.percentile_intervals(lognormal(40, seed), (50,), Bootstrap(1000, seed=seed)) or ()
            )
            hits += ci.low <= 12.0 <= ci.high
        assert 0.88 <= hits / 300 <= 0.99

    def test_one_value_is_a_point_and_none_is_none(self) -> None:
        (ci,) = analysis.percentile_intervals([4.5], (50,)) or ()
        assert (ci.estimate, ci.low, ci.high) == (4.5, 4.5, 4.5)
        assert analysis.percentile_intervals([], (50,)) is None

    def test_refuses_what_is_not_a_time(self) -> None:
        with pytest.raises(ValueError, match="finite"):
            analysis.percentile_intervals([1.0, math.inf], (50,))
        with pytest.raises(ValueError, match="resamples"):
            Bootstrap(resamples=0)
        with pytest.raises(ValueError, match="level"):
            Bootstrap(level=1.0)


def brute_force_u(a: list[float], b: list[float]) -> float:
    """Mann-Whitney U of B: pairs where B is larger, ties counting one half."""
    return sum(1.0 if y > x else 0.5 if y == x else 0.0 for x in a for y in b)


class TestCompare:
    @pytest.mark.parametrize("seed", range(5))
    def test_thirty_percent_slower_is_regressed(self, seed: int) -> None:
        a, b = lognormal(100, seed=seed), lognormal(100, seed=1000 + seed, scale=1.3)
        result = analysis.compare(a, b, resamples=2000, seed=seed)
        assert result.verdict is ComparisonVerdict.REGRESSED
        assert result.verdict.exit_code == 1
        assert result.p_value < 0.05
        assert result.median_difference.low > 0
        assert result.probability_b_slower > 0.5

    @pytest.mark.parametrize("seed", range(5))
    def test_thirty_percent_faster_is_improved(self, seed: int) -> None:
        a, b = lognormal(100, seed=seed, scale=1.3), lognormal(100, seed=1000 + seed)
        result = analysis.compare(a, b, resamples=2000, seed=seed)
        assert result.verdict is ComparisonVerdict.IMPROVED
        assert result.verdict.exit_code == 0
        assert result.median_difference.high < 0

    def test_same_distribution_is_no_change(self) -> None:
        """Two samples of one distribution: NoChange, save the occasional false alarm a 5 % test
        allows (at most 3 of 40 seeded pairs; the expected number is below 2)."""
        verdicts = [
            analysis.compare(
                lognormal(60, seed), lognormal(60, 500 + seed), resamples=1000, seed=seed
            ).verdict
            for seed in range(40)
        ]
        assert verdicts.count(ComparisonVerdict.NO_CHANGE) >= 37
        assert verdicts[0] is ComparisonVerdict.NO_CHANGE

    def test_a_shift_smaller_than_the_minimum_effect_is_no_change(self) -> None:
        a, b = lognormal(100, seed=1), lognormal(100, seed=1001, scale=1.3)
        shifted = analysis.compare(a, b, resamples=2000)
        assert shifted.verdict is ComparisonVerdict.REGRESSED
        # the median moved by about 3.6 s: a 10 s minimum effect is not reached
        result = analysis.compare(a, b, min_effect_seconds=10.0, resamples=2000)
        assert result.verdict is ComparisonVerdict.NO_CHANGE
        assert result.p_value < 0.05
        assert result.evidence[1].endswith("does not clear the 10 s minimum effect")

    def test_statistics_against_independent_computations(self) -> None:
        a, b = lognormal(30, seed=8), lognormal(45, seed=9, scale=1.1)
        result = analysis.compare(a, b, alpha=0.1, resamples=1500, seed=21)
        assert (result.n_a, result.n_b) == (30, 45)
        assert result.u_statistic == brute_force_u(a, b)
        assert result.probability_b_slower == pytest.approx(brute_force_u(a, b) / (30 * 45))
        assert result.median_a == pytest.approx(float(np.median(a)))
        assert result.p95_b == pytest.approx(float(np.percentile(b, 95)))
        # the difference's interval: each side resampled from its own child stream of the seed
        rng_a, rng_b = (np.random.default_rng(s) for s in np.random.SeedSequence(21).spawn(2))
        xa, xb = np.asarray(a), np.asarray(b)
        med_a = np.percentile(xa[rng_a.integers(0, 30, size=(1500, 30))], 50, axis=1)
        med_b = np.percentile(xb[rng_b.integers(0, 45, size=(1500, 45))], 50, axis=1)
        low, high = np.percentile(med_b - med_a, [5, 95])  # alpha 0.1: a 90 % interval
        assert (result.median_difference.low, result.median_difference.high) == (low, high)
        assert result.median_difference.estimate == pytest.approx(float(np.median(b) - np.median(a)))
        assert result.bootstrap.level == pytest.approx(0.9)

    def test_evidence_states_each_condition(self) -> None:
        result = analysis.compare(lognormal(80, 3), lognormal(80, 4, scale=1.5), resamples=1000)
        test, effect = result.evidence
        assert test.startswith("Mann-Whitney U two-sided p = ")
        assert "< alpha 0.05" in test
        assert "entirely above 0 (B slower)" in effect

    def test_identical_constant_samples(self) -> None:
        result = analysis.compare([5.0] * 10, [5.0] * 10, resamples=200)
        assert result.verdict is ComparisonVerdict.NO_CHANGE
        assert result.p_value == 1.0

    def test_what_cannot_be_compared(self) -> None:
        with pytest.raises(ValueError, match="B has no recovered trials"):
            analysis.compare([1.0], [])
        with pytest.raises(ValueError, match="A and B"):
            analysis.compare([], [])
        with pytest.raises(ValueError, match="alpha"):
            analysis.compare([1.0], [2.0], alpha=1.5)
        with pytest.raises(ValueError, match="minimum effect"):
            analysis.compare([1.0], [2.0], min_effect_seconds=-1)


class TestWithoutTheExtra:
    def test_missing_numpy_says_what_to_install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "numpy", None)
        with pytest.raises(analysis.AnalysisUnavailableError, match=r"pip install 'aftershock\[analysis\]'"):
            analysis.percentile_intervals([1.0, 2.0], (50,))
        assert not analysis.available()

    def test_compare_needs_no_scipy(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The test is `aftershock.significance`'s (the operator's own), so scipy is only the unit
        tests' reference, never a requirement of `aftershock compare`."""
        monkeypatch.setitem(sys.modules, "scipy", None)
        monkeypatch.setitem(sys.modules, "scipy.stats", None)
        result = analysis.compare([1.0, 2.0, 3.0], [7.0, 8.0, 9.0], resamples=200)
        assert result.p_value == pytest.approx(0.1)  # exact distribution: 2 of C(6, 3) = 20 orders

    def test_available_with_the_dev_extra(self) -> None:
        assert analysis.available()
