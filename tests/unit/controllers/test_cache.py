"""The shell's cache: a watch event echoing our own write concerns nothing, derived views follow our own writes,
equal parts of many objects are held once; and what retention reads from it."""

from __future__ import annotations

import copy
import gc
import json
import pickle
import random
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from fake_kube import FakeKube
from longshot import config
from longshot.api import objects
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.controllers import retention as retentionc
from longshot.controllers import workqueue

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def build() -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
            "metadata": {"name": "b", "namespace": "ns", "uid": "uid-b", "resourceVersion": "1", "generation": 1},
            "spec": {"request": "r", "repository": {"url": "https://git.example/r.git"}}}


def task(name: str, rv: str, phase: str | None = None, depends_on: tuple[str, ...] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": rv, "generation": 1,
                     "labels": {"longshot.dev/build": "b"}},
        "spec": {"buildRef": {"name": "b"}, "description": f"do {name}", "role": "reviewer",
                 "dependsOn": list(depends_on)}}
    if phase:
        body["status"] = {"phase": phase, "conditions": [
            {"type": "Ready", "status": "False", "reason": "Pending", "message": "", "lastTransitionTime":
             "2025-01-01T00:00:00Z"}]}
    return body


def context() -> ctxmod.Context:
    clock = lambda: NOW  # noqa: E731
    return ctxmod.Context(cache=cachemod.Cache(), kube=FakeKube(), settings=config.Settings(metrics_port=0),
                          queue=workqueue.WorkQueue(clock), clock=clock)


def test_the_watch_event_of_our_own_write_concerns_nothing_and_a_newer_version_does():
    c = cachemod.Cache()
    c.observe("BuildRequest", "ADDED", build())
    assert c.observe("AgentTask", "ADDED", task("a", "5"))
    assert c.written("AgentTask", task("a", "6", "Pending"), based_on="5")
    assert c.observe("AgentTask", "MODIFIED", task("a", "6", "Pending")) == []  # the echo of our write
    assert c.observe("AgentTask", "MODIFIED", task("a", "5")) == []  # older than what we wrote
    assert c.tasks[("ns", "a")].status.phase == "Pending"
    refs = c.observe("AgentTask", "MODIFIED", task("a", "7", "Running"))
    assert ("AgentTask", "ns", "a") in refs and c.tasks[("ns", "a")].status.phase == "Running"


def test_derived_views_of_a_build_follow_our_own_writes_without_a_watch_event():
    ctx = context()
    ctx.cache.observe("BuildRequest", "ADDED", build())
    ctx.cache.observe("AgentTask", "ADDED", task("a", "2", "Running"))
    ctx.cache.observe("AgentTask", "ADDED", task("c", "3", "Pending", depends_on=("a",)))
    b = ctx.cache.builds[("ns", "b")]
    c = ctx.cache.tasks[("ns", "c")]
    assert ctx.readiness(c, b)[0] == "waiting"
    ctx.cache.written("AgentTask", task("a", "4", "Succeeded"), based_on="2")  # our status write; no event yet
    assert ctx.readiness(c, b)[0] == "ready"


def test_a_build_s_usage_reads_only_the_tasks_that_changed_and_follows_their_metering(monkeypatch):
    """The build's views are recomputed on every change of any of its tasks (the gateway's metering of one running
    task among 100); each task's usage is read again only when its object changed."""
    ctx = context()
    ctx.cache.observe("BuildRequest", "ADDED", build())
    for name, rv in (("a", "2"), ("c", "3")):
        body = task(name, rv, "Running")
        body["status"]["attempts"] = [{"number": 1, "pod": f"{name}-a1", "tokens": 10, "cost": 0.5}]
        ctx.cache.observe("AgentTask", "ADDED", body)
    b = ctx.cache.builds[("ns", "b")]
    assert ctx.usage(b) == (20, 1.0)
    read: list[int] = []
    real = ctxmod.usage.task_usage
    monkeypatch.setattr(ctxmod.usage, "task_usage", lambda t: read.append(1) or real(t))
    metered = task("a", "4", "Running")
    metered["status"]["attempts"] = [{"number": 1, "pod": "a-a1", "tokens": 10, "cost": 0.5}]
    metered["status"]["progress"] = {"attempt": 2, "tokens": 7, "cost": 0.25}
    ctx.cache.observe("AgentTask", "MODIFIED", metered)
    assert ctx.usage(b) == (27, 1.25)
    assert len(read) == 1  # "a" read again, "c" not
    ctx.forget(("ns", "b"))
    assert ctx.usage(b) == (27, 1.25) and len(read) == 3  # forgotten: both read again


