"""``kubectl longshot``'s pure parts (issue 53 part 3): the kubeconfig merged as kubectl merges it, impersonation
headers, every error as one sentence, the completion scripts, ``list``'s rows and the fold ``tree -w`` draws from."""

from __future__ import annotations

import io
import json
import os
import ssl
from datetime import UTC, datetime

import kubernetes
import pytest
import urllib3

from longshot.cli import completion, errors, kubeconfig, view
from longshot.cli import main as cli

pytestmark = pytest.mark.unit


# --- kubeconfig --------------------------------------------------------------------------------------


def cfg(current=None, clusters=(), users=(), contexts=()):
    out = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": n, "cluster": c} for n, c in clusters],
           "users": [{"name": n, "user": u} for n, u in users],
           "contexts": [{"name": n, "context": c} for n, c in contexts]}
    if current:
        out["current-context"] = current
    return out


def test_files_are_the_flag_else_kubeconfig_entries_in_order_else_home():
    assert kubeconfig.files("/x", "/a:/b", "/home/me") == ["/x"]
    assert kubeconfig.files(None, f"/a{os.pathsep}{os.pathsep}/b{os.pathsep}/a", "/home/me") == ["/a", "/b"]
    assert kubeconfig.files(None, "", "/home/me") == ["/home/me/.kube/config"]
    assert kubeconfig.files(None, None, "/home/me") == ["/home/me/.kube/config"]


def test_the_first_file_to_define_a_name_wins_and_the_first_current_context_wins():
    a = cfg(clusters=[("c", {"server": "https://first"})], contexts=[("x", {"cluster": "c", "user": "u"})])
    b = cfg(current="y", clusters=[("c", {"server": "https://second"}), ("d", {"server": "https://d"})],
            users=[("u", {"token": "t"})], contexts=[("x", {"cluster": "d", "user": "u"}), ("y", {"cluster": "d"})])
    c = cfg(current="x")
    merged = kubeconfig.merge([("/cfg/a", a), ("/cfg/missing", None), ("/cfg/b", b), ("/cfg/c", c)])
    assert merged["current-context"] == "y"  # a sets none; b's, not c's
    assert [(e["name"], e["cluster"]["server"]) for e in merged["clusters"]] == [
        ("c", "https://first"), ("d", "https://d")]
    assert [(e["name"], e["context"].get("cluster")) for e in merged["contexts"]] == [("x", "c"), ("y", "d")]
    assert merged["users"] == [{"name": "u", "user": {"token": "t"}}]


