"""The dispatch plan (``controllers.dispatch.plan``) gives only the builds that can start something a view of every
candidate. Whatever the world, it chooses exactly what the scheduler chooses when every candidate has a view, and
holds back, and says the same of the builds' budgets, as that."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_kube import FakeKube
from longshot import config
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import dispatch, workqueue
from longshot.core import scheduler, tasks
from property_budget import examples

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, tzinfo=UTC)
SCOPES = ((), ("src/**",), ("src/a",), ("docs",), ("src/a", "docs"))


def every_candidate(ctx: ctxmod.Context) -> tuple[tuple[cachemod.Key, ...], frozenset[str], set[cachemod.Key]]:
    """The plan as it was made before: a view of every candidate of every build, for the scheduler."""
    candidates: list[scheduler.TaskView] = []
    running: list[scheduler.TaskView] = []
    builds: dict[str, scheduler.BuildView] = {}
    for t in ctx.cache.tasks.values():
        phase = t.status.phase or tasks.PENDING
        if phase not in (tasks.PENDING, tasks.RUNNING) or (t.spec.cancel and phase == tasks.PENDING):
            continue
        build = ctx.cache.build_of(t)
        if build is None or ctx.fanout_of(t, build) is not None:
            continue
        bkey = f"{build.namespace}/{build.name}"
        if phase == tasks.PENDING and dispatch._next_pod_exists(ctx, t, t.key):
            phase = tasks.RUNNING
        elif dispatch.slot_freed(ctx, t, build):
            continue
        if phase == tasks.RUNNING:
            running.append(dispatch._view(t, bkey, phase, True))
            continue
        if not ctx.owns_build(build) or t.metadata.deleting or not t.status.conditions:
            continue
        builds.setdefault(bkey, dispatch._build_view(ctx, build))
        candidates.append(dispatch._view(t, bkey, phase, ctx.readiness(t, build)[0] == "ready"))
    if not candidates:
        return (), frozenset(), set()
    selection = scheduler.select(candidates, running, builds=builds, global_limit=ctx.settings.max_workers,
                                 killswitch=ctx.killswitch)
    admit = tuple((v.build.split("/", 1)[0], v.name) for v in selection.start)
    held = {(c.build.split("/", 1)[0], c.name) for c in candidates if c.dependencies_ready} - set(admit)
    return admit, selection.budget_blocked, held


@st.composite
def worlds(draw: Any) -> dict[str, Any]:
    builds = []
    for b in range(draw(st.integers(1, 3))):
        builds.append({
            "name": f"b{b}", "workers": draw(st.integers(1, 4)), "suspend": draw(st.integers(0, 4)) == 0,
            "budget": draw(st.sampled_from([None, 5, 1000])), "owned": draw(st.integers(0, 3)) != 0,
            "misconfigured": draw(st.integers(0, 5)) == 0,
            "tasks": [{
                "phase": draw(st.sampled_from([None, "Pending", "Pending", "Running", "Succeeded", "Backoff"])),
                "priority": draw(st.integers(1, 10)), "age": draw(st.integers(0, 5)),
                "scope": draw(st.sampled_from(SCOPES)), "cancel": draw(st.integers(0, 6)) == 0,
                "deleting": draw(st.integers(0, 8)) == 0, "conditions": draw(st.integers(0, 8)) != 0,
                "depends": draw(st.lists(st.integers(0, 7), max_size=2) if draw(st.integers(0, 3)) == 0
                                else st.just([])),
                "tokens": draw(st.sampled_from([0, 3, 3])),
                "pod": draw(st.sampled_from(["none", "none", "running", "ended", "next", "next-deleting"])),
            } for _ in range(draw(st.integers(0, 8)))],
        })
    return {"builds": builds, "limit": draw(st.integers(1, 8)), "killswitch": draw(st.integers(0, 9)) == 0}


def owner(task: str) -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask", "name": task, "uid": f"uid-{task}",
            "controller": True}


def context_of(world: dict[str, Any]) -> ctxmod.Context:
    clock = lambda: NOW  # noqa: E731
    owned: set[str] = set()
    ctx = ctxmod.Context(cache=cachemod.Cache(), kube=FakeKube(),
                         settings=config.Settings(metrics_port=0, max_workers=world["limit"]),
                         queue=workqueue.WorkQueue(clock), clock=clock, owns=lambda shard: shard in owned,
                         killswitch=world["killswitch"])
    for b in world["builds"]:
        spec: dict[str, Any] = {"request": "r", "repository": {"url": f"https://git.example/{b['name']}.git"},
                                "workers": {"max": b["workers"]}, "suspend": b["suspend"]}
        if b["budget"] is not None:
            spec["budget"] = {"maxTokens": b["budget"]}
        status = {"conditions": [{"type": "Stalled", "status": "True", "reason": "Configuration", "message": "x",
                                  "lastTransitionTime": "2025-01-01T00:00:00Z"}]} if b["misconfigured"] else {}
        ctx.cache.observe("BuildRequest", "ADDED", {
            "apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
            "metadata": {"name": b["name"], "namespace": "ns", "uid": f"uid-{b['name']}", "resourceVersion": "1",
                         "generation": 1}, "spec": spec,
            "status": {**status, "observedGeneration": 1}})  # the operator has decided on this spec
        if b["owned"]:
            owned.add(ctx.cache.shard_of(ctx.cache.builds[("ns", b["name"])]))
        names = [f"{b['name']}-t{i}" for i in range(len(b["tasks"]))]
        for i, t in enumerate(b["tasks"]):
            attempts = 1 if t["phase"] in ("Running", "Succeeded", "Backoff") else 0
            status = {"phase": t["phase"]} if t["phase"] else {}
            if t["conditions"]:
                status["conditions"] = [{"type": "Ready", "status": "False", "reason": "Pending", "message": "",
                                         "lastTransitionTime": "2025-01-01T00:00:00Z"}]
            if attempts:
                status["attempts"] = [{"number": 1, "pod": f"{names[i]}-a1", "tokens": t["tokens"]}]
            meta: dict[str, Any] = {
                "name": names[i], "namespace": "ns", "uid": f"uid-{names[i]}", "resourceVersion": "1",
                "generation": 1, "labels": {"longshot.dev/build": b["name"]},
                "creationTimestamp": (NOW - timedelta(minutes=t["age"])).isoformat().replace("+00:00", "Z")}
            if t["deleting"]:
                meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
            ctx.cache.observe("AgentTask", "ADDED", {
                "apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask", "metadata": meta,
                "spec": {"buildRef": {"name": b["name"]}, "description": "d", "role": "worker",
                         "priority": t["priority"], "scope": list(t["scope"]), "cancel": t["cancel"],
                         "dependsOn": sorted({names[d] for d in t["depends"] if d < i})},
                "status": status})
            pod = {"running": (attempts, "Running"), "ended": (attempts, "Succeeded"),
                   "next": (attempts + 1, "Pending"), "next-deleting": (attempts + 1, "Pending")}.get(t["pod"])
            if pod is not None and pod[0] >= 1:
                pmeta: dict[str, Any] = {"name": f"{names[i]}-a{pod[0]}", "namespace": "ns", "resourceVersion": "1",
                                         "ownerReferences": [owner(names[i])]}
                if t["pod"] == "next-deleting":
                    pmeta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
                ctx.cache.observe("Pod", "ADDED", {"metadata": pmeta, "status": {"phase": pod[1]}})
    return ctx


@settings(max_examples=examples(600), deadline=None)
@given(worlds())
def test_the_plan_chooses_and_holds_what_a_view_of_every_candidate_gives(world):
    ctx, oracle = context_of(world), context_of(world)
    readiness = dispatch.Readiness()
    chosen = dispatch.plan(ctx, readiness)
    admit, budget_blocked, held = every_candidate(oracle)
    assert chosen.admit == admit
    assert chosen.budget_blocked == budget_blocked
    assert readiness.held == held
    assert set(readiness.ready_since) == held | set(admit)


def test_a_full_build_of_many_tasks_gets_no_view_of_its_candidates_and_a_free_slot_gets_them_all(monkeypatch):
    """What makes a 10,000-task plan cheap while the build's slots are full: its candidates are not viewed."""
    world = {"limit": 100, "killswitch": False, "builds": [{
        "name": "b0", "workers": 3, "suspend": False, "budget": None, "owned": True, "misconfigured": False,
        "tasks": [{"phase": "Running" if i < 3 else "Pending", "priority": 5, "age": 0, "scope": (),
                   "cancel": False, "deleting": False, "conditions": True, "depends": [], "tokens": 0,
                   "pod": "running" if i < 3 else "none"} for i in range(50)]}]}
    ctx = context_of(world)
    viewed: defaultdict[str, int] = defaultdict(int)
    view = dispatch._view

    def counting(t: Any, build: str, phase: str, ready: bool, *requests: Any) -> scheduler.TaskView:
        viewed[phase] += 1
        return view(t, build, phase, ready, *requests)

    monkeypatch.setattr(dispatch, "_view", counting)
    readiness = dispatch.Readiness()
    assert dispatch.plan(ctx, readiness).admit == () and len(readiness.held) == 47
    assert viewed == {tasks.RUNNING: 3, tasks.PENDING: 1}  # one candidate says why the build starts nothing
    viewed.clear()
    ctx.cache.observe("Pod", "MODIFIED", {"metadata": {"name": "b0-t0-a1", "namespace": "ns", "resourceVersion": "2",
                                                       "ownerReferences": [owner("b0-t0")]},
                                          "status": {"phase": "Succeeded"}})
    first = min(f"b0-t{i}" for i in range(3, 50))  # of equal priority and age, the first by name
    assert dispatch.plan(ctx).admit == (("ns", first),)  # a slot came free
    assert viewed == {tasks.RUNNING: 2, tasks.PENDING: 47}


