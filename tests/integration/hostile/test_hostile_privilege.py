"""Least privilege (issue 50, item 7) on a real API server, with the chart's RBAC and admission policies applied
for real and the real operator, gateway and hook code:

* a tenant's own Pod labelled as an agent (what the gateway's NetworkPolicy admits) is refused by admission;
* the operator's and the gateway's ServiceAccounts, cluster-wide, cannot write a ConfigMap in kube-system, the
  release namespace, or one that is not Longshot's in a build namespace, nor a privileged Pod;
* a bogus gateway token costs one TokenReview, not one per request (counted on the API server's own metrics);
* ``git receive-pack``, which runs on the agent's pack, has no upstream credential in its environment.

Each fails on the main of issue 50 (74fe7c0): no such policies, a TokenReview per request, the credential in
``GIT_CONFIG_VALUE_0`` of receive-pack's environment.
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the integration tier's helper modules

import git_servers
import httpx
import kubernetes
import pytest
import yaml
from chart_render import of_kinds, render
from gateway_attempts import make_attempt, secret
from k8s_builders import build, create

from longshot.config import Settings
from longshot.core import ledger
from longshot.gateway import cluster as gcluster
from longshot.runtime import kube, pods
from longshot_testing import wait_for

pytestmark = pytest.mark.integration

RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
POLICY_SUFFIXES = ("-writes", "-agent-pods")
RESTRICTED = {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
"""A Pod of the tier's namespaces passes Pod Security ``restricted``: what a tenant's own Pod would be."""


# --- the chart's RBAC and least-privilege policies, for a release in its own namespace --------------------------

class Release:
    def __init__(self, system: str, name: str) -> None:
        self.system, self.name = system, name
        self.operator = f"system:serviceaccount:{system}:{name}-longshot"
        self.gateway = f"system:serviceaccount:{system}:{name}-longshot-gateway"


def client_as(control_plane: Any, user: str) -> kubernetes.client.ApiClient:
    """An API client that is ``user`` (impersonated by the tier's admin), as the operator's code uses it."""
    client = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    client.set_default_header("Impersonate-User", user)
    return client


@pytest.fixture
def release(kubectl: Any, control_plane: Any, namespace: str) -> Iterator[Release]:
    """The chart's RBAC and its two least-privilege policies, released in ``<namespace>-sys`` (cluster-wide
    mode); builds run in ``namespace``. The agent-Pod policy is bound to ``namespace`` only (the tier's other
    tests create agent Pods as the admin); the write policy matches only this release's ServiceAccounts."""
    system = f"{namespace[:50]}-sys"
    kubectl("create", "namespace", system)
    rel = Release(system, f"lp-{namespace[-6:]}")
    docs = render(control_plane, system,
                  f"admissionPolicy.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={namespace}",
                  release=rel.name)
    policies = [d for d in of_kinds(docs, "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
                if d["metadata"]["name"].endswith(POLICY_SUFFIXES)]
    assert len(policies) == 4
    applied = of_kinds(docs, *RBAC_KINDS) + policies
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(applied))
    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe", "namespace": "kube-system",
                                                                   "labels": {"app.kubernetes.io/managed-by":
                                                                              "longshot-operator"}}}
    wait_for(lambda: "admissionPolicy.leastPrivilege" in kubectl(
        "create", "--dry-run=server", f"--as={rel.operator}", "-f", "-", input=json.dumps(probe),
        check=False).stderr, timeout=30, what="the least-privilege policies to take effect")
    yield rel
    kubectl("delete", "-f", "-", "--wait=false", "--ignore-not-found", input=yaml.safe_dump_all(applied), check=False)
    kubectl("delete", "namespace", system, "--wait=false", check=False)


def refused(call: Any) -> str:
    """The API server's message for a write that must be refused (403)."""
    with pytest.raises(kubernetes.client.ApiException) as e:
        call()
    assert e.value.status == 403, e.value
    return str(json.loads(e.value.body or "{}").get("message"))


def ledger_entry(namespace: str, task: dict[str, Any], pod: str = "b1-t1-a1") -> dict[str, Any]:
    m = ledger.manifest(namespace=namespace, pod=pod, task=task["metadata"]["name"],
                        task_uid=task["metadata"]["uid"], build="b1", attempt=1, role="worker")
    m["data"] = {ledger.RESULT_KEY: "{}"}
    return m


# --- forged agent Pods -------------------------------------------------------------------------------------------

