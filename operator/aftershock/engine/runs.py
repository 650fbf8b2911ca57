"""Runs: a Campaign is run again, without being deleted, by changing its ``aftershock.dev/run``
annotation (any value: only a change matters, so a GitOps commit that bumps it re-runs the
experiment).

Each run has its own id, under which the ledger keeps its attempts and trials apart from the
other runs': the Campaign's uid for run 1 (so a Campaign never re-run, and every ledger written
before runs existed, reads as run 1), ``<uid>#<n>`` for run n. The runner is handed a
`CampaignRef` whose ``uid`` is the run's id; the Campaign object's own uid stays what Events,
the subject lock and the queue are keyed by. Without ``spec.seed``, victims are drawn from the
run's id: each run draws anew (set ``spec.seed`` to kill the same pods in every run).

Plain functions over the ledger: no kopf, no API client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aftershock.engine.status import iso
from aftershock.ledger import Ledger, RunRow
from aftershock.model import RUN_ID_SEPARATOR, CampaignRef

#: The annotation whose change starts a new run.
RUN_ANNOTATION = "aftershock.dev/run"


def run_token(annotations: Mapping[str, Any]) -> str:
    """The annotation's value ('' when absent): the token of the run the user asks for."""
    value = annotations.get(RUN_ANNOTATION)
    return value if isinstance(value, str) else ""


def run_uid(campaign_uid: str, run: int) -> str:
    return campaign_uid if run == 1 else f"{campaign_uid}{RUN_ID_SEPARATOR}{run}"


def status_token(status: Mapping[str, Any]) -> str:
    """The token of the run the status shows ('' before runs existed, or for none)."""
    run = status.get("run")
    token = run.get("token") if isinstance(run, Mapping) else None
    return token if isinstance(token, str) else ""


def asks_for_a_new_run(status: Mapping[str, Any], annotations: Mapping[str, Any]) -> bool:
    """The annotation differs from the token of the run the status shows."""
    return run_token(annotations) != status_token(status)


async def resolve(ledger: Ledger, ref: CampaignRef, token: str) -> RunRow:
    """The run to act on for `token`: the latest run when its token is `token` (resume it),
    else the next run, recorded now. A Campaign the ledger never saw starts at run 1."""
    latest = await ledger.latest_run(ref.uid)
    if latest is not None and latest.token == token:
        return latest
    number = 1 if latest is None else latest.run + 1
    run = RunRow(run_uid=run_uid(ref.uid, number), campaign_uid=ref.uid, run=number, token=token)
    await ledger.record_run(run)
    return run


async def start_new(ledger: Ledger, ref: CampaignRef, token: str, tick: float | None) -> RunRow:
    """A new run, recorded now, whatever the latest run's token: a scheduled run carries the
    annotation's value as it is (so the annotation still tells a run asked by hand) and the
    tick it was started for."""
    latest = await ledger.latest_run(ref.uid)
    number = 1 if latest is None else latest.run + 1
    run = RunRow(run_uid=run_uid(ref.uid, number), campaign_uid=ref.uid, run=number, token=token, tick=tick)
    await ledger.record_run(run)
    return run


def run_ref(ref: CampaignRef, run: RunRow) -> CampaignRef:
    """The ref the runner uses for `run`: the Campaign's name, the run's id."""
    return CampaignRef(namespace=ref.namespace, name=ref.name, uid=run.run_uid)


def status_fields(run: RunRow) -> dict[str, Any]:
    """What the status says about the run it shows (``status.run``)."""
    fields: dict[str, Any] = {"number": run.run, "id": run.run_uid, "token": run.token}
    if run.tick is not None:
        fields["scheduledAt"] = iso(run.tick)
    return {"run": fields}