def test_a_build_whose_current_spec_the_operator_has_not_decided_on_starts_nothing() -> None:
    """Dispatch runs beside the build's reconcile: a task of a build whose spec is new or edited (its
    observedGeneration behind its generation) waits for that reconcile, which may stop it (a spec that fails its
    configuration check stops the build before any Pod)."""
    world = {"limit": 10, "killswitch": False, "builds": [{
        "name": "b0", "workers": 3, "suspend": False, "budget": None, "owned": True, "misconfigured": False,
        "tasks": [{"phase": "Pending", "priority": 5, "age": 0, "scope": (), "cancel": False, "deleting": False,
                   "conditions": True, "depends": [], "tokens": 0, "pod": "none"} for _ in range(2)]}]}
    ctx = context_of(world)
    assert len(dispatch.plan(ctx).admit) == 2
    build = ctx.cache.builds[("ns", "b0")]
    body = build.model_dump(by_alias=True, mode="json", exclude_none=True)
    body["metadata"].update(generation=2, resourceVersion="2")  # an edit the operator has not reconciled yet
    ctx.cache.observe("BuildRequest", "MODIFIED", body)
    assert not dispatch.observed(ctx.cache.builds[("ns", "b0")]) and dispatch.plan(ctx).admit == ()
    body["metadata"]["resourceVersion"] = "3"
    body["status"]["observedGeneration"] = 2  # its reconcile decided on it
    ctx.cache.observe("BuildRequest", "MODIFIED", body)
    assert len(dispatch.plan(ctx).admit) == 2


