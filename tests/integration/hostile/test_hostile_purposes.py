"""Hostile tenants, references and purposes (issue 50, items 3 and 9).

A namespace user names the forge token Secret of someone else's build (``spec.merge.pullRequest.tokenSecretRef``):
the operator would read it with its own rights and send it as ``Authorization: Bearer`` to the author's
``apiUrl``. The chart's Secret-access policy, generated from the models, refuses it naming the field.

An installation allows its git server (the local cluster's shape: a private address, for git on one port). A
BuildRequest names another port of that host, or the git port itself, as its model endpoint: the chart's egress
policy refuses it at admission naming the field, and the real gateway refuses the model call before connecting
(a stand-in listening there receives nothing), while the same entry still serves git, and a listed model endpoint
still works.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from chart_render import of_kinds, render
from gateway_attempts import make_attempt
from gateway_fakes import fake_model
from git_servers import Git, GitHTTPServer, git_http
from k8s_builders import build

from longshot_testing import wait_for

pytestmark = pytest.mark.integration

GIT_HOST = "10.244.0.1"
"""The local cluster's git server (hack/demo.sh, tests/e2e): allowed for git on port 3000 only."""
LOCAL_ALLOW = f'egress.allow=[{{"cidr": "{GIT_HOST}/32", "purposes": ["git"], "ports": [3000]}}]'


def _as(user: str, kubectl: Any, namespace: str, obj: dict[str, Any], dry_run: bool = False) -> Any:
    return kubectl(f"--as={user}", "-n", namespace, "create", "-f", "-",
                   *(["--dry-run=server"] if dry_run else []), input=json.dumps(obj), check=False)


def _install(kubectl: Any, docs: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    docs = [d for d in of_kinds(docs, "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
            if d["metadata"]["name"].endswith(suffix)]
    assert len(docs) == 2, [d["metadata"]["name"] for d in docs]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    return docs


def _forge_build(name: str, secret: str) -> dict[str, Any]:
    return build(name, merge={"delivery": "pullRequest", "pullRequest": {
        "provider": "github", "apiUrl": "https://forge.example.com/api/v3", "project": "o/r",
        "tokenSecretRef": {"name": secret}}})


# --- admission: the forge token is a reference like the others -----------------------------------------------

@pytest.fixture
def secret_access(kubectl: Any, control_plane: Any, namespace: str) -> Iterator[None]:
    """The chart's secret-access policy bound to this namespace; mallory may create BuildRequests only, the
    release team may also read the forge token."""
    kubectl("-n", namespace, "create", "secret", "generic", "release-forge-token", "--from-literal=token=ghp_t0p")
    author = {"apiGroups": ["longshot.dev"], "resources": ["buildrequests"], "verbs": ["get", "list", "create"]}
    reader = {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["release-forge-token"], "verbs": ["get"]}
    objs: list[dict[str, Any]] = []
    for user, rules in (("mallory", [author]), ("release", [author, reader])):
        objs += [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                  "metadata": {"name": user, "namespace": namespace}, "rules": rules},
                 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                  "metadata": {"name": user, "namespace": namespace},
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
                  "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))
    docs = _install(kubectl, render(
        control_plane, namespace, f"admissionPolicy.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name="
        f"{namespace}", "egress.admission=false", release=f"sa-{namespace[-6:]}"), "-secret-access")
    probe = build("probe", repository__credentialsSecret="release-forge-token")
    wait_for(lambda: _as("mallory", kubectl, namespace, probe, dry_run=True).returncode != 0, timeout=30,
             what="the secret-access policy to take effect")
    yield
    kubectl("delete", "-f", "-", "--wait=false", "--ignore-not-found", input=yaml.safe_dump_all(docs), check=False)


def test_a_forge_token_the_author_may_not_read_is_refused_naming_the_field(
        kubectl: Any, namespace: str, secret_access: None) -> None:
    refused = _as("mallory", kubectl, namespace, _forge_build("exfiltrate", "release-forge-token"))
    assert refused.returncode != 0, refused.stdout
    assert (f"spec.merge.pullRequest.tokenSecretRef.name: mallory may not get Secret {namespace}/release-forge-token"
            "; a BuildRequest may only name Secrets its author can read") in refused.stderr, refused.stderr
    assert "ghp_t0p" not in refused.stderr
    # the team that may read the token may name it
    admitted = _as("release", kubectl, namespace, _forge_build("release", "release-forge-token"))
    assert admitted.returncode == 0, admitted.stderr


# --- admission: a git server is not a model endpoint ------------------------------------------------------------

@pytest.fixture
def egress_admission(kubectl: Any, control_plane: Any, namespace: str) -> Iterator[None]:
    docs = _install(kubectl, render(
        control_plane, namespace, f"admissionPolicy.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name="
        f"{namespace}", release=f"ep-{namespace[-6:]}", json_sets=[LOCAL_ALLOW]), "-egress")
    probe = json.dumps(build("probe", repository__url=f"http://{GIT_HOST}:4000/r.git"))
    wait_for(lambda: kubectl("-n", namespace, "create", "--dry-run=server", "-f", "-", input=probe,
                             check=False).returncode != 0, timeout=30, what="the egress policy to take effect")
    yield
    kubectl("delete", "-f", "-", "--wait=false", "--ignore-not-found", input=yaml.safe_dump_all(docs), check=False)


def _model(url: str) -> dict[str, Any]:
    return {"backend": "openai", "model": "m", "baseUrl": url}


@pytest.mark.parametrize(("field", "patch", "where"), [
    ("spec.agent.baseUrl", {"agent": _model(f"http://{GIT_HOST}:4000/v1")}, f"{GIT_HOST} on port 4000"),
    ("spec.agent.baseUrl", {"agent": _model(f"http://{GIT_HOST}:3000/v1")}, f"{GIT_HOST} on port 3000"),
    ("spec.planner.issues.url", {"planner": {"source": "issues", "issues": {
        "url": f"http://{GIT_HOST}:3000/api/v4", "provider": "gitlab", "repository": "7"}}},
     f"{GIT_HOST} on port 3000"),
    ("spec.repository.url", {"repository__url": f"http://{GIT_HOST}:4000/o/r.git"}, f"{GIT_HOST} on port 4000"),
])
def test_admission_refuses_the_git_host_for_another_purpose_or_port(
        kubectl: Any, namespace: str, egress_admission: None, field: str, patch: dict[str, Any], where: str) -> None:
    obj = build("b1", **{"repository__url": f"http://{GIT_HOST}:3000/o/r.git", **patch})
    refused = kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(obj), check=False)
    assert refused.returncode != 0, refused.stdout
    purpose = {"spec.agent.baseUrl": "model", "spec.planner.issues.url": "tracker", "spec.repository.url": "git"}[field]
    assert f"{field}: the host {where} is not allowed for {purpose} by the egress policy" in refused.stderr, (
        refused.stderr)


def test_admission_lets_the_git_host_serve_git_on_its_port(kubectl: Any, namespace: str,
                                                          egress_admission: None) -> None:
    for i, url in enumerate((f"http://{GIT_HOST}:3000/o/r.git", "http://git-server.longshot-system.svc:3000/o.git")):
        created = kubectl("-n", namespace, "create", "-f", "-", check=False,
                          input=json.dumps(build(f"ok{i}", repository__url=url)))
        assert created.returncode == 0, (url, created.stderr)


# --- the gateway: a model call never reaches the git host -------------------------------------------------------

def _bare_repository(root: Path) -> Git:
    git = Git({"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1"}, isolated=True)
    work = root / "work"
    git("init", "-q", "-b", "main", str(work))
    (work / "README.md").write_text("hello\n")
    git("add", "README.md", cwd=work)
    git("commit", "-qm", "init", cwd=work)
    git("clone", "-q", "--bare", str(work), str(root / "repo.git"))
    return git


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitHTTPServer]:
    root = tmp_path / "served"
    root.mkdir()
    with git_http(root, git=_bare_repository(root)) as server:
        yield server