def test_a_tenants_own_pod_labelled_as_an_agent_is_refused_and_the_operators_is_not(
        release: Release, kubectl: Any, control_plane: Any, core_v1: Any, custom: Any, namespace: str) -> None:
    # mallory may create and patch Pods in her namespace (as any namespace user who runs workloads)
    kubectl("-n", namespace, "create", "role", "pods", "--verb=create,patch,get", "--resource=pods")
    kubectl("-n", namespace, "create", "rolebinding", "mallory", "--role=pods", "--user=mallory")
    mallory = kubernetes.client.CoreV1Api(client_as(control_plane, "mallory"))

    def pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
        return {"metadata": {"name": name, "labels": labels},
                "spec": {"securityContext": RESTRICTED, "containers": [{
                    "name": "c", "image": "busybox",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}

    forged = {"app.kubernetes.io/component": "agent", "app.kubernetes.io/managed-by": "longshot-operator"}
    message = refused(lambda: mallory.create_namespaced_pod(namespace, pod("fake-agent", forged)))
    assert "ValidatingAdmissionPolicy" in message and "metadata.labels" in message
    assert release.operator in message and "mallory is not it" in message
    refused(lambda: mallory.create_namespaced_pod(namespace, pod("fake-task", {"longshot.dev/task": "b1-t1"})))
    # her own Pod, then the label set afterwards
    mallory.create_namespaced_pod(namespace, pod("plain", {"app": "mine"}))
    refused(lambda: mallory.patch_namespaced_pod("plain", namespace, {"metadata": {"labels": forged}}))
    assert core_v1.read_namespaced_pod("plain", namespace).metadata.labels == {"app": "mine"}

    # the operator's own agent Pod, as runtime.pods builds it, created by the operator's code as its account
    b = create(custom, namespace, build("b1"))
    t = create(custom, namespace, {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
                                   "metadata": {"name": "b1-t1", "labels": {"longshot.dev/build": "b1"}},
                                   "spec": {"buildRef": {"name": "b1"}, "description": "d", "role": "worker"}})
    manifest = pods.build_agent_pod(t, b, Settings(identity="test", gateway_url="http://gw:8080"), 1)
    made = kube.Kube(client_as(control_plane, release.operator)).create_pod(manifest)
    assert made is not None and made["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "longshot-operator"
    # the operator's Pod keeps its labels against a tenant that would move it to another task
    refused(lambda: mallory.patch_namespaced_pod(made["metadata"]["name"], namespace,
                                                 {"metadata": {"labels": {"longshot.dev/task": "other"}}}))


# --- the operator's and the gateway's writes ----------------------------------------------------------------------

def test_the_operator_and_gateway_accounts_write_only_longshots_own_objects_outside_protected_namespaces(
        release: Release, kubectl: Any, control_plane: Any, custom: Any, core_v1: Any, namespace: str) -> None:
    operator = kube.Kube(client_as(control_plane, release.operator))
    gateway = gcluster.Cluster(client_as(control_plane, release.gateway))
    t = create(custom, namespace, {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
                                   "metadata": {"name": "b1-t1"},
                                   "spec": {"buildRef": {"name": "b1"}, "description": "d", "role": "worker"}})
    # Longshot's own labels do not open kube-system, nor the release namespace
    for ns in ("kube-system", release.system):
        for who in (operator, gateway):
            message = refused(lambda who=who, ns=ns: who.put_configmap(ledger_entry(ns, t)))
            assert "protected namespaces" in message and ns in message
    assert core_v1.list_namespaced_config_map("kube-system", label_selector=ledger.LABEL).items == []

    # in a build namespace, a ConfigMap that is not Longshot's may not be created, changed or deleted
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "team-settings"}, "data": {"k": "v"}})
    tenant = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "evil"},
              "metadata": {"name": "team-settings", "namespace": namespace}}
    for who in (operator, gateway):
        refused(lambda who=who: who.put_configmap(tenant))  # create: 409, then the patch is refused
    assert "managed-by=longshot-operator" in refused(lambda: operator.delete_configmap(namespace, "team-settings"))
    assert core_v1.read_namespaced_config_map("team-settings", namespace).data == {"k": "v"}
    # relabelling a tenant's ConfigMap as Longshot's is a change of an object that was not Longshot's
    relabel = {"metadata": {"labels": {"app.kubernetes.io/managed-by": "longshot-operator"}}}
    refused(lambda: kubernetes.client.CoreV1Api(operator.client).patch_namespaced_config_map(
        "team-settings", namespace, relabel))

    # nor a Pod that would own the node, even labelled as an agent, in a namespace without Pod Security
    bare = f"{namespace[:50]}-bare"
    kubectl("create", "namespace", bare)
    privileged = {"metadata": {"name": "root", "namespace": bare,
                               "labels": {"app.kubernetes.io/managed-by": "longshot-operator"}},
                  "spec": {"hostPID": True, "containers": [{"name": "c", "image": "busybox",
                                                             "securityContext": {"privileged": True}}]}}
    try:
        assert "no host network" in refused(lambda: operator.create_pod(privileged))
    finally:
        kubectl("delete", "namespace", bare, "--wait=false", check=False)


