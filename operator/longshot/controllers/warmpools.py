"""Warm pools of agent sandboxes, the shell (decisions: ``core.warmpool``; docs/warm-pools.md).

A pool is the warm Pods of one template in one shard (a tenant's use of a repository: one namespace, one
repository, one credentials Secret): every build of the shard whose worker template it is shares it, whichever of
them made its Pods. The shard is held by one replica, so one replica plans each pool.

* :func:`create_action`: an attempt's Pod create becomes a claim of a warm sandbox of the same template in its
  build's shard when its build keeps a pool (the executor tries them in ``core.warmpool.claim_order``, one fenced
  write each, and creates the Pod cold when none is left: a miss).
* :func:`maintain`: after each dispatch, for each pool of this replica's builds (or warm Pods left), create the
  warm Pods ``core.warmpool.plan`` asks for, at most its share of the room (``core.warmpool.allot``), and delete the
  ones it gives up (fenced on their resourceVersion, so that a claim that won first is never undone). A failure is
  logged and the next dispatch (a Pod's change, the resync) plans again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, NamedTuple

from longshot import metrics
from longshot.api import objects
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.core import admission, names, tasks, warmpool
from longshot.runtime import kube, pods

log = logging.getLogger("longshot.warmpool")

MAX_CANDIDATES: Final = 4
"""Warm Pods one admission tries at most before it starts its Pod cold (each try is one API write)."""
MAX_CREATES: Final = 16
"""Warm Pods one maintenance creates at most (the rest at the next dispatch)."""


def size_of(ctx: ctxmod.Context, build: objects.BuildRequest) -> tuple[int, int]:
    """The build's pool size and idle seconds: ``spec.agent.warmPool``, else the operator's default."""
    pool = build.spec.agent.warm_pool
    if pool is not None:
        return pool.size, pool.idle_seconds
    return ctx.settings.warm_pool_size, 300


def _dict(obj: objects.Resource) -> dict[str, Any]:
    return obj.model_dump(by_alias=True, mode="json", exclude_none=True)


def _shard_labels(ctx: ctxmod.Context, build: objects.BuildRequest) -> set[str]:
    """The ``longshot.dev/build`` labels of the builds of ``build``'s shard (its own included)."""
    shard = ctx.cache.shard_of(build)
    return {names.fit(b.name) for b in list(ctx.cache.builds.values())
            if b.namespace == build.namespace and ctx.cache.shard_of(b) == shard}


def sandboxes(ctx: ctxmod.Context, build: objects.BuildRequest, now: datetime) -> list[warmpool.Sandbox]:
    """The warm Pods an attempt of the build may claim: those of every build of its shard (its tenant's repository),
    unclaimed (a claimed one is its attempt's)."""
    shard = ctx.cache.shard_of(build)
    labels: set[str] | None = None

    def of_shard(label: str) -> bool:
        nonlocal labels
        maker = ctx.cache.builds.get((build.namespace, label))
        if maker is not None:
            return ctx.cache.shard_of(maker) == shard
        labels = _shard_labels(ctx, build) if labels is None else labels  # a name cut to fit a label
        return label in labels

    return [_sandbox(p) for p in ctx.cache.pods.values()
            if p.warm and p.namespace == build.namespace and of_shard(p.build)]


def _sandbox(p: cachemod.PodView) -> warmpool.Sandbox:
    running = p.phase == "Running"
    return warmpool.Sandbox(name=p.name, uid=p.uid, resource_version=p.resource_version, template=p.warm_template,
                            created=p.created, phase=p.phase, ready=running, deleting=p.deleting,
                            claimed=bool(p.owner_uid), deadline=p.deadline)


def create_action(ctx: ctxmod.Context, build: objects.BuildRequest, manifest: dict[str, Any]) -> ex.CreatePod:
    """The create of an attempt's Pod ``manifest``: with the warm sandboxes of the same template it may claim
    instead, when the build keeps a pool."""
    size, idle = size_of(ctx, build)
    if size <= 0:
        return ex.CreatePod(manifest)
    now = ctx.clock()
    order = warmpool.claim_order(sandboxes(ctx, build, now), pods.attempt_template(manifest))
    # a claim lowers the sandbox's deadline to its age plus the attempt's timeout: one that has not that much left
    # (an attempt with a longer timeout of its own, a sandbox past its idle time) is not tried
    default = pods.warm_deadline(_dict(build), idle)
    timeout = int(manifest["spec"].get("activeDeadlineSeconds") or 0)
    ages = [(s, int((now - s.created).total_seconds()) + 1 if s.created is not None else 0) for s in order]
    warm = tuple(ex.WarmCandidate(s.name, s.resource_version, age) for s, age in ages
                 if age + timeout <= (s.deadline if s.deadline is not None else default) - ex.CLAIM_SLACK_SECONDS)[
        :MAX_CANDIDATES]
    return ex.CreatePod(manifest, warm=warm, pooled=True)


