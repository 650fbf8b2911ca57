"""`make test`'s xdist scheduler: `--dist loadgroup`, except that a worker running one of the long
groups (the kind test, the real-node group, the audit webhook group) is handed nothing else until
that group is done.

pytest-xdist tops up a worker whose queue is down to two tests or fewer, whatever those are. A
group of two tests that lasts 20 minutes (the audit webhook group: the remediator evaluation)
would take one or two short tests into its queue at the start and run them only 20 minutes
later, at the run's tail, while the other workers had long run out of work.
"""

from __future__ import annotations

from xdist.scheduler import LoadGroupScheduling
from xdist.workermanage import WorkerController

#: The xdist groups (tests/e2e/conftest.py) that keep a worker to themselves.
LONG_GROUPS = frozenset({"kind", "realnode", "audit-webhook"})


class LongGroupsAlone(LoadGroupScheduling):
    def _reschedule(self, node: WorkerController) -> None:
        busy = any(
            scope in LONG_GROUPS and not all(work.values())
            for scope, work in self.assigned_work.get(node, {}).items()
        )
        if busy and self.workqueue:
            return  # more once the group is done (an empty queue: let xdist shut it down)
        super()._reschedule(node)
