"""Warm pools through the shell (controllers.warmpools, the executor's claim, the cache): a pool is made for pending
work, an admission claims a warm Pod with one fenced write and records its UID, a claim another replica won first
falls back to the next sandbox or a cold Pod, and a claim whose status write was lost is adopted, not repeated."""

from __future__ import annotations

from typing import Any

import pytest

from fake_kube import Clock, FakeKube, build
from longshot import config, metrics
from longshot.api import keys
from longshot.controllers import executor as ex
from longshot.controllers import manager as managermod
from longshot.controllers import warmpools
from longshot.core import cleanup
from longshot.runtime import pods

pytestmark = pytest.mark.unit

SETTINGS = config.Settings(namespace="ops", metrics_port=0, gateway_url="http://gw:8080")


def agent_task(name: str) -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": name, "namespace": "ns", "labels": {"longshot.dev/build": "b"}},
            "spec": {"buildRef": {"name": "b"}, "description": f"do {name}", "role": "worker"}}


def wired(size: int = 2, tasks: tuple[str, ...] = ("b-t1",), settings: config.Settings = SETTINGS
          ) -> tuple[FakeKube, managermod.Manager]:
    fake = FakeKube()
    m = managermod.Manager(fake, settings, clock=Clock(), rand=lambda: 0.5, monotonic=lambda: 0.0)
    m.ctx.preflight = lambda k, b: None
    b = build(agent={"warmPool": {"size": size}})
    b["metadata"]["finalizers"] = [cleanup.FINALIZER]
    made = fake.create(b)
    assert made is not None
    m.observe("BuildRequest", "ADDED", made)
    for name in tasks:
        t = fake.create(agent_task(name))
        assert t is not None
        m.observe("AgentTask", "ADDED", t)
    return fake, m


def warm_pods(fake: FakeKube) -> dict[str, dict[str, Any]]:
    return {n: p for (_, n), p in fake.pods.items() if keys.WARM_TEMPLATE in p["metadata"]["labels"]
            and p["metadata"]["ownerReferences"][0]["kind"] == "BuildRequest"}


def run(fake: FakeKube, m: managermod.Manager, name: str) -> dict[str, Any]:
    """Play the kubelet: the warm Pod's runner is up."""
    fake.pods[("ns", name)]["status"] = {"phase": "Running"}
    body = fake._stamp(fake.pods[("ns", name)])
    m.observe("Pod", "MODIFIED", body)
    return body


