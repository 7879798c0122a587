"""Which finished agent Pods of a build are deleted (``spec.retention``).

An agent Pod is needed until its AgentTask has recorded the attempt: the task reconciler reads the Pod's
termination message (the handoff) and exit status, and writes them into ``status.attempts`` and
``status.handoff``. After that the Pod is only useful to a person reading its logs, so a build keeps the
``finished_pods`` most recently finished ones and deletes the rest. Without this a 10,000-task build leaves
10,000 finished Pods (20,000 with gates) in etcd and in every Pod watch.

Two exceptions keep a Pod whatever the limit:

* its attempt is not recorded yet (the end time is missing from the task's status): the task reconciler still
  has to read it;
* it is a planner's Pod whose plan has not been taken in: after a restart the build reconciler reads the plan
  again from that Pod's termination message.

Pure: the shell (``controllers/retention.py``) gathers the facts and deletes what this returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from longshot.api import timeutil


@dataclass(frozen=True, slots=True)
class FinishedPod:
    """An agent Pod of the build that has ended (phase Succeeded or Failed) and is not being deleted."""

    name: str
    finished: datetime | None
    """When its attempt ended, as the task's status records it; None while it is not recorded."""
    planner: bool = False
    """A planner's (or subplanner's) Pod."""
    plan_taken_in: bool = True
    """For a planner's Pod: its plan has become tasks (or was replaced by another planner's)."""
    started: datetime | None = None
    """When its attempt started: the order among Pods that finished within the same second."""

    @property
    def recorded(self) -> bool:
        return self.finished is not None

    @property
    def needed(self) -> bool:
        """The operator may still read it."""
        return not self.recorded or (self.planner and not self.plan_taken_in)


def to_delete(pods: Iterable[FinishedPod], keep: int) -> list[str]:
    """Names of the Pods to delete: every finished Pod that is no longer needed, but for the ``keep`` most
    recently finished of them. Times are whole seconds, so ties go by start, then a planner's Pod counts as the
    older (the tasks it planned ran after it), then by name, so that the answer is the same on every replica."""
    done = sorted((p for p in pods if not p.needed),
                  key=lambda p: (p.finished or timeutil.EPOCH, p.started or timeutil.EPOCH, not p.planner, p.name),
                  reverse=True)
    return sorted(p.name for p in done[max(0, keep):])
