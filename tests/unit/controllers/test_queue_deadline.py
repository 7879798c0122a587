"""A tenant's slow git server can neither block the event loop nor wedge a queue reconcile: the queue's git work runs
in a worker thread under a deadline (``queue.git``), and a reconcile whose git runs past it requeues its key."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from fake_kube import Clock, FakeKube, build
from longshot import config
from longshot.controllers import cache as cachemod
from longshot.controllers import executor as ex
from longshot.controllers import manager as managermod
from longshot.controllers import queue as mqc
from longshot.controllers.queue import git as qgit

pytestmark = pytest.mark.unit


def test_every_git_action_s_deadline_is_well_under_the_queue_controller_s_stall_limit() -> None:
    assert managermod.STALLS["Queue"] >= qgit.GIT_DEADLINE_SECONDS * 2  # room for two actions in one reconcile
    assert qgit.scan_deadline(None) == qgit.GIT_DEADLINE_SECONDS
    assert qgit.scan_deadline(90.0) == qgit.GIT_DEADLINE_SECONDS  # the default scan timeout fits
    assert qgit.scan_deadline(200.0) == 200.0 + qgit.SCAN_MARGIN_SECONDS  # a scan reaches its own verdict


async def test_a_queue_reconcile_whose_git_runs_past_its_deadline_requeues(monkeypatch, tmp_path) -> None:
    fake, clock = FakeKube(), Clock()
    m = managermod.Manager(fake, config.Settings(namespace="ops", metrics_port=0, workspace_dir=str(tmp_path)),
                           clock=clock, rand=lambda: 0.5, monotonic=lambda: 0.0)
    fake.create(build(repository={"url": "file:///nowhere.git"}))
    fake.create({"apiVersion": "longshot.dev/v1alpha1", "kind": "MergeJob",
                 "metadata": {"name": "b-p0", "namespace": "ns", "labels": {"longshot.dev/build": "b"}},
                 "spec": {"buildRef": {"name": "b"}, "taskRef": {"name": "b-p0"}, "branch": "longshot/ns/b/b-p0",
                          "commit": "a" * 40, "target": "main", "strategy": "rebase"}})
    fake.patch_status("MergeJob", "ns", "b-p0", {"phase": "Queued", "checks": "passed"})
    for (kind, _, _), obj in list(fake.objects.items()):
        m.observe(kind, "MODIFIED", obj)
    queue = cachemod.queue_name(m.cache.builds[("ns", "b")], "main")
    release = threading.Event()
    reads: list[str] = []

    def slow_head(w: object, target: str) -> str:  # a git server that answers only once released
        reads.append(target)
        release.wait(30)
        return "0" * 40

    monkeypatch.setattr(qgit, "GIT_DEADLINE_SECONDS", 0.05)
    monkeypatch.setattr(qgit.speculate, "head_of", slow_head)
    try:
        actions = await m.reconcilers["Queue"]("", queue)
    finally:
        release.set()
    assert reads == ["main"]
    assert actions == [ex.Requeue(("Queue", "", queue), clock.now + timedelta(seconds=mqc.DEADLINE_BACKOFF_SECONDS))]
