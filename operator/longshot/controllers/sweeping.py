"""The build's sweeps: the reconciler command run on the target (``core.sweeps``), periodically after merges and as
the final sweep of finalization; whether the target tip is a commit a quality gate already tested with that command
(then no sweep of it: ``core.sweeps.gate_covers``), read at most every ``TIP_READ_SECONDS``; and a fixer for a sweep
that failed. Part of the BuildRequest reconciler (``controllers/builds.py``), which owns one :class:`Sweeps`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from longshot.api import conditions as cond
from longshot.api import keys, objects, timeutil
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.controllers import lanes
from longshot.core import finalization, manifests, names, tasks
from longshot.core import mergejobs as mj
from longshot.core import sweeps as sweepsc
from longshot.vcs import speculate

log = logging.getLogger("longshot.builds")

SWEEP, FINAL = "sweep", "final"
MERGED_COUNT_ANNOTATION = keys.MERGED_COUNT
TIP_READ_SECONDS: Final = 10.0
"""The periodic sweep's check of the target tip (is it a commit the gate tested?) is made at most this often."""


class Sweeps:
    def __init__(self, ctx: ctxmod.Context) -> None:
        self.ctx = ctx
        self.tip_read: dict[cachemod.Key, datetime] = {}
        self.tip_tested: dict[cachemod.Key, int] = {}
        """Per build: the branches merged when its target tip was found to be a commit its gate tested (covering
        the reconciler command): no periodic sweep until more merges (``core.sweeps.next_sweep``)."""

    def forget(self, key: cachemod.Key) -> None:
        self.tip_read.pop(key, None)
        self.tip_tested.pop(key, None)

    def of_kind(self, ts: Sequence[objects.AgentTask], kind: str) -> list[objects.AgentTask]:
        return sorted((t for t in ts if cachemod.purpose(t) == kind),
                      key=lambda t: t.metadata.creation_timestamp or timeutil.EPOCH)

    def last_sweep(self, ts: Sequence[objects.AgentTask]) -> dict[str, Any] | None:
        adopted = [t for t in self.of_kind(ts, manifests.GATE) if keys.FINAL_ATTEMPT in t.metadata.annotations]
        done = [t for t in self.of_kind(ts, SWEEP) + self.of_kind(ts, FINAL) + adopted
                if t.status.phase in tasks.TERMINAL and t.status.phase != tasks.CANCELLED]  # cancelled: no result
        if not done:
            return None
        t = max(done, key=lambda t: ended_at(t) or timeutil.EPOCH)
        passed = sweep_passed(t)
        ended = ended_at(t)
        return {"result": "Passed" if passed else "Failed", "time": timeutil.rfc3339(ended) if ended else None,
                "message": None if passed else sweep_output(t)[-4096:],
                "commit": (t.status.handoff.commit if t.status.handoff is not None else None)}

    async def sweep(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask], now: datetime,
                     out: list[ex.Action]) -> None:
        """The periodic sweep: decided by ``core.sweeps.next_sweep``. When it would start one, the target tip is
        read first: a tip the build's gate tested with the reconciler's command needs no sweep (it is remembered
        until the next merge, so the tip is read once per move of the target, not once per reconcile)."""
        merged = self.merged(build)
        sweeps = self.of_kind(ts, SWEEP)
        views = [sweepsc.SweepView(
            name=t.name, finished=t.status.phase in tasks.TERMINAL, passed=sweep_passed(t),
            merged_at_start=cachemod.merged_count(t), ended=ended_at(t),
            fixer_exists=(build.namespace, names.child_name(t.name, "fix")) in self.ctx.cache.tasks)
            for t in sweeps]
        settings = self.sweep_settings(build)
        decision = sweepsc.next_sweep(views, merged, settings, now, tip_tested_at=self.tip_tested.get(build.key))
        gates = self.covering_gates(build, ts, landed_only=False) if isinstance(decision, sweepsc.Start) else []
        if gates:
            # a batch's MergeJobs are marked Merged one write at a time: read the tip at most every few seconds
            # (a sweep waits that long at most) rather than at each of those writes
            read = self.tip_read.get(build.key)
            if read is not None and now < read + timedelta(seconds=TIP_READ_SECONDS):
                out.append(ex.Requeue(("BuildRequest", *build.key), read + timedelta(seconds=TIP_READ_SECONDS)))
                return
            self.tip_read[build.key] = now
            if await self.head_tested(build, gates, locked=False) is not None:
                self.tip_tested[build.key] = merged
                decision = sweepsc.next_sweep(views, merged, settings, now, tip_tested_at=merged)
        if isinstance(decision, sweepsc.WaitUntil):
            out.append(ex.Requeue(("BuildRequest", *build.key), decision.at))
        elif isinstance(decision, sweepsc.Start):
            name = names.child_name(build.name, f"sweep-{decision.number}")
            out.append(ex.CreateObject(self.sweep_manifest(build, name, SWEEP, decision.merged)))
            if decision.fix is not None:
                last = sweeps[-1]
                out.append(self.fixer_of(build, last, sweep_output(last)))

    def sweep_manifest(self, build: objects.BuildRequest, name: str, kind: str, merged: int,
                        iteration: int | None = None) -> dict[str, Any]:
        command = build.spec.reconciler.command
        base = build.spec.repository.base_branch
        annotations = {MERGED_COUNT_ANNOTATION: str(merged)}
        if iteration is not None:  # an early final sweep (core.builds.StartEarlySweep)
            annotations[keys.SWEEP_ITERATION] = str(iteration)
        m = manifests.tester_of(build, name, branch=base, command=command, purpose=kind, priority=9,
                                annotations=annotations,
                                description=f"Sweep: run `{command}` on {base} and report whether it passes.")
        return m

    def sweep_fixer(self, build: objects.BuildRequest, sweep: objects.AgentTask, output: str,
                     out: list[ex.Action]) -> bool:
        """A fixer for the failed final sweep ``sweep``, when ``core.sweeps.may_fix`` allows one."""
        exists = (build.namespace, names.child_name(sweep.name, "fix")) in self.ctx.cache.tasks
        if not sweepsc.may_fix(self.sweep_settings(build), exists):
            return False
        out.append(self.fixer_of(build, sweep, output))
        return True

    def sweep_settings(self, build: objects.BuildRequest) -> sweepsc.Settings:
        rec = build.spec.reconciler
        return sweepsc.Settings(
            enabled=rec.enabled, interval_seconds=rec.interval_seconds, max_fixers_per_sweep=rec.max_fixers_per_sweep,
            fixers_left=max(0, build.spec.merge.max_fixers - self.ctx.views(build.key).fixers))

    def fixer_of(self, build: objects.BuildRequest, sweep: objects.AgentTask, output: str) -> ex.CreateObject:
        name = names.child_name(sweep.name, "fix")
        base = build.spec.repository.base_branch
        command = build.spec.reconciler.command
        return ex.CreateObject(manifests.fixer_of(
            build, name, branch=names.task_branch(build.namespace, build.name, name), scope=(), priority=9,
            fix_depth=1, fixes=sweep.name,
            description=(f"`{command}` fails on {base}:\n```\n{output[-3000:]}\n```\nFind the cause and fix it on "
                         "your branch; the tests must pass.")))

    def merged(self, build: objects.BuildRequest) -> int:
        return sum(1 for j in self.ctx.cache.jobs_of(build.key) if j.status.phase == mj.MERGED)

    async def tested_tip(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask]
                          ) -> objects.AgentTask | None:
        """The build's passed quality-gate run on the commit the target tip is now, when its gate covers the
        reconciler command (``core.sweeps.gate_covers``): the merge queue landed exactly that commit. None when
        there is none, or the tip cannot be read now (the final sweep then runs)."""
        return await self.head_tested(build, self.covering_gates(build, ts), locked=True)

    def covering_gates(self, build: objects.BuildRequest, ts: Sequence[objects.AgentTask], *,
                        landed_only: bool = True) -> list[objects.AgentTask]:
        """The build's passed quality-gate runs whose command covers the reconciler command, on a commit the queue
        landed (``landed_only``; the periodic sweep takes any: the tip is compared with each after a batch's
        landing, while its MergeJobs are still being marked Merged one by one). Empty without workspaces."""
        if self.ctx.workspaces is None or not sweepsc.gate_covers(manifests.gate_parts(build),
                                                                  build.spec.reconciler.command):
            return []
        landed = {j.status.merged_commit for j in self.ctx.cache.jobs_of(build.key)
                  if j.status.phase == mj.MERGED and j.status.merged_commit} if landed_only else set()
        command = manifests.gate_command(build)  # what the gate runs now, and what each run ran (its annotation)
        return [t for t in ts if cachemod.purpose(t) == manifests.GATE and sweep_passed(t)
                and t.metadata.annotations.get(keys.TEST_COMMAND) == command
                and t.status.handoff is not None and (not landed_only or t.status.handoff.commit in landed)]

    async def head_tested(self, build: objects.BuildRequest, gates: Sequence[objects.AgentTask], *,
                           locked: bool) -> objects.AgentTask | None:
        """The one of ``gates`` that tested the commit the target tip is now (read now), or None (also when the tip
        cannot be read). ``locked=False`` asks the server (``ls-remote``) instead of fetching in the workspace: the
        build reconcile does not wait for the merge queue's git work there."""
        if not gates:
            return None
        try:
            w = await self.ctx.workspaces.get(build)
            read = speculate.head_of if locked else speculate.remote_head
            head = await lanes.git(read, w, build.spec.repository.base_branch)
        except Exception as e:  # the sweep runs instead
            log.info("the tip of %s for %s/%s could not be read: %s", build.spec.repository.base_branch,
                     build.namespace, build.name, e)
            return None
        return next((t for t in gates if t.status.handoff is not None and t.status.handoff.commit == head), None)


def sweep_view(t: objects.AgentTask) -> finalization.SweepView:
    return finalization.SweepView(t.name, t.status.phase in tasks.TERMINAL, sweep_passed(t), sweep_output(t))


def sweep_passed(t: objects.AgentTask) -> bool:
    return t.status.phase == tasks.SUCCEEDED and t.status.handoff is not None and t.status.handoff.verdict == "passed"


def sweep_output(t: objects.AgentTask) -> str:
    h = t.status.handoff
    if h is not None and (h.reasons or h.summary):
        return "\n".join(h.reasons[-2:]) or h.summary
    return last_failure(t) or f"sweep {t.status.phase}"


def last_failure(t: objects.AgentTask) -> str:
    last = t.status.attempts[-1] if t.status.attempts else None
    if last is not None and last.exit_reason and last.failure_class:
        return last.exit_reason
    succeeded = cond.find(ctxmod.conditions_of(t), cond.SUCCEEDED)
    return str((succeeded or {}).get("message") or "") if t.status.phase == tasks.FAILED else ""


def ended_at(t: objects.AgentTask | None) -> datetime | None:
    if t is None or not t.status.attempts:
        return None
    return t.status.attempts[-1].end_time
