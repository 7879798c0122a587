"""Delivery: quality gates, the leader-elected merge queue, reconciler sweeps and finalization.

Called by the engine (``controllers/engine.py``) on every step; everything it knows comes from the
engine's caches, so a restarted or newly elected replica carries on from the resources and git refs.

* **Gates.** Before a MergeJob merges, its branch passes the build's quality-gate profile, run in
  sandboxed Pods as tester (and, for ``strict``, reviewer) AgentTasks ``<job>-gate`` / ``<job>-review``,
  and the operator's secret scan of the branch's diff.
* **Merge queue.** One per repository, run only by the holder of that repository's Lease
  (``runtime.leader``); serial; ordered by priority then arrival; ``vcs.merge`` fences the push with a
  compare-and-swap on the target's old head, so even a deposed leader cannot merge twice.
* **Conflicts.** A conflicting job is retried after the target moves, ``spec.merge.maxConflictRetries``
  times; then a fixer AgentTask ``<task>-fix`` scoped to the conflicting files takes over the branch
  (at most ``spec.merge.maxFixers`` per build; a fixer's own conflict does not get another fixer).
* **Sweeps.** Tester AgentTasks ``<build>-sweep-<n>`` run the reconciler command on the target branch
  every ``intervalSeconds`` after new merges; a failing sweep creates a fixer and shortens the interval.
* **Finalization.** When no work is left: drain the queue, re-queue unmerged branches, run the final sweep
  ``<build>-final-<attempt>``; repeat up to ``finalization.maxAttempts``; then ``Finalized``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longshot import metrics
from longshot.api import conditions as cond
from longshot.core import builds, names, plan
from longshot.runtime import kube, leader, pods
from longshot.vcs import merge as vmerge
from longshot.vcs import secretscan
from longshot.vcs import workspace as vws

if TYPE_CHECKING:
    from longshot.controllers.engine import Engine, Key

log = logging.getLogger("longshot.delivery")

PURPOSE_LABEL = "longshot.dev/purpose"
GATE, REVIEW, SWEEP, FINAL = "gate", "review", "sweep", "final"
MERGED_COUNT_ANNOTATION = "longshot.dev/merged-count"
TERMINAL_JOB_PHASES = ("Merged", "Conflicted", "Failed")
ERROR_RETRIES = 3


def _now() -> datetime:
    return datetime.now(UTC)



def _phase(obj: Mapping[str, Any] | None) -> str | None:
    return ((obj or {}).get("status") or {}).get("phase")


def purpose(task: Mapping[str, Any]) -> str | None:
    return ((task.get("metadata") or {}).get("labels") or {}).get(PURPOSE_LABEL)


class Delivery:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.electors: dict[str, leader.LeaderElector] = {}
        self.elector_tasks: dict[str, asyncio.Task[None]] = {}
        self.workers: dict[str, asyncio.Task[None]] = {}
        self.workspaces: dict[str, vws.Workspace] = {}
        self.not_before: dict[Key, datetime] = {}
        root = Path(engine.settings.workspace_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
            writable = os.access(root, os.W_OK)
        except OSError:
            writable = False
        self.cache_dir = root if writable else Path.home() / ".cache" / "longshot" / "workspaces"

    # --- views ------------------------------------------------------------------------------------------

    def jobs_of(self, build_key: Key) -> list[dict[str, Any]]:
        ns, name = build_key
        return [j for (jns, _), j in self.engine.merge_jobs.items()
                if jns == ns and ((j.get("spec") or {}).get("buildRef") or {}).get("name") == name]

    def build_of_job(self, job: Mapping[str, Any]) -> dict[str, Any] | None:
        ns = job["metadata"]["namespace"]
        return self.engine.builds.get((ns, ((job.get("spec") or {}).get("buildRef") or {}).get("name", "")))

    @staticmethod
    def repo_url(build: Mapping[str, Any]) -> str:
        return str(((build.get("spec") or {}).get("repository") or {}).get("url", ""))

    def fixer_name(self, job: Mapping[str, Any]) -> str:
        return names.child_name(((job.get("spec") or {}).get("taskRef") or {}).get("name", job["metadata"]["name"]),
                                "fix")

    def superseded(self, job: Mapping[str, Any]) -> bool:
        """A conflicted job whose fixer's MergeJob merged: its work is on the target."""
        fixer_job = self.engine.merge_jobs.get((job["metadata"]["namespace"], self.fixer_name(job)))
        return _phase(fixer_job) == "Merged" or (fixer_job is not None and self.superseded(fixer_job))

    def delivered(self, job: Mapping[str, Any]) -> bool:
        return _phase(job) == "Merged" or self.superseded(job)

    # --- the step -----------------------------------------------------------------------------------------

    async def step(self) -> None:
        queued: dict[str, list[dict[str, Any]]] = {}
        depth = 0
        for job in list(self.engine.merge_jobs.values()):
            if _phase(job) not in (None, "Queued") or job["metadata"].get("deletionTimestamp"):
                continue
            build = self.build_of_job(job)
            if build is None:
                continue
            depth += 1
            if await self._gates(job, build):
                queued.setdefault(self.repo_url(build), []).append(job)
        metrics.MERGE_QUEUE_DEPTH.set(depth)
        for url, jobs in queued.items():
            elector = self._elector(url)
            if elector.is_leader:
                worker = self.workers.get(url)
                if worker is None or worker.done():
                    self.workers[url] = asyncio.create_task(self._drain(url), name=f"merge-queue {url}")
            await self._positions(jobs)
        metrics.set_role(leader=any(e.is_leader for e in self.electors.values()))

    def _elector(self, url: str) -> leader.LeaderElector:
        if url not in self.electors:
            s = self.engine.settings
            e = leader.LeaderElector(
                self.engine.kube.client, namespace=s.namespace, name=leader.lease_name_for(url),
                identity=s.identity, lease_duration=s.lease_duration_seconds, renew_period=s.lease_renew_seconds,
                on_started_leading=lambda u=url: self._role_changed(u, True),
                on_stopped_leading=lambda u=url: self._role_changed(u, False))
            self.electors[url] = e
            self.elector_tasks[url] = asyncio.create_task(e.run(), name=f"lease {url}")
        return self.electors[url]

    def _role_changed(self, url: str, leading: bool) -> None:
        log.info("merge queue of %s: %s", url, "now LEADER" if leading else "now follower")
        if not leading:
            worker = self.workers.pop(url, None)
            if worker is not None:
                worker.cancel()  # stop merging at once; the CAS push fences anything in flight
        self.engine.wake.set()

    async def stop(self) -> None:
        for w in self.workers.values():
            w.cancel()
        for t in self.elector_tasks.values():
            t.cancel()
        for t in [*self.workers.values(), *self.elector_tasks.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _positions(self, jobs: list[dict[str, Any]]) -> None:
        for pos, job in enumerate(vmerge.order(jobs)):
            if (job.get("status") or {}).get("queuePosition") != pos:
                await self._patch_job(job, {"queuePosition": pos})

    # --- gates --------------------------------------------------------------------------------------------

    async def _gates(self, job: dict[str, Any], build: Mapping[str, Any]) -> bool:
        """True when the job's quality gates passed; creates the gate tasks and fails the job as needed."""
        gate = (build.get("spec") or {}).get("qualityGate") or {}
        profile = gate.get("profile", "standard")
        test = gate.get("testCommand") or ((build.get("spec") or {}).get("reconciler") or {}).get("command")
        commands = {"minimal": [test], "standard": [gate.get("lintCommand"), test],
                    "strict": [gate.get("typecheckCommand"), gate.get("lintCommand"), test]}[profile]
        command = " && ".join(c for c in commands if c)
        wanted = [(GATE, "tester", command)] if command else []
        if profile == "strict":
            wanted.append((REVIEW, "reviewer", None))
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        verdicts = []
        for kind, role, cmd in wanted:
            tname = names.child_name(name, kind)
            task = self.engine.tasks.get((ns, tname))
            if task is None:
                await self._create_task(build, tname, role=role, purpose_=kind, branch=job["spec"]["branch"],
                                        description=self._gate_description(job, role, cmd),
                                        priority=int(job["spec"].get("priority", 5)), test_command=cmd)
                verdicts.append(None)
                continue
            phase = _phase(task)
            verdict = ((task.get("status") or {}).get("handoff") or {}).get("verdict")
            if phase in ("Failed", "Cancelled") or (phase == "Succeeded" and verdict in ("failed",
                                                                                          "changes-requested")):
                why = f"{role} task {tname}: " + ("; ".join(self._reasons(task)) or f"verdict {verdict or phase}")
                await self._finish_job(job, "Failed", "GatesFailed", why, result="GatesFailed")
                return False
            verdicts.append(verdict if phase == "Succeeded" else None)
        conds = (job.get("status") or {}).get("conditions") or []
        current = cond.find(conds, cond.GATES_PASSED) or {}
        if any(v is None for v in verdicts):
            if current.get("reason") != "GatesPending":
                await self._patch_job(job, {}, condition=(cond.GATES_PASSED, cond.UNKNOWN, "GatesPending",
                                                          f"waiting for the {profile} quality gates"))
            return False
        if wanted and current.get("status") != cond.TRUE:
            await self._patch_job(job, {}, condition=(cond.GATES_PASSED, cond.TRUE, "Completed",
                                                      f"the {profile} quality gates passed; the secret scan "
                                                      "runs just before the merge"))
        return True

    @staticmethod
    def _gate_description(job: Mapping[str, Any], role: str, command: str | None) -> str:
        branch, target = job["spec"]["branch"], job["spec"]["target"]
        if role == "reviewer":
            return (f"Review the changes of branch {branch} against {target}: approve them, or request changes "
                    "with reasons.")
        return f"Quality gate of branch {branch} before it merges into {target}: run `{command}`."

    @staticmethod
    def _reasons(task: Mapping[str, Any]) -> list[str]:
        handoff = (task.get("status") or {}).get("handoff") or {}
        summary = handoff.get("summary")
        return [summary[-500:]] if summary else []

    # --- the queue ----------------------------------------------------------------------------------------

    def _ready(self, url: str) -> list[dict[str, Any]]:
        now = _now()
        out = []
        for key, job in self.engine.merge_jobs.items():
            if _phase(job) not in (None, "Queued") or self.not_before.get(key, now) > now:
                continue
            build = self.build_of_job(job)
            if build is None or self.repo_url(build) != url:
                continue
            gates = cond.find((job.get("status") or {}).get("conditions"), cond.GATES_PASSED)
            if gates is not None and gates.get("reason") == "GatesPending":
                continue
            out.append(job)
        return out

    async def _drain(self, url: str) -> None:
        elector = self.electors[url]
        while elector.is_leader:
            jobs = self._ready(url)
            if not jobs:
                return
            job = vmerge.order(jobs)[0]
            build = self.build_of_job(job)
            if build is None:
                return
            try:
                await self._merge_one(url, job, build, elector)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # keep the queue going; the job records the error
                log.exception("merge of %s failed", job["metadata"]["name"])
                await self._error(job, f"{type(e).__name__}: {e}")

    async def _workspace(self, url: str, build: Mapping[str, Any]) -> vws.Workspace:
        secret = ((build.get("spec") or {}).get("repository") or {}).get("credentialsSecret")
        credentials = None
        if secret:
            data = await asyncio.to_thread(self.engine.kube.get_secret, build["metadata"]["namespace"], secret)
            if data:
                credentials = vws.GitCredentials.from_secret_data(data)
        s = self.engine.settings
        w = self.workspaces.get(url)
        if w is None or w.credentials != credentials:
            w = vws.Workspace(url, self.cache_dir, credentials=credentials,
                              committer=(s.git_author_name, s.git_author_email))
            self.workspaces[url] = w
        return w

    async def _merge_one(self, url: str, job: dict[str, Any], build: Mapping[str, Any],
                         elector: leader.LeaderElector) -> None:
        request = vmerge.MergeRequest.from_mergejob(job)
        w = await self._workspace(url, build)
        findings = await asyncio.to_thread(self._scan, w, request)
        if findings:
            text = "secret scan: " + ", ".join(str(f) for f in findings[:10])
            await self._finish_job(job, "Failed", "GatesFailed", text + "; remove the credential and push again",
                                   result="GatesFailed")
            return
        if not elector.is_leader:
            return
        result = await asyncio.to_thread(vmerge.merge, w, request, fetch=False)
        metrics.observe_merge(result.outcome, result.duration_seconds)
        if result.outcome in ("Merged", "AlreadyMerged"):
            reason = "AlreadyMerged" if result.outcome == "AlreadyMerged" else "MergeSucceeded"
            await self._finish_job(job, "Merged", reason, result.message or f"merged as {result.merged_commit}",
                                   result=result.outcome, merged_commit=result.merged_commit)
            await self._requeue_conflicted(url)
        elif result.outcome == "Stale":
            return  # another writer moved the target: the next round fetches and tries again
        elif result.outcome == "Conflicted":
            await self._conflicted(job, build, result)
        else:
            await self._error(job, result.message)

    def _scan(self, w: vws.Workspace, request: vmerge.MergeRequest) -> list[secretscan.Finding]:
        with w.locked():
            w.ensure()
            w.fetch(request.target, request.branch, request.commit)
            head = request.commit or vws.INCOMING_REF
            diff = w.out("diff", "--no-color", "--no-ext-diff", f"refs/remotes/origin/{request.target}...{head}")
        return secretscan.scan_diff(diff)

    async def _conflicted(self, job: dict[str, Any], build: Mapping[str, Any], result: vmerge.MergeResult) -> None:
        files = list(result.conflicting_files)
        attempts = (job.get("status") or {}).get("attempts") or []
        conflicts = 1 + sum(1 for a in attempts if a.get("result") == "Conflicted")
        merge_spec = (build.get("spec") or {}).get("merge") or {}
        what = ", ".join(files) or "(the target moved past the branch's base)"
        if conflicts <= int(merge_spec.get("maxConflictRetries", 2)):
            await self._finish_job(job, "Conflicted", result.reason or "MergeConflict",
                                   f"conflicts in {what}; retried when the target moves "
                                   f"({conflicts} of {merge_spec.get('maxConflictRetries', 2)})",
                                   result="Conflicted", files=files, terminal=False)
            return
        ns = job["metadata"]["namespace"]
        task = self.engine.tasks.get((ns, job["spec"]["taskRef"]["name"]))
        role = ((task or {}).get("spec") or {}).get("role")
        fixers = sum(1 for t in self.engine.build_tasks((ns, build["metadata"]["name"]))
                     if (t.get("spec") or {}).get("role") == "fixer")
        limit = int(merge_spec.get("maxFixers", 5))
        if role == "fixer":
            text = f"the fixer's branch still conflicts in {what}; a fix of a fix is not attempted"
            await self._finish_job(job, "Conflicted", "MergeConflict", text, result="Conflicted", files=files)
        elif fixers >= limit:
            text = f"conflicts in {what}; merge.maxFixers={limit} fixer tasks already used"
            await self._finish_job(job, "Conflicted", "MergeConflict", text, result="Conflicted", files=files)
        else:
            fixer = self.fixer_name(job)
            await self._create_task(
                build, fixer, role="fixer", branch=job["spec"]["branch"], scope=files,
                priority=min(10, int(job["spec"].get("priority", 5)) + 1),
                description=(f"Branch {job['spec']['branch']} conflicts with {job['spec']['target']} in: {what}. "
                             f"Merge {job['spec']['target']} into the branch, resolve the conflicts keeping the "
                             "intent of both sides, make the tests pass, commit and push."))
            await self._finish_job(job, "Conflicted", "FixerCreated", f"conflicts in {what}; fixer task {fixer}",
                                   result="Conflicted", files=files)
            await asyncio.to_thread(self.engine.kube.event, job, "Warning", "FixerCreated",
                                    f"conflicts in {what}: created fixer task {fixer}")

    async def _requeue_conflicted(self, url: str) -> None:
        """The target moved: conflicted jobs with retries left get another try."""
        for job in list(self.engine.merge_jobs.values()):
            build = self.build_of_job(job)
            if _phase(job) != "Conflicted" or build is None or self.repo_url(build) != url:
                continue
            if (cond.find((job.get("status") or {}).get("conditions"), cond.READY) or {}).get("status") == cond.TRUE:
                continue  # terminal: handed to a fixer or out of retries
            await self._patch_job(job, {"phase": "Queued"},
                                  condition=(cond.QUEUED, cond.TRUE, "Queued", "the target moved: trying again"))

    async def requeue_unmerged(self, build_key: Key) -> int:
        """Finalization: give every unmerged, non-superseded job of the build another try."""
        n = 0
        for job in self.jobs_of(build_key):
            if _phase(job) in ("Conflicted", "Failed") and not self.superseded(job):
                reason = (cond.find((job.get("status") or {}).get("conditions"), cond.READY) or {}).get("reason")
                if reason == "FixerCreated" and (job["metadata"]["namespace"], self.fixer_name(job)) in \
                        self.engine.merge_jobs:
                    continue  # its fixer's job carries it
                await self._patch_job(job, {"phase": "Queued"},
                                      condition=(cond.QUEUED, cond.TRUE, "Queued", "finalization retries it"))
                n += 1
        return n

    async def _error(self, job: dict[str, Any], message: str) -> None:
        attempts = (job.get("status") or {}).get("attempts") or []
        errors = 1 + sum(1 for a in attempts if a.get("result") == "Error")
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        if errors >= ERROR_RETRIES:
            await self._finish_job(job, "Failed", "Error", f"{message}; gave up after {errors} tries", result="Error")
        else:
            self.not_before[key] = _now() + timedelta(seconds=5 * 2 ** errors)
            await self._patch_job(job, {"attempts": [*attempts, {"time": cond.rfc3339(_now()), "result": "Error",
                                                                 "message": message[:4096]}][-50:]})

    async def _finish_job(self, job: dict[str, Any], phase: str, reason: str, message: str, *, result: str,
                          merged_commit: str | None = None, files: list[str] | None = None,
                          terminal: bool = True) -> None:
        status = job.get("status") or {}
        attempts = [*(status.get("attempts") or []), {"time": cond.rfc3339(_now()), "result": result,
                                                     "message": message[:4096]}][-50:]
        patch: dict[str, Any] = {"phase": phase, "attempts": attempts, "queuePosition": None}
        if merged_commit:
            patch["mergedCommit"] = merged_commit
        if files is not None:
            patch["conflictingFiles"] = files[:10_000]
        now = _now()
        gen = job["metadata"].get("generation")
        conds = list(status.get("conditions") or [])
        sets = [(cond.QUEUED, cond.FALSE, reason, message),
                (cond.MERGED, cond.TRUE if phase == "Merged" else cond.FALSE, reason, message),
                (cond.CONFLICTED, cond.TRUE if phase == "Conflicted" else cond.FALSE, reason, message),
                (cond.READY, cond.TRUE if terminal else cond.FALSE, reason, message)]
        if reason == "GatesFailed":
            sets.append((cond.GATES_PASSED, cond.FALSE, reason, message))
        elif phase == "Merged":
            sets.append((cond.GATES_PASSED, cond.TRUE, reason, "secret scan and quality gates passed"))
        for t, st, r, m in sets:
            conds, _ = cond.set_condition(conds, t, st, r, m, now=now, observed_generation=gen)
        patch["conditions"] = conds
        await self._patch_job(job, patch)
        await asyncio.to_thread(self.engine.kube.event, job, "Normal" if phase == "Merged" else "Warning", reason,
                                message)
        self.engine.dirty_builds.add((job["metadata"]["namespace"], job["spec"]["buildRef"]["name"]))
        self.engine.wake.set()

    async def _patch_job(self, job: dict[str, Any], patch: dict[str, Any],
                         condition: tuple[str, str, str, str] | None = None) -> None:
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        if condition is not None:
            conds, _ = cond.set_condition((job.get("status") or {}).get("conditions"), *condition, now=_now(),
                                          observed_generation=job["metadata"].get("generation"))
            patch = {**patch, "conditions": conds}
        updated = await asyncio.to_thread(self.engine.kube.patch_status, "MergeJob", ns, name, patch)
        if updated is not None:
            self.engine.merge_jobs[(ns, name)] = kube.slim(updated)

    async def _create_task(self, build: Mapping[str, Any], name: str, *, role: str, description: str,
                           branch: str | None = None, scope: list[str] | None = None, priority: int = 5,
                           purpose_: str | None = None, test_command: str | None = None) -> None:
        ref = plan.BuildRef.from_resource(build)
        labels = plan.task_labels(ref.name, role)
        annotations = {}
        if purpose_:
            labels[PURPOSE_LABEL] = purpose_
        if test_command:
            annotations[pods.TEST_COMMAND_ANNOTATION] = test_command
        spec: dict[str, Any] = {"buildRef": {"name": ref.name}, "description": description, "role": role,
                                "priority": priority, "scope": scope or []}
        if branch:
            spec["branch"] = branch
        manifest = {
            "apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": name, "namespace": ref.namespace, "labels": labels, "annotations": annotations,
                         "ownerReferences": [ref.owner_reference()]},
            "spec": spec,
        }
        created = await asyncio.to_thread(self.engine.kube.create, manifest)
        if created is not None:
            self.engine.observe("AgentTask", "ADDED", created)

    # --- sweeps and finalization (per build, from the engine's build reconcile) ------------------------------

    def _sweeps(self, key: Key) -> list[dict[str, Any]]:
        return sorted((t for t in self.engine.build_tasks(key) if purpose(t) in (SWEEP, FINAL)),
                      key=lambda t: t["metadata"].get("creationTimestamp") or "")

    def last_sweep(self, key: Key) -> dict[str, Any] | None:
        for t in reversed(self._sweeps(key)):
            phase = _phase(t)
            if phase not in ("Succeeded", "Failed", "Cancelled"):
                continue
            verdict = ((t.get("status") or {}).get("handoff") or {}).get("verdict")
            passed = phase == "Succeeded" and verdict == "passed"
            ended = ((t.get("status") or {}).get("attempts") or [{}])[-1].get("endTime")
            return {"result": "Passed" if passed else "Failed", "time": ended,
                    "message": None if passed else ("; ".join(self._reasons(t)) or f"sweep {phase}")[-4096:],
                    "task": t["metadata"]["name"]}
        return None

    async def build_step(self, key: Key, build: dict[str, Any], state: builds.BuildState
                         ) -> tuple[list[Any], dict[str, Any]]:
        """Decider events and status fields for the build's sweeps and finalization."""
        spec, status = build.get("spec") or {}, build.get("status") or {}
        events: list[Any] = []
        extra: dict[str, Any] = {}
        jobs = self.jobs_of(key)
        last = self.last_sweep(key)
        if last is not None:
            extra["lastSweep"] = {k: v for k, v in last.items() if k != "task"}
            if (status.get("lastSweep") or {}).get("time") != last.get("time"):
                metrics.SWEEPS.labels(result="Passed" if last["result"] == "Passed" else "TestsFailed").inc()
        merged = sum(1 for j in jobs if _phase(j) == "Merged")
        if state.phase == builds.WORKING and not (state.suspended or state.halted):
            await self._periodic_sweep(key, build, merged, last)
        if state.phase == builds.FINALIZING and (spec.get("finalization") or {}).get("enabled", True):
            events.extend(await self._finalize(key, build, jobs, extra))
        return events, extra

    async def _periodic_sweep(self, key: Key, build: Mapping[str, Any], merged: int,
                              last: Mapping[str, Any] | None) -> None:
        rec = (build.get("spec") or {}).get("reconciler") or {}
        if not rec.get("enabled", True) or merged == 0:
            return
        sweeps = [t for t in self._sweeps(key) if purpose(t) == SWEEP]
        if any(_phase(t) not in ("Succeeded", "Failed", "Cancelled") for t in sweeps):
            return  # one at a time
        at_last = int(((sweeps[-1]["metadata"].get("annotations") or {}).get(MERGED_COUNT_ANNOTATION, 0))
                      if sweeps else 0)
        if sweeps and merged <= at_last:
            return  # nothing new on the target since the last sweep
        interval = int(rec.get("intervalSeconds", 300))
        if last is not None and last["result"] == "Failed":
            interval = max(30, interval // 4)  # failing: look again sooner
        if last is not None and last.get("time"):
            ended = datetime.fromisoformat(last["time"].replace("Z", "+00:00"))
            if _now() < ended + timedelta(seconds=interval):
                self.engine.schedule_build(ended + timedelta(seconds=interval), key)
                return
        n = len(sweeps) + 1
        await self._sweep_task(build, names.child_name(key[1], f"sweep-{n}"), SWEEP, merged)
        if last is not None and last["result"] == "Failed" and sweeps:
            await self._sweep_fixer(key, build, sweeps[-1], last)

    async def _sweep_task(self, build: Mapping[str, Any], name: str, kind: str, merged: int) -> None:
        spec = build.get("spec") or {}
        command = (spec.get("reconciler") or {}).get("command", "make test")
        base = (spec.get("repository") or {}).get("baseBranch", "main")
        await self._create_task(build, name, role="tester", purpose_=kind, branch=base, priority=9,
                                test_command=command,
                                description=f"Sweep: run `{command}` on {base} and report whether it passes.")
        task = self.engine.tasks.get((build["metadata"]["namespace"], name))
        if task is not None and MERGED_COUNT_ANNOTATION not in (task["metadata"].get("annotations") or {}):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    self.engine.kube.custom.patch_namespaced_custom_object, "longshot.dev", "v1alpha1",
                    build["metadata"]["namespace"], "agenttasks", name,
                    {"metadata": {"annotations": {MERGED_COUNT_ANNOTATION: str(merged)}}})

    async def _sweep_fixer(self, key: Key, build: Mapping[str, Any], sweep: Mapping[str, Any],
                           last: Mapping[str, Any]) -> bool:
        spec = build.get("spec") or {}
        per_sweep = int((spec.get("reconciler") or {}).get("maxFixersPerSweep", 3))
        limit = int((spec.get("merge") or {}).get("maxFixers", 5))
        fixers = sum(1 for t in self.engine.build_tasks(key) if (t.get("spec") or {}).get("role") == "fixer")
        if per_sweep < 1 or fixers >= limit:
            return False
        name = names.child_name(sweep["metadata"]["name"], "fix")
        if (key[0], name) in self.engine.tasks:
            return False
        base = (spec.get("repository") or {}).get("baseBranch", "main")
        await self._create_task(
            build, name, role="fixer", branch=f"longshot/{key[1]}/{name}", priority=9,
            description=(f"`{(spec.get('reconciler') or {}).get('command', 'make test')}` fails on {base}:\n"
                         f"{last.get('message') or ''}\nFind the cause and fix it on your branch."))
        return True

    async def _finalize(self, key: Key, build: dict[str, Any], jobs: list[dict[str, Any]],
                        extra: dict[str, Any]) -> list[Any]:
        spec, status = build.get("spec") or {}, build.get("status") or {}
        max_attempts = int((spec.get("finalization") or {}).get("maxAttempts", 3))
        attempt = int(status.get("finalizationAttempts", 0))
        if attempt == 0:
            attempt = 1
            extra["finalizationAttempts"] = 1
            metrics.FINALIZATION_ATTEMPTS.inc()
            await self.requeue_unmerged(key)
            return [builds.FinalizationStarted(1, max_attempts)]
        if any(_phase(j) in (None, "Queued") for j in jobs):
            return []  # draining
        final_name = names.child_name(key[1], f"final-{attempt}")
        final = self.engine.tasks.get((key[0], final_name))
        merged = sum(1 for j in jobs if _phase(j) == "Merged")
        if final is None:
            await self._sweep_task(build, final_name, FINAL, merged)
            return []
        phase = _phase(final)
        if phase not in ("Succeeded", "Failed", "Cancelled"):
            return []
        verdict = ((final.get("status") or {}).get("handoff") or {}).get("verdict")
        passed = phase == "Succeeded" and verdict == "passed"
        unmerged = [j["metadata"]["name"] for j in jobs if not self.delivered(j)
                    and (cond.find((j.get("status") or {}).get("conditions"), cond.READY) or {}).get("reason")
                    != "FixerCreated"]
        if passed and not unmerged:
            metrics.FINALIZATIONS.labels(outcome="Passed").inc()
            return [builds.FinalizationFinished(True, "Passed", "", attempt)]
        if not passed:
            reason = "TestsFailed"
            message = "the final sweep failed: " + ("; ".join(self._reasons(final)) or f"verdict {verdict or phase}")
        else:
            reason = "UnmergedBranches"
            message = "not merged: " + ", ".join(unmerged[:20])
        if attempt >= max_attempts:
            metrics.FINALIZATIONS.labels(outcome=reason).inc()
            return [builds.FinalizationFinished(False, reason, message, attempt)]
        extra["finalizationAttempts"] = attempt + 1
        metrics.FINALIZATION_ATTEMPTS.inc()
        await self.requeue_unmerged(key)
        if not passed:
            last = self.last_sweep(key) or {}
            await self._sweep_fixer(key, build, final, last)
        return [builds.FinalizationStarted(attempt + 1, max_attempts)]