def _task(name: str, labels: dict[str, str] | None = None, status: dict[str, Any] | None = None) -> Any:
    from longshot.api import objects

    return objects.AgentTask.model_validate({
        "apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": name, "namespace": "ns", "labels": {"longshot.dev/build": "b", **(labels or {})}},
        "spec": {"buildRef": {"name": "b"}, "description": "d", "scope": ["src/**"]}, "status": status or {}})


def test_a_delegating_task_and_its_children_share_a_scheduler_group_so_their_scopes_never_block_each_other():
    parent = _task("b-p", status={"phase": "Running", "delegation": {"requests": [{"name": "a", "prompt": "x"}]}})
    child = _task("b-p-a", labels={"longshot.dev/parent": "b-p"})
    other = _task("b-q")
    assert dispatch._group(parent) == dispatch._group(child) == "delegation:b-p"
    assert dispatch._group(other) == ""
    running = [dispatch._view(parent, "ns/b", tasks.RUNNING, True)]
    chosen = scheduler.select([dispatch._view(child, "ns/b", tasks.PENDING, True),
                               dispatch._view(other, "ns/b", tasks.PENDING, True)], running,
                              builds={"ns/b": scheduler.BuildView(name="ns/b", max_workers=4)}, global_limit=10)
    assert [v.name for v in chosen.start] == ["b-p-a"]  # the other task's scope overlaps the running parent's