def pending(i: int) -> dict[str, Any]:
    """A pending task as the API returns it (every string its own object, as JSON decoding makes them)."""
    body = task(f"t{i:05d}", str(100 + i))
    body["metadata"]["ownerReferences"] = [{"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
                                            "name": "b", "uid": "uid-b", "controller": True}]
    body["metadata"]["annotations"] = {"longshot.dev/plan-name": f"t{i}"}
    body["metadata"]["creationTimestamp"] = "2025-01-01T00:00:00Z"
    body["spec"]["scope"] = [f"src/t{i:05d}/**"]
    body["status"] = {"phase": "Pending", "observedGeneration": 1, "conditions": [
        {"type": t, "status": s, "reason": "Pending", "message": "not run yet", "observedGeneration": 1,
         "lastTransitionTime": "2025-01-01T00:00:00Z"}
        for t, s in (("Succeeded", "Unknown"), ("Running", "False"), ("Ready", "False"), ("Reconciling", "True"))]}
    return json.loads(json.dumps(body))


def cache_of_pending(n: int) -> cachemod.Cache:
    """A cache that saw the build and ``n`` pending tasks ``t00000``...: equal parts, their own names."""
    c = cachemod.Cache()
    c.observe("BuildRequest", "ADDED", build())
    for i in range(n):
        c.observe("AgentTask", "ADDED", pending(i))
    return c


def test_equal_parts_of_many_tasks_are_held_once_and_read_the_same():
    c = cache_of_pending(2000)
    a, z = c.tasks[("ns", "t00000")], c.tasks[("ns", "t01999")]
    assert a.status.conditions[0] is z.status.conditions[0]
    assert a.metadata.owner_references[0] is z.metadata.owner_references[0]
    assert a.spec.build_ref is z.spec.build_ref
    for i in (0, 777, 1999):  # what the shell reads is what the API said
        assert c.tasks[("ns", f"t{i:05d}")] == objects.parse(pending(i), objects.AgentTask)
        assert c.tasks[("ns", f"t{i:05d}")].model_dump() == objects.parse(pending(i), objects.AgentTask).model_dump()
    with pytest.raises(AttributeError):
        a.status.conditions[0].message = "changed"  # read-only: never changes the 1,999 others


def test_equal_maps_lists_and_strings_of_many_tasks_are_held_once_read_only_and_read_the_same():
    c = cache_of_pending(300)
    a, z = c.tasks[("ns", "t00000")], c.tasks[("ns", "t00299")]
    assert a.metadata.labels is z.metadata.labels  # equal labels: one map
    assert a.metadata.annotations is not z.metadata.annotations  # different plan names: their own
    assert a.status.conditions is z.status.conditions  # a list of shared parts: one list
    assert a.metadata.owner_references is z.metadata.owner_references
    assert a.spec.depends_on is z.spec.depends_on is cachemod.EMPTY
    assert a.spec.scope is not z.spec.scope  # a list of their own strings: their own
    assert a.metadata.namespace is z.metadata.namespace and a.status.phase is z.status.phase
    assert a.metadata.creation_timestamp is z.metadata.creation_timestamp
    changes: list[Callable[[], object]] = [
        lambda: a.metadata.labels.update({"x": "y"}), lambda: a.metadata.labels.__setitem__("x", "y"),
        lambda: a.metadata.labels.pop("longshot.dev/build"), lambda: a.spec.depends_on.append("x"),
        lambda: a.status.conditions.pop(), lambda: a.status.conditions.sort(key=id)]
    for change in changes:
        with pytest.raises(TypeError, match="read-only"):
            change()
    assert z.metadata.labels == {"longshot.dev/build": "b"} and len(z.status.conditions) == 4
    for i in (0, 150, 299):  # what the shell reads, copies, dumps and pickles is what the API said
        held, parsed = c.tasks[("ns", f"t{i:05d}")], objects.parse(pending(i), objects.AgentTask)
        assert held == parsed and held.model_dump() == parsed.model_dump() and held.to_wire() == parsed.to_wire()
        assert copy.deepcopy(held) == parsed and pickle.loads(pickle.dumps(held)) == parsed
        assert objects.AgentTask.model_validate(held.model_dump()) == parsed
    mine = dict(a.metadata.labels)  # a copy is an ordinary map
    mine["x"] = "y"
    assert "x" not in z.metadata.labels


