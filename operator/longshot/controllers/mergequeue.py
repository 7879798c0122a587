"""The merge-queue reconciler: one tenant's speculative queue of one repository branch, run by the replica that
holds the shard (``cache.shard_key``: namespace, credentials Secret and repository URL).

Each reconcile of ``("Queue", "", "<shard key>|<target>")`` (the batch step): every job in it belongs to a build of
one namespace naming one credentials Secret, so the reconcile fetches, scans and pushes with exactly that
credential. Two tenants on one repository and target have two queues; their pushes to the target are
compare-and-swaps, so one landing makes the other's batch stale (tested again), never lost.

1. fetches the target and, for conflicted jobs, notices that it moved (``TargetMoved``), or that nothing else
   in the queue can move it (``TargetIdle``: the job goes to a fixer instead of waiting for ever); with
   ``spec.merge.requireApproval`` a job that passed its checks waits at ``AwaitingApproval`` until its
   ``spec.approved`` is true (``Approved``);
2. asks ``core.mergequeue.decide`` what to do with the batches, and does it: build the speculative commits, on the
   target or stacked on the batch under test, and publish them (``PrepareBatch``), start one tester task per gated
   prefix (``StartProbes``), push a tested prefix with a compare-and-swap (``Land``), evict a culprit to a fixer
   with the failing output (``Evict``), put the rest back (``Requeue``).

The checks of new candidates are the queue's checks step, its own reconcile (``("Queue", "", "checks:<name>")``,
started by the batch step whenever jobs wait for checks, beside it on the Queue controller's workers): it writes a
new job's first status (``Observed``) with its checks, one write: a stacked branch first waits until its task's
dependencies merged (``WaitingForDependencies``) and fails (``DependencyFailed``) when one never will; then the
secret scan of every commit of the branch, and for the ``strict`` profile (or ``qualityGate.review``) a reviewer
task ``<job>-review`` (``ChecksPassed`` / ``SecretFound`` / ``ChangesRequested``). A job whose checks simply passed
is not written then: its verdict is held in memory (``QueueReconciler.passed``) and written with the job's next
status, its batch's (``Testing``), one write where there were two; a held job not in a batch within
``HOLD_SECONDS`` is written then by the batch step. The checks step wakes the batch step. Apart, a gate's verdict is
acted on without waiting for the scans of the hundreds of jobs that came in meanwhile (issue 34).

Gate tasks are AgentTasks ``<build>-gate-<batch>-<position>`` (role tester, label ``longshot.dev/purpose=gate``)
on the queue branch of their prefix; their verdicts are the probes. Every job's state change goes through the
MergeJob decider (``core.mergejobs``). In-memory state (the window per build) is only an optimisation: a
restart starts at the maximum window and rebuilds everything else from the MergeJobs and the gate tasks.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, assert_never

from longshot import metrics, tracing
from longshot.api import mergejob, objects, timeutil
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import delegating
from longshot.controllers import executor as ex
from longshot.controllers import mergejobs as mjc
from longshot.core import binding, fanout, gates, names, plan, tasks
from longshot.core import mergejobs as mj
from longshot.core import mergequeue as q
from longshot.core.effects import SetCondition
from longshot.runtime import trackers
from longshot.vcs import secretscan, speculate
from longshot.vcs import workspace as vws

log = logging.getLogger("longshot.mergequeue")

GATE = "gate"
REVIEW = "review"
SLOW_RECONCILE_SECONDS = 2.0
"""A queue reconcile taking longer is logged with what it spent its time on."""
HEAD_REUSE_SECONDS: Final = 2.0
"""A queue reconcile reads the target's head from the server (a fetch) unless it read it, or landed a batch on it,
less than this long ago. With a thousand agents a queue was reconciled almost every second (a gate's status, a
MergeJob's), and the fetch was a third of the batch step's time (``make bench-fleet``: 370 fetches of 0.4 s in 600 s).
A push by someone else in that window is seen at the next fetch; a batch built on the head before it does not land
(the compare-and-swap of the land fails, and its candidates are tested again)."""
CHECKS: Final = "checks:"
"""The work-queue name of a queue's checks step is its name with this prefix (a shard key never starts so)."""
CHECKS_PER_RECONCILE: Final = 48
"""Most new MergeJobs one reconcile of a queue's checks step checks (secret scan, review); the rest wait for the
next, which follows at once. Each checked job is a status write: a slice keeps a thousand workers finishing at once
from holding the step (and the status writes of the checked) for minutes."""
CHECKS_BUDGET_SECONDS: Final = 2.0
"""And at most this long for their scans, once their branches are fetched together (the first is always checked).
The budget is the time spent holding the workspace's lock for them: counted as wall time, a wait for the batch step's
git work (a prepare holds the lock 3 to 4 s with a thousand agents) spent the whole budget, and half of the checks
reconciles checked one job (``make bench-fleet``). The scans run in the checks step's own workspace
(``CHECKS_WORKSPACE``); each still takes its lock on its own."""


HOLD_SECONDS: Final = 30.0
"""A job whose checks passed is written with its batch (``QueueReconciler.passed``); one that has not joined a batch
this long after its checks is written then by the batch step (``Queued``, checks passed). The checks step checks a
build's jobs only while fewer than ``checks_ahead`` checked ones wait, so held jobs are near the head of the queue,
and a batch takes them within seconds. With a thousand agents the write of each job's checks was a third of the
MergeJobs' status writes (``make bench-fleet``: 3.43 per merge)."""

SECRET_TTL_SECONDS: Final = 5.0
"""A tenant's credentials Secret is read again for its workspace when the last read is this old: a new or rotated
credential is used within seconds. Read at every queue reconcile it was six reads a second with four repositories
(``make bench-fleet``)."""

gate_command = mjc.gate_command
tester_manifest = mjc.tester_manifest


CHECKS_WORKSPACE: Final = "checks"
"""The checks step's scans run in a workspace of their own (``Workspaces.get(build, CHECKS_WORKSPACE)``: a second
clone of the tenant's repository, with the same credential), so that they never wait for the batch step's git work
nor hold it up. In one workspace the batch step (fetch, prepare, push) held the lock 60 % of the time with a thousand
agents, the scans had the rest, and the checks became the queue's wall (``make bench-fleet``: 1,400 jobs waiting for
their checks, the batches waiting for checked candidates)."""


class Workspaces:
    """The operator's git workspaces, one per tenant and repository (``workspace.tenant_key``: the build's
    namespace, its credentials Secret and the URL), each with that build's credentials: a job is fetched, scanned
    and pushed only with the credential of its own build's Secret, and ssh key files are never shared. A tenant's
    queue has two: the batch step's, and the checks step's (``CHECKS_WORKSPACE``). The Secret is read again when
    its last read is ``SECRET_TTL_SECONDS`` old; a changed credential makes the workspace anew."""

    def __init__(self, ctx: ctxmod.Context, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self._ws: dict[str, vws.Workspace] = {}
        self.monotonic = monotonic
        self._secrets: dict[tuple[str, str], tuple[float, dict[str, str] | None]] = {}
        """(namespace, Secret) -> (when it was read, monotonic; its data): ``SECRET_TTL_SECONDS``."""
        root = Path(ctx.settings.workspace_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
            writable = os.access(root, os.W_OK)
        except OSError:
            writable = False
        self.root = root if writable else Path.home() / ".cache" / "longshot" / "workspaces"

    async def get(self, build: objects.BuildRequest, purpose: str = "") -> vws.Workspace:
        """The tenant's workspace of the repository; ``purpose`` names a second one of the same tenant and
        repository (``CHECKS_WORKSPACE``)."""
        secret = build.spec.repository.credentials_secret
        credentials = None
        if secret:
            data = await self._secret(build.namespace, secret)
            if data:
                credentials = vws.GitCredentials.from_secret_data(data)
        url = build.spec.repository.url
        s = self.ctx.settings
        key = vws.tenant_key(build.namespace, secret, url) + (f"-{purpose}" if purpose else "")
        w = self._ws.get(key)
        if w is None or w.credentials != credentials or w.url != url:
            w = vws.Workspace(url, self.root, credentials=credentials, key=key, max_bytes=s.workspace_max_bytes,
                              egress=self.ctx.egress,
                              committer=(s.git_author_name, s.git_author_email))
            self._ws[key] = w
        return w

    async def _secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The credentials Secret's data, read again once it is ``SECRET_TTL_SECONDS`` old."""
        now = self.monotonic()
        known = self._secrets.get((namespace, name))
        if known is not None and now - known[0] < SECRET_TTL_SECONDS:
            return known[1]
        data = await asyncio.to_thread(self.ctx.kube.get_secret, namespace, name)
        if len(self._secrets) >= 1024:  # bounded: the entries past their time go
            self._secrets = {k: v for k, v in self._secrets.items() if now - v[0] < SECRET_TTL_SECONDS}
        self._secrets[(namespace, name)] = (now, data)
        return data


def _scan_locked(w: vws.Workspace, base: str, head: str, *, timeout: float | None) -> list[secretscan.Finding]:
    """Every commit of ``base..head`` scanned with bounded memory (``secretscan.scan_range``), including binary
    files and the commits a later one undoes; the workspace's own credentials are looked for too. ``timeout``
    (seconds, counted from the scan's start: the caller holds the workspace's lock, so a wait for another job's git
    work is not this branch's fault) bounds it: past it the scan raises ``secretscan.ScanTimedOut``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    return secretscan.scan_range(w, base, head, known=w.credentials.secrets, deadline=deadline)[:100]


@dataclass(frozen=True)
class Held:
    """A job's checks that passed, held to be written with its next status (``HOLD_SECONDS``): the job as checked
    (its uid and commit) and the verdict."""

    uid: str
    commit: str
    verdict: mj.ChecksPassed
    at: datetime
    """When the checks passed (the operator's clock)."""


@dataclass(frozen=True)
class ScanItem:
    """A branch the checks step scans: its job, target, branch and commit."""

    name: str
    target: str
    branch: str
    commit: str


ScanResult = list[secretscan.Finding] | Exception
"""What a scan found, or why it could not tell (``secretscan.ScanTimedOut``, ``vws.GitError``,
``secretscan.ScanError``)."""


def scan_slice(w: vws.Workspace, items: Sequence[ScanItem], *, budget: float, timeout: float | None,
               clock: Callable[[], float] = time.monotonic) -> dict[str, ScanResult]:
    """The merge-base and secret scan of each item in turn, each under its own hold of the workspace's lock (the
    batch step's git work goes between two scans, not after the slice), until the time spent holding it reaches
    ``budget`` seconds (the first item is always scanned); the items not reached are missing from the answer.
    ``timeout`` bounds each scan (:func:`_scan_locked`)."""
    out: dict[str, ScanResult] = {}
    spent = 0.0
    for item in items:
        if out and spent >= budget:
            break
        with w.locked():
            began = clock()
            try:
                base = _merge_base_locked(w, item.target, item.branch, item.commit)
                out[item.name] = _scan_locked(w, base, item.commit, timeout=timeout)
            except (secretscan.ScanTimedOut, vws.GitError, secretscan.ScanError) as e:
                out[item.name] = e
            spent += clock() - began
    return out


def checks_ahead(build: objects.BuildRequest) -> int:
    """How many of a build's checked candidates may wait for a batch before the checks step leaves the build's other
    new jobs unchecked: ``window x (depth + 1)``, the batches the batch step can build next and one more. With a
    thousand agents the jobs arrived far faster than batches could take them, and the scans of jobs minutes from the
    head held the workspace's lock and a core while the batches waited for them (``make bench-fleet``: 2,500 jobs
    waiting for their checks at the cut, every batch full). A job far back is checked as it nears the head; until
    then it has the CRD's default status (``mergejobs.OBSERVE_GRACE_SECONDS``)."""
    return build.spec.merge.window * (build.spec.merge.depth + 1)


def _merge_base_locked(w: vws.Workspace, target: str, branch: str, commit: str) -> str:
    """Where the branch left the target (fetched by the queue); the branch is fetched unless it already was, with
    the others (``speculate.fetch_commits``). The caller holds the workspace's lock."""
    if not w.has_commit(commit):
        speculate.fetch(w, target, [speculate.Member(name="scan", namespace="", uid="", branch=branch, commit=commit)])
    return w.out("merge-base", f"refs/remotes/origin/{target}", commit) or f"refs/remotes/origin/{target}"


class QueueReconciler:
    def __init__(self, ctx: ctxmod.Context, workspaces: Workspaces, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.workspaces = workspaces
        self.monotonic = monotonic
        """The clock of ``heads`` (the phases' timings are the real clock's)."""
        self.windows: dict[str, int] = {}
        self.broke: set[str] = set()
        """Builds whose last batch ended with an eviction (``core.mergequeue.QueueState.broke``)."""
        self.did_not_stack: set[tuple[str, str]] = set()
        """(job, speculative commit) pairs that did not apply there (``core.mergequeue.QueueState.did_not_stack``)."""
        self.heads: dict[str, tuple[float, str]] = {}
        """Queue -> (when, monotonic; the target's head then): what the last fetch of the target read, or the commit
        the queue's own push landed (``HEAD_REUSE_SECONDS``)."""
        self.passed: dict[tuple[str, str], Held] = {}
        """(namespace, job) -> the verdict of its checks, passed and not written yet (``HOLD_SECONDS``). Lost with
        the replica: the next owner of the queue checks the job again (its status still says pending)."""

    # --- reading the queue -------------------------------------------------------------------------

    def _jobs(self, shard: str, target: str) -> list[tuple[objects.MergeJob, objects.BuildRequest]]:
        out = []
        for job in list(self.ctx.cache.jobs.values()):
            if job.metadata.deleting or job.spec.target != target:
                continue
            build = self.ctx.cache.build_of(job)
            if build is None or build.metadata.deleting or self.ctx.cache.shard_of(build) != shard:
                continue
            out.append((job, build))
        out.sort(key=lambda jb: (-jb[0].spec.priority, jb[0].metadata.creation_timestamp or timeutil.EPOCH,
                                 jb[0].namespace, jb[0].name))
        return out

    def _probes(self, job: objects.MergeJob) -> list[q.Probe]:
        batch = job.status.batch
        if batch is None:
            return []
        out: list[q.Probe] = []
        for t in self.ctx.cache.tasks_of_batch((job.namespace, job.build_name), batch.id):
            try:
                pos = int(t.metadata.annotations.get(cachemod.POSITION_ANNOTATION, "0"))
            except ValueError:
                continue
            phase = t.status.phase
            handoff = t.status.handoff
            if phase == tasks.SUCCEEDED and handoff is not None and handoff.verdict in ("passed", "failed"):
                output = "\n".join(handoff.reasons[-2:]) or handoff.summary
                out.append(q.Probe(pos, "passed" if handoff.verdict == "passed" else "failed", output[-4000:],
                                   batch.id))
            elif phase in (tasks.FAILED, tasks.CANCELLED):
                continue  # not a verdict: handled as an error of the batch
            else:
                out.append(q.Probe(pos, "running", "", batch.id))
        return out

    def _broken_gates(self, job: objects.MergeJob) -> list[str]:
        batch = job.status.batch
        if batch is None:
            return []
        return [f"gate task {t.name} failed: {(t.status.attempts[-1].exit_reason or '') if t.status.attempts else ''}"
                for t in self.ctx.cache.tasks_of_batch((job.namespace, job.build_name), batch.id)
                if t.status.phase in (tasks.FAILED, tasks.CANCELLED) and not t.spec.cancel]

    # --- the reconcile -----------------------------------------------------------------------------

    async def reconcile(self, name: str) -> list[ex.Action]:
        if name.startswith(CHECKS):
            return await self.check(name.removeprefix(CHECKS))
        shard, _, target = name.partition("|")
        if not self.ctx.owns(shard):
            return []
        pairs = self._jobs(shard, target)
        live = [(j, b) for j, b in pairs if j.status.phase in (None, mj.QUEUED, mj.TESTING, mj.CONFLICTED,
                                                                mj.AWAITING_APPROVAL)]
        if not live:
            return []
        now = self.ctx.clock()
        started = time.monotonic()
        self._forget_written()
        w = await self.workspaces.get(live[0][1])
        first = live[0][1]
        if target == names.pull_branch(first.namespace, first.name):  # per: build delivery: the build branch
            await asyncio.to_thread(speculate.ensure_branch, w, target, first.spec.repository.base_branch)
        known, read_at = self.heads.get(name), self.monotonic()
        if known is not None and read_at - known[0] < HEAD_REUSE_SECONDS:
            head = known[1]
        else:
            head = await asyncio.to_thread(speculate.head_of, w, target)
            self.heads[name] = (read_at, head)
            metrics.observe_queue_phase("fetch", time.monotonic() - started)
        fetched = time.monotonic()
        out: list[ex.Action] = []
        touched: set[str] = set()
        # 1. conflicted jobs retry when the target moved, and go to a fixer when nothing else can move it; approvals
        states = [mjc.job_state(self.ctx, job, build) for job, build in live]
        moving = mj.target_can_move(states)
        # 2. the checks of new candidates are the queue's checks step (``check``: its own reconcile, beside this one,
        # so that a gate's verdict is acted on without waiting for the scans of the jobs that came in meanwhile). A
        # new job's first status is the queue's: that step's when its checks did not simply pass, its batch's (here)
        # when they did (held: ``HOLD_SECONDS``); a job without conditions in any other state (a batch member, after a
        # restore) is the MergeJob reconciler's to write first, and so is a new job the checks have not reached within
        # ``mergejobs.OBSERVE_GRACE_SECONDS``.
        unseen = {job.name for job, _ in live if not mergejob.seen(job.status)}
        held = {job.name for job, _ in live if self.held(job) is not None}  # checked, written with their batch
        pending = {job.name for (job, _), st in zip(live, states, strict=True)
                   if st.phase == mj.QUEUED and st.checks == "pending" and job.name not in held}
        for (job, build), state in zip(live, states, strict=True):
            if job.name in unseen:
                continue
            events: list[mj.Event] = []
            moved = mj.target_event(state, head, moving)
            if moved is not None:
                events.append(moved)
            if state.phase == mj.AWAITING_APPROVAL and not state.needs_approval:
                events.append(mj.Approved("spec.approved is true" if job.spec.approved
                                          else "the build no longer requires approval"))
            if events:
                new, effects = mjc.decide(job, state, self._with_held(job, events), now)
                if effects:
                    out += mjc.actions(job, build, new, effects, now, name)
                    touched.add(job.name)
        if pending:
            out.append(ex.Requeue(("Queue", "", CHECKS + name), now))
        if touched:
            out.append(ex.Requeue(("Queue", "", name), now))
        if any(j.status.batch is not None for j, _ in live if j.name in touched or j.name in unseen):
            return out  # a batch member's status is being (re)written: its batch next time
        # 3. the batches; the jobs this reconcile changed are left out (their status is being written), and so are
        # the jobs whose checks have not passed (not candidates yet)
        rest = [(j, b) for j, b in live if j.name not in touched and (j.name not in unseen or j.name in held)]
        for job, build in rest:
            broken = self._broken_gates(job)
            if broken:
                return [*out, *self._error_batch([j for j, _ in rest if j.status.batch is not None], build, broken,
                                                 now, name)]
        decide_from = time.monotonic()
        qstate = self._queue_state(rest, head, now)
        incoming, awaited = self._coming(live, {j.name for j, _ in rest})
        qstate = replace(qstate, incoming=incoming, awaited=awaited)
        decision = q.decide(qstate)
        decided = time.monotonic()
        metrics.observe_queue_phase("decide", decided - decide_from)
        out += await self._execute(decision, rest, qstate, w, target, now, name)
        out += self._write_overdue(live, {a.name for a in out if isinstance(a, ex.WriteStatus)}, now, name)
        took = time.monotonic() - started
        if took >= SLOW_RECONCILE_SECONDS:
            log.info("queue %s: a reconcile took %.1fs (target fetch %.1fs, decide %.1fs, batches %.1fs; %d job(s) "
                     "for the checks step)", name, took, fetched - started, decided - decide_from,
                     time.monotonic() - decided, len(pending))
        return out

    async def check(self, name: str) -> list[ex.Action]:
        """The checks step of queue ``name``: the per-branch checks of new candidates (a stacked branch first waits
        until its task's dependencies merged, ``WaitingForDependencies``, and fails, ``DependencyFailed``, when one
        never will): the secret scan of every commit of the branch, and for the ``strict`` profile (or
        ``qualityGate.review``) a reviewer task ``<job>-review`` (``ChecksPassed`` / ``SecretFound`` /
        ``ChangesRequested``). A bounded slice per reconcile (``CHECKS_PER_RECONCILE`` jobs, their branches fetched
        together, ``CHECKS_BUDGET_SECONDS`` of scans); the rest at once in the next. It works in a workspace of
        its own (``CHECKS_WORKSPACE``), where it fetches the target first. A verdict other than passed is written
        at once (a new job's first status: ``Observed`` with its checks); checks that simply passed are held for the
        job's batch (``HOLD_SECONDS``) and the batch step is woken."""
        shard, _, target = name.partition("|")
        if not self.ctx.owns(shard):
            return []
        now = self.ctx.clock()
        self._forget_written()
        states_of = [(j, b, mjc.job_state(self.ctx, j, b)) for j, b in self._jobs(shard, target)
                     if j.status.phase in (None, mj.QUEUED)]
        held = {job.name for job, _, _ in states_of if self.held(job) is not None}  # the batch step writes them
        unseen = {job.name for job, _, _ in states_of if not mergejob.seen(job.status)}
        fresh = {job.name for job, _, st in states_of
                 if job.name in unseen and st.phase == mj.QUEUED and st.checks == "pending" and st.batch is None
                 and job.name not in held}
        checking = [(job, build) for job, build, st in states_of
                    if st.phase == mj.QUEUED and st.checks == "pending" and job.name not in held
                    and (job.name in fresh or job.name not in unseen)]
        if not checking:
            return []
        ready: dict[cachemod.Key, int] = {}
        for job, b, st in states_of:
            if st.phase == mj.QUEUED and (st.checks == "passed" or job.name in held) and st.batch is None:
                ready[b.key] = ready.get(b.key, 0) + 1
        # a build with enough checked candidates for the batches the batch step can build next has the scans of its
        # other jobs wait (the batch step requeues this step on each of its reconciles while jobs are unchecked), so
        # that their git work does not hold up the batches' (``checks_ahead``)
        checking = [(j, b) for j, b in checking if ready.get(b.key, 0) < checks_ahead(b)]
        if not checking:
            return []
        started = time.monotonic()
        w = await self.workspaces.get(checking[0][1], CHECKS_WORKSPACE)
        # the target as it is now (scans run from where a branch left it), then a bounded slice of the checks: a
        # thousand workers finishing at once are checked in slices of their branches fetched together (one fetch,
        # not one per job) and a budget of scans
        await asyncio.to_thread(speculate.head_of, w, target)
        sliced = [(j, b) for j, b in checking if j.spec.commit][:CHECKS_PER_RECONCILE]
        if len(sliced) > 1:
            await asyncio.to_thread(speculate.fetch_commits, w, [self._member(j, b) for j, b in sliced])
        to_check = {job.name for job, _ in sliced}
        out: list[ex.Action] = []
        # first what needs no git (dependencies, a missing commit), then the slice's scans (the budget counts the
        # time they hold the workspace's lock), then each scanned job's verdict
        before: dict[str, list[mj.Event]] = {}
        scans: list[ScanItem] = []
        for job, build in checking:
            if job.name in to_check or not job.spec.commit:
                early = self._before_scan(job, build)
                if early is not None:
                    before[job.name] = early
                elif job.spec.commit:
                    scans.append(ScanItem(job.name, job.spec.target, job.spec.branch, job.spec.commit))
        timeout = self.ctx.settings.scan_timeout_seconds or None
        scanned = await asyncio.to_thread(scan_slice, w, scans, budget=CHECKS_BUDGET_SECONDS,
                                          timeout=timeout) if scans else {}
        checked = deferred = holding = 0
        for job, build in checking:
            if job.name in before or job.name in scanned:
                verdict = (before[job.name] if job.name in before
                           else self._after_scan(job, build, scanned[job.name], out))
                events: list[mj.Event] = [*([mj.Observed()] if job.name in fresh else []), *verdict]
                checked += 1
                if self._hold(job, build, events, verdict, now):
                    holding += 1
                elif events:
                    out += self._decided(job, build, events, now, name)
            else:
                deferred += 1
        metrics.observe_queue_phase("checks", time.monotonic() - started)
        if holding:  # their verdicts are not written now (no watch event): the batch step is woken here
            out.append(ex.Requeue(("Queue", "", name), now))
        if deferred:
            out.append(ex.Requeue(("Queue", "", CHECKS + name), now))
        took = time.monotonic() - started
        if took >= SLOW_RECONCILE_SECONDS:
            log.info("queue %s: the checks of %d job(s) took %.1fs (%d left for the next)", name, checked, took,
                     deferred)
        return out

    def held(self, job: objects.MergeJob) -> Held | None:
        """The held verdict of ``job``'s checks, if it still applies: the same job and commit, still queued, its
        status not written since (checks pending, no batch)."""
        h = self.passed.get((job.namespace, job.name))
        if h is None or h.uid != job.metadata.uid or h.commit != (job.spec.commit or ""):
            return None
        s = job.status
        if s.phase not in (None, mj.QUEUED) or s.checks not in (None, "pending") or s.batch is not None:
            return None
        return h

    def _forget_written(self) -> None:
        """Drop the held verdicts that no longer apply (written with a status, the job gone or changed)."""
        for key in [k for k in self.passed if (job := self.ctx.cache.jobs.get(k)) is None or self.held(job) is None]:
            del self.passed[key]

    def _write_overdue(self, live: Sequence[tuple[objects.MergeJob, objects.BuildRequest]], written: set[str],
                       now: datetime, name: str) -> list[ex.Action]:
        """The batch step writes the held checks that no batch took within ``HOLD_SECONDS`` (``Queued``, checks
        passed), and comes back when the next is due. The batch step, not the checks step: the two run side by
        side, and a write of a held job by one raced the other's (its batch's), one of them refused (409)."""
        out: list[ex.Action] = []
        due: list[datetime] = []
        for job, build in live:
            h = self.held(job)
            if h is None or job.name in written:
                continue
            if now - h.at >= timedelta(seconds=HOLD_SECONDS):
                out += self._decided(job, build, [], now, name)
                del self.passed[(job.namespace, job.name)]  # written (or, if the write fails, checked again)
            else:
                due.append(h.at + timedelta(seconds=HOLD_SECONDS))
        if due:
            out.append(ex.Requeue(("Queue", "", name), min(due)))
        return out

    def _with_held(self, job: objects.MergeJob, events: Sequence[mj.Event]) -> list[mj.Event]:
        """``events`` of a job, after the held verdict of its checks if it has one (the write carries it)."""
        h = self.held(job)
        if h is None:
            return list(events)
        return [*([] if mergejob.seen(job.status) else [mj.Observed()]), h.verdict, *events]

    def _hold(self, job: objects.MergeJob, build: objects.BuildRequest, events: Sequence[mj.Event],
              verdict: Sequence[mj.Event], now: datetime) -> bool:
        """Hold ``job``'s checks instead of writing them (``HOLD_SECONDS``) when they simply passed: the job stays
        queued for a batch (no approval to wait for, nothing else to say). True if held."""
        if len(verdict) != 1 or not isinstance(verdict[0], mj.ChecksPassed) or not job.spec.commit:
            return False
        state = mjc.job_state(self.ctx, job, build)
        new, effects = mjc.decide(job, state, events, now)
        if new.phase != mj.QUEUED or new.checks != "passed" or new.batch is not None or new.not_before is not None \
                or any(not isinstance(e, SetCondition) for e in effects):
            return False
        self.passed[(job.namespace, job.name)] = Held(job.metadata.uid, job.spec.commit, verdict[0], now)
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
        commit = job.spec.commit or ""
        if not gates.needs_review(build.spec.quality_gate):
            return [mj.ChecksPassed()]
        reviewer = names.child_name(job.name, REVIEW)
        rtask = self.ctx.cache.tasks.get((job.namespace, reviewer))
        if rtask is None:
            queue = cachemod.queue_name(build, job.spec.target)
            out.append(ex.CreateObject(tester_manifest(
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

    def _queue_state(self, live: Sequence[tuple[objects.MergeJob, objects.BuildRequest]], head: str,
                     now: datetime) -> q.QueueState:
        candidates: list[q.Candidate] = []
        probes: list[q.Probe] = []
        gated: set[str] = set()
        max_window: dict[str, int] = {}
        max_depth: dict[str, int] = {}
        for job, build in live:
            bkey = f"{build.namespace}/{build.name}"
            max_window[bkey] = build.spec.merge.window
            max_depth[bkey] = build.spec.merge.depth
            s = job.status
            if s.phase == mj.TESTING and s.batch is not None:
                candidates.append(q.Candidate(job.name, bkey, job.metadata.uid, True, None, s.batch.id,
                                              s.batch.position, s.batch.commit, s.batch.base))
                if s.batch.id not in gated:  # the gate tasks of each batch once
                    gated.add(s.batch.id)
                    probes += (self._probes(job) if gate_command(build)
                               else [q.Probe(p, "passed", "", s.batch.id) for p in range(1, 64)])
                continue
            ready = (s.phase in (None, mj.QUEUED) and (s.checks == "passed" or self.held(job) is not None)
                     and (s.not_before is None or s.not_before <= now))
            conflict_base = s.conflict_base if s.phase == mj.CONFLICTED else None
            if s.phase == mj.CONFLICTED:
                ready = False
            candidates.append(q.Candidate(job.name, bkey, job.metadata.uid, ready, conflict_base))
        commits = {c.commit for c in candidates if c.commit}
        self.did_not_stack = {(n, c) for n, c in self.did_not_stack if c in commits}  # forget batches gone
        return q.QueueState(tuple(candidates), tuple(probes), head, dict(self.windows), max_window,
                            broke=frozenset(self.broke), did_not_stack=frozenset(self.did_not_stack),
                            max_depth=max_depth)

    def _coming(self, live: Sequence[tuple[objects.MergeJob, objects.BuildRequest]],
                decided: set[str]) -> tuple[dict[str, int], frozenset[str]]:
        """``QueueState.incoming`` and ``awaited``: per build, the candidates still to come (its worker and fixer
        tasks not finished; its MergeJobs not in this decision, or not through their checks), and the MergeJobs a
        task of the build depends on (a task waits for their merge)."""
        incoming: dict[str, int] = {}
        awaited: set[str] = set()
        for ns, bname in sorted({(b.namespace, b.name) for _, b in live}):
            bkey = f"{ns}/{bname}"
            n = 0
            for t in self.ctx.cache.tasks_of((ns, bname)):
                phase = t.status.phase or tasks.PENDING
                if phase not in (tasks.PENDING, tasks.RUNNING, tasks.BACKOFF) or t.spec.cancel:
                    continue
                awaited.update(t.spec.depends_on)
                if t.spec.role in tasks.MERGING_ROLES and fanout.FANOUT_LABEL not in t.metadata.labels:
                    n += 1
            for job, b in live:
                if (b.namespace, b.name) == (ns, bname) and job.status.phase in (None, mj.QUEUED) and (
                        job.name not in decided
                        or not (job.status.checks == "passed" or self.held(job) is not None)):
                    n += 1
            if n:
                incoming[bkey] = n
        return incoming, frozenset(awaited)

    # --- carrying out ------------------------------------------------------------------------------

    async def _execute(self, effects: Sequence[q.Effect], live: Sequence[tuple[objects.MergeJob, objects.BuildRequest]],
                       state: q.QueueState, w: vws.Workspace, target: str, now: datetime,
                       name: str) -> list[ex.Action]:
        """The decision carried out: each job's events written once (with its fixers, Events and timers)."""
        jobs = {j.name: (j, b) for j, b in live}
        batch_build = {c.batch_id: jobs[c.name][1] for c in state.candidates if c.batch_id and c.name in jobs}
        out: list[ex.Action] = []
        job_events: dict[str, list[mj.Event]] = {}

        def add(job: str, event: mj.Event) -> None:
            job_events.setdefault(job, []).append(event)

        for e in effects:
            if isinstance(e, q.Wait):
                continue
            if isinstance(e, q.PrepareBatch):
                started = time.monotonic()
                members = [self._member(*jobs[n]) for n in e.members]
                below = batch_build.get(e.onto_batch or "")
                onto_branch = (speculate.queue_branch(below.namespace, below.name, e.onto_batch, e.onto_position)
                               if below is not None and e.onto_batch else None)
                first = jobs[e.members[0]][1] if e.members else None
                with tracing.span("batch", _batch_attrs(first, e.members, target),  # tracing: building the batch
                                  parent=tracing.build_span(first.metadata.uid) if first is not None else None):
                    prepared = await asyncio.to_thread(speculate.prepare, w, target, members, e.onto, onto_branch)
                more = q.prepared(state, prepared)
                joins = [m for m in more if isinstance(m, q.JoinBatch)]
                if joins:
                    build = jobs[joins[0].name][1]
                    await asyncio.to_thread(speculate.publish, w, build.namespace, build.name, joins[0].batch_id,
                                            [(j.position, j.commit) for j in joins])
                metrics.observe_queue_phase("prepare", time.monotonic() - started)
                for m in more:
                    if isinstance(m, q.JoinBatch):
                        batch_build[m.batch_id] = jobs[m.name][1]
                    self._job_event_of(m, add, out, jobs, batch_build, now, name)
            elif isinstance(e, q.Evict) and jobs[e.name][1].spec.merge.delivery == "pullRequest":
                self._job_event_of(e, add, out, jobs, batch_build, now, name)
                # a fixer's push to an open pull request broke the gate: say so on the pull request
                async with self.ctx.lanes.lane(jobs[e.name][0].namespace):
                    posted = await asyncio.to_thread(mjc.post_gate_failure, self.ctx, *jobs[e.name], e.output)
                if posted is not None:
                    add(e.name, mj.ForgeFailurePosted(posted))
            elif isinstance(e, q.Land) and jobs[e.members[0]][1].spec.merge.delivery == "pullRequest" \
                    and target != names.pull_branch(jobs[e.members[0]][1].namespace, jobs[e.members[0]][1].name):
                # delivery through the forge: the tested candidates go to their pull requests, the target stays
                build = jobs[e.members[0]][1]
                for n in e.members:
                    job = jobs[n][0]
                    if job.spec.commit:
                        await asyncio.to_thread(speculate.push_branch, w, job.spec.branch, job.spec.commit)
                    add(n, mj.HandedToForge(job.spec.commit or e.commit))
                    out.append(ex.Requeue(("MergeJob", job.namespace, job.name), now))
                positions = [c.position or 0 for c in state.candidates if c.batch_id == e.batch_id]
                out.append(ex.Call(functools.partial(speculate.cleanup, w, build.namespace, build.name, e.batch_id,
                                                     positions),
                                   "delete the batch's queue branches"))
            elif isinstance(e, q.Land):
                build = jobs[e.members[0]][1]
                took = 0.0
                if not e.pushed:
                    started = time.monotonic()
                    with tracing.span("landing", {**_batch_attrs(build, e.members, target),  # tracing: the push
                                                  "longshot.batch": e.batch_id, "longshot.commit": e.commit},
                                      parent=tracing.build_span(build.metadata.uid)) as traced:
                        ok, why = await asyncio.to_thread(speculate.land, w, target, e.base, e.commit,
                                                          speculate.queue_branch(build.namespace, build.name,
                                                                                  e.batch_id, e.position))
                        traced.set("longshot.landed", ok)
                    took = time.monotonic() - started
                    metrics.observe_queue_phase("land", took)
                    if ok:  # the target is our commit now
                        self.heads[name] = (self.monotonic(), e.commit)
                    else:  # it moved: read it at the next reconcile
                        self.heads.pop(name, None)
                        metrics.observe_merge("Stale", took)
                        for n in [c.name for c in state.candidates if c.batch_id == e.batch_id]:
                            add(n, mj.Requeued(f"the target moved while the batch was tested ({why}); tested again"))
                        break  # the rest of the decision was made on the old target
                # per: build delivery lands on the build branch and hands the jobs to its pull request
                per_build = target == names.pull_branch(build.namespace, build.name)
                for n in e.members:
                    job = jobs[n][0]
                    commit = job.status.batch.commit if job.status.batch is not None else e.commit
                    if per_build:
                        add(n, mj.HandedToForge(commit))
                        out.append(ex.Requeue(("MergeJob", job.namespace, job.name), now))
                        continue
                    add(n, mj.Landed(commit))
                    metrics.observe_merge("Merged", took)
                positions = [c.position or 0 for c in state.candidates if c.batch_id == e.batch_id]
                out.append(ex.Call(functools.partial(speculate.cleanup, w, build.namespace, build.name, e.batch_id,
                                                     positions),
                                   "delete the batch's queue branches"))
            else:
                self._job_event_of(e, add, out, jobs, batch_build, now, name)
        for n, events in job_events.items():
            job, build = jobs[n]
            out += self._decided(job, build, events, now, name)
        if job_events:
            out.append(ex.Requeue(("Queue", "", name), now))
        return out

    def _decided(self, job: objects.MergeJob, build: objects.BuildRequest, events: Sequence[mj.Event], now: datetime,
                 name: str) -> list[ex.Action]:
        """The actions of ``events`` on ``job`` as read (its one status write, fixers, Events, timers)."""
        st, effs = mjc.decide(job, mjc.job_state(self.ctx, job, build), self._with_held(job, events), now)
        return mjc.actions(job, build, st, effs, now, name)

    def _job_event_of(self, e: q.Effect, add: Any, out: list[ex.Action],
                      jobs: dict[str, tuple[objects.MergeJob, objects.BuildRequest]],
                      batch_build: dict[str, objects.BuildRequest], now: datetime, name: str) -> None:
        match e:
            case q.JoinBatch():
                add(e.name, mj.BatchJoined(mj.BatchRef(e.batch_id, e.position, e.base, e.commit)))
            case q.StartProbes():
                build = batch_build.get(e.batch_id)
                if build is not None:
                    self._start_probes(e, build, out, now, name)
            case q.Evict():
                build = jobs[e.name][1]
                add(e.name, mj.Evicted(gate_command(build) or "(no command)", e.output))
            case q.Requeue():
                for n in e.names:
                    add(n, mj.Requeued(e.why))
            case q.Conflicted():
                add(e.name, mj.Conflict(e.files, e.base, counted=e.counted))
            case q.Recorded():
                add(e.name, mj.Landed(e.commit, already=True))
            case q.DidNotStack():
                self.did_not_stack.add((e.name, e.onto))
            case q.SetWindow():
                self.windows[e.build] = e.window
                if e.broke:
                    self.broke.add(e.build)
                else:
                    self.broke.discard(e.build)
            case q.CancelProbes():
                build = batch_build.get(e.batch_id)
                if build is None:
                    return
                for t in self.ctx.cache.tasks_of_batch(build.key, e.batch_id):
                    if not t.spec.cancel and t.status.phase not in tasks.TERMINAL:
                        out.append(ex.PatchObject("AgentTask", build.namespace, t.name, {"spec": {"cancel": True}}))
            case q.PrepareBatch() | q.Land() | q.Wait():
                raise ValueError(f"{type(e).__name__} is carried out by the queue's reconcile itself")
            case _:
                assert_never(e)

    def _start_probes(self, e: q.StartProbes, build: objects.BuildRequest, out: list[ex.Action], now: datetime,
                      name: str) -> None:
        command = gate_command(build)
        if not command:
            out.append(ex.Requeue(("Queue", "", name), now))
            return
        for pos in e.positions:
            task_name = names.child_name(build.name, f"gate-{e.batch_id}-{pos}")
            existing = self.ctx.cache.tasks.get((build.namespace, task_name))
            if existing is not None:
                # a probe cancelled (its batch given up by a decision whose job writes did not all land) or ended
                # without a verdict is deleted and made again once gone (its deletion wakes the queue); one still
                # on its way is not created twice. It was created again and again, refused (409), and the batch
                # waited for it for good (``make bench-fleet``).
                if not existing.metadata.deleting and (existing.spec.cancel
                                                      or existing.status.phase in (tasks.FAILED, tasks.CANCELLED)):
                    out.append(ex.Call(functools.partial(self.ctx.kube.delete, "AgentTask", build.namespace,
                                                         task_name), f"delete probe {task_name} to run it again"))
                continue
            out.append(ex.CreateObject(tester_manifest(
                build, task_name, branch=speculate.queue_branch(build.namespace, build.name, e.batch_id, pos),
                command=command,
                purpose=GATE, priority=9, labels={cachemod.BATCH_LABEL: e.batch_id},
                annotations={cachemod.POSITION_ANNOTATION: str(pos), cachemod.QUEUE_ANNOTATION: name},
                description=(f"Quality gate of batch {e.batch_id} up to position {pos}: run `{command}` on the "
                             "candidates applied to the target as they would land."))))

    def _member(self, job: objects.MergeJob, build: objects.BuildRequest) -> speculate.Member:
        check_off, references = self.intake_of(job, build)
        return speculate.Member(name=job.name, namespace=job.namespace, uid=job.metadata.uid, branch=job.spec.branch,
                                commit=job.spec.commit or "", strategy=job.spec.strategy, task=job.task_name,
                                build=build.name, check_off=check_off, references=references,
                                stacked_on=tuple(job.spec.stacked_on))

    def intake_of(self, job: objects.MergeJob, build: objects.BuildRequest
                  ) -> tuple[tuple[str, str] | None, tuple[str, ...]]:
        """What the intake hook adds to the job's merged commit: the roadmap item to check off (a roadmap-driven
        build) or the issue reference (an issue-driven build), from the planned task whose work the branch
        carries (through the fixers that took branches over)."""
        source = build.spec.planner.source
        if source == "llm":
            return None, ()
        ns = job.namespace
        task = self.ctx.cache.tasks.get((ns, job.task_name))
        for _ in range(5):
            fixes = task.metadata.annotations.get(cachemod.FIXES_ANNOTATION) if task is not None else None
            if not fixes:
                break
            fixed = self.ctx.cache.jobs.get((ns, fixes))
            task = self.ctx.cache.tasks.get((ns, fixed.task_name if fixed is not None else fixes))
        local = task.metadata.annotations.get(plan.PLAN_NAME_ANNOTATION) if task is not None else None
        if not local or (task is not None and task.spec.parent_task):
            return None, ()
        if source == "roadmap":
            return (build.spec.planner.roadmap_path, local), ()
        number = trackers.issue_number(local)
        return None, ((trackers.commit_reference(number),) if number is not None else ())

    def _error_batch(self, members: Sequence[objects.MergeJob], build: objects.BuildRequest, why: Sequence[str],
                     now: datetime, name: str) -> list[ex.Action]:
        out: list[ex.Action] = []
        text = "; ".join(why)[:2000]
        for job in members:
            b = self.ctx.cache.build_of(job) or build
            st, effs = mjc.decide(job, mjc.job_state(self.ctx, job, b), [mj.Requeued(f"the gate broke: {text}"),
                                                                         mj.Error(text)], now)
            out += mjc.actions(job, b, st, effs, now, name)
        out.append(ex.Requeue(("Queue", "", name), now + timedelta(seconds=1)))
        return out


def _batch_attrs(build: objects.BuildRequest | None, members: Sequence[str], target: str) -> dict[str, Any]:
    """Tracing: the attributes of a batch's spans."""
    return {"longshot.namespace": build.namespace if build is not None else None,
            "longshot.build": build.name if build is not None else None,
            "longshot.target": target, "longshot.members": ",".join(members[:50]), "longshot.size": len(members)}
