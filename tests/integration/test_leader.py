"""Leader election on a real API server: one leader, prompt hand-over on release, take-over after a crash
once the Lease expires, and a leader whose Lease is overwritten steps down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import kubernetes
import pytest

from longshot.runtime import leader
from longshot_testing import wait_for

DURATION = 2
RENEW = 0.5
LEASE = leader.lease_name_for("team", "git", "https://git.example.com/org/app.git")


class Replica:
    """An elector running in this event loop, and the times it started and stopped leading."""

    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str, identity: str,
                 release_on_cancel: bool = True) -> None:
        self.events: list[tuple[str, float]] = []
        self.elector = leader.LeaderElector(
            api_client, namespace=namespace, name=LEASE, identity=identity, lease_duration=DURATION,
            renew_period=RENEW, release_on_cancel=release_on_cancel,
            on_started_leading=lambda: self.events.append(("started", time.monotonic())),
            on_stopped_leading=lambda: self.events.append(("stopped", time.monotonic())))
        self.task: asyncio.Task[None] = asyncio.create_task(self.elector.run())

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """``wait_for`` in a thread, so the electors keep running in this loop meanwhile."""
    await asyncio.to_thread(wait_for, predicate, timeout, what, 0.02)


@pytest.fixture
async def replicas(api_client: kubernetes.client.ApiClient, namespace: str) -> AsyncIterator[Callable[..., Replica]]:
    started: list[Replica] = []

    def start(identity: str, **kw: bool) -> Replica:
        r = Replica(api_client, namespace, identity, **kw)
        started.append(r)
        return r

    yield start
    for r in started:
        if not r.task.done():
            await r.stop()


def read_lease(api_client: kubernetes.client.ApiClient, namespace: str) -> leader.LeaseRecord:
    obj = kubernetes.client.CoordinationV1Api(api_client).read_namespaced_lease(LEASE, namespace,
                                                                                 _preload_content=False)
    import json

    return leader.LeaseRecord.from_object(json.loads(obj.data))


async def test_only_one_of_two_leads(replicas: Callable[..., Replica], api_client: kubernetes.client.ApiClient,
                                     namespace: str) -> None:
    a, b = replicas("replica-a"), replicas("replica-b")
    await until(lambda: a.elector.is_leader or b.elector.is_leader, 10, "a leader")
    first, second = (a, b) if a.elector.is_leader else (b, a)
    # several renew periods later: still exactly one leader, and the Lease names it
    deadline = time.monotonic() + 3 * RENEW
    while time.monotonic() < deadline:
        assert first.elector.is_leader and not second.elector.is_leader
        await asyncio.sleep(0.05)  # sampling, not synchronisation
    record = read_lease(api_client, namespace)
    assert record.holder == first.elector.identity
    assert record.duration_seconds == DURATION
    assert second.events == []


async def test_release_hands_over_promptly(replicas: Callable[..., Replica],
                                           api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    a = replicas("replica-a")
    await until(lambda: a.elector.is_leader, 10, "replica-a to lead")
    b = replicas("replica-b")
    await until(lambda: b.elector.observed is not None, 10, "replica-b to see the Lease")
    assert not b.elector.is_leader
    transitions = read_lease(api_client, namespace).transitions
    released = time.monotonic()
    await a.stop()  # shutdown: releases
    assert a.events[-1][0] == "stopped" and not a.elector.is_leader
    await until(lambda: b.elector.is_leader, DURATION + 5, "replica-b to take over")
    took = b.events[0][1] - released
    assert took < DURATION, f"hand-over took {took:.2f}s: the release was not noticed, the Lease expired"
    record = read_lease(api_client, namespace)
    assert record.holder == "replica-b" and record.transitions == transitions + 1
    assert b.elector.transitions == transitions + 1


async def test_crashed_leader_is_replaced_after_expiry(replicas: Callable[..., Replica],
                                                       api_client: kubernetes.client.ApiClient,
                                                       namespace: str) -> None:
    a = replicas("replica-a", release_on_cancel=False)
    await until(lambda: a.elector.is_leader, 10, "replica-a to lead")
    b = replicas("replica-b")
    await until(lambda: b.elector.observed is not None, 10, "replica-b to see the Lease")
    await a.stop()  # killed: no release
    last_renew = read_lease(api_client, namespace).renew_time
    assert last_renew is not None
    killed = time.monotonic()
    await until(lambda: b.elector.is_leader, DURATION + RENEW + 5, "replica-b to take over")
    took = b.events[0][1] - killed
    assert took <= DURATION + RENEW + 0.5, f"take-over took {took:.2f}s"
    record = read_lease(api_client, namespace)
    assert record.holder == "replica-b"
    assert record.acquire_time is not None
    assert record.acquire_time >= last_renew + timedelta(seconds=DURATION), "took over before expiry"


async def test_leader_whose_lease_is_overwritten_steps_down(replicas: Callable[..., Replica],
                                                            api_client: kubernetes.client.ApiClient,
                                                            namespace: str) -> None:
    a = replicas("replica-a")
    await until(lambda: a.elector.is_leader, 10, "replica-a to lead")
    now = datetime.now(UTC)
    kubernetes.client.CoordinationV1Api(api_client).patch_namespaced_lease(LEASE, namespace, {"spec": {
        "holderIdentity": "intruder", "renewTime": leader.format_micro_time(now),
        "acquireTime": leader.format_micro_time(now)}})
    overwritten = time.monotonic()
    await until(lambda: not a.elector.is_leader, RENEW + 3, "replica-a to notice it lost the Lease")
    noticed = a.events[1][1] - overwritten
    assert a.events[1][0] == "stopped"
    assert noticed <= RENEW + 0.5, f"noticed after {noticed:.2f}s"
    # the intruder never renews: once its Lease expires, replica-a leads again
    await until(lambda: a.elector.is_leader, DURATION + RENEW + 5, "replica-a to lead again")


async def test_a_new_repository_s_shard_is_taken_at_once_not_at_the_next_poll(
        api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    """The shard loop polls every renew period (30 s here); a replica that gets its member Lease, and a build of a
    repository no rebalance saw yet (the manager pokes the loop), are acted on at once: the new build's planner
    used to wait up to a renew period (5 s by default) for its repository's shard."""
    from longshot import config
    from longshot.controllers import leadership

    shards: set[str] = set()
    changes: list[float] = []
    settings = config.Settings(namespace=namespace, identity="replica-a", lease_duration_seconds=60,
                               lease_renew_seconds=30)
    lead = leadership.Leadership(api_client, settings, shards=lambda: set(shards),
                                 on_change=lambda: changes.append(time.monotonic()))
    task = asyncio.create_task(lead.run())
    try:
        shards.add("repo-one")  # there before the member Lease: taken once the replica has its footing
        await until(lambda: lead.holds("repo-one"), 10, "the first shard taken once the member Lease is held")
        assert not lead.knows("repo-two")
        shards.add("repo-two")
        lead.poke()
        await until(lambda: lead.holds("repo-two"), 10, "a new repository's shard taken when poked")
        assert lead.knows("repo-two") and changes
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_shard_two_replicas_each_leave_to_the_other_is_adopted(
        api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    """Two replicas whose views of the active shards differ (one still holds a build the other saw deleted: the
    e2e failover test after a deleted namespace) can each assign a new shard to the other. Before adoption nobody
    campaigned for it and its build kept the CRD's default status for ever; now its owner by the members alone takes
    it once it has had no holder for a lease duration."""
    from longshot import config
    from longshot.controllers import leadership
    from longshot.core import sharding

    members = ["replica-a", "replica-b"]
    x, n = next((x, n) for x in (f"a-old-{i}" for i in range(60)) for n in (f"b-new-{i}" for i in range(60))
                if sharding.assign([x, n], members)[n] == "replica-b"
                and sharding.assign([n], members)[n] == "replica-a")
    views = {"replica-a": {x, n}, "replica-b": {n}}
    leads: dict[str, leadership.Leadership] = {}
    tasks = []
    for identity in members:
        settings = config.Settings(namespace=namespace, identity=identity, lease_duration_seconds=3,
                                   lease_renew_seconds=1)
        leads[identity] = leadership.Leadership(api_client, settings, shards=lambda i=identity: set(views[i]),
                                                on_change=lambda: None)
        tasks.append(asyncio.create_task(leads[identity].run()))
    try:
        a, b = leads["replica-a"], leads["replica-b"]
        await until(lambda: a.holds(x), 15, "replica-a holds the shard only it sees")
        await until(lambda: a.members == b.members == set(members), 15, "both replicas see both members")
        assert a.assignment[n] == "replica-b" and b.assignment[n] == "replica-a"  # each leaves it to the other
        await until(lambda: a.holds(n) or b.holds(n), 20, "the shard each leaves to the other is taken")
        assert a.holds(n) and n in a.adopted and not b.holds(n)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with pytest.raises(asyncio.CancelledError):
                await t


async def test_lease_renewals_are_counted_by_result(replicas: Callable[..., Replica],
                                                    api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    # longshot_lease_renewals_total{result}: what the LongshotLeaseRenewalFailing alert reads
    from longshot import metrics

    def count(result: str) -> float:
        return metrics.REGISTRY.get_sample_value("longshot_lease_renewals_total", {"result": result}) or 0.0

    before = {r: count(r) for r in metrics.LEASE_RESULTS}
    a = replicas("replica-a")
    await until(lambda: a.elector.is_leader and count("ok") >= before["ok"] + 2, 10, "two renewals counted")
    now = datetime.now(UTC)
    kubernetes.client.CoordinationV1Api(api_client).patch_namespaced_lease(LEASE, namespace, {"spec": {
        "holderIdentity": "intruder", "renewTime": leader.format_micro_time(now),
        "acquireTime": leader.format_micro_time(now)}})
    await until(lambda: count("lost") >= before["lost"] + 1, RENEW + 3, "the lost Lease counted")
    # a replica whose API server does not answer: every try is an error
    config = kubernetes.client.Configuration()
    config.host = "http://127.0.0.1:9"
    dead = kubernetes.client.ApiClient(config)
    cut_off = leader.LeaderElector(dead, namespace=namespace, name=LEASE, identity="cut-off",
                                   lease_duration=DURATION, renew_period=RENEW, release_on_cancel=False)
    task = asyncio.create_task(cut_off.run())
    try:
        await until(lambda: count("error") >= before["error"] + 2, 10, "the failed tries counted")
        assert not cut_off.is_leader
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        dead.close()
