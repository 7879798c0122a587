"""Hostile tenants, egress (issue 29, item 1 and the userinfo part of item 10): a BuildRequest author names a
destination inside the cluster's network, the cloud metadata service or a URL carrying a token.

On the real API server: the CRD refuses user information in every URL field, and the chart's admission policy
refuses hosts off the operator's allowlist and literal addresses in denied ranges, each naming the field. Against
the real gateway (in-process, its egress policy without the tier's loopback allowance): model calls to
169.254.169.254, 127.0.0.1, a decimal form of the metadata address and a name resolving to loopback are refused
before any connection, with the same message whether anything answers there; a repository on loopback is never
fetched. And git itself: the merge queue's workspace connects to the address that was checked (a name no DNS
knows, pinned), and a name that rebinds to the metadata address between two fetches is refused.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from chart_render import of_kinds, render
from gateway_attempts import make_attempt
from gateway_fakes import fake_model
from git_servers import Git, git_http
from k8s_builders import build

from longshot.core import egress
from longshot.net import guard as gd
from longshot.vcs import workspace as vws
from longshot_testing import wait_for

pytestmark = pytest.mark.integration


# --- the CRD: no credentials in a URL -------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "obj"), [
    ("spec.repository.url", build("b1", repository__url="https://x-access-token:ghp_s3cret@github.com/o/r.git")),
    ("spec.repository.url", build("b1", repository__url="https://bob@github.com/o/r.git")),
    ("spec.repository.url", build("b1", repository__url="ssh://git:s3cret@github.com/o/r.git")),
    ("spec.agent.baseUrl", build("b1", agent={"backend": "openai", "model": "m",
                                              "baseUrl": "https://user:s3cret@api.example.com/v1"})),
    ("spec.planner.issues.url", build("b1", planner={"source": "issues", "issues": {
        "url": "https://tok:s3cret@gitlab.example.com/api/v4", "provider": "gitlab", "repository": "7"}})),
])
def test_a_url_with_credentials_is_refused_by_the_crd_naming_the_field(kubectl: Any, namespace: str, field: str,
                                                                      obj: dict[str, Any]) -> None:
    refused = kubectl("-n", namespace, "create", "-f", "-", input=json.dumps(obj), check=False)
    assert refused.returncode != 0
    assert f"{field} must not carry credentials" in refused.stderr, refused.stderr


def test_an_ssh_user_name_is_not_a_credential(kubectl: Any, namespace: str) -> None:
    for i, url in enumerate(("ssh://git@github.com/o/r.git", "git@github.com:o/r.git")):
        created = kubectl("-n", namespace, "create", "-f", "-", check=False,
                          input=json.dumps(build(f"b{i}", repository__url=url)))
        assert created.returncode == 0, created.stderr


# --- admission: the allowlist -----------------------------------------------------------------------------------

@pytest.fixture
def egress_admission(kubectl: Any, control_plane: Any, namespace: str) -> Any:
    docs = render(control_plane, namespace,
                  f"admissionPolicy.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={namespace}",
                  "egress.allowedHosts={github.com,*.example.com}", release=f"eg-{namespace[-6:]}",
                  json_sets=['egress.allow=[{"cidr": "203.0.113.0/24", "purposes": ["model"], "ports": [8000]}, '
                             '{"cidr": "203.0.113.0/24", "purposes": ["forge"], "ports": [80]}]'])
    docs = [d for d in of_kinds(docs, "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
            if d["metadata"]["name"].endswith("-egress")]
    assert len(docs) == 2
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    probe = json.dumps(build("probe", repository__url="https://evil.invalid/r.git"))
    wait_for(lambda: kubectl("-n", namespace, "create", "--dry-run=server", "-f", "-", input=probe,
                             check=False).returncode != 0, timeout=30, what="the egress policy to take effect")
    yield docs
    kubectl("delete", "-f", "-", "--wait=false", "--ignore-not-found", input=yaml.safe_dump_all(docs), check=False)


def _openai(url: str) -> dict[str, Any]:
    return {"backend": "openai", "model": "m", "baseUrl": url}


def _issues(url: str) -> dict[str, Any]:
    return {"source": "issues", "issues": {"url": url, "provider": "gitlab", "repository": "7"}}


def _intake(url: str) -> dict[str, Any]:
    return {"tracker": {"url": url, "provider": "gitlab", "repository": "7", "labels": ["longshot"],
                        "credentialsSecret": "tracker-token"}}


def _pull_requests(url: str) -> dict[str, Any]:
    return {"delivery": "pullRequest", "pullRequest": {"provider": "github", "apiUrl": url, "project": "o/r",
                                                       "tokenSecretRef": {"name": "forge-token"}}}


REFUSED = [
    ("spec.repository.url", {"repository__url": "https://evil.io/r.git"}, "evil.io"),
    ("spec.repository.url", {"repository__url": "git@evil.io:o/r.git"}, "evil.io"),
    ("spec.repository.url", {"repository__url": "https://example.com/r.git"}, "example.com"),  # *.x is not x
    ("spec.repository.url", {"repository__url": "file:///var/cache/longshot/other-tenant"}, ""),
    ("spec.agent.baseUrl", {"agent": _openai("http://169.254.169.254")}, "169.254.169.254"),
    ("spec.agent.baseUrl", {"agent": _openai("http://127.0.0.1:8080/v1")}, "127.0.0.1"),
    ("spec.agent.baseUrl", {"agent": _openai("http://2852039166/")}, "2852039166"),
    ("spec.agent.baseUrl", {"agent": _openai("http://0x7f.1/")}, "0x7f.1"),
    ("spec.agent.baseUrl", {"agent": _openai("http://[::ffff:169.254.169.254]/")}, "::ffff:169.254.169.254"),
    ("spec.agent.baseUrl", {"agent": _openai("http://[fe80::1]/")}, "fe80::1"),
    ("spec.planner.issues.url", {"planner": _issues("http://10.0.0.1/api/v4")}, "10.0.0.1"),
    ("spec.planner.issues.url", {"planner": _issues("https://API.GITHUB.COM./")}, "api.github.com"),
    ("spec.intake.tracker.url", {"intake": _intake("http://169.254.169.254/api/v4")}, "169.254.169.254"),
    ("spec.intake.tracker.url", {"intake": _intake("https://evil.io/api/v4")}, "evil.io"),
    ("spec.merge.pullRequest.apiUrl", {"merge": _pull_requests("http://10.0.0.1/api/v3")}, "10.0.0.1"),
    ("spec.merge.pullRequest.apiUrl", {"merge": _pull_requests("https://evil.io/api/v3")}, "evil.io"),
]


@pytest.mark.parametrize(("field", "patch", "host"), REFUSED)
def test_admission_refuses_a_destination_off_the_list_naming_the_field(
        kubectl: Any, namespace: str, egress_admission: Any, field: str, patch: dict[str, Any], host: str) -> None:
    base = {"repository__url": "https://github.com/o/r.git"}
    refused = kubectl("-n", namespace, "create", "-f", "-", check=False,
                      input=json.dumps(build("b1", **{**base, **patch})))
    assert refused.returncode != 0
    assert f"{field}: " in refused.stderr and "egress" in refused.stderr, refused.stderr
    if host:
        assert f"the host {host} on port " in refused.stderr, refused.stderr


def test_admission_lets_listed_destinations_through(kubectl: Any, namespace: str, egress_admission: Any) -> None:
    for i, patch in enumerate([
            {"repository__url": "https://github.com/o/r.git"},
            {"repository__url": "https://GitHub.com./o/r.git"},
            {"repository__url": "git@git.example.com:o/r.git"},
            {"repository__url": "ssh://git@deep.git.example.com/o/r.git"},
            {"repository__url": "https://github.com/o/r.git", "agent": _openai("http://203.0.113.9:8000/v1")},
            {"repository__url": "https://github.com/o/r.git", "planner": _issues("https://gitlab.example.com/api/v4")},
            {"repository__url": "https://github.com/o/r.git", "intake": _intake("https://gitlab.example.com/api/v4")},
            {"repository__url": "https://github.com/o/r.git", "merge": _pull_requests("http://203.0.113.7/api/v3")},
    ]):
        created = kubectl("-n", namespace, "create", "-f", "-", check=False, input=json.dumps(build(f"ok{i}", **patch)))
        assert created.returncode == 0, (patch, created.stderr)


# --- the gateway: model calls and mirrors -----------------------------------------------------------------------

@pytest.fixture
def gateway_settings(gateway_settings: Any) -> Any:
    """The tier's gateway without its loopback allowance: the default policy, as a real installation has it."""
    return gateway_settings.replace(egress_allowed_cidrs="")


