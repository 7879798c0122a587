"""Admission by capacity and fair shares between tenants (issue 57): ``core.admission`` and ``core.scheduler.select``
with a capacity and tenants. Pure, milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longshot.core import admission, scheduler
from longshot.core.admission import NodeView, PodUse, Resources, Taint, TenantPolicy, Toleration
from longshot.core.scheduler import BuildView, TaskView

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 28, tzinfo=UTC)
AGENT = Resources(cpu=250, memory=256 << 20)
GI = 1 << 30


def node(name: str, cpu: int = 1000, memory: int = 4 * GI, pods: int = 110, **kw) -> NodeView:
    return NodeView(name=name, allocatable=Resources(cpu, memory, pods), **kw)


def task(name: str, build: str, *, priority: int = 5, age: int = 0, requests: Resources = AGENT) -> TaskView:
    return TaskView(name=name, build=build, priority=priority, created=T0 - timedelta(seconds=age),
                    requests=requests)


def builds(*keys: str, max_workers: int = 1000) -> dict[str, BuildView]:
    return {k: BuildView(name=k.split("/")[-1], max_workers=max_workers) for k in keys}


# --- quantities and settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "millis"), [("250m", 250), ("1", 1000), ("1.5", 1500), ("0.1", 100), (2, 2000),
                                             ("1e0", 1000), ("100u"[:-1], 100000)])
def test_cpu_quantities(text, millis):
    assert admission.cpu_millis(text) == millis


@pytest.mark.parametrize(("text", "n"), [("256Mi", 256 << 20), ("1Gi", GI), ("1G", 10**9), ("128974848", 128974848),
                                         ("129e6", 129 * 10**6), ("1k", 1000)])
def test_memory_quantities(text, n):
    assert admission.memory_bytes(text) == n


@pytest.mark.parametrize("bad", ["", "-1", "1Xi", "abc", "1.2.3", "9" * 100, True])
def test_a_bad_quantity_is_refused(bad):
    with pytest.raises(ValueError):
        admission.quantity(bad)


def test_tenants_parse_with_weights_caps_and_limits():
    got = admission.parse_tenants('{"team-a": {"weight": 2, "maxAgents": 10, "cpu": "4", "memory": "8Gi"},'
                                  ' "*": {"maxAgents": 3}}')
    assert got["team-a"].weight == 2 and got["team-a"].max_agents == 10
    assert got["team-a"].limit is not None and got["team-a"].limit.cpu == 4000
    assert admission.policy_of(got, "other").max_agents == 3
    assert admission.policy_of({}, "other") == admission.DEFAULT_POLICY
    assert admission.parse_tenants("") == {}


@pytest.mark.parametrize(("text", "names"), [
    ("[1]", "JSON object"), ("{", "not JSON"), ('{"a": 1}', "tenants['a']"),
    ('{"a": {"weight": 0}}', "tenants['a'].weight"), ('{"a": {"weight": true}}', "weight"),
    ('{"a": {"maxAgents": -1}}', "maxAgents"), ('{"a": {"cpu": "lots"}}', "tenants['a']"),
    ('{"a": {"maxagents": 1}}', "unknown field"),
])
def test_bad_tenants_are_refused_naming_the_entry(text, names):
    with pytest.raises(ValueError, match=names.replace("[", r"\[").replace("]", r"\]")):
        admission.parse_tenants(text)


def test_explicit_capacity_parses_and_auto_and_off_are_none():
    assert admission.parse_capacity("auto") is None and admission.parse_capacity("off") is None
    assert admission.parse_capacity("cpu=2,memory=4Gi").cpu == 2000
    for bad in ("cpu=2", "cpu=2,memory=4Gi,cpu=3", "gpu=1,cpu=1,memory=1Gi", "lots"):
        with pytest.raises(ValueError, match="admission capacity"):
            admission.parse_capacity(bad)


def test_node_selector_and_tolerations_parse():
    assert admission.parse_node_selector('{"pool": "agents"}') == {"pool": "agents"}
    (t,) = admission.parse_tolerations('[{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}]')
    assert t == Toleration("agents", "Exists", "", "NoSchedule")
    assert admission.toleration_manifest(t) == {"key": "agents", "operator": "Exists", "effect": "NoSchedule"}
    for bad in ('{"a": 1}', "[1]"):
        with pytest.raises(ValueError):
            admission.parse_node_selector(bad) if bad.startswith("{") else admission.parse_tolerations(bad)
    with pytest.raises(ValueError, match="operator"):
        admission.parse_tolerations('[{"key": "a", "operator": "In"}]')


# --- which nodes count, and their room ---------------------------------------------------------------------------


def test_a_node_counts_when_its_labels_match_and_its_taints_are_tolerated():
    tainted = node("t", taints=(Taint("agents", "yes", "NoSchedule"),), labels={"pool": "agents"})
    assert not admission.node_matches(tainted, {}, ())
    assert admission.node_matches(tainted, {"pool": "agents"}, (Toleration("agents", "Exists"),))
    assert admission.node_matches(tainted, {}, (Toleration("agents", "Equal", "yes", "NoSchedule"),))
    assert not admission.node_matches(tainted, {}, (Toleration("agents", "Equal", "no"),))
    assert not admission.node_matches(tainted, {"pool": "other"}, (Toleration(operator="Exists"),))
    soft = node("s", taints=(Taint("x", "", "PreferNoSchedule"),))
    assert admission.node_matches(soft, {}, ())
    assert not admission.node_matches(node("c", schedulable=False), {}, ())


def test_no_matching_node_means_no_capacity_known():
    assert admission.cluster_capacity([node("a", schedulable=False)], [], selector={}, tolerations=()) is None


def test_room_is_allocatable_less_every_bound_pod_and_unbound_agent_pods_are_placed():
    cap = admission.cluster_capacity(
        [node("a", 1000), node("b", 1000)],
        [PodUse("a", Resources(500, GI)), PodUse("zz-other-node", Resources(900, GI)),
         PodUse("", AGENT, tenant="ns1"),  # admitted, not bound yet: goes to b, the emptiest
         PodUse("", Resources(100, 0))],  # someone else's unbound Pod: not ours to place
        selector={}, tolerations=())
    assert cap is not None and cap.free is not None
    assert cap.free["a"] == Resources(500, 3 * GI, 109)
    assert cap.free["b"] == Resources(750, 4 * GI - AGENT.memory, 109)
    assert cap.take(Resources(700, 0), "ns1") == "b"
    assert cap.take(Resources(600, 0), "ns1") is None  # 500 and 50 left
    assert cap.take(Resources(500, 0), "ns1") == "a"
    assert cap.total_free().cpu == 50


def test_the_node_pod_count_is_room_too():
    cap = admission.cluster_capacity([node("a", 1000, pods=2)], [PodUse("a", Resources())], selector={},
                                     tolerations=())
    assert cap is not None
    assert cap.take(Resources(1), "t") == "a"
    assert cap.take(Resources(1), "t") is None


def test_a_request_larger_than_any_node_never_fits():
    cap = admission.cluster_capacity([node("a", 1000)], [], selector={}, tolerations=())
    assert cap is not None
    assert not cap.ever_fits(Resources(2000), "t")
    assert cap.ever_fits(Resources(1000, pods=0), "t")


def test_explicit_capacity_counts_the_live_agent_pods():
    cap = admission.explicit_capacity(Resources(1000, 4 * GI, 2**62),
                                      [PodUse("n1", AGENT, "a"), PodUse("", AGENT, "b")])
    assert cap.take(Resources(500, 0), "c") is not None
    assert cap.take(Resources(1), "c") is None


def test_a_tenant_limit_holds_the_tenant_only():
    tenants = {"a": TenantPolicy(limit=Resources(500, 2**62, 2**62))}
    cap = admission.tenant_capacity([PodUse("", AGENT, "a")], tenants)
    assert cap is not None
    assert cap.take(AGENT, "a") is not None
    assert cap.take(AGENT, "a") is None
    assert cap.take(AGENT, "b") is not None
    assert not cap.ever_fits(Resources(600), "a")
    assert admission.tenant_capacity([], {"a": TenantPolicy(weight=2)}) is None


# --- select: tenants first, then builds, within the room ----------------------------------------------------------


def test_the_next_slot_goes_to_the_tenant_with_the_smallest_share():
    noisy = [task(f"n{i}", "noisy/b", age=100 + i) for i in range(50)]  # older and many
    quiet = [task("q0", "quiet/b")]
    running = [task(f"r{i}", "noisy/b") for i in range(7)]
    sel = scheduler.select(noisy + quiet, running, builds=builds("noisy/b", "quiet/b"), global_limit=8)
    assert [t.name for t in sel.start] == ["q0"]


def test_shares_are_weighted():
    a = [task(f"a{i}", "a/b", age=10) for i in range(20)]
    b = [task(f"b{i}", "b/b") for i in range(20)]
    sel = scheduler.select(a + b, [], builds=builds("a/b", "b/b"), global_limit=9,
                           tenants={"a": TenantPolicy(weight=2)})
    got = [t.build for t in sel.start]
    assert got.count("a/b") == 6 and got.count("b/b") == 3


def test_a_tenant_at_its_max_agents_starts_nothing_and_is_reported():
    a = [task(f"a{i}", "a/b") for i in range(5)]
    sel = scheduler.select(a, [task("r", "a/b")], builds=builds("a/b"), global_limit=50,
                           tenants={"*": TenantPolicy(max_agents=3)})
    assert len(sel.start) == 2 and sel.capped == frozenset({"a"})


def test_within_a_tenant_builds_share_and_a_gate_goes_first_in_its_build():
    work = [task(f"w{i}", "t/b1", age=50) for i in range(5)]
    gate = task("gate", "t/b1", priority=9)
    other = [task(f"o{i}", "t/b2") for i in range(5)]
    sel = scheduler.select([*work, gate, *other], [], builds=builds("t/b1", "t/b2"), global_limit=2)
    assert [t.name for t in sel.start] == ["gate", "o0"]


def _cap(free_cpu: int) -> admission.Capacity:
    """A 4-cpu node with ``free_cpu`` of it free (another Pod requests the rest)."""
    cap = admission.cluster_capacity([node("n", 4000)], [PodUse("n", Resources(4000 - free_cpu))], selector={},
                                     tolerations=())
    assert cap is not None
    return cap


def test_no_pod_is_admitted_that_does_not_fit_and_the_line_says_who_is_next():
    noisy = [task(f"n{i}", "noisy/b", age=100 + i) for i in range(100)]
    quiet = [task("q0", "quiet/b"), task("q1", "quiet/b")]
    running = [task(f"r{i}", "noisy/b") for i in range(3)]
    sel = scheduler.select(noisy + quiet, running, builds=builds("noisy/b", "quiet/b"), global_limit=50,
                           capacity=_cap(600))  # room for 2 agents (250m each)
    assert [t.name for t in sel.start] == ["q0", "q1"]  # quiet's share 0, then 1/1 < 3/1
    first = sel.waiting[0]
    assert first.position == 1 and first.task.name == "n99" and first.tenant == "noisy" and first.running == 3
    assert [w.position for w in sel.waiting] == list(range(1, len(sel.waiting) + 1))
    assert len(sel.waiting) == scheduler.LINE


def test_room_that_frees_goes_to_the_fairest_task_even_when_a_smaller_one_would_fit():
    big = task("big", "quiet/b", requests=Resources(600, 0))
    small = [task(f"s{i}", "noisy/b", age=10) for i in range(5)]
    sel = scheduler.select([big, *small], [task("r", "noisy/b")], builds=builds("noisy/b", "quiet/b"),
                           global_limit=50, capacity=_cap(500))
    assert sel.start == ()  # 500m free: "big" is next, and nobody takes its room
    assert sel.waiting[0].task.name == "big"


def test_a_task_that_can_never_fit_waits_for_nobody():
    huge = task("huge", "a/b", requests=Resources(5000, 0), priority=9)  # the node has 4 cpus
    rest = [task(f"x{i}", "a/b") for i in range(2)]
    sel = scheduler.select([huge, *rest], [], builds=builds("a/b"), global_limit=50, capacity=_cap(1000))
    assert [t.name for t in sel.unfit] == ["huge"]
    assert [t.name for t in sel.start] == ["x0", "x1"]


def test_a_line_is_bounded_and_respects_build_limits():
    a = [task(f"a{i}", "a/b") for i in range(200)]
    sel = scheduler.select(a, [], builds=builds("a/b", max_workers=10), global_limit=50, capacity=_cap(0),
                           line=100)
    assert sel.start == () and len(sel.waiting) == 10  # the build can start only 10: the others wait for it


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(100, 900)), min_size=1, max_size=30),
       st.lists(st.sampled_from(["a", "b", "c"]), max_size=10), st.integers(0, 3000))
def test_what_select_admits_always_fits_the_room(tasks, running, free):
    views = [task(f"t{i}", f"{ns}/b", requests=Resources(cpu, 0), age=i) for i, (ns, cpu) in enumerate(tasks)]
    run = [task(f"r{i}", f"{ns}/b") for i, ns in enumerate(running)]
    sel = scheduler.select(views, run, builds=builds("a/b", "b/b", "c/b"), global_limit=100,
                           capacity=_cap(free))
    assert sum(t.requests.cpu + 0 for t in sel.start) <= free
    # and it admits in fair order until the first that does not fit: only then does anything wait
    if sel.waiting:
        assert sel.waiting[0].task.requests.cpu > free - sum(t.requests.cpu for t in sel.start)
    else:
        assert len(sel.start) == len(views)


# --- the tenants' own limits: ResourceQuotas, tokens per hour; precedence within a tenant ---------------------------


def test_a_quota_reads_requests_and_plain_names_and_the_smaller_counts():
    q = admission.quota_view("t", {"cpu": "4", "requests.cpu": "2", "requests.memory": "1Gi", "count/pods": "10"},
                             {"requests.cpu": "500m", "pods": "3"})
    assert q.hard == Resources(2000, GI, 10) and q.used == Resources(500, 0, 3)
    unread = admission.quota_view("t", {"cpu": "lots", "limits.cpu": "1"}, {})
    assert unread.hard == Resources(admission.UNLIMITED, admission.UNLIMITED, admission.UNLIMITED)


def test_quota_room_is_hard_less_what_other_pods_use_and_the_tightest_quota_counts():
    quotas = [admission.quota_view("t", {"requests.cpu": "2", "pods": "10"}, {"requests.cpu": "1", "pods": "4"}),
              admission.quota_view("t", {"requests.memory": "4Gi"}, {"requests.memory": "1Gi"}),
              admission.quota_view("t", {"requests.cpu": "0"}, {}, scoped=True)]  # a scoped quota: not read
    agents = [PodUse("n", Resources(250, 256 << 20), "t"), PodUse("n", Resources(250, 256 << 20), "t")]
    room = admission.quota_limits(quotas, agents)
    # the quota's used (1 cpu, 4 Pods) counts our two agents (500m, 2 Pods): the others hold 500m and 2 Pods
    assert room["t"] == Resources(1500, 4 * GI - (1 * GI - (512 << 20)), 8)
    assert "u" not in room


def test_a_tenant_at_its_quota_is_held_and_the_others_go_on():
    cap = _cap(4000)
    cap.quotas = {"a": Resources(500, admission.UNLIMITED, admission.UNLIMITED)}
    a = [task(f"a{i}", "a/b", age=100 - i) for i in range(5)]  # older: first in line
    b = [task(f"b{i}", "b/b") for i in range(3)]
    sel = scheduler.select(a + b, [], builds=builds("a/b", "b/b"), global_limit=50, capacity=cap)
    assert sorted(t.name for t in sel.start) == ["a0", "a1", "b0", "b1", "b2"]
    assert sel.waiting == () and sel.capped == frozenset({"a"})
    (held,) = sel.tenant_held
    assert held.tenant == "a" and held.reason == "TenantLimit" and held.task.name == "a2"
    assert "request cpu 500m, memory 512Mi, 2 Pods; its limit" in held.message
    assert ": cpu 500m, no memory limit" in held.message


def test_a_quota_on_pods_counts_each_agent_pod():
    cap = admission.tenant_capacity([PodUse("", AGENT, "a")], {}, {"a": Resources(admission.UNLIMITED,
                                                                                   admission.UNLIMITED, 2)})
    assert cap is not None
    assert cap.take(AGENT, "a") is not None
    assert cap.take(AGENT, "a") is None
    assert cap.ever_fits(AGENT, "b") and cap.ever_fits(AGENT, "a")  # 2 Pods fit its whole quota


def test_tokens_in_the_window_count_running_attempts_and_those_that_ended_in_it():
    now = T0
    attempts = [(100, None), (200, now - timedelta(minutes=30)), (400, now - timedelta(hours=2)),
                (800, (now - timedelta(hours=1)).replace(tzinfo=None))]
    assert admission.tokens_in_window(attempts, now - timedelta(hours=1)) == 100 + 200 + 800


def test_a_tenant_over_its_tokens_per_hour_starts_nothing_and_says_so():
    a = [task(f"a{i}", "a/b") for i in range(3)]
    b = [task(f"b{i}", "b/b") for i in range(3)]
    tenants = {"*": TenantPolicy(tokens_per_hour=1000)}
    sel = scheduler.select(a + b, [], builds=builds("a/b", "b/b"), global_limit=50, tenants=tenants,
                           tenant_tokens={"a": 1000, "b": 999})
    assert {t.build for t in sel.start} == {"b/b"} and len(sel.start) == 3
    (held,) = sel.tenant_held
    assert held.reason == "TokensPerHour" and held.task.name == "a0" and "used 1000 tokens" in held.message


def test_tokens_per_hour_parses_and_a_bad_one_is_refused():
    assert admission.parse_tenants('{"a": {"tokensPerHour": 5000}}')["a"].tokens_per_hour == 5000
    with pytest.raises(ValueError, match=r"tokensPerHour"):
        admission.parse_tenants('{"a": {"tokensPerHour": -1}}')


def test_a_max_agents_cap_names_the_tenants_next_task():
    a = [task(f"a{i}", "a/b", age=10 - i) for i in range(5)]
    sel = scheduler.select(a, [task("r", "a/b")], builds=builds("a/b"), global_limit=50,
                           tenants={"*": TenantPolicy(max_agents=3)})
    (held,) = sel.tenant_held
    assert held.task.name == "a2" and held.reason == "TenantLimit" and "maxAgents is 3" in held.message


def test_within_a_tenant_an_urgent_task_of_a_busy_build_goes_before_an_idle_builds_worker():
    busy = [task(f"r{i}", "t/busy") for i in range(4)]
    gate = TaskView(name="gate", build="t/busy", priority=5, created=T0, requests=AGENT, urgent=True)
    workers = [task(f"w{i}", "t/idle", priority=10, age=100) for i in range(3)]
    sel = scheduler.select([gate, *workers], busy, builds=builds("t/busy", "t/idle"), global_limit=5)
    assert [t.name for t in sel.start] == ["gate"]
    # and inside a build, urgent before a higher priority
    w = task("w", "t/b", priority=10, age=100)
    sel = scheduler.select([w, gate.__class__(**{**_fields(gate), "build": "t/b"})], [], builds=builds("t/b"),
                           global_limit=1)
    assert [t.name for t in sel.start] == ["gate"]


def test_urgency_does_not_cross_tenants():
    gate = TaskView(name="gate", build="a/b", created=T0, requests=AGENT, urgent=True)
    sel = scheduler.select([gate, task("q", "b/b")], [task("r", "a/b")], builds=builds("a/b", "b/b"),
                           global_limit=2)
    assert [t.name for t in sel.start] == ["q"]  # a runs 1, b 0: b's share is smaller


def _fields(t: TaskView) -> dict[str, object]:
    return {f: getattr(t, f) for f in TaskView.__slots__}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["n1", "n2", ""]), st.integers(0, 900), st.sampled_from(["", "a", "b"])),
                max_size=20))
def test_node_room_then_agents_is_the_same_room_as_counting_every_pod_at_once(pods):
    nodes = [node("n1", 2000), node("n2", 1500)]
    uses = [PodUse(n, Resources(cpu, 0), t) for n, cpu, t in pods]
    whole = admission.cluster_capacity(nodes, uses, selector={}, tolerations=())
    room = admission.node_room(nodes, [p for p in uses if not p.tenant], selector={}, tolerations=())
    assert whole is not None and room is not None
    split = admission.capacity_from(room, [p for p in uses if p.tenant])
    assert split.free == whole.free and split.tenant_used == whole.tenant_used
