"""No confused deputy: the chart's ValidatingAdmissionPolicies on the integration tier's real API server.

The policies are rendered from the chart (limited to this test's namespace by
``admissionPolicy.namespaceSelector``) and applied for real (the image policy, which takes ConfigMap
parameters, by one test only: see ``image_policies``); users are impersonated (``kubectl --as``): alice may
create BuildRequests but read no Secret, bob may also read the build Secrets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from chart_render import of_kinds, render
from k8s_builders import build, schedule

from longshot_testing import wait_for

SECRETS = ("git-token", "llm-key", "tracker-token")
CONFIGMAPS = ("private-script", "private-prompts")
ALLOWED_PREFIX = "registry.example.com/longshot-agent"


@pytest.fixture
def people(kubectl: Any, namespace: str) -> Iterator[None]:
    """The Secrets, and the Roles of alice (BuildRequests and BuildSchedules only) and bob (those and the
    Secrets)."""
    for s in SECRETS:
        kubectl("-n", namespace, "create", "secret", "generic", s, "--from-literal=token=t0p-s3cret")
    for c in CONFIGMAPS:
        kubectl("-n", namespace, "create", "configmap", c, "--from-literal=script.yaml=t0p-s3cret-plan")
    author = {"apiGroups": ["longshot.dev"], "resources": ["buildrequests", "buildschedules"],
              "verbs": ["get", "list", "create", "update", "patch", "delete"]}
    reader = {"apiGroups": [""], "resources": ["secrets"], "resourceNames": list(SECRETS), "verbs": ["get"]}
    cm_reader = {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": list(CONFIGMAPS), "verbs": ["get"]}
    objs = []
    for user, rules in (("alice", [author]), ("bob", [author, reader, cm_reader])):
        objs += [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                  "metadata": {"name": user, "namespace": namespace}, "rules": rules},
                 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                  "metadata": {"name": user, "namespace": namespace},
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
                  "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))
    yield


def install_policies(kubectl: Any, control_plane: Any, namespace: str, *sets: str) -> list[dict[str, Any]]:
    """Apply the chart's admission policies, bound to ``namespace`` only, and wait until they decide."""
    docs = render(control_plane, namespace, f"admissionPolicy.namespaceSelector.matchLabels.kubernetes\\.io/"
                  f"metadata\\.name={namespace}", "egress.admission=false",  # test_hostile_egress has it
                  "admissionPolicy.leastPrivilege.enabled=false",  # test_hostile_privilege has them
                  "admissionPolicy.runtimeClass.enabled=false",  # its own test turns it on
                  *sets, release=f"vap-{namespace[-6:]}")
    docs = of_kinds(docs, "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ConfigMap")
    docs = [d for d in docs if d["kind"] != "ConfigMap" or d["metadata"]["name"].endswith("-agent-images")]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    # the API server loads policies asynchronously, each on its own: wait until alice is refused by both, the
    # BuildRequests' and the BuildSchedules' (CI once saw the second not yet loaded when the first refused)
    probes = [build("probe", repository__credentialsSecret="git-token"),
              schedule("probe", template=build("t", repository__credentialsSecret="git-token"))]
    wait_for(lambda: all(apply_as("alice", kubectl, namespace, p, dry_run=True).returncode != 0 for p in probes),
             timeout=30, what="the secret-access policies (BuildRequests and BuildSchedules) to take effect")
    return docs


@pytest.fixture
def policies(kubectl: Any, control_plane: Any, namespace: str, people: None) -> Iterator[list[dict[str, Any]]]:
    """The secret-access policy (the image allowlist off: the default)."""
    docs = install_policies(kubectl, control_plane, namespace)
    # one policy and its binding per kind with references: BuildRequests, BuildSchedules (their templates)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ValidatingAdmissionPolicy"] * 2 + ["ValidatingAdmissionPolicyBinding"] * 2
    yield docs
    kubectl("delete", "-f", "-", "--wait=false", "--ignore-not-found", input=yaml.safe_dump_all(docs), check=False)