def test_a_build_whose_plan_is_still_being_created_starts_nothing_until_the_whole_plan_is_in() -> None:
    """A plan's tasks are created concurrently, a few at a time, while dispatch runs beside: a plan made after the
    first task was created would start it before higher priorities in the same plan exist (with one worker, a
    priority-2 task ran before the priority-9 one). The executor marks the build as ingesting for the batch."""
    world = {"limit": 10, "killswitch": False, "builds": [{
        "name": "b0", "workers": 1, "suspend": False, "budget": None, "owned": True, "misconfigured": False,
        "tasks": [{"phase": "Pending", "priority": p, "age": 0, "scope": (), "cancel": False, "deleting": False,
                   "conditions": True, "depends": [], "tokens": 0, "pod": "none"} for p in (2, 9)]}]}
    ctx = context_of(world)
    ctx.cache.ingest_begin([("ns", "b0")])
    assert dispatch.plan(ctx).admit == ()
    version, freeing = ctx.cache.version, ctx.cache.freeing
    ctx.cache.ingest_end([("ns", "b0")])
    assert not ctx.cache.ingesting
    assert ctx.cache.version > version and ctx.cache.freeing > freeing  # the dispatcher's memos plan again
    assert dispatch.plan(ctx).admit == (("ns", "b0-t1"),)  # the priority-9 task, now that both are in


def test_slots_of_ended_tasks_not_recorded_yet_are_reused_only_up_to_a_bound(monkeypatch):
    """Backpressure (bench-fleet: 6,400 ended tasks waited to be taken in while dispatch kept starting agents): a
    plan gives new tasks the slots of at most ``MAX_UNRECORDED_ENDS`` tasks whose Pod ended and whose end is not
    recorded; the others hold their slots until it is."""
    task = {"phase": "Running", "priority": 5, "age": 1, "scope": (), "cancel": False, "deleting": False,
            "conditions": True, "depends": [], "tokens": 0, "pod": "ended"}
    ready = {**task, "phase": "Pending", "pod": "none", "age": 0}
    world = {"builds": [{"name": "b0", "workers": 4, "suspend": False, "budget": None, "owned": True,
                         "misconfigured": False, "tasks": [task] * 4 + [ready] * 4}], "limit": 4, "killswitch": False}
    assert len(dispatch.plan(context_of(world)).admit) == 4  # every ended task's slot, under the bound
    monkeypatch.setattr(dispatch, "MAX_UNRECORDED_ENDS", 1)
    assert len(dispatch.plan(context_of(world)).admit) == 1  # one reused; three wait for their ends' records


def test_slots_of_ended_tasks_are_shared_between_builds_not_taken_by_the_first(monkeypatch):
    """A build whose agents end in bulk does not take every reusable slot: with a bound of 4, a build with 6 ended
    tasks and one with 2 each reuse 2 (max-min fair), where the first build planned used to take all 4."""
    task = {"phase": "Running", "priority": 5, "age": 1, "scope": (), "cancel": False, "deleting": False,
            "conditions": True, "depends": [], "tokens": 0, "pod": "ended"}
    ready = {**task, "phase": "Pending", "pod": "none", "age": 0}
    bulk = {"name": "b0", "workers": 6, "suspend": False, "budget": None, "owned": True, "misconfigured": False,
            "tasks": [task] * 6 + [ready] * 6}
    few = {**bulk, "name": "b1", "workers": 2, "tasks": [task] * 2 + [ready] * 2}
    world = {"builds": [bulk, few], "limit": 8, "killswitch": False}
    monkeypatch.setattr(dispatch, "MAX_UNRECORDED_ENDS", 4)
    admitted = dispatch.plan(context_of(world)).admit
    by_build: dict[str, int] = defaultdict(int)
    for _, name in admitted:
        by_build[name.split("-", 1)[0]] += 1
    assert by_build == {"b0": 2, "b1": 2}, admitted


