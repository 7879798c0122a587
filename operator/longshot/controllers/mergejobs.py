"""The MergeJob reconciler, and the translation of ``core.mergejobs`` effects into actions (shared with the
merge-queue reconciler, which feeds most of a job's events).

A MergeJob's own reconcile writes its first conditions (``Observed``) when its queue has not within
``OBSERVE_GRACE_SECONDS`` (the queue's checks step writes them with the job's checks, in one write), notices that
the fixer that took its branch over has merged (``FixerLanded``), and polls the pull request of a job delivered
through the forge (phase ``AwaitingForge``: ``core.forge`` decides, ``runtime.forge`` talks to the forge);
everything else happens in its repository's queue (``controllers/mergequeue.py``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, assert_never

from longshot.api import conditions as cond
from longshot.api import mergejob, objects, timeutil
from longshot.api.buildrequest import GateStep
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.core import effects as fx
from longshot.core import forge as fc
from longshot.core import gates, manifests, names, scheduler
from longshot.core import mergejobs as mj
from longshot.core.effects import EmitEvent, SetCondition
from longshot.runtime import forge as rforge

log = logging.getLogger("longshot.mergejobs")

FORGE_TIMEOUT = 15.0
"""Seconds one forge request may take (connect, each read)."""
OBSERVE_GRACE_SECONDS = 300.0
"""A new MergeJob's first status is its queue's: its checks' (a verdict other than passed), or its batch's, which
carries the checks that passed (``mergequeue.HOLD_SECONDS``); the MergeJob's own reconcile writes it (``Observed``)
only when the queue has not within this long after its creation (a backlog), and never while the queue holds the
job's passed checks (``held``). Until
then the job has the CRD's default status (``api.mergejob.initial_status``: Ready=False, Reconciling=True, "waiting
for the operator"), which is the truth. It was 20 s: with a thousand agents the checks ran minutes behind, and every
queued job was written once more for nothing (2,390 writes in a 480 s ``make bench-fleet`` run)."""
FORGE_MAX_WAIT = 5.0
"""Longest rate-limit wait slept through in a poll; a longer one requeues the job at the reset."""


def job_state(ctx: ctxmod.Context, job: objects.MergeJob, build: objects.BuildRequest) -> mj.JobState:
    s = job.status
    batch = None
    if s.batch is not None:
        batch = mj.BatchRef(s.batch.id, s.batch.position, s.batch.base, s.batch.commit)
    phase = s.phase if s.phase in mj.PHASES else mj.QUEUED
    task = ctx.cache.tasks.get((job.namespace, job.task_name))
    pr = s.pull_request
    pull = mj.PullRef(pr.number, pr.url or "", pr.head or "", pr.status_posted) if pr is not None else None
    waiting_on_forge = next((x.message or "" for x in s.conditions if x.type == cond.AWAITING_FORGE), "") \
        if phase == mj.AWAITING_FORGE else ""
    return mj.JobState(
        name=job.name, task=job.task_name, branch=job.spec.branch, phase=phase,  # type: ignore[arg-type]
        checks=s.checks if s.checks in ("pending", "passed", "failed") else "pending",  # type: ignore[arg-type]
        conflicts=s.conflicts, conflict_base=s.conflict_base, conflicting_files=tuple(s.conflicting_files),
        errors=s.errors, not_before=s.not_before, batch=batch, merged_commit=s.merged_commit, fixer=s.fixer,
        pull=pull, tested=s.tested_commit, message=waiting_on_forge,
        priority=job.spec.priority, fix_depth=cachemod.fix_depth(task),
        max_conflict_retries=build.spec.merge.max_conflict_retries,
        fixers_left=max(0, build.spec.merge.max_fixers - len(ctx.cache.fixers_by_build.get(build.key, ()))),
        needs_approval=build.spec.merge.require_approval and not job.spec.approved,
        waiting=next((x.message or "" for x in s.conditions
                      if x.type == cond.QUEUED and x.reason == mj.WAITING_FOR_DEPENDENCIES), ""),
        task_scope=tuple(task.spec.scope) if task is not None else (), enforce_scope=build.spec.scope.enforce)


def gate_steps(build: objects.BuildRequest) -> tuple[GateStep, ...]:
    """The quality gate's named steps for the build's profile, in the order they run (``core.gates.steps_of``)."""
    return gates.steps_of(build.spec.quality_gate, build.spec.reconciler.command)


def gate_parts(build: objects.BuildRequest) -> list[str]:
    """The quality gate's commands for the build's profile, in the order they run."""
    return gates.parts_of(gate_steps(build))


def gate_command(build: objects.BuildRequest) -> str:
    """The quality gate's command for the build's profile (``&&``-joined), or "" when there is none."""
    return gates.command_of(gate_steps(build))


def tester_manifest(build: objects.BuildRequest, name: str, *, branch: str, command: str, purpose: str,
                    description: str, priority: int, annotations: dict[str, str] | None = None,
                    labels: dict[str, str] | None = None, role: str = "tester",
                    commit: str | None = None) -> dict[str, Any]:
    """A tester or reviewer of ``build`` (``core.manifests.tester``)."""
    return manifests.tester(name=name, namespace=build.namespace, build=build.name, owner=build.owner_reference(),
                            branch=branch, command=command, purpose=purpose, description=description,
                            priority=priority, annotations=annotations, labels=labels, role=role, commit=commit)


def fixer_manifest(build: objects.BuildRequest, name: str, *, branch: str, description: str,
                   scope: Sequence[str], priority: int, fix_depth: int, fixes: str) -> dict[str, Any]:
    """A fixer of ``build`` (``core.manifests.fixer``; its scope bounded as the CRD requires)."""
    return manifests.fixer(name=name, namespace=build.namespace, build=build.name, owner=build.owner_reference(),
                           branch=branch, description=description, scope=scheduler.bounded_scope(scope),
                           priority=priority, fix_depth=fix_depth, fixes=fixes)


def decide(job: objects.MergeJob, state: mj.JobState, events: Sequence[mj.Event],
           now: datetime) -> tuple[mj.JobState, list[mj.Effect]]:
    state, effects, invalid = fx.fold(lambda s, e: mj.decide(s, e, now=now), state, events)
    for err in invalid:
        log.error("%s", err)
    return state, effects


def actions(job: objects.MergeJob, build: objects.BuildRequest, state: mj.JobState,
            effects: Sequence[mj.Effect], now: datetime, queue: str) -> list[ex.Action]:
    """The actions of a MergeJob decision: fixers, Events, timers, then the status (fenced)."""
    if not effects:
        return []
    conds = cond.since_creation(ctxmod.conditions_of(job), job.metadata.creation_timestamp)
    tries = [a.model_dump(by_alias=True, mode="json", exclude_none=True) for a in job.status.attempts]
    out: list[ex.Action] = []
    for e in effects:
        match e:
            case SetCondition():
                conds, _ = cond.set_condition(conds, e.type, e.status, e.reason, e.message, now=now)
            case mj.RecordTry():
                tries.append({"time": timeutil.rfc3339(now), "result": e.result, "message": e.message[:4096]})
            case mj.CreateFixer():
                out.append(ex.CreateObject(fixer_manifest(build, e.name, branch=e.branch, description=e.description,
                                                          scope=e.scope, priority=e.priority, fix_depth=e.fix_depth,
                                                          fixes=e.fixes)))
            case mj.ScheduleRetry():
                out.append(ex.Requeue(("Queue", "", queue), e.at))
            case EmitEvent():
                out.append(ex.RecordEvent(job.ref(), e.type, e.reason, e.message,
                                          budget=f"{build.namespace}/{build.name}" if e.routine else None))
            case _:
                assert_never(e)
    status: dict[str, Any] = {**state.to_status(), "conditions": ex.stamp_generation(conds, job.generation),
                              "attempts": tries[-50:], "observedGeneration": job.generation}
    if state.phase != mj.QUEUED or state.batch is None:
        status["queuePosition"] = None if state.phase != mj.QUEUED else job.status.queue_position
    out.append(ex.WriteStatus("MergeJob", job.namespace, job.name, job.metadata.resource_version, status))
    return out


def post_gate_failure(ctx: ctxmod.Context, job: objects.MergeJob, build: objects.BuildRequest,
                      output: str) -> mj.PullRef | None:
    """A candidate of a ``per: task`` pull-request build broke its gate: when the open pull request of its branch has
    the candidate's commit as its head (a fixer pushed to it), post a ``failure`` status naming the failing step
    (``core.forge.failure_status``). Blocking (call in a worker thread); best effort: a forge that cannot be
    reached is logged, the job's failure stands either way. The pull request, when posted; else None."""
    settings = build.spec.merge.pull_request
    if (build.spec.merge.delivery != "pullRequest" or settings is None or settings.per != "task"
            or not job.spec.commit):
        return None
    ref = settings.token_secret_ref
    try:
        token = (ctx.kube.get_secret(job.namespace, ref.name) or {}).get(ref.key)
    except Exception as e:  # best effort: the job's own poll reports a missing Secret
        log.info("MergeJob %s/%s: the forge token could not be read: %s", job.namespace, job.name, type(e).__name__)
        return None
    if not token:
        return None
    step = fc.failed_step(output, [s.name for s in gate_steps(build)])
    try:
        with rforge.make_forge(settings, token, egress=ctx.egress, timeout=FORGE_TIMEOUT,
                               max_wait=FORGE_MAX_WAIT) as f:
            facts = f.facts(number=None, branch=job.spec.branch, target=job.spec.target)
            post = fc.failure_status(commit=job.spec.commit, facts=facts, step=step)
            if post is None:
                return None
            f.post_status(post.sha, post.state, post.description)
    except (rforge.ForgeError, rforge.RateLimited) as e:
        log.info("MergeJob %s/%s: the failed gate could not be posted on its pull request: %s", job.namespace,
                 job.name, str(e)[:500])
        return None
    return mj.PullRef(facts.number, facts.url, post.sha, status_posted=True)