def test_a_pending_task_costs_a_fraction_of_its_plain_model():
    def cost(make: Any) -> float:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        kept = [make(i) for i in range(500)]
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert len(kept) == 500
        return (after - before) / 500

    plain = cost(lambda i: objects.parse(pending(i), objects.AgentTask))
    compactor = cachemod.Compactor()
    compact = cost(lambda i: compactor.model(objects.parse(pending(i), objects.AgentTask)))
    assert compact < plain / 3, (plain, compact)


def planner_world(planned: bool, annotations: dict[str, str] | None = None) -> tuple[ctxmod.Context, list[str]]:
    ctx = context()
    b = build()
    b["spec"]["retention"] = {"finishedPods": 0}
    b["status"] = {"plannerTask": "b-planner", "conditions": [
        {"type": "Planned", "status": "True" if planned else "Unknown", "reason": "PlanAccepted" if planned else
         "Planning", "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}
    ctx.cache.observe("BuildRequest", "ADDED", b)
    t = task("b-planner", "2", "Succeeded")
    t["spec"]["role"] = "planner"
    t["metadata"]["annotations"] = annotations or {}
    t["status"]["attempts"] = [{"number": 1, "pod": "b-planner-a1", "endTime": "2025-01-01T00:01:00Z"}]
    ctx.cache.observe("AgentTask", "ADDED", t)
    ctx.cache.observe("Pod", "ADDED", {"metadata": {
        "name": "b-planner-a1", "namespace": "ns", "resourceVersion": "3", "ownerReferences": [
            {"kind": "AgentTask", "name": "b-planner"}]}, "status": {"phase": "Succeeded"}})
    built = ctx.cache.builds[("ns", "b")]
    acts = retentionc.actions(ctx, built, list(ctx.cache.tasks_of(built.key)))
    gone = [a.name for a in acts if isinstance(a, ex.DeletePod)] + [
        name for a in acts if isinstance(a, ex.DeletePods) for _, _, name in a.pods]
    return ctx, gone


def test_a_planner_s_pod_is_kept_until_the_build_is_planned():
    """After a restart the plan is read again from the planner's Pod if it was not taken in before."""
    assert planner_world(planned=False)[1] == []
    assert planner_world(planned=True)[1] == ["b-planner-a1"]
    # a subplanner's Pod stays until its tasks exist, whatever the build's Planned condition says
    assert planner_world(planned=True, annotations={"longshot.dev/plan-name": "part"})[1] == []


def merge_job(name: str) -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "MergeJob",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-mj-{name}", "resourceVersion": "1",
                         "generation": 1, "labels": {"longshot.dev/build": "b"}},
            "spec": {"buildRef": {"name": "b"}, "taskRef": {"name": name}, "branch": f"longshot/b/{name}",
                     "target": "main"}}


def test_a_dependency_changing_phase_wakes_the_queue_of_its_dependents_merge_jobs():
    c = cachemod.Cache()
    c.observe("BuildRequest", "ADDED", build())
    c.observe("AgentTask", "ADDED", task("a", "1", "Succeeded"))
    c.observe("AgentTask", "ADDED", task("b", "1", "Succeeded", depends_on=("a",)))
    c.observe("MergeJob", "ADDED", merge_job("b"))
    queue = ("Queue", "", cachemod.queue_name(c.builds[("ns", "b")], "main"))
    # a stacked dependent's MergeJob waits on its dependency: when that fails, the queue must look again
    refs = c.observe("AgentTask", "MODIFIED", task("a", "2", "Failed"))
    assert queue in refs and ("AgentTask", "ns", "b") in refs
    assert queue not in c.observe("AgentTask", "MODIFIED", task("a", "3", "Failed"))  # no phase change


def with_progress(body: dict[str, Any], rv: str, **progress: Any) -> dict[str, Any]:
    out = {**body, "metadata": {**body["metadata"], "resourceVersion": rv}}
    out["status"] = {**body.get("status", {}), "progress": progress}
    return out


def test_the_gateway_s_heartbeats_and_messages_wake_nothing_and_its_metering_wakes_the_build_only():
    """Issue 13: every progress line the gateway wrote to a running task woke the task, its build (a reconcile
    over all the build's tasks) and, for a gate, the merge queue (a git fetch), and invalidated the build's
    derived views; none of them decides anything on a heartbeat or a message."""
    ctx = context()
    c = ctx.cache
    c.observe("BuildRequest", "ADDED", build())
    running = task("a", "2", "Running")
    c.observe("AgentTask", "ADDED", running)
    views = ctx.views(("ns", "b"))
    beat = with_progress(running, "3", attempt=1, message="cloning", lastHeartbeat="2025-01-01T00:00:01Z")
    assert c.observe("AgentTask", "MODIFIED", beat) == []
    assert c.tasks[("ns", "a")].status.progress.message == "cloning"  # held: kubectl-like readers see it
    assert ctx.views(("ns", "b")) is views  # nothing the views derive from changed
    again = with_progress(running, "4", attempt=1, message="pushing", lastHeartbeat="2025-01-01T00:00:09Z")
    assert c.observe("AgentTask", "MODIFIED", again) == []
    metered = with_progress(running, "5", attempt=1, message="pushing", tokens=120, cost=0.01)
    assert c.observe("AgentTask", "MODIFIED", metered) == [("BuildRequest", "ns", "b")]  # usage and budget
    assert ctx.views(("ns", "b")).tokens == 120
    # anything else in the same write is a change like any other
    moved = with_progress(task("a", "6", "Succeeded"), "6", attempt=1, message="done", tokens=120, cost=0.01)
    assert ("AgentTask", "ns", "a") in c.observe("AgentTask", "MODIFIED", moved)
    labelled = with_progress(running, "7", attempt=1, message="x", tokens=120, cost=0.01)
    labelled["metadata"] = {**labelled["metadata"], "labels": {"longshot.dev/build": "b", "extra": "1"}}
    assert ("AgentTask", "ns", "a") in c.observe("AgentTask", "MODIFIED", labelled)


def test_a_late_answer_to_our_own_write_cannot_bring_a_deleted_build_back():
    """The cleanup finalizer's removal: the watch's DELETED is handled before the patch's answer arrives. Stored, that
    answer was a ghost build whose shard stayed in this replica's view (test_failover: no replica took a new
    repository's shard)."""
    c = cachemod.Cache()
    c.observe("BuildRequest", "ADDED", build())
    answer = build()
    answer["metadata"].update(resourceVersion="7", deletionTimestamp="2025-01-01T00:00:00Z", finalizers=[])
    gone = build()
    gone["metadata"].update(resourceVersion="7", deletionTimestamp="2025-01-01T00:00:00Z")
    assert c.observe("BuildRequest", "DELETED", gone) == [("BuildRequest", "ns", "b")]
    assert c.observe("BuildRequest", "MODIFIED", answer) == []
    status_answer = build()
    status_answer["metadata"]["resourceVersion"] = "6"
    assert c.written("BuildRequest", status_answer, "5") == []
    assert c.builds == {} and c.shards() == set()
    again = build()
    again["metadata"].update(uid="uid-b2", resourceVersion="9")  # re-created under the same name: a new object
    assert c.observe("BuildRequest", "ADDED", again) == [("BuildRequest", "ns", "b")]
    assert set(c.builds) == {("ns", "b")}


def test_an_answer_showing_the_last_finalizer_gone_forgets_the_object_before_the_watch_says_so():
    c = cachemod.Cache()
    c.observe("BuildRequest", "ADDED", build())
    c.observe("AgentTask", "ADDED", task("a", "5"))
    answer = build()
    answer["metadata"].update(resourceVersion="8", deletionTimestamp="2025-01-01T00:00:00Z", finalizers=[])
    c.observe("BuildRequest", "MODIFIED", answer)
    assert ("ns", "b") not in c.builds
    assert c.observe("BuildRequest", "DELETED", answer) == []  # already forgotten
    held = build()
    held["metadata"].update(uid="uid-c", name="c", resourceVersion="9", deletionTimestamp="2025-01-01T00:00:00Z",
                            finalizers=["longshot.dev/cleanup"])
    c.observe("BuildRequest", "MODIFIED", held)
    assert ("ns", "c") in c.builds  # a finalizer still holds it: it is being deleted, not gone


def test_a_build_s_fixers_are_counted_as_they_come_and_go():
    c = cachemod.Cache()
    c.observe("BuildRequest", "ADDED", build())
    fixer = task("f", "3")
    fixer["spec"]["role"] = "fixer"
    c.observe("AgentTask", "ADDED", fixer)
    c.observe("AgentTask", "ADDED", task("w", "4"))
    assert c.fixers_by_build[("ns", "b")] == {"f"}
    c.observe("AgentTask", "DELETED", fixer)
    assert c.fixers_by_build[("ns", "b")] == set()


def test_a_batch_s_gate_tasks_are_found_without_reading_the_build_s_other_tasks():
    """The queue reads a batch's verdicts from an index kept with the cache (issue 34: walking a 10,000-task build
    for every job under test was most of a queue reconcile's own time)."""
    c = cachemod.Cache()
    c.observe("BuildRequest", "ADDED", build())
    gates = []
    for i, batch in enumerate(("b1", "b1", "b2")):
        t = task(f"gate-{i}", str(10 + i))
        t["metadata"]["labels"][cachemod.BATCH_LABEL] = batch
        c.observe("AgentTask", "ADDED", t)
        gates.append(t)
    for i in range(50):
        c.observe("AgentTask", "ADDED", task(f"w{i}", str(100 + i)))
    assert sorted(t.name for t in c.tasks_of_batch(("ns", "b"), "b1")) == ["gate-0", "gate-1"]
    assert [t.name for t in c.tasks_of_batch(("ns", "b"), "b2")] == ["gate-2"]
    assert list(c.tasks_of_batch(("ns", "other"), "b1")) == []
    relabelled = copy.deepcopy(gates[1])
    relabelled["metadata"]["labels"][cachemod.BATCH_LABEL] = "b2"
    relabelled["metadata"]["resourceVersion"] = "20"
    c.observe("AgentTask", "MODIFIED", relabelled)
    assert [t.name for t in c.tasks_of_batch(("ns", "b"), "b1")] == ["gate-0"]
    assert sorted(t.name for t in c.tasks_of_batch(("ns", "b"), "b2")) == ["gate-1", "gate-2"]
    c.observe("AgentTask", "DELETED", gates[0])
    assert list(c.tasks_of_batch(("ns", "b"), "b1")) == []
    assert ("ns", "b", "b1") not in c.tasks_by_batch


def _walk_task(rng: random.Random, name: str, rv: int) -> dict[str, Any]:
    """A random version of task ``name``: its role, phase, sub-plan parent, plan name, metering and handoff."""
    role = rng.choice(["worker", "worker", "planner", "fixer"])
    body = task(name, str(rv), rng.choice([None, "Pending", "Running", "Succeeded", "Failed"]),
                depends_on=tuple(rng.sample(["t0", "t1", "t2"], rng.randint(0, 2))))
    body["spec"]["role"] = role
    if rng.random() < 0.4:
        body["spec"]["parentTask"] = rng.choice(["t0", "t1", "p"])
    if role == "planner" and rng.random() < 0.7:
        body["metadata"]["annotations"] = {"longshot.dev/plan-name": name}
    status = body.setdefault("status", {})
    if rng.random() < 0.6:
        status["attempts"] = [{"number": n, "pod": f"{name}-a{n}", "tokens": rng.randint(0, 50),
                               "cost": rng.choice([0, 0.1, 0.25, 1 / 3]),
                               **({"failureClass": "AgentError", "exitReason": "boom"} if rng.random() < 0.3 else {})}
                              for n in range(1, rng.randint(1, 3) + 1)]
    if rng.random() < 0.5:
        status["handoff"] = {"task": name, "role": "worker", "outcome": "succeeded",
                             **({"commit": "abcdef1"} if rng.random() < 0.7 else {})}
    if rng.random() < 0.3:
        status["mergeJob"] = rng.choice([name, f"{name}-2"])
    return body


def _walk_job(rng: random.Random, name: str, owner: str, rv: int) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": rng.choice(["Queued", "Testing", "Merged", "Failed", "Superseded",
                                                   "Conflicted"])}
    if rng.random() < 0.3:
        status["fixer"] = rng.choice(["f0", "f1", "t3"])
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "MergeJob",
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": str(rv),
                         "generation": 1, "labels": {"longshot.dev/build": "b"}},
            "spec": {"buildRef": {"name": "b"}, "taskRef": {"name": owner}, "branch": f"longshot/{owner}",
                     "target": "main", "commit": "abcdef1"},
            "status": status}


