"""The AgentTask reconciler: observe a task and its Pod, ask ``core.tasks.decide``, return the actions.

``reconcile(key)`` turns what is observed into decider events:

* ``spec.cancel`` -> ``CancelRequested``; a new ``spec.retryToken`` -> ``RetryRequested`` (a relaunch, in any
  state); ``spec.suspend`` differing from the ``Suspended`` condition, or true while an attempt runs ->
  ``SuspendChanged`` (a running attempt's Pod is not observed: it is deleted);
* a task stopped for a person resumes (``Resume``) when its build's spec changed since (Auth, Configuration) or
  the budget allows work again (BudgetExceeded);
* Running: the killswitch -> ``Killswitch``; the attempt's Pod ended -> ``PodFinished`` with its handoff (read
  from the termination message, or fetched from git when it is a pointer) and the gateway's metered usage; a
  Pod that will never start (``core.failures.stuck``, with its FailedMount Events) -> deleted and
  ``PodFinished``; a Pod missing from the cache and from the API -> ``PodVanished``;
* Pending: a Pod of the next attempt that exists already is adopted; the dependencies' readiness
  (``core.dependencies``) -> ``DependenciesChanged`` when it differs from the task's conditions;
* Backoff: due -> ``BackoffElapsed``, else a timer;
* AwaitingInput: a ``spec.answer`` that differs from ``status.answer`` -> ``Answered``;
* Running, the Pod running but silent: no heartbeat (``status.progress.lastHeartbeat``, else the attempt's start)
  for longer than ``LONGSHOT_HEARTBEAT_TIMEOUT_SECONDS`` -> ``HeartbeatLost`` (the Pod is deleted);
* a best-of-N task (``core.fanout``): its dependencies ready -> ``StartFanout``; while its round runs
  ``controllers.fanout`` gates and judges the candidates -> ``FanoutFinished``.

* a task whose agent asked for children (delegation): its ``status.children`` as ``core.delegation`` decides it
  (``controllers.delegating.children_status``; the build's reconcile creates the children and enqueues the task
  when it should change).

This reconciler is the one writer of an AgentTask's status: the dispatcher carries out what
:meth:`TaskReconciler.admit` returns, and the build's reconcile asks through the work queue
(``tests/unit/controllers/test_task_status_writer.py`` holds it).

Admission (``Admitted``) comes from the dispatcher, through :meth:`TaskReconciler.admit`. The effects become
executor actions; the status is written once, last, fenced on the task's resourceVersion.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, assert_never

from longshot import metrics, tracing
from longshot.api import conditions as cond
from longshot.api import handoff as ho
from longshot.api import objects
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import delegating, taskinput, warmpools
from longshot.controllers import executor as ex
from longshot.controllers import fanout as fanoutc
from longshot.core import binding, failures, fanout, forge, ledger, manifests, personas, tasks, usage
from longshot.core import effects as fx
from longshot.core.effects import EmitEvent, SetCondition
from longshot.runtime import handoffs, pods

log = logging.getLogger("longshot.tasks")

EVENT_CHECK_AFTER_SECONDS = 20.0
"""A Pod still not running after this long gets its Events read (FailedMount)."""


def to_dict(obj: objects.Resource) -> dict[str, Any]:
    """The wire form of a typed object (for the Pod and manifest builders, which take API dicts)."""
    out: dict[str, Any] = obj.model_dump(by_alias=True, mode="json", exclude_none=True)
    return out


def merge_job_manifest(task: objects.AgentTask, build: objects.BuildRequest,
                       e: tasks.CreateMergeJob) -> dict[str, Any]:
    """The MergeJob of the task's branch (``core.manifests.merge_job``)."""
    return manifests.merge_job(
        task=task.name, namespace=task.namespace, build=build.name, role=task.spec.role, task_uid=task.metadata.uid,
        branch=e.branch, commit=e.commit, target=merge_target(build),
        strategy=build.spec.merge.strategy, priority=task.spec.priority, base_commit=e.base_commit,
        stacked_on=e.stacked_on, name=e.name)


def merge_target(build: objects.BuildRequest) -> str:
    """Where the build's MergeJobs land (``core.forge.merge_target``): the base branch, or the build branch of
    ``spec.merge.pullRequest.per: build``."""
    pr = build.spec.merge.pull_request
    return forge.merge_target(delivery=build.spec.merge.delivery, per=pr.per if pr is not None else None,
                              base=build.spec.repository.base_branch, namespace=build.namespace, build=build.name)


