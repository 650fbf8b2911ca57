"""Percentiles, summaries, verdict rules and the early SLO stop, against independent references."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from aftershock import stats
from aftershock.model import AttemptRecord, Milestone, Outcome, Verdict


def reference_percentile(values: list[float], q: float) -> float:
    """Type 7 from its textbook definition: rank r = 1 + (n - 1) q, interpolate x[floor r], x[ceil r]."""
    xs = sorted(values)
    r = 1 + (len(xs) - 1) * q / 100
    lo, hi = math.floor(r), math.ceil(r)
    return xs[lo - 1] + (r - lo) * (xs[hi - 1] - xs[lo - 1])


SAMPLES = {
    1: [4.2],
    2: [10.0, 20.0],
    3: [3.0, 1.0, 2.0],
    10: [float(v) for v in (12, 3, 7, 7, 30, 1, 19, 4, 8, 25)],
}


class TestPercentile:
    def test_empty_is_none(self) -> None:
        assert stats.percentile([], 50) is None

    def test_one_value_is_every_percentile(self) -> None:
        for q in (0, 1, 50, 95, 100):
            assert stats.percentile([4.2], q) == 4.2

    def test_two_values_p95_interpolates(self) -> None:
        assert stats.percentile([20.0, 10.0], 95) == pytest.approx(10.0 + 0.95 * 10.0)
        assert stats.percentile([10.0, 20.0], 50) == pytest.approx(15.0)

    @pytest.mark.parametrize("n", sorted(SAMPLES))
    @pytest.mark.parametrize("q", [0, 5, 25, 50, 75, 90, 95, 99, 100])
    def test_matches_reference(self, n: int, q: float) -> None:
        assert stats.percentile(SAMPLES[n], q) == pytest.approx(reference_percentile(SAMPLES[n], q))

    @pytest.mark.parametrize("n", [2, 3, 10, 57])
    def test_matches_statistics_quantiles_inclusive(self, n: int) -> None:
        rng = random.Random(n)
        data = [rng.uniform(0, 120) for _ in range(n)]
        cuts = statistics.quantiles(data, n=100, method="inclusive")  # cuts[k-1] is the k-th percentile
        for k in (1, 10, 50, 90, 95, 99):
            assert stats.percentile(data, k) == pytest.approx(cuts[k - 1])

    def test_order_of_input_does_not_matter(self) -> None:
        data = SAMPLES[10]
        assert stats.percentile(data, 95) == stats.percentile(sorted(data, reverse=True), 95)

    def test_infinities_give_infinity_not_nan(self) -> None:
        assert stats.percentile([1.0, math.inf, math.inf], 95) == math.inf
        assert stats.percentile([1.0, 2.0, math.inf], 95) == math.inf
        assert stats.percentile([1.0, 2.0, math.inf], 25) == pytest.approx(1.5)

    @pytest.mark.parametrize("q", [-1, 100.5, math.nan])
    def test_out_of_range_q_refused(self, q: float) -> None:
        with pytest.raises(ValueError, match="between 0 and 100"):
            stats.percentile([1.0], q)

    def test_nan_value_refused(self) -> None:
        with pytest.raises(ValueError, match="NaN"):
            stats.percentile([1.0, math.nan], 50)


class TestSummarize:
    def test_empty(self) -> None:
        assert stats.summarize([]) == stats.RecoverySummary(n=0, p50=None, p95=None, max=None, mean=None)

    def test_values(self) -> None:
        s = stats.summarize(SAMPLES[10])
        assert s.n == 10
        assert s.p50 == pytest.approx(statistics.median(SAMPLES[10]))
        assert s.p95 == pytest.approx(reference_percentile(SAMPLES[10], 95))
        assert s.max == 30.0
        assert s.mean == pytest.approx(statistics.fmean(SAMPLES[10]))


def trial(index: int, outcome: Outcome, recovery: float | None = None) -> AttemptRecord:
    milestones = {} if recovery is None else {"recovered": Milestone(wall=1000.0 + recovery, offset=recovery)}
    return AttemptRecord(
        campaign_uid="uid",
        trial_index=index,
        attempt=1,
        victims=(),
        victim_seed="seed",
        started_at=1000.0,
        outcome=outcome,
        milestones=milestones,
    )


def recovered(*seconds: float) -> list[AttemptRecord]:
    return [trial(i, Outcome.RECOVERED, s) for i, s in enumerate(seconds)]


def judge(
    completed: list[AttemptRecord],
    *,
    requested: int | None = None,
    stopped: bool = False,
    aborted: bool = False,
    slo: float | None = None,
    stopped_on_slo: bool = False,
) -> Verdict:
    return stats.verdict(
        requested_trials=len(completed) if requested is None else requested,
        completed=completed,
        stopped_on_unrecovered=stopped,
        aborted_on_infra_error=aborted,
        slo_p95_seconds=slo,
        stopped_on_slo=stopped_on_slo,
    )


class TestVerdict:
    def test_all_recovered_no_slo_passes(self) -> None:
        assert judge(recovered(5, 6, 7)) is Verdict.PASS

    def test_p95_within_slo_passes_and_equal_is_within(self) -> None:
        assert judge(recovered(10, 20), slo=19.5) is Verdict.PASS  # p95 = 19.5
        assert judge(recovered(10, 20), slo=25) is Verdict.PASS

    def test_p95_over_slo_fails(self) -> None:
        assert judge(recovered(10, 20), slo=19.4) is Verdict.FAIL

    def test_stopped_on_unrecovered_is_hard_fail_even_with_few_trials(self) -> None:
        done = [*recovered(3), trial(1, Outcome.UNRECOVERED)]
        assert judge(done, requested=10, stopped=True, slo=100) is Verdict.HARD_FAIL

    def test_hard_fail_wins_over_infra_error(self) -> None:
        assert judge(recovered(3), requested=5, stopped=True, aborted=True) is Verdict.HARD_FAIL

    def test_aborted_on_infra_errors(self) -> None:
        assert judge(recovered(3), requested=5, aborted=True) is Verdict.INFRA_ERROR
        assert judge([], requested=5, aborted=True) is Verdict.INFRA_ERROR

    def test_unrecovered_without_stop_is_partial_even_if_p95_is_over_slo(self) -> None:
        done = [*recovered(100, 100), trial(2, Outcome.UNRECOVERED)]
        assert judge(done, slo=1) is Verdict.PARTIAL

    def test_unfinished_campaign_has_no_verdict(self) -> None:
        assert judge(recovered(1, 2), requested=3) is Verdict.NONE

    def test_stopped_because_slo_unreachable_fails(self) -> None:
        assert judge(recovered(100, 100), requested=10, slo=5, stopped_on_slo=True) is Verdict.FAIL

    def test_dry_run_only_has_no_verdict(self) -> None:
        done = [trial(i, Outcome.DRY_RUN) for i in range(3)]
        assert judge(done, slo=1) is Verdict.NONE

    def test_retried_attempts_do_not_count(self) -> None:
        done = [*recovered(1, 2), trial(1, Outcome.INTERRUPTED), trial(1, Outcome.INFRA_ERROR)]
        assert judge(done, requested=2, slo=10) is Verdict.PASS
        assert judge(done, requested=3) is Verdict.NONE


class TestSloUnreachable:
    def test_nothing_measured_yet_is_reachable(self) -> None:
        assert not stats.slo_unreachable([], 10, 1.0)

    def test_no_trials_at_all_is_reachable(self) -> None:
        assert not stats.slo_unreachable([], 0, 1.0)

    def test_last_trial_decides_by_actual_p95(self) -> None:
        assert stats.slo_unreachable([10.0, 20.0], 0, 19.4)
        assert not stats.slo_unreachable([10.0, 20.0], 0, 19.5)  # equal is within

    def test_enough_remaining_zeros_can_still_pull_p95_down(self) -> None:
        # 1 slow of 20: p95 of [100] + 19 zeros interpolates 0.05 * 100 = 5
        assert stats.slo_unreachable([100.0], 19, 4.9)
        assert not stats.slo_unreachable([100.0], 19, 5.001)
        # with many remaining trials, one outlier cannot sink the p95 at all
        assert not stats.slo_unreachable([100.0], 99, 0.001)

    def test_unrecovered_counts_as_infinity(self) -> None:
        assert stats.slo_unreachable([1.0, math.inf], 0, 1000.0)
        assert not stats.slo_unreachable([1.0, math.inf], 100, 1000.0)

    def test_agrees_with_brute_force_best_case(self) -> None:
        rng = random.Random(7)
        for _ in range(200):
            so_far = [rng.choice([rng.uniform(0, 50), math.inf]) for _ in range(rng.randint(0, 12))]
            remaining = rng.randint(0, 12)
            slo = rng.uniform(1, 60)
            best = [*so_far, *([0.0] * remaining)]
            expected = bool(best) and reference_best(best) > slo
            assert stats.slo_unreachable(so_far, remaining, slo) is expected

    def test_negative_remaining_refused(self) -> None:
        with pytest.raises(ValueError, match="remaining_trials"):
            stats.slo_unreachable([1.0], -1, 1.0)


def reference_best(values: list[float]) -> float:
    xs = sorted(values)
    r = 1 + (len(xs) - 1) * 0.95
    lo, hi = math.floor(r), math.ceil(r)
    a, b = xs[lo - 1], xs[hi - 1]
    return a if a == b else a + (r - lo) * (b - a)


class TestCounts:
    def test_count_outcomes(self) -> None:
        counts = stats.count_outcomes(
            [Outcome.RECOVERED, Outcome.RECOVERED, Outcome.UNRECOVERED, Outcome.INTERRUPTED, None]
        )
        assert counts == stats.AttemptCounts(recovered=2, unrecovered=1, interrupted=1, in_flight=1)
        assert counts.completed == 3
        assert counts.total == 5
