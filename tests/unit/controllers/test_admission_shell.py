"""Admission by capacity in the shell (issue 57): the room a plan counts in each mode, the requests of a task's
next Pod, what the cache keeps of a Pod, the Pod's placement settings, the line's ``Admitted`` conditions, and the
task decider's withdrawal of an unschedulable Pod. No process, no cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest

from fake_kube import FakeKube
from longshot import config
from longshot.api import conditions as cond
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import dispatch, workqueue
from longshot.core import admission, tasks
from longshot.core.admission import NodeView, PodUse, Resources
from longshot.core.effects import SetCondition
from longshot.runtime import capacity, pods

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, tzinfo=UTC)
GI = 1 << 30


def ctx_of(**settings: Any) -> ctxmod.Context:
    clock = lambda: NOW  # noqa: E731
    return ctxmod.Context(cache=cachemod.Cache(), kube=FakeKube(),
                          settings=config.Settings(metrics_port=0, **settings), queue=workqueue.WorkQueue(clock),
                          clock=clock)


def agent_pod(name: str, *, node: str = "", cpu: str = "250m", phase: str = "Running",
              conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": "1",
                         "creationTimestamp": "2026-11-27T23:59:00Z",
                         "labels": {"app.kubernetes.io/managed-by": "longshot-operator"},
                         "ownerReferences": [{"kind": "AgentTask", "name": name.rsplit("-a", 1)[0], "uid": "u",
                                              "controller": True}]},
            "spec": {"nodeName": node, "containers": [{"name": "agent", "resources": {
                "requests": {"cpu": cpu, "memory": "256Mi"}}}]},
            "status": {"phase": phase, **({"conditions": conditions} if conditions else {})}}


# --- what the cache keeps of a Pod ---------------------------------------------------------------------------------


def test_the_cache_keeps_a_pods_node_requests_and_when_it_became_unschedulable():
    v = cachemod.PodView.from_body(agent_pod("t-a1", node="n1"))
    assert v.node == "n1" and v.requests == Resources(250, 256 << 20) and v.unschedulable_since is None
    stuck = cachemod.PodView.from_body(agent_pod("t-a1", phase="Pending", conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "lastTransitionTime": "2026-11-27T23:59:30Z"}]))
    assert stuck.unschedulable_since == datetime(2026, 11, 27, 23, 59, 30, tzinfo=UTC)


def test_pod_requests_add_containers_and_take_the_largest_init_container():
    spec = {"containers": [{"resources": {"requests": {"cpu": "100m"}}}, {"resources": {"requests": {"cpu": "1"}}},
                           {"resources": {"requests": {"cpu": "not a quantity"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}]}
    assert admission.pod_requests(spec) == Resources(2000, GI)


# --- the room a plan counts -----------------------------------------------------------------------------------------


def test_off_counts_no_room():
    room, mode = dispatch.capacity(ctx_of())
    assert room is None and mode.mode == "off"


def test_off_with_a_tenants_limit_counts_that_limit_only():
    ctx = ctx_of(admission_tenants='{"ns": {"cpu": "300m"}}')
    ctx.cache.observe("Pod", "ADDED", agent_pod("a-a1"))
    room, _ = dispatch.capacity(ctx)
    assert room is not None and room.free is None
    assert not room.fits(Resources(100), "ns") and room.fits(Resources(100), "other")


def test_explicit_capacity_less_the_live_agent_pods():
    ctx = ctx_of(admission_capacity="cpu=1,memory=4Gi")
    ctx.cache.observe("Pod", "ADDED", agent_pod("a-a1"))
    ctx.cache.observe("Pod", "ADDED", agent_pod("b-a1", phase="Succeeded"))  # ended: holds nothing
    room, mode = dispatch.capacity(ctx)
    assert mode.mode == "explicit" and room is not None
    assert room.take(Resources(750), "ns") is not None and room.take(Resources(1), "ns") is None


def test_auto_before_the_nodes_are_read_admits_nothing_then_falls_back_when_they_cannot_be():
    ctx = ctx_of(admission_capacity="auto")
    room, mode = dispatch.capacity(ctx)
    assert room is not None and not room.fits(Resources(1), "ns") and mode.why
    ctx.cluster_error = "cannot list Nodes (403 Forbidden)"
    room, mode = dispatch.capacity(ctx)
    assert room is None and mode.mode == "fallback" and "403" in mode.why


def test_auto_without_a_matching_node_falls_back():
    ctx = ctx_of(admission_capacity="auto", agent_node_selector='{"pool": "agents"}')
    ctx.cluster = capacity.ClusterFacts(nodes=(NodeView("n1", Resources(1000, 4 * GI, 110)),))
    room, mode = dispatch.capacity(ctx)
    assert room is None and mode.mode == "fallback" and "node selector" in mode.why


def test_auto_counts_other_pods_from_the_list_and_agent_pods_from_the_cache():
    ctx = ctx_of(admission_capacity="auto")
    ctx.cluster = capacity.ClusterFacts(
        nodes=(NodeView("n1", Resources(1000, 4 * GI, 110)),),
        pods={("kube-system", "dns"): PodUse("n1", Resources(200, 0)),
              ("ns", "old-a1"): PodUse("n1", Resources(250, 0), "ns")})  # listed, since ended: the cache knows
    ctx.cache.observe("Pod", "ADDED", agent_pod("old-a1", node="n1", phase="Succeeded"))
    ctx.cache.observe("Pod", "ADDED", agent_pod("new-a1"))  # made since the list, not bound yet
    room, mode = dispatch.capacity(ctx)
    assert mode.mode == "auto" and room is not None and room.free is not None
    assert room.free["n1"].cpu == 1000 - 200 - 250


def test_the_nodes_room_is_worked_out_once_per_read_and_agents_are_taken_each_plan():
    ctx = ctx_of(admission_capacity="auto")
    ctx.cluster = capacity.ClusterFacts(nodes=(NodeView("n1", Resources(1000, 4 * GI, 110)),),
                                        pods={("kube-system", "dns"): PodUse("n1", Resources(200, 0))})
    readiness = dispatch.Readiness()
    room, _ = dispatch.capacity(ctx, readiness)
    assert room is not None and room.free is not None and room.free["n1"].cpu == 800
    memo = readiness.room
    assert memo is not None and memo[0] is ctx.cluster
    ctx.cache.observe("Pod", "ADDED", agent_pod("new-a1", node="n1"))  # an agent since: taken from the same room
    room, _ = dispatch.capacity(ctx, readiness)
    assert readiness.room is memo and room is not None and room.free is not None and room.free["n1"].cpu == 550
    ctx.cluster = capacity.ClusterFacts(nodes=ctx.cluster.nodes)  # a new read: worked out again
    dispatch.capacity(ctx, readiness)
    assert readiness.room is not memo


def test_quotas_read_with_the_cluster_limit_their_namespace_in_every_counting_mode():
    quotas = {"ns": Resources(300, admission.UNLIMITED, admission.UNLIMITED)}
    for mode in ("auto", "cpu=8,memory=16Gi"):
        ctx = ctx_of(admission_capacity=mode)
        ctx.cluster = capacity.ClusterFacts(nodes=(NodeView("n1", Resources(4000, 8 * GI, 110)),), quotas=quotas)
        room, _ = dispatch.capacity(ctx)
        assert room is not None and room.take(Resources(250), "ns") is not None
        assert room.take(Resources(250), "ns") is None and room.take(Resources(250), "other") is not None


def test_a_quota_as_the_api_returns_it():
    body = {"metadata": {"name": "q", "namespace": "team"},
            "spec": {"hard": {"requests.cpu": "2", "pods": "4"}},
            "status": {"hard": {"requests.cpu": "2", "pods": "4"}, "used": {"requests.cpu": "750m", "pods": "3"}}}
    q = capacity.quota_view(body)
    assert q.namespace == "team" and q.hard.cpu == 2000 and q.used == Resources(750, 0, 3) and not q.scoped
    assert capacity.quota_view({**body, "spec": {**body["spec"], "scopes": ["BestEffort"]}}).scoped
    fresh = capacity.quota_view({"metadata": body["metadata"], "spec": body["spec"]})  # no status yet: spec.hard
    assert fresh.hard.pods == 4 and fresh.used == Resources()


def test_a_tenants_tokens_in_the_last_hour_are_counted_from_its_tasks_attempts_at_most_every_few_seconds():
    from longshot.api import objects

    ctx = ctx_of(admission_tenants='{"ns": {"tokensPerHour": 1000}}')
    ended = (NOW - timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    old = (NOW - timedelta(hours=3)).isoformat().replace("+00:00", "Z")

    def agent_task(name: str, status: dict[str, Any], rv: str = "1") -> dict[str, Any]:
        return {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
                "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv,
                             "labels": {"longshot.dev/build": "b"}},
                "spec": {"buildRef": {"name": "b"}, "description": "d"}, "status": status}

    ctx.cache.observe("AgentTask", "ADDED", agent_task("t1", {"attempts": [
        {"number": 1, "pod": "t1-a1", "tokens": 400, "endTime": ended},
        {"number": 2, "pod": "t1-a2", "tokens": 9000, "endTime": old}]}))
    ctx.cache.observe("AgentTask", "ADDED", agent_task("t2", {"progress": {"attempt": 1, "tokens": 300}}))
    assert isinstance(ctx.cache.tasks[("ns", "t1")], objects.AgentTask)
    readiness = dispatch.Readiness()
    tenants = ctx.settings.tenants()
    assert dispatch.tenant_tokens(ctx, readiness, tenants, NOW) == {"ns": 700}
    ctx.cache.observe("AgentTask", "MODIFIED", agent_task("t2", {"progress": {"attempt": 1, "tokens": 900}}, "2"))
    assert dispatch.tenant_tokens(ctx, readiness, tenants, NOW + timedelta(seconds=1)) == {"ns": 700}  # not yet
    later = NOW + timedelta(seconds=dispatch.TOKEN_RECOUNT_SECONDS)
    assert dispatch.tenant_tokens(ctx, readiness, tenants, later) == {"ns": 1300}
    assert dispatch.tenant_tokens(ctx_of(), dispatch.Readiness(), {}, NOW) == {}  # no cap: nothing counted


def test_gates_and_fixers_are_urgent_in_the_schedulers_view():
    gate = _task({})
    gate.metadata.labels[cachemod.PURPOSE_LABEL] = "gate"
    assert dispatch._view(gate, "ns/b", tasks.PENDING, True).urgent
    assert not dispatch._view(_task({}), "ns/b", tasks.PENDING, True).urgent
    assert dispatch._view(_task({"role": "fixer"}), "ns/b", tasks.PENDING, True).urgent


def test_the_requests_of_a_tasks_next_pod_follow_the_pod_builder():
    ctx = ctx_of(default_cpu_request="300m")
    b = _build({"agent": {"resources": {"requests": {"memory": "1Gi"}}}})
    t = _task({"resources": {"requests": {"cpu": "2"}}})
    assert dispatch.requests_of(ctx, t, b) == Resources(2000, GI)
    assert dispatch.requests_of(ctx, _task({}), b) == Resources(300, GI)


def _build(spec: dict[str, Any]) -> Any:
    from longshot.api import objects
    body = {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
            "metadata": {"name": "b", "namespace": "ns"},
            "spec": {"request": "r", "repository": {"url": "https://git.example/r.git"},
                     "agent": {"backend": "scripted", **spec.get("agent", {})}}}
    return objects.parse(body, objects.BuildRequest)


def _task(spec: dict[str, Any]) -> Any:
    from longshot.api import objects
    body = {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask", "metadata": {"name": "t", "namespace": "ns"},
            "spec": {"buildRef": {"name": "b"}, "description": "d", **spec}}
    return objects.parse(body, objects.AgentTask)


# --- settings and the Pod ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "named"), [
    ("admission_capacity", "lots", "admission capacity"),
    ("admission_tenants", '{"a": {"weight": -1}}', "admission tenants['a'].weight"),
    ("agent_node_selector", "[]", "agent node selector"),
    ("agent_tolerations", '[{"operator": "In"}]', "agent tolerations[0].operator"),
])
def test_bad_admission_settings_fail_start_up_naming_the_setting(field, value, named):
    with pytest.raises(pydantic.ValidationError, match=named.replace("[", r"\[").replace("]", r"\]")):
        config.Settings(metrics_port=0, **{field: value})


def _pod(purpose: str | None, **settings: Any) -> dict[str, Any]:
    labels = {"longshot.dev/purpose": purpose} if purpose else {}
    task = {"metadata": {"name": "t", "namespace": "ns", "uid": "u", "labels": labels},
            "spec": {"buildRef": {"name": "b"}, "description": "d"}}
    build = {"metadata": {"name": "b", "namespace": "ns", "uid": "ub"}, "spec": {"agent": {}}}
    return pods.build_agent_pod(task, build, config.Settings(metrics_port=0, **settings), 1)


def test_agent_pods_get_the_node_selector_tolerations_and_priority_classes():
    plain = _pod(None)["spec"]
    assert "nodeSelector" not in plain and "tolerations" not in plain and "priorityClassName" not in plain
    kw = {"agent_node_selector": '{"pool": "agents"}',
          "agent_tolerations": '[{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}]',
          "agent_priority_class": "longshot-worker", "delivery_priority_class": "longshot-delivery"}
    worker = _pod(None, **kw)["spec"]
    assert worker["nodeSelector"] == {"pool": "agents"}
    assert worker["tolerations"] == [{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}]
    assert worker["priorityClassName"] == "longshot-worker"
    assert _pod("gate", **kw)["spec"]["priorityClassName"] == "longshot-delivery"
    assert _pod("final", agent_priority_class="w")["spec"]["priorityClassName"] == "w"


# --- the decider: Admitted, and withdrawal ---------------------------------------------------------------------------


def _state(phase: str, attempt: int = 0) -> tasks.TaskState:
    return tasks.TaskState(name="t", phase=phase, attempt=attempt)


def test_a_pending_task_says_it_waits_for_capacity_and_a_running_one_ignores_the_line():
    state, effects = tasks.decide(_state(tasks.PENDING), tasks.AdmissionChanged("WaitingForCapacity", "place 1"),
                                  now=NOW, rand=lambda: 0.5)
    assert state.phase == tasks.PENDING
    assert SetCondition(cond.ADMITTED, cond.FALSE, "WaitingForCapacity", "place 1") in effects
    _, effects = tasks.decide(_state(tasks.RUNNING, 1), tasks.AdmissionChanged("WaitingForCapacity", "x"), now=NOW,
                              rand=lambda: 0.5)
    assert effects == []
    _, effects = tasks.decide(_state(tasks.PENDING), tasks.Admitted(), now=NOW, rand=lambda: 0.5)
    assert any(isinstance(e, SetCondition) and e.type == cond.ADMITTED and e.status == cond.TRUE for e in effects)


def test_an_unschedulable_pod_is_withdrawn_and_its_attempt_does_not_count():
    before = _state(tasks.RUNNING, 2)
    state, effects = tasks.decide(before, tasks.Unschedulable(2, 31.0), now=NOW, rand=lambda: 0.5)
    assert state.phase == tasks.PENDING and state.retry_base == before.retry_base + 1
    assert tasks.DeletePod("t-a2") in effects
    assert any(isinstance(e, tasks.RecordAttempt) and e.failure_class is None and e.end_time == NOW for e in effects)
    assert any(isinstance(e, SetCondition) and e.type == cond.ADMITTED and e.reason == "Withdrawn" for e in effects)
    # a stale report of an earlier attempt changes nothing
    assert tasks.decide(before, tasks.Unschedulable(1, 99.0), now=NOW, rand=lambda: 0.5) == (before, [])


def test_the_line_asks_each_task_for_its_condition_at_most_every_few_seconds(monkeypatch):
    from longshot.controllers import dispatcher as dsp
    from longshot.core import scheduler

    ctx = ctx_of()
    asked: list[Any] = []
    ctx.queue = type("Q", (), {"add_all": lambda self, refs: asked.extend(refs)})()
    now = [NOW]
    d = dsp.Dispatcher(ctx, None, None, workqueue.WorkQueue(lambda: now[0]), clock=lambda: now[0])  # type: ignore[arg-type]

    def plan(position: int) -> dispatch.Plan:
        view = scheduler.TaskView(name="t", build="ns/b")
        return dispatch.Plan((), frozenset(), waiting=(scheduler.Waiting(view, position, "ns", 1.0, 1, 1.0),),
                             capacity=dispatch.Capacity("auto"))

    d._line(plan(3))
    assert asked == [("AgentTask", "ns", "t")] and ctx.admission_line[("ns", "t")][0] == "WaitingForCapacity"
    d._line(plan(2))  # the line moved: not written again yet
    assert len(asked) == 1
    now[0] = NOW + timedelta(seconds=dsp.LINE_WRITE_SECONDS)
    d._line(plan(1))
    assert len(asked) == 2 and "place 1 in line" in ctx.admission_line[("ns", "t")][1]
    d._line(dispatch.Plan((), frozenset(), capacity=dispatch.Capacity("auto")))  # left the line: cleared
    assert len(asked) == 3 and ctx.admission_line == {}


def test_a_tenant_held_at_its_own_limits_says_why_on_its_next_task():
    from longshot.controllers import dispatcher as dsp
    from longshot.core import scheduler

    ctx = ctx_of()
    asked: list[Any] = []
    ctx.queue = type("Q", (), {"add_all": lambda self, refs: asked.extend(refs)})()
    d = dsp.Dispatcher(ctx, None, None, workqueue.WorkQueue(lambda: NOW), clock=lambda: NOW)  # type: ignore[arg-type]
    d._line(dispatch.Plan((), frozenset(), capacity=dispatch.Capacity("auto"),
                          tenant_held=((("ns", "t"), "TokensPerHour", "namespace ns used 5 tokens"),)))
    assert ctx.admission_line == {("ns", "t"): ("TokensPerHour", "namespace ns used 5 tokens")}
    assert asked == [("AgentTask", "ns", "t")]
    _, effects = tasks.decide(_state(tasks.PENDING), tasks.AdmissionChanged("TokensPerHour", "used 5"), now=NOW,
                              rand=lambda: 0.5)
    assert SetCondition(cond.ADMITTED, cond.FALSE, "TokensPerHour", "used 5") in effects
    assert {"TenantLimit", "TokensPerHour"} <= set(cond.REASONS) and "TenantLimit" in cond.HELD_REASONS
    assert scheduler.TenantHeld  # the decider's type the plan carries


async def test_the_task_controller_withdraws_a_pod_unschedulable_past_the_grace_without_a_failure():
    import copy

    import driving
    from fake_kube import Clock, FakeKube, build
    from longshot.controllers import manager as managermod

    fake, clock = FakeKube(), Clock()
    m = managermod.Manager(fake, config.Settings(namespace="ops", metrics_port=0, admission_unschedulable_seconds=30,
                                                 admission_capacity="cpu=100,memory=100Gi"),
                           clock=clock, rand=lambda: 0.5, monotonic=lambda: 0.0)
    m.ctx.preflight = lambda k, b: None

    async def sync() -> None:
        for _ in range(30):
            for (kind, _, _), obj in list(fake.objects.items()):
                m.observe(kind, "MODIFIED", obj)
            for pod in list(fake.pods.values()):
                m.observe("Pod", "MODIFIED", pod)
            await driving.step(m)
            await driving.settle(m)
            if not m.queue.pending():
                break

    fake.create(build())
    await sync()
    pod = fake.pods[("ns", "b-planner-a1")]
    pod["status"] = {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "lastTransitionTime": clock.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
         "message": "0/1 nodes are available: 1 Insufficient cpu."}]}
    fake._stamp(pod)
    await sync()
    assert ("ns", "b-planner-a1") in fake.pods  # within the grace: it waits
    clock.now += timedelta(seconds=31)
    gone = copy.deepcopy(pod)
    await sync()
    assert ("ns", "b-planner-a1") not in fake.pods  # withdrawn
    m.observe("Pod", "DELETED", gone)
    await sync()
    st = fake.objects[("AgentTask", "ns", "b-planner")]["status"]
    first = st["attempts"][0]
    assert "withdrawn" in first["exitReason"] and not first.get("failureClass")
    assert st["retryBase"] == 1
    assert ("ns", "b-planner-a2") in fake.pods  # back in line, and admitted again (nothing else waits)


def test_a_warm_sandbox_holds_no_room_its_builds_tasks_would_claim_it_with():
    """docs/warm-pools.md: a warm Pod's room is its build's next attempts'; once claimed it holds it as any agent."""
    ctx = ctx_of(admission_capacity="cpu=1,memory=4Gi")
    warm = agent_pod("b-warm-1")
    warm["metadata"]["labels"] = {**warm["metadata"]["labels"], "longshot.dev/warm-template": "abc"}
    warm["metadata"]["ownerReferences"] = [{"kind": "BuildRequest", "name": "b", "uid": "b", "controller": True}]
    ctx.cache.observe("Pod", "ADDED", warm)
    room, _ = dispatch.capacity(ctx)
    assert room is not None and room.take(Resources(1000), "ns") is not None  # all of it: the sandbox holds none
    claimed = agent_pod("b-warm-1")
    claimed["metadata"]["labels"] = {**claimed["metadata"]["labels"], "longshot.dev/warm-template": "abc",
                                     "longshot.dev/warm-claim": "t-a1"}
    claimed["metadata"]["resourceVersion"] = "2"
    ctx.cache.observe("Pod", "MODIFIED", claimed)
    room, _ = dispatch.capacity(ctx)
    assert room is not None and room.take(Resources(1000), "ns") is None  # claimed: its attempt's room
