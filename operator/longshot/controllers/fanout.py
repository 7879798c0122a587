"""The shell of best-of-N (``core.fanout``): reads a fanned-out task's candidates, their gates and the judge from
the cache, asks ``core.fanout.decide``, and carries out what it says.

Called by the task reconciler for a task whose ``core.fanout.effective`` settings ask for candidates:

* :meth:`Fanout.observe` while its round runs: creates missing candidates (for a fixer, each candidate's branch
  is first made at the head of the branch to fix), gates each candidate that succeeded as it would land on the
  target alone (the speculative commit of the candidate on the target tip, published on a queue branch, and a
  tester task ``<candidate>-gate`` on it; a conflict fails the gate at once), creates the judge, and turns the
  decision into ``core.tasks.FanoutFinished`` with the winner's handoff. Returns the task's ``status.fanout``.
* :meth:`Fanout.stop` once the task no longer runs (cancelled, or decided): cancels candidates and the judge that
  still run, and deletes the candidates' gate branches.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Any, assert_never

from longshot.api import agenttask, objects
from longshot.controllers import context as ctxmod
from longshot.controllers import executor as ex
from longshot.controllers import lanes
from longshot.core import fanout, manifests, names, plan, tasks
from longshot.core import mergequeue as q
from longshot.vcs import speculate
from longshot.vcs import workspace as vws

log = logging.getLogger("longshot.fanout")


def _last_failure(t: objects.AgentTask) -> str:
    last = max(t.status.attempts, key=lambda a: a.number) if t.status.attempts else None
    return (last.exit_reason or "") if last is not None and last.failure_class else ""


def gate_batch(candidate: str) -> str:
    """The queue-branch directory of a candidate's gate: ``longshot/<namespace>/<build>/_queue/<this>/1``."""
    return names.fit(f"cand-{candidate}")


def prepare_gate(w: vws.Workspace, target: str, member: speculate.Member, build: str) -> tuple[bool, str]:
    """Apply the candidate on the target tip and publish the commit for its gate: ``(True, branch)``, or
    ``(False, why)`` when it does not apply."""
    prepared = speculate.prepare(w, target, [member])
    (result,) = prepared.members
    if isinstance(result, q.DidNotApply):
        return False, f"conflicts with the target ({prepared.base[:12]}) in {', '.join(result.files[:10])}"
    if isinstance(result, q.AlreadyOnTarget):
        return False, "its changes are already on the target"
    batch = gate_batch(member.name)
    speculate.publish(w, member.namespace, build, batch, [(1, result.commit)])
    return True, speculate.queue_branch(member.namespace, build, batch, 1)