@pytest.fixture
def image_policies(kubectl: Any, control_plane: Any, namespace: str, people: None
                   ) -> Iterator[list[dict[str, Any]]]:
    """Both policies, with the image allowlist and its ConfigMap parameters.

    Only one test uses a ``paramKind`` policy: the API server stops its ConfigMap parameter informer for good
    once no binding uses that kind (kubernetes/kubernetes#130887, docs/admission.md), so a second such policy
    in the same API server's life would find no parameters.
    """
    docs = install_policies(kubectl, control_plane, namespace, "admissionPolicy.imageAllowlist.enabled=true",
                            f"admissionPolicy.imageAllowlist.prefixes={{{ALLOWED_PREFIX}:,{ALLOWED_PREFIX}@}}")
    assert len(docs) == 7
    good = build("probe", agent={"image": f"{ALLOWED_PREFIX}:probe"})
    evil = build("probe-evil", agent={"image": "docker.io/evil/agent:probe"})
    # both: a good image alone also passes before the API server enforces the new policy at all (seen once:
    # the first refusal of the test did not happen), an evil one alone is also refused without the parameters
    wait_for(lambda: apply_as("bob", kubectl, namespace, evil, dry_run=True).returncode != 0
             and apply_as("bob", kubectl, namespace, good, dry_run=True).returncode == 0, timeout=30,
             what="the image policy to be enforced with its parameters")
    yield docs
    kubectl("delete", "-f", "-", "--wait=false", "--ignore-not-found", input=yaml.safe_dump_all(docs), check=False)


