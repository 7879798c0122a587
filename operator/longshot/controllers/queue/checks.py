"""The queue's checks step, its own key (``("Queue", "", "checks:<queue>")``, started by the batch step whenever
jobs wait for checks): the per-branch checks of new candidates. A stacked branch first waits until its task's
dependencies merged (``WaitingForDependencies``) and fails (``DependencyFailed``) when one never will; then the
secret scan of every commit of the branch, and for the ``strict`` profile (or ``qualityGate.review``) a reviewer task
``<job>-review`` (``ChecksPassed`` / ``SecretFound`` / ``ChangesRequested``).

A verdict other than passed is written at once (a new job's first status: ``Observed`` with its checks). Checks that
simply passed are held in memory (``memory.Memory.passed``) and become the pure queue's ``QueueState.held``: the
batch step writes them with the job's batch, or on their own when the queue's decision takes no batch for them
(``core.mergequeue.WriteChecks``); the checks step wakes the batch step. Apart from the batch step, a gate's verdict
is acted on without waiting for the scans of the hundreds of jobs that came in meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from longshot import metrics
from longshot.api import mergejob, objects
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import delegating
from longshot.controllers import executor as ex
from longshot.core import binding, gates, manifests, names, tasks
from longshot.core import mergejobs as mj
from longshot.core.effects import SetCondition
from longshot.vcs import secretscan

from . import git, jobs
from .members import member
from .memory import Held, Memory
from .workspaces import CHECKS_WORKSPACE, ScanItem, ScanResult, Workspaces

log = logging.getLogger("longshot.mergequeue")

REVIEW: Final = "review"
CHECKS: Final = "checks:"
"""The work-queue name of a queue's checks step is its name with this prefix (a shard key never starts so)."""
CHECKS_PER_RECONCILE: Final = 48
"""Most new MergeJobs one reconcile of a queue's checks step checks (secret scan, review); the rest wait for the
next, which follows at once. Each checked job is a status write: a slice keeps a thousand workers finishing at once
from holding the step (and the status writes of the checked) for minutes."""
CHECKS_BUDGET_SECONDS: Final = 2.0
"""And at most this long for their scans, once their branches are fetched together (the first is always checked).
The budget is the time spent holding the workspace's lock for them, not wall time: a wait for the batch step's git
work would otherwise spend it. The scans run in the checks step's own workspace (``CHECKS_WORKSPACE``); each still
takes its lock on its own."""
SLOW_SECONDS: Final = 2.0
"""A checks reconcile taking longer is logged with what it did."""


def checks_ahead(build: objects.BuildRequest) -> int:
    """How many of a build's checked candidates may wait for a batch before the checks step leaves the build's other
    new jobs unchecked: ``window x (depth + 1)``, the batches the batch step can build next and one more. Jobs far
    from the head are checked as they near it: their scans would hold the workspace's lock and a core while the
    batches wait. Until then a job has the CRD's default status (``api.mergejob.initial_status``), the truth."""
    return build.spec.merge.window * (build.spec.merge.depth + 1)


@dataclass(frozen=True)
class Slice:
    """What one checks reconcile looks at: the jobs to check (queue order), those never written (``fresh``)."""

    checking: list[tuple[objects.MergeJob, objects.BuildRequest]]
    fresh: set[str]