@pytest.mark.parametrize("seed", range(40))
def test_a_build_s_views_brought_up_to_date_task_by_task_equal_views_made_from_all_its_tasks(seed: int):
    """``Context.views`` reads again only the tasks that changed (and those whose MergeJob a fixer took over); after
    any history of creates, status changes, metering, MergeJobs, fixers, sub-plans and deletions, in the shell's own
    writes or watch events, its views equal those a new context makes from every task of the build."""
    rng = random.Random(seed)
    ctx = context()
    c = ctx.cache
    c.observe("BuildRequest", "ADDED", build())
    names = [f"t{i}" for i in range(6)] + ["p", "f0", "f1"]
    rv = 10
    for step in range(120):
        rv += 1
        name = rng.choice(names)
        op = rng.random()
        if op < 0.45:
            c.observe("AgentTask", "MODIFIED", _walk_task(rng, name, rv))
        elif op < 0.55:
            c.observe("AgentTask", "DELETED", task(name, str(rv)))
        elif op < 0.85:  # a relaunch's job (``<task>-2``) is its task's; one named like a task is that task's too
            job = rng.choice([name, f"{name}-2"])
            owner = name if job != name or rng.random() < 0.8 else rng.choice(names)
            c.observe("MergeJob", "MODIFIED", _walk_job(rng, job, owner, rv))
        elif op < 0.92:
            gone = c.jobs.get(("ns", rng.choice([name, f"{name}-2"])))
            if gone is not None:
                c.observe("MergeJob", "DELETED", _walk_job(rng, gone.name, gone.task_name, rv))
        else:  # a heartbeat: changes nothing the views read
            t = c.tasks.get(("ns", name))
            if t is not None:
                c.observe("AgentTask", "MODIFIED", with_progress(t.model_dump(by_alias=True, mode="json",
                                                                              exclude_none=True), str(rv),
                                                                 message="working"))
        if rng.random() < 0.5:
            got = ctx.views(("ns", "b"))
            fresh = context()
            fresh.cache = c
            want = fresh.views(("ns", "b"))
            differ = {k: (v, want.deps.get(k)) for k, v in got.deps.items() if want.deps.get(k) != v}
            assert got == want, (f"seed {seed}, step {step}", differ, got.deps.keys() ^ want.deps.keys())
    ctx.forget(("ns", "b"))
    assert ("ns", "b") not in c.changed_tasks


