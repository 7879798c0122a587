"""Delegation through the shell (``controllers.delegating``): the build's reconcile decides what to create and
enqueues the parent; the task reconciler, the one writer of an AgentTask's status, writes ``status.children``."""

from __future__ import annotations

from typing import Any

import pytest

from fake_kube import Clock, FakeKube, build
from longshot import config
from longshot.controllers import executor as ex
from longshot.controllers import manager as managermod
from longshot.core import cleanup

pytestmark = pytest.mark.unit


def parent(requests: list[dict[str, Any]], phase: str = "Running") -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
            "metadata": {"name": "b-w", "namespace": "ns", "labels": {"longshot.dev/build": "b"}},
            "spec": {"buildRef": {"name": "b"}, "description": "work", "role": "worker"},
            "status": {"phase": phase, "attempts": [{"number": 1, "pod": "b-w-a1"}],
                       "delegation": {"requests": requests}}}


def wired(spec: dict[str, Any], task: dict[str, Any]) -> tuple[FakeKube, managermod.Manager]:
    fake = FakeKube()
    m = managermod.Manager(fake, config.Settings(namespace="ops", metrics_port=0), clock=Clock(), rand=lambda: 0.5,
                           monotonic=lambda: 0.0)
    m.ctx.preflight = lambda k, b: None
    b = build(**spec)
    b["metadata"]["finalizers"] = [cleanup.FINALIZER]  # past the clean-up's first reconcile
    fake.create(b)
    fake.create(task)
    with_status = fake.patch_status("AgentTask", "ns", "b-w", task["status"])  # a create drops the status
    for obj in (fake.get("BuildRequest", "ns", "b"), with_status):
        assert obj is not None
        m.observe(obj["kind"], "ADDED", obj)
    return fake, m


def task_writes(actions: list[ex.Action]) -> list[ex.WriteStatus]:
    return [a for a in actions if isinstance(a, ex.WriteStatus) and a.kind == "AgentTask"]


async def test_a_refused_spawn_is_written_by_the_task_reconciler_which_the_build_enqueues():
    _, m = wired({"delegation": {"enabled": False}}, parent([{"name": "c1", "prompt": "do c1"}]))
    built = await m.builds.reconcile(("ns", "b"))
    assert not task_writes(built)  # the build writes no task's status ...
    assert any(isinstance(a, ex.Requeue) and a.ref == ("AgentTask", "ns", "b-w") for a in built)  # ... it asks
    assert not [a for a in built if isinstance(a, ex.CreateObject) and a.manifest.get("kind") == "AgentTask"
                and a.manifest["metadata"]["name"] == "b-w-c1"]
    (write,) = task_writes(await m.tasks.reconcile(("ns", "b-w")))
    (child,) = write.status["children"]
    assert (child["name"], child["phase"]) == ("c1", "Refused") and "spec.delegation.enabled" in child["reason"]


async def test_an_allowed_spawn_is_created_by_the_build_and_recorded_by_its_parents_reconcile():
    _, m = wired({"delegation": {"enabled": True}}, parent([{"name": "c1", "prompt": "do c1"}]))
    built = await m.builds.reconcile(("ns", "b"))
    assert not task_writes(built)
    created = [a.manifest for a in built if isinstance(a, ex.CreateObject) and a.manifest.get("kind") == "AgentTask"]
    assert [c["metadata"]["name"] for c in created if c["metadata"]["name"].startswith("b-w-")] == ["b-w-c1"]
    (write,) = task_writes(await m.tasks.reconcile(("ns", "b-w")))
    assert [(c["name"], c["task"], c["phase"]) for c in write.status["children"]] == [("c1", "b-w-c1", "Pending")]


async def test_a_parent_whose_children_are_recorded_is_not_enqueued_again():
    task = parent([{"name": "c1", "prompt": "do c1"}])
    task["status"]["children"] = [{"name": "c1", "phase": "Refused", "done": True, "merged": False,
                                   "reason": "delegation is off for this build (spec.delegation.enabled is false)"}]
    _, m = wired({"delegation": {"enabled": False}}, task)
    built = await m.builds.reconcile(("ns", "b"))
    assert not any(isinstance(a, ex.Requeue) and a.ref[0] == "AgentTask" for a in built)