class ChecksStep:
    def __init__(self, ctx: ctxmod.Context, workspaces: Workspaces, memory: Memory) -> None:
        self.ctx = ctx
        self.workspaces = workspaces
        self.memory = memory

    async def reconcile(self, name: str, pairs: Sequence[tuple[objects.MergeJob, objects.BuildRequest]]
                        ) -> list[ex.Action]:
        """One slice of the checks of queue ``name`` (``pairs``: its jobs): ``CHECKS_PER_RECONCILE`` jobs, their
        branches fetched together, ``CHECKS_BUDGET_SECONDS`` of scans, in the step's own workspace; the rest at
        once in the next reconcile."""
        now = self.ctx.clock()
        todo = self._slice(pairs)
        if not todo.checking:
            return []
        started = time.monotonic()
        w = await self.workspaces.get(todo.checking[0][1], CHECKS_WORKSPACE)
        await git.run(w, git.Head(name.partition("|")[2]))  # scans run from where a branch left the target now
        sliced = [(j, b) for j, b in todo.checking if j.spec.commit][:CHECKS_PER_RECONCILE]
        if len(sliced) > 1:
            await git.run(w, git.FetchCommits(tuple(member(self.ctx, j, b) for j, b in sliced)))
        out: list[ex.Action] = []
        before, scans = self._before_scans(todo.checking, {j.name for j, _ in sliced})
        timeout = self.ctx.settings.scan_timeout_seconds or None
        scanned = await git.run(w, git.Scan(tuple(scans), CHECKS_BUDGET_SECONDS, timeout),
                                git.scan_deadline(timeout)) if scans else {}
        checked, holding = self._verdicts(todo, before, scanned, out, now, name)
        metrics.observe_queue_phase("checks", time.monotonic() - started)
        if holding:  # their verdicts are not written now (no watch event): the batch step is woken here
            out.append(ex.Requeue(("Queue", "", name), now))
        if checked < len(todo.checking):
            out.append(ex.Requeue(("Queue", "", CHECKS + name), now))
        took = time.monotonic() - started
        if took >= SLOW_SECONDS:
            log.info("queue %s: the checks of %d job(s) took %.1fs (%d left for the next)", name, checked, took,
                     len(todo.checking) - checked)
        return out

    def _slice(self, pairs: Sequence[tuple[objects.MergeJob, objects.BuildRequest]]) -> Slice:
        """The queued jobs whose checks are pending and not held, of the builds with fewer checked candidates
        waiting than ``checks_ahead``."""
        kinds = [(j, b, self._kind(j, b)) for j, b in pairs if j.status.phase in (None, mj.QUEUED)]
        ready: dict[cachemod.Key, int] = {}
        for _, b, kind in kinds:
            if kind == "ready":
                ready[b.key] = ready.get(b.key, 0) + 1
        checking = [(j, b) for j, b, kind in kinds if kind in ("fresh", "pending") and ready.get(b.key, 0)
                    < checks_ahead(b)]
        return Slice(checking, {j.name for j, _, kind in kinds if kind == "fresh"})

    def _kind(self, job: objects.MergeJob, build: objects.BuildRequest) -> str:
        """A queued job for the checks step: ``fresh`` (never written, to check), ``pending`` (written, to check),
        ``ready`` (checked, or held, and in no batch), else ``other``."""
        st = jobs.job_state(self.ctx, job, build)
        held = self.memory.held(job) is not None
        if st.phase != mj.QUEUED:
            return "other"
        if (st.checks == "passed" or held) and st.batch is None:
            return "ready"
        if st.checks != "pending" or held:
            return "other"
        if mergejob.seen(job.status):
            return "pending"
        return "fresh" if st.batch is None else "other"

    def _before_scans(self, checking: Sequence[tuple[objects.MergeJob, objects.BuildRequest]], sliced: set[str]
                      ) -> tuple[dict[str, list[mj.Event]], list[ScanItem]]:
        """First what needs no git (dependencies, a missing commit), then the branches of the slice to scan."""
        before: dict[str, list[mj.Event]] = {}
        scans: list[ScanItem] = []
        for job, build in checking:
            if job.name not in sliced and job.spec.commit:
                continue
            early = self._before_scan(job, build)
            if early is not None:
                before[job.name] = early
            elif job.spec.commit:
                scans.append(ScanItem(job.name, job.spec.target, job.spec.branch, job.spec.commit))
        return before, scans

    def _verdicts(self, todo: Slice, before: dict[str, list[mj.Event]], scanned: dict[str, ScanResult],
                  out: list[ex.Action], now: datetime, name: str) -> tuple[int, int]:
        """Each checked job's verdict written, or held; (checked, held)."""
        checked = holding = 0
        for job, build in todo.checking:
            if job.name not in before and job.name not in scanned:
                continue
            verdict = before[job.name] if job.name in before else self._after_scan(job, build, scanned[job.name], out)
            events: list[mj.Event] = [*([mj.Observed()] if job.name in todo.fresh else []), *verdict]
            checked += 1
            if self._hold(job, build, events, verdict, now):
                holding += 1
            elif events:
                out += jobs.write(self.ctx, job, build, self.memory.with_held(job, events), now, name)
        return checked, holding

    def _hold(self, job: objects.MergeJob, build: objects.BuildRequest, events: Sequence[mj.Event],
              verdict: Sequence[mj.Event], now: datetime) -> bool:
        """Hold ``job``'s checks instead of writing them when they simply passed: the job stays queued for a batch
        (no approval to wait for, nothing else to say). True if held."""
        if len(verdict) != 1 or not isinstance(verdict[0], mj.ChecksPassed) or not job.spec.commit:
            return False
        new, effects = jobs.decide(job, jobs.job_state(self.ctx, job, build), events, now)
        if new.phase != mj.QUEUED or new.checks != "passed" or new.batch is not None or new.not_before is not None \
                or any(not isinstance(e, SetCondition) for e in effects):
            return False
        self.memory.passed[(job.namespace, job.name)] = Held(job.metadata.uid, job.spec.commit, verdict[0], now)
        return True

    def _before_scan(self, job: objects.MergeJob, build: objects.BuildRequest) -> list[mj.Event] | None:
        """The verdict of a job's checks that needs no git (None: its branch is to be scanned): delegated children
        and stacked dependencies merge first, and a job must name its commit."""
        task = self.ctx.cache.tasks.get((job.namespace, job.task_name))
        if task is not None and task.status.children:
            waiting = delegating.merge_wait(self.ctx, task, build)  # delegated children merge first
            if waiting is not None:
                return [mj.DependenciesPending(waiting, delegated=True)]
        if task is not None and (build.spec.dependencies == "stacked" or job.spec.stacked_on):
            # a stacked dependent merges after its dependencies, and never without them
            verdict, why = self.ctx.merge_readiness(task, build)
            if verdict == "waiting":
                return [mj.DependenciesPending(why)]
            if verdict == "blocked":
                return [mj.DependencyFailed(why)]
        if job.spec.commit is None:
            return [mj.Error("the MergeJob names no commit")]
        return None

    def _after_scan(self, job: objects.MergeJob, build: objects.BuildRequest, result: ScanResult,
                    out: list[ex.Action]) -> list[mj.Event]:
        """The verdict of a job's checks once its branch was scanned: a secret found, or the review (a reviewer
        task made, or its verdict read), or passed."""
        if isinstance(result, secretscan.ScanTimedOut):
            return [mj.ScanTimedOut(self.ctx.settings.scan_timeout_seconds)]
        if isinstance(result, Exception):
            return [mj.Error(f"the secret scan could not read the branch: {result}")]
        if result:
            return [mj.SecretFound(tuple(str(f) for f in result[:20]))]
        if not gates.needs_review(build.spec.quality_gate):
            return [mj.ChecksPassed()]
        return self._review(job, build, out)

    def _review(self, job: objects.MergeJob, build: objects.BuildRequest, out: list[ex.Action]) -> list[mj.Event]:
        """The review of a scanned branch: its reviewer task made, or its verdict read."""
        commit = job.spec.commit or ""
        reviewer = names.child_name(job.name, REVIEW)
        rtask = self.ctx.cache.tasks.get((job.namespace, reviewer))
        if rtask is None:
            queue = cachemod.queue_name(build, job.spec.target)
            out.append(ex.CreateObject(manifests.tester_of(
                build, reviewer, branch=job.spec.branch, command="", purpose=REVIEW, role="reviewer",
                priority=job.spec.priority, annotations={cachemod.QUEUE_ANNOTATION: queue}, commit=commit,
                description=f"Review the changes of branch {job.spec.branch} at commit {commit} against "
                            f"{job.spec.target}: approve them, or request changes with reasons.")))
            return [mj.Reviewing(reviewer)]
        handoff = rtask.status.handoff
        if rtask.status.phase == tasks.SUCCEEDED and handoff is not None:
            void = binding.review_mismatch(handoff.commit, commit) or (
                None if rtask.spec.commit == commit else binding.review_mismatch(rtask.spec.commit, commit))
            if void is not None:
                # the review read another commit than the one that would land: it does not count; the reviewer
                # task is deleted and made again (bound to the MergeJob's commit) once it is gone
                log.warning("merge job %s/%s: %s", job.namespace, job.name, void)
                out.append(ex.RecordEvent(job.ref(), "Warning", "ReviewVoid", void))
                kube = self.ctx.kube
                ns = job.namespace
                out.append(ex.Call(lambda: kube.delete("AgentTask", ns, reviewer), f"delete void review {reviewer}"))
                return [mj.Reviewing(reviewer)]
            if handoff.verdict == "changes-requested":
                return [mj.ChangesRequested(reviewer, tuple(handoff.reasons) or (handoff.summary,))]
            return [mj.ChecksPassed("the secret scan and the review")]
        if rtask.status.phase in (tasks.FAILED, tasks.CANCELLED):
            return [mj.Error(f"reviewer {reviewer} failed")]
        return []
