"""The merge queue: one controller, the only writer of MergeJob status. A queue is one tenant's speculative queue of
one repository branch (``cache.shard_key``: namespace, credentials Secret and repository URL, then the target),
run by the replica that holds the shard. Two tenants on one repository and target have two queues; their pushes to
the target are compare-and-swaps, so one landing makes the other's batch stale (tested again), never lost.

The Queue controller's keys, each a step of the queue (one module each):

* ``<shard key>|<target>``: the batch step (``batch``): the jobs' own events, then ``core.mergequeue.decide`` and its
  effects carried out (``act``): build the speculative commits and publish them, start one tester task per gated
  prefix, push a tested prefix with a compare-and-swap, evict a culprit to a fixer, put the rest back;
* ``checks:<shard key>|<target>``: the checks step (``checks``): secret scans and reviews of new candidates;
* ``forge:<namespace>/<job>``: the forge step (``forge``): the poll of a job delivered through a pull request.

The git work of every step is typed actions (``git``) run by one executor off the event loop, each under a deadline
well under the controller's stall limit. Every status write goes through ``jobs.write``. Finalization asks for a job
to be tried again through an annotation (``core.finalization.RETRY_ASKED``) that the batch step answers. The
MergeJob controller only routes a job's changes to its queue's keys (:meth:`QueueReconciler.job`). In-memory state
(``memory``) is only an optimisation: a restart rebuilds everything else from the MergeJobs and the gate tasks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Final

from longshot.api import objects, timeutil
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.core import mergejobs as mj
from longshot.vcs import speculate

from . import git
from .act import GATE
from .batch import HEAD_REUSE_SECONDS, BatchStep
from .checks import CHECKS, REVIEW, ChecksStep, checks_ahead
from .forge import FORGE, ForgeStep, forge_key
from .memory import Held, Memory
from .workspaces import CHECKS_WORKSPACE, SECRET_TTL_SECONDS, ScanItem, ScanResult, Workspaces, scan_slice

log = logging.getLogger("longshot.mergequeue")

DEADLINE_BACKOFF_SECONDS: Final = 10.0
"""A queue step whose git action ran out of time (``git.GIT_DEADLINE_SECONDS``) is reconciled again this much later."""

__all__ = ["CHECKS", "CHECKS_WORKSPACE", "FORGE", "GATE", "HEAD_REUSE_SECONDS", "REVIEW", "SECRET_TTL_SECONDS",
           "Held", "QueueReconciler", "ScanItem", "ScanResult", "Workspaces", "checks_ahead", "forge_key", "git",
           "scan_slice", "speculate"]


class QueueReconciler:
    """The Queue controller's reconcile: each key to its step, over the jobs of its queue as cached."""

    def __init__(self, ctx: ctxmod.Context, workspaces: Workspaces, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.workspaces = workspaces
        self.memory = Memory(monotonic=monotonic)
        self.batches = BatchStep(ctx, workspaces, self.memory)
        self.checks = ChecksStep(ctx, workspaces, self.memory)
        self.forge = ForgeStep(ctx)

    async def reconcile(self, name: str) -> list[ex.Action]:
        if name.startswith(FORGE):
            return await self.forge.reconcile(name.removeprefix(FORGE))
        step = name.startswith(CHECKS)
        queue = name.removeprefix(CHECKS)
        shard, _, target = queue.partition("|")
        if not self.ctx.owns(shard):
            return []
        self.memory.forget_written(self.ctx.cache.jobs)
        pairs = self._jobs(shard, target)
        try:
            if step:
                return await self.checks.reconcile(queue, pairs)
            return await self.batches.reconcile(queue, pairs)
        except git.GitDeadline as e:  # a slow git server: this key again later, the worker and the loop go on
            log.warning("queue %s: %s", name, e)
            self.memory.heads.pop(queue, None)
            return [ex.Requeue(("Queue", "", name), self.ctx.clock() + timedelta(seconds=DEADLINE_BACKOFF_SECONDS))]

    async def job(self, namespace: str, name: str) -> list[ex.Action]:
        """The MergeJob controller's reconcile: a job's change goes to its queue's keys (its forge poll while it
        waits on its pull request). It writes nothing: the queue is the only writer of MergeJob status."""
        job = self.ctx.cache.jobs.get((namespace, name))
        build = self.ctx.cache.build_of(job) if job is not None else None
        if job is None or build is None or job.metadata.deleting or not self.ctx.owns_build(build):
            return []
        now = self.ctx.clock()
        if job.status.phase == mj.AWAITING_FORGE:
            return [ex.Requeue(forge_key(namespace, name), now)]
        return [ex.Requeue(("Queue", "", cachemod.queue_name(build, job.spec.target)), now)]

    def held(self, job: objects.MergeJob) -> Held | None:
        return self.memory.held(job)

    @property
    def passed(self) -> dict[tuple[str, str], Held]:
        return self.memory.passed

    @property
    def heads(self) -> dict[str, tuple[float, str]]:
        return self.memory.heads

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
