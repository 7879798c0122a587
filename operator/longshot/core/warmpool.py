"""Warm pools of agent sandboxes: which warm Pod an attempt claims, and how many a build keeps. Pure.

A warm sandbox is an agent Pod of a build's worker template started ahead of any task: the runner up, the image
pulled, and nothing task-specific in it (no task input, no task labels, no credential: its token is Pod-bound and
the gateway serves a Pod only once its controller is an AgentTask whose current attempt recorded its UID). Its
controller is the BuildRequest that made it; its label ``longshot.dev/warm-template`` is :func:`template_hash` of its
spec. A pool is the warm Pods of one template in one shard (a tenant's repository): every build of the shard whose
workers run that template claims from it, and :func:`plan` sizes it as one build (the shell sums their demand).

**Claim** (one attempt, one sandbox). An attempt whose cold Pod would have the same template hash claims a warm
Pod with one write: a patch fenced on the Pod's ``resourceVersion`` that makes the AgentTask its controller, adds
the attempt's labels (with ``longshot.dev/warm-claim: <task>-a<N>``, the cold Pod's name) and the task-input
annotation. The attempt is then recorded with that Pod's UID, as for a cold Pod.

======================  =====================================  =============================================
state of the sandbox    event                                  next
======================  =====================================  =============================================
Warm (BuildRequest)     claim patch wins                       Claimed (AgentTask controller, UID unrecorded)
Warm                    claim patch answers 409 (another       Warm for the other claimer: this attempt tries
                        replica claimed it, or it changed)     the next of :func:`claim_order`, else cold (miss)
Warm                    :func:`plan` deletes it (stale         gone (delete fenced on its resourceVersion: a
                        template, ended, idle, surplus)        claim that won first makes the delete fail)
Claimed, unrecorded     the task's status write                Recorded: the gateway serves it (identity.py)
Claimed, unrecorded     the replica dies before that write     the task's next reconcile finds the Pod by its
                                                               warm-claim name and adopts it (as a cold Pod
                                                               created before a lost status write)
Recorded                the attempt ends                       deleted as any attempt's Pod: never reused
======================  =====================================  =============================================

**Pool size** (:func:`plan`): while a build of the pool is active, ``min(size, upcoming, allotted)`` sandboxes of
its template, where ``upcoming`` is its builds' pending tasks (the queue's demand) and ``allotted`` is its share
of the room that :func:`allot` divides between the pools: what the operator's ``max_workers`` and each tenant's
``maxAgents``, cpu and memory leave after the running agents (a warm sandbox holds a Pod, its requests and a slot
it will run in: a pool never holds what its tenant, or the operator, may not run), given out one sandbox at a time to
the tenant with the fewest for its weight, and within a tenant to its pool with the fewest. Which task starts stays
the scheduler's: a sandbox changes how fast a Pod starts, never which task starts.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from longshot.core.admission import NOTHING, Resources

HASH_LEN: Final = 16
TRACEPARENT_ENV: Final = "TRACEPARENT"
VARYING_SPEC: Final = frozenset({"activeDeadlineSeconds"})
"""Fields of a Pod spec that differ between attempts of one template: not hashed (the claim sets the deadline)."""


def template_hash(spec: Mapping[str, Any]) -> str:
    """The hash of a Pod spec as a warm sandbox's template: everything the container runs with (image, command,
    env, resources, volumes, runtime class, placement), less what is per attempt (the deadline, the trace parent and
    the gateway token's lifetime, which follows the deadline)."""
    clean = {k: v for k, v in spec.items() if k not in VARYING_SPEC}
    clean["containers"] = [{**c, "env": [e for e in c.get("env") or [] if e.get("name") != TRACEPARENT_ENV]}
                           for c in spec.get("containers") or []]
    volumes = []
    for v in spec.get("volumes") or []:
        projected = v.get("projected")
        if projected is not None:
            v = {**v, "projected": {**projected, "sources": [
                {**s, "serviceAccountToken": {k: x for k, x in s["serviceAccountToken"].items()
                                              if k != "expirationSeconds"}} if "serviceAccountToken" in s else s
                for s in projected.get("sources") or []]}}
        volumes.append(v)
    clean["volumes"] = volumes
    raw = json.dumps(clean, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:HASH_LEN]


@dataclass(frozen=True)
class Sandbox:
    """A warm Pod of one pool, as the operator's cache sees it."""

    name: str
    uid: str
    resource_version: str
    template: str
    created: datetime | None
    phase: str = "Pending"
    ready: bool = False
    """Its runner is up (the container runs)."""
    deleting: bool = False
    claimed: bool = False
    """Its controller is an AgentTask already (claimed, the attempt's status may not say so yet)."""
    deadline: int | None = None
    """Its ``activeDeadlineSeconds``, from its start: a claim may only lower it (None: not known)."""

    @property
    def ended(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def claim_order(sandboxes: Iterable[Sandbox], template: str) -> tuple[Sandbox, ...]:
    """The warm Pods an attempt of ``template`` may claim, in the order it tries them: unclaimed, not being deleted,
    not ended, of the same template; running ones first (the runner is waiting), then the oldest (its image pull is
    furthest along). Empty: the attempt starts cold (a miss)."""
    fit = [s for s in sandboxes if s.template == template and not (s.claimed or s.deleting or s.ended)]
    return tuple(sorted(fit, key=lambda s: (not s.ready, s.created or datetime.max, s.name)))


@dataclass(frozen=True)
class PoolFacts:
    """What :func:`plan` decides from, for one build."""

    size: int
    """``spec.agent.warmPool.size`` (else the operator's default)."""
    template: str
    """The hash of the build's worker template now."""
    active: bool
    """The build may start agents (not suspended, halted, finished, deleted, out of budget; no killswitch)."""
    upcoming: int
    """Its pending tasks (not running, not ended): the queue's demand."""
    idle_seconds: int = 300
    room: int | None = None
    """The sandboxes :func:`allot` gives this build for its demand (its share of the operator's and its tenant's
    room); None: no limit."""
    bound: int | None = None
    """The most it may hold whatever its demand: its share of that room at its full ``size`` (:func:`allot` with
    each pool asking its size). Sandboxes beyond it are deleted at once, not after ``idle_seconds``; None: no
    limit."""


@dataclass(frozen=True)
class PoolPlan:
    create: int
    """Warm Pods to create."""
    delete: tuple[Sandbox, ...]
    """Warm Pods to delete (fenced on their resourceVersion)."""
    target: int
    ready: int
    """Unclaimed warm Pods of the current template that run (the gauge)."""


def wanted(facts: PoolFacts) -> int:
    """How many warm Pods the build asks for, before :func:`allot`: 0 while it is not active or has no pending task,
    else ``min(size, upcoming)``."""
    if not facts.active or facts.size <= 0 or facts.upcoming <= 0:
        return 0
    return min(facts.size, facts.upcoming)


def target(facts: PoolFacts) -> int:
    """How many warm Pods the build keeps: :func:`wanted`, at most its ``room`` (:func:`allot`)."""
    want = wanted(facts)
    return want if facts.room is None else min(want, max(0, facts.room))


def plan(facts: PoolFacts, sandboxes: Iterable[Sandbox], *, now: datetime) -> PoolPlan:
    """What to do with a warm pool.

    ============================================  ============================================
    sandbox                                       decision
    ============================================  ============================================
    claimed, or being deleted                     not the pool's any more: left alone
    ended (its runner exited, deadline passed)    deleted
    of another template (the build's spec         deleted
    changed)
    beyond ``bound`` (the room shrank: the        deleted at once, the last of
    operator's or the tenant's limits)            :func:`claim_order` first
    beyond the target (demand fell), while the    deleted after ``idle_seconds`` of age,
    build is active                               youngest kept (it has the longest to live)
    the build is not active, or its pool is off   deleted
    fewer live than the target                    created: the difference
    ============================================  ============================================
    """
    want = target(facts)
    live: list[Sandbox] = []
    delete: list[Sandbox] = []
    for s in sandboxes:
        if s.claimed or s.deleting:
            continue
        if s.ended or s.template != facts.template or not facts.active or facts.size <= 0:
            delete.append(s)
        else:
            live.append(s)
    if facts.bound is not None and len(live) > max(0, facts.bound):
        order = claim_order(live, facts.template)
        over = order[max(0, facts.bound):]
        delete.extend(over)
        live = [s for s in live if s not in over]
    live.sort(key=lambda s: (s.created or now, s.name), reverse=True)  # youngest first: kept first
    for s in live[want:]:
        age = (now - s.created).total_seconds() if s.created is not None else facts.idle_seconds
        if age >= facts.idle_seconds:
            delete.append(s)
    kept = [s for s in live if s not in delete]
    ready = sum(1 for s in kept if s.ready)
    return PoolPlan(create=max(0, want - len(kept)), delete=tuple(delete), target=want, ready=ready)


# --- the room, divided between the pools -------------------------------------------------------------------


@dataclass(frozen=True)
class Want:
    """One pool's ask of :func:`allot`."""

    key: str
    """The pool."""
    tenant: str
    """Its namespace."""
    want: int
    """:func:`wanted`."""
    requests: Resources = NOTHING
    """What one of its sandboxes requests (cpu, memory)."""


@dataclass(frozen=True)
class TenantRoom:
    """What one tenant's pools may still hold."""

    weight: float = 1.0
    """Its weight in fair sharing (``core.admission.TenantPolicy.weight``)."""
    agents: int | None = None
    """Its ``maxAgents`` less its running agents and the warm Pods of pools not divided here; None: no limit."""
    resources: Resources | None = None
    """Its cpu and memory limit less what those Pods request; None: no limit."""


def allot(wants: Sequence[Want], *, room: int | None,
          tenants: Mapping[str, TenantRoom] | None = None) -> dict[str, int]:
    """``{pool: sandboxes}``: the room divided between the pools, each given at most its ``want``.

    ``room`` is what the operator may still run (``max_workers`` less its running agents and the warm Pods of pools
    not divided here; None: no limit). It is given out one sandbox at a time:

    ==========================================  ==================================================================
    step                                        decision
    ==========================================  ==================================================================
    which tenant                                the one with the fewest sandboxes given for its weight (then by
                                                name) among those with a pool that still wants one and fits
    which of its pools                          the one with the fewest given (then in ``wants``' order)
    a pool wants no more                        left out
    one more sandbox of a pool would pass its   that pool left out (its tenant's other pools may still fit)
    tenant's agents, cpu or memory room
    the room is used up, or no pool is left     done
    ==========================================  ==================================================================

    So while the room lasts every pool gets what it wants; when it does not, each tenant gets a share in proportion
    to its weight (a tenant that wants less than its share leaves the rest to the others), and no tenant's pools hold
    more than its limits leave.
    """
    tenants = tenants or {}
    given = {w.key: 0 for w in wants}
    by_tenant: dict[str, list[tuple[int, int, Want]]] = {}
    for i, w in enumerate(wants):
        if w.want > 0:
            by_tenant.setdefault(w.tenant, []).append((0, i, w))
    left_agents = {t: tenants[t].agents if t in tenants else None for t in by_tenant}
    left_res = {t: tenants[t].resources if t in tenants else None for t in by_tenant}
    weight = {t: max(tenants[t].weight, 1e-9) if t in tenants else 1.0 for t in by_tenant}
    for builds in by_tenant.values():
        heapq.heapify(builds)
    count = dict.fromkeys(by_tenant, 0)
    order = [(0.0, t) for t in sorted(by_tenant)]
    heapq.heapify(order)
    left = room
    while order and (left is None or left > 0):
        _, t = heapq.heappop(order)
        builds = by_tenant[t]
        agents = left_agents[t]
        if agents is not None and agents <= 0:
            continue  # the tenant is full: none of its builds gets more
        res = left_res[t]
        while builds:
            n, i, w = builds[0]
            if n >= w.want or (res is not None and (w.requests.cpu > res.cpu or w.requests.memory > res.memory)):
                heapq.heappop(builds)  # wants no more, or one more passes its tenant's cpu or memory
                continue
            break
        if not builds:
            continue
        n, i, w = heapq.heappop(builds)
        given[w.key] = n + 1
        heapq.heappush(builds, (n + 1, i, w))
        count[t] += 1
        if agents is not None:
            left_agents[t] = agents - 1
        if res is not None:
            left_res[t] = Resources(res.cpu - w.requests.cpu, res.memory - w.requests.memory, res.pods)
        if left is not None:
            left -= 1
        heapq.heappush(order, (count[t] / weight[t], t))
    return given


def holdable(wants: Sequence[Want], given: Mapping[str, int], sizes: Mapping[str, int], *, room: int | None,
             tenants: Mapping[str, TenantRoom] | None = None) -> dict[str, int]:
    """``{pool: most sandboxes it may hold}``: what :func:`allot` gave it for its demand (``given``), plus its share
    of the room the demand left, up to its size (:func:`allot` again: each pool asks ``size - given`` of the room
    and the tenants' limits less what ``given`` took). Sandboxes a pool keeps past its demand (waiting out their
    ``idle_seconds``) stay within it; together, never more than the room."""
    tenants = tenants or {}
    spare = None if room is None else room - sum(given.get(w.key, 0) for w in wants)
    took: dict[str, tuple[int, Resources]] = {}
    for w in wants:
        n, used = took.get(w.tenant, (0, NOTHING))
        g = given.get(w.key, 0)
        took[w.tenant] = (n + g, Resources(used.cpu + g * w.requests.cpu, used.memory + g * w.requests.memory))
    left: dict[str, TenantRoom] = {}
    for t, (n, used) in took.items():
        tr = tenants.get(t, TenantRoom())
        left[t] = TenantRoom(weight=tr.weight, agents=None if tr.agents is None else tr.agents - n,
                             resources=None if tr.resources is None else Resources(
                                 tr.resources.cpu - used.cpu, tr.resources.memory - used.memory, tr.resources.pods))
    extra = allot([Want(w.key, w.tenant, max(0, sizes.get(w.key, 0) - given.get(w.key, 0)), w.requests)
                   for w in wants], room=spare, tenants=left)
    return {w.key: given.get(w.key, 0) + extra[w.key] for w in wants}
