"""Dispatch: which pending tasks start now (``core.scheduler.select``), across this replica's builds.

Candidates are the pending tasks of the builds whose shard this replica holds, with their dependencies' readiness
(``core.dependencies`` via the context); the operator-wide limit counts every running agent task the replica sees,
whichever replica started it. The chosen tasks are admitted through the task reconciler (one Pod create and one
status write each), concurrently: every Pod first, then the status writes (``manager``). A running task whose Pod
has ended holds no slot: the next task's Pod is created while the ended one's reconcile records its handoff (the
worker limit bounds Pods that run); in a build with a budget it does, until its handoff's usage is recorded. At most
``MAX_UNRECORDED_ENDS`` such slots are reused at once: past them, when the task controller is that far behind the
agents' ends, an ended task holds its slot until its end is recorded, so that new agents wait for the work already
done to be taken in instead of adding to it (backpressure). Those slots are shared between builds max-min fair
(``core.scheduler.share``): a build whose agents end in bulk gets no more of them than a build with a few. A
pending task whose next attempt's Pod is in the cache already counts as running (admitted, its status write not done
yet or interrupted): it holds its slot and is not admitted twice; its reconcile adopts the Pod. A best-of-N task
holds no slot and is never admitted: its candidates are (they run in parallel whatever their scope: one scheduling
group).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final

from longshot import metrics
from longshot.api import keys, objects
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.core import admission, fanout, scheduler, tasks, usage
from longshot.core import names as namesmod
from longshot.runtime import capacity as capacitymod
from longshot.runtime import pods

log = logging.getLogger(__name__)

MAX_UNRECORDED_ENDS = 64
"""Most slots of tasks whose Pod ended, their end not recorded yet, that one plan gives to new tasks. With a
fleet the task controller records ends more slowly than dispatch starts agents, and ended tasks would wait to be
taken in (their MergeJobs not made) while new agents took the machine (docs/benchmarks.md, "Where the shell's
constants come from")."""


@dataclass(frozen=True)
class Plan:
    admit: tuple[cachemod.Key, ...]
    budget_blocked: frozenset[str]
    failed: frozenset[cachemod.Key] = frozenset()
    """Builds whose dispatch error changed (appeared, changed or cleared; ``Context.dispatch_errors``): their
    reconcile writes the condition."""
    full: bool = False
    """Nothing can start until a slot comes free or a build changes (``Cache.freeing``): the operator-wide limit is
    reached, or every build of this replica is at its ``workers.max``, suspended, halted or out of budget. New tasks
    and status writes of running ones change nothing of that."""
    waiting: tuple[scheduler.Waiting, ...] = ()
    """Ready tasks held back because their Pod would not run now, in line (``scheduler.Selection.waiting``)."""
    unfit: tuple[cachemod.Key, ...] = ()
    """Ready tasks whose Pod fits on no node agent Pods may use, or exceeds their namespace's limit."""
    capacity: Capacity | None = None
    """How admission by capacity went in this plan."""
    tenant_held: tuple[tuple[cachemod.Key, str, str], ...] = ()
    """The next task of each tenant held back at its own limits, with the reason and message of its ``Admitted``
    condition (``scheduler.Selection.tenant_held``)."""


URGENT_ROLES: Final = frozenset({"fixer"})
"""Roles of the tasks that go first within their tenant and build (``scheduler.TaskView.urgent``), besides the
delivery tasks (``runtime.pods.DELIVERY_PURPOSES``: gates, reviews, sweeps, final tasks): others wait on them."""
TOKEN_WINDOW_SECONDS: Final = 3600
"""The window of a tenant's ``tokensPerHour``."""
TOKEN_RECOUNT_SECONDS: Final = 10.0
"""How often a plan counts again the tokens of the tenants that have a ``tokensPerHour`` (a pass over their tasks'
attempts); between counts a plan reads the last one."""


@dataclass(frozen=True)
class Capacity:
    """The mode admission by capacity ran in (``auto``, ``explicit``, ``fallback``: auto without Nodes it may count,
    ``off``), why (for ``fallback``), and the room left after the plan (None: not counted)."""

    mode: str
    why: str = ""
    free: admission.Resources | None = None


@dataclass
class Readiness:
    """What only dispatch reads, kept by the dispatcher (not in the shared context): when each ready pending task
    became ready as plans saw it (its dispatch latency counts from then), and the ready tasks the last plan held
    back."""

    ready_since: dict[cachemod.Key, datetime] = field(default_factory=dict)
    held: set[cachemod.Key] = field(default_factory=set)
    views: dict[cachemod.Key, tuple[objects.AgentTask, str, str, bool, scheduler.TaskView,
                                    tuple[int, datetime, str]]] = field(default_factory=dict)
    """Each task's scheduler view and its order, with what it was made from (the task object, its build, phase and
    readiness): a plan makes views only of the tasks that changed since the last one."""
    requested: dict[cachemod.Key, tuple[objects.AgentTask, objects.BuildRequest, tuple[object, object],
                                        admission.Resources]] = field(default_factory=dict)
    """Each ready task's Pod requests (:func:`requests_of`), with the task, build and operator defaults they were
    worked out from: a plan parses the amounts only of the tasks (or builds) that changed since the last one."""
    tokens: dict[str, int] = field(default_factory=dict)
    """Tenant -> its tokens in the last hour, as last counted (the tenants with a ``tokensPerHour``)."""
    tokens_counted: datetime | None = None
    room: tuple[capacitymod.ClusterFacts, admission.NodeRoom | None] | None = None
    """The Nodes' room less the Pods that are not this operator's agents (``core.admission.node_room``), with the
    cluster read (``Context.cluster``) it was made from: made once per read, not once per plan."""

    def view(self, t: objects.AgentTask, build: str, phase: str, ready: bool,
             requests: admission.Resources = admission.NOTHING) -> scheduler.TaskView:
        return self.keyed(t, build, phase, ready, requests)[1]

    def keyed(self, t: objects.AgentTask, build: str, phase: str, ready: bool,
              requests: admission.Resources = admission.NOTHING
              ) -> tuple[tuple[int, datetime, str], scheduler.TaskView]:
        """The task's view with its :func:`scheduler.order_key`."""
        memo = self.views.get(t.key)
        if memo is not None and memo[0] is t and memo[1] == build and memo[2] == phase and memo[3] == ready \
                and memo[4].requests == requests:
            return memo[5], memo[4]
        v = _view(t, build, phase, ready, requests)
        order = scheduler.order_key(v)
        self.views[t.key] = (t, build, phase, ready, v, order)
        return order, v

    def requests(self, ctx: ctxmod.Context, t: objects.AgentTask, build: objects.BuildRequest
                 ) -> admission.Resources:
        """:func:`requests_of`, worked out again only when the task, its build or the operator's defaults changed."""
        defaults = (ctx.settings.default_cpu_request, ctx.settings.default_memory_request)
        memo = self.requested.get(t.key)
        if memo is not None and memo[0] is t and memo[1] is build and memo[2] == defaults:
            return memo[3]
        amounts = requests_of(ctx, t, build)
        self.requested[t.key] = (t, build, defaults, amounts)
        return amounts

    def trim(self, running: list[scheduler.TaskView], pending: dict[str, list[tuple[objects.AgentTask, bool]]]
             ) -> None:
        """Forget the views of tasks no plan reads any more (ended, or gone), once they are as many as the rest."""
        if max(len(self.views), len(self.requested)) <= 2 * (len(running) + sum(len(w) for w in pending.values())) \
                + 1024:
            return
        keep = {(v.build.split("/", 1)[0], v.name) for v in running} | {t.key for w in pending.values() for t, _ in w}
        self.views = {k: m for k, m in self.views.items() if k in keep}
        self.requested = {k: m for k, m in self.requested.items() if k in keep}


def plan(ctx: ctxmod.Context, readiness: Readiness | None = None) -> Plan:
    """The tasks to admit now, and the builds whose ready work a spent budget holds back.

    One pass over the pending and running tasks (``Cache.live_by_build``: not the ended ones), build by build (a
    build's facts are read once): the running ones and the pending candidates; of another replica's build only its
    running tasks and the admitted ones (their Pod exists) count. Only builds that can start something now (a free
    slot of their own and of the operator-wide limit, not suspended, halted or out of budget) hand the scheduler
    their candidates, and of those only the head of the
    line it can start from (``scheduler.head_of_line``: with 3 free slots, the first 3 ready ones without a scope and
    any with a scope before them); any other build hands it one, which starts nothing and is enough for the
    scheduler to say why the build is held (a 10,000-task build whose slots are full costs its running tasks, not
    9,000 candidates' views). A task's view is made again only when the task changed (``Readiness.view``)."""
    now = ctx.clock()
    readiness = readiness if readiness is not None else Readiness()
    running: list[scheduler.TaskView] = []
    busy: dict[str, int] = defaultdict(int)
    pending: dict[str, list[tuple[objects.AgentTask, bool]]] = {}
    builds: dict[str, scheduler.BuildView] = {}
    ready_keys: set[cachemod.Key] = set()
    ended: dict[str, list[objects.AgentTask]] = {}  # per build: running tasks whose Pod ended, end not recorded
    errors: dict[str, str] = {}
    for (ns, build_name), names in list(ctx.cache.live_by_build.items()):
        bkey = f"{ns}/{build_name}"
        try:
            _gather(ctx, ns, build_name, names, now, running, busy, pending, builds, ready_keys, ended, readiness)
            if (ns, build_name) in ctx.cache.ingesting:  # its plan's tasks are still being created: none starts yet
                pending.pop(bkey, None)
                builds.pop(bkey, None)
        except Exception as e:  # one build's bad data: that build is left out of this plan, the others go on
            errors[bkey] = type(e).__name__
            pending.pop(bkey, None)
            builds.pop(bkey, None)
            log.warning("dispatch: build %s left out of the plan (%s)", bkey, type(e).__name__, exc_info=True)
    _reuse_ended_slots(ended, running, busy, readiness)
    readiness.trim(running, pending)
    metrics.set_tasks_by_state(ctx.cache.task_phases)
    metrics.ACTIVE_WORKERS.set(len(running))
    agents = Counter(v.build.split("/", 1)[0] for v in running)
    tenants = ctx.settings.tenants()
    metrics.set_tenants(agents, {t: admission.policy_of(tenants, t).weight for t in agents})
    metrics.PENDING_TASKS.set(len(ready_keys))
    since = readiness.ready_since
    readiness.ready_since = {k: since.get(k, now) for k in ready_keys}  # tasks no longer ready (or gone) drop out
    free = ctx.settings.max_workers - len(running)
    if not pending:
        readiness.held = set()
        metrics.set_tenant_limits({}, readiness.tokens)
        return Plan((), frozenset(), _record_errors(ctx, errors), full=free <= 0)
    candidates: list[scheduler.TaskView] = []
    for bkey, waiting in pending.items():
        b = builds[bkey]
        if free > 0 and busy[bkey] < b.max_workers and not (ctx.killswitch or b.halted or b.suspended
                                                             or b.budget_spent):
            # the few the scheduler can start of this build (``scheduler.head_of_line``), not all its candidates:
            # one whose dependencies hold it back never starts, and at most the build's free slots do
            ns, name = bkey.split("/", 1)
            build = ctx.cache.builds.get((ns, name))
            ready_views = [readiness.keyed(t, bkey, tasks.PENDING, True,
                                           readiness.requests(ctx, t, build) if build is not None
                                           else admission.NOTHING)
                           for t, ready in waiting if ready]
            candidates.extend(scheduler.head_of_line(ready_views, min(free, b.max_workers - busy[bkey])))
        else:  # it can start nothing now: one candidate says why (halted, suspended, budget) and starts nothing
            candidates.append(_view(waiting[0][0], bkey, tasks.PENDING, waiting[0][1]))
    room, mode = capacity(ctx, readiness)
    used = tenant_tokens(ctx, readiness, tenants, now)
    selection = scheduler.select(candidates, running, builds=builds, global_limit=ctx.settings.max_workers,
                                 killswitch=ctx.killswitch, capacity=room, tenants=tenants, tenant_tokens=used)
    metrics.set_tenant_limits({h.tenant: h.reason for h in selection.tenant_held}, used)
    errors.update(selection.failed)
    admit = tuple((v.build.split("/", 1)[0], v.name) for v in selection.start)
    readiness.held = ready_keys - set(admit)
    mode = replace(mode, free=room.total_free() if room is not None and room.free is not None else None)
    return Plan(admit, selection.budget_blocked, _record_errors(ctx, errors),
                full=free <= 0 or _all_full(ctx, busy, builds), waiting=selection.waiting,
                unfit=tuple((v.build.split("/", 1)[0], v.name) for v in selection.unfit), capacity=mode,
                tenant_held=tuple(((h.task.build.split("/", 1)[0], h.task.name), h.reason, h.message)
                                  for h in selection.tenant_held))


def capacity(ctx: ctxmod.Context, readiness: Readiness | None = None
             ) -> tuple[admission.Capacity | None, Capacity]:
    """The room agent Pods may take now (``core.admission``), and the mode it was counted in. Agent Pods are counted
    from the cache (their ends and creations as they happen); every other Pod, and the namespaces' ResourceQuotas,
    from the last read of the cluster (``Context.cluster``, ``Settings.admission_refresh_seconds``): the Nodes' room
    less the other Pods is worked out once per read (``Readiness.room``), each plan takes only the agent Pods from
    it."""
    settings = ctx.settings
    tenants = settings.tenants()
    # a warm sandbox's room is its build's next attempts' (docs/warm-pools.md): a task that claims it needs no more,
    # so it holds none here (counted, it would hold back the very tasks that would claim it)
    agents = {k: admission.PodUse(p.node, p.requests, p.namespace) for k, p in ctx.cache.pods.items()
              if not p.ended and not p.warm}
    mode = settings.capacity_mode()
    facts = ctx.cluster
    quotas = facts.quotas if facts is not None else {}
    if mode == "explicit":
        total = settings.explicit_capacity()
        assert total is not None
        return admission.explicit_capacity(total, agents.values(), tenants, quotas), Capacity("explicit")
    if mode == "auto":
        if facts is None:
            if not ctx.cluster_error:  # not read yet (the operator is starting): nothing starts until it is
                return admission.Capacity(free={}), Capacity("auto", "the Nodes have not been read yet")
            why = ctx.cluster_error
        else:
            memo = readiness.room if readiness is not None else None
            if memo is not None and memo[0] is facts:
                room = memo[1]
            else:
                room = admission.node_room(facts.nodes, [u for k, u in facts.pods.items() if k not in ctx.cache.pods],
                                           selector=settings.node_selector(), tolerations=settings.tolerations())
                if readiness is not None:
                    readiness.room = (facts, room)
            if room is not None:
                return (admission.capacity_from(room, agents.values(), tenants=tenants, quotas=quotas),
                        Capacity("auto", f"only agent Pods counted, no quota: {facts.partial}" if facts.partial
                                 else ""))
            why = "no schedulable Node matches the agent Pods' node selector and tolerations"
        return admission.tenant_capacity(agents.values(), tenants, quotas), Capacity("fallback", why)
    return admission.tenant_capacity(agents.values(), tenants), Capacity("off")


def tenant_tokens(ctx: ctxmod.Context, readiness: Readiness, tenants: dict[str, admission.TenantPolicy],
                  now: datetime) -> dict[str, int]:
    """Each tenant's tokens in the last hour (``core.admission.tokens_in_window``), for the tenants whose policy has
    a ``tokensPerHour``; counted again at most every :data:`TOKEN_RECOUNT_SECONDS`."""
    if not any(p.tokens_per_hour is not None for p in tenants.values()):
        return {}
    last = readiness.tokens_counted
    if last is not None and 0 <= (now - last).total_seconds() < TOKEN_RECOUNT_SECONDS:
        return readiness.tokens
    since = now - timedelta(seconds=TOKEN_WINDOW_SECONDS)
    per: dict[str, list[tuple[int, datetime | None]]] = defaultdict(list)
    for (ns, _build), names in list(ctx.cache.tasks_by_build.items()):
        if admission.policy_of(tenants, ns).tokens_per_hour is None:
            continue
        for name in names:
            t = ctx.cache.tasks.get((ns, name))
            if t is not None:
                per[ns].extend(_attempt_tokens(t))
    readiness.tokens = {ns: admission.tokens_in_window(attempts, since) for ns, attempts in per.items()}
    readiness.tokens_counted = now
    return readiness.tokens


def _attempt_tokens(t: objects.AgentTask) -> list[tuple[int, datetime | None]]:
    """A task's attempts as (tokens, end): each attempt's usage as the build's budget counts it
    (``core.usage.attempt_usage``: recorded or metered, the larger), with its recorded end (None: still running)."""
    ends = {a.number: a.end_time for a in t.status.attempts}
    return [(u.tokens, ends.get(n)) for n, u in usage.attempt_usage(ctxmod.usage_wire(t)).items()]


def requests_of(ctx: ctxmod.Context, t: objects.AgentTask, build: objects.BuildRequest) -> admission.Resources:
    """What the task's next agent Pod will request (``runtime.pods``' rule: the task's ``spec.agent``, its
    ``spec.resources``, the build's ``spec.agent``, the operator's defaults); unreadable amounts count as 0."""
    layers = [t.spec.agent.resources if t.spec.agent is not None else None, t.spec.resources,
              build.spec.agent.resources]
    asked = [r.requests for r in layers if r is not None and r.requests is not None]
    cpu = next((q.cpu for q in asked if q.cpu is not None), ctx.settings.default_cpu_request)
    memory = next((q.memory for q in asked if q.memory is not None), ctx.settings.default_memory_request)
    try:
        return admission.Resources(admission.cpu_millis(cpu), admission.memory_bytes(memory))
    except (ValueError, TypeError):
        return admission.NOTHING


def _all_full(ctx: ctxmod.Context, busy: dict[str, int], builds: dict[str, scheduler.BuildView]) -> bool:
    """Every build of this replica can start nothing until a slot comes free or it changes: at its ``workers.max``,
    suspended, halted or out of budget (those with pending tasks, ``builds``); a build without pending tasks counts
    as full only at its ``workers.max`` (a task created in it may start at once)."""
    for key, build in ctx.cache.builds.items():
        bkey = f"{key[0]}/{key[1]}"
        view = builds.get(bkey)
        if view is not None:
            if not (busy[bkey] >= view.max_workers or view.halted or view.suspended or view.budget_spent):
                return False
        elif busy[bkey] < build.spec.workers.max and ctx.owns_build(build):
            return False
    return True


def _record_errors(ctx: ctxmod.Context, errors: dict[str, str]) -> frozenset[cachemod.Key]:
    """Keep this plan's per-build errors in the context; the builds whose error changed."""
    new: dict[cachemod.Key, str] = {}
    for bkey, error in errors.items():
        ns, name = bkey.split("/", 1)
        new[(ns, name)] = error
    old = ctx.dispatch_errors
    changed = frozenset(k for k in new.keys() | old.keys() if new.get(k) != old.get(k))
    ctx.dispatch_errors = new
    return changed


def _gather(ctx: ctxmod.Context, ns: str, build_name: str, names: Iterable[str], now: datetime,
            running: list[scheduler.TaskView], busy: dict[str, int],
            pending: dict[str, list[tuple[objects.AgentTask, bool]]], builds: dict[str, scheduler.BuildView],
            ready_keys: set[cachemod.Key], ended: dict[str, list[objects.AgentTask]], readiness: Readiness) -> None:
    """One build's part of the plan's inputs from its pending and running tasks (``names``): its running tasks, its
    pending candidates, and (``ended``) its running tasks whose Pod has ended, which :func:`_reuse_ended_slots`
    counts as running or not. Of another replica's build, a pending task counts only once admitted (its Pod is in
    the cache); it is no candidate here."""
    build = ctx.cache.builds.get((ns, build_name))
    if build is None:
        return
    bkey = f"{ns}/{build_name}"
    ours = ctx.owns_build(build)  # whether this replica holds the build's shard
    admitted = ctx.cache.pods_by_task
    for name in list(names):
        key = (ns, name)
        t = ctx.cache.tasks.get(key)
        seat = _seat(ctx, t, key, build, ours or bool(admitted.get(key))) if t is not None else None
        if t is None or seat is None:
            continue
        if seat == ENDED:
            ended.setdefault(bkey, []).append(t)
            continue  # its Pod has ended: its slot may be free now, before its reconcile records how it ended
        if seat == tasks.RUNNING:
            running.append(readiness.view(t, bkey, seat, True))
            busy[bkey] += 1
            continue
        if not ours or t.metadata.deleting or not t.status.conditions:
            continue
        ready = ctx.readiness(t, build)[0] == "ready"
        if ready:
            ready_keys.add(key)
        pending.setdefault(bkey, []).append((t, ready))
        if bkey not in builds:
            builds[bkey] = _build_view(ctx, build)


ENDED: Final = "Ended"
"""A running task whose Pod has ended, its end not recorded yet (:func:`_reuse_ended_slots`)."""


def _seat(ctx: ctxmod.Context, t: objects.AgentTask, key: cachemod.Key, build: objects.BuildRequest,
          visible: bool) -> str | None:
    """How the plan counts ``t``: Running (it holds a slot), Pending (a candidate), :data:`ENDED`, or None (not at
    all: cancelled, suspended, finished, a best-of-N task, or another replica's not admitted; ``visible``: this
    replica's build, or the task's Pod is in the cache)."""
    phase = t.status.phase or tasks.PENDING
    if phase == tasks.PENDING and (t.spec.cancel or t.spec.suspend or not visible):
        return None
    if phase not in (tasks.PENDING, tasks.RUNNING) or ctx.fanout_of(t, build) is not None:
        return None
    if phase == tasks.PENDING and not ctx.cache.pods_by_task.get(key):
        return phase  # most of a large build: no Pod of it in the cache, so neither admitted nor ended
    if phase == tasks.PENDING and _next_pod_exists(ctx, t, key):
        return tasks.RUNNING  # admitted, its status not written yet (or interrupted): it holds a slot
    if slot_freed(ctx, t, build):
        return ENDED
    return phase


def _reuse_ended_slots(ended: dict[str, list[objects.AgentTask]], running: list[scheduler.TaskView],
                       busy: dict[str, int], readiness: Readiness) -> None:
    """Give back the slots of at most ``MAX_UNRECORDED_ENDS`` tasks whose Pod ended (their end not recorded),
    shared between builds (``core.scheduler.share``); every other ended task holds its slot: it counts as running
    (its scope too) until its reconcile records its end."""
    given = scheduler.share({b: len(ts) for b, ts in ended.items()}, MAX_UNRECORDED_ENDS)
    for b, ts in ended.items():
        held = ts[given.get(b, 0):]
        running.extend(readiness.view(t, b, tasks.RUNNING, True) for t in held)
        busy[b] += len(held)


def slot_freed(ctx: ctxmod.Context, t: objects.AgentTask, build: objects.BuildRequest) -> bool:
    """The task is Running in the cache, its Pod has ended, and its build has no budget: its worker slot is free
    before its reconcile records how it ended."""
    return t.status.phase == tasks.RUNNING and not _budgeted(build) and _pod_ended(ctx, t)


def _pod_ended(ctx: ctxmod.Context, t: objects.AgentTask) -> bool:
    """The Pod of the task's current attempt is in the cache and has ended (Succeeded or Failed)."""
    if not t.status.attempts or not ctx.cache.pods_by_task.get(t.key):
        return False
    attempt = max(a.number for a in t.status.attempts)
    pod = ctx.cache.pods.get((t.namespace, cachemod.pod_name(t.name, attempt)))
    return pod is not None and pod.ended


def _budgeted(build: objects.BuildRequest) -> bool:
    """The build has a token or cost budget: an ended task holds its slot until its handoff's usage is recorded,
    so that no work starts that the budget would not allow."""
    budget = build.spec.budget
    return budget.max_tokens is not None or budget.max_cost is not None


def _next_pod_exists(ctx: ctxmod.Context, t: objects.AgentTask, key: cachemod.Key) -> bool:
    """The Pod of the task's next attempt is in the cache: the task was admitted (its reconcile adopts the Pod)."""
    if not ctx.cache.pods_by_task.get(key):
        return False
    attempt = max((a.number for a in t.status.attempts), default=0) + 1
    pod = ctx.cache.pods.get((key[0], cachemod.pod_name(key[1], attempt)))
    return pod is not None and not pod.deleting


def _view(t: objects.AgentTask, build: str, phase: str, ready: bool,
          requests: admission.Resources = admission.NOTHING) -> scheduler.TaskView:
    return scheduler.TaskView(name=t.name, build=build, priority=t.spec.priority,
                              created=t.metadata.creation_timestamp, depends_on=tuple(t.spec.depends_on),
                              scope=tuple(t.spec.scope), phase=phase, dependencies_ready=ready,
                              group=_group(t), requests=requests,
                              urgent=t.spec.role in URGENT_ROLES or cachemod.purpose(t) in pods.DELIVERY_PURPOSES)


def _group(t: objects.AgentTask) -> str:
    """The scheduler's group of a task: a best-of-N task's candidates share one; so do a delegating task and the
    children it made (it awaits them while it runs: their scopes must not keep them apart)."""
    fan = t.metadata.labels.get(fanout.FANOUT_LABEL)
    if fan:
        return fan
    parent = t.metadata.labels.get(keys.PARENT)
    if parent:
        return f"delegation:{parent}"
    return f"delegation:{namesmod.fit(t.name)}" if t.status.delegation is not None else ""


def _build_view(ctx: ctxmod.Context, build: objects.BuildRequest) -> scheduler.BuildView:
    tokens, cost = ctx.usage(build)
    budget = build.spec.budget
    configured = ctx_configuration_ok(ctx, build)
    return scheduler.BuildView(
        name=build.name, max_workers=build.spec.workers.max,
        suspended=build.spec.suspend or build.metadata.deleting or not configured or not observed(build),
        halted=ctx.killswitch, tokens_used=tokens, max_tokens=budget.max_tokens, cost_used=cost,
        max_cost=budget.max_cost)


def observed(build: objects.BuildRequest) -> bool:
    """The operator has decided on the build's current spec (``status.observedGeneration``): until its reconcile
    has, nothing of the build starts, since that reconcile may stop it (a spec that fails its configuration check
    stops the build before any Pod; a suspension; a budget). Dispatch runs beside the build's reconcile, so it
    cannot count on having run after it."""
    return build.status.observed_generation == build.generation


def ctx_configuration_ok(ctx: ctxmod.Context, build: objects.BuildRequest) -> bool:
    """A build whose spec failed its configuration check starts no Pod (its Stalled condition says why)."""
    for c in build.status.conditions:
        if c.type == "Stalled" and c.status == "True" and c.reason == "Configuration":
            return False
    return True