def _upcoming(ctx: ctxmod.Context, build: objects.BuildRequest) -> int:
    """The build's pending tasks (not running, not ended, not held by a person): the pool's demand."""
    n = 0
    for name in list(ctx.cache.live_by_build.get(build.key, ())):
        t = ctx.cache.tasks.get((build.namespace, name))
        if t is None or t.spec.cancel or t.spec.suspend or t.metadata.deleting:
            continue
        if (t.status.phase or tasks.PENDING) == tasks.PENDING and ctx.fanout_of(t, build) is None:
            n += 1
    return n


def _rooms(ctx: ctxmod.Context, ours: set[tuple[str, str]]) -> tuple[int, dict[str, warmpool.TenantRoom]]:
    """What the pools of this replica's builds (``ours``: namespace and build label) may hold, before they are
    divided (``core.warmpool.allot``): the operator's ``max_workers``; each tenant's ``maxAgents``, cpu and memory
    (``LONGSHOT_ADMISSION_TENANTS``) and what its ResourceQuotas leave for agent Pods (read with the cluster's room
    when admission counts capacity: ``Context.cluster``); less the agents running (any replica's: the cache holds
    every agent Pod) and the warm Pods of builds not divided here (another replica's)."""
    tenants = ctx.settings.tenants()
    count: dict[str, int] = defaultdict(int)
    held: dict[str, admission.Resources] = defaultdict(lambda: admission.NOTHING)
    for p in ctx.cache.pods.values():
        if p.ended or (p.warm and (p.namespace, p.build) in ours):
            continue
        if p.task is None and not p.warm:
            continue  # not an agent Pod of an attempt
        count[p.namespace] += 1
        held[p.namespace] = held[p.namespace] + p.requests
    quotas = ctx.cluster.quotas if ctx.cluster is not None else {}
    out: dict[str, warmpool.TenantRoom] = {}
    for ns in {ns for ns, _ in ours}:
        policy = admission.policy_of(tenants, ns)
        n, used = count.get(ns, 0), held.get(ns, admission.NOTHING)
        agents = None if policy.max_agents is None else policy.max_agents - n
        resources = None if policy.limit is None else policy.limit - used
        quota = quotas.get(ns)
        if quota is not None:  # what the quotas leave for agent Pods, less the agent Pods (each one Pod of it)
            if quota.pods < admission.UNLIMITED:
                agents = quota.pods - n if agents is None else min(agents, quota.pods - n)
            left = quota - used
            resources = left if resources is None else resources.least(left)
        out[ns] = warmpool.TenantRoom(weight=policy.weight, agents=agents, resources=resources)
    return ctx.settings.max_workers - sum(count.values()), out


class Member(NamedTuple):
    """A build of this replica that shares a pool."""

    build: objects.BuildRequest
    size: int
    idle: int
    """Its pool's idle seconds."""
    active: bool
    pending: int
    """Its pending tasks (0 while it is not active)."""


@dataclass
class Pool:
    """One pool: the warm Pods of one template in one shard, and the builds of this replica that share it."""

    namespace: str
    shard: str
    template: str
    builds: list[Member] = field(default_factory=list)
    """The builds of the shard whose worker template this is and that keep a pool."""
    requests: admission.Resources = admission.NOTHING
    sandboxes: list[warmpool.Sandbox] = field(default_factory=list)
    labels: set[str] = field(default_factory=set)
    """The ``longshot.dev/build`` labels of its builds and of the builds that made its warm Pods."""

    @property
    def key(self) -> str:
        return f"{self.namespace}|{self.shard}|{self.template}"

    @property
    def active(self) -> list[Member]:
        """Its builds that are active (and keep a pool)."""
        return [m for m in self.builds if m.active and m.size > 0]

    @property
    def creator(self) -> Member | None:
        """The build its new warm Pods are made for (their controller): the active one with the most pending
        tasks, then by name; None when none is active."""
        return min(self.active, key=lambda m: (-m.pending, m.build.name), default=None)

    def facts(self) -> warmpool.PoolFacts:
        """The pool as one build of ``core.warmpool.plan``: the largest size and idle time of its active builds,
        their pending tasks together."""
        on = self.active
        idle = max((m.idle for m in on), default=max((m.idle for m in self.builds), default=300))
        return warmpool.PoolFacts(size=max((m.size for m in on), default=0), template=self.template,
                                  active=bool(on), upcoming=sum(m.pending for m in on), idle_seconds=idle)