def model_chain(task: objects.AgentTask, build: objects.BuildRequest) -> tuple[str, ...]:
    """The task's model chain (``core.tasks.model_chain``): a best-of-N candidate's own model (no fallback), else
    the model ``core.personas.choose`` gives the task (a person's ``spec.agent.model``, the task's chosen named
    model, its persona's, its role's, the build's), then the build's ``spec.agent.fallbackModels``."""
    own = task.metadata.annotations.get(fanout.MODEL_ANNOTATION)
    if own:
        return (own,)
    agent = build.spec.agent
    override = task.spec.agent if task.spec.agent is not None else None
    if not (agent.models or agent.personas or agent.role_personas):  # nothing to choose from: no dump per reconcile
        return tasks.model_chain((override.model if override else None) or agent.model, agent.fallback_models)
    choice = personas.choose(
        personas.Catalog.from_agent(agent.model_dump(by_alias=True, mode="json", exclude_none=True)),
        role=task.spec.role, override_model=override.model if override else None,
        override_backend=override.backend if override else None, task_model=task.spec.model,
        task_persona=task.spec.persona)
    return tasks.model_chain(choice.model, agent.fallback_models)


def task_state(task: objects.AgentTask, build: objects.BuildRequest,
               jobs: cachemod.Cache | None = None) -> tasks.TaskState:
    """The decider's state of ``task``; a task that succeeded before ``status.mergeJob`` existed and has a MergeJob
    named like it gets that name, so a relaunch does not collide with it.

    Only a recorded success counts: a task still Running whose job exists is the replay of a success whose status
    write lost (409, a restart) after the job was created. Its job is the one this very success makes again (the
    create is idempotent by name); taking it for an earlier attempt's would queue the branch a second time as
    ``<task>-a<N>``."""
    state = tasks.TaskState.from_task(task, build.spec.retry, model_chain(task, build))
    if (state.merge_job is None and state.phase == tasks.SUCCEEDED and jobs is not None
            and task.key in jobs.jobs):
        state = replace(state, merge_job=task.name)
    return state


def since_creation(conds: list[dict[str, Any]], task: objects.AgentTask) -> list[dict[str, Any]]:
    """The conditions, each without a ``lastTransitionTime`` given the task's creation time: those of the CRD's
    default status (``api.agenttask.initial_status``) have held since the task was created."""
    return cond.since_creation(conds, task.metadata.creation_timestamp)


