"""The gateway's caller: the current attempt's Pod by the UID the operator recorded, role and branch from the
AgentTask (never the Pod's annotation), identity lookups cached by Pod UID, requests limited per attempt."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from typing import Any

import pytest

from longshot.api import handoff as ho
from longshot.gateway import cluster as gcluster
from longshot.gateway import identity
from longshot.gateway.flights import Flights

pytestmark = pytest.mark.unit


def task(attempts: list[dict[str, Any]], *, role: str = "reviewer", branch: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"buildRef": {"name": "b"}, "description": "d", "role": role}
    if branch:
        spec["branch"] = branch
    return {"metadata": {"name": "b-t", "namespace": "ns", "uid": "task-uid"}, "spec": spec,
            "status": {"attempts": attempts}}


def denied(t: dict[str, Any], pod: str, uid: str) -> identity.Denied:
    with pytest.raises(identity.Denied) as e:
        identity.bound_attempt(t, pod, uid)
    return e.value


def test_the_current_attempt_with_the_recorded_uid_is_bound():
    t = task([{"number": 1, "pod": "b-t-a1", "podUID": "u1", "endTime": "x"},
              {"number": 2, "pod": "b-t-a2", "podUID": "u2"}])
    assert identity.bound_attempt(t, "b-t-a2", "u2") == 2


def test_another_uid_an_older_attempt_or_an_ended_one_is_403():
    t = task([{"number": 1, "pod": "b-t-a1", "podUID": "u1", "endTime": "x"},
              {"number": 2, "pod": "b-t-a2", "podUID": "u2"}])
    assert denied(t, "b-t-a2", "forged").status == 403
    assert denied(t, "b-t-a1", "u1").status == 403
    ended = task([{"number": 1, "pod": "b-t-a1", "podUID": "u1", "endTime": "x"}])
    assert "has ended" in denied(ended, "b-t-a1", "u1").message


def test_the_current_or_next_attempts_pod_before_its_uid_is_recorded_is_503_with_retry_after():
    for t, pod in ((task([]), "b-t-a1"), (task([{"number": 1, "pod": "b-t-a1"}]), "b-t-a1"),
                   (task([{"number": 1, "pod": "b-t-a1", "podUID": "u1", "endTime": "x"}]), "b-t-a2")):
        e = denied(t, pod, "u")
        assert (e.status, e.headers) == (503, {"Retry-After": "1"}), e.message
    assert denied(task([]), "b-t-a7", "u").status == 403  # not the next attempt's name


class FakeCluster:
    """The gateway's cluster calls, in memory; counts the reads."""

    def __init__(self, pod: dict[str, Any], t: dict[str, Any], build: dict[str, Any]) -> None:
        self.pod, self.task, self.build = pod, t, build
        self.reads = 0

    def review(self, token: str, audience: str) -> gcluster.Review | None:
        return gcluster.Review("ns", "default", self.pod["metadata"]["name"], self.pod["metadata"]["uid"])

    def get_pod(self, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any] | None:
        self.reads += 1
        return self.pod

    def get_task(self, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any] | None:
        self.reads += 1
        return self.task

    def get_build(self, namespace: str, name: str, *, fresh: bool = False) -> dict[str, Any] | None:
        self.reads += 1
        return self.build


def world(annotation_role: str = "worker") -> FakeCluster:
    forged = ho.TaskInput(task="b-t", build="b", namespace="ns", role=annotation_role, description="d",  # type: ignore[arg-type]
                          repository_url="https://x/r.git", branch="longshot/ns/b/b-other")
    pod = {"metadata": {"name": "b-t-a1", "namespace": "ns", "uid": "u1",
                        "annotations": {ho.TASK_INPUT_ANNOTATION: json.dumps(forged.to_wire())},
                        "ownerReferences": [{"kind": "AgentTask", "name": "b-t", "uid": "task-uid",
                                             "controller": True}]},
           "status": {"phase": "Running"}}
    build = {"metadata": {"name": "b", "namespace": "ns"}, "spec": {"repository": {"url": "https://x/r.git"}}}
    return FakeCluster(pod, task([{"number": 1, "pod": "b-t-a1", "podUID": "u1"}]), build)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def auth(c: FakeCluster, clock: Clock, **kw: Any) -> identity.Authenticator:
    return identity.Authenticator(c, audience="longshot-gateway", cache_seconds=30,  # type: ignore[arg-type]
                                  clock=clock, **kw)


