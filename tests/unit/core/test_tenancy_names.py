"""Ref naming (``core.names``) and tenant keys (``vcs.workspace.tenant_key``, ``controllers.cache.queue_name``):
every ref Longshot writes carries the namespace, and two tenants on one repository never share a queue, a
workspace or a shard."""

from __future__ import annotations

from typing import Any

import pytest

from longshot.api import handoff as ho
from longshot.api import objects
from longshot.controllers import cache as cachemod
from longshot.core import fanout, names
from longshot.gateway import refpolicy
from longshot.runtime import leader, pods
from longshot.vcs import speculate
from longshot.vcs import workspace as vws

pytestmark = pytest.mark.unit

URL = "https://git.example.com/org/app.git"


def build_request(name: str, *, namespace: str, repository: dict[str, Any]) -> objects.BuildRequest:
    return objects.parse({"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
                          "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}",
                                       "resourceVersion": "1", "generation": 1},
                          "spec": {"request": "r", "repository": repository}}, objects.BuildRequest)


def test_the_ref_scheme_carries_the_namespace() -> None:
    assert names.build_branch_prefix("team-a", "api") == "longshot/team-a/api/"
    assert names.task_branch("team-a", "api", "api-models") == "longshot/team-a/api/api-models"
    assert names.queue_branch("team-a", "api", "b7", 2) == "longshot/team-a/api/_queue/b7/2"
    assert names.handoff_ref("team-a", "api", "api-plan", 3) == "refs/longshot/handoffs/team-a/api/api-plan/3"
    assert names.handoff_ref is ho.handoff_ref  # one definition (the agent reads it from the protocol module)
    assert speculate.queue_branch("team-a", "api", "b7", 2) == names.queue_branch("team-a", "api", "b7", 2)
    assert fanout.candidate_branch("team-a", "api", "api-x-c1") == "longshot/team-a/api/api-x-c1"


def test_two_namespaces_never_share_a_ref() -> None:
    a = [names.task_branch("a", "demo", "demo-t"), names.queue_branch("a", "demo", "q", 1),
         names.handoff_ref("a", "demo", "demo-t", 1)]
    b = [names.task_branch("b", "demo", "demo-t"), names.queue_branch("b", "demo", "q", 1),
         names.handoff_ref("b", "demo", "demo-t", 1)]
    assert not set(a) & set(b)
    # nor is one tenant's build prefix a prefix of the other's refs (a namespace "a" and one "a-b")
    assert not names.task_branch("a-b", "demo", "t").startswith(names.build_branch_prefix("a", "demo"))


@pytest.mark.parametrize("args", [("", "b", "t", 1), ("ns", "", "t", 1), ("ns", "b", "", 1), ("ns", "b", "t", 0)])
def test_a_handoff_ref_without_a_namespace_build_task_or_attempt_is_refused(args: tuple[str, str, str, int]) -> None:
    with pytest.raises(ValueError):
        names.handoff_ref(*args)
    with pytest.raises(ValueError):
        names.build_branch_prefix("", "b")


def test_the_longest_names_make_valid_refs() -> None:
    ns, build, task = "n" * 63, "b" * 253, "t" * 253
    for ref in ("refs/heads/" + names.task_branch(ns, build, task),
                "refs/heads/" + names.queue_branch(ns, build, "x" * 63, 64),
                names.handoff_ref(ns, build, task, 99)):
        assert refpolicy.valid_ref(ref), ref
        assert all(len(part) <= 255 for part in ref.split("/"))


def test_the_gateway_lets_an_attempt_write_exactly_the_refs_the_operator_names() -> None:
    policy = refpolicy.RefPolicy(namespace="ns", build="demo", task="demo-t", attempt=2, role="worker",
                                 branch=names.task_branch("ns", "demo", "demo-t"))
    assert policy.allowed == ("refs/heads/" + names.task_branch("ns", "demo", "demo-t"),
                              names.handoff_ref("ns", "demo", "demo-t", 2))


def test_an_agent_is_told_the_namespaced_branch_of_its_task() -> None:
    task = {"metadata": {"name": "demo-t", "namespace": "team-a"}, "spec": {"role": "worker"}}
    build = {"metadata": {"name": "demo", "namespace": "team-a"},
             "spec": {"repository": {"url": URL}, "agent": {"backend": "scripted"}}}
    assert pods.task_input(task, build, attempt=1).branch == "longshot/team-a/demo/demo-t"


def test_candidates_get_namespaced_branches() -> None:
    task = {"metadata": {"name": "demo-t", "namespace": "team-a", "uid": "u"}, "spec": {"role": "worker"}}
    manifests = fanout.candidate_manifests(task, "demo", 1, fanout.Settings(count=2), None, {})
    assert {m["spec"]["branch"] for m in manifests} == {
        names.task_branch("team-a", "demo", m["metadata"]["name"]) for m in manifests}
    judge = fanout.judge_manifest(task, "demo", 1, [m["metadata"]["name"] for m in manifests], {})
    assert judge["spec"]["branch"] == "longshot/team-a/demo/demo-t"


# --- tenant keys ---------------------------------------------------------------------------------------


def test_a_tenant_key_is_the_namespace_the_secret_and_the_repository() -> None:
    key = vws.tenant_key("a", "git-a", URL)
    assert key == vws.tenant_key("a", "git-a", "https://Git.Example.com/org/app/")  # one repository
    assert len({key, vws.tenant_key("b", "git-a", URL), vws.tenant_key("a", "git-b", URL),
                vws.tenant_key("a", None, URL), vws.tenant_key("a", "git-a", URL + "2")}) == 5
    assert leader.lease_name_for("a", "git-a", URL) == leader.shard_lease_name(key)


def test_two_tenants_on_one_repository_and_target_have_two_queues_and_two_shards() -> None:
    a = build_request("demo", namespace="a", repository={"url": URL, "credentialsSecret": "git-a"})
    b = build_request("demo", namespace="b", repository={"url": URL, "credentialsSecret": "git-b"})
    a2 = build_request("other", namespace="a", repository={"url": URL, "credentialsSecret": "git-a"})
    assert cachemod.queue_name(a, "main") != cachemod.queue_name(b, "main")
    assert cachemod.shard_key(a) != cachemod.shard_key(b)
    assert cachemod.queue_name(a, "main") == cachemod.queue_name(a2, "main")  # one tenant's builds share one


def test_workspaces_of_two_tenants_are_two_directories(tmp_path: Any) -> None:
    wa = vws.Workspace(URL, tmp_path, key=vws.tenant_key("a", "git-a", URL))
    wb = vws.Workspace(URL, tmp_path, key=vws.tenant_key("b", "git-b", URL))
    assert wa.path != wb.path and wa.private_dir != wb.private_dir  # ssh key files included
