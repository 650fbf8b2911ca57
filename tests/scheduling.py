"""`make test`'s xdist scheduler: `--dist loadgroup`, except that a worker running one of the long
groups (the kind test, the real-node group, the audit webhook group) is handed nothing from the
front of the queue until that group is done.

pytest-xdist tops up a worker whose queue is down to two tests or fewer, whatever those are, from
the front of its queue. A group of two tests that lasts 20 minutes (the audit webhook group: the
remediator evaluation) took a short test or two into its queue at the start, to run them only 20
minutes later, at the run's tail, while the other workers had long run out of work.

One thing a worker must always have: a test after the one it runs. It holds its last test back
until it is sent another or told to stop (pytest needs the next item to know what to tear down),
so a worker left with only its group's last test would never run it. That worker gets one unit
from the tail of the queue (the unit tests, a fraction of a second each), run after the group.
"""

from __future__ import annotations

from xdist.scheduler import LoadGroupScheduling
from xdist.workermanage import WorkerController

#: The xdist groups (tests/e2e/conftest.py) that keep a worker to themselves.
LONG_GROUPS = frozenset({"kind", "realnode", "audit-webhook"})


class LongGroupsAlone(LoadGroupScheduling):
    def _reschedule(self, node: WorkerController) -> None:
        if node.shutting_down:
            return
        assigned = self.assigned_work.get(node, {})
        busy = any(scope in LONG_GROUPS and not all(work.values()) for scope, work in assigned.items())
        if not (busy and self.workqueue):
            super()._reschedule(node)  # (an empty queue: xdist tells the worker to stop)
            return
        if self._pending_of(assigned) <= 1:
            # Its last test would be held back without a next one: the cheapest unit there is,
            # the queue's last, moved to the front for xdist's own assignment.
            self.workqueue.move_to_end(next(reversed(self.workqueue)), last=False)
            self._assign_work_unit(node)