HEADERS = {"Authorization": "Bearer t"}


def test_role_and_branch_come_from_the_agent_task_not_the_pods_annotation():
    caller = asyncio.run(auth(world("worker"), Clock()).authenticate(HEADERS))
    assert (caller.role, caller.task_input.branch, caller.attempt) == ("reviewer", "longshot/ns/b/b-t", 1)


def test_identity_lookups_are_cached_by_pod_uid_for_the_window_then_read_again():
    c, clock = world(), Clock()
    a = auth(c, clock, identity_cache_seconds=2.0)
    for _ in range(10):
        asyncio.run(a.authenticate(HEADERS))
    assert c.reads == 3  # Pod, AgentTask, BuildRequest once
    c.task = task([{"number": 1, "pod": "b-t-a1", "podUID": "u1", "endTime": "x"}])
    clock.now = 2.5  # past the window: the ended attempt loses access
    with pytest.raises(identity.Denied) as e:
        asyncio.run(a.authenticate(HEADERS))
    assert e.value.status == 403 and c.reads == 5  # Pod and AgentTask read again; refused before the build
    with pytest.raises(identity.Denied):
        asyncio.run(a.authenticate(HEADERS))
    assert c.reads == 5  # refused from the cache


def test_an_attempt_over_its_request_rate_is_429_with_retry_after():
    c, clock = world(), Clock()
    a = auth(c, clock, identity_cache_seconds=2.0, rate=10.0, burst=5.0)
    for _ in range(5):
        asyncio.run(a.authenticate(HEADERS))
    with pytest.raises(identity.Denied) as e:
        asyncio.run(a.authenticate(HEADERS))
    assert e.value.status == 429 and e.value.headers == {"Retry-After": "1"}
    clock.now = 0.1  # one token back
    asyncio.run(a.authenticate(HEADERS))


def test_the_rate_limiter_refills_and_stays_bounded():
    clock = Clock()
    r = identity.RateLimiter(1.0, 2.0, clock)
    assert [r.take("a"), r.take("a")] == [0.0, 0.0] and r.take("a") == pytest.approx(1.0)
    clock.now = 1.0
    assert r.take("a") == 0.0
    for i in range(identity.CACHE_SIZE + 10):
        r.take(str(i))
    assert len(r._buckets) <= identity.CACHE_SIZE


class RefusingCluster(FakeCluster):
    """The API server refuses every token; counts the TokenReviews and what it saw of them."""

    def __init__(self) -> None:
        super().__init__({"metadata": {"name": "p", "uid": "u"}}, task([]), {})
        self.reviews = 0

    def review(self, token: str, audience: str) -> gcluster.Review | None:
        self.reviews += 1
        return None


def refused(a: identity.Authenticator, token: str) -> identity.Denied:
    with pytest.raises(identity.Denied) as e:
        asyncio.run(a.authenticate({"Authorization": f"Bearer {token}"}))
    return e.value


def test_a_refused_token_is_refused_from_the_cache_for_the_window_then_reviewed_again():
    c, clock = RefusingCluster(), Clock()
    a = auth(c, clock, denied_cache_seconds=10.0)
    first = refused(a, "bogus")
    assert first.status == 401 and c.reviews == 1
    for _ in range(20):
        again = refused(a, "bogus")
        assert (again.status, again.message) == (first.status, first.message) and again is not first
    assert c.reviews == 1
    assert refused(a, "another-bogus").status == 401 and c.reviews == 2  # keyed by the token
    clock.now = 10.5
    refused(a, "bogus")
    assert c.reviews == 3
    assert not any("bogus" in k for k in a._denied)  # the table holds hashes, never a token


def test_the_refused_table_is_bounded_and_off_at_zero():
    c, clock = RefusingCluster(), Clock()
    a = auth(c, clock)

    async def many() -> None:
        for i in range(identity.CACHE_SIZE + 10):
            with pytest.raises(identity.Denied):
                await a._review(f"t{i}")

    asyncio.run(many())
    assert len(a._denied) == identity.CACHE_SIZE
    off = auth(c, clock, denied_cache_seconds=0)
    before = c.reviews
    refused(off, "x")
    refused(off, "x")
    assert c.reviews == before + 2


class Reviews(FakeCluster):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.reviews = 0

    def review(self, token: str, audience: str) -> gcluster.Review | None:
        self.reviews += 1
        return super().review(token, audience)


