"""The team's CI as the queue's gate (``spec.merge.gate.by``: ``ci`` or ``both``): the batch step asks for a prefix
(``core.mergequeue.StartProbes``: :meth:`CiGate.start`), the CI runs on the queue branch the prefix was published to,
and each batch reconcile reads the required checks of the asked commits that are still pending
(:meth:`CiGate.read`: ``runtime.forge``'s ``checks``, at most every ``pollSeconds``), decided by ``core.cigate``.
A verdict becomes the prefix's probe (:meth:`CiGate.probes`) or, timed out or missing, breaks the batch's gate
(:meth:`CiGate.broken`). What was asked and read is in the queue's memory (``Memory.ci_started``, ``ci_read``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from longshot.api import objects
from longshot.controllers import context as ctxmod
from longshot.core import cigate, manifests
from longshot.core import mergequeue as q
from longshot.runtime import forge as rforge
from longshot.runtime import trackers as tr

from .memory import Memory

log = logging.getLogger("longshot.mergequeue")

Pair = tuple[objects.MergeJob, objects.BuildRequest]
TIMEOUT: Final = 15.0
"""Seconds one forge request may take (connect, each read)."""
MAX_WAIT: Final = 2.0
"""Longest rate-limit wait slept through in a read; a longer one is read again at the next poll."""
FINAL: Final = ("passed", "failed", "broken")


def by(build: objects.BuildRequest) -> str:
    """Who gates the build's candidates: ``tester``, ``ci`` or ``both``."""
    return build.spec.merge.gate.by


def label(build: objects.BuildRequest) -> str:
    """What a culprit broke, for its fixer and its conditions: the gate's command, the required checks, or both."""
    checks = "the required CI checks " + ", ".join(build.spec.merge.gate.checks)
    command = manifests.gate_command(build)
    if by(build) == "ci":
        return checks
    if by(build) == "both":
        return f"{command} and {checks}" if command else checks
    return command or "(no command)"


