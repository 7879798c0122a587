"""The CRDs on a real kube-apiserver: installed, explained, validating, printing."""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes
import pytest
import yaml

from longshot import api

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = api.GROUP, api.VERSION


def build(name: str = "b1", **spec_patch):
    spec = {"request": "Build a REST API", "repository": {"url": "https://git.example.com/o/r.git"}}
    for path, value in spec_patch.items():
        target = spec
        keys = path.split("__")
        for k in keys[:-1]:
            target = target.setdefault(k, {})
        target[keys[-1]] = value
    return {"apiVersion": api.API_VERSION, "kind": "BuildRequest", "metadata": {"name": name}, "spec": spec}


def task(name: str = "t1", **spec):
    base = {"buildRef": {"name": "b1"}, "description": "Do a thing"}
    base.update(spec)
    return {"apiVersion": api.API_VERSION, "kind": "AgentTask", "metadata": {"name": name}, "spec": base}


def merge_job(name: str = "m1", **spec):
    base = {"buildRef": {"name": "b1"}, "taskRef": {"name": "t1"}, "branch": "longshot/b1/t1", "target": "main"}
    base.update(spec)
    return {"apiVersion": api.API_VERSION, "kind": "MergeJob", "metadata": {"name": name}, "spec": base}


PLURAL = {"BuildRequest": "buildrequests", "AgentTask": "agenttasks", "MergeJob": "mergejobs"}


def create(custom, namespace, obj):
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL[obj["kind"]], obj)


def test_crds_are_established_with_names_and_categories(api_client):
    ext = kubernetes.client.ApiextensionsV1Api(api_client)
    for resource in api.RESOURCES:
        crd = ext.read_custom_resource_definition(resource.crd_name)
        established = {c.type: c.status for c in crd.status.conditions}
        assert established["Established"] == "True"
        assert established["NamesAccepted"] == "True"
        assert list(crd.spec.names.short_names) == list(resource.short_names)
        assert crd.spec.names.categories == ["longshot"]


def test_kubectl_explain_shows_field_descriptions(kubectl):
    out = kubectl("explain", "br.spec.workers.max").stdout
    assert "Most agent Pods of this build running at once" in out
    out = kubectl("explain", "agenttasks.spec.dependsOn").stdout
    assert "must succeed before this one starts" in out


def test_kubectl_get_by_category_lists_all_kinds(kubectl, namespace, custom):
    create(custom, namespace, build())
    create(custom, namespace, task())
    create(custom, namespace, merge_job())
    out = kubectl("get", "longshot", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(out) == ["agenttask.longshot.dev/t1", "buildrequest.longshot.dev/b1", "mergejob.longshot.dev/m1"]


@pytest.mark.parametrize("sample", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_is_accepted(sample, kubectl, namespace):
    result = kubectl("apply", "--validate=strict", "-n", namespace, "-f", str(sample), check=False)
    assert result.returncode == 0, result.stderr
    assert "created" in result.stdout


def test_api_server_applies_nested_defaults(custom, namespace):
    created = create(custom, namespace, build())
    spec = created["spec"]
    assert spec["workers"] == {"max": 4}
    assert spec["merge"]["strategy"] == "rebase"
    assert spec["repository"]["baseBranch"] == "main"
    assert spec["finalization"] == {"enabled": True, "maxAttempts": 3}
    assert spec["suspend"] is False


INVALID = [
    # (id, object, text the error must contain: the field and what is wrong)
    ("bad-enum-strategy", build(merge__strategy="squash"), "spec.merge.strategy: Unsupported value: \"squash\""),
    ("negative-workers", build(workers__max=-1), "spec.workers.max: Invalid value: -1"),
    ("empty-request", build(request=""), "spec.request: Invalid value: \"\""),
    ("malformed-repository-url", build(repository__url="not a url"), "spec.repository.url: Invalid value"),
    ("max-attempts-out-of-range", build(retry__maxAttempts=42), "spec.retry.maxAttempts: Invalid value: 42"),
    ("finalization-attempts-zero", build(finalization__maxAttempts=0), "spec.finalization.maxAttempts"),
    ("bad-backend", build(agent__backend="skynet"), "spec.agent.backend: Unsupported value: \"skynet\""),
    ("openai-without-model", build(agent__backend="openai"), "spec.agent.model: Required value"),
    ("roadmap-without-path", build(planner__source="roadmap"), "spec.planner.roadmapPath: Required value"),
    ("bad-quantity", build(agent__resources={"limits": {"memory": "lots"}}),
     "spec.agent.resources.limits.memory: Invalid value"),
    ("bad-secret-name", build(repository__credentialsSecret="Not_A_Name"),
     "spec.repository.credentialsSecret: Invalid value"),
    ("backoff-above-cap", build(retry__backoffSeconds=100, retry__maxBackoffSeconds=10),
     "spec.retry.backoffSeconds: Invalid value"),
    ("missing-repository", {**build(), "spec": {"request": "x"}}, "spec.repository: Required value"),
    ("task-depends-on-itself", task("t1", dependsOn=["t0", "t1"]), "spec.dependsOn: Invalid value"),
    ("task-priority-too-high", task(priority=11), "spec.priority: Invalid value: 11"),
    ("task-bad-role", task(role="boss"), "spec.role: Unsupported value: \"boss\""),
    ("fixer-without-branch", task(role="fixer"), "spec.branch: Required value"),
    ("task-empty-description", task(description=""), "spec.description: Invalid value"),
    ("merge-into-itself", merge_job(branch="main", target="main"), "spec.branch: Invalid value"),
    ("merge-bad-commit", merge_job(commit="not-a-sha!"), "spec.commit: Invalid value"),
]


@pytest.mark.parametrize(("obj", "expected"), [(o, e) for _, o, e in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_objects_are_rejected_naming_the_field(custom, namespace, obj, expected):
    with pytest.raises(kubernetes.client.ApiException) as err:
        create(custom, namespace, copy.deepcopy(obj))
    assert err.value.status == 422, err.value.body
    assert expected in err.value.body, err.value.body


def test_kubectl_apply_reports_the_field(kubectl, namespace):
    result = kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(build(workers__max=0)), check=False)
    assert result.returncode != 0
    assert "spec.workers.max" in result.stderr and "should be greater than or equal to 1" in result.stderr


def test_immutable_repository_url(custom, namespace):
    create(custom, namespace, build())
    patch = {"spec": {"repository": {"url": "https://elsewhere.example.com/x.git"}}}
    with pytest.raises(kubernetes.client.ApiException) as err:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "buildrequests", "b1", patch)
    assert "repository.url is immutable" in err.value.body


def test_kubectl_get_br_shows_printer_columns(kubectl, custom, namespace):
    create(custom, namespace, build())
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "buildrequests", "b1", {"status": {
        "phase": "Working", "tasks": {"total": 5, "succeeded": 2, "progress": "2/5"}, "merges": {"merged": 2},
        "conditions": [{"type": "Finalized", "status": "Unknown", "reason": "InProgress", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    lines = kubectl("get", "br", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "TASKS", "MERGED", "FINALIZED", "AGE"]
    assert lines[1].split()[:5] == ["b1", "Working", "2/5", "2", "Unknown"]
    wide = kubectl("get", "br", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert "REPOSITORY" in wide and "TOKENS" in wide


def test_status_is_a_subresource(custom, namespace):
    create(custom, namespace, build())
    # a spec write cannot change status, and a status write cannot change spec
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "buildrequests", "b1",
                                          {"status": {"phase": "Hacked"}})
    got = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "buildrequests", "b1")
    assert got.get("status", {}).get("phase") != "Hacked"
