"""What the reconcilers share: the cache, the API, the clock, the work queue, this replica's shards, and the
derived views of a build they all read (dependency readiness, usage, delivery state).

Derived views of a build are kept per build and brought up to date task by task (``Context.views``: only the tasks
whose object or MergeJob changed are read again), so a 10,000-task build costs one pass when it is first read, then
a few tasks per change, and nothing per task that asks.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from longshot import config
from longshot.api import conditions as cond
from longshot.api import keys, objects, timeutil
from longshot.api.handoff import PlannedTask
from longshot.controllers import cache as cachemod
from longshot.controllers import lanes as lanesmod
from longshot.controllers import workqueue
from longshot.core import delivery, dependencies, fanout, plan, tasks, usage
from longshot.net import guard as gd
from longshot.runtime import capacity as capacitymod
from longshot.runtime import kube as kubemod
from longshot.runtime import preflight

Key = cachemod.Key
MERGING_ROLES = tasks.MERGING_ROLES


@dataclass(frozen=True)
class BuildViews:
    """Derived facts about one build's tasks and MergeJobs."""

    deps: dict[str, dependencies.DepView]
    tokens: int
    cost: float
    fixers: int
    """Fixer tasks created for this build."""


@dataclass
class _BuildMemo:
    """A build's derived views and what they were made from, task by task, kept up to date by ``Context.views``
    (only the tasks that changed are read again, and the sums follow them)."""

    version: int = -1
    """``Cache.changes`` of the build when the views were brought up to date."""
    views: BuildViews | None = None
    base: dict[str, dependencies.DepView] = field(default_factory=dict)
    """Each task's own dependency view (before its sub-plan's part)."""
    usages: dict[str, tuple[objects.AgentTask, usage.Totals]] = field(default_factory=dict)
    """Each task's usage with the task object it was read from (the cache replaces an object when it changes)."""
    tokens: int = 0
    cost: float = 0.0
    cost_stale: bool = True
    """A task's cost came or went since ``cost`` was summed (summed again, not followed, so that no float error
    builds up)."""
    fixers: set[str] = field(default_factory=set)
    parent: dict[str, str] = field(default_factory=dict)
    """Tasks of a sub-plan -> their parent task (``spec.parentTask``)."""
    planners: set[str] = field(default_factory=set)
    """Planner tasks of a plan (``longshot.dev/plan-name``)."""
    fixed: set[str] = field(default_factory=set)
    """Tasks whose MergeJob a fixer took over: their view reads the fixer's, so it is made again every time."""

    def assemble(self) -> BuildViews:
        if self.cost_stale:
            self.cost = math.fsum(u.cost for _, u in self.usages.values())
            self.cost_stale = False
        views = dict(self.base)
        children: dict[str, list[str]] = defaultdict(list)
        for child, parent in self.parent.items():
            children[parent].append(child)
        for parent, kids in children.items():
            v = views.get(parent)
            if v is None:
                continue
            statuses = [dependencies.status_of(self.base[k]) for k in kids]
            views[parent] = dependencies.DepView(
                **{**_fields(v), "subplan_done": all(s == "done" for s in statuses),
                   "subplan_failed": any(s == "failed" for s in statuses)})
        for name in self.planners:
            if name not in children and self.usages[name][0].status.phase == tasks.SUCCEEDED:
                views[name] = dependencies.DepView(**{**_fields(views[name]), "subplan_done": False})
        return BuildViews(deps=views, tokens=self.tokens, cost=round(self.cost, 6), fixers=len(self.fixers))


