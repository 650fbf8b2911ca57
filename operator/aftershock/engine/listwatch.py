"""List, then watch from the list's version, for as long as someone needs it: the one loop.

Both the pod feed (`aftershock.engine.podwatch`) and the remediator's Event watch
(`aftershock.engine.signals`) keep a picture of some Kubernetes objects current this way. The
loop is Kubernetes' reflector in small: list, hand the whole list over, then stream the changes
from the list's resourceVersion; when the server ends the watch normally, resume from the last
version seen; when the watch breaks, or the version is too old (410 Gone), list again, because
what happened in between is unknown, and let the owner compare the fresh list with what it had.
Transient errors back off exponentially, with jitter so that many watches broken by one API
server restart do not all come back in the same instant.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aftershock.errors import ApiError

__all__ = ["CHANGES", "ListWatch", "wait_set"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The watch event types that change the picture (BOOKMARKs only move the version on).
CHANGES = frozenset({"ADDED", "MODIFIED", "DELETED"})

Lister = Callable[[], Awaitable[tuple[Sequence[T], str]]]
Watcher = Callable[[str], AsyncIterator[tuple[str, T, str]]]


async def wait_set(event: asyncio.Event, timeout: float | None) -> bool:
    """Whether `event` is set within `timeout` seconds (None: however long it takes)."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


@dataclass
class ListWatch(Generic[T]):
    """Calls `on_list` with every full list and `on_change` with every change after it."""

    what: str
    list_: Lister[T]
    watch: Watcher[T]
    on_list: Callable[[Sequence[T]], None]
    on_change: Callable[[str, T], None]
    backoff_initial: float = 0.2
    backoff_max: float = 10.0
    #: The last error that kept the picture from being current (for conditions), or None.
    error: str | None = field(default=None, init=False)
    #: Lists after the first: each one may have hidden changes (reported late, as a diff).
    relists: int = field(default=0, init=False)
    _synced: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    @property
    def synced(self) -> bool:
        """The first list arrived: the picture holds something true."""
        return self._synced.is_set()

    async def wait_synced(self, timeout: float | None = None) -> bool:
        return await wait_set(self._synced, timeout)

    async def run(self) -> None:
        """Until cancelled."""
        backoff = self.backoff_initial
        rv = ""
        while True:
            try:
                if not rv:
                    items, rv = await self.list_()
                    if self._synced.is_set():
                        self.relists += 1
                    self.on_list(items)
                    self._synced.set()
                    self.error = None
                async for etype, item, version in self.watch(rv):
                    rv = version or rv
                    if etype in CHANGES:
                        self.on_change(etype, item)
                    backoff = self.backoff_initial
                # The server closed the watch normally (its timeout): resume from rv.
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                rv = ""  # list again: we cannot know what we missed
                if isinstance(exc, ApiError) and exc.status == 410:
                    continue
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("%s failed, retrying in %.1fs: %s", self.what, backoff, exc)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, self.backoff_max)