@pytest.mark.parametrize("seed", range(20))
def test_the_pending_and_running_tasks_of_each_build_and_the_count_per_phase_follow_every_change(seed: int):
    """A dispatch plan walks ``Cache.live_by_build`` (the pending and running tasks), not every task of every build,
    and the tasks-by-state gauge reads ``Cache.task_phases``. After any history of creates, phase changes, a
    ``buildRef`` rewritten, heartbeats and deletions, both equal what a walk of every task in the cache gives."""
    rng = random.Random(seed)
    c = cachemod.Cache()
    c.observe("BuildRequest", "ADDED", build())
    names = [f"t{i}" for i in range(8)]
    rv = 10
    for _ in range(150):
        rv += 1
        name = rng.choice(names)
        op = rng.random()
        if op < 0.6:
            body = task(name, str(rv), rng.choice([None, "Pending", "Running", "Backoff", "Succeeded", "Failed"]))
            if rng.random() < 0.2:  # its build rewritten
                body["spec"]["buildRef"]["name"] = body["metadata"]["labels"]["longshot.dev/build"] = "other"
            c.observe("AgentTask", "MODIFIED", body)
        elif op < 0.8:
            c.observe("AgentTask", "DELETED", task(name, str(rv)))
        else:  # a heartbeat: the same phase, its progress only
            t = c.tasks.get(("ns", name))
            if t is not None:
                c.observe("AgentTask", "MODIFIED", with_progress(t.model_dump(by_alias=True, mode="json",
                                                                              exclude_none=True), str(rv),
                                                                 attempt=1, tokens=rng.randint(0, 9)))
        live: dict[tuple[str, str], set[str]] = {}
        phases: dict[str, int] = {}
        for t in c.tasks.values():
            phase = t.status.phase or "Pending"
            phases[phase] = phases.get(phase, 0) + 1
            if phase in ("Pending", "Running"):
                live.setdefault((t.namespace, t.build_name), set()).add(t.name)
        assert {b: n for b, n in c.live_by_build.items() if n} == live
        assert {p: n for p, n in c.task_phases.items() if n} == phases
        assert all(n >= 0 for n in c.task_phases.values())
        for b, members in c.tasks_by_build.items():  # a task is listed under its own build only
            assert all(c.tasks[(b[0], m)].build_name == b[1] for m in members)


