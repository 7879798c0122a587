"""Leader election on a ``coordination.k8s.io/v1`` Lease: one leader per repository merge queue.

Usage (one elector per repository queue, in the operator's namespace)::

    elector = leader.LeaderElector(api_client, namespace=settings.namespace,
                                   name=leader.lease_name_for(repository_url), identity=settings.identity,
                                   lease_duration=settings.lease_duration_seconds,
                                   renew_period=settings.lease_renew_seconds,
                                   on_started_leading=start_queue, on_stopped_leading=stop_queue)
    task = asyncio.create_task(elector.run())      # forever; cancel it on shutdown (it releases the Lease)
    await elector.wait_leading()                    # or check elector.is_leader before each merge

The protocol is client-go's ``leaderelection`` with a Lease lock:

* **Acquire** when the Lease has no holder, or is expired: ``renewTime + leaseDurationSeconds < now``
  (wall clocks of the replicas are assumed to agree to well under a lease duration, as with NTP).
  Creating a missing Lease is an acquisition. ``leaseTransitions`` counts changes of holder.
* **Renew** every ``renew_period`` seconds (read, then replace with the read ``resourceVersion``). A 409
  Conflict means someone else wrote: re-read; if the holder is still us, renew again, else we lost.
* **Lose** as soon as a read shows another holder, or when no renewal has succeeded for ``renew_deadline``
  seconds (default two thirds of the lease duration, so we step down *before* anyone may take over). Every
  API call is bounded by the time left until that deadline, so a hung API server cannot keep a deposed
  leader believing it leads. Loss is signalled at once: ``is_leader`` turns False, the ``leading`` event is
  cleared, ``on_stopped_leading`` runs.
* **Release** on shutdown (cancelling :meth:`run`, or :meth:`release`): the holder is cleared so a follower
  takes over at its next poll instead of waiting for expiry.
* **Follow**: a non-leader polls every ``retry_period`` seconds and takes over when the Lease is free or
  expired.

Leadership is advisory: the merge queue's pushes are additionally fenced by compare-and-swap on the target
branch (:func:`longshot.vcs.merge.push`), so even two replicas that both believe they lead cannot merge twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import inspect
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import kubernetes

from longshot import metrics
from longshot.api import keys, timeutil
from longshot.vcs import workspace

logger = logging.getLogger(__name__)

SHARD_PREFIX = "longshot-shard-"
MEMBER_PREFIX = "longshot-member-"
KIND_LABEL = keys.LEASE_KIND
"""Label of Longshot's Leases: ``member`` (one per live replica) or ``shard`` (one per repository)."""
Callback = Callable[[], Awaitable[None] | None]
LEASE_THREADS: Final = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="longshot-lease")
"""The Lease calls' own threads. On the event loop's default executor, shared with every reconcile's API and git
work, a renewal can wait behind busy threads past its renew deadline under load: the replica drops its shards,
and each drop marks every object again. A Lease renewal must wait on the API server only."""


def shard_lease_name(shard: str) -> str:
    """The Lease of a shard (a tenant's repository key, ``workspace.tenant_key``): ``longshot-shard-<16 hex>``."""
    return SHARD_PREFIX + shard


def lease_name_for(namespace: str, credentials_secret: str | None, repository_url: str) -> str:
    """The shard Lease of one tenant's use of a repository (``workspace.tenant_key``). Equivalent spellings of one
    URL (credentials, ``.git``, trailing slash, host case) give the same name."""
    return shard_lease_name(workspace.tenant_key(namespace, credentials_secret, repository_url))


def member_lease_name(identity: str) -> str:
    """The membership Lease of the replica ``identity``: ``longshot-member-<16 hex>``."""
    return MEMBER_PREFIX + hashlib.sha256(identity.encode()).hexdigest()[:16]


_utcnow = timeutil.utcnow
format_micro_time = timeutil.micro


def _parse_time(value: str | None) -> datetime | None:
    return timeutil.parse(value)


