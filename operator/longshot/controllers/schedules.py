"""The BuildSchedule controller: the shell around ``core.schedules``.

A reconcile of a schedule (by the replica holding its shard: the repository of its template, as its children's):

1. reads the schedule and its children (BuildRequests whose controller owner is the schedule) from the cache;
2. asks ``core.schedules.decide`` with the context's clock (tests set it);
3. deletes the children beyond the history limits, cancels the children a ``Replace`` run replaces (as a person
   cancels a build: ``spec.suspend`` on it, ``spec.cancel`` on each unfinished task; the annotation
   ``longshot.dev/replaced`` says the schedule did it), and creates the due run's child: owned by the schedule
   (deleted with it), labelled ``longshot.dev/schedule``, annotated with its run, named from the run, so a create
   that finds the name taken (a restart, a second replica) did its work already;
4. requeues itself at the next run and writes the status (last, next, active, conditions) when it changed.

A child's change (its status included) and its deletion enqueue its schedule (``controllers.cache.schedule_refs``):
a finished child frees a ``Forbid`` schedule at once. An expression or a time zone that cannot work is a condition
naming the field (``InvalidSchedule``, ``UnknownTimeZone``), and nothing runs until the spec changes.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from longshot.api import buildschedule, keys, objects, timeutil
from longshot.api import conditions as cond
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.core import names, schedules, tasks
from longshot.runtime import kube

log = logging.getLogger("longshot.schedules")


def spec_of(schedule: objects.BuildSchedule) -> schedules.Spec:
    s = schedule.spec
    return schedules.Spec(schedule=s.schedule, time_zone=s.time_zone, concurrency=s.concurrency_policy,
                          starting_deadline=s.starting_deadline_seconds,
                          successful_limit=s.successful_builds_history_limit,
                          failed_limit=s.failed_builds_history_limit, suspend=s.suspend)


def state_of(schedule: objects.BuildSchedule, now: datetime) -> schedules.State:
    st = schedule.status
    created = schedule.metadata.creation_timestamp or now  # the API server always sets it
    return schedules.State(created, timeutil.parse(st.last_schedule_time), timeutil.parse(st.last_successful_time))


def child_of(build: objects.BuildRequest, now: datetime) -> schedules.Child:
    """A child build as the decider sees it (its run from its annotation, else its creation)."""
    ann = build.metadata.annotations
    run = timeutil.parse(ann.get(schedules.SCHEDULED_ANNOTATION)) or build.metadata.creation_timestamp
    phase = build.status.phase
    outcome: schedules.Outcome = "Succeeded" if phase == "Succeeded" else "Failed" if phase == "Failed" else "Active"
    return schedules.Child(build.name, run or now, outcome,
                           timeutil.parse(build.status.completion_time), schedules.REPLACED_ANNOTATION in ann)


class ScheduleReconciler:
    """The reconcile of one BuildSchedule (the manager's ``BuildSchedule`` controller)."""

    def __init__(self, ctx: ctxmod.Context) -> None:
        self.ctx = ctx

    def children(self, schedule: objects.BuildSchedule) -> list[objects.BuildRequest]:
        uid = schedule.metadata.uid
        return [b for (ns, _), b in list(self.ctx.cache.builds.items()) if ns == schedule.namespace and any(
            o.kind == "BuildSchedule" and o.controller and o.name == schedule.name and (not uid or o.uid == uid)
            for o in b.metadata.owner_references)]

    async def reconcile(self, key: cachemod.Key) -> list[ex.Action]:
        schedule = self.ctx.cache.schedules.get(key)
        if schedule is None or schedule.metadata.deleting or not self.ctx.owns(cachemod.schedule_shard(schedule)):
            return []
        now = self.ctx.clock()
        views = [child_of(b, now) for b in self.children(schedule)]
        spec, state, tz = spec_of(schedule), state_of(schedule, now), schedules.zone(schedule.spec.time_zone)
        decision = schedules.decide(schedule.name, spec, state, views, tz=tz, now=now)
        if decision.create is not None:
            why = await self._create(schedule, decision.create)
            if why is not None:  # decided again, knowing: the condition says why, nothing is cancelled
                decision = schedules.decide(schedule.name, spec, state, views, tz=tz, now=now,
                                            refused={decision.create.name: why})
        actions: list[ex.Action] = [ex.DeleteObject("BuildRequest", schedule.namespace, n) for n in decision.delete]
        for name in decision.cancel:
            actions += self._cancel(schedule.namespace, name, now)
        if decision.requeue_at is not None:
            actions.append(ex.Requeue(("BuildSchedule", *key), decision.requeue_at))
        status = self._status(schedule, decision, now)
        if status is not None:
            actions.append(status)
        return actions

    async def _create(self, schedule: objects.BuildSchedule, run: schedules.Create) -> str | None:
        """Create the run's child (here, not by the executor: a refusal is the decider's input); the API server's
        message when it refused it. AlreadyExists means the run was made (a restart, another replica)."""
        try:
            made = await asyncio.to_thread(self.ctx.kube.create, manifest(schedule, run))
        except Exception as e:
            why = kube.refusal(e)
            if why is None:
                raise  # the reconcile is retried with backoff
            log.warning("schedule %s/%s: the API server refused build %s: %s", schedule.namespace, schedule.name,
                        run.name, why)
            return why
        if made is not None:
            log.info("schedule %s/%s: the run of %s started build %s", schedule.namespace, schedule.name,
                     timeutil.rfc3339(run.run), run.name)
            self.ctx.observe("BuildRequest", "ADDED", made)
        return None

    def _cancel(self, namespace: str, build: str, now: datetime) -> list[ex.Action]:
        """Cancel a child as ``kubectl longshot cancel`` does: suspend it, cancel its unfinished tasks."""
        out: list[ex.Action] = [ex.PatchObject("BuildRequest", namespace, build, {
            "metadata": {"annotations": {schedules.REPLACED_ANNOTATION: timeutil.rfc3339(now)}},
            "spec": {"suspend": True}})]
        for t in self.ctx.cache.tasks_of((namespace, build)):
            if (t.status.phase or tasks.PENDING) not in tasks.TERMINAL and not t.spec.cancel:
                out.append(ex.PatchObject("AgentTask", namespace, t.name, {"spec": {"cancel": True}}))
        return out

    def _status(self, schedule: objects.BuildSchedule, decision: schedules.Decision,
                now: datetime) -> ex.WriteStatus | None:
        conds = cond.since_creation(ctxmod.conditions_of(schedule), schedule.metadata.creation_timestamp)
        for t, s, r, m in decision.conditions:
            conds, _ = cond.set_condition(conds, t, s, r, m[:4096], now=now)
        st = decision.status
        patch: dict[str, Any] = {
            "conditions": ex.stamp_generation(conds, schedule.generation),
            "observedGeneration": schedule.generation,
            "lastScheduleTime": _time(st.last_schedule), "lastSuccessfulTime": _time(st.last_successful),
            "nextScheduleTime": _time(st.next_schedule),
            "active": [{"name": n} for n in st.active[:buildschedule.MAX_ACTIVE]],
        }
        current = schedule.status.model_dump(by_alias=True, mode="json", exclude_none=True)
        if all(current.get(k) == v for k, v in patch.items() if k != "conditions") and \
                _same(current.get("conditions") or [], patch["conditions"]):
            return None  # nothing changed: no write
        return ex.WriteStatus("BuildSchedule", schedule.namespace, schedule.name,
                              schedule.metadata.resource_version, patch)


def manifest(schedule: objects.BuildSchedule, run: schedules.Create) -> dict[str, Any]:
    """The child BuildRequest of ``run``: the template's spec, its labels and annotations plus the operator's."""
    template = schedule.spec.build_template
    spec: dict[str, Any] = template.spec.model_dump(by_alias=True, mode="json", exclude_none=True,
                                                    exclude_defaults=True)  # the server defaults them again
    return {
        "apiVersion": schedule.api_version, "kind": "BuildRequest",
        "metadata": {
            "name": run.name, "namespace": schedule.namespace,
            "labels": {**template.metadata.labels, schedules.SCHEDULE_LABEL: names.fit(schedule.name),
                       keys.MANAGED_BY: keys.OPERATOR},
            "annotations": {**template.metadata.annotations,
                            schedules.SCHEDULED_ANNOTATION: timeutil.rfc3339(run.run)},
            "ownerReferences": [schedule.owner_reference()],
        },
        "spec": spec,
    }


def _time(t: Any) -> str | None:
    return None if t is None else timeutil.rfc3339(t)


def _same(have: list[dict[str, Any]], want: list[dict[str, Any]]) -> bool:
    def key(c: dict[str, Any]) -> tuple[Any, ...]:
        return (c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("observedGeneration"))
    return sorted(map(key, have)) == sorted(map(key, want))