class TaskReconciler:
    def __init__(self, ctx: ctxmod.Context) -> None:
        self.ctx = ctx
        self.fanout = fanoutc.Fanout(ctx)
        self.tips = handoffs.TipReader(egress=lambda: ctx.egress)
        """Branch tips of ended workers' handoffs: one ``git ls-remote`` per repository for many handoffs."""

    # --- entry points --------------------------------------------------------------------------------

    async def reconcile(self, key: cachemod.Key) -> list[ex.Action]:
        loaded = self._load(key)
        if loaded is None:
            return []
        task, build = loaded
        now = self.ctx.clock()
        state = task_state(task, build, self.ctx.cache)
        fan = self.ctx.fanout_of(task, build)
        if fan is not None:
            return await self._fanout(task, build, state, fan, now)
        events, pre = await self._observe(task, build, state, now)
        children = delegating.children_status(self.ctx, task, build)
        extra = {"children": children} if children is not None else None
        return self._decide(task, build, state, events, now, pre, extra, pod_uid=self._unrecorded_uid(task, state),
                            late=self._late_usage(task))

    async def _fanout(self, task: objects.AgentTask, build: objects.BuildRequest, state: tasks.TaskState,
                      fan: Any, now: datetime) -> list[ex.Action]:
        """A best-of-N task: no Pod of its own; its round of candidates (``controllers.fanout``)."""
        spec = task.spec
        pre: list[ex.Action] = []
        extra: dict[str, Any] = {}
        if spec.cancel and state.phase not in tasks.TERMINAL:
            events: list[tasks.Event] = [tasks.CancelRequested()]
        else:
            events = []
            if spec.retry_token and spec.retry_token != state.retry_token:
                events.append(tasks.RetryRequested(spec.retry_token))
            if state.phase == tasks.PENDING:
                if spec.suspend:
                    pass  # a suspended best-of-N task starts no round (its running candidates are tasks of their own)
                elif self.ctx.readiness(task, build)[0] == "ready":
                    events.append(tasks.StartFanout(fan.count))
                    first = self.fanout.snapshot(task, build, fan, state.attempt + 1, True)
                    extra["fanout"] = fanout.status(first, fanout.Record())
                else:
                    events.extend(self._dependencies(task, build, now))
            elif state.phase == tasks.RUNNING:
                more, pre, wire = await self.fanout.observe(task, build, fan, state, now)
                events.extend(more)
                if task.status.fanout is None or wire != task.status.fanout.model_dump(
                        by_alias=True, mode="json", exclude_none=True):
                    extra["fanout"] = wire
        if state.phase != tasks.RUNNING or any(isinstance(e, (tasks.CancelRequested, tasks.FanoutFinished,
                                                              tasks.RetryRequested)) for e in events):
            pre += await self.fanout.stop(task, build, fan, state)
        actions = self._decide(task, build, state, events, now, pre, extra)
        return actions

    async def admit(self, key: cachemod.Key) -> list[ex.Action]:
        """The dispatcher chose this task: start its next attempt."""
        loaded = self._load(key)
        if loaded is None:
            return []
        task, build = loaded
        state = task_state(task, build, self.ctx.cache)
        if state.phase != tasks.PENDING or task.spec.suspend:
            return []
        now = self.ctx.clock()
        return self._decide(task, build, state, [tasks.Admitted()], now, [])

    def _load(self, key: cachemod.Key) -> tuple[objects.AgentTask, objects.BuildRequest] | None:
        task = self.ctx.cache.tasks.get(key)
        if task is None or task.metadata.deleting:
            return None
        build = self.ctx.cache.build_of(task)
        if build is None or build.metadata.deleting or not self.ctx.owns_build(build):
            return None  # an orphan waits for its build (or the garbage collector); another replica's shard
        return task, build

    # --- observing ---------------------------------------------------------------------------------

    async def _observe(self, task: objects.AgentTask, build: objects.BuildRequest, state: tasks.TaskState,
                       now: datetime) -> tuple[list[tasks.Event], list[ex.Action]]:
        spec = task.spec
        pre: list[ex.Action] = []
        if spec.cancel and state.phase not in tasks.TERMINAL:
            return self._cancelled(task, state), pre
        events: list[tasks.Event] = []
        if spec.retry_token and spec.retry_token != state.retry_token:
            events.append(tasks.RetryRequested(spec.retry_token))
        if spec.suspend != state.suspended or (spec.suspend and state.phase == tasks.RUNNING):
            events.append(tasks.SuspendChanged(spec.suspend))
            if spec.suspend:
                return events, pre  # a running attempt is stopped, not observed
        events += self._resumed(build, state)
        events += await self._by_phase(task, build, state, now, pre)
        return events, pre

    def _cancelled(self, task: objects.AgentTask, state: tasks.TaskState) -> list[tasks.Event]:
        unrecorded = (task.namespace, pods.pod_name(state.name, state.attempt + 1))
        if state.phase == tasks.PENDING and unrecorded in self.ctx.cache.pods:
            # a Pod created just before an interrupted status write: adopt it, so the cancel deletes it
            return [tasks.Admitted(state.attempt + 1), tasks.CancelRequested()]
        return [tasks.CancelRequested()]

    def _resumed(self, build: objects.BuildRequest, state: tasks.TaskState) -> list[tasks.Event]:
        """A task stopped for a person resumes when what stopped it changed."""
        if not state.stopped:
            return []
        if state.last_failure in ("Auth", "Configuration") and build.generation > (state.stop_generation or 0):
            return [tasks.Resume("the BuildRequest's spec was edited")]
        if state.last_failure == "BudgetExceeded" and not self.ctx.budget_spent(build):
            return [tasks.Resume("the budget allows work again")]
        return []

    async def _by_phase(self, task: objects.AgentTask, build: objects.BuildRequest, state: tasks.TaskState,
                        now: datetime, pre: list[ex.Action]) -> list[tasks.Event]:
        if state.phase == tasks.RUNNING:
            if self.ctx.killswitch:
                return [tasks.Killswitch()]
            finished = await self._pod_event(task, build, state.attempt, now, pre)
            return [finished] if finished is not None else []
        if state.phase == tasks.PENDING:
            return await self._pending(task, build, state, now, pre)
        if state.phase == tasks.BACKOFF and state.next_attempt_time is not None:
            if state.next_attempt_time <= now:
                return [tasks.BackoffElapsed()]
            pre.append(ex.Requeue(("AgentTask", *task.key), state.next_attempt_time))
        elif state.phase == tasks.AWAITING_INPUT and task.spec.answer and task.spec.answer != state.answer:
            return [tasks.Answered(task.spec.answer)]
        return []

    async def _pending(self, task: objects.AgentTask, build: objects.BuildRequest, state: tasks.TaskState,
                       now: datetime, pre: list[ex.Action]) -> list[tasks.Event]:
        """A Pod of the next attempt that exists already is adopted; else the dependencies' readiness."""
        ns = task.namespace
        nxt = pods.pod_name(state.name, state.attempt + 1)
        pod = self.ctx.cache.pods.get((ns, nxt))
        refused = None if pod is None else binding.adoption_refused(pod.name, pod.owner_uid, task.metadata.uid,
                                                                     None, pod.uid)
        if refused is not None:
            # not adopted, and never deleted: the next admission's create finds the name taken and that attempt
            # fails with this reason; the one after gets a fresh name
            log.warning("task %s/%s: %s", ns, task.name, refused)
            pre.append(ex.RecordEvent(task.ref(), "Warning", "ForeignPod", refused))
            return self._dependencies(task, build, now)
        if pod is not None and not pod.deleting:
            finished = await self._pod_event(task, build, state.attempt + 1, now, pre)
            if isinstance(finished, tasks.Unschedulable):
                finished = None  # adopted first; the next reconcile withdraws it
            return [finished if finished is not None and not isinstance(finished, tasks.PodVanished)
                    else tasks.Admitted(state.attempt + 1)]
        events = self._dependencies(task, build, now)
        if not events and self.ctx.readiness(task, build)[0] == "ready":
            events = self._admission(task)
        return events

    def _admission(self, task: objects.AgentTask) -> list[tasks.Event]:
        """The ``Admitted`` condition of a ready pending task as dispatch's last line says it
        (``Context.admission_line``): WaitingForCapacity with its place, InsufficientCapacity, TenantLimit,
        TokensPerHour, or back to Pending
        when it left the line without being admitted."""
        want = self.ctx.admission_line.get(task.key)
        have = cond.find(ctxmod.conditions_of(task), cond.ADMITTED)
        if want is not None:
            if have is not None and (have.get("reason"), have.get("message")) == want:
                return []
            return [tasks.AdmissionChanged(*want)]
        if have is not None and have.get("reason") in cond.HELD_REASONS:
            return [tasks.AdmissionChanged("Pending", "waiting for a worker slot")]
        return []

    def _dependencies(self, task: objects.AgentTask, build: objects.BuildRequest,
                      now: datetime) -> list[tasks.Event]:
        readiness, message = self.ctx.readiness(task, build)
        conds = ctxmod.conditions_of(task)
        blocked = cond.find(conds, cond.BLOCKED)
        reconciling = cond.find(conds, cond.RECONCILING) or {}
        if readiness == "ready":
            stale = (blocked is not None and blocked.get("status") == cond.TRUE) or \
                reconciling.get("reason") in ("WaitingForDependencies", "DependencyFailed")
            return [tasks.DependenciesChanged("ready")] if stale else []
        if readiness == "blocked":
            same = blocked is not None and blocked.get("status") == cond.TRUE and blocked.get("message") == message
            return [] if same else [tasks.DependenciesChanged("blocked", message)]
        same = reconciling.get("reason") == "WaitingForDependencies" and reconciling.get("message") == message
        return [] if same else [tasks.DependenciesChanged("waiting", message)]

    async def _pod_event(self, task: objects.AgentTask, build: objects.BuildRequest, attempt: int, now: datetime,
                         pre: list[ex.Action]) -> tasks.Event | None:
        ns = task.namespace
        name = pods.pod_name(task.name, attempt)
        pod = self.ctx.cache.pods.get((ns, name))
        if pod is None:
            # the watch may lag behind our own create: ask the API before calling the Pod vanished
            raw = await asyncio.to_thread(self.ctx.kube.get_pod, ns, name)
            if raw is not None:
                self.ctx.observe("Pod", "MODIFIED", raw)  # its task is reconciled again, on the Pod read
                return None
            return tasks.PodVanished(attempt)
        record = next((a for a in task.status.attempts if a.number == attempt), None)
        refused = binding.adoption_refused(name, pod.owner_uid, task.metadata.uid,
                                           record.pod_uid if record is not None else None, pod.uid)
        if refused is not None:
            # a Pod of this name that the operator did not make for this task: nothing it reports is read
            log.warning("task %s/%s: %s", ns, task.name, refused)
            return tasks.PodFinished({}, None, attempt, outcome=failures.Outcome(
                "Infrastructure", refused, None, binding.FOREIGN_POD), build_generation=build.generation)
        if pod.ended:
            handoff = await self._read_handoff(task, build, pod)
            if isinstance(handoff, ho.Handoff):
                try:
                    handoff = await self._bound(task, build, handoff)
                except handoffs.TipUnknown as e:
                    log.info("task %s/%s: the handoff's branch tip cannot be read yet (%s); trying again", ns,
                             task.name, e)
                    pre.append(ex.Requeue(("AgentTask", *task.key), now + timedelta(seconds=15)))
                    return None
            return tasks.PodFinished(pod.status, handoff, attempt,
                                     metered=self._metered(task, attempt), build_generation=build.generation,
                                     repository=build.spec.repository.url)
        grace = self.ctx.settings.admission_unschedulable_seconds
        if pod.unschedulable_since is not None and grace > 0 and not pod.deleting and self.ctx.capacity_counted:
            waited = (now - pod.unschedulable_since).total_seconds()
            if waited >= grace:  # no node has room for it: withdrawn, back in line, not a failure
                return tasks.Unschedulable(attempt, waited)
            pre.append(ex.Requeue(("AgentTask", *task.key), pod.unschedulable_since + timedelta(seconds=grace)))
        created = pod.created or now
        events: list[dict[str, Any]] = []
        if (now - created).total_seconds() >= EVENT_CHECK_AFTER_SECONDS and pod.phase == "Pending":
            events = await asyncio.to_thread(self.ctx.kube.pod_events, ns, name)
        outcome = failures.stuck(pod.status, created=created, now=now, events=events)
        if outcome is not None:  # it will never start: core.tasks deletes it at once
            return tasks.PodFinished(pod.status, None, attempt, outcome=outcome, build_generation=build.generation,
                                     stuck=True)
        if pod.phase == "Pending" and (now - created).total_seconds() >= EVENT_CHECK_AFTER_SECONDS:
            pre.append(ex.Requeue(("AgentTask", *task.key), now + timedelta(seconds=15)))
        if pod.phase == "Running":
            return self._heartbeat(task, attempt, created, now, pre)
        return None

    def _hand_over(self, build: cachemod.Key, returned: tuple[str, tuple[ho.PlannedTask, ...], bool]) -> None:
        self.ctx.plans[build].append(returned)  # looked up now: the build's reconcile may have taken the last list

    def _heartbeat(self, task: objects.AgentTask, attempt: int, created: datetime, now: datetime,
                   pre: list[ex.Action]) -> tasks.Event | None:
        """``HeartbeatLost`` when the running attempt has been silent for longer than the bound, else a timer for
        when it would be. Only with the gateway: it is the heartbeats' way to the task's status."""
        bound = self.ctx.settings.heartbeat_timeout_seconds
        if bound <= 0 or not self.ctx.settings.gateway_url:
            return None
        progress = task.status.progress
        beat = None
        if progress is not None and progress.attempt in (None, attempt):
            beat = progress.last_heartbeat
        record = next((a for a in task.status.attempts if a.number == attempt), None)
        started = record.start_time if record is not None and record.start_time is not None else created
        silence = tasks.heartbeat_silence(beat, started, now)
        if silence is None:
            return None
        if silence > bound:
            return tasks.HeartbeatLost(silence, float(bound), attempt)
        pre.append(ex.Requeue(("AgentTask", *task.key), now + timedelta(seconds=bound - silence + 1)))
        return None

    def _metered(self, task: objects.AgentTask, attempt: int) -> tasks.Usage | None:
        progress = task.status.progress
        if progress is None:
            return None
        live = getattr(progress, "attempt", None)
        if live is not None and live != attempt:
            return None
        if live is None and not progress.tokens:
            return None
        return tasks.Usage(progress.tokens, float(getattr(progress, "cost", 0.0) or 0.0))

    async def _bound(self, task: objects.AgentTask, build: objects.BuildRequest,
                     handoff: ho.Handoff) -> ho.Handoff | ho.HandoffError:
        """The handoff, or why it may not complete the attempt (``core.binding``): a worker's or fixer's must name
        the task's own branch at that branch's tip (read from the repository now: the Pod has ended, so nothing of
        it pushes any more); a reviewer's or tester's the commit it was bound to."""
        expected = binding.task_branch(task.spec.branch, task.namespace, build.name, task.name)
        delivers = (task.spec.role in ("worker", "fixer") and handoff.outcome == "succeeded" and bool(handoff.commit)
                    and handoff.branch == expected)
        tip = await self.tips.tip(self.ctx.kube, to_dict(build), expected) if delivers else None
        why = binding.handoff_mismatch(role=task.spec.role, outcome=handoff.outcome, branch=handoff.branch,
                                       commit=handoff.commit, expected_branch=expected, tip=tip,
                                       bound_commit=task.spec.commit)
        return handoff if why is None else ho.HandoffError(why)

    async def _read_handoff(self, task: objects.AgentTask, build: objects.BuildRequest,
                            pod: cachemod.PodView) -> ho.Handoff | ho.HandoffError | None:
        message = pod.termination_message()
        if message is None:
            return None
        try:
            parsed = ho.parse_termination_message(message)
        except ho.HandoffError as e:
            return e
        except Exception as e:  # never let a handoff take the operator down
            return ho.HandoffError(f"the handoff could not be read: {type(e).__name__}")
        if isinstance(parsed, ho.Handoff):
            return parsed
        try:
            return await asyncio.to_thread(handoffs.fetch, self.ctx.kube, to_dict(build), parsed,
                                           guard=self.ctx.egress)
        except Exception as e:
            return ho.HandoffError(f"the handoff at {parsed.ref} could not be fetched: {type(e).__name__}")

    # --- deciding and acting -----------------------------------------------------------------------

    def _late_usage(self, task: objects.AgentTask) -> list[tasks.Effect]:
        """Calls the gateway metered for attempts after they were recorded (``tasks.late_usage``): in the progress
        while it is still the ended attempt's, in ``progress.earlier`` once it moved on (``core.usage.metered``)."""
        progress = task.status.progress
        if progress is None:
            return []
        numbers = {e.attempt for e in progress.earlier}
        if progress.attempt is not None:
            numbers.add(progress.attempt)
        wire = progress.model_dump(by_alias=True, mode="json") if numbers else {}
        out: list[tasks.Effect] = []
        for number in sorted(numbers):
            record = next((a for a in task.status.attempts if a.number == number), None)
            if record is None:
                continue
            found = usage.metered(wire, number)
            out += tasks.late_usage(number, record.pod, record.end_time is not None,
                                    tasks.Usage(record.tokens, record.cost),
                                    None if found is None else tasks.Usage(found.tokens, found.cost))
        return out

    def _unrecorded_uid(self, task: objects.AgentTask, state: tasks.TaskState) -> tuple[int, str] | None:
        """(attempt, Pod UID) when the current or next attempt's Pod is this task's own (its controller) but its UID
        is not on the attempt yet: a Pod adopted after a restart, or a status write that carried no UID."""
        for number in (state.attempt, state.attempt + 1):
            if number < 1 or (number == state.attempt + 1 and state.phase != tasks.PENDING):
                continue
            pod = self.ctx.cache.pods.get((task.namespace, pods.pod_name(task.name, number)))
            if pod is None or pod.deleting or not pod.uid or pod.owner_uid != task.metadata.uid:
                continue
            record = next((a for a in task.status.attempts if a.number == number), None)
            if (record is None and number == state.attempt + 1) or (record is not None and not record.pod_uid):
                return number, pod.uid
        return None

    def _decide(self, task: objects.AgentTask, build: objects.BuildRequest, state: tasks.TaskState,
                events: Sequence[tasks.Event], now: datetime, pre: list[ex.Action],
                extra: dict[str, Any] | None = None, pod_uid: tuple[int, str] | None = None,
                late: Sequence[tasks.Effect] = ()) -> list[ex.Action]:
        state, effects, invalid = fx.fold(lambda s, e: tasks.decide(s, e, now=now, rand=self.ctx.rand), state,
                                          events)
        effects = [*effects, *late]
        for err in invalid:
            log.error("task %s/%s: %s", task.namespace, task.name, err)
        if pod_uid is not None and pod_uid[0] != state.attempt:
            pod_uid = None  # the next attempt's Pod, not adopted by these events
        if not effects and task.status.conditions and not extra and pod_uid is None:
            return pre
        if not task.status.conditions:
            effects = [*tasks.initial_conditions(), *effects]
        return [*pre, *self.actions(task, build, state, effects, now, extra, pod_uid)]

    def actions(self, task: objects.AgentTask, build: objects.BuildRequest, state: tasks.TaskState,
                effects: Sequence[tasks.Effect], now: datetime, extra: dict[str, Any] | None = None,
                pod_uid: tuple[int, str] | None = None) -> list[ex.Action]:
        ns, name = task.key
        w = _Write(conds=since_creation(ctxmod.conditions_of(task), task),
                   attempts={a.number: a.model_dump(by_alias=True, mode="json", exclude_none=True)
                             for a in task.status.attempts},
                   status={**state.to_status(), **(extra or {})})
        out: list[ex.Action] = []
        for e in effects:
            match e:
                case SetCondition() | tasks.RecordAttempt() | tasks.CountUsage() | tasks.RecordHandoff() \
                        | tasks.PlanReturned() | tasks.FinalizeLedger():
                    w.record(e, name, now)
                case _:
                    out += self._act(task, build, e, now)
        attempts = w.attempts
        if pod_uid is not None and pod_uid[0] in attempts and not attempts[pod_uid[0]].get("podUID"):
            attempts[pod_uid[0]]["podUID"] = pod_uid[1]  # a Pod of this task's, adopted (the gateway now serves it)
        out += [ex.PutConfigMap(ledger_entry(task, build, e, attempts.get(e.number, {}))) for e in w.ledgers]
        status = w.status
        status["conditions"] = ex.stamp_generation(w.conds, task.generation)
        status["attempts"] = [attempts[n] for n in sorted(attempts)][-20:]
        status["observedGeneration"] = task.generation
        # a returned plan reaches the build together with the planner's status (Succeeded), in the same turn: the
        # build's reconcile, which runs beside this one, never sees a plan of a planner it counts as running, nor
        # a Succeeded planner without its plan (which it would read again from the Pod)
        handover = tuple(functools.partial(self._hand_over, build.key, p) for p in w.returned)
        out.append(ex.WriteStatus("AgentTask", ns, name, task.metadata.resource_version, status, tuple(w.counts),
                                  spans=attempt_spans(task, build, w.spans, attempts), then=handover))
        if w.returned:
            out.append(ex.Requeue(("BuildRequest", *build.key), now))
        return out

    def _act(self, task: objects.AgentTask, build: objects.BuildRequest, e: _Acted, now: datetime) -> list[ex.Action]:
        """The actions of an effect that is not part of the status write."""
        ns, name = task.key
        match e:
            case tasks.CreatePod():
                found = self.ctx.cache.pods.get((ns, e.name))
                if found is not None and found.name != e.name and found.owner_uid == task.metadata.uid:
                    return []  # a warm Pod claimed for this attempt before a lost status write: adopted, not made
                manifest = pods.build_agent_pod(to_dict(task), to_dict(build), self.ctx.settings, e.attempt,
                                                taskinput.extra(self.ctx, task, build), model=e.model)
                return [warmpools.create_action(self.ctx, build, manifest)]
            case tasks.StartCandidates():
                return [ex.Requeue(("AgentTask", ns, name), now)]  # the round's candidates are made next
            case tasks.DeletePod():
                if not e.name:
                    return []
                pod = self.ctx.cache.pods.get((ns, e.name))  # a claimed warm Pod has a name of its own
                return [ex.DeletePod(ns, pod.name if pod is not None else e.name, e.grace_seconds)]
            case tasks.ScheduleRetry():
                return [ex.Requeue(("AgentTask", ns, name), e.at)]
            case EmitEvent():
                return [ex.RecordEvent(task.ref(), e.type, e.reason, e.message,
                                       budget=f"{build.namespace}/{build.name}" if e.routine else None)]
            case tasks.CreateMergeJob():
                return [ex.CreateObject(merge_job_manifest(task, build, e))]
            case _:
                assert_never(e)