@dataclass
class Context:
    cache: cachemod.Cache
    kube: kubemod.KubeAPI
    settings: config.Settings
    queue: workqueue.Enqueuer
    clock: Callable[[], datetime] = timeutil.utcnow
    rand: Callable[[], float] = random.random
    owns: Callable[[str], bool] = lambda shard: True
    """Whether this replica holds the shard (a repository key) now."""
    killswitch: bool = False
    plans: dict[Key, list[tuple[str, tuple[PlannedTask, ...], bool]]] = field(default_factory=lambda: defaultdict(list))
    """Plans returned by planner tasks, waiting for their build's reconcile: (planner, tasks, done)."""
    ledger_swept: dict[Key, datetime] = field(default_factory=dict)
    """When each build's ledger entries were last checked against ``spec.retention.ledger``
    (``controllers.retention.ledger_actions``)."""
    dispatch_errors: dict[Key, str] = field(default_factory=dict)
    """Builds whose part of the last dispatch plan raised, with the error's class (``core.scheduler.Selection
    .failed``): their reconcile sets the ``DispatchFailed`` condition."""
    preflight: Callable[[kubemod.KubeAPI, objects.BuildRequest], str | None] = preflight.check
    """The configuration check of a build's spec (``runtime.preflight.check``; unit tests inject their own)."""
    network_policy: Callable[[str], object] | None = None
    """Keep the default-deny agent NetworkPolicy of a namespace (``runtime.netpol.ensure``); None: off."""
    policed: set[str] = field(default_factory=set)
    """Namespaces whose agent NetworkPolicy this replica made sure of."""
    workspaces: Any = None
    """The operator's git workspaces (``controllers.queue.Workspaces``), shared by the merge queue, roadmap
    intake and best-of-N gates; set by the manager."""
    egress: gd.Guard | None = None
    """The egress policy of the operator's own connections for builds (git, trackers; ``longshot.net.guard``),
    set by the manager from the settings; None (unit tests): not checked."""
    cluster: capacitymod.ClusterFacts | None = None
    """The Nodes and the Pods on them as last listed (``Settings.admission_capacity: auto``; the manager refreshes
    it); None: not read yet, or not readable (``cluster_error`` says why)."""
    cluster_error: str = ""
    """Why the Nodes could not be read ("" when they were, or have not been tried yet)."""
    capacity_counted: bool = False
    """The last dispatch admitted by counted capacity (``auto`` with Nodes, or explicit): only then is a Pod the
    kube-scheduler cannot place withdrawn (with the numeric limits alone, withdrawing it would only lose its place in
    the kube-scheduler's queue)."""
    admission_line: dict[Key, tuple[str, str]] = field(default_factory=dict)
    """Ready tasks the last dispatch held for capacity, at the head of the line -> the message of their ``Admitted``
    condition, as (reason, message) (``Admitted=False/WaitingForCapacity``; the dispatcher keeps it, the task
    reconciler writes it)."""
    lanes: lanesmod.Lanes = field(default_factory=lanesmod.Lanes)
    """Tracker and forge calls: one per namespace at a time, a few at once (``controllers.lanes``)."""
    _memos: dict[Key, _BuildMemo] = field(default_factory=dict)
    """Per build: its derived views and what they were made from, task by task (``views``)."""

    # --- ownership -----------------------------------------------------------------------------------

    def observe(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Store an object read from the API (not from a watch) and enqueue every reference it concerns: its watch
        event, which arrives later with the same resourceVersion, looks like an echo and enqueues nothing."""
        self.queue.add_all(self.cache.observe(kind, event_type, body))

    def owns_build(self, build: objects.BuildRequest) -> bool:
        return self.owns(self.cache.shard_of(build))

    # --- derived views -----------------------------------------------------------------------------

    def forget(self, build: Key) -> None:
        """The build is gone: drop what was derived from it (and the task objects its memo holds)."""
        self._memos.pop(build, None)
        self.cache.changed_tasks.pop(build, None)
        self.ledger_swept.pop(build, None)

    def views(self, build: Key) -> BuildViews:
        """The build's derived views. Made once from all its tasks; then, when something of the build changed, only
        the tasks the cache says changed (``Cache.changed_tasks``: a task, or its MergeJob, stored or forgotten) and
        the tasks whose MergeJob a fixer took over (their view reads the fixer's) are read again: a large build's
        tasks change many times a second, and a pass over all of them for each plan and each build reconcile
        would hold the operator's event loop."""
        version = self.cache.changes.get(build, 0)
        memo = self._memos.get(build)
        if memo is not None and memo.version == version and memo.views is not None:
            return memo.views
        changed = self.cache.changed_tasks.pop(build, set())
        if memo is None:
            memo = self._memos[build] = _BuildMemo()
            changed = set(self.cache.tasks_by_build.get(build, ()))
        memo.version = version
        for name in changed | memo.fixed:
            self._refresh(build, memo, name)
        memo.views = memo.assemble()
        return memo.views

    def _refresh(self, build: Key, memo: _BuildMemo, name: str) -> None:
        """Task ``name``'s part of the build's views read again (dropped when it is no longer the build's)."""
        old = memo.usages.pop(name, None)
        if old is not None:
            memo.tokens -= old[1].tokens
            memo.cost_stale = memo.cost_stale or old[1].cost != 0
        memo.base.pop(name, None)
        memo.fixers.discard(name)
        memo.parent.pop(name, None)
        memo.planners.discard(name)
        memo.fixed.discard(name)
        t = self.cache.tasks.get((build[0], name))
        if t is None or name not in self.cache.tasks_by_build.get(build, ()):
            return
        # a task's view is its own object's and its MergeJob's; a job a fixer took over also reads the fixer's, so
        # its view is made again every time; the usage is read again only from a new object
        job = self.cache.job_of_task(t)
        memo.base[name] = self._dep_view(t, job)
        if job is not None and job.status.fixer:
            memo.fixed.add(name)
        used = old[1] if old is not None and old[0] is t else usage.task_usage(usage_wire(t))
        memo.usages[name] = (t, used)
        memo.tokens += used.tokens
        memo.cost_stale = memo.cost_stale or used.cost != 0
        if t.spec.role == "fixer":
            memo.fixers.add(name)
        if t.spec.parent_task:
            memo.parent[name] = t.spec.parent_task
        if t.spec.role == "planner" and t.metadata.annotations.get(keys.PLAN_NAME):
            memo.planners.add(name)

    def _dep_view(self, t: objects.AgentTask, job: objects.MergeJob | None) -> dependencies.DepView:
        handoff = t.status.handoff
        commit = handoff.commit if handoff is not None else None
        merging = t.spec.role in MERGING_ROLES and commit is not None
        last = max(t.status.attempts, key=lambda a: a.number) if t.status.attempts else None
        return dependencies.DepView(
            name=t.name, phase=t.status.phase or tasks.PENDING, merging=merging,
            delivered=job is not None and self.delivered(job),
            undeliverable=job is not None and self.undeliverable(job),
            has_commit=commit is not None,
            failure=(last.exit_reason or "") if last is not None and last.failure_class else "")

    def delivered(self, job: objects.MergeJob) -> bool:
        return delivery.delivered(job_facts(job))

    def undeliverable(self, job: objects.MergeJob) -> bool:
        """The job finished without merging and nothing will carry it any more (``core.delivery``)."""
        return delivery.undeliverable(job_facts(job), lambda name: self._fixer_facts(job.namespace, name))

    def _fixer_facts(self, namespace: str, name: str) -> delivery.FixerFacts | None:
        task = self.cache.tasks.get((namespace, name))
        if task is None:
            return None
        handoff = task.status.handoff
        job = self.cache.job_of_task(task)
        return delivery.FixerFacts(phase=task.status.phase,
                                   has_commit=handoff is not None and handoff.commit is not None,
                                   job=job_facts(job) if job is not None else None)

    def readiness(self, task: objects.AgentTask, build: objects.BuildRequest) -> tuple[str, str]:
        if not task.spec.depends_on:
            return "ready", ""
        policy = task.spec.depends_on_policy
        return dependencies.readiness(task.spec.depends_on, self.views(build.key).deps,
                                      mode=build.spec.dependencies, policy=policy.type, quorum=policy.k)

    def merge_readiness(self, task: objects.AgentTask, build: objects.BuildRequest) -> tuple[str, str]:
        """May the branch of ``task`` merge, given its dependencies (``core.dependencies.merge_readiness``)?"""
        if not task.spec.depends_on:
            return "ready", ""
        policy = task.spec.depends_on_policy
        return dependencies.merge_readiness(task.spec.depends_on, self.views(build.key).deps, policy=policy.type,
                                            quorum=policy.k)

    def fanout_of(self, task: objects.AgentTask, build: objects.BuildRequest) -> fanout.Settings | None:
        """The task's best-of-N settings, or None when it runs as one attempt (``core.fanout.effective``)."""
        if (task.spec.fanout is None and build.spec.fanout is None) or task.spec.role not in MERGING_ROLES \
                or fanout.FANOUT_LABEL in task.metadata.labels:
            return None
        if task.status.attempts and task.status.fanout is None:
            return None  # it started as one attempt before a fanout was set: it stays one
        own = task.spec.fanout.model_dump(by_alias=True) if task.spec.fanout is not None else None
        built = build.spec.fanout.model_dump(by_alias=True) if build.spec.fanout is not None else None
        planned = plan.PLAN_NAME_ANNOTATION in task.metadata.annotations
        return fanout.effective(own, built, role=task.spec.role, planned=planned)

    def usage(self, build: objects.BuildRequest) -> tuple[int, float]:
        v = self.views(build.key)
        return v.tokens, v.cost

    def budget_spent(self, build: objects.BuildRequest) -> bool:
        tokens, cost = self.usage(build)
        budget = build.spec.budget.model_dump(by_alias=True, exclude_none=True)
        return usage.budget_spent(budget, usage.Totals(tokens, cost)) is not None


def _fields(v: dependencies.DepView) -> dict[str, Any]:
    return {f: getattr(v, f) for f in v.__slots__}


def usage_wire(t: objects.AgentTask) -> dict[str, Any]:
    """The parts of a task's status that usage reads, as the API returns them."""
    st = t.status
    return {"status": {"attempts": [{"number": a.number, "tokens": a.tokens, "cost": a.cost} for a in st.attempts],
                       "progress": st.progress.model_dump(by_alias=True) if st.progress is not None else {}}}


def job_facts(job: objects.MergeJob) -> delivery.JobFacts:
    """What ``core.delivery`` reads of a MergeJob's status."""
    reconciling = cond.find([c.model_dump(by_alias=True) for c in job.status.conditions], cond.RECONCILING)
    return delivery.JobFacts(phase=job.status.phase, reconciling=reconciling.get("status") if reconciling else None,
                             fixer=getattr(job.status, "fixer", None))


def job_terminal(job: objects.MergeJob) -> bool:
    """No more tries will happen by themselves (``core.delivery.terminal``)."""
    return delivery.terminal(job_facts(job))


def conditions_of(obj: objects.Resource) -> list[dict[str, Any]]:
    status = getattr(obj, "status", None)
    return [c.model_dump(by_alias=True, mode="json", exclude_none=True) for c in getattr(status, "conditions", [])]


def refs_of_build(build: Key, names: Iterable[str], kind: str = "AgentTask") -> list[cachemod.Ref]:
    return [(kind, build[0], n) for n in names]
