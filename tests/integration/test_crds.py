"""The CRDs on a real kube-apiserver: installed, explained, validating, printing."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import kubernetes
import pytest
import yaml
from k8s_builders import GROUP, VERSION, build, create, merge_job, task

from longshot import api
from longshot.api import agenttask
from longshot_testing import wait_for

ROOT = Path(__file__).resolve().parents[2]


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
    # the API server publishes a new CRD's OpenAPI document a moment after it is Established
    def explain(field):
        result = kubectl("explain", field, check=False)
        return " ".join(result.stdout.split()) if result.returncode == 0 else None

    out = wait_for(lambda: explain("br.spec.workers.max"), timeout=30, what="kubectl explain br")
    assert "Most agent Pods of this build running at once" in out
    assert "integer" in out
    out = explain("agenttasks.spec.dependsOn")
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
    # (id, object, the field the API server must name, what it must say about it)
    ("bad-enum-strategy", build(merge__strategy="squash"), "spec.merge.strategy", 'Unsupported value: "squash"'),
    ("negative-workers", build(workers__max=-1), "spec.workers.max", "should be greater than or equal to 1"),
    ("empty-request", build(request=""), "spec.request", "should be at least 1 chars long"),
    ("malformed-repository-url", build(repository__url="not a url"), "spec.repository.url", "should match"),
    ("max-attempts-out-of-range", build(retry__maxAttempts=42), "spec.retry.maxAttempts",
     "should be less than or equal to 10"),
    ("finalization-attempts-zero", build(finalization__maxAttempts=0), "spec.finalization.maxAttempts",
     "should be greater than or equal to 1"),
    ("bad-backend", build(agent__backend="skynet"), "spec.agent.backend", 'Unsupported value: "skynet"'),
    ("openai-without-model", build(agent__backend="openai"), "spec.agent.model",
     "agent.model is required for the openai and anthropic backends"),
    ("roadmap-path-outside-the-repository", build(planner__source="roadmap", planner__roadmapPath="../etc/x.md"),
     "spec.planner.roadmapPath", "must be a path inside the repository"),
    ("roadmap-path-absolute", build(planner__roadmapPath="/ROADMAP.md"), "spec.planner.roadmapPath",
     "must be a path inside the repository"),
    ("issues-without-settings", build(planner__source="issues"), "spec.planner.issues",
     "planner.issues is required when planner.source is issues"),
    ("issues-without-repository", build(planner__source="issues", planner__issues={"labels": ["x"]}),
     "spec.planner.issues.repository", "Required value"),
    ("issues-github-repository-not-owner-name",
     build(planner__source="issues", planner__issues={"repository": "group/sub/project"}),
     "spec.planner.issues.repository", "must be owner/name for the github provider"),
    ("issues-bad-provider", build(planner__source="issues", planner__issues={"provider": "svn", "repository": "a/b"}),
     "spec.planner.issues.provider", 'Unsupported value: "svn"'),
    ("issues-jira-without-url", build(planner__source="issues", planner__issues={"provider": "jira",
                                                                                "repository": "PROJ"}),
     "spec.planner.issues.url", "url is required for the jira provider"),
    ("issues-jira-repository-not-a-key",
     build(planner__source="issues", planner__issues={"provider": "jira", "url": "https://x.atlassian.net",
                                                      "repository": "org/app"}),
     "spec.planner.issues.repository", "must be the project key (jira, e.g. PROJ) or the team key"),
    ("issues-linear-repository-not-a-key",
     build(planner__source="issues", planner__issues={"provider": "linear", "repository": "12345"}),
     "spec.planner.issues.repository", "must be the project key (jira, e.g. PROJ) or the team key"),
    ("issues-gitlab-repository-a-bare-key",
     build(planner__source="issues", planner__issues={"provider": "gitlab", "repository": "PROJ"}),
     "spec.planner.issues.repository", "must be a project id or a group/project path for the gitlab provider"),
    ("issues-done-state-on-github",
     build(planner__source="issues", planner__issues={"repository": "a/b", "doneState": "Done"}),
     "spec.planner.issues.doneState", "doneState is for the jira and linear providers"),
    ("issues-label-with-comma", build(planner__source="issues", planner__issues={"repository": "a/b",
                                                                               "labels": ["a,b"]}),
     "spec.planner.issues.labels[0]", "should match"),
    ("max-iterations-zero", build(planner__maxIterations=0), "spec.planner.maxIterations",
     "should be greater than or equal to 1"),
    ("pull-request-delivery-without-settings", build(merge__delivery="pullRequest"), "spec.merge.pullRequest",
     "spec.merge.delivery pullRequest needs spec.merge.pullRequest"),
    ("pull-request-bad-merge-method", build(merge__delivery="pullRequest", merge__pullRequest={
        "project": "o/r", "tokenSecretRef": {"name": "t"}, "mergeMethod": "octopus"}),
     "spec.merge.pullRequest.mergeMethod", 'Unsupported value: "octopus"'),
    ("max-iterations-too-many", build(planner__maxIterations=21), "spec.planner.maxIterations",
     "should be less than or equal to 20"),
    ("fanout-count-too-large", build(fanout={"count": 11}), "spec.fanout.count", "should be less than or equal to 10"),
    ("fanout-without-count", build(fanout={"models": ["a"]}), "spec.fanout.count", "Required value"),
    ("fanout-more-models-than-count", build(fanout={"count": 2, "models": ["a", "b", "c"]}), "spec.fanout.models",
     "lists more models than fanout.count candidates"),
    ("fanout-bad-judge", build(fanout={"count": 2, "judge": "vote"}), "spec.fanout.judge", 'Unsupported value: "vote"'),
    ("bad-quantity", build(agent__resources={"limits": {"memory": "lots"}}), "spec.agent.resources.limits.memory",
     "should match"),
    ("bad-secret-name", build(repository__credentialsSecret="Not_A_Name"), "spec.repository.credentialsSecret",
     "should match"),
    ("backoff-above-cap", build(retry__backoffSeconds=100, retry__maxBackoffSeconds=10), "spec.retry.backoffSeconds",
     "must not exceed retry.maxBackoffSeconds"),
    ("missing-repository", {**build(), "spec": {"request": "x"}}, "spec.repository", "Required value"),
    ("task-depends-on-itself", task("t1", dependsOn=["t0", "t1"]), "spec.dependsOn", "cannot depend on itself"),
    ("task-priority-too-high", task(priority=11), "spec.priority", "should be less than or equal to 10"),
    ("task-bad-role", task(role="boss"), "spec.role", 'Unsupported value: "boss"'),
    ("fixer-without-branch", task(role="fixer"), "spec.branch", "branch is required for a fixer task"),
    ("task-empty-description", task(description=""), "spec.description", "should be at least 1 chars long"),
    ("task-quorum-without-k", task(dependsOn=["a", "b"], dependsOnPolicy={"type": "quorum"}),
     "spec.dependsOnPolicy.k", "required with type quorum"),
    ("task-k-without-quorum", task(dependsOn=["a", "b"], dependsOnPolicy={"type": "any", "k": 1}),
     "spec.dependsOnPolicy.k", "only allowed with it"),
    ("task-quorum-above-dependencies", task(dependsOn=["a", "b"], dependsOnPolicy={"type": "quorum", "k": 3}),
     "spec.dependsOnPolicy.k", "must not exceed the number of dependsOn tasks"),
    ("task-bad-policy", task(dependsOnPolicy={"type": "most"}), "spec.dependsOnPolicy.type",
     'Unsupported value: "most"'),
    ("task-fanout-on-a-reviewer", task(role="reviewer", fanout={"count": 2}), "spec.fanout",
     "fanout is only for worker and fixer tasks"),
    ("task-fanout-too-many-models", task(fanout={"count": 1, "models": ["a", "b"]}), "spec.fanout.models",
     "lists more models than fanout.count candidates"),
    ("task-empty-answer", task(answer=""), "spec.answer", "should be at least 1 chars long"),
    ("merge-approved-not-a-boolean", merge_job(approved="yes"), "spec.approved", "must be of type boolean"),
    ("merge-into-itself", merge_job(branch="main", target="main"), "spec.branch", "branch must differ from target"),
    ("merge-bad-commit", merge_job(commit="not-a-sha!"), "spec.commit", "should match"),
]


@pytest.mark.parametrize(("obj", "field", "text"), [i[1:] for i in INVALID], ids=[i[0] for i in INVALID])
def test_invalid_objects_are_rejected_naming_the_field(custom, namespace, obj, field, text):
    with pytest.raises(kubernetes.client.ApiException) as err:
        create(custom, namespace, copy.deepcopy(obj))
    assert err.value.status == 422, err.value.body
    status = json.loads(err.value.body)
    causes = {c.get("field"): c.get("message", "") for c in status["details"]["causes"]}
    assert field in causes, status["message"]
    assert text in causes[field], status["message"]
    assert f"{field}: " in status["message"]  # what `kubectl apply` prints


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
        "iteration": 2, "iterations": [{"number": 1, "tasks": 3, "merged": 2, "failed": 1}, {"number": 2, "tasks": 2}],
        "conditions": [{"type": "Ready", "status": "False", "reason": "TaskBlocked", "message": "task api: blocked",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"},
                       {"type": "Finalized", "status": "Unknown", "reason": "InProgress", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    lines = kubectl("get", "br", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "TASKS", "MERGED", "READY", "REASON", "FINALIZED", "ITERATION",
                                "AGE"]
    assert lines[1].split()[:8] == ["b1", "Working", "2/5", "2", "False", "TaskBlocked", "Unknown", "2"]
    wide = kubectl("get", "br", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert "REPOSITORY" in wide and "TOKENS" in wide


def test_status_is_a_subresource(custom, namespace):
    create(custom, namespace, build())
    # a spec write cannot change status, and a status write cannot change spec
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "buildrequests", "b1",
                                          {"status": {"phase": "Hacked"}})
    got = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "buildrequests", "b1")
    assert got.get("status", {}).get("phase") != "Hacked"


def test_a_new_agent_task_is_pending_with_its_conditions_from_its_create(kubectl, custom, namespace):
    """Issue 13: the initial status took a second write per task. The CRD's default status is applied by the API
    server to the answer of the create and every read; a status write replaces it."""
    body = task()
    body["status"] = {"phase": "Hacked"}  # a create cannot set status (the subresource): the default holds
    created = create(custom, namespace, body)
    assert created["status"] == agenttask.initial_status()
    assert {c["type"]: c["status"] for c in created["status"]["conditions"]} == {
        "Succeeded": "Unknown", "Running": "False", "AwaitingInput": "False", "Ready": "False", "Stalled": "False",
        "Reconciling": "True"}
    lines = kubectl("get", "at", "-n", namespace).stdout.splitlines()
    assert lines[1].split()[:4] == ["t1", "b1", "worker", "Pending"]
    assert kubectl("wait", "--for=condition=Reconciling", "at/t1", "-n", namespace, "--timeout=5s").returncode == 0
    written = custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "agenttasks", "t1", {"status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "False", "reason": "Running",
                                            "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    assert written["status"]["phase"] == "Running"
    assert [c["type"] for c in written["status"]["conditions"]] == ["Ready"]


def test_kubectl_get_at_shows_live_progress(kubectl, custom, namespace):
    create(custom, namespace, task())
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "agenttasks", "t1", {"status": {
        "phase": "Running", "progress": {"message": "running-tests", "lastHeartbeat": "2026-01-01T00:00:00Z",
                                         "tokens": 1200},
        "conditions": [{"type": "Ready", "status": "False", "reason": "Running", "message": "m",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    lines = kubectl("get", "at", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "BUILD", "ROLE", "PHASE", "READY", "PROGRESS", "AGE"]
    assert lines[1].split()[:6] == ["t1", "b1", "worker", "Running", "False", "running-tests"]


def test_roadmap_builds_default_their_path_and_issue_14_defaults_are_applied(custom, namespace):
    created = create(custom, namespace, build(planner__source="roadmap"))
    spec = created["spec"]
    assert spec["planner"]["roadmapPath"] == "ROADMAP.md" and spec["planner"]["maxIterations"] == 3
    assert spec["merge"]["requireApproval"] is False and "fanout" not in spec
    issues = create(custom, namespace, build("b2", planner__source="issues", planner__issues={
        "provider": "gitlab", "repository": "group/sub/project", "labels": ["longshot"]}))
    assert issues["spec"]["planner"]["issues"] == {"provider": "gitlab", "repository": "group/sub/project",
                                                   "labels": ["longshot"], "comment": True}
    t = create(custom, namespace, task(dependsOn=["a", "b", "c"], dependsOnPolicy={"type": "quorum", "k": 2},
                                       fanout={"count": 3, "models": ["m1", "m2"]}))
    assert t["spec"]["dependsOnPolicy"] == {"type": "quorum", "k": 2}
    assert t["spec"]["fanout"] == {"count": 3, "models": ["m1", "m2"], "judge": "reviewer"}
    plain = create(custom, namespace, task("t2"))
    assert plain["spec"]["dependsOnPolicy"] == {"type": "all"}
    mj = create(custom, namespace, merge_job())
    assert mj["spec"]["approved"] is False


def test_answering_a_question_and_approving_a_merge_are_plain_patches(kubectl, custom, namespace):
    create(custom, namespace, task())
    create(custom, namespace, merge_job())
    kubectl("patch", "at", "t1", "-n", namespace, "--type", "merge", "-p", '{"spec":{"answer":"Use port 8080"}}')
    kubectl("patch", "mj", "m1", "-n", namespace, "--type", "merge", "-p", '{"spec":{"approved":true}}')
    assert custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "agenttasks", "t1")["spec"]["answer"] \
        == "Use port 8080"
    assert custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "mergejobs", "m1")["spec"]["approved"] is True