class MergeJobReconciler:
    def __init__(self, ctx: ctxmod.Context) -> None:
        self.ctx = ctx
        self.held: Callable[[objects.MergeJob], object] = lambda job: None
        """Whether the merge queue holds the job's passed checks, to be written with its batch
        (``QueueReconciler.held``, wired by the Manager): such a job's first status is the queue's to write."""

    async def reconcile(self, key: cachemod.Key) -> list[ex.Action]:
        job = self.ctx.cache.jobs.get(key)
        if job is None or job.metadata.deleting:
            return []
        build = self.ctx.cache.build_of(job)
        if build is None or not self.ctx.owns_build(build):
            return []
        now = self.ctx.clock()
        state = job_state(self.ctx, job, build)
        events: list[mj.Event] = []
        if not mergejob.seen(job.status):  # none, or the CRD's default status (api.mergejob.initial_status)
            if state.phase == mj.QUEUED and state.checks == "pending" and state.batch is None:
                # its queue writes its first status with its checks (one write); this one only if it has not soon
                created = job.metadata.creation_timestamp
                due = created + timedelta(seconds=OBSERVE_GRACE_SECONDS) if created is not None else now
                if now < due:
                    return [ex.Requeue(("MergeJob", job.namespace, job.name), due)]
                if self.held(job) is not None:  # checked: its batch's write (or the queue's, when none takes it)
                    return [ex.Requeue(("MergeJob", job.namespace, job.name),
                                       now + timedelta(seconds=OBSERVE_GRACE_SECONDS))]
            events.append(mj.Observed())
        if state.fixer and state.phase in (mj.FAILED, mj.CONFLICTED):
            fixer_job = self.ctx.cache.jobs.get((job.namespace, state.fixer))
            if fixer_job is not None and fixer_job.status.phase in mj.DELIVERED and fixer_job.status.merged_commit:
                events.append(mj.FixerLanded(fixer_job.status.merged_commit))
        out: list[ex.Action] = []
        if state.phase == mj.AWAITING_FORGE and not events:
            settings = build.spec.merge.pull_request
            poll = settings.poll_seconds if settings is not None else 60
            forge_events, again = await self._forge(job, build, state)
            events += forge_events
            out.append(ex.Requeue(("MergeJob", job.namespace, job.name),
                                  again if again is not None else now + timedelta(seconds=poll)))
        if not events:
            return out
        state, effects = decide(job, state, events, now)
        queue = cachemod.queue_name(build, job.spec.target)
        return [*actions(job, build, state, effects, now, queue), *out]

    # --- delivery through the forge ----------------------------------------------------------------

    async def _forge(self, job: objects.MergeJob, build: objects.BuildRequest,
                     state: mj.JobState) -> tuple[list[mj.Event], datetime | None]:
        """One poll of the job's pull request: the MergeJob events, and when to poll again (None: the build's
        ``pollSeconds``)."""
        settings = build.spec.merge.pull_request
        if settings is None:
            return [mj.ForgeWaiting("ForgeError", "spec.merge.delivery is pullRequest but spec.merge.pullRequest "
                                                  "is not set; set its provider, project and tokenSecretRef")], None
        ref = settings.token_secret_ref
        data = await asyncio.to_thread(self.ctx.kube.get_secret, job.namespace, ref.name)
        token = (data or {}).get(ref.key)
        if not token:
            return [mj.ForgeWaiting("ForgeError", f"spec.merge.pullRequest.tokenSecretRef: Secret {ref.name!r} in "
                                                  f"namespace {job.namespace} has no key {ref.key!r}; add the forge "
                                                  "token under that key")], None
        per_build = job.spec.target == names.pull_branch(build.namespace, build.name)
        if per_build:  # the build's one pull request: from the build branch the queue lands on, to the base branch
            ask = fc.Ask(branch=job.spec.target, target=build.spec.repository.base_branch,
                         commit=state.tested or job.spec.commit or "", title=self._build_title(build),
                         body=self._build_body(build), labels=tuple(settings.labels),
                         merge_method=settings.merge_method, reviewers=tuple(settings.reviewers), per_build=True)
        else:
            ask = fc.Ask(branch=job.spec.branch, target=job.spec.target, commit=state.tested or job.spec.commit or "",
                         title=self._title(job, build), body=self._body(job, build), labels=tuple(settings.labels),
                         merge_method=settings.merge_method, reviewers=tuple(settings.reviewers))
        try:
            async with self.ctx.lanes.lane(job.namespace):
                return await asyncio.to_thread(self._poll, settings, token, ask, state), None
        except rforge.RateLimited as e:
            return ([mj.ForgeWaiting("RateLimited", f"{e}; polled again when the limit resets")],
                    dt.datetime.fromtimestamp(e.retry_at, tz=dt.UTC))
        except rforge.ForgeError as e:
            return [mj.ForgeWaiting("ForgeError", f"{str(e)[:1000]}; tried again at the next poll")], None

    def _poll(self, settings: Any, token: str, ask: fc.Ask, state: mj.JobState) -> list[mj.Event]:
        """The forge's facts, ``core.forge.decide``, and its effects carried out (in a worker thread)."""
        pull = state.pull
        # a poll holds one of the MergeJob workers: short waits, a spent rate limit is a requeue at its reset
        with rforge.make_forge(settings, token, egress=self.ctx.egress, timeout=FORGE_TIMEOUT,
                               max_wait=FORGE_MAX_WAIT) as f:
            facts = f.facts(number=pull.number if pull is not None else None, branch=ask.branch, target=ask.target,
                            status_posted_on=pull.head if pull is not None and pull.status_posted else "")
            if facts.exists:
                pull = mj.PullRef(facts.number, facts.url, facts.head,
                                  facts.status_posted or (pull is not None and pull.status_posted
                                                          and pull.head == facts.head))
            events: list[mj.Event] = []
            for e in fc.decide(ask, facts):
                match e:
                    case fc.OpenPull():
                        opened = f.open_pull(e.branch, e.target, e.title, e.body, e.labels)
                        pull = mj.PullRef(opened.number, opened.url, opened.head or ask.commit)
                    case fc.PostStatus():
                        f.post_status(e.sha, e.state, e.description)
                        if pull is not None:
                            pull = replace(pull, head=e.sha, status_posted=True)
                    case fc.Merge():
                        result = f.merge(e.number, e.method, e.sha)
                        events.append(self._event(fc.merge_outcome(e.number, result.merged, result.commit,
                                                                   result.message), pull))
                    case fc.Wait() | fc.Landed() | fc.Fail() | fc.RequestChanges():
                        events.append(self._event(e, pull))
        return events

    @staticmethod
    def _event(e: fc.Effect, pull: mj.PullRef | None) -> mj.Event:
        match e:
            case fc.Wait():
                return mj.ForgeWaiting(e.reason, e.message, pull)
            case fc.Landed():
                return mj.ForgeMerged(e.commit, e.message)
            case fc.Fail():
                return mj.ForgeClosed(e.reason, e.message)
            case fc.RequestChanges():
                return mj.ChangesRequested(f"{e.reviewer} (on the pull request)", e.reasons, untrusted=True)
        raise ValueError(f"{type(e).__name__} is carried out, not an event")

    @staticmethod
    def _build_title(build: objects.BuildRequest) -> str:
        first = (build.spec.request.strip().splitlines() or [""])[0]
        return f"[longshot] {build.name}: {first}"[:200].rstrip(": ")

    @staticmethod
    def _build_body(build: objects.BuildRequest) -> str:
        return (f"{build.spec.request[:4000]}\n\n---\nOpened by Longshot for BuildRequest {build.namespace}/"
                f"{build.name} (`spec.merge.pullRequest.per: build`). Each task's branch passed its quality gate as it "
                f"would land on this branch; the head's status is `{fc.GATE_CONTEXT}`. New candidates move the head "
                "forward; approve the head to merge the whole build.")

    def _title(self, job: objects.MergeJob, build: objects.BuildRequest) -> str:
        task = self.ctx.cache.tasks.get((job.namespace, job.task_name))
        first = (task.spec.description.strip().splitlines() or [""])[0] if task is not None else ""
        return f"[longshot] {job.task_name}: {first}"[:200].rstrip(": ")

    def _body(self, job: objects.MergeJob, build: objects.BuildRequest) -> str:
        task = self.ctx.cache.tasks.get((job.namespace, job.task_name))
        description = task.spec.description[:4000] if task is not None else ""
        return (f"{description}\n\n---\nOpened by Longshot for BuildRequest {build.namespace}/{build.name}, task "
                f"{job.task_name} (MergeJob {job.name}). Its quality gate passed as it would land (status "
                f"`{fc.GATE_CONTEXT}`). Approve to merge; request changes to send a fixer to this branch.")

