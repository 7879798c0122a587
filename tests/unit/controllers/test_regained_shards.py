"""A replica that gets its shards back marks every object again (``Manager._leadership_changed``). Events of the
shard's objects that arrived while it did not hold the shard were dropped (it did not own them), so that mark is
what reconciles them. ``make bench-fleet`` (an API server starved of CPU: the member Lease flapped for two minutes)
left 24 gate tasks Running for minutes after their Pods ended, and the merge queue waiting for them: they were
marked low, behind 10,000 worker tasks and every new event. A gate, review, sweep or final task that has not
finished now goes ahead of all others there too; a finished one stays in the low tier."""

from __future__ import annotations

import pytest

from fake_kube import Clock, FakeKube, build
from longshot import config
from longshot.api import keys
from longshot.controllers import manager as managermod

pytestmark = pytest.mark.unit


def task(fake: FakeKube, name: str, phase: str, purpose: str | None = None) -> None:
    labels = {"longshot.dev/build": "b", **({keys.PURPOSE: purpose} if purpose else {})}
    fake.create({"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
                 "metadata": {"name": name, "namespace": "ns", "labels": labels},
                 "spec": {"buildRef": {"name": "b"}, "description": "d", "role": "tester" if purpose else "worker"}})
    fake.patch_status("AgentTask", "ns", name, {"phase": phase})


def test_a_regained_shard_s_running_gate_is_reconciled_before_the_resync_of_every_task():
    fake, clock = FakeKube(), Clock()
    m = managermod.Manager(fake, config.Settings(namespace="ops", metrics_port=0), clock=clock, rand=lambda: 0.5,
                           monotonic=lambda: 0.0)
    fake.create(build())
    task(fake, "b-gate-old", "Succeeded", "gate")
    for i in range(200):
        task(fake, f"b-t{i:03d}", "Running")
    task(fake, "b-gate-9", "Running", "gate")
    task(fake, "b-review-1", "Pending", "review")
    for (kind, _, _), obj in list(fake.objects.items()):
        m.observe(kind, "MODIFIED", obj)
    q = m.queue.by_kind["AgentTask"]
    q.take(len(q))  # what the events marked, reconciled
    for ref in list(q._processing):
        q.done(ref)
    q.add(("AgentTask", "ns", "b-t007"))  # an event meanwhile
    m._leadership_changed()
    order = [r[2] for r in q.take(len(q))]
    assert order[:3] == ["b-gate-9", "b-review-1", "b-t007"]
    assert "b-gate-old" in order[3:] and len(order) == 203  # finished: low, with the rest