@dataclass(frozen=True)
class LeaseRecord:
    """The election-relevant part of a Lease."""

    holder: str | None
    duration_seconds: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int
    resource_version: str | None

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> LeaseRecord:
        spec = obj.get("spec") or {}
        return cls(holder=spec.get("holderIdentity") or None,
                   duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=_parse_time(spec.get("acquireTime")),
                   renew_time=_parse_time(spec.get("renewTime")),
                   transitions=int(spec.get("leaseTransitions") or 0),
                   resource_version=(obj.get("metadata") or {}).get("resourceVersion"))

    def expired(self, now: datetime) -> bool:
        """True when nobody holds the Lease or its holder failed to renew it in time."""
        if not self.holder or self.renew_time is None:
            return True
        return self.renew_time + timedelta(seconds=self.duration_seconds) < now


class LeaderElector:
    """Campaigns for one Lease until cancelled. See the module docstring for the protocol.

    ``clock`` gives wall time (written to and compared with the Lease); ``monotonic`` measures the renew
    deadline. Both are injectable for tests. ``release_on_cancel=False`` makes a cancelled :meth:`run`
    behave like a crashed process (the Lease is left to expire).
    """

    def __init__(self, api_client: kubernetes.client.ApiClient, *, namespace: str, name: str, identity: str,
                 lease_duration: float = 15.0, renew_period: float = 5.0, retry_period: float | None = None,
                 renew_deadline: float | None = None, on_started_leading: Callback | None = None,
                 on_stopped_leading: Callback | None = None, release_on_cancel: bool = True,
                 clock: Callable[[], datetime] = _utcnow, monotonic: Callable[[], float] = time.monotonic,
                 labels: dict[str, str] | None = None) -> None:
        if not identity:
            raise ValueError("leader election needs a non-empty identity (settings.identity, from POD_NAME)")
        self.lease_duration = max(1, math.ceil(lease_duration))
        self.renew_deadline = renew_deadline if renew_deadline is not None else self.lease_duration * 2 / 3
        if not 0 < renew_period < self.renew_deadline <= self.lease_duration:
            raise ValueError(f"need 0 < renew_period ({renew_period}) < renew_deadline ({self.renew_deadline}) "
                             f"<= lease_duration ({self.lease_duration})")
        self.api = kubernetes.client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.renew_period = renew_period
        self.retry_period = retry_period if retry_period is not None else renew_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.release_on_cancel = release_on_cancel
        self.labels = dict(labels or {})
        self.clock = clock
        self.monotonic = monotonic
        self.leading = asyncio.Event()
        """Set while this replica leads."""
        self.following = asyncio.Event()
        """Set while it does not (the complement of ``leading``)."""
        self.following.set()
        self.transitions = 0
        """``leaseTransitions`` of the Lease as last read or written."""
        self.observed: LeaseRecord | None = None
        """The Lease as last read or written."""
        self._last_renew = -math.inf

    # --- public ------------------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    def seconds_since_renewal(self) -> float:
        """Seconds since the last successful acquire or renewal (inf before the first)."""
        return self.monotonic() - self._last_renew

    async def wait_leading(self) -> None:
        await self.leading.wait()

    async def wait_following(self) -> None:
        await self.following.wait()

    async def run(self) -> None:
        """Campaign, lead, renew, follow — until cancelled. On cancellation the Lease is released (unless
        ``release_on_cancel`` is False) and ``on_stopped_leading`` runs if we led."""
        try:
            while True:
                if self.is_leader:
                    await self._lead_step()
                else:
                    acquired = await self._try_acquire()
                    if acquired:
                        await self._became(True, "acquired")
                        await asyncio.sleep(self.renew_period)
                    else:
                        await asyncio.sleep(self.retry_period)
        except asyncio.CancelledError:
            if self.is_leader:
                if self.release_on_cancel:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self.release())
                else:
                    await self._became(False, "stopped without releasing the Lease")
            raise

    async def release(self) -> None:
        """Give the Lease up now (clear the holder) if we hold it; followers take over at their next poll."""
        was_leader = self.is_leader
        try:
            for _ in range(3):
                obj = await self._call(self.api.read_namespaced_lease, self.name, self.namespace, timeout=5.0)
                record = LeaseRecord.from_object(obj)
                if record.holder != self.identity:
                    break
                body = self._body(obj, holder=None, renew=self.clock(), acquire=record.acquire_time,
                                  transitions=record.transitions)
                try:
                    self._observe(await self._call(self.api.replace_namespaced_lease, self.name,
                                                   self.namespace, body, timeout=5.0))
                    logger.info("released Lease %s/%s", self.namespace, self.name)
                    break
                except kubernetes.client.ApiException as e:
                    if e.status != 409:
                        raise
        finally:
            if was_leader:
                await self._became(False, "released")

    # --- steps -----------------------------------------------------------------------------------------------

    async def _lead_step(self) -> None:
        try:
            still = await self._renew()
        except Exception as e:  # API errors, timeouts, connection trouble: try again later
            still = None
            metrics.LEASE_RENEWALS.labels(result="error").inc()
            logger.warning("renewing Lease %s/%s failed: %s", self.namespace, self.name, _describe(e))
        if still is False:
            metrics.LEASE_RENEWALS.labels(result="lost").inc()
            holder = self.observed.holder if self.observed else None
            await self._became(False, f"Lease taken over by {holder!r}")
            return
        if still is None:
            if self.monotonic() - self._last_renew >= self.renew_deadline:
                metrics.LEASE_RENEWALS.labels(result="expired").inc()
                await self._became(False, f"no renewal for {self.renew_deadline:.1f}s")
                return
            await asyncio.sleep(min(self.retry_period, max(0.0, self._time_left())))
            return
        await asyncio.sleep(self.renew_period)

    async def _try_acquire(self) -> bool:
        """One attempt to take the Lease. False when someone else holds it (or won a race for it)."""
        try:
            for _ in range(2):  # a 409 means someone else wrote: re-read once and decide again
                try:
                    obj = await self._call(self.api.read_namespaced_lease, self.name, self.namespace)
                except kubernetes.client.ApiException as e:
                    if e.status != 404:
                        raise
                    return await self._create()
                record = self._observe(obj)
                now = self.clock()
                if record.holder != self.identity and not record.expired(now):
                    return False
                transitions = record.transitions + (1 if record.holder != self.identity else 0)
                acquire = now if record.holder != self.identity else record.acquire_time or now
                started = self.monotonic()
                body = self._body(obj, holder=self.identity, renew=now, acquire=acquire, transitions=transitions)
                try:
                    self._observe(await self._call(self.api.replace_namespaced_lease, self.name, self.namespace,
                                                   body))
                except kubernetes.client.ApiException as e:
                    if e.status != 409:
                        raise
                    continue
                self._last_renew = started
                return True
            return False
        except Exception as e:  # API errors, timeouts, connection trouble: try again later
            metrics.LEASE_RENEWALS.labels(result="error").inc()
            logger.warning("acquiring Lease %s/%s failed: %s", self.namespace, self.name, _describe(e))
            return False

    async def _create(self) -> bool:
        now = self.clock()
        started = self.monotonic()
        body = self._body({"metadata": {"name": self.name, "namespace": self.namespace}},
                          holder=self.identity, renew=now, acquire=now, transitions=0)
        try:
            self._observe(await self._call(self.api.create_namespaced_lease, self.namespace, body))
        except kubernetes.client.ApiException as e:
            if e.status == 409:  # created by another replica just now
                return False
            raise
        self._last_renew = started
        return True

    async def _renew(self) -> bool:
        """True: renewed. False: another holder has the Lease. Raises on API trouble."""
        for _ in range(3):
            obj = await self._call(self.api.read_namespaced_lease, self.name, self.namespace,
                                   timeout=self._time_left())
            record = self._observe(obj)
            if record.holder != self.identity:
                return False
            started = self.monotonic()
            body = self._body(obj, holder=self.identity, renew=self.clock(), acquire=record.acquire_time,
                              transitions=record.transitions)
            try:
                self._observe(await self._call(self.api.replace_namespaced_lease, self.name, self.namespace,
                                               body, timeout=self._time_left()))
            except kubernetes.client.ApiException as e:
                if e.status != 409:
                    raise
                continue  # someone wrote in between: re-read
            self._last_renew = started
            metrics.LEASE_RENEWALS.labels(result="ok").inc()  # counted after the write
            return True
        raise TimeoutError("the Lease kept changing under us (3 conflicts in a row)")

    # --- helpers -----------------------------------------------------------------------------------------------

    def _time_left(self) -> float:
        return self._last_renew + self.renew_deadline - self.monotonic()

    def _body(self, obj: dict[str, Any], *, holder: str | None, renew: datetime, acquire: datetime | None,
              transitions: int) -> dict[str, Any]:
        meta = dict(obj.get("metadata") or {})
        body_meta = {k: meta[k] for k in ("name", "namespace", "resourceVersion", "labels", "annotations")
                     if k in meta}
        body_meta["labels"] = {**(body_meta.get("labels") or {}), keys.MANAGED_BY: keys.OPERATOR,
                               **self.labels}
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": body_meta,
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": self.lease_duration,
                "acquireTime": format_micro_time(acquire) if acquire else None,
                "renewTime": format_micro_time(renew),
                "leaseTransitions": transitions,
            },
        }

    def _observe(self, obj: dict[str, Any]) -> LeaseRecord:
        record = LeaseRecord.from_object(obj)
        self.observed = record
        self.transitions = record.transitions
        return record

    async def _call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None) -> dict[str, Any]:
        """A client call in a thread, bounded by ``timeout`` (default: the retry period, at least 1 s)."""
        limit = max(0.2, timeout if timeout is not None else max(1.0, self.retry_period * 2))
        # (asyncio.timeout, not wait_for: wait_for of Python 3.11 can swallow a cancellation that races with
        # the call's completion, and a cancelled elector must stop)
        async with asyncio.timeout(limit + 0.5):
            response = await asyncio.get_running_loop().run_in_executor(
                LEASE_THREADS, functools.partial(fn, *args, _preload_content=False, _request_timeout=limit))
        data: dict[str, Any] = json.loads(response.data)
        return data

    async def _became(self, leader: bool, why: str) -> None:
        if leader == self.is_leader:
            return
        if leader:
            self.following.clear()
            self.leading.set()
            callback = self.on_started_leading
        else:
            self.leading.clear()
            self.following.set()
            callback = self.on_stopped_leading
        logger.info("%s %s leadership of Lease %s/%s: %s", self.identity, "took" if leader else "lost",
                    self.namespace, self.name, why)
        if callback is None:
            return
        try:
            result = callback()
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("leader-election callback failed (Lease %s/%s)", self.namespace, self.name)


def live_leases(api_client: kubernetes.client.ApiClient, namespace: str, selector: str, now: datetime,
                timeout: float) -> dict[str, str]:
    """``{Lease name: holder}`` of the Leases matching ``selector`` whose holder's last renewal has not expired at
    ``now`` (blocking: run it in a thread)."""
    api = kubernetes.client.CoordinationV1Api(api_client)
    resp: Any = api.list_namespaced_lease(namespace, label_selector=selector, _preload_content=False,
                                          _request_timeout=timeout)
    live: dict[str, str] = {}
    for item in json.loads(resp.data).get("items", []):
        spec: dict[str, Any] = item.get("spec") or {}
        holder, renew = spec.get("holderIdentity"), _parse_time(spec.get("renewTime"))
        duration = int(spec.get("leaseDurationSeconds") or 0)
        if holder and renew is not None and renew + timedelta(seconds=duration) >= now:
            live[str((item.get("metadata") or {}).get("name", ""))] = str(holder)
    return live


def _describe(e: BaseException) -> str:
    if isinstance(e, kubernetes.client.ApiException):
        return f"HTTP {e.status} {e.reason}"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