@pytest.mark.parametrize("base", ["{model}/v1", "http://169.254.169.254/computeMetadata/v1", "http://2852039166",
                                  "http://localhost:{port}/v1", "http://[::ffff:127.0.0.1]:{port}/v1"])
def test_the_gateway_refuses_a_model_base_url_in_a_denied_range_before_connecting(
        gateway: Any, core_v1: Any, custom: Any, namespace: str, base: str) -> None:
    with fake_model() as model:
        port = model.url.rsplit(":", 1)[1]
        url = base.format(model=model.url, port=port)
        a = make_attempt(core_v1, custom, namespace, gateway.url,
                         build_spec={"agent": {"backend": "openai", "model": "m", "baseUrl": url}})
        r = httpx.post(f"{gateway.url}/model/openai/chat/completions", json={"model": "m", "messages": []},
                       headers={**a.headers, "Metadata-Flavor": "Google"}, timeout=30)
        assert r.status_code == 403, r.text
        message = r.json()["error"]["message"]
        assert "spec.agent.baseUrl" in message and "refused by the egress policy" in message, message
        assert model.seen == []


def test_a_refusal_says_the_same_whether_or_not_anything_answers(
        gateway: Any, core_v1: Any, custom: Any, namespace: str) -> None:
    with fake_model() as model:
        live = model.url.rsplit(":", 1)[1]
        messages = []
        for i, port in enumerate((live, "1")):
            a = make_attempt(core_v1, custom, namespace, gateway.url, build=f"b{i}", task=f"b{i}-t1", build_spec={
                "agent": {"backend": "openai", "model": "m", "baseUrl": f"http://127.0.0.1:{port}/v1"}})
            r = httpx.post(f"{gateway.url}/model/openai/models", headers=a.headers, timeout=30)
            messages.append((r.status_code, r.json()["error"]["message"].replace(f":{port}/", ":PORT/")))
        assert messages[0] == messages[1]
        assert model.seen == []