_Recorded = (SetCondition | tasks.RecordAttempt | tasks.CountUsage | tasks.RecordHandoff | tasks.PlanReturned
             | tasks.FinalizeLedger)
"""Effects that go into the task's status write."""
_Acted = (tasks.CreatePod | tasks.StartCandidates | tasks.DeletePod | tasks.ScheduleRetry | EmitEvent
          | tasks.CreateMergeJob)
"""Effects that are actions of their own."""


@dataclass
class _Write:
    """The task's status write as the effects make it."""

    conds: list[dict[str, Any]]
    attempts: dict[int, dict[str, Any]]
    status: dict[str, Any]
    counts: list[metrics.Increment] = field(default_factory=list)
    """Counted by the executor once the status write succeeded."""
    returned: list[tuple[str, tuple[ho.PlannedTask, ...], bool]] = field(default_factory=list)
    """Plans, handed over after the write."""
    spans: list[int] = field(default_factory=list)
    """Tracing: attempts that ended here, exported by the executor after the write."""
    ledgers: list[tasks.FinalizeLedger] = field(default_factory=list)
    """Entries completed before the status write that ends their attempt."""

    def record(self, e: _Recorded, name: str, now: datetime) -> None:
        match e:
            case SetCondition():
                self.conds, _ = cond.set_condition(self.conds, e.type, e.status, e.reason, e.message, now=now)
                if e.type == cond.ADMITTED and e.reason == "Withdrawn":
                    self.counts.append(metrics.Increment(metrics.ADMISSION_WITHDRAWN))
            case tasks.RecordAttempt():
                self.attempts.setdefault(e.number, {}).update(e.to_wire())
                if e.failure_class:
                    self.counts.append(metrics.Increment(metrics.POD_FAILURES,
                                                         labels=(("failure_class", e.failure_class),)))
                if e.end_time is not None and tracing.enabled():  # tracing: the attempt's span, once, at its end
                    self.spans.append(e.number)
            case tasks.CountUsage():
                self.counts += [metrics.Increment(metrics.TOKENS, e.tokens), metrics.Increment(metrics.COST, e.cost)]
            case tasks.RecordHandoff():
                self.status["handoff"] = dict(e.handoff)
            case tasks.PlanReturned():
                self.returned.append((name, e.tasks, e.done))
            case tasks.FinalizeLedger():
                self.ledgers.append(e)
            case _:
                assert_never(e)


