"""Reading where work already lives: the roadmap file at the target tip, and the issue tracker; and commenting on
issues. Blocking (git, HTTP): the build reconciler calls these with ``asyncio.to_thread``.

Every failure becomes an :class:`IntakeError` with a failure class the build decider understands
(``core.builds.IntakeChecked``): ``Configuration`` (the path or the project is wrong, the file is not UTF-8 or too
large, the Secret is missing) and ``Auth`` (the tracker refused the token) wait for a person; ``RateLimited``
(``retry_at``) and ``Infrastructure`` are tried again. Messages name the field and what to do, never the token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from longshot.api import conditions as cond
from longshot.api import keys, objects
from longshot.api.handoff import PlannedTask
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.controllers import lanes, sweeping
from longshot.core import builds, plan, roadmap, tasks
from longshot.net import guard as gd
from longshot.runtime import kube as kubemod
from longshot.runtime import trackers
from longshot.vcs import speculate
from longshot.vcs import workspace as vws

TRACKER_MAX_WAIT = 5.0
"""Longest rate-limit wait slept through inside a reconcile; a longer one is retried at its reset."""


@dataclass
class IntakeError(Exception):
    failure_class: str
    message: str
    retry_at: dt.datetime | None = None
    done: list[int] = field(default_factory=list)
    """For :func:`comment`: the issues commented on before the failure."""

    def __str__(self) -> str:
        return self.message


def read_roadmap(w: vws.Workspace, base: str, path: str) -> list[PlannedTask]:
    """The plan of the roadmap file ``path`` at the tip of ``base`` (``core.roadmap.plan``)."""
    try:
        head = speculate.head_of(w, base)
        with w.locked():
            text = speculate.read_file(w, head, path)
    except vws.GitError as e:
        raise IntakeError("Infrastructure", f"the roadmap could not be read from branch {base}: {e}") from None
    except ValueError as e:
        raise IntakeError("Configuration", f"spec.planner.roadmapPath: {e}; keep the roadmap a UTF-8 Markdown "
                                           f"file of at most {speculate.MAX_ROADMAP_BYTES} bytes") from None
    if text is None:
        raise IntakeError("Configuration", f"spec.planner.roadmapPath: {path} does not exist on branch {base} "
                                           f"(at {head[:12]}); add the file or fix the path")
    try:
        return roadmap.plan(text)
    except roadmap.RoadmapTooLarge as e:
        raise IntakeError("Configuration", f"spec.planner.roadmapPath: {path} on branch {base}: {e}") from None


def _credentials(k: kubemod.KubeAPI, build: objects.BuildRequest) -> tuple[str | None, str | None]:
    """The token (key ``token``) and, for Jira Cloud's basic auth, the account's address (key ``email``) of the
    Secret of ``spec.planner.issues.credentialsSecret``."""
    source = build.spec.planner.issues
    assert source is not None
    return secret_credentials(k, build.namespace, source.credentials_secret, "planner.issues")


def secret_credentials(k: kubemod.KubeAPI, namespace: str, name: str | None,
                       field: str) -> tuple[str | None, str | None]:
    """``(token, email)`` of the tracker's Secret ``name`` (the setting ``spec.<field>.credentialsSecret``)."""
    if not name:
        return None, None
    data = k.get_secret(namespace, name)
    if data is None:
        raise IntakeError("Configuration", f"spec.{field}.credentialsSecret: Secret {name!r} does not exist in "
                                           f"namespace {namespace}; create it with a key 'token'")
    token = data.get("token")
    if not token:
        raise IntakeError("Configuration", f"spec.{field}.credentialsSecret: Secret {name!r} has no key 'token'; "
                                           "add the tracker's token under that key")
    return token, data.get("email") or None


def tracker(k: kubemod.KubeAPI, build: objects.BuildRequest, guard: gd.Guard | None = None,
            **options: Any) -> trackers.Tracker:
    """The client of the build's issue tracker, with the token from its Secret; with ``guard``, held to the egress
    policy (the URL checked here, every connection's addresses in ``net.transport``)."""
    source = build.spec.planner.issues
    if source is None:
        raise IntakeError("Configuration", "spec.planner.issues is required when spec.planner.source is issues")
    options.setdefault("max_wait", TRACKER_MAX_WAIT)
    if guard is not None:
        try:
            guard.check_url(trackers.api_url(source), "spec.planner.issues.url", purpose="tracker")
        except gd.Refused as e:
            raise IntakeError("Configuration", str(e)) from None
        options.setdefault("egress", guard)
    token, email = _credentials(k, build)
    return trackers.make_tracker(source, token, email=email, **options)