def _jwt(claims: dict[str, Any]) -> str:
    part = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"e30.{part}.sig"


def test_a_tokens_review_is_reused_for_the_cache_window_and_never_past_the_tokens_expiry():
    w = world()
    c, clock = Reviews(w.pod, w.task, w.build), Clock()
    a = identity.Authenticator(c, audience="longshot-gateway", cache_seconds=600, clock=clock,  # type: ignore[arg-type]
                               wall=lambda: 1_000_000.0 + clock.now)
    short = {"Authorization": f"Bearer {_jwt({'exp': 1_000_100})}"}  # expires 100 s from now
    plain = {"Authorization": "Bearer not-a-jwt"}  # no exp claim: the cache window alone
    for h in (short, plain):
        asyncio.run(a.authenticate(h))
    assert c.reviews == 2
    clock.now = 99.0
    for h in (short, plain):
        asyncio.run(a.authenticate(h))
    assert c.reviews == 2  # both still cached
    clock.now = 100.5
    asyncio.run(a.authenticate(short))
    assert c.reviews == 3  # reviewed again at its expiry, not 600 s on
    clock.now = 599.0
    asyncio.run(a.authenticate(plain))
    assert c.reviews == 3
    clock.now = 601.0
    asyncio.run(a.authenticate(plain))
    assert c.reviews == 4
    assert identity.token_expiry(_jwt({"exp": 5})) == 5.0
    assert identity.token_expiry(_jwt({"exp": True})) is None and identity.token_expiry("x.y") is None


class Held(FakeCluster):
    """Reviews and reads that wait in their thread until the test lets them go; counted. ``refuse``: every token
    is refused."""

    def __init__(self, *a: Any, refuse: bool = False) -> None:
        super().__init__(*a)
        self.reviews = 0
        self.refuse = refuse
        self.entered = threading.Event()
        self.release = threading.Event()

    def review(self, token: str, audience: str) -> gcluster.Review | None:
        self.reviews += 1
        self.entered.set()
        assert self.release.wait(10)
        return None if self.refuse else super().review(token, audience)


async def together(a: identity.Authenticator, c: Held, n: int) -> list[Any]:
    """``n`` requests that arrive while the first one's TokenReview is under way."""
    requests = [asyncio.create_task(a.authenticate(HEADERS)) for _ in range(n)]
    assert await asyncio.to_thread(c.entered.wait, 10)
    c.release.set()
    return await asyncio.gather(*requests, return_exceptions=True)


def test_requests_that_arrive_together_share_one_token_review_and_one_lookup():
    w = world()
    c = Held(w.pod, w.task, w.build)
    a = auth(c, Clock(), identity_cache_seconds=2.0)
    callers = asyncio.run(together(a, c, 20))
    assert c.reviews == 1 and c.reads == 3  # one TokenReview; Pod, AgentTask and BuildRequest read once
    assert {(x.pod_uid, x.attempt) for x in callers} == {("u1", 1)}
    assert len(a._review_flights) == 0 and len(a._caller_flights) == 0  # nothing left under way


def test_a_refusal_shared_by_requests_that_arrived_together_refuses_each_of_them():
    w = world()
    c = Held(w.pod, w.task, w.build, refuse=True)
    a = auth(c, Clock())
    outcomes = asyncio.run(together(a, c, 10))
    assert c.reviews == 1
    assert [type(o).__name__ for o in outcomes] == ["Denied"] * 10 and {o.status for o in outcomes} == {401}


def test_a_waiter_that_goes_away_does_not_stop_the_shared_call_for_the_others():
    async def run() -> tuple[list[str], int]:
        shared: Flights[str] = Flights()
        calls = 0
        gate = asyncio.Event()

        async def call() -> str:
            nonlocal calls
            calls += 1
            await gate.wait()
            return "done"

        first = asyncio.create_task(shared.run("k", call))
        second = asyncio.create_task(shared.run("k", call))
        await asyncio.sleep(0)  # both are waiting on the one call
        first.cancel()
        gate.set()
        got = [await second]
        with pytest.raises(asyncio.CancelledError):
            await first
        got.append(await shared.run("k", call))  # ended: the next asker starts a new call
        return got, calls

    got, calls = asyncio.run(run())
    assert got == ["done", "done"] and calls == 2
