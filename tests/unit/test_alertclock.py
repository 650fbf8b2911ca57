"""The e2e tests' time-to-alert breakdown (tests/e2e/alertclock.py): its pure readers of
Prometheus's raw samples, on samples shaped as Prometheus returns them."""

from __future__ import annotations

import pytest
from tests.e2e import alertclock
from tests.e2e.alertclock import ChainRecordError, ScrapeRun, failed_scrapes, find_episode

LABELS = {"alertname": "EtcdMemberDown", "instance": "127.0.0.1:2379", "job": "etcd"}


def series(
    state: str | None, times: list[float], value: float = 1.0, **extra: str
) -> tuple[dict[str, str], list[tuple[float, float]]]:
    labels = {**LABELS, **extra}
    if state is not None:
        labels["alertstate"] = state
    return labels, [(t, value) for t in times]


def test_the_episode_is_the_first_that_became_active_after_the_injection() -> None:
    # Evaluations every 0.5 s; pending from 100.5, firing from 102.5 (for: 2s).
    alerts = [series("pending", [100.5, 101.0, 101.5, 102.0]), series("firing", [102.5, 103.0])]
    held = [series(None, [100.5, 101.0, 101.5, 102.0, 102.5, 103.0], value=100.0)]
    ep = find_episode(alerts, held, injected=99.2, delivered=103.1)
    assert (ep.active_at, ep.fired_at) == (100.5, 102.5)
    assert ep.labels == LABELS


def test_an_alert_already_active_at_the_injection_is_not_this_faults() -> None:
    alerts = [series("pending", [99.5, 100.0, 100.5, 101.0]), series("firing", [101.5])]
    # activeAt 99.5: ALERTS_FOR_STATE holds 99 at every later sample.
    held = [series(None, [99.5, 100.0, 100.5, 101.0, 101.5], value=99.0)]
    with pytest.raises(ChainRecordError, match="already active before the injection"):
        find_episode(alerts, held, injected=99.8, delivered=102.0)
    # Same second: activeAt 100.0 (ALERTS_FOR_STATE 100), injected at 100.2.
    held = [series(None, [100.0, 100.5, 101.0, 101.5], value=100.0)]
    alerts = [series("pending", [100.0, 100.5, 101.0]), series("firing", [101.5])]
    with pytest.raises(ChainRecordError, match="already active"):
        find_episode(alerts, held, injected=100.2, delivered=102.0)


def test_an_alert_that_fired_after_the_notification_is_another_alerts_notification() -> None:
    alerts = [series("pending", [100.5, 101.0, 101.5, 102.0]), series("firing", [102.5])]
    held = [series(None, [100.5, 101.0, 101.5, 102.0, 102.5], value=100.0)]
    with pytest.raises(ChainRecordError, match="not firing by"):
        find_episode(alerts, held, injected=99.0, delivered=102.4)


def test_of_several_label_sets_the_first_active_wins_and_for_zero_fires_at_once() -> None:
    alerts = [
        series("firing", [101.0, 101.5], instance="b"),
        series("firing", [100.5, 101.0], instance="a"),
    ]
    held = [
        series(None, [101.0, 101.5], value=101.0, instance="b"),
        series(None, [100.5, 101.0], value=100.0, instance="a"),
    ]
    ep = find_episode(alerts, held, injected=100.0, delivered=102.0)
    assert ep.labels["instance"] == "a"
    assert ep.active_at == ep.fired_at == 100.5


def test_the_failed_scrapes_are_the_run_the_rule_saw() -> None:
    up = [(97.0, 1.0), (98.0, 0.0), (99.0, 1.0), (100.0, 0.0), (101.0, 0.0), (102.0, 0.0)]
    took = [(t, 0.004) for t, _ in up]
    assert failed_scrapes(up, took, active_at=101.2) == ScrapeRun(99.0, 100.0, 0.004)
    # The rule turned true on something else than a failed scrape: not measurable.
    assert isinstance(failed_scrapes(up, took, active_at=99.5), str)
    assert isinstance(failed_scrapes(up, took, active_at=96.0), str)


def test_a_signal_run_is_the_scrapes_whose_value_is_the_fault() -> None:
    # pd_cluster_status{type="store_down_count"}: the rule fires on a value > 0 of a target
    # that answers every scrape.
    down = [(97.0, 0.0), (98.0, 1.0), (99.0, 0.0), (100.0, 1.0), (101.0, 2.0), (102.0, 1.0)]
    took = [(t, 0.003) for t, _ in down]
    assert failed_scrapes(down, took, 101.2, lambda v: v > 0) == ScrapeRun(99.0, 100.0, 0.003)
    assert isinstance(failed_scrapes(down, took, 99.5, lambda v: v > 0), str)
    # Read as `up`, those values would be successes and failures the other way round.
    assert failed_scrapes(down, took, 99.5) == ScrapeRun(98.0, 99.0, 0.003)


def test_go_durations() -> None:
    assert alertclock.go_duration("500ms") == 0.5
    assert alertclock.go_duration("1m30s") == 90.0
    with pytest.raises(ValueError, match="not a duration"):
        alertclock.go_duration("1 minute")
