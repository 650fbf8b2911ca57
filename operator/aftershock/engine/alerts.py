"""Detection from the user's alerting chain: Alertmanager's notifications, routed to the
Campaigns they concern and recorded against the trial whose fault they followed.

One `AlertInbox` per operator takes what the receiver (`aftershock.receiver`) was sent. Each
running Campaign with ``spec.detection`` holds a `CampaignAlerts` while it runs. An alert is a
Campaign's only when its ``namespace`` label is the Campaign's namespace and it matches every
matcher of ``spec.detection.alertMatchers``: a namespace's alerts never reach another
namespace's Campaign, whatever the matchers say.

Attribution is by receive time, on the operator's clocks: a notification belongs to the trial
whose fault was injected last before it arrived. An alert already firing when the fault went
in (same fingerprint, same startsAt: Alertmanager repeats a firing alert) is not this trial's
detection. Per trial:
- ``alert_firing``: the first notification of a matching alert firing that was not already
  firing at the kill;
- ``alert_resolved``: the first notification after which every alert that fired in the trial
  has been seen resolved.
Offsets are seconds from the kill (monotonic), as every milestone's. Every notification is
recorded with Alertmanager's startsAt/endsAt and the receive time, in the order received.
After a Campaign's run ends its last trial still takes notifications for `LINGER_SECONDS`:
the resolved notice often follows the recovery by a group_interval.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from aftershock.alerting import Alert
from aftershock.engine.ports import Clock
from aftershock.model import (
    ALERT_FIRING,
    ALERT_NAMESPACE_LABEL,
    ALERT_RESOLVED,
    CampaignRef,
    DetectionSpec,
    Milestone,
)

log = logging.getLogger(__name__)

#: How long a finished run's last trial still takes notifications (its resolved notice).
LINGER_SECONDS = 600.0


class AlertLedger(Protocol):
    async def record_alert(
        self,
        attempt_id: int,
        campaign_uid: str,
        alert: Alert,
        *,
        received_at: float,
        offset: float,
        milestones: dict[str, Milestone],
    ) -> None: ...


@dataclass
class _TrialWindow:
    attempt_id: int
    kill_mono: float
    #: (fingerprint, startsAt) of the matching alerts firing when the fault went in.
    firing_before: frozenset[tuple[str, float]]
    fired: set[str] = field(default_factory=set)
    resolved: set[str] = field(default_factory=set)
    firing_at: Milestone | None = None
    resolved_at: Milestone | None = None


@dataclass(frozen=True)
class Delivery:
    """What one notification did: alerts in it, recorded for a trial, and those no running
    Campaign took (no namespace label, no match, or no trial under way)."""

    alerts: int
    recorded: int
    unclaimed: int

    def as_json(self) -> dict[str, int]:
        return {"alerts": self.alerts, "recorded": self.recorded, "unclaimed": self.unclaimed}


class CampaignAlerts:
    """The alerts of one Campaign run, and the trial they are attributed to."""

    def __init__(self, ref: CampaignRef, detection: DetectionSpec, ledger: AlertLedger, clock: Clock) -> None:
        self.ref = ref
        self.detection = detection
        self._ledger = ledger
        self._clock = clock
        self._trial: _TrialWindow | None = None
        #: Matching alerts firing now, as the last notifications said: fingerprint -> startsAt.
        self._firing: dict[str, float] = {}
        #: Monotonic time its run ended (None while it runs).
        self.ended: float | None = None

    def claims(self, alert: Alert) -> bool:
        return alert.labels.get(ALERT_NAMESPACE_LABEL) == self.ref.namespace and self.detection.matches(
            alert.labels
        )

    def fault_injected(self, attempt_id: int, kill_mono: float) -> None:
        """A trial's fault went in at `kill_mono`: what arrives from now on is that trial's."""
        self._trial = _TrialWindow(
            attempt_id, kill_mono, frozenset((fp, starts) for fp, starts in self._firing.items())
        )

    def milestones(self) -> dict[str, Milestone]:
        """The current trial's detection milestones reached so far."""
        t = self._trial
        found: dict[str, Milestone] = {}
        if t is not None and t.firing_at is not None:
            found[ALERT_FIRING] = t.firing_at
        if t is not None and t.resolved_at is not None:
            found[ALERT_RESOLVED] = t.resolved_at
        return found

    async def take(self, alert: Alert, received_wall: float, received_mono: float) -> bool:
        """Record `alert` (one this Campaign claims); False when no trial is under way."""
        if alert.firing:
            self._firing[alert.fingerprint] = alert.starts_at
        else:
            self._firing.pop(alert.fingerprint, None)
        t = self._trial
        if t is None or received_mono < t.kill_mono:
            return False
        offset = received_mono - t.kill_mono
        reached: dict[str, Milestone] = {}
        if alert.firing:
            if (alert.fingerprint, alert.starts_at) not in t.firing_before:
                t.fired.add(alert.fingerprint)
                t.resolved.discard(alert.fingerprint)
                if t.firing_at is None:
                    t.firing_at = reached[ALERT_FIRING] = Milestone(received_wall, offset)
        elif alert.fingerprint in t.fired:
            t.resolved.add(alert.fingerprint)
            if t.firing_at is not None and t.resolved_at is None and t.fired <= t.resolved:
                t.resolved_at = reached[ALERT_RESOLVED] = Milestone(received_wall, offset)
        await self._ledger.record_alert(
            t.attempt_id,
            self.ref.uid,
            alert,
            received_at=received_wall,
            offset=offset,
            milestones=reached,
        )
        return True


class AlertInbox:
    """Routes each notification's alerts to the Campaigns that claim them (operator-wide)."""

    def __init__(self, ledger: AlertLedger, clock: Clock) -> None:
        self._ledger = ledger
        self._clock = clock
        self._campaigns: list[CampaignAlerts] = []

    @contextmanager
    def listen(self, ref: CampaignRef, detection: DetectionSpec) -> Iterator[CampaignAlerts]:
        """Claim alerts for one Campaign run while it runs (and `LINGER_SECONDS` after)."""
        self._drop_expired()
        # A new run of the same Campaign takes over from its predecessor's lingering last trial.
        self._campaigns = [
            c for c in self._campaigns if c.ended is None or c.ref.object_uid != ref.object_uid
        ]
        campaign = CampaignAlerts(ref, detection, self._ledger, self._clock)
        self._campaigns.append(campaign)
        try:
            yield campaign
        finally:
            campaign.ended = self._clock.monotonic()

    def _drop_expired(self) -> None:
        now = self._clock.monotonic()
        self._campaigns = [c for c in self._campaigns if c.ended is None or now - c.ended < LINGER_SECONDS]

    async def deliver(self, alerts: Sequence[Alert]) -> Delivery:
        """Record each alert for every Campaign that claims it. A ledger failure propagates: the
        receiver answers 5xx and Alertmanager sends the notification again."""
        received_wall, received_mono = self._clock.wall(), self._clock.monotonic()
        self._drop_expired()
        recorded = unclaimed = 0
        for alert in alerts:
            took = False
            for campaign in self._campaigns:
                if campaign.claims(alert):
                    took = await campaign.take(alert, received_wall, received_mono) or took
            if took:
                recorded += 1
            else:
                unclaimed += 1
        if unclaimed:
            log.info(
                "alert receiver: %d of %d alerts claimed by no running trial (no namespace label, "
                "no Campaign's matchers, or no fault injected yet)",
                unclaimed,
                len(alerts),
            )
        return Delivery(len(alerts), recorded, unclaimed)