def test_relative_paths_are_relative_to_the_file_that_holds_them():
    a = cfg(clusters=[("c", {"server": "https://s", "certificate-authority": "ca.crt"})],
            users=[("u", {"client-certificate": "../certs/me.crt", "client-key": "/abs/me.key", "tokenFile": "tok",
                          "exec": {"command": "./bin/login", "apiVersion": "client.authentication.k8s.io/v1"}}),
                   ("v", {"exec": {"command": "gke-gcloud-auth-plugin"}})])
    merged = kubeconfig.merge([("/home/me/.kube/team/config", a)])
    assert merged["clusters"][0]["cluster"]["certificate-authority"] == "/home/me/.kube/team/ca.crt"
    user = merged["users"][0]["user"]
    assert user["client-certificate"] == "/home/me/.kube/certs/me.crt" and user["client-key"] == "/abs/me.key"
    assert user["tokenFile"] == "/home/me/.kube/team/tok" and user["exec"]["command"] == "/home/me/.kube/team/bin/login"
    assert merged["users"][1]["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"  # found on PATH, as kubectl does
    assert a["clusters"][0]["cluster"]["certificate-authority"] == "ca.crt"  # the input is not changed


def test_a_malformed_kubeconfig_is_refused_naming_the_file():
    with pytest.raises(kubeconfig.KubeconfigError, match="/k: clusters is not a list"):
        kubeconfig.merge([("/k", {"clusters": {"a": 1}})])
    with pytest.raises(kubeconfig.KubeconfigError, match="/k: an entry of users has no name"):
        kubeconfig.merge([("/k", {"users": [{"user": {}}]})])
    with pytest.raises(kubeconfig.KubeconfigError, match="/k is not a mapping"):
        kubeconfig.merge([("/k", ["x"])])  # type: ignore[list-item]


def test_the_identity_is_the_context_and_its_namespace_and_the_flags_replace_the_users_impersonation():
    merged = cfg(current="x", users=[("u", {"as": "bob", "as-groups": ["g1"], "as-user-extra": {"scopes": ["a"]}})],
                 contexts=[("x", {"cluster": "c", "user": "u", "namespace": "team-a"}), ("y", {"cluster": "c"})])
    who = kubeconfig.identity(merged, None)
    assert (who.context, who.namespace) == ("x", "team-a")
    assert who.headers() == [("Impersonate-User", "bob"), ("Impersonate-Group", "g1"),
                             ("Impersonate-Extra-scopes", "a")]
    who = kubeconfig.identity(merged, None, as_user="alice", as_groups=["g2", "g3"], as_uid="42")
    assert who.headers() == [("Impersonate-User", "alice"), ("Impersonate-Group", "g2"), ("Impersonate-Group", "g3"),
                             ("Impersonate-Uid", "42")]
    assert kubeconfig.identity(merged, "y").namespace is None and kubeconfig.identity(merged, "y").headers() == []
    with pytest.raises(kubeconfig.KubeconfigError, match=r"no context 'z' \(contexts: x, y\)"):
        kubeconfig.identity(merged, "z")
    with pytest.raises(kubeconfig.KubeconfigError, match="no current-context; pass --context"):
        kubeconfig.identity(cfg(), None)
    with pytest.raises(kubeconfig.KubeconfigError, match="--as-group and --as-uid need --as"):
        kubeconfig.identity(merged, "y", as_groups=["g"])


def test_impersonation_sends_each_group_as_its_own_header_and_the_default_timeout():
    sent = {}

    class Rest:
        def request(self, method, url, headers=None, body=None, post_params=None, _request_timeout=None):
            sent.update(method=method, headers=headers, timeout=_request_timeout)
            return "answer"

    api = type("Api", (), {})()
    api.rest_client = Rest()
    cli.impersonating(api, [("Impersonate-User", "alice"), ("Impersonate-Group", "a"), ("Impersonate-Group", "b")],
                      7.0)
    assert api.rest_client.request("GET", "/x", headers={"Accept": "application/json"}) == "answer"
    assert sent["headers"].getlist("Impersonate-Group") == ["a", "b"] and sent["headers"]["Accept"]
    assert list(sent["headers"].items()).count(("Impersonate-Group", "a")) == 1  # sent as separate header lines
    assert sent["timeout"] == 7.0
    api.rest_client.request("GET", "/x", _request_timeout=(10, 65))
    assert sent["timeout"] == (10, 65)  # a watch's own timeout stays


@pytest.mark.parametrize(("content", "said"), [
    (None, "the kubeconfig {path} does not exist"),
    ("", "the kubeconfig {path} is empty"),
    ("clusters: [unclosed", "the kubeconfig {path} is not YAML: "),
    ("clusters: {a: 1}", "the kubeconfig {path}: clusters is not a list"),
    ("apiVersion: v1\nkind: Config\n", "the kubeconfig has no current-context; pass --context"),
])
def test_an_unusable_kubeconfig_file_is_one_sentence_before_any_request(tmp_path, content, said):
    path = tmp_path / "config"
    if content is not None:
        path.write_text(content)
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["--kubeconfig", str(path), "list"], out=out, err=err) == 1
    assert err.getvalue().startswith("error: " + said.format(path=path)) and err.getvalue().count("\n") == 1


# --- errors ------------------------------------------------------------------------------------------


def api_error(status: int, reason: str, message: str) -> kubernetes.client.ApiException:
    body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                       "reason": reason, "code": status})
    return kubernetes.client.ApiException(status=status, reason=reason, body=body)


S = "https://10.0.0.1:6443"
FORBIDDEN = ('buildrequests.longshot.dev is forbidden: User "alice" cannot list resource "buildrequests" in API '
             'group "longshot.dev" in the namespace "team-a"')