def claims(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("longshot_warm_pool_claims_total", {"result": result}) or 0.0


async def test_a_pool_is_made_for_pending_work_then_an_admission_claims_a_warm_pod_and_records_its_uid():
    fake, m = wired(size=2, tasks=("b-t1", "b-t2", "b-t3"))
    await warmpools.maintain(m.ctx)
    assert len(warm_pods(fake)) == 2  # min(size, pending)
    await warmpools.maintain(m.ctx)
    assert len(warm_pods(fake)) == 2  # made once
    first = sorted(warm_pods(fake))[0]
    run(fake, m, first)
    hits = claims("hit")
    actions = await m.tasks.admit(("ns", "b-t1"))
    (create,) = [a for a in actions if isinstance(a, ex.CreatePod)]
    assert create.pooled and create.warm[0].name == first  # the running one first
    await m.executor.run(actions)
    assert claims("hit") == hits + 1
    assert ("ns", pods.pod_name("b-t1", 1)) not in fake.pods  # no cold Pod
    claimed = fake.pods[("ns", first)]
    assert claimed["metadata"]["ownerReferences"][0]["kind"] == "AgentTask"
    assert claimed["metadata"]["labels"][keys.WARM_CLAIM] == pods.pod_name("b-t1", 1)
    (attempt,) = fake.objects[("AgentTask", "ns", "b-t1")]["status"]["attempts"]
    assert (attempt["pod"], attempt["podUID"]) == (pods.pod_name("b-t1", 1), claimed["metadata"]["uid"])
    # the cache keeps it under its attempt's name, with its own name for deletes
    view = m.cache.pods[("ns", pods.pod_name("b-t1", 1))]
    assert view.name == first and ("ns", first) not in m.cache.pods and not view.warm
    # the attempt's Pod is deleted by its own name
    task = m.cache.tasks[("ns", "b-t1")]
    deletes = m.tasks._act(task, m.cache.build_of(task), _delete(pods.pod_name("b-t1", 1)), m.ctx.clock())  # type: ignore[arg-type]
    assert deletes == [ex.DeletePod("ns", first, 0)]


def _delete(name: str) -> Any:
    from longshot.core import tasks
    return tasks.DeletePod(name, grace_seconds=0)


async def test_a_sandbox_another_replica_claimed_first_is_skipped_and_with_none_left_the_pod_starts_cold():
    fake, m = wired(size=1)
    await warmpools.maintain(m.ctx)
    (name,) = warm_pods(fake)
    run(fake, m, name)
    actions = await m.tasks.admit(("ns", "b-t1"))
    # another replica claims it between this replica's read and its write
    other = pods.build_agent_pod(agent_task("b-other") | {"metadata": {"name": "b-other", "namespace": "ns",
                                                                          "uid": "uid-other"}},
                                 fake.objects[("BuildRequest", "ns", "b")], SETTINGS, 1)
    rv = fake.pods[("ns", name)]["metadata"]["resourceVersion"]
    assert fake.claim_pod("ns", name, pods.claim_patch(other, rv, 1000)) is not None
    misses = claims("miss")
    await m.executor.run(actions)
    assert claims("miss") == misses + 1
    cold = fake.pods[("ns", pods.pod_name("b-t1", 1))]  # a cold Pod of its own
    assert keys.WARM_TEMPLATE not in cold["metadata"]["labels"]
    assert fake.pods[("ns", name)]["metadata"]["labels"][keys.TASK] == "b-other"  # never claimed twice
    (attempt,) = fake.objects[("AgentTask", "ns", "b-t1")]["status"]["attempts"]
    assert attempt["podUID"] == cold["metadata"]["uid"]


async def test_a_claim_whose_status_write_was_lost_is_adopted_by_the_next_reconcile_not_claimed_again():
    fake, m = wired(size=2, tasks=("b-t1", "b-t2"))
    await warmpools.maintain(m.ctx)
    name = sorted(warm_pods(fake))[0]
    run(fake, m, name)
    # the replica claimed the Pod and died before the task's status write: a new replica starts from the API
    cold = pods.build_agent_pod(fake.objects[("AgentTask", "ns", "b-t1")], fake.objects[("BuildRequest", "ns", "b")],
                                SETTINGS, 1)
    fake.claim_pod("ns", name, pods.claim_patch(cold, fake.pods[("ns", name)]["metadata"]["resourceVersion"], 1000))
    restarted = managermod.Manager(fake, SETTINGS, clock=Clock(), rand=lambda: 0.5, monotonic=lambda: 0.0)
    restarted.ctx.preflight = lambda k, b: None
    for kind, obj in [("BuildRequest", o) for (k, _, _), o in fake.objects.items() if k == "BuildRequest"] + \
            [("AgentTask", o) for (k, _, _), o in fake.objects.items() if k == "AgentTask"] + \
            [("Pod", p) for p in fake.pods.values()]:
        restarted.observe(kind, "ADDED", obj)
    actions = await restarted.tasks.reconcile(("ns", "b-t1"))
    assert not [a for a in actions if isinstance(a, ex.CreatePod)]  # adopted: no second Pod, no second claim
    await restarted.executor.run(actions)
    (attempt,) = fake.objects[("AgentTask", "ns", "b-t1")]["status"]["attempts"]
    assert (attempt["pod"], attempt["podUID"]) == (pods.pod_name("b-t1", 1), fake.pods[("ns", name)]["metadata"]["uid"])
    assert fake.objects[("AgentTask", "ns", "b-t1")]["status"]["phase"] == "Running"
    # the pool does not count it any more; the other task still finds a free sandbox
    left = warmpools.sandboxes(restarted.ctx, restarted.cache.builds[("ns", "b")], restarted.ctx.clock())
    assert name not in {s.name for s in left}


async def test_a_build_without_a_pool_creates_cold_pods_and_counts_nothing():
    fake, m = wired(size=0)
    await warmpools.maintain(m.ctx)
    assert warm_pods(fake) == {}
    actions = await m.tasks.admit(("ns", "b-t1"))
    (create,) = [a for a in actions if isinstance(a, ex.CreatePod)]
    assert (create.pooled, create.warm) == (False, ())


async def test_an_attempt_whose_timeout_does_not_fit_in_a_sandboxs_deadline_does_not_try_it():
    fake, m = wired(size=1, tasks=())
    long = agent_task("b-long")
    long["spec"]["agent"] = {"timeoutSeconds": 86400}  # longer than the sandbox may still live (a deadline only drops)
    t = fake.create(long)
    assert t is not None
    m.observe("AgentTask", "ADDED", t)
    await warmpools.maintain(m.ctx)
    (name,) = warm_pods(fake)
    run(fake, m, name)
    actions = await m.tasks.admit(("ns", "b-long"))
    (create,) = [a for a in actions if isinstance(a, ex.CreatePod)]
    assert (create.pooled, create.warm) == (True, ())  # a miss: cold, no write wasted on a claim the API refuses


async def test_the_pool_holds_no_more_than_max_workers_leaves_after_running_agents_and_other_replicas_pools():
    settings = SETTINGS.model_copy(update={"max_workers": 4})
    fake, m = wired(size=4, tasks=("b-t1", "b-t2", "b-t3", "b-t4", "b-t5"), settings=settings)
    # an agent running for a build of another namespace, and a warm Pod of a build another replica keeps
    other = build("o") | {"metadata": {"name": "o", "namespace": "ns2", "uid": "uid-o"}}
    running = pods.build_agent_pod(agent_task("o-t1") | {"metadata": {"name": "o-t1", "namespace": "ns2",
                                                                      "uid": "uid-o-t1"}}, other, settings, 1)
    made = fake.create(running)
    assert made is not None
    made["status"] = {"phase": "Running"}
    m.observe("Pod", "ADDED", made)
    theirs = fake.create(pods.build_warm_pod(other, settings, "o-warm-1", 300))
    assert theirs is not None
    m.observe("Pod", "ADDED", theirs)
    await warmpools.maintain(m.ctx)
    ours = [n for n in warm_pods(fake) if n.startswith("b-warm-")]
    assert len(ours) == 2  # 4 - the running agent - their warm Pod, not the 4 the pool wants
    assert metrics.REGISTRY.get_sample_value("longshot_warm_pool_held_back_sandboxes") == 2


async def test_a_tenants_cpu_limit_bounds_its_pool():
    settings = SETTINGS.model_copy(update={"admission_tenants": '{"ns": {"cpu": "600m", "memory": "64Gi"}}'})
    fake, m = wired(size=4, tasks=("b-t1", "b-t2", "b-t3", "b-t4"), settings=settings)
    await warmpools.maintain(m.ctx)
    assert len(warm_pods(fake)) == 2  # two of 250m fit in 600m, a third does not


async def test_the_namespaces_resource_quota_bounds_its_pool():
    from longshot.core import admission
    from longshot.runtime import capacity
    fake, m = wired(size=4, tasks=("b-t1", "b-t2", "b-t3", "b-t4"))
    # the quota leaves three Pods for agent Pods (read with the cluster's room), and one agent of the build runs
    m.ctx.cluster = capacity.ClusterFacts(nodes=(), quotas={"ns": admission.Resources(
        cpu=admission.UNLIMITED, memory=admission.UNLIMITED, pods=3)})
    running = pods.build_agent_pod(agent_task("b-t0") | {"metadata": {"name": "b-t0", "namespace": "ns",
                                                                      "uid": "uid-b-t0"}},
                                   fake.objects[("BuildRequest", "ns", "b")], SETTINGS, 1)
    made = fake.create(running)
    assert made is not None
    m.observe("Pod", "ADDED", made | {"status": {"phase": "Running"}})
    await warmpools.maintain(m.ctx)
    assert len(warm_pods(fake)) == 2  # 3 Pods of quota - the running agent: not the 4 the pool wants


# --- one pool per template in a shard, shared by its builds ------------------------------------------------------

def with_build(fake: FakeKube, m: managermod.Manager, name: str, tasks: tuple[str, ...] = (), *, size: int = 2,
               url: str = "https://git.example/r.git", **spec: Any) -> dict[str, Any]:
    b = build(name, agent={"warmPool": {"size": size}}, **spec)
    b["spec"]["repository"]["url"] = url
    b["metadata"]["finalizers"] = [cleanup.FINALIZER]
    made = fake.create(b)
    assert made is not None
    m.observe("BuildRequest", "ADDED", made)
    for t in tasks:
        task = agent_task(t)
        task["metadata"]["labels"]["longshot.dev/build"] = name
        task["spec"]["buildRef"]["name"] = name
        created = fake.create(task)
        assert created is not None
        m.observe("AgentTask", "ADDED", created)
    return made


async def test_the_builds_of_one_repository_and_template_share_one_pool_sized_from_their_pending_tasks_together():
    fake, m = wired(size=2, tasks=("b-t1", "b-t2", "b-t3"))
    with_build(fake, m, "c", ("c-t1", "c-t2", "c-t3"), size=2)
    await warmpools.maintain(m.ctx)
    assert len(warm_pods(fake)) == 2  # one pool of size 2 for both builds' six pending tasks, not 2 + 2
    (pool,) = warmpools.pools(m.ctx, m.ctx.clock())
    assert {b.name for b, *_ in pool.builds} == {"b", "c"} and pool.facts().upcoming == 6


async def test_an_attempt_claims_a_sandbox_another_build_of_its_repository_made_and_never_one_of_another_repository():
    fake, m = wired(size=1, tasks=())
    with_build(fake, m, "other", ("other-t1",), size=1, url="https://git.example/elsewhere.git")
    with_build(fake, m, "c", ("c-t1",), size=1)
    b_task = fake.create(agent_task("b-t1"))
    assert b_task is not None
    m.observe("AgentTask", "ADDED", b_task)
    await warmpools.maintain(m.ctx)
    made = warm_pods(fake)
    by_build = {p["metadata"]["labels"]["longshot.dev/build"] for p in made.values()}
    assert len(made) == 2 and "other" in by_build  # one pool per repository
    for name in made:
        run(fake, m, name)
    # build c's task claims the sandbox of its repository's pool, whichever build made it, never the other's
    ours = next(n for n, p in made.items() if p["metadata"]["labels"]["longshot.dev/build"] != "other")
    actions = await m.tasks.admit(("ns", "c-t1"))
    (create,) = [a for a in actions if isinstance(a, ex.CreatePod)]
    assert [c.name for c in create.warm] == [ours]
    await m.executor.run(actions)
    claimed = fake.pods[("ns", ours)]
    assert claimed["metadata"]["labels"]["longshot.dev/build"] == "c"  # the claimer's labels, its task's controller
    assert claimed["metadata"]["ownerReferences"][0]["name"] == "c-t1"


async def test_a_finished_builds_sandboxes_stay_for_the_next_build_of_its_repository_and_go_when_none_wants_them():
    fake, m = wired(size=2, tasks=("b-t1", "b-t2"))
    await warmpools.maintain(m.ctx)
    made = set(warm_pods(fake))
    assert len(made) == 2
    # build b is finished (its tasks are gone from the queue); build c of the same repository and template waits
    done = fake.objects[("BuildRequest", "ns", "b")]
    done["status"] = {**(done.get("status") or {}), "completionTime": "2025-01-01T00:00:00Z"}
    m.observe("BuildRequest", "MODIFIED", fake._stamp(done))
    with_build(fake, m, "c", ("c-t1", "c-t2"), size=2)
    await warmpools.maintain(m.ctx)
    assert set(warm_pods(fake)) == made  # kept and shared: c needs no new one
    # c is finished too: nobody shares the pool, its sandboxes go
    c = fake.objects[("BuildRequest", "ns", "c")]
    c["status"] = {**(c.get("status") or {}), "completionTime": "2025-01-01T00:00:00Z"}
    m.observe("BuildRequest", "MODIFIED", fake._stamp(c))
    await warmpools.maintain(m.ctx)
    assert warm_pods(fake) == {}


async def test_a_sandbox_made_for_a_shorter_attempt_timeout_is_not_tried_by_a_longer_one_of_another_build():
    fake, m = wired(size=1, tasks=("b-t1",))
    await warmpools.maintain(m.ctx)
    (name,) = warm_pods(fake)
    run(fake, m, name)
    # build c: the same template (the timeout is not part of it), attempts of 20 hours; b's sandbox lives 45 min
    with_build(fake, m, "c", ("c-t1",), size=1)
    c = fake.objects[("BuildRequest", "ns", "c")]
    c["spec"]["agent"]["timeoutSeconds"] = 72000
    m.observe("BuildRequest", "MODIFIED", fake._stamp(c))
    actions = await m.tasks.admit(("ns", "c-t1"))
    (create,) = [a for a in actions if isinstance(a, ex.CreatePod)]
    assert name not in [w.name for w in create.warm]


async def test_when_other_agents_take_the_room_the_pools_sandboxes_go_at_once_not_after_idle_seconds():
    settings = SETTINGS.model_copy(update={"max_workers": 3})
    fake, m = wired(size=3, tasks=("b-t1", "b-t2", "b-t3"), settings=settings)
    await warmpools.maintain(m.ctx)
    assert len(warm_pods(fake)) == 3
    # two agents of another namespace start: the operator may run one more Pod, so the pool may hold one
    other = build("o") | {"metadata": {"name": "o", "namespace": "ns2", "uid": "uid-o"}}
    for name in ("o-t1", "o-t2"):
        running = pods.build_agent_pod(agent_task(name) | {"metadata": {"name": name, "namespace": "ns2",
                                                                        "uid": f"uid-{name}"}}, other, settings, 1)
        made = fake.create(running)
        assert made is not None
        m.observe("Pod", "ADDED", made | {"status": {"phase": "Running"}})
    await warmpools.maintain(m.ctx)
    assert len(warm_pods(fake)) == 1  # the sandboxes were seconds old: gone at once, not after 300 s


async def test_a_shared_pools_sandboxes_live_long_enough_for_the_longest_attempts_of_its_builds():
    fake, m = wired(size=1, tasks=("b-t1", "b-t2"))  # b: 30-minute attempts, the most pending: the creator
    c = with_build(fake, m, "c", ("c-t1",), size=1)
    c["spec"]["agent"]["timeoutSeconds"] = 7200  # c: 2-hour attempts, same template
    m.observe("BuildRequest", "MODIFIED", fake._stamp(c))
    await warmpools.maintain(m.ctx)
    (name,) = warm_pods(fake)
    sandbox = fake.pods[("ns", name)]
    assert sandbox["metadata"]["ownerReferences"][0]["name"] == "b"
    assert sandbox["spec"]["activeDeadlineSeconds"] == pods.warm_deadline(c, 300)  # c's, the longer
    run(fake, m, name)
    actions = await m.tasks.admit(("ns", "c-t1"))
    (create,) = [a for a in actions if isinstance(a, ex.CreatePod)]
    assert [w.name for w in create.warm] == [name]  # c's attempt may claim what was made for b