def pools(ctx: ctxmod.Context, now: datetime) -> list[Pool]:
    """The pools of this replica's builds that keep one or still have warm Pods: each build's current template in its
    shard, and the templates of warm Pods left (a build's spec changed: no build shares them, so they go)."""
    warm: dict[tuple[str, str], list[cachemod.PodView]] = defaultdict(list)
    for p in ctx.cache.pods.values():
        if p.warm:
            warm[(p.namespace, p.build)].append(p)
    out: dict[tuple[str, str, str], Pool] = {}
    for build in list(ctx.cache.builds.values()):
        size, idle = size_of(ctx, build)
        left = warm.get((build.namespace, names.fit(build.name)), [])
        if size <= 0 and not left:
            continue
        if not ctx.owns_build(build):
            continue
        shard = ctx.cache.shard_of(build)
        if size > 0:
            active = not (build.spec.suspend or build.metadata.deleting or ctx.killswitch
                          or ctx.budget_spent(build) or build.status.completion_time is not None)
            spec = pods.warm_spec(_dict(build), ctx.settings)
            template = warmpool.template_hash(spec)
            pool = out.setdefault((build.namespace, shard, template), Pool(build.namespace, shard, template))
            pool.builds.append(Member(build, size, idle, active, _upcoming(ctx, build) if active else 0))
            pool.requests = admission.pod_requests(spec)
            pool.labels.add(names.fit(build.name))
        for p in left:
            pool = out.setdefault((build.namespace, shard, p.warm_template),
                                  Pool(build.namespace, shard, p.warm_template))
            pool.sandboxes.append(_sandbox(p))
            pool.labels.add(p.build)
    return sorted(out.values(), key=lambda p: p.key)


def plans(ctx: ctxmod.Context, now: datetime) -> list[tuple[Pool, warmpool.PoolPlan]]:
    """``core.warmpool.plan`` for every pool of this replica, each at most its share of the room
    (``core.warmpool.allot``)."""
    todo = pools(ctx, now)
    if not todo:
        metrics.WARM_HELD_BACK.set(0)
        return []
    asked = [(pool, pool.facts()) for pool in todo]
    wants = [warmpool.Want(pool.key, pool.namespace, warmpool.wanted(facts), pool.requests) for pool, facts in asked]
    room, tenants = _rooms(ctx, {(p.namespace, label) for p in todo for label in p.labels})
    given = warmpool.allot(wants, room=room, tenants=tenants)
    # what each pool may hold past its demand, up to its size: beyond it (the room shrank) its sandboxes go at once
    bound = warmpool.holdable(wants, given, {pool.key: facts.size for pool, facts in asked}, room=room, tenants=tenants)
    metrics.WARM_HELD_BACK.set(sum(w.want - given[w.key] for w in wants))
    return [(pool, warmpool.plan(replace(facts, room=given[pool.key], bound=bound[pool.key]), pool.sandboxes, now=now))
            for pool, facts in asked]


async def maintain(ctx: ctxmod.Context) -> None:
    """Bring every pool of this replica to its plan (creates, then fenced deletes); the ready gauge."""
    now = ctx.clock()
    todo = plans(ctx, now)
    metrics.WARM_READY.set(sum(p.ready for _, p in todo))
    jobs = [_apply(ctx, pool, p) for pool, p in todo if p.create or p.delete]
    if jobs:
        await asyncio.gather(*jobs)


async def _apply(ctx: ctxmod.Context, pool: Pool, plan: warmpool.PoolPlan) -> None:
    creator = pool.creator
    if creator is not None and plan.create:
        build = creator.build
        body = _dict(build)
        # the longest deadline of the pool's active builds: any of their attempts may claim what is made for one
        lifetime = max(pods.warm_deadline(_dict(m.build), m.idle) for m in pool.active)
        for _ in range(min(plan.create, MAX_CREATES)):
            name = names.child_name(names.fit(build.name)[:40], f"warm-{secrets.token_hex(3)}")
            manifest = pods.build_warm_pod(body, ctx.settings, name, creator.idle, lifetime=lifetime)
            try:
                made = await asyncio.to_thread(ctx.kube.create_pod, manifest)
            except Exception as e:
                log.warning("build %s/%s: creating warm Pod %s failed (%s)", build.namespace, build.name, name,
                            kube.refusal(e) if kube.is_api_error(e) else f"{type(e).__name__}: {e}")
                break
            if made is not None:
                ctx.observe("Pod", "ADDED", made)
    await _delete(ctx, pool.namespace, plan.delete)


async def _delete(ctx: ctxmod.Context, namespace: str, gone: Iterable[warmpool.Sandbox]) -> None:
    for s in gone:
        try:
            deleted = await asyncio.to_thread(ctx.kube.delete_pod_at, namespace, s.name, s.resource_version)
        except Exception as e:
            log.warning("deleting warm Pod %s/%s failed (%s)", namespace, s.name,
                        kube.refusal(e) if kube.is_api_error(e) else f"{type(e).__name__}: {e}")
            continue
        if not deleted:
            log.info("warm Pod %s/%s changed before its delete (claimed?); kept", namespace, s.name)