def apply_as(user: str, kubectl: Any, namespace: str, obj: dict[str, Any], *, verb: str = "create",
             dry_run: bool = False) -> Any:
    args = [f"--as={user}", "-n", namespace, verb, "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    return kubectl(*args, input=json.dumps(obj), check=False)


def issues_build(name: str) -> Any:
    return build(name, planner={"source": "issues", "issues": {"url": "https://tracker.example.com/api",
                                                                "repository": "o/r",
                                                                "credentialsSecret": "tracker-token"}})


@pytest.mark.parametrize(("field", "obj"), [
    ("spec.repository.credentialsSecret", build("b1", repository__credentialsSecret="git-token")),
    ("spec.agent.credentialsSecret", build("b1", agent={"credentialsSecret": "llm-key"})),
    ("spec.planner.issues.credentialsSecret", issues_build("b1")),
    # a standing intake's tracker token and webhook Secret
    ("spec.intake.tracker.credentialsSecret", build("b1", intake={"tracker": {
        "repository": "o/r", "url": "https://tracker.example.com/api", "credentialsSecret": "tracker-token"}})),
    ("spec.intake.webhook.name", build("b1", intake={"tracker": {"repository": "o/r"},
                                                     "webhook": {"name": "tracker-token"}})),
    # a ConfigMap's script or prompts reach the agent, which can write them to its branch
    ("spec.agent.script.name", build("b1", agent={"backend": "scripted", "script": {"name": "private-script"}})),
    ("spec.agent.prompts.name", build("b1", agent={"prompts": {"name": "private-prompts"}})),
    # the instructions become AGENTS.md in the agent's checkout
    ("spec.agent.instructions.configMap.name", build("b1", agent={"instructions": {
        "configMap": {"name": "private-prompts"}}})),
    # the forge token, which the operator sends as a Bearer token to spec.merge.pullRequest.apiUrl
    ("spec.merge.pullRequest.tokenSecretRef.name", build("b1", merge={"delivery": "pullRequest", "pullRequest": {
        "provider": "github", "project": "o/r", "tokenSecretRef": {"name": "git-token"}}})),
    # an MCP server's headers, which the gateway sends to spec.agent.mcpServers[].url (a reference in a list: each
    # item's is checked; a server without one names nothing)
    ("spec.agent.mcpServers[].headersSecretRef.name", build("b1", agent={"mcpServers": [
        {"name": "open", "url": "https://mcp.example.com/open"},
        {"name": "team", "url": "https://mcp.example.com/team", "headersSecretRef": {"name": "llm-key"}}]})),
])
def test_an_author_who_cannot_read_a_named_secret_or_configmap_is_refused(
        kubectl: Any, namespace: str, policies: list[dict[str, Any]], field: str, obj: dict[str, Any]) -> None:
    kind, name = {"spec.repository.credentialsSecret": ("Secret", "git-token"),
                  "spec.agent.credentialsSecret": ("Secret", "llm-key"),
                  "spec.planner.issues.credentialsSecret": ("Secret", "tracker-token"),
                  "spec.intake.tracker.credentialsSecret": ("Secret", "tracker-token"),
                  "spec.intake.webhook.name": ("Secret", "tracker-token"),
                  "spec.agent.script.name": ("ConfigMap", "private-script"),
                  "spec.agent.prompts.name": ("ConfigMap", "private-prompts"),
                  "spec.agent.instructions.configMap.name": ("ConfigMap", "private-prompts"),
                  "spec.merge.pullRequest.tokenSecretRef.name": ("Secret", "git-token"),
                  "spec.agent.mcpServers[].headersSecretRef.name": ("Secret", "llm-key")}[field]
    refused = apply_as("alice", kubectl, namespace, obj)
    assert refused.returncode != 0
    said = (f"{field}: alice may not get every {kind} of {name} in namespace {namespace}" if "[]" in field
            else f"{field}: alice may not get {kind} {namespace}/{name}")
    assert said in refused.stderr, refused.stderr
    assert "t0p-s3cret" not in refused.stderr
    # bob may read it: the same object is admitted
    admitted = apply_as("bob", kubectl, namespace, obj)
    assert admitted.returncode == 0, admitted.stderr


def test_a_schedule_whose_author_cannot_read_a_secret_its_template_names_is_refused(
        kubectl: Any, namespace: str, policies: list[dict[str, Any]]) -> None:
    """The operator creates a schedule's children with its own rights: the schedule's author is checked instead
    (the policy ``secret-access-buildschedules``, generated from the same models)."""
    obj = schedule("nightly", template=build("t", repository__credentialsSecret="git-token"))
    refused = apply_as("alice", kubectl, namespace, obj)
    field = "spec.buildTemplate.spec.repository.credentialsSecret"
    assert refused.returncode != 0
    assert f"{field}: alice may not get Secret {namespace}/git-token" in refused.stderr, refused.stderr
    assert apply_as("alice", kubectl, namespace, schedule("open")).returncode == 0  # names no Secret
    admitted = apply_as("bob", kubectl, namespace, obj)
    assert admitted.returncode == 0, admitted.stderr


def test_an_author_must_be_able_to_read_every_skill_configmap_a_build_names(
        kubectl: Any, namespace: str, policies: list[dict[str, Any]]) -> None:
    kubectl("-n", namespace, "create", "configmap", "unlisted-skill", "--from-literal=SKILL.md=t0p-s3cret-skill")

    def skills(*names: str) -> dict[str, Any]:
        return build("skilled", agent={"skills": [{"name": f"s{i}", "configMap": {"name": n}}
                                                  for i, n in enumerate(names)]})

    field = "spec.agent.skills[].configMap.name"
    refused = apply_as("alice", kubectl, namespace, skills("private-script", "private-prompts"))
    assert refused.returncode != 0
    assert (f"{field}: alice may not get every ConfigMap of private-script, private-prompts in namespace {namespace}"
            in refused.stderr), refused.stderr
    # bob may read the first two but not a third: one unreadable item is enough to refuse the build
    refused = apply_as("bob", kubectl, namespace, skills("private-script", "unlisted-skill", "private-prompts"))
    assert refused.returncode != 0 and f"{field}: bob may not get every ConfigMap of" in refused.stderr
    assert "t0p-s3cret" not in refused.stderr
    assert apply_as("bob", kubectl, namespace, skills("private-script", "private-prompts")).returncode == 0
    # no skills at all: nothing to check
    assert apply_as("alice", kubectl, namespace, build("unskilled", agent={"skills": []})).returncode == 0


def test_builds_without_secrets_and_spec_updates(kubectl: Any, namespace: str, policies: list[dict[str, Any]]) -> None:
    assert apply_as("alice", kubectl, namespace, build("plain")).returncode == 0
    full = build("full", repository__credentialsSecret="git-token", agent={"credentialsSecret": "llm-key"})
    assert apply_as("bob", kubectl, namespace, full).returncode == 0
    # alice may not edit the spec of a build that names Secrets she cannot read...
    patch = ["--as=alice", "-n", namespace, "patch", "buildrequest", "full", "--type=merge"]
    refused = kubectl(*patch, "-p", json.dumps({"spec": {"request": "print the token"}}), check=False)
    assert refused.returncode != 0 and "spec.repository.credentialsSecret: alice may not get" in refused.stderr
    # ...but metadata-only writes (the operator's finalizers and annotations, a label) are not re-checked
    assert kubectl(*patch, "-p", json.dumps({"metadata": {"labels": {"team": "a"}}}), check=False).returncode == 0
    # and alice may not add a Secret reference to her own build
    refused = kubectl("--as=alice", "-n", namespace, "patch", "buildrequest", "plain", "--type=merge", "-p",
                      json.dumps({"spec": {"agent": {"credentialsSecret": "llm-key"}}}), check=False)
    assert refused.returncode != 0 and "spec.agent.credentialsSecret: alice may not get" in refused.stderr


def test_agent_images_outside_the_allowlist_are_refused(
        kubectl: Any, namespace: str, image_policies: list[dict[str, Any]]) -> None:
    evil = build("evil", agent={"image": "docker.io/evil/agent:latest"})
    refused = apply_as("bob", kubectl, namespace, evil)
    assert refused.returncode != 0
    assert "spec.agent.image: docker.io/evil/agent:latest is not an allowed agent image" in refused.stderr
    assert f"{ALLOWED_PREFIX}:, {ALLOWED_PREFIX}@" in refused.stderr
    assert apply_as("bob", kubectl, namespace, build("good", agent={"image": f"{ALLOWED_PREFIX}:1.2"})).returncode == 0
    assert apply_as("alice", kubectl, namespace, build("default-image")).returncode == 0
    # a prefix that only looks alike is not enough
    lookalike = build("lookalike", agent={"image": f"{ALLOWED_PREFIX}-evil:1"})
    assert apply_as("bob", kubectl, namespace, lookalike).returncode != 0

    # without its parameters the image policy refuses rather than allowing everything
    (cm,) = of_kinds(image_policies, "ConfigMap")
    kubectl("-n", namespace, "delete", "configmap", cm["metadata"]["name"])
    wait_for(lambda: apply_as("bob", kubectl, namespace, build("again", agent={"image": f"{ALLOWED_PREFIX}:1.3"}),
                              dry_run=True).returncode != 0, timeout=30, what="refusal without the parameters")


def _agent_pod(name: str, runtime_class: str | None) -> dict[str, Any]:
    """A Pod as the operator labels its agent Pods, compliant with Pod Security ``restricted``."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "longshot-operator"}},
            "spec": {**({"runtimeClassName": runtime_class} if runtime_class else {}),
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": "agent", "image": "agent:dev", "securityContext": {
                         "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}


def test_a_namespace_labelled_with_a_runtime_class_requires_it_of_builds_and_agent_pods(
        kubectl: Any, control_plane: Any, namespace: str, people: None) -> None:
    """``admissionPolicy.runtimeClass``: the label ``longshot.dev/runtime-class=gvisor`` on the namespace makes a
    build that would run under another RuntimeClass (its own, or the chart's ``agent.runtimeClassName``) refused
    with the field named, and an agent Pod without it too; a build made before the label can still be changed in its
    metadata (its finalizers), and a namespace without the label is not concerned."""
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                                                  "metadata": {"name": "gvisor"}, "handler": "runsc"}))
    before = build("before")
    assert apply_as("bob", kubectl, namespace, before).returncode == 0
    docs = install_policies(kubectl, control_plane, namespace, "admissionPolicy.runtimeClass.enabled=true",
                            "agent.runtimeClassName=sandboxed")
    try:
        assert apply_as("bob", kubectl, namespace, build("unlabelled"), dry_run=True).returncode == 0
        kubectl("label", "namespace", namespace, "longshot.dev/runtime-class=gvisor")
        wait_for(lambda: apply_as("bob", kubectl, namespace, build("probe-rc"), dry_run=True).returncode != 0,
                 timeout=30, what="the runtime-class policy to take effect")
        refused = apply_as("bob", kubectl, namespace, build("plain"))
        assert refused.returncode != 0
        assert (f"spec.agent.runtimeClassName: namespace {namespace} requires RuntimeClass gvisor (its label "
                "longshot.dev/runtime-class) for agent Pods, not sandboxed") in refused.stderr, refused.stderr
        other = apply_as("bob", kubectl, namespace, build("other", agent={"runtimeClassName": "kata"}))
        assert other.returncode != 0 and "not kata" in other.stderr
        assert apply_as("bob", kubectl, namespace, build("isolated", agent={"runtimeClassName": "gvisor"})
                        ).returncode == 0
        # an existing build's metadata (the operator's finalizers) stays writable
        kubectl("-n", namespace, "label", "buildrequest", "before", "touched=yes")
        # the backstop on Pods: an agent Pod without the class is refused, one with it and a Pod not the
        # operator's are not
        pod = kubectl("-n", namespace, "create", "--dry-run=server", "-f", "-",
                      input=json.dumps(_agent_pod("a1", None)), check=False)
        assert pod.returncode != 0 and "spec.runtimeClassName: namespace" in pod.stderr, pod.stderr
        assert kubectl("-n", namespace, "create", "--dry-run=server", "-f", "-",
                       input=json.dumps(_agent_pod("a2", "gvisor")), check=False).returncode == 0
        theirs = _agent_pod("a3", None)
        theirs["metadata"]["labels"] = {}
        assert kubectl("-n", namespace, "create", "--dry-run=server", "-f", "-", input=json.dumps(theirs),
                       check=False).returncode == 0
    finally:
        kubectl("label", "namespace", namespace, "longshot.dev/runtime-class-", check=False)
        kubectl("delete", "runtimeclass", "gvisor", "--wait=false", check=False)
        kubectl("delete", "-f", "-", "--wait=false", "--ignore-not-found", input=yaml.safe_dump_all(docs),
                check=False)
