"""The shell's cache: a watch event echoing our own write concerns nothing, derived views follow our own writes,
and it keeps what decisions need without holding equal parts once per object."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fake_kube import FakeKube

from longshot import config
from longshot.controllers import cache as cachemod
from longshot.controllers import context as ctxmod
from longshot.controllers import workqueue

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def build() -> dict[str, Any]:
    return {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
            "metadata": {"name": "b", "namespace": "ns", "uid": "uid-b", "resourceVersion": "1", "generation": 1},
            "spec": {"request": "r", "repository": {"url": "https://git.example/r.git"}}}


def task(name: str, rv: str, phase: str | None = None, depends_on: tuple[str, ...] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": rv, "generation": 1,
                     "labels": {"longshot.dev/build": "b"}},
        "spec": {"buildRef": {"name": "b"}, "description": f"do {name}", "role": "reviewer",
                 "dependsOn": list(depends_on)}}
    if phase:
        body["status"] = {"phase": phase, "conditions": [
            {"type": "Ready", "status": "False", "reason": "Pending", "message": "", "lastTransitionTime":
             "2025-01-01T00:00:00Z"}]}
    return body


def context() -> ctxmod.Context:
    clock = lambda: NOW  # noqa: E731
    return ctxmod.Context(cache=cachemod.Cache(), kube=FakeKube(), settings=config.Settings(metrics_port=0),
                          queue=workqueue.WorkQueue(clock), clock=clock)


def test_the_watch_event_of_our_own_write_concerns_nothing_and_a_newer_version_does():
    c = cachemod.Cache()
    c.observe("BuildRequest", "ADDED", build())
    assert c.observe("AgentTask", "ADDED", task("a", "5"))
    assert c.written("AgentTask", task("a", "6", "Pending"), based_on="5")
    assert c.observe("AgentTask", "MODIFIED", task("a", "6", "Pending")) == []  # the echo of our write
    assert c.observe("AgentTask", "MODIFIED", task("a", "5")) == []  # older than what we wrote
    assert c.tasks[("ns", "a")].status.phase == "Pending"
    refs = c.observe("AgentTask", "MODIFIED", task("a", "7", "Running"))
    assert ("AgentTask", "ns", "a") in refs and c.tasks[("ns", "a")].status.phase == "Running"


def test_derived_views_of_a_build_follow_our_own_writes_without_a_watch_event():
    ctx = context()
    ctx.cache.observe("BuildRequest", "ADDED", build())
    ctx.cache.observe("AgentTask", "ADDED", task("a", "2", "Running"))
    ctx.cache.observe("AgentTask", "ADDED", task("c", "3", "Pending", depends_on=("a",)))
    b = ctx.cache.builds[("ns", "b")]
    c = ctx.cache.tasks[("ns", "c")]
    assert ctx.readiness(c, b)[0] == "waiting"
    ctx.cache.written("AgentTask", task("a", "4", "Succeeded"), based_on="2")  # our status write; no event yet
    assert ctx.readiness(c, b)[0] == "ready"
