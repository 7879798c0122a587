"""The Pod UID of an attempt is recorded by the status write that follows the Pod's creation (no extra write);
a Pod that existed already is not recorded from there; a repository URL's userinfo never reaches the Pod."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from fake_kube import FakeKube
from longshot.api import handoff as ho
from longshot.config import Settings
from longshot.controllers import cache as cachemod
from longshot.controllers import executor as ex
from longshot.controllers import workqueue
from longshot.runtime import pods

pytestmark = pytest.mark.unit


def clock() -> datetime:
    return datetime(2025, 1, 1, tzinfo=UTC)


def pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"}, "spec": {}}


def task_obj(fake: FakeKube) -> None:
    fake.create({"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
                 "metadata": {"name": "t", "namespace": "ns"}, "spec": {"buildRef": {"name": "b"}}})


async def test_the_created_pods_uid_goes_into_the_attempts_status_write():
    fake = FakeKube()
    task_obj(fake)
    e = ex.Executor(fake, cachemod.Cache(), workqueue.WorkQueue(clock), clock)
    rv = fake.objects[("AgentTask", "ns", "t")]["metadata"]["resourceVersion"]
    await e.run([ex.CreatePod(pod("t-a1")),
                 ex.WriteStatus("AgentTask", "ns", "t", rv, {"attempts": [{"number": 1, "pod": "t-a1"}]})])
    assert fake.objects[("AgentTask", "ns", "t")]["status"]["attempts"] == [
        {"number": 1, "pod": "t-a1", "podUID": "uid-t-a1"}]


async def test_a_pod_that_existed_already_is_not_recorded_by_the_executor():
    fake = FakeKube()
    task_obj(fake)
    fake.create_pod({**pod("t-a1"), "metadata": {"name": "t-a1", "namespace": "ns", "uid": "foreign"}})
    e = ex.Executor(fake, cachemod.Cache(), workqueue.WorkQueue(clock), clock)
    rv = fake.objects[("AgentTask", "ns", "t")]["metadata"]["resourceVersion"]
    await e.run([ex.CreatePod(pod("t-a1")),
                 ex.WriteStatus("AgentTask", "ns", "t", rv, {"attempts": [{"number": 1, "pod": "t-a1"}]})])
    assert fake.objects[("AgentTask", "ns", "t")]["status"]["attempts"] == [{"number": 1, "pod": "t-a1"}]


def test_userinfo_in_the_repository_url_never_reaches_the_pod():
    task = {"metadata": {"name": "b-t", "namespace": "ns", "uid": "u"},
            "spec": {"buildRef": {"name": "b"}, "description": "d", "role": "reviewer", "commit": "a" * 40}}
    build = {"metadata": {"name": "b", "namespace": "ns"},
             "spec": {"repository": {"url": "https://bot:ghp_s3cret@git.example.com/o/r.git"}}}
    manifest = pods.build_agent_pod(task, build, Settings(identity="t"), 1)
    assert "s3cret" not in json.dumps(manifest)
    ti = json.loads(manifest["metadata"]["annotations"][ho.TASK_INPUT_ANNOTATION])
    assert (ti["repositoryUrl"], ti["commit"]) == ("https://git.example.com/o/r.git", "a" * 40)