def test_plans_made_one_after_another_read_each_task_as_it_is_now_not_as_an_earlier_plan_viewed_it():
    """The dispatcher's ``Readiness`` keeps each task's view between plans; a task that changed (its priority, its
    phase, its Pod) is viewed anew, and every plan of a changing world chooses what a view of every candidate gives."""
    base = {"priority": 5, "scope": (), "cancel": False, "deleting": False, "conditions": True, "depends": [],
            "tokens": 0}
    world = {"limit": 100, "killswitch": False, "builds": [{
        "name": "b0", "workers": 3, "suspend": False, "budget": None, "owned": True, "misconfigured": False,
        "tasks": [{**base, "phase": "Running", "age": 50, "pod": "running"} for _ in range(2)]
        + [{**base, "phase": "Pending", "age": 20 - i, "pod": "none"} for i in range(20)]}]}
    ctx = context_of(world)
    readiness = dispatch.Readiness()
    assert dispatch.plan(ctx, readiness).admit == (("ns", "b0-t2"),)  # the oldest pending one
    late = ctx.cache.tasks[("ns", "b0-t21")]  # the youngest, raised above the others
    body = late.model_dump(by_alias=True, mode="json", exclude_none=True)
    body["metadata"]["resourceVersion"] = "7"
    body["spec"]["priority"] = 9
    ctx.cache.observe("AgentTask", "MODIFIED", body)
    assert dispatch.plan(ctx, readiness).admit == (("ns", "b0-t21"),) == every_candidate(ctx)[0]
    ctx.cache.observe("Pod", "MODIFIED", {"metadata": {"name": "b0-t0-a1", "namespace": "ns", "resourceVersion": "2",
                                                       "ownerReferences": [owner("b0-t0")]},
                                          "status": {"phase": "Succeeded"}})  # a slot came free: two start
    assert dispatch.plan(ctx, readiness).admit == (("ns", "b0-t21"), ("ns", "b0-t2")) == every_candidate(ctx)[0]


def test_a_tasks_requests_are_parsed_once_and_again_when_the_task_its_build_or_the_defaults_change(monkeypatch):
    """``Readiness.requests`` keeps each ready task's Pod requests between plans (a plan of a large build would
    parse every pending task's amounts otherwise), and works them out again from what changed."""
    base = {"priority": 5, "scope": (), "cancel": False, "deleting": False, "conditions": True, "depends": [],
            "tokens": 0, "phase": "Pending", "age": 1, "pod": "none"}
    world = {"limit": 100, "killswitch": False, "builds": [{
        "name": "b0", "workers": 1, "suspend": False, "budget": None, "owned": True, "misconfigured": False,
        "tasks": [dict(base) for _ in range(3)]}]}
    ctx = context_of(world)
    parsed: list[str] = []
    real = dispatch.requests_of

    def counting(c: Any, t: Any, b: Any) -> Any:
        parsed.append(t.name)
        return real(c, t, b)

    monkeypatch.setattr(dispatch, "requests_of", counting)
    readiness = dispatch.Readiness()
    dispatch.plan(ctx, readiness)
    assert sorted(parsed) == ["b0-t0", "b0-t1", "b0-t2"]
    parsed.clear()
    dispatch.plan(ctx, readiness)
    assert parsed == []  # nothing changed: nothing parsed again
    t1 = ctx.cache.tasks[("ns", "b0-t1")].model_dump(by_alias=True, mode="json", exclude_none=True)
    t1["metadata"]["resourceVersion"] = "5"
    t1["spec"]["resources"] = {"requests": {"cpu": "2", "memory": "1Gi"}}
    ctx.cache.observe("AgentTask", "MODIFIED", t1)
    dispatch.plan(ctx, readiness)
    assert parsed == ["b0-t1"]
    assert readiness.requested[("ns", "b0-t1")][3] == dispatch.admission.Resources(2000, 2**30)
    parsed.clear()
    ctx.settings = ctx.settings.model_copy(update={"default_cpu_request": "500m"})
    dispatch.plan(ctx, readiness)
    assert sorted(parsed) == ["b0-t0", "b0-t1", "b0-t2"]  # the operator's defaults changed
    assert readiness.requested[("ns", "b0-t0")][3].cpu == 500
    parsed.clear()
    build = ctx.cache.builds[("ns", "b0")].model_dump(by_alias=True, mode="json", exclude_none=True)
    build["metadata"]["resourceVersion"] = "9"
    ctx.cache.observe("BuildRequest", "MODIFIED", build)
    dispatch.plan(ctx, readiness)
    assert sorted(parsed) == ["b0-t0", "b0-t1", "b0-t2"]  # the build changed