def mapped(e: trackers.TrackerError, field: str = "planner.issues") -> IntakeError:
    """A tracker client's error as an :class:`IntakeError` with what to fix in ``spec.<field>`` (the planner's
    issues, or a standing intake's ``intake.tracker``)."""
    retry_at = None
    if isinstance(e, trackers.RateLimited):
        retry_at = dt.datetime.fromtimestamp(e.retry_at, tz=dt.UTC)
    hint = {"Auth": f"; fix the token in the Secret named in spec.{field}.credentialsSecret",
            "Configuration": f"; fix spec.{field}"}.get(e.failure_class, "")
    return IntakeError(e.failure_class, f"{e}{hint}", retry_at)



def read_issues(k: kubemod.KubeAPI, build: objects.BuildRequest, guard: gd.Guard | None = None,
                **options: Any) -> list[PlannedTask]:
    """One task per open issue with the labels (``trackers.issues_to_tasks``)."""
    source = build.spec.planner.issues
    try:
        with tracker(k, build, guard, **options) as t:
            return trackers.issues_to_tasks(t.list_issues(source.labels if source is not None else ()))
    except trackers.TrackerError as e:
        raise mapped(e) from None


def comment(k: kubemod.KubeAPI, build: objects.BuildRequest, posts: list[tuple[int, str, str]],
            guard: gd.Guard | None = None, **options: Any) -> list[int]:
    """Post ``(issue number, body, marker)`` comments (once per marker); the numbers done, in order. Stops at the
    first failure, which it raises after the ones before it were posted (their numbers are in ``e.done``)."""
    done: list[int] = []
    try:
        with tracker(k, build, guard, **options) as t:
            for number, body, marker in posts:
                t.comment(number, body, marker=marker)
                done.append(number)
    except trackers.TrackerError as e:
        err = mapped(e)
        err.done = done
        raise err from None
    return done


log = logging.getLogger("longshot.builds")

# --- the build's intake, and its comments on issues -------------------------------------------------------------

INTAKE_RETRY = timedelta(seconds=30)
"""When a failed read of the roadmap or tracker is tried again (a person's fix, or a passing outage)."""
MAX_COMMENTS = 10
"""Issue comments posted per reconcile; the rest wait for the next one."""
COMMENTED_ANNOTATION = keys.ISSUE_COMMENT
"""On an issue-driven task: the result already commented on the issue (``merged`` or ``failed``)."""


@dataclass
class _Memo:
    iteration: int
    generation: int
    error: tuple[str, str] | None
    retry_at: datetime | None