def test_a_build_s_status_only_change_wakes_nothing_but_a_spec_edit_or_a_child_s_does():
    """The build reconciler is its status's one writer: the watch event of its own status write, even when it
    arrives before the write's answer is stored, brings no reconcile of its own (issue 51's hand-overs)."""
    c = cachemod.Cache()
    c.observe("BuildRequest", "ADDED", build())
    written = {**build(), "metadata": {**build()["metadata"], "resourceVersion": "2"},
               "status": {"phase": "Planning"}}
    assert c.observe("BuildRequest", "MODIFIED", written) == []
    assert c.builds[("ns", "b")].status.phase == "Planning"  # stored all the same
    decided = {**written, "metadata": {**written["metadata"], "resourceVersion": "2a"},
               "status": {"phase": "Planning", "observedGeneration": 1}}
    assert ("BuildRequest", "ns", "b") in c.observe("BuildRequest", "MODIFIED", decided)  # dispatch reads this
    edited = {**written, "metadata": {**written["metadata"], "resourceVersion": "3", "generation": 2},
              "spec": {**written["spec"], "request": "r2"}}
    assert ("BuildRequest", "ns", "b") in c.observe("BuildRequest", "MODIFIED", edited)
    again = {**edited, "metadata": {**edited["metadata"], "resourceVersion": "4"}, "status": {"phase": "Planning",
                                                                                             "iteration": 1}}
    assert c.observe("BuildRequest", "MODIFIED", again) == []
    child_meta = {**again["metadata"], "resourceVersion": "5", "name": "child", "ownerReferences": [
        {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest", "name": "b", "uid": "uid-b",
         "controller": True}]}
    c.observe("BuildRequest", "ADDED", {**again, "metadata": child_meta})
    child_done = {**again, "metadata": {**child_meta, "resourceVersion": "6"}, "status": {"phase": "Finalized"}}
    assert ("BuildRequest", "ns", "child") in c.observe("BuildRequest", "MODIFIED", child_done)