# --- a bogus token costs one TokenReview -------------------------------------------------------------------------

def token_reviews(kubectl: Any) -> float:
    """TokenReviews the API server has served, from its own /metrics."""
    text = kubectl("get", "--raw", "/metrics").stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("apiserver_request_total{") and 'resource="tokenreviews"' in line)


def gateway_reviews(url: str, result: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    prefix = f'longshot_gateway_token_reviews_total{{result="{result}"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_a_bogus_token_repeated_costs_one_token_review(kubectl: Any, gateway: Any, namespace: str) -> None:
    headers = {"Authorization": f"Bearer bogus-{namespace}"}
    url = f"{gateway.url}/git/{namespace}/b1.git/info/refs?service=git-upload-pack"
    before, ours = token_reviews(kubectl), gateway_reviews(gateway.metrics_url, "refused")
    for _ in range(20):
        assert httpx.get(url, headers=headers, timeout=30).status_code == 401
    assert token_reviews(kubectl) - before == 1
    assert gateway_reviews(gateway.metrics_url, "refused") - ours == 1


# --- receive-pack's environment ----------------------------------------------------------------------------------

PASSWORD = "s3cr3t-upstream-passw0rd-h5"
IDENTITY = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
            "GIT_TERMINAL_PROMPT": "0"}
admin = git_servers.Git(IDENTITY, isolated=True, strip=True)


def test_receive_pack_and_the_hook_run_without_the_upstream_credential_in_their_environment(
        gateway: Any, gateway_settings: Any, core_v1: Any, custom: Any, namespace: str, tmp_path: Path) -> None:
    root = tmp_path / "forge"
    root.mkdir()
    admin("init", "--quiet", "--bare", "-b", "main", str(root / "app.git"))
    seed = tmp_path / "seed"
    admin("init", "--quiet", "-b", "main", str(seed))
    (seed / "README.md").write_text("# app\n")
    admin("add", "-A", cwd=seed)
    admin("commit", "--quiet", "-m", "initial", cwd=seed)
    admin("push", "--quiet", str(root / "app.git"), "main", cwd=seed)
    # the hook, wrapped: it records receive-pack's environment (its parent's, from /proc) and its own, then runs
    mirror = Path(gateway_settings.mirror_dir)
    dumps = tmp_path / "env"
    dumps.mkdir()
    (mirror / "hooks" / "pre-receive").write_text(
        "#!/bin/sh\n"
        f"cat /proc/$PPID/environ > {shlex.quote(str(dumps / 'receive-pack'))}\n"
        f"cat /proc/$$/environ > {shlex.quote(str(dumps / 'hook'))}\n"
        f"exec {shlex.quote(sys.executable)} -m longshot.gateway.hook\n")

    with git_servers.git_http(root, git=admin, accounts=[("alice", PASSWORD)]) as forge:
        secret(core_v1, namespace, "git-token", {"username": "alice", "password": PASSWORD})
        a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec={
            "repository": {"url": forge.url("app"), "credentialsSecret": "git-token"}})
        env = {**IDENTITY, "PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_COUNT": "1",
               "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {a.token}"}
        work = tmp_path / "work"
        repo = f"{gateway.url}/git/{namespace}/b1.git"
        r = subprocess.run(["git", "clone", "--quiet", repo, str(work)], env=env, capture_output=True,
                                       text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        (work / "f.txt").write_text("f")
        admin("add", "-A", cwd=work)
        admin("commit", "--quiet", "-m", "f", cwd=work)
        head = admin("rev-parse", "HEAD", cwd=work)
        r = subprocess.run(["git", "push", "--porcelain", repo,
                                        f"HEAD:refs/heads/longshot/{namespace}/b1/b1-t1"],
                                       cwd=work, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        # the push reached the upstream with the build's credential (read from the file by the hook's push only)
        out = admin("for-each-ref", "--format=%(objectname)", f"refs/heads/longshot/{namespace}/b1/b1-t1",
                    cwd=root / "app.git")
        assert out == head

    header = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    for who in ("receive-pack", "hook"):
        environ = (dumps / who).read_bytes().decode(errors="replace")
        assert "GIT_DIR" in environ or who == "receive-pack", environ  # really an environment that was read
        assert PASSWORD not in environ and header not in environ, f"{who}'s environment holds the credential"
    hook_env = dict(e.split("=", 1) for e in (dumps / "hook").read_text().split("\0") if "=" in e)
    credential_file = hook_env["LONGSHOT_GATEWAY_CREDENTIALS_FILE"]
    assert Path(credential_file).parent == mirror / "keys"
    assert not Path(credential_file).exists()  # removed once the push was over
    assert [p for p in (mirror / "keys").iterdir() if p.name.startswith(".credential-")] == []
