"""The queue's decision carried out: the git actions (``git``) whose results go back to the pure queue
(``core.mergequeue.prepared``), the gate tasks, and each job's events written once (``jobs.write``)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from longshot import metrics, tracing
from longshot.api import objects
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.core import manifests, names, tasks
from longshot.core import mergejobs as mj
from longshot.core import mergequeue as q
from longshot.vcs import speculate
from longshot.vcs import workspace as vws

from . import forge, git, jobs
from .ci import CiGate
from .ci import by as gated_by
from .ci import label as gate_label
from .members import member
from .memory import Memory

GATE: Final = manifests.GATE

Pair = tuple[objects.MergeJob, objects.BuildRequest]


@dataclass
class Act:
    """One reconcile's carrying out of the queue's effects on ``jobs`` (by name) in workspace ``w``."""

    ctx: ctxmod.Context
    memory: Memory
    w: vws.Workspace
    name: str
    target: str
    now: datetime
    state: q.QueueState
    jobs: dict[str, Pair]
    out: list[ex.Action] = field(default_factory=list)
    events: dict[str, list[mj.Event]] = field(default_factory=dict)
    batch_build: dict[str, objects.BuildRequest] = field(default_factory=dict)
    left: set[str] = field(default_factory=set)
    """Candidates this decision takes out of their batch (evicted, sent back to the queue)."""
    cleaned: set[str] = field(default_factory=set)
    """Batches whose queue branches this reconcile deletes, or (re)publishes: not deleted again."""

    def __post_init__(self) -> None:
        self.batch_build = {c.batch_id: self.jobs[c.name][1] for c in self.state.candidates
                            if c.batch_id and c.name in self.jobs}

    def add(self, job: str, event: mj.Event) -> None:
        self.events.setdefault(job, []).append(event)

    async def run(self, effects: Sequence[q.Effect]) -> list[ex.Action]:
        """Carry out ``effects``; then each job's events, written once, and the queue woken when any were."""
        for e in effects:
            if await self._git_effect(e) is False:
                break  # a land found the target moved: the rest was decided on the old target
        self._cleanup_left()
        for n, events in self.events.items():
            job, build = self.jobs[n]
            self.out += jobs.write(self.ctx, job, build, self.memory.with_held(job, events), self.now, self.name)
        if self.events:
            self.out.append(ex.Requeue(("Queue", "", self.name), self.now))
        return self.out

    async def _git_effect(self, e: q.Effect) -> bool:
        """An effect with git work (or a forge call) carried out; the others by :meth:`effect`. False: stop."""
        if isinstance(e, q.PrepareBatch):
            await self._prepare(e)
        elif isinstance(e, q.Land) and self._through_forge(e):
            await self._hand_to_forge(e)
        elif isinstance(e, q.Land):
            return await self._land(e)
        elif isinstance(e, q.Evict) and self.jobs[e.name][1].spec.merge.delivery == "pullRequest":
            self.effect(e)
            await self._post_failure(e)
        else:
            self.effect(e)
        return True

    # --- git ---------------------------------------------------------------------------------------

    async def _prepare(self, e: q.PrepareBatch) -> None:
        started = time.monotonic()
        below = self.batch_build.get(e.onto_batch or "")
        onto_branch = (speculate.queue_branch(below.namespace, below.name, e.onto_batch, e.onto_position)
                       if below is not None and e.onto_batch else None)
        first = self.jobs[e.members[0]][1] if e.members else None
        prepare = git.Prepare(self.target, tuple(member(self.ctx, *self.jobs[n]) for n in e.members), e.onto,
                              onto_branch)
        with tracing.span("batch", batch_attrs(first, e.members, self.target),  # tracing: building the batch
                          parent=tracing.build_span(first.metadata.uid) if first is not None else None):
            prepared = await git.run(self.w, prepare)
        more = q.prepared(self.state, prepared)
        joins = [m for m in more if isinstance(m, q.JoinBatch)]
        if joins:
            build = self.jobs[joins[0].name][1]
            await git.run(self.w, git.Publish(build.namespace, build.name, joins[0].batch_id,
                                              tuple((j.position, j.commit) for j in joins)))
        metrics.observe_queue_phase("prepare", time.monotonic() - started)
        for m in more:
            if isinstance(m, q.JoinBatch):
                self.batch_build[m.batch_id] = self.jobs[m.name][1]
            self.effect(m)

    def _through_forge(self, e: q.Land) -> bool:
        """Delivery through the forge (``per: task``): the tested candidates go to their pull requests."""
        build = self.jobs[e.members[0]][1]
        return build.spec.merge.delivery == "pullRequest" and self.target != names.pull_branch(build.namespace,
                                                                                                build.name)

    async def _hand_to_forge(self, e: q.Land) -> None:
        build = self.jobs[e.members[0]][1]
        for n in e.members:
            job = self.jobs[n][0]
            if job.spec.commit:
                await git.run(self.w, git.PushBranch(job.spec.branch, job.spec.commit))
            self.add(n, mj.HandedToForge(job.spec.commit or e.commit))
            self.out.append(ex.Requeue(forge.forge_key(job.namespace, job.name), self.now))
        self._cleanup(build, e.batch_id)

    async def _land(self, e: q.Land) -> bool:
        """Push a tested prefix (compare-and-swap); False when the target moved (the batch is tested again)."""
        build = self.jobs[e.members[0]][1]
        took = 0.0
        if not e.pushed:
            started = time.monotonic()
            land = git.Land(self.target, e.base, e.commit,
                            speculate.queue_branch(build.namespace, build.name, e.batch_id, e.position))
            with tracing.span("landing", {**batch_attrs(build, e.members, self.target),  # tracing: the push
                                          "longshot.batch": e.batch_id, "longshot.commit": e.commit},
                              parent=tracing.build_span(build.metadata.uid)) as traced:
                ok, why = await git.run(self.w, land)
                traced.set("longshot.landed", ok)
            took = time.monotonic() - started
            metrics.observe_queue_phase("land", took)
            if not ok:
                self._stale(e, why, took)
                return False
            self.memory.heads[self.name] = (self.memory.monotonic(), e.commit)  # the target is our commit now
        self._landed(e, build, took)
        return True

    def _stale(self, e: q.Land, why: str, took: float) -> None:
        self.memory.heads.pop(self.name, None)  # it moved: read it at the next reconcile
        metrics.observe_merge("Stale", took)
        for n in [c.name for c in self.state.candidates if c.batch_id == e.batch_id]:
            self.add(n, mj.Requeued(f"the target moved while the batch was tested ({why}); tested again"))

    def _landed(self, e: q.Land, build: objects.BuildRequest, took: float) -> None:
        per_build = self.target == names.pull_branch(build.namespace, build.name)  # lands on the build branch
        for n in e.members:
            job = self.jobs[n][0]
            commit = job.status.batch.commit if job.status.batch is not None else e.commit
            if per_build:  # handed to the build's pull request
                self.add(n, mj.HandedToForge(commit))
                self.out.append(ex.Requeue(forge.forge_key(job.namespace, job.name), self.now))
                continue
            self.add(n, mj.Landed(commit))
            metrics.observe_merge("Merged", took)
        self._cleanup(build, e.batch_id)

    def _cleanup_left(self) -> None:
        """The queue branches of the batches that ended without a land (every member evicted or sent back): used,
        they are deleted (a CI watching them has nothing more to run)."""
        members: dict[str, list[str]] = {}
        for c in self.state.candidates:
            if c.batch_id is not None:
                members.setdefault(c.batch_id, []).append(c.name)
        for batch_id, names_ in members.items():
            build = self.batch_build.get(batch_id)
            if build is not None and batch_id not in self.cleaned and all(n in self.left for n in names_):
                self._cleanup(build, batch_id)

    def _cleanup(self, build: objects.BuildRequest, batch_id: str) -> None:
        self.cleaned.add(batch_id)
        positions = tuple(c.position or 0 for c in self.state.candidates if c.batch_id == batch_id)
        self.out.append(ex.Call(functools.partial(git.Cleanup(build.namespace, build.name, batch_id, positions).do,
                                                  self.w), "delete the batch's queue branches"))

    async def _post_failure(self, e: q.Evict) -> None:
        """A fixer's push to an open pull request broke the gate: say so on the pull request."""
        job, build = self.jobs[e.name]
        async with self.ctx.lanes.lane(job.namespace):
            posted = await asyncio.to_thread(forge.post_gate_failure, self.ctx, job, build, e.output)
        if posted is not None:
            self.add(e.name, mj.ForgeFailurePosted(posted))

    # --- the other effects -------------------------------------------------------------------------

    def effect(self, e: q.Effect) -> None:
        handler = _HANDLERS.get(type(e))
        if handler is None:
            raise ValueError(f"{type(e).__name__} is carried out by the queue's reconcile itself")
        handler(self, e)

    def _join(self, e: Any) -> None:
        self.cleaned.add(e.batch_id)  # published again by this reconcile: in use
        self.add(e.name, mj.BatchJoined(mj.BatchRef(e.batch_id, e.position, e.base, e.commit)))

    def _probes(self, e: Any) -> None:
        build = self.batch_build.get(e.batch_id)
        if build is not None:
            self._start_probes(e, build)

    def _evict(self, e: Any) -> None:
        self.left.add(e.name)
        build = self.jobs[e.name][1]
        self.add(e.name, mj.Evicted(gate_label(build), e.output))

    def _requeue(self, e: Any) -> None:
        self.left.update(e.names)
        for n in e.names:
            self.add(n, mj.Requeued(e.why))

    def _conflicted(self, e: Any) -> None:
        self.add(e.name, mj.Conflict(e.files, e.base, counted=e.counted))

    def _recorded(self, e: Any) -> None:
        self.add(e.name, mj.Landed(e.commit, already=True))

    def _did_not_stack(self, e: Any) -> None:
        self.memory.did_not_stack.add((e.name, e.onto))

    def _window(self, e: Any) -> None:
        self.memory.windows[e.build] = e.window
        if e.broke:
            self.memory.broke.add(e.build)
        else:
            self.memory.broke.discard(e.build)

    def _cancel(self, e: Any) -> None:
        build = self.batch_build.get(e.batch_id)
        if build is None:
            return
        for t in self.ctx.cache.tasks_of_batch(build.key, e.batch_id):
            if not t.spec.cancel and t.status.phase not in tasks.TERMINAL:
                self.out.append(ex.PatchObject("AgentTask", build.namespace, t.name, {"spec": {"cancel": True}}))

    def _write_checks(self, e: Any) -> None:
        self.events.setdefault(e.name, [])  # its held checks are its events (``Memory.with_held``)

    def _wait(self, e: Any) -> None:
        pass

    def _start_probes(self, e: q.StartProbes, build: objects.BuildRequest) -> None:
        if gated_by(build) != "tester":  # the CI runs on the pushed queue branches: its timeout starts now
            CiGate(self.ctx, self.memory).start(e.batch_id, e.positions, self.now)
            self.out.append(ex.Requeue(("Queue", "", self.name),
                                       self.now + timedelta(seconds=build.spec.merge.gate.poll_seconds)))
            if gated_by(build) == "ci":
                return
        command = manifests.gate_command(build)
        if not command:
            self.out.append(ex.Requeue(("Queue", "", self.name), self.now))
            return
        for pos in e.positions:
            task_name = names.child_name(build.name, f"gate-{e.batch_id}-{pos}")
            existing = self.ctx.cache.tasks.get((build.namespace, task_name))
            if existing is None:
                self.out.append(ex.CreateObject(self._gate(build, task_name, e.batch_id, pos, command)))
            elif not existing.metadata.deleting and (existing.spec.cancel
                                                     or existing.status.phase in (tasks.FAILED, tasks.CANCELLED)):
                # a probe cancelled (its batch given up by a decision whose job writes did not all land) or ended
                # without a verdict is deleted and made again once gone (its deletion wakes the queue); one still
                # on its way is not created twice (it was refused, 409, and the batch waited for it for good)
                out = functools.partial(self.ctx.kube.delete, "AgentTask", build.namespace, task_name)
                self.out.append(ex.Call(out, f"delete probe {task_name} to run it again"))

    def _gate(self, build: objects.BuildRequest, task_name: str, batch_id: str, pos: int,
              command: str) -> dict[str, Any]:
        return manifests.tester_of(
            build, task_name, branch=speculate.queue_branch(build.namespace, build.name, batch_id, pos),
            command=command, purpose=GATE, priority=9, labels={cachemod.BATCH_LABEL: batch_id},
            annotations={cachemod.POSITION_ANNOTATION: str(pos), cachemod.QUEUE_ANNOTATION: self.name},
            description=(f"Quality gate of batch {batch_id} up to position {pos}: run `{command}` on the "
                         "candidates applied to the target as they would land."))


_HANDLERS: Final[dict[type, Callable[[Act, Any], None]]] = {
    q.JoinBatch: Act._join, q.StartProbes: Act._probes, q.Evict: Act._evict, q.Requeue: Act._requeue,
    q.Conflicted: Act._conflicted, q.Recorded: Act._recorded, q.DidNotStack: Act._did_not_stack,
    q.SetWindow: Act._window, q.CancelProbes: Act._cancel, q.WriteChecks: Act._write_checks, q.Wait: Act._wait,
}
"""The effects without git work, by type (``PrepareBatch`` and ``Land`` are :meth:`Act._git_effect`'s; ``Observe``,
``FixerMerged`` and ``RetryAsked`` come from ``core.mergequeue.observe``, carried out by the batch step)."""


def batch_attrs(build: objects.BuildRequest | None, members: Sequence[str], target: str) -> dict[str, Any]:
    """Tracing: the attributes of a batch's spans."""
    return {"longshot.namespace": build.namespace if build is not None else None,
            "longshot.build": build.name if build is not None else None,
            "longshot.target": target, "longshot.members": ",".join(members[:50]), "longshot.size": len(members)}