class Intake:
    """Part of the BuildRequest reconciler: the plan of an iteration from the roadmap or the tracker, and the
    comments on issues whose task merged or failed for good."""

    def __init__(self, ctx: ctxmod.Context) -> None:
        self.ctx = ctx
        self.intakes: dict[cachemod.Key, _Memo] = {}
        self.comment_after: dict[cachemod.Key, datetime] = {}

    def forget(self, key: cachemod.Key) -> None:
        self.intakes.pop(key, None)
        self.comment_after.pop(key, None)

    async def intake(self, build: objects.BuildRequest, state: builds.BuildState, now: datetime,
                      out: list[ex.Action]) -> list[builds.Event]:
        """The plan of this iteration from the roadmap file or the issue tracker, or why it could not be read."""
        memo = self.intakes.get(build.key)
        if memo is not None and memo.iteration == state.iteration and memo.generation == build.generation \
                and memo.retry_at is not None and now < memo.retry_at:
            out.append(ex.Requeue(("BuildRequest", *build.key), memo.retry_at))
            return [builds.IntakeChecked(memo.error)]
        try:
            if state.source == "roadmap":
                w = await self.ctx.workspaces.get(build)
                planned = await lanes.git(read_roadmap, w, build.spec.repository.base_branch,
                                          build.spec.planner.roadmap_path)
            else:
                async with self.ctx.lanes.lane(build.namespace):
                    planned = await asyncio.to_thread(read_issues, self.ctx.kube, build, guard=self.ctx.egress)
        except IntakeError as e:
            retry_at = e.retry_at or now + INTAKE_RETRY
            self.intakes[build.key] = _Memo(state.iteration, build.generation, (e.failure_class, e.message),
                                              retry_at)
            out.append(ex.Requeue(("BuildRequest", *build.key), retry_at))
            log.warning("intake of %s/%s failed: %s", build.namespace, build.name, e.message)
            return [builds.IntakeChecked((e.failure_class, e.message))]
        self.intakes[build.key] = _Memo(state.iteration, build.generation, None, None)
        mine = {t.name: t for t in self.ctx.cache.tasks_of(build.key)}
        current = planned_by(self.ctx, build, state.iteration)
        base = plan.context_for(wire(build))
        earlier = {n for n, t in mine.items()
                   if n not in current and plan.PLAN_NAME_ANNOTATION in t.metadata.annotations}
        # what an earlier iteration attempted is not planned again (its merged work is on the target; a failed
        # one stays failed until someone retries it); dependencies on it are dropped
        fresh = [t for t in planned if plan.task_name(base, t.name) not in earlier]
        kept = {t.name for t in fresh}
        fresh = [t.model_copy(update={"depends_on": [d for d in t.depends_on if d in kept]}) for t in fresh]
        ctx = plan.context_for(wire(build), None, names_in_namespace(self.ctx, build) - current,
                               total_tasks=len(mine) - len(current))
        ctx = dataclasses.replace(ctx, iteration=max(1, state.iteration))
        return [builds.IntakeChecked(None), builds.PlannerFinished(fresh, ctx)]

    async def comment(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask], now: datetime,
                       out: list[ex.Action]) -> None:
        """Comment each issue whose task merged or failed for good, once."""
        source = build.spec.planner.issues
        after = self.comment_after.get(build.key)
        if source is None or not source.comment or (after is not None and now < after):
            return
        posts: list[tuple[int, str, str]] = []
        results: dict[int, tuple[str, str]] = {}
        for t in sorted(ts, key=lambda t: t.name):
            local = t.metadata.annotations.get(plan.PLAN_NAME_ANNOTATION)
            number = trackers.issue_number(local) if local else None
            if number is None or t.spec.parent_task or COMMENTED_ANNOTATION in t.metadata.annotations:
                continue
            result = self.issue_result(build, t)
            if result is None:
                continue
            merged, body = result
            posts.append((number, body, f"{build.name}/{t.name}"))
            results[number] = (t.name, "merged" if merged else "failed")
            if len(posts) >= MAX_COMMENTS:
                out.append(ex.Requeue(("BuildRequest", *build.key), now + timedelta(seconds=1)))
                break
        if not posts:
            return
        try:
            async with self.ctx.lanes.lane(build.namespace):
                done = await asyncio.to_thread(comment, self.ctx.kube, build, posts, guard=self.ctx.egress)
        except IntakeError as e:
            done = e.done
            retry_at = e.retry_at or now + INTAKE_RETRY
            self.comment_after[build.key] = retry_at
            out.append(ex.Requeue(("BuildRequest", *build.key), retry_at))
            out.append(ex.RecordEvent(build.ref(), "Warning", "IssueCommentFailed", e.message[:1024]))
        for number in done:
            name, what = results[number]
            out.append(ex.PatchObject("AgentTask", build.namespace, name,
                                      {"metadata": {"annotations": {COMMENTED_ANNOTATION: what}}}))

    def issue_result(self, build: objects.BuildRequest, t: objects.AgentTask) -> tuple[bool, str] | None:
        """``(merged, comment)`` once the task's result is final, else None."""
        job = self.ctx.cache.job_of_task(t)
        handoff = t.status.handoff
        summary = handoff.summary if handoff is not None else ""
        if job is not None and self.ctx.delivered(job):
            return True, trackers.result_comment(build=build.name, task=t.name, merged=True,
                                                 commit=job.status.merged_commit, summary=summary)
        last = t.status.attempts[-1] if t.status.attempts else None
        reason = ""
        if t.status.phase == tasks.FAILED and not (last is not None and last.failure_class in tasks.PERSON_FAILURES):
            reason = sweeping.last_failure(t) or "the task failed"
        elif t.status.phase == tasks.CANCELLED:
            reason = "the task was cancelled"
        elif job is not None and self.ctx.undeliverable(job):
            ready = cond.find(ctxmod.conditions_of(job), cond.READY) or {}
            reason = f"its branch could not be merged: {ready.get('message') or job.status.phase}"
        elif t.status.phase == tasks.SUCCEEDED and (handoff is None or not handoff.commit):
            reason = "the agent changed nothing"
        if not reason:
            return None
        return False, trackers.result_comment(build=build.name, task=t.name, merged=False, reason=reason[:2000],
                                              summary=summary)

def wire(obj: objects.Resource) -> dict[str, Any]:
    out: dict[str, Any] = obj.model_dump(by_alias=True, mode="json", exclude_none=True)
    return out


def names_in_namespace(ctx: ctxmod.Context, build: objects.BuildRequest) -> set[str]:
    return {n for (ns, n) in ctx.cache.tasks if ns == build.namespace}


def planned_by(ctx: ctxmod.Context, build: objects.BuildRequest, iteration: int) -> set[str]:
    """Tasks of the build's top-level plan of ``iteration`` (they exist when a plan was taken in before a
    restart)."""
    it = str(max(1, iteration))
    return {t.name for t in ctx.cache.tasks_of(build.key)
            if plan.PLAN_NAME_ANNOTATION in t.metadata.annotations and not t.spec.parent_task
            and t.metadata.labels.get(plan.ITERATION_LABEL, "1") == it}