@pytest.fixture
def stand_ins() -> Iterator[tuple[Any, Any]]:
    """A listed model endpoint, and a stand-in on another port of the git host (unlisted)."""
    with fake_model() as listed, fake_model() as other_port:
        yield listed, other_port


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.fixture
def gateway_settings(gateway_settings: Any, git_server: GitHTTPServer, stand_ins: tuple[Any, Any]) -> Any:
    """The tier's gateway without its loopback allowance: loopback is the git host, allowed for git on the git
    server's port, and for model on the listed model endpoint's port only."""
    listed, _ = stand_ins
    allow = [{"cidr": "127.0.0.1/32", "purposes": ["git"], "ports": [_port(git_server.url("repo"))]},
             {"cidr": "127.0.0.1/32", "purposes": ["model"], "ports": [_port(listed.url)]}]
    return gateway_settings.replace(egress_allowed_cidrs="", egress_allow=json.dumps(allow))


def test_the_gateway_sends_no_model_call_to_the_git_host(
        gateway: Any, core_v1: Any, custom: Any, namespace: str, git_server: GitHTTPServer,
        stand_ins: tuple[Any, Any]) -> None:
    listed, other_port = stand_ins
    repo = git_server.url("repo")
    git_base = repo.rsplit("/", 1)[0]
    for i, base in enumerate((f"{other_port.url}/v1", f"{git_base}/v1")):
        a = make_attempt(core_v1, custom, namespace, gateway.url, build=f"b{i}", task=f"b{i}-t1",
                         build_spec={"repository": {"url": repo}, "agent": _model(base)})
        r = httpx.post(f"{gateway.url}/model/openai/chat/completions", json={"model": "m", "messages": []},
                       headers=a.headers, timeout=30)
        assert r.status_code == 403, (base, r.text)
        message = r.json()["error"]["message"]
        # the address is listed for model on another port only: the refusal says so, and what the git entry is for
        assert message.startswith("longshot-gateway: spec.agent.baseUrl") and "(port-not-allowed)" in message, (
            message)
        assert f"is not allowed for model: the allowlist has 127.0.0.1/32 (egress.allow: git on port {_port(repo)})" \
            in message, message
    assert other_port.seen == []  # the stand-in on another port of the git host received nothing
    assert [r for r in git_server.requests if "/v1" in r[1]] == []  # nor did the git server on its own port

    # the same entries still serve what they list: git from the git host, model calls to the listed endpoint
    a = make_attempt(core_v1, custom, namespace, gateway.url, build="ok", task="ok-t1",
                     build_spec={"repository": {"url": repo}, "agent": _model(f"{listed.url}/v1")})
    refs = httpx.get(f"{gateway.url}/git/{namespace}/ok.git/info/refs", params={"service": "git-upload-pack"},
                     headers=a.headers, timeout=60)
    # the mirror fetch reached the git server (which then asks for a credential this build does not name)
    assert "egress" not in refs.text, refs.text
    assert any("info/refs" in r[1] for r in git_server.requests), git_server.requests
    httpx.post(f"{gateway.url}/model/openai/chat/completions", json={"model": "m", "messages": []},
               headers=a.headers, timeout=30)
    assert len(listed.seen) == 1