CERT = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
CERT.verify_message = "self-signed certificate in certificate chain"
CASES = [
    (api_error(401, "Unauthorized", "Unauthorized"),
     f"the API server at {S} did not accept your credentials (401 Unauthorized): the kubeconfig's user has a wrong "
     "or expired token or certificate; log in again"),
    (api_error(403, "Forbidden", FORBIDDEN), f"the API server refused (403 Forbidden): {FORBIDDEN}"),
    (api_error(404, "NotFound", 'buildrequests.longshot.dev "x" not found'),
     'not found (404): buildrequests.longshot.dev "x" not found'),
    (api_error(404, "NotFound", "the server could not find the requested resource"),
     "not found (404): the server could not find the requested resource; are Longshot's CRDs installed (kubectl get "
     "crd buildrequests.longshot.dev)?"),
    (api_error(409, "Conflict", "the object has been modified"),
     "the API server refused (409): the object has been modified"),
    (api_error(422, "Invalid", 'AgentTask.longshot.dev "t" is invalid: spec.agent.model: Too long\nmore'),
     'the API server refused (422): AgentTask.longshot.dev "t" is invalid: spec.agent.model: Too long more'),
    (api_error(429, "TooManyRequests", "slow down"),
     "the API server is throttling requests (429): slow down; try again shortly"),
    (api_error(410, "Expired", "too old resource version: 5 (9)"),
     "the API server no longer has that version (410 Gone): too old resource version: 5 (9); run the command again"),
    (api_error(503, "ServiceUnavailable", "etcd is down."), "the API server failed (503): etcd is down"),
    (kubernetes.client.ApiException(status=500, reason="Internal Server Error"),
     "the API server failed (500): Internal Server Error"),
    (urllib3.exceptions.MaxRetryError(None, "/apis", urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused")),
     f"cannot connect to the API server at {S}: connection refused (is the cluster running, and is the kubeconfig's "
     "server right?)"),
    (urllib3.exceptions.MaxRetryError(None, "/apis", urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 113] No route to host")),
     f"cannot connect to the API server at {S}: [Errno 113] No route to host"),
    (urllib3.exceptions.MaxRetryError(None, "/apis", urllib3.exceptions.NameResolutionError(
        "api.example", None, OSError("Name or service not known"))),
     f"the API server's host in {S} does not resolve: check the kubeconfig's server"),
    (urllib3.exceptions.MaxRetryError(None, "/apis", urllib3.exceptions.SSLError(CERT)),
     f"the TLS handshake with the API server at {S} failed (certificate verify failed: self-signed certificate in "
     "certificate chain): check the kubeconfig's certificate-authority for this cluster"),
    (urllib3.exceptions.MaxRetryError(None, "/apis", urllib3.exceptions.SSLError(
        ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"))),
     f"the TLS handshake with the API server at {S} failed ([SSL: WRONG_VERSION_NUMBER] wrong version number): "
     "check the kubeconfig's certificate-authority for this cluster"),
    (urllib3.exceptions.MaxRetryError(None, "/apis", urllib3.exceptions.ConnectTimeoutError(None, "timed out")),
     f"the API server at {S} did not accept a connection in time (connect timeout)"),
    (urllib3.exceptions.MaxRetryError(None, "/apis", urllib3.exceptions.ReadTimeoutError(None, "/apis", "timed out")),
     f"the API server at {S} did not answer in time (read timeout); try --request-timeout"),
    (urllib3.exceptions.ReadTimeoutError(None, "/apis", "Read timed out."),
     f"the API server at {S} did not answer in time (read timeout); try --request-timeout"),
    (urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer")),
     f"the connection to the API server at {S} was cut (Connection aborted)"),
    (ssl.SSLError(1, "[SSL] record layer failure"),
     f"the TLS handshake with the API server at {S} failed ([SSL] record layer failure): check the kubeconfig's "
     "certificate-authority for this cluster"),
    (kubernetes.config.ConfigException("Invalid kube-config file. No configuration found."),
     "the kubeconfig cannot be used: Invalid kube-config file. No configuration found"),
    (kubeconfig.KubeconfigError("the kubeconfig has no current-context; pass --context"),
     "the kubeconfig has no current-context; pass --context"),
    (ConnectionRefusedError(111, "Connection refused"), f"cannot connect to the API server at {S}: connection refused"),
    (TimeoutError("timed out"), f"the API server at {S} did not answer in time"),
    (ValueError("bad\nvalue\x1b[31m"), "ValueError: bad value"),
]


@pytest.mark.parametrize(("exc", "text"), CASES, ids=[f"{type(e).__name__}-{i}" for i, (e, _) in enumerate(CASES)])
def test_every_failure_is_one_sentence(exc, text):
    said = errors.sentence(exc, S)
    assert said == text
    assert "\n" not in said and all(c.isprintable() for c in said) and len(said) <= errors.MAX


def test_a_long_message_is_cut_to_one_bounded_line():
    said = errors.sentence(api_error(422, "Invalid", "x" * 5000), S)
    assert len(said) == errors.MAX and said.endswith("…")


def test_main_prints_the_sentence_on_stderr_with_exit_code_1():
    class Refusing(cli.Kube):
        def get(self, kind, name):
            raise api_error(403, "Forbidden", FORBIDDEN)

    api = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=S))
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["tree", "b"], out=out, err=err, kube=Refusing(api, "team-a")) == 1
    assert out.getvalue() == "" and err.getvalue() == f"error: the API server refused (403 Forbidden): {FORBIDDEN}\n"


def test_version_client_needs_no_api_server():
    assert cli_out(["version", "--client"]) == "plugin: 0.1.0\n"
    assert json.loads(cli_out(["version", "--client", "-o", "json"])) == {"plugin": {"version": "0.1.0"}}


# --- completion --------------------------------------------------------------------------------------


def subcommands() -> list[str]:
    _, cmds = completion.commands(cli.parser())
    return [c.name for c in cmds]


