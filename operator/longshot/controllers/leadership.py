"""One leadership story: every replica is a member, and work is sharded by repository.

Why sharding and not one operator-wide leader: a single leader leaves every standby idle, and two leaderships
(one for the operator, one per merge queue) can split: a replica that lost one Lease but kept renewing the other
stalled a repository's queue. Here there is one kind of leadership, per repository, and nothing else:

* **Members.** Each replica renews its own *member* Lease (``longshot-member-<hash of its identity>``, label
  ``longshot.dev/lease=member``). The live members are those whose member Lease has not expired.
* **Shards.** A shard is one repository: its merge queue and every build that targets it (their tasks, Pods
  and MergeJobs). Every replica computes the same balanced assignment of the active shards to the live members
  (``core.sharding.assign``) and campaigns for the shard Leases (``longshot-shard-<repository key>``) assigned to
  it; it releases a shard it holds that is now assigned to another live member (a replica joined), so the other
  takes it at its next poll. A shard that has had no live holder for a lease duration (views of the active shards
  that differ can leave it to each other) is adopted by its owner by the members alone (``core.sharding.owner``).
* **Footing.** A replica acts on a shard only while it holds the shard's Lease *and* its own member Lease is
  fresh. Each Lease elector steps down by itself when it cannot renew within its renew deadline (two thirds of a
  lease duration), before anybody else may take over; losing the member Lease drops every shard at once. So a
  replica that stays alive but cannot reach the API server (its renewals blocked) stops merging, and another
  replica takes its shards when their Leases expire: within one lease duration plus a poll. Merge pushes are
  compare-and-swap on the target and status writes are fenced on resourceVersion, so even a replica that still
  believes it leads cannot merge twice or overwrite newer state.

``healthy()`` is False when the member Lease has not been renewed for longer than a lease duration (the process
lost its footing: a liveness probe restarts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from longshot import config
from longshot.api import timeutil
from longshot.core import sharding
from longshot.runtime import kube, leader

log = logging.getLogger("longshot.leadership")


class Leadership:
    def __init__(self, client: kube.ApiClient, settings: config.Settings, *,
                 shards: Callable[[], set[str]], on_change: Callable[[], None],
                 clock: Callable[[], datetime] = timeutil.utcnow) -> None:
        self.client = client
        self.settings = settings
        self.shards_fn = shards
        self.on_change = on_change
        self.clock = clock
        s = settings
        self.member = leader.LeaderElector(
            client, namespace=s.namespace, name=leader.member_lease_name(s.identity), identity=s.identity,
            lease_duration=s.lease_duration_seconds, renew_period=s.lease_renew_seconds,
            labels={leader.KIND_LABEL: "member"},
            on_stopped_leading=self._lost_footing, on_started_leading=self._got_footing)
        self.electors: dict[str, leader.LeaderElector] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.members: set[str] = set()
        self.assignment: dict[str, str] = {}
        self.adopted: set[str] = set()
        """Shards this replica took because their assigned member never did (``_orphans``)."""
        self._unheld: dict[str, float] = {}
        self._member_task: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self._wake: asyncio.Event | None = None

    # --- queries -----------------------------------------------------------------------------------

    def footing(self) -> bool:
        return self.member.is_leader

    def holds(self, shard: str) -> bool:
        """Whether this replica may act on ``shard`` now."""
        e = self.electors.get(shard)
        return self.member.is_leader and e is not None and e.is_leader

    def held(self) -> set[str]:
        return {s for s, e in self.electors.items() if e.is_leader} if self.member.is_leader else set()

    def healthy(self) -> bool:
        grace = self.settings.lease_duration_seconds
        if time.monotonic() - self._started < 2 * grace:
            return True
        return self.member.seconds_since_renewal() <= grace

    # --- the loop ----------------------------------------------------------------------------------

    def knows(self, shard: str) -> bool:
        """Whether the last rebalance saw ``shard`` (assigned to a member, or campaigned for here)."""
        return shard in self.assignment or shard in self.electors

    def poke(self) -> None:
        """Rebalance now rather than at the next poll: a build of a repository no rebalance saw yet arrived (its
        planner would otherwise wait up to a renew period for its shard), or this replica got its member Lease."""
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        self._wake = asyncio.Event()
        self._member_task = asyncio.create_task(self.member.run(), name="member lease")
        try:
            while True:
                self._wake.clear()
                try:
                    await self.rebalance()
                except Exception as e:  # the API server is away: electors step down by themselves
                    log.warning("rebalancing shards failed: %s", e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.lease_renew_seconds)
        finally:
            await self.stop()

    async def rebalance(self) -> None:
        if not self.member.is_leader:
            await self._drop_all("no member Lease")
            return
        live = await self.live_leases()
        me = self.settings.identity
        self.members = {h for n, h in live.items() if n.startswith(leader.MEMBER_PREFIX)} | {me}
        active = self.shards_fn()
        self.assignment = sharding.assign(active, self.members)
        mine = sharding.mine(self.assignment, me)
        mine |= self._orphans(active - mine, live) | (self.adopted & active)
        self.adopted &= active
        for shard in mine - set(self.electors):
            self._campaign(shard)
        for shard in set(self.electors) - mine:
            owner = self.assignment.get(shard)
            if owner is None or owner in self.members:
                await self._release(shard, f"assigned to {owner}" if owner else "no longer active")

    def _orphans(self, others: set[str], live: dict[str, str]) -> set[str]:
        """Shards assigned to another member that nobody has held for a lease duration, which this replica adopts
        when it is their :func:`sharding.owner`. The assignment depends on each replica's view of the active shards;
        views that differ for long (a build one replica still holds and the other saw deleted) could have each
        leave a new shard to the other, so that nobody campaigned and its build waited for ever. An adopted shard is
        kept while it is active (not handed back and forth)."""
        now = time.monotonic()
        grace = self.settings.lease_duration_seconds
        unheld = {s for s in others if leader.shard_lease_name(s) not in live and s not in self.electors}
        self._unheld = {s: self._unheld.get(s, now) for s in unheld}
        adopt = {s for s, since in self._unheld.items()
                 if now - since >= grace and sharding.owner(s, self.members) == self.settings.identity}
        for s in adopt:
            log.warning("adopting shard %s: assigned to %s, it has had no holder for %.0fs", s,
                        self.assignment.get(s), now - self._unheld[s])
        self.adopted |= adopt
        return adopt

    async def live_leases(self) -> dict[str, str]:
        """``{Lease name: holder}`` of the live member and shard Leases (one list call)."""
        return await asyncio.get_running_loop().run_in_executor(
            leader.LEASE_THREADS, leader.live_leases, self.client, self.settings.namespace,
            f"{leader.KIND_LABEL} in (member,shard)", self.clock(), max(1.0, self.settings.lease_renew_seconds * 2))

    def _campaign(self, shard: str) -> None:
        s = self.settings
        e = leader.LeaderElector(
            self.client, namespace=s.namespace, name=leader.shard_lease_name(shard), identity=s.identity,
            lease_duration=s.lease_duration_seconds, renew_period=s.lease_renew_seconds,
            labels={leader.KIND_LABEL: "shard"}, on_started_leading=self._changed, on_stopped_leading=self._changed)
        self.electors[shard] = e
        self.tasks[shard] = asyncio.create_task(e.run(), name=f"shard {shard}")

    async def _release(self, shard: str, why: str) -> None:
        log.info("handing shard %s over (%s)", shard, why)
        task = self.tasks.pop(shard, None)
        self.electors.pop(shard, None)
        if task is not None:
            await cancel_and_wait(task)  # the elector releases the Lease when cancelled
        self.on_change()

    async def _drop_all(self, why: str) -> None:
        for shard in list(self.electors):
            await self._release(shard, why)

    def _lost_footing(self) -> None:
        # holds() is False from now on for every shard; the next rebalance releases the shard Leases
        log.warning("%s lost its member Lease: it stops acting on every shard", self.settings.identity)
        self.on_change()

    def _changed(self) -> None:
        self.on_change()

    def _got_footing(self) -> None:
        self.poke()  # campaign for this replica's shards now, not a renew period later
        self.on_change()

    async def stop(self) -> None:
        await self._drop_all("shutting down")
        if self._member_task is not None:
            await cancel_and_wait(self._member_task)


RELEASE_GRACE_SECONDS = 5.0
"""How long a cancelled caller of :func:`cancel_and_wait` still waits for the task's release before it stops."""


async def cancel_and_wait(task: asyncio.Task[object]) -> None:
    """Cancel ``task`` and wait until it has ended (an elector releasing its Lease), swallowing its cancellation
    and its errors, but never a cancellation of the caller itself. ``contextlib.suppress(CancelledError)`` around
    the ``await`` swallows both: the operator's shutdown cancelled the leadership loop while a rebalance was
    handing a shard over, the loop went on, and the replica never stopped (an integration test's teardown: "The
    operator didn't stop, still running"). Called while the caller is already being cancelled (a ``finally``), it
    waits for the task as well: only a cancellation that arrives during the wait is raised, after the task has
ended (at most :data:`RELEASE_GRACE_SECONDS` later)."""
    me = asyncio.current_task()
    before = me.cancelling() if me is not None else 0
    task.cancel()
    try:
        await asyncio.shield(task)  # our own cancellation must not cut the task's release short
    except asyncio.CancelledError:
        if me is not None and me.cancelling() > before:
            await asyncio.wait({task}, timeout=RELEASE_GRACE_SECONDS)  # let the hand-over finish, briefly
            raise
    except Exception:  # the task logged what it could; a hand-over goes on
        log.debug("a cancelled task ended with an error", exc_info=True)