class Fanout:
    def __init__(self, ctx: ctxmod.Context) -> None:
        self.ctx = ctx

    # --- reading -------------------------------------------------------------------------------------

    def snapshot(self, task: objects.AgentTask, build: objects.BuildRequest, settings: fanout.Settings,
                 round_: int, running: bool) -> fanout.Snapshot:
        recorded = {c.name: c for c in (task.status.fanout.candidates if task.status.fanout is not None else [])}
        has_gate = bool(manifests.gate_command(build))
        views = tuple(self._candidate(task, build, settings, round_, i, recorded, has_gate)
                      for i in range(1, settings.count + 1))
        jt = self.ctx.cache.tasks.get((task.namespace, fanout.judge_name(task.name, round_)))
        judge = None
        if jt is not None:
            jh = jt.status.handoff
            judge = fanout.JudgeView(jt.name, jt.status.phase or tasks.PENDING,
                                     commit=jh.commit if jh is not None else None,
                                     branch=jh.branch if jh is not None else None,
                                     reasons=tuple(jh.reasons) if jh is not None else (), failure=_last_failure(jt),
                                     summary=jh.summary if jh is not None else "")
        return fanout.Snapshot(task.name, round_, views, judge, has_gate, running, settings.judge)

    def _candidate(self, task: objects.AgentTask, build: objects.BuildRequest, settings: fanout.Settings,
                   round_: int, i: int, recorded: dict[str, agenttask.Candidate],
                   has_gate: bool) -> fanout.CandidateView:
        """The view of the round's ``i``-th candidate and its gate."""
        name = fanout.candidate_name(task.name, round_, i)
        model = fanout.model_for(settings, i, build.spec.agent.model)
        backend = fanout.backend_for(settings, i)
        t = self.ctx.cache.tasks.get((task.namespace, name))
        if t is None:
            return fanout.CandidateView(name, "Missing", model, backend=backend)
        h = t.status.handoff
        phase = t.status.phase or tasks.PENDING
        gate, reason, started = self._gate_of(t, recorded.get(name), has_gate)
        return fanout.CandidateView(
            name=name, phase=phase, model=model, branch=h.branch if h is not None else None,
            commit=h.commit if h is not None else None, backend=backend,
            tokens=sum(a.tokens for a in t.status.attempts), cost=sum(a.cost for a in t.status.attempts),
            files=len(h.files_changed) if h is not None else 0,
            handoff=h.model_dump(by_alias=True, mode="json", exclude_none=True) if h is not None else None,
            failure=_last_failure(t), gate=gate, gate_reason=reason, gate_started=started)

    def _gate_of(self, t: objects.AgentTask, rec: agenttask.Candidate | None,
                 has_gate: bool) -> tuple[fanout.Gate, str, bool]:
        """(the candidate's gate, why, whether it started): as recorded once decided, else from its gate task."""
        if rec is not None and rec.gate in ("Passed", "Failed"):
            return rec.gate, rec.reason or "", True
        gt = self.ctx.cache.tasks.get((t.namespace, fanout.gate_name(t.name)))
        h = t.status.handoff
        if gt is None:
            if not has_gate and t.status.phase == tasks.SUCCEEDED and h is not None and h.commit:
                return "Passed", "no quality gate is configured", True
            return "Pending", "", False
        gh = gt.status.handoff
        if gt.status.phase == tasks.SUCCEEDED and gh is not None and gh.verdict in ("passed", "failed"):
            reason = ("\n".join(gh.reasons[-2:]) or gh.summary)[-2000:]
            return ("Passed" if gh.verdict == "passed" else "Failed"), reason, True
        if gt.status.phase in (tasks.FAILED, tasks.CANCELLED):
            return "Failed", f"its gate task {gt.name} failed: {_last_failure(gt)}", True
        return "Pending", "", True

    # --- acting --------------------------------------------------------------------------------------

    async def observe(self, task: objects.AgentTask, build: objects.BuildRequest, settings: fanout.Settings,
                      state: tasks.TaskState, now: datetime
                      ) -> tuple[list[tasks.Event], list[ex.Action], dict[str, Any]]:
        """The running round: (events for the task decider, actions, ``status.fanout``)."""
        snap = self.snapshot(task, build, settings, state.attempt, True)
        actions: list[ex.Action] = []
        events: list[tasks.Event] = []
        old = task.status.fanout
        record = fanout.Record(judge_task=snap.judge.name if snap.judge is not None else None,
                               reasons=tuple(old.reasons) if old is not None else (),
                               summary=(old.summary or "") if old is not None else "")
        wire = self._wire(task)
        labels = plan.task_labels(build.name, task.spec.role)
        for _ in range(3):
            again = False
            for e in fanout.decide(snap):
                match e:
                    case fanout.CreateCandidates():
                        actions += await self._create(task, build, settings, state.attempt, e.names, wire, labels)
                    case fanout.GateCandidate():
                        ok, detail = await self._gate(task, build, snap, e.name, actions)
                        snap = fanout.with_gate(snap, e.name, "Pending" if ok else "Failed", "" if ok else detail)
                        again = again or not ok
                    case fanout.StartJudge():
                        actions.append(ex.CreateObject(fanout.judge_manifest(
                            wire, build.name, state.attempt, e.candidates, plan.task_labels(build.name, "reviewer"),
                            settings.judge)))
                        record = fanout.Record(judge_task=e.name, reasons=record.reasons)
                    case fanout.Finish():
                        winner = next((c for c in snap.candidates if c.name == e.winner), None)
                        events.append(tasks.FanoutFinished(dict(winner.handoff) if winner and winner.handoff else None,
                                                           e.message))
                        record = fanout.Record(judge_task=record.judge_task, winner=e.winner, reasons=e.reasons,
                                               summary=e.summary)
                        actions += await self._cleanup(build, snap)
                    case fanout.CancelTasks():
                        pass  # what still runs of a round is cancelled when the task stops (stop())
                    case _:
                        assert_never(e)
            if not again:
                break
        return events, actions, fanout.status(snap, record)

    async def stop(self, task: objects.AgentTask, build: objects.BuildRequest, settings: fanout.Settings,
                   state: tasks.TaskState) -> list[ex.Action]:
        """The task no longer runs its round: cancel what still runs of it."""
        if state.attempt < 1:
            return []
        snap = self.snapshot(task, build, settings, state.attempt, False)
        out: list[ex.Action] = []
        for e in fanout.decide(snap):
            if isinstance(e, fanout.CancelTasks):
                out += [ex.PatchObject("AgentTask", task.namespace, n, {"spec": {"cancel": True}}) for n in e.names
                        if not self.ctx.cache.tasks[(task.namespace, n)].spec.cancel]
        return out

    async def _create(self, task: objects.AgentTask, build: objects.BuildRequest, settings: fanout.Settings,
                      round_: int, wanted: tuple[str, ...], wire: dict[str, Any],
                      labels: dict[str, str]) -> list[ex.Action]:
        manifests = [m for m in fanout.candidate_manifests(wire, build.name, round_, settings, build.spec.agent.model,
                                                           labels) if m["metadata"]["name"] in wanted]
        if task.spec.role == "fixer" and task.spec.branch:
            # a fixer's candidates each start from the branch to fix, on their own branch
            w = await self.ctx.workspaces.get(build)
            await lanes.git(speculate.copy_branch, w, task.spec.branch, [m["spec"]["branch"] for m in manifests])
        return [ex.CreateObject(m) for m in manifests]

    async def _gate(self, task: objects.AgentTask, build: objects.BuildRequest, snap: fanout.Snapshot, name: str,
                    actions: list[ex.Action]) -> tuple[bool, str]:
        view = next(c for c in snap.candidates if c.name == name)
        cand = self.ctx.cache.tasks.get((task.namespace, name))
        if cand is None or not view.branch or not view.commit:
            return False, "it pushed no commit"
        w = await self.ctx.workspaces.get(build)
        member = speculate.Member(name=name, namespace=task.namespace, uid=cand.metadata.uid, branch=view.branch,
                                  commit=view.commit, strategy=build.spec.merge.strategy, task=name, build=build.name)
        target = build.spec.repository.base_branch
        try:
            ok, detail = await lanes.git(prepare_gate, w, target, member, build.name)
        except vws.GitError as e:
            raise RuntimeError(f"the gate of candidate {name} could not be prepared: {e}") from None
        if not ok:
            return False, detail
        command = manifests.gate_command(build)
        actions.append(ex.CreateObject(manifests.tester_of(
            build, fanout.gate_name(name), branch=detail, command=command, purpose=fanout.CANDIDATE_GATE, priority=9,
            labels={fanout.FANOUT_LABEL: names.fit(task.name)}, annotations={fanout.CANDIDATE_ANNOTATION: name},
            description=(f"Quality gate of candidate {name} of task {task.name}: run `{command}` on the candidate "
                         f"applied to {target} as it would land."))))
        return True, detail

    async def _cleanup(self, build: objects.BuildRequest, snap: fanout.Snapshot) -> list[ex.Action]:
        gated = [c.name for c in snap.candidates if c.gate_started and c.gate_reason != "no quality gate is configured"]
        if not gated:
            return []
        w = await self.ctx.workspaces.get(build)
        return [ex.Call(functools.partial(vws.within, lanes.GIT_SECONDS, speculate.cleanup, w, build.namespace,
                                          build.name, gate_batch(n), [1]),
                        f"delete the gate branch of candidate {n}") for n in gated]

    @staticmethod
    def _wire(task: objects.AgentTask) -> dict[str, Any]:
        out: dict[str, Any] = task.model_dump(by_alias=True, mode="json", exclude_none=True)
        return out
