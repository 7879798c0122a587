"""Warm pools' decisions (core.warmpool): the template a sandbox must share with an attempt's Pod, which sandbox an
attempt claims, and how many a build keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longshot.core import warmpool
from longshot.core.admission import Resources

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
    ({"room": 1}, 1),  # its share of the operator's and its tenant's room (allot) bounds it
    ({"room": -3}, 0),
    ({"upcoming": 0}, 0),  # nothing pending: no new sandbox
    ({"active": False}, 0),
    ({"size": 0}, 0),
])
def test_the_pool_is_sized_from_demand_and_bounded_by_its_size_and_its_share_of_the_room(kw, want):
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


# --- the room divided between the pools (allot) ------------------------------------------------------------------

CPU = Resources(cpu=500, memory=256 << 20)


def want(key: str, n: int, tenant: str | None = None, requests: Resources = CPU) -> warmpool.Want:
    return warmpool.Want(key, tenant or key.split("/", 1)[0], n, requests)


def test_with_room_for_all_every_pool_gets_what_it_wants():
    wants = [want("a/b1", 4), want("a/b2", 2), want("b/b1", 3), want("c/b1", 0)]
    assert warmpool.allot(wants, room=None) == {"a/b1": 4, "a/b2": 2, "b/b1": 3, "c/b1": 0}
    assert warmpool.allot(wants, room=9) == {"a/b1": 4, "a/b2": 2, "b/b1": 3, "c/b1": 0}


def test_the_operators_room_bounds_the_pools_and_is_shared_between_tenants_not_first_come():
    # team a has two builds asking 32 each, team b one asking 4: with 6 slots, 3 and 3 (a's split between its builds)
    got = warmpool.allot([want("a/b1", 32), want("a/b2", 32), want("b/b1", 4)], room=6)
    assert got == {"a/b1": 2, "a/b2": 1, "b/b1": 3}
    assert warmpool.allot([want("a/b1", 32)], room=0) == {"a/b1": 0}
    assert warmpool.allot([want("a/b1", 32)], room=-5) == {"a/b1": 0}  # more running than max_workers


def test_a_tenant_that_wants_less_than_its_share_leaves_the_rest_to_the_others():
    assert warmpool.allot([want("a/b1", 1), want("b/b1", 20)], room=8) == {"a/b1": 1, "b/b1": 7}


def test_weights_divide_the_room_in_proportion():
    tenants = {"a": warmpool.TenantRoom(weight=3), "b": warmpool.TenantRoom(weight=1)}
    assert warmpool.allot([want("a/b1", 32), want("b/b1", 32)], room=8, tenants=tenants) == {"a/b1": 6, "b/b1": 2}


def test_a_tenants_agents_cpu_and_memory_bound_its_pools():
    tenants = {"a": warmpool.TenantRoom(agents=3),
               "b": warmpool.TenantRoom(resources=Resources(cpu=1200, memory=8 << 30))}
    got = warmpool.allot([want("a/b1", 32), want("a/b2", 32), want("b/b1", 32), want("c/b1", 2)], room=None,
                         tenants=tenants)
    assert got == {"a/b1": 2, "a/b2": 1, "b/b1": 2, "c/b1": 2}  # b: two of 500m fit in 1200m, a third does not
    full = {"a": warmpool.TenantRoom(agents=-2)}  # its running agents passed maxAgents already
    assert warmpool.allot([want("a/b1", 4)], room=None, tenants=full) == {"a/b1": 0}


def test_a_build_whose_sandbox_does_not_fit_its_tenant_leaves_room_to_a_smaller_one():
    tenants = {"a": warmpool.TenantRoom(resources=Resources(cpu=1000, memory=8 << 30))}
    big = want("a/big", 4, requests=Resources(cpu=2000, memory=1 << 30))
    small = want("a/small", 4, requests=Resources(cpu=250, memory=1 << 30))
    assert warmpool.allot([big, small], room=None, tenants=tenants) == {"a/big": 0, "a/small": 4}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 40), st.integers(0, 2000)), max_size=8),
       st.one_of(st.none(), st.integers(-3, 60)),
       st.dictionaries(st.sampled_from("abc"), st.tuples(st.integers(1, 4), st.one_of(st.none(), st.integers(-2, 30)),
                                                          st.one_of(st.none(), st.integers(0, 8000))), max_size=3))
def test_allot_never_passes_a_bound_and_never_leaves_a_tenant_short_while_another_has_more_than_its_share(
        raw, room, raw_tenants):
    wants = [want(f"{t}/b{i}", n, t, Resources(cpu=cpu, memory=0)) for i, (t, n, cpu) in enumerate(raw)]
    tenants = {t: warmpool.TenantRoom(weight=float(w), agents=agents,
                                      resources=None if cpu is None else Resources(cpu=cpu, memory=1 << 40))
               for t, (w, agents, cpu) in raw_tenants.items()}
    got = warmpool.allot(wants, room=room, tenants=tenants)
    assert set(got) == {w.key for w in wants}
    assert all(0 <= got[w.key] <= max(0, w.want) for w in wants)
    total = sum(got.values())
    if room is not None:
        assert total <= max(0, room)
    per: dict[str, list[warmpool.Want]] = {}
    for w in wants:
        per.setdefault(w.tenant, []).append(w)
    for t, ws in per.items():
        tr = tenants.get(t, warmpool.TenantRoom())
        n = sum(got[w.key] for w in ws)
        if tr.agents is not None:
            assert n <= max(0, tr.agents)
        if tr.resources is not None:
            assert sum(got[w.key] * w.requests.cpu for w in ws) <= tr.resources.cpu
    # work-conserving: with room left over, every pool that got less than it wants was stopped by its tenant
    if room is None or total < room:
        for w in wants:
            if got[w.key] < w.want:
                tr = tenants.get(w.tenant, warmpool.TenantRoom())
                n = sum(got[x.key] for x in per[w.tenant])
                cpu = sum(got[x.key] * x.requests.cpu for x in per[w.tenant])
                assert (tr.agents is not None and n >= tr.agents) or (
                    tr.resources is not None and cpu + w.requests.cpu > tr.resources.cpu)
    # weighted fairness: a tenant with fewer than its share (for its weight) was stopped by its own wants or limits
    shares = {t: sum(got[w.key] for w in ws) / tenants.get(t, warmpool.TenantRoom()).weight for t, ws in per.items()}
    for t, ws in per.items():
        unmet = [w for w in ws if got[w.key] < w.want]
        if not unmet:
            continue
        tr = tenants.get(t, warmpool.TenantRoom())
        n = sum(got[w.key] for w in ws)
        cpu = sum(got[w.key] * w.requests.cpu for w in ws)
        stopped = (tr.agents is not None and n >= tr.agents) or (
            tr.resources is not None and all(cpu + w.requests.cpu > tr.resources.cpu for w in unmet))
        if not stopped:
            assert all(shares[o] - 1 / tenants.get(o, warmpool.TenantRoom()).weight <= shares[t] + 1e-9
                       for o in per if o != t), (t, shares)


def test_sandboxes_past_the_bound_go_at_once_those_a_claim_would_try_last_first():
    pool = [sandbox("old-ready", age=100, ready=True), sandbox("young-ready", age=10, ready=True),
            sandbox("old-pending", age=90), sandbox("young-pending", age=5)]
    p = warmpool.plan(facts(upcoming=4, room=2, bound=2), pool, now=NOW)
    assert {s.name for s in p.delete} == {"old-pending", "young-pending"} and p.create == 0
    # within the bound, past the target: kept until idle_seconds, as before
    p = warmpool.plan(facts(upcoming=1, room=1, bound=4), pool, now=NOW)
    assert p.delete == () and p.create == 0
    assert set(warmpool.plan(facts(room=0, bound=0), pool, now=NOW).delete) == set(pool)  # no room left at all


def test_what_a_pool_may_hold_past_its_demand_is_its_share_of_what_the_demand_left():
    wants = [want("a/p", 2), want("b/p", 32)]
    given = warmpool.allot(wants, room=10)
    assert given == {"a/p": 2, "b/p": 8}
    # the demand took the whole room: nothing more to hold
    assert warmpool.holdable(wants, given, {"a/p": 32, "b/p": 32}, room=10) == given
    # room left: shared, up to each size
    assert warmpool.holdable(wants, {"a/p": 2, "b/p": 2}, {"a/p": 4, "b/p": 32}, room=10) == {"a/p": 4, "b/p": 6}
    tenants = {"a": warmpool.TenantRoom(agents=3)}
    assert warmpool.holdable(wants, {"a/p": 2, "b/p": 2}, {"a/p": 8, "b/p": 2}, room=None, tenants=tenants) == {
        "a/p": 3, "b/p": 2}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 40), st.integers(0, 40), st.integers(0, 900)),
                max_size=6),
       st.one_of(st.none(), st.integers(-3, 60)),
       st.dictionaries(st.sampled_from("abc"), st.tuples(st.one_of(st.none(), st.integers(-2, 30)),
                                                          st.one_of(st.none(), st.integers(0, 8000))), max_size=3))
def test_holdable_never_passes_the_room_nor_a_tenants_limits_and_never_goes_below_the_demands_share(
        raw, room, raw_tenants):
    wants = [want(f"{t}/p{i}", min(n, size), t, Resources(cpu=cpu, memory=0))
             for i, (t, n, size, cpu) in enumerate(raw)]
    sizes = {f"{t}/p{i}": size for i, (t, _, size, _) in enumerate(raw)}
    tenants = {t: warmpool.TenantRoom(agents=agents, resources=None if cpu is None else Resources(cpu=cpu,
                                                                                                   memory=1 << 40))
               for t, (agents, cpu) in raw_tenants.items()}
    given = warmpool.allot(wants, room=room, tenants=tenants)
    held = warmpool.holdable(wants, given, sizes, room=room, tenants=tenants)
    assert all(given[w.key] <= held[w.key] <= max(sizes[w.key], given[w.key]) for w in wants)
    if room is not None:
        assert sum(held.values()) <= max(0, room)
    for t, tr in tenants.items():
        mine = [w for w in wants if w.tenant == t]
        if tr.agents is not None:
            assert sum(held[w.key] for w in mine) <= max(0, tr.agents)
        if tr.resources is not None:
            assert sum(held[w.key] * w.requests.cpu for w in mine) <= tr.resources.cpu
