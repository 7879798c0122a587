"""Tenants in lanes for the operator's calls to the tenants' own servers (issue trackers, forges and git).

Git work in a tenant's repository outside the merge queue runs through :func:`git`: in a worker thread, with a
deadline (:data:`GIT_SECONDS`) shorter than the controllers' stall limit.

A BuildRequest names its tracker (``spec.planner.issues.url``, ``spec.intake.tracker.url``) and its forge
(``spec.merge.pullRequest.apiUrl``), so the tenant may run that server, and its answers cost the operator a read
of up to 8 MiB and a bounded parse (``runtime.trackers.PARSE_BUDGET``). :class:`Lanes` makes sure those costs do
not stack: a call waits on the event loop (never in a worker thread) until it is the only call of its namespace
and one of at most :data:`WIDTH` calls at once. Each namespace has at most one call waiting for a global place,
and the global places are given out first come, first served, so tenants take turns: a tenant with many intakes
waits for its own calls, not the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from longshot.vcs import workspace as vws

T = TypeVar("T")

GIT_SECONDS = 20.0
"""The most one git call in a tenant's repository outside the merge queue may take, waiting for the workspace's lock
included (reading the roadmap or the target's tip, a best-of-N candidate's branches and gate, the clean-up of
Longshot's refs): well inside the 60 s after which a BuildRequest or AgentTask reconcile counts as wedged, whatever
the tenant's git server does. The merge queue's own git work has the workspace's longer timeout."""


async def git(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` (git work in a tenant's workspace) in a worker thread, every git command and lock wait in it
    bounded by :data:`GIT_SECONDS` (``vcs.workspace.within``): a :class:`~longshot.vcs.workspace.GitError` past it."""
    return await asyncio.to_thread(vws.within, GIT_SECONDS, fn, *args)


WIDTH = 3
"""Most tracker and forge calls at once, across namespaces (a call holds at most one answer, 8 MiB, and its parse,
at most about 10 MiB of objects more)."""


@dataclass
class _Lane:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Lanes:
    """One call per tenant at a time, :data:`WIDTH` at most across tenants (see the module's docstring)."""

    def __init__(self, width: int = WIDTH) -> None:
        self.width = width
        self._places: asyncio.Semaphore | None = None
        self._lanes: dict[str, _Lane] = {}
        self.running = 0
        """Calls holding a place now (for tests and metrics)."""

    @contextlib.asynccontextmanager
    async def lane(self, tenant: str) -> AsyncIterator[None]:
        """Hold ``tenant``'s lane and a global place for the body of the ``async with``."""
        if self._places is None:  # made on the loop that uses it
            self._places = asyncio.Semaphore(self.width)
        lane = self._lanes.setdefault(tenant, _Lane())
        lane.users += 1
        try:
            async with lane.lock, self._places:
                self.running += 1
                try:
                    yield
                finally:
                    self.running -= 1
        finally:
            lane.users -= 1
            if lane.users == 0:
                del self._lanes[tenant]

    def waiting(self, tenant: str) -> int:
        """Calls of ``tenant`` holding or waiting for its lane."""
        lane = self._lanes.get(tenant)
        return lane.users if lane is not None else 0