def ledger_entry(task: objects.AgentTask, build: objects.BuildRequest, e: tasks.FinalizeLedger,
                 attempt: dict[str, Any]) -> dict[str, Any]:
    """The ledger entry of a finished attempt (``core.ledger``) with its ``result.json`` (the attempt's record as
    this reconcile writes it) and its end, for retention."""
    manifest = ledger.manifest(namespace=task.namespace, pod=e.pod, task=task.name, task_uid=task.metadata.uid or "",
                               build=build.name, attempt=e.number, role=task.spec.role)
    result = ledger.result(attempt, namespace=task.namespace, build=build.name, task=task.name, role=task.spec.role)
    manifest["data"] = {ledger.RESULT_KEY: json.dumps(result, sort_keys=True)}
    manifest["metadata"]["annotations"] = {ledger.ENDED_ANNOTATION: str(attempt.get("endTime") or "")}
    return manifest


def attempt_spans(task: objects.AgentTask, build: objects.BuildRequest, numbers: Sequence[int],
                  attempts: dict[int, dict[str, Any]]) -> tuple[tracing.SpanRecord, ...]:
    """Tracing: the spans of the attempts ``numbers`` that this write ends (not those whose end is on the task's
    status already: a reconcile that repeats the record exports nothing twice)."""
    if not numbers:
        return ()
    ended = {a.number for a in task.status.attempts if a.end_time is not None}
    out = []
    for n in numbers:
        if n in ended or n not in attempts:
            continue
        rec = tracing.attempt_record(build_uid=build.metadata.uid or "", build=build.name, namespace=task.namespace,
                                     task_uid=task.metadata.uid or "", task=task.name, role=task.spec.role,
                                     purpose=cachemod.purpose(task), attempt=attempts[n])
        if rec is not None:
            out.append(rec)
    return tuple(out)