async def test_an_intake_child_s_own_status_write_wakes_its_intake_and_so_does_its_deletion():
    """A standing intake comments on and closes an issue when its child build finalizes. Only the watch path woke
    the intake, and the child's own status write made its watch event no news: the intake waited for the resync
    (an integration test of the intake took 122 s, 45 of them waiting)."""
    fake, clock = FakeKube(), datetime(2025, 1, 1, tzinfo=UTC)
    intake = build()
    child = {**build(), "metadata": {**build()["metadata"], "name": "b-i1", "uid": "uid-i1",
                                     "labels": {"longshot.dev/intake": "b"}, "ownerReferences": [
                                         {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
                                          "name": "b", "uid": "uid-b", "controller": True}]}}
    stranger = {**child, "metadata": {**child["metadata"], "name": "other", "uid": "uid-o", "labels": {}}}
    for body in (intake, child, stranger):
        fake.create(body)
    cache, queue = cachemod.Cache(), workqueue.WorkQueue(lambda: clock)
    for body in (intake, child, stranger):
        cache.observe("BuildRequest", "ADDED", fake.get("BuildRequest", "ns", body["metadata"]["name"]))
    e = ex.Executor(fake, cache, queue, lambda: clock)
    def version(name: str) -> str:
        return str(fake.get("BuildRequest", "ns", name)["metadata"]["resourceVersion"])

    await e.run([ex.WriteStatus("BuildRequest", "ns", "b-i1", version("b-i1"), {"phase": "Finalized"})])
    assert queue.take() == [("BuildRequest", "ns", "b")]  # the intake, not the child (its own write)
    await e.run([ex.WriteStatus("BuildRequest", "ns", "other", version("other"), {"phase": "Finalized"})])
    assert queue.take() == []  # an owned build without the intake label is no intake's child
    assert ("BuildRequest", "ns", "b") in cache.observe("BuildRequest", "DELETED", fake.get("BuildRequest", "ns",
                                                                                              "b-i1"))
