"""Warm pools of agent sandboxes: which warm Pod an attempt claims, and how many a build keeps. Pure.

A warm sandbox is an agent Pod of a build's worker template started ahead of any task: the runner up, the image
pulled, and nothing task-specific in it (no task input, no task labels, no credential: its token is Pod-bound and
the gateway serves a Pod only once its controller is an AgentTask whose current attempt recorded its UID). Its
controller is the BuildRequest; its label ``longshot.dev/warm-template`` is :func:`template_hash` of its spec.

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

**Pool size** (:func:`plan`): while the build is active, ``min(size, upcoming, tenant room)`` sandboxes of the
current template, where ``upcoming`` is the build's pending tasks (the queue's demand) and the tenant room is its
``maxAgents`` less its running agents (a pool never holds what its tenant may not run). Fairness across tenants is
the scheduler's: a sandbox changes how fast a Pod starts, never which task starts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

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
    """A warm Pod of one build, as the operator's cache sees it."""

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
    tenant_room: int | None = None
    """Agents its namespace may still start (``maxAgents`` less its running agents); None: no limit."""


@dataclass(frozen=True)
class PoolPlan:
    create: int
    """Warm Pods to create."""
    delete: tuple[Sandbox, ...]
    """Warm Pods to delete (fenced on their resourceVersion)."""
    target: int
    ready: int
    """Unclaimed warm Pods of the current template that run (the gauge)."""


def target(facts: PoolFacts) -> int:
    """How many warm Pods the build keeps: 0 while it is not active or has no pending task, else
    ``min(size, upcoming, tenant room)``."""
    if not facts.active or facts.size <= 0 or facts.upcoming <= 0:
        return 0
    room = facts.upcoming if facts.tenant_room is None else min(facts.upcoming, max(0, facts.tenant_room))
    return min(facts.size, room)


def plan(facts: PoolFacts, sandboxes: Iterable[Sandbox], *, now: datetime) -> PoolPlan:
    """What to do with a build's warm pool.

    ============================================  ============================================
    sandbox                                       decision
    ============================================  ============================================
    claimed, or being deleted                     not the pool's any more: left alone
    ended (its runner exited, deadline passed)    deleted
    of another template (the build's spec         deleted
    changed)
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
    live.sort(key=lambda s: (s.created or now, s.name), reverse=True)  # youngest first: kept first
    for s in live[want:]:
        age = (now - s.created).total_seconds() if s.created is not None else facts.idle_seconds
        if age >= facts.idle_seconds:
            delete.append(s)
    kept = [s for s in live if s not in delete]
    ready = sum(1 for s in kept if s.ready)
    return PoolPlan(create=max(0, want - len(kept)), delete=tuple(delete), target=want, ready=ready)