def test_the_parser_has_the_commands_a_person_expects():
    assert {"list", "tree", "logs", "version", "completion", "answer", "say", "approve", "retry", "relaunch",
            "suspend", "resume", "cancel", "trace"} == set(subcommands())


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_every_subcommand_and_flag_appears_in_each_shells_script(shell):
    text = cli_out(["completion", shell])
    _, cmds = completion.commands(cli.parser())
    for c in cmds:
        assert c.name in text, (shell, c.name)
        for f in c.flags:
            for n in f.names:
                assert (n.lstrip("-") if shell == "fish" else n) in text, (shell, c.name, n)
    assert "json yaml" in text and "bash zsh fish" in text


def cli_out(argv: list[str]) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(argv, out=out, err=err) == 0, err.getvalue()  # no API server needed: no kube passed, none used
    return out.getvalue()


# --- list and the tree's watch -----------------------------------------------------------------------


NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("created", "shown"), [
    ("2026-11-28T11:59:18Z", "42s"), ("2026-11-28T11:58:30Z", "1m"), ("2026-11-28T11:00:00Z", "60m"),
    ("2026-11-28T09:00:00Z", "3h"), ("2026-11-25T12:00:00Z", "3d"), (None, "?"), ("garbage", "?"),
    ("2026-11-28T12:00:05Z", "0s")])
def test_age_is_kubectls_short_form(created, shown):
    assert view.age(created, NOW) == shown


def br(name, ns="team-a", phase=None, done=0, total=0, suspend=False):
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-11-28T11:00:00Z"},
            "spec": {"suspend": suspend},
            "status": {**({"phase": phase} if phase else {}), "tasks": {"succeeded": done, "total": total}}}


def test_list_rows_and_table():
    rows = view.build_rows([br("zeta", "b"), br("alpha", "a", "Working", 3, 7, suspend=True)], NOW)
    assert [(r["namespace"], r["name"], r["phase"], r["tasks"]) for r in rows] == [
        ("a", "alpha", "Working", {"done": 3, "total": 7}), ("b", "zeta", "Pending", {"done": 0, "total": 0})]
    assert view.list_text(rows, all_namespaces=False).splitlines() == [
        "NAME    PHASE                 TASKS   AGE",
        "alpha   Working (suspended)   3/7     60m",
        "zeta    Pending               0/0     60m"]
    assert view.list_text(rows, all_namespaces=True).splitlines()[0].split() == [
        "NAMESPACE", "NAME", "PHASE", "TASKS", "AGE"]


def test_list_cells_are_one_line_without_control_characters():
    rows = view.build_rows([br("b", "ns", "Work\x1b[2J\ning")], NOW)
    assert "Working" in view.list_text(rows, all_namespaces=False) and "\x1b" not in view.list_text(
        rows, all_namespaces=False)


def at(name, phase=None, build="b", rv="1"):
    return {"metadata": {"name": name, "resourceVersion": rv, "creationTimestamp": name},
            "spec": {"buildRef": {"name": build}}, "status": {"phase": phase} if phase else {}}


def test_the_watch_fold_applies_events_and_knows_when_the_build_is_finished():
    w = view.Watched({"metadata": {"name": "b"}, "status": {"phase": "Working"}})
    w.replace("AgentTask", [at("t1"), at("t2")])
    assert w.apply("AgentTask", "MODIFIED", at("t1", "Running")) is True
    assert w.apply("AgentTask", "MODIFIED", at("t1", "Running")) is False  # the same object: nothing to redraw
    assert w.apply("AgentTask", "BOOKMARK", at("t1", "Failed")) is False
    assert w.apply("AgentTask", "DELETED", at("t2")) is True and w.apply("AgentTask", "DELETED", at("t2")) is False
    assert w.apply("AgentTask", "ADDED", at("other", build="x")) is True  # kept; the tree shows only b's
    assert [t["name"] for t in w.view()["tasks"]] == ["t1"] and w.view()["tasks"][0]["phase"] == "Running"
    assert w.apply("BuildRequest", "MODIFIED", {"metadata": {"name": "not-b"}, "status": {"phase": "Failed"}}) is False
    assert not w.finished
    assert w.apply("BuildRequest", "MODIFIED", {"metadata": {"name": "b"}, "status": {"phase": "Failed"}})
    assert w.finished and w.view()["phase"] == "Failed"
    gone = view.Watched({"metadata": {"name": "b"}, "status": {"phase": "Working"}})
    assert gone.apply("BuildRequest", "DELETED", {"metadata": {"name": "b"}}) and gone.finished


@pytest.mark.parametrize(("image", "version"), [
    ("ghcr.io/longshot/operator:0.1.0", "0.1.0"), ("localhost:5000/longshot-operator:dev", "dev"),
    ("localhost:5000/longshot-operator", "unknown"), ("r.example/op@sha256:abc", "sha256:abc")])
def test_image_version(image, version):
    assert view.image_version(image) == version
