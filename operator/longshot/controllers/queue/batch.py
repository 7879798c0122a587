"""The queue's batch step (``("Queue", "", "<shard key>|<target>")``): every job in it belongs to a build of one
namespace naming one credentials Secret, so the step fetches, builds and pushes with exactly that credential.

A reconcile reads the queue (observe), asks the pure queue what to write and what to do (``core.mergequeue.observe``
and ``decide``), does it (``act``: git actions whose results go back to ``core.mergequeue.prepared``), and writes
each job's events once (``jobs.write``). Before the batches: a conflicted job retries when the target moved
(``TargetMoved``) or goes to a fixer when nothing else in the queue can move it (``TargetIdle``); with
``spec.merge.requireApproval`` a job that passed its checks waits at ``AwaitingApproval`` until its ``spec.approved``
is true (``Approved``); a job without a status gets its first (``Observed``), a job whose fixer merged is carried by
it (``FixerLanded``), and a job finalization asks to try again is (``Retry``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from longshot import metrics
from longshot.api import mergejob, objects
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.core import fanout, finalization, manifests, names, tasks
from longshot.core import mergejobs as mj
from longshot.core import mergequeue as q
from longshot.vcs import workspace as vws

from . import git, jobs
from .act import Act
from .checks import CHECKS
from .ci import CiGate
from .ci import by as gated_by
from .memory import Memory
from .workspaces import Workspaces

log = logging.getLogger("longshot.mergequeue")

Pair = tuple[objects.MergeJob, objects.BuildRequest]

HEAD_REUSE_SECONDS: Final = 2.0
"""A queue reconcile reads the target's head from the server (a fetch) unless it read it, or landed a batch on it,
less than this long ago: a busy queue is reconciled about every second, and the fetch was a third of the batch step's
time. A push by someone else in that window is seen at the next fetch; a batch built on the head before it does not
land (the compare-and-swap of the land fails, and its candidates are tested again)."""
SLOW_SECONDS: Final = 2.0
"""A batch reconcile taking longer is logged with what it spent its time on."""
LIVE: Final = (None, mj.QUEUED, mj.TESTING, mj.CONFLICTED, mj.AWAITING_APPROVAL)
"""The phases of a job in the queue (the others ended, or wait on the forge)."""


@dataclass
class Read:
    """What one batch reconcile read and wrote before the batches."""

    live: list[Pair]
    head: str = ""
    out: list[ex.Action] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    """Jobs whose status this reconcile writes before the batches (left out of the batches)."""


class BatchStep:
    def __init__(self, ctx: ctxmod.Context, workspaces: Workspaces, memory: Memory) -> None:
        self.ctx = ctx
        self.workspaces = workspaces
        self.memory = memory
        self.ci = CiGate(ctx, memory)

    async def reconcile(self, name: str, pairs: Sequence[Pair]) -> list[ex.Action]:
        """observe -> decide (the jobs' own events) -> act -> decide (the batches) -> act."""
        now, started = self.ctx.clock(), time.monotonic()
        read = Read([(j, b) for j, b in pairs if j.status.phase in LIVE])
        read.out += self._beside(pairs, read, now, name)
        if not read.live:
            return read.out
        w = await self.workspaces.get(read.live[0][1])
        read.head = await self._head(w, name, read.live[0][1])
        read.out += self._job_events(read, now, name)
        rest = self._candidates(read)
        if rest is None:
            return read.out
        ci_again = await self.ci.read(rest, now)  # the CI-gated batches' required checks (spec.merge.gate)
        broken = [why for j, _ in rest for why in self._broken_gates(j)]
        if broken:
            self.memory.forget_ci(set())  # the batches go back: asked again, with a new timeout, when formed again
            return [*read.out, *self._error_batch([j for j, _ in rest if j.status.batch is not None], rest[0][1],
                                                  broken, now, name)]
        if ci_again is not None:
            read.out.append(ex.Requeue(("Queue", "", name), ci_again))
        deciding = time.monotonic()
        state = self.queue_state(rest, read.head, now, read.live)
        decision = q.decide(state)
        metrics.observe_queue_phase("decide", time.monotonic() - deciding)
        act = Act(self.ctx, self.memory, w, name, name.partition("|")[2], now, state, {j.name: (j, b) for j, b in rest})
        out = [*read.out, *await act.run(decision)]
        self._log_slow(name, started)
        return out

    # --- observe -----------------------------------------------------------------------------------

    def _beside(self, pairs: Sequence[Pair], read: Read, now: datetime, name: str) -> list[ex.Action]:
        """The writes the pure queue owes its jobs beside the batches (``core.mergequeue.observe``)."""
        facts = [self._facts(j) for j, _ in pairs]
        by_name = {j.name: (j, b) for j, b in pairs}
        events: dict[str, list[mj.Event]] = {}
        out: list[ex.Action] = []
        for e in q.observe(facts):
            job = by_name[e.name][0]
            match e:
                case q.Observe():
                    events.setdefault(e.name, []).append(mj.Observed())
                case q.FixerMerged():
                    events.setdefault(e.name, []).append(mj.FixerLanded(e.commit))
                case q.RetryAsked(again=True):
                    events.setdefault(e.name, []).append(mj.Retry(f"finalization attempt {e.attempt} tries it "
                                                                  "again"))
                case q.RetryAsked():
                    out.append(ex.PatchObject("MergeJob", job.namespace, job.name,
                                              {"metadata": {"annotations": {finalization.RETRY_ASKED: None}}}))
        for n, evs in events.items():
            job, build = by_name[n]
            written = jobs.write(self.ctx, job, build, self.memory.with_held(job, evs), now, name)
            if written:  # an event the job's phase ignores writes nothing, and does not wake the queue again
                out += written
                read.touched.add(n)
        return out

    def _facts(self, job: objects.MergeJob) -> q.JobFacts:
        s = job.status
        fixer = self.ctx.cache.jobs.get((job.namespace, s.fixer)) if s.fixer else None
        return q.JobFacts(
            name=job.name, phase=s.phase or mj.QUEUED, seen=mergejob.seen(s),
            checking=s.phase in (None, mj.QUEUED) and s.checks in (None, "pending") and s.batch is None,
            held=self.memory.held(job) is not None,
            fixer_merged=(fixer.status.merged_commit if fixer is not None and fixer.status.phase in mj.DELIVERED
                          else None),
            retry=job.metadata.annotations.get(finalization.RETRY_ASKED))

    async def _head(self, w: vws.Workspace, name: str, first: objects.BuildRequest) -> str:
        """The target's head: read from the server unless read (or landed on) within ``HEAD_REUSE_SECONDS``."""
        target = name.partition("|")[2]
        if target == names.pull_branch(first.namespace, first.name):  # per: build delivery: the build branch
            await git.run(w, git.EnsureBranch(target, first.spec.repository.base_branch))
        known, read_at = self.memory.heads.get(name), self.memory.monotonic()
        if known is not None and read_at - known[0] < HEAD_REUSE_SECONDS:
            return known[1]
        started = time.monotonic()
        head = await git.run(w, git.Head(target))
        self.memory.heads[name] = (read_at, head)
        metrics.observe_queue_phase("fetch", time.monotonic() - started)
        return head

    def _job_events(self, read: Read, now: datetime, name: str) -> list[ex.Action]:
        """Conflicted jobs retry when the target moved and go to a fixer when nothing else can move it; approved
        jobs go on. The checks step is started when jobs wait for their checks."""
        states = [jobs.job_state(self.ctx, j, b) for j, b in read.live]
        moving = mj.target_can_move(states)
        out: list[ex.Action] = []
        for (job, build), state in zip(read.live, states, strict=True):
            if job.name in read.touched or not mergejob.seen(job.status):
                continue
            events = self._own_events(job, state, read.head, moving)
            if events:
                written = jobs.write(self.ctx, job, build, self.memory.with_held(job, events), now, name)
                out += written
                read.touched.update([job.name] if written else [])
        if any(st.phase == mj.QUEUED and st.checks == "pending" and self.memory.held(j) is None
               for (j, _), st in zip(read.live, states, strict=True)):
            out.append(ex.Requeue(("Queue", "", CHECKS + name), now))
        if read.touched:
            out.append(ex.Requeue(("Queue", "", name), now))
        return out

    @staticmethod
    def _own_events(job: objects.MergeJob, state: mj.JobState, head: str, moving: bool) -> list[mj.Event]:
        events: list[mj.Event] = []
        moved = mj.target_event(state, head, moving)
        if moved is not None:
            events.append(moved)
        if state.phase == mj.AWAITING_APPROVAL and not state.needs_approval:
            events.append(mj.Approved("spec.approved is true" if job.spec.approved
                                      else "the build no longer requires approval"))
        return events

    def _candidates(self, read: Read) -> list[Pair] | None:
        """The jobs the batches are decided on: not written by this reconcile, through their checks (written or
        held). None: a batch member's status is being (re)written, its batch is decided next time."""
        unseen = {j.name for j, _ in read.live if not mergejob.seen(j.status)}
        if any(j.status.batch is not None for j, _ in read.live if j.name in read.touched or j.name in unseen):
            return None
        return [(j, b) for j, b in read.live if j.name not in read.touched
                and (j.name not in unseen or self.memory.held(j) is not None)]

    def _probes(self, job: objects.MergeJob) -> list[q.Probe]:
        batch = job.status.batch
        if batch is None:
            return []
        out: list[q.Probe] = []
        for t in self.ctx.cache.tasks_of_batch((job.namespace, job.build_name), batch.id):
            probe = _probe(t, batch.id)
            if probe is not None:
                out.append(probe)
        return out

    def _broken_gates(self, job: objects.MergeJob) -> list[str]:
        batch = job.status.batch
        if batch is None:
            return []
        ci = self.ci.broken(batch.id) if batch.position == 1 else []  # each batch's once (at its first position)
        return ci + [f"gate task {t.name} failed: "
                     f"{(t.status.attempts[-1].exit_reason or '') if t.status.attempts else ''}"
                     for t in self.ctx.cache.tasks_of_batch((job.namespace, job.build_name), batch.id)
                     if t.status.phase in (tasks.FAILED, tasks.CANCELLED) and not t.spec.cancel]

    # --- the pure queue's state --------------------------------------------------------------------

    def queue_state(self, rest: Sequence[Pair], head: str, now: datetime,
                    live: Sequence[Pair] | None = None) -> q.QueueState:
        candidates: list[q.Candidate] = []
        probes: list[q.Probe] = []
        gated: set[str] = set()
        for job, build in rest:
            candidate = self._candidate(job, build, now)
            candidates.append(candidate)
            if candidate.batch_id is not None and candidate.batch_id not in gated:  # each batch's gate tasks once
                gated.add(candidate.batch_id)
                testers = (self._probes(job) if manifests.gate_command(build)
                           else [q.Probe(p, "passed", "", candidate.batch_id) for p in range(1, 64)])
                probes += (testers if gated_by(build) == "tester"
                           else self.ci.probes(candidate.batch_id, build, testers))
        self.memory.forget_batches({c.commit for c in candidates if c.commit})
        builds = {f"{b.namespace}/{b.name}": b for _, b in rest}
        incoming, awaited = self._coming(live if live is not None else rest, {j.name for j, _ in rest})
        m = self.memory
        return q.QueueState(tuple(candidates), tuple(probes), head, dict(m.windows),
                            {k: b.spec.merge.window for k, b in builds.items()}, broke=frozenset(m.broke),
                            did_not_stack=frozenset(m.did_not_stack),
                            max_depth={k: b.spec.merge.depth for k, b in builds.items()}, incoming=incoming,
                            awaited=awaited,
                            held=frozenset(j.name for j, _ in rest if m.held(j) is not None))

    def _candidate(self, job: objects.MergeJob, build: objects.BuildRequest, now: datetime) -> q.Candidate:
        bkey = f"{build.namespace}/{build.name}"
        s = job.status
        if s.phase == mj.TESTING and s.batch is not None:
            return q.Candidate(job.name, bkey, job.metadata.uid, True, None, s.batch.id, s.batch.position,
                               s.batch.commit, s.batch.base)
        if s.phase == mj.CONFLICTED:
            return q.Candidate(job.name, bkey, job.metadata.uid, False, s.conflict_base)
        ready = (s.phase in (None, mj.QUEUED) and (s.checks == "passed" or self.memory.held(job) is not None)
                 and (s.not_before is None or s.not_before <= now))
        return q.Candidate(job.name, bkey, job.metadata.uid, ready, None)

    def _coming(self, live: Sequence[Pair], decided: set[str]) -> tuple[dict[str, int], frozenset[str]]:
        """``QueueState.incoming`` and ``awaited``: per build, the candidates still to come (its worker and fixer
        tasks not finished; its MergeJobs not in this decision, or not through their checks), and the MergeJobs a
        task of the build depends on (a task waits for their merge)."""
        incoming: dict[str, int] = {}
        awaited: set[str] = set()
        for ns, bname in sorted({(b.namespace, b.name) for _, b in live}):
            n = self._coming_tasks((ns, bname), awaited)
            n += sum(1 for job, b in live if (b.namespace, b.name) == (ns, bname) and self._coming_job(job, decided))
            if n:
                incoming[f"{ns}/{bname}"] = n
        return incoming, frozenset(awaited)

    def _coming_tasks(self, build: cachemod.Key, awaited: set[str]) -> int:
        n = 0
        for t in self.ctx.cache.tasks_of(build):
            phase = t.status.phase or tasks.PENDING
            if phase not in (tasks.PENDING, tasks.RUNNING, tasks.BACKOFF) or t.spec.cancel:
                continue
            awaited.update(t.spec.depends_on)
            if t.spec.role in tasks.MERGING_ROLES and fanout.FANOUT_LABEL not in t.metadata.labels:
                n += 1
        return n

    def _coming_job(self, job: objects.MergeJob, decided: set[str]) -> bool:
        return job.status.phase in (None, mj.QUEUED) and (
            job.name not in decided or not (job.status.checks == "passed" or self.memory.held(job) is not None))

    # --- a broken gate -----------------------------------------------------------------------------

    def _error_batch(self, members: Sequence[objects.MergeJob], build: objects.BuildRequest, why: Sequence[str],
                     now: datetime, name: str) -> list[ex.Action]:
        out: list[ex.Action] = []
        text = "; ".join(why)[:2000]
        for job in members:
            b = self.ctx.cache.build_of(job) or build
            out += jobs.write(self.ctx, job, b, [mj.Requeued(f"the gate broke: {text}"), mj.Error(text)], now, name)
        out.append(ex.Requeue(("Queue", "", name), now + timedelta(seconds=1)))
        return out

    @staticmethod
    def _log_slow(name: str, started: float) -> None:
        took = time.monotonic() - started
        if took >= SLOW_SECONDS:
            log.info("queue %s: a batch reconcile took %.1fs", name, took)


def _probe(t: objects.AgentTask, batch_id: str) -> q.Probe | None:
    """A gate task's verdict (None: not a verdict; a failed or cancelled gate is an error of its batch)."""
    try:
        pos = int(t.metadata.annotations.get(cachemod.POSITION_ANNOTATION, "0"))
    except ValueError:
        return None
    phase = t.status.phase
    handoff = t.status.handoff
    if phase == tasks.SUCCEEDED and handoff is not None and handoff.verdict in ("passed", "failed"):
        output = "\n".join(handoff.reasons[-2:]) or handoff.summary
        return q.Probe(pos, "passed" if handoff.verdict == "passed" else "failed", output[-4000:], batch_id)
    if phase in (tasks.FAILED, tasks.CANCELLED):
        return None
    return q.Probe(pos, "running", "", batch_id)