def _bare_repository(root: Path) -> Git:
    git = Git({"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1"}, isolated=True)
    work = root / "work"
    git("init", "-q", "-b", "main", str(work))
    (work / "README.md").write_text("hello\n")
    git("add", "README.md", cwd=work)
    git("commit", "-qm", "init", cwd=work)
    git("clone", "-q", "--bare", str(work), str(root / "repo.git"))
    git("-C", str(root / "repo.git"), "config", "http.receivepack", "true")
    return git


def test_the_gateway_never_fetches_a_repository_on_loopback(
        gateway: Any, core_v1: Any, custom: Any, namespace: str, tmp_path: Path) -> None:
    git = _bare_repository(tmp_path)
    with git_http(tmp_path, git=git) as server:
        a = make_attempt(core_v1, custom, namespace, gateway.url,
                         build_spec={"repository": {"url": server.url("repo")}})
        r = httpx.get(f"{gateway.url}/git/{namespace}/b1.git/info/refs", params={"service": "git-upload-pack"},
                      headers=a.headers, timeout=30)
        assert r.status_code == 502
        assert "spec.repository.url" in r.text and "refused by the egress policy (denied-range)" in r.text, r.text
        assert server.requests == []


# --- git: connect to the checked address -------------------------------------------------------------------------

class Rebinding:
    """A resolver whose answers for a name change from one lookup to the next (the last one repeats)."""

    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_git_connects_to_the_checked_address_and_a_rebinding_is_refused(tmp_path: Path) -> None:
    git = _bare_repository(tmp_path)
    with git_http(tmp_path, git=git, accounts=[("u", "p4ss")]) as server:
        resolver = Rebinding([["127.0.0.1"], ["169.254.169.254"]])
        guard = gd.Guard(egress.Policy.parse(allowed_hosts="none", allowed_cidrs="127.0.0.1/32", allow=[
            {"host": "git.invalid", "purposes": ["git"], "ports": [server.port]}]), resolve=resolver)
        # .invalid: no DNS answers it, so the fetch works only if git connects where the guard pinned it
        w = vws.Workspace(f"http://git.invalid:{server.port}/repo.git", tmp_path / "ws", egress=guard,
                          credentials=vws.GitCredentials(username="u", password="p4ss")).ensure()
        with w.locked():
            w.fetch("main")
            assert w.resolve("refs/remotes/origin/main^{commit}")[0]
            with pytest.raises(vws.GitError, match=r"spec.repository.url .* \(denied-range\)"):
                w.fetch("main")
        assert resolver.calls == 2
        assert len([r for r in server.requests if "info/refs" in r[1] and r[2] == "u"]) == 1  # one fetch got in
    # without the pin, git would have had to resolve the name itself, and could not
    plain = subprocess.run(["git", "ls-remote", f"http://git.invalid:{server.port}/repo.git"], capture_output=True,
                           text=True, check=False, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert plain.returncode != 0


# --- the operator: a refused destination is a Configuration stop naming the field --------------------------------

@pytest.mark.parametrize(("field", "patch"), [
    ("spec.agent.baseUrl", {"agent": {"backend": "openai", "model": "m", "baseUrl": "http://169.254.169.254/v1"}}),
    ("spec.planner.issues.url", {"planner": {"source": "issues", "issues": {
        "url": "http://[::ffff:10.0.0.1]/api/v4", "provider": "gitlab", "repository": "7"}}}),
])
def test_the_operator_stops_a_build_with_a_refused_destination_before_any_pod(
        operator: Any, core_v1: Any, custom: Any, namespace: str, field: str, patch: dict[str, Any],
        sample_repository: Any) -> None:
    from k8s_builders import condition, create, get

    create(custom, namespace, build("demo", **patch))

    def stalled() -> Any:
        b = get(custom, namespace, "buildrequests", "demo")
        s = condition(b, "Stalled") or {}
        return b if s.get("status") == "True" and s.get("reason") == "Configuration" else None

    b = wait_for(stalled, timeout=30, what="Stalled=True/Configuration")
    message = condition(b, "Ready")["message"]
    assert message.startswith(f"{field} ") and "refused by the egress policy" in message, message
    assert core_v1.list_namespaced_pod(namespace).items == []