class CiGate:
    def __init__(self, ctx: ctxmod.Context, memory: Memory) -> None:
        self.ctx = ctx
        self.memory = memory

    def start(self, batch_id: str, positions: Sequence[int], now: datetime) -> None:
        """The queue asks the CI for these prefixes (their queue branches are pushed): their timeouts start."""
        for pos in positions:
            self.memory.ci_started.setdefault((batch_id, pos), now)

    async def read(self, rest: Sequence[Pair], now: datetime) -> datetime | None:
        """Read the required checks of every asked, undecided prefix of the CI-gated batches in ``rest`` whose last
        read is ``pollSeconds`` old; forget the batches gone. When to read again (None: nothing pending)."""
        batches: dict[str, tuple[objects.BuildRequest, dict[int, str]]] = {}
        for job, build in rest:
            b = job.status.batch
            if b is not None and by(build) != "tester":
                batches.setdefault(b.id, (build, {}))[1][b.position] = b.commit
        self.memory.forget_ci(set(batches))
        again: datetime | None = None
        for batch_id, (build, commits) in batches.items():
            gate = build.spec.merge.gate
            due = [(pos, commit) for pos, commit in sorted(commits.items())
                   if (batch_id, pos) in self.memory.ci_started and self._due(batch_id, pos, now, gate.poll_seconds)]
            if due:
                await self._read(build, batch_id, due, now)
            pending = [k for k in self.memory.ci_started if k[0] == batch_id
                       and (k not in self.memory.ci_read or self.memory.ci_read[k][1].state not in FINAL)]
            if pending:
                at = now + timedelta(seconds=gate.poll_seconds)
                again = at if again is None or at < again else again
        return again

    def _due(self, batch_id: str, pos: int, now: datetime, poll: int) -> bool:
        last = self.memory.ci_read.get((batch_id, pos))
        return last is None or (last[1].state not in FINAL and (now - last[0]).total_seconds() >= poll)

    async def _read(self, build: objects.BuildRequest, batch_id: str, due: Sequence[tuple[int, str]],
                    now: datetime) -> None:
        gate = build.spec.merge.gate
        settings = build.spec.merge.pull_request
        if settings is None:  # the CRD refuses it; an object stored before the rule is told how to fix it
            self._all(batch_id, due, now, cigate.Verdict(
                "broken", "missing", message="spec.merge.gate.by is ci but spec.merge.pullRequest (the forge whose "
                                             "checks gate) is not set: set its provider, project and tokenSecretRef"))
            return
        ref = settings.token_secret_ref
        try:
            data = await asyncio.to_thread(self.ctx.kube.get_secret, build.namespace, ref.name)
        except Exception as e:  # read again at the next poll; the timeout bounds the wait
            log.info("queue CI gate of %s/%s: the forge token could not be read: %s", build.namespace, build.name,
                     type(e).__name__)
            return
        token = (data or {}).get(ref.key)
        if not token:
            self._all(batch_id, due, now, cigate.Verdict(
                "broken", "missing", message=f"spec.merge.pullRequest.tokenSecretRef: Secret {ref.name!r} in namespace "
                                             f"{build.namespace} has no key {ref.key!r}; add the forge token there"))
            return
        required = tuple(gate.checks)
        try:
            async with self.ctx.lanes.lane(build.namespace):
                reports = await asyncio.to_thread(self._reports, settings, token, due, required)
        except tr.ConfigurationError as e:
            self._all(batch_id, due, now, cigate.Verdict("broken", "missing", message=str(e)[:1000]))
            return
        except (rforge.ForgeError, rforge.RateLimited) as e:  # read again at the next poll; the timeout bounds it
            log.info("queue CI gate of %s/%s: %s", build.namespace, build.name, str(e)[:500])
            reports = {}
        for pos, _ in due:
            if pos not in reports:
                continue
            waited = (now - self.memory.ci_started[(batch_id, pos)]).total_seconds()
            self.memory.ci_read[(batch_id, pos)] = (now, cigate.verdict(required, reports[pos], waited,
                                                                        gate.timeout_seconds))
        for pos, _ in due:  # unreadable past the timeout: every required check is as good as missing
            waited = (now - self.memory.ci_started[(batch_id, pos)]).total_seconds()
            if pos not in reports and waited >= gate.timeout_seconds:
                self.memory.ci_read[(batch_id, pos)] = (now, cigate.verdict(required, (), waited,
                                                                            gate.timeout_seconds))

    def _reports(self, settings: object, token: str, due: Sequence[tuple[int, str]],
                 required: tuple[str, ...]) -> dict[int, list[cigate.Report]]:
        out: dict[int, list[cigate.Report]] = {}
        with rforge.make_forge(settings, token, egress=self.ctx.egress, timeout=TIMEOUT,  # type: ignore[arg-type]
                               max_wait=MAX_WAIT) as f:
            for pos, commit in due:
                out[pos] = f.checks(commit, required)
        return out

    def _all(self, batch_id: str, due: Sequence[tuple[int, str]], now: datetime, v: cigate.Verdict) -> None:
        for pos, _ in due:
            self.memory.ci_read[(batch_id, pos)] = (now, v)

    # --- what the batch step gives the pure queue --------------------------------------------------

    def probes(self, batch_id: str, build: objects.BuildRequest, tester: Sequence[q.Probe]) -> list[q.Probe]:
        """The probes of a CI-gated batch: one per asked prefix, from the CI's verdict (``ci``), or joined with the
        tester's (``both``: ``core.cigate.join``; ``tester`` are the batch's gate tasks' probes)."""
        testers = {p.position: p for p in tester}
        out: list[q.Probe] = []
        for (b, pos), _ in sorted(self.memory.ci_started.items()):
            if b != batch_id:
                continue
            read = self.memory.ci_read.get((b, pos))
            v = read[1] if read is not None else cigate.Verdict("pending", "pending")
            t = testers.get(pos)
            if by(build) == "both":
                state = cigate.join(t.state if t is not None else "running", v)
                output = t.output if t is not None and t.state == "failed" else v.message
            else:
                state, output = v.state, v.message
            if state in ("passed", "failed"):
                out.append(q.Probe(pos, "passed" if state == "passed" else "failed", output[-4000:], batch_id))
            elif state == "pending":
                out.append(q.Probe(pos, "running", "", batch_id))
        return out

    def broken(self, batch_id: str) -> list[str]:
        """Why the CI gate of a batch broke (a required check timed out or never reported), one line a prefix."""
        return [f"the CI gate of prefix {pos}: {v.message}" for (b, pos), (_, v) in sorted(self.memory.ci_read.items())
                if b == batch_id and v.state == "broken"]
