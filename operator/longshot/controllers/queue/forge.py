"""Delivery through the forge: a MergeJob whose batch passed waits on its pull request (phase ``AwaitingForge``),
polled by the queue's forge key (``("Queue", "", "forge:<namespace>/<job>")``): ``core.forge`` decides,
``runtime.forge`` talks to the forge. A failed gate of a ``per: task`` candidate is posted on its pull request."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Final

from longshot.api import objects
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.core import forge as fc
from longshot.core import manifests, names
from longshot.core import mergejobs as mj
from longshot.runtime import forge as rforge

from . import jobs

log = logging.getLogger("longshot.mergejobs")

FORGE_TIMEOUT: Final = 15.0
"""Seconds one forge request may take (connect, each read)."""
FORGE_MAX_WAIT: Final = 5.0
"""Longest rate-limit wait slept through in a poll; a longer one requeues the poll at the reset."""
FORGE: Final = "forge:"
"""The work-queue name of a job's forge poll is ``forge:<namespace>/<job>`` (a shard key never starts so)."""


def forge_key(namespace: str, name: str) -> tuple[str, str, str]:
    """The work-queue reference of the forge poll of MergeJob ``namespace/name``."""
    return ("Queue", "", f"{FORGE}{namespace}/{name}")


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
    step = fc.failed_step(output, [s.name for s in manifests.gate_steps(build)])
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


class ForgeStep:
    """The forge key of one MergeJob: one poll of its pull request, its events written, the next poll requeued."""

    def __init__(self, ctx: ctxmod.Context) -> None:
        self.ctx = ctx

    async def reconcile(self, ref: str) -> list[ex.Action]:
        ns, _, name = ref.partition("/")
        job = self.ctx.cache.jobs.get((ns, name))
        if job is None or job.metadata.deleting or job.status.phase != mj.AWAITING_FORGE:
            return []
        build = self.ctx.cache.build_of(job)
        if build is None or not self.ctx.owns_build(build):
            return []
        now = self.ctx.clock()
        state = jobs.job_state(self.ctx, job, build)
        settings = build.spec.merge.pull_request
        poll = settings.poll_seconds if settings is not None else 60
        events, again = await self._forge(job, build, state)
        queue = cachemod.queue_name(build, job.spec.target)
        return [*jobs.write(self.ctx, job, build, events, now, queue),
                ex.Requeue(forge_key(ns, name), again if again is not None else now + timedelta(seconds=poll))]

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
        auto = settings.auto_merge
        if auto is not None and auto.enabled:
            ask = replace(ask, auto_merge=auto.method, handed=state.pull is not None and state.pull.auto_merge)
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
                                                          and pull.head == facts.head),
                                  pull is not None and pull.auto_merge)
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
                    case fc.EnableAutoMerge():
                        final, pull = self._hand_over(f, e, pull)
                        if final is not None:
                            return [*events, final]
                    case fc.Wait() | fc.Landed() | fc.Fail() | fc.RequestChanges():
                        events.append(self._event(e, pull))
        return events

    @staticmethod
    def _hand_over(f: rforge.Forge, e: fc.EnableAutoMerge,
                   pull: mj.PullRef | None) -> tuple[mj.Event | None, mj.PullRef | None]:
        """Hand the pull request to the forge's auto-merge: the event that ends the poll (merged at once, or
        refused), else None and the pull request marked handed (the decision's ``Wait`` follows)."""
        result = f.enable_auto_merge(e.number, e.node_id, e.method, e.sha)
        if result.merged and result.commit:  # GitLab merges at once when nothing is pending
            return mj.ForgeMerged(result.commit, f"pull request #{e.number} was merged by the forge as "
                                                 f"{result.commit[:12]}"), pull
        if not result.merged and result.message:  # refused: not handed; asked again at the next poll
            return mj.ForgeWaiting("AutoMergeRefused", f"the forge refused auto-merge on pull request #{e.number}: "
                                                       f"{result.message}; asked again at the next poll", pull), pull
        return None, replace(pull, auto_merge=True) if pull is not None else None

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

