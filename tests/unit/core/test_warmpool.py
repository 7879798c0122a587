"""Warm pools' decisions (core.warmpool): the template a sandbox must share with an attempt's Pod, which sandbox an
attempt claims, and how many a build keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from longshot.core import warmpool

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def spec(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "activeDeadlineSeconds": 1800,
        "containers": [{"name": "agent", "image": "agent:1", "env": [{"name": "HOME", "value": "/workspace/home"},
                                                                      {"name": "TRACEPARENT", "value": "00-a-b-01"}]}],
        "volumes": [{"name": "gateway-token", "projected": {"sources": [
            {"serviceAccountToken": {"audience": "longshot-gateway", "path": "token", "expirationSeconds": 2400}}]}}],
    }
    base.update(over)
    return base


def test_the_template_ignores_what_differs_per_attempt_and_nothing_else():
    same = spec(activeDeadlineSeconds=99, volumes=[{"name": "gateway-token", "projected": {"sources": [
        {"serviceAccountToken": {"audience": "longshot-gateway", "path": "token", "expirationSeconds": 9999}}]}}])
    same["containers"] = [{"name": "agent", "image": "agent:1", "env": [{"name": "HOME", "value": "/workspace/home"}]}]
    assert warmpool.template_hash(spec()) == warmpool.template_hash(same)
    other_image = spec(containers=[{"name": "agent", "image": "agent:2", "env": []}])
    assert warmpool.template_hash(other_image) != warmpool.template_hash(spec())
    assert warmpool.template_hash(spec(runtimeClassName="gvisor")) != warmpool.template_hash(spec())
    assert len(warmpool.template_hash(spec())) == warmpool.HASH_LEN


def sandbox(name: str, *, age: int = 60, template: str = "t", **kw: object) -> warmpool.Sandbox:
    return warmpool.Sandbox(name=name, uid=f"uid-{name}", resource_version="1", template=template,
                            created=NOW - timedelta(seconds=age), **kw)  # type: ignore[arg-type]


def test_an_attempt_claims_only_free_sandboxes_of_its_template_running_ones_first_then_the_oldest():
    pool = [sandbox("young", age=10, ready=True), sandbox("old", age=100, ready=True), sandbox("pending", age=500),
            sandbox("claimed", claimed=True, ready=True), sandbox("deleting", deleting=True, ready=True),
            sandbox("ended", phase="Failed"), sandbox("stale", template="other", ready=True)]
    assert [s.name for s in warmpool.claim_order(pool, "t")] == ["old", "young", "pending"]
    assert warmpool.claim_order(pool, "none") == ()  # a miss: the attempt starts cold


def facts(**kw: object) -> warmpool.PoolFacts:
    base: dict[str, object] = {"size": 4, "template": "t", "active": True, "upcoming": 10, "idle_seconds": 300}
    base.update(kw)
    return warmpool.PoolFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("kw, want", [
    ({}, 4),  # the size bounds it
    ({"upcoming": 2}, 2),  # the queue's demand bounds it
    ({"tenant_room": 1}, 1),  # the tenant's maxAgents less its running agents bound it
    ({"tenant_room": -3}, 0),
    ({"upcoming": 0}, 0),  # nothing pending: no new sandbox
    ({"active": False}, 0),
    ({"size": 0}, 0),
])
def test_the_pool_is_sized_from_demand_and_bounded_by_its_size_and_the_tenants_room(kw, want):
    assert warmpool.target(facts(**kw)) == want
    assert warmpool.plan(facts(**kw), [], now=NOW).create == want


def test_a_pool_grows_to_its_target_and_counts_its_running_sandboxes():
    p = warmpool.plan(facts(), [sandbox("a", ready=True), sandbox("b")], now=NOW)
    assert (p.create, p.delete, p.ready) == (2, (), 1)


def test_stale_ended_or_unwanted_sandboxes_go_claimed_and_deleting_ones_are_left_alone():
    pool = [sandbox("stale", template="old"), sandbox("ended", phase="Succeeded"), sandbox("ok"),
            sandbox("claimed", claimed=True), sandbox("deleting", deleting=True)]
    p = warmpool.plan(facts(), pool, now=NOW)
    assert {s.name for s in p.delete} == {"stale", "ended"} and p.create == 3
    off = warmpool.plan(facts(active=False), pool, now=NOW)
    assert {s.name for s in off.delete} == {"stale", "ended", "ok"} and off.create == 0


def test_an_idle_pool_shrinks_after_idle_seconds_the_youngest_kept_longest():
    pool = [sandbox("old", age=400), sandbox("young", age=20)]
    p = warmpool.plan(facts(upcoming=0), pool, now=NOW)
    assert [s.name for s in p.delete] == ["old"] and p.create == 0  # the young one has not idled long enough
    p = warmpool.plan(facts(upcoming=1), pool, now=NOW)  # demand of one: the young one is kept, the old one goes
    assert [s.name for s in p.delete] == ["old"] and p.create == 0
