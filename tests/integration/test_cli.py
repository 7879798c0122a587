"""``kubectl longshot`` at home in kubectl (issue 53 part 3), on the real API server: kubeconfig files merged as
kubectl merges them, ``--as``/``--as-group`` refused and allowed by RBAC, ``list -A``, ``tree -w`` that sees a status
write within 2 s at 50 tasks and stops when the build is terminal (or at ``--watch-timeout``), ``logs -f`` of a Pod
log that grows (the API server proxying to a kubelet's log endpoint, log_kubelet.py), ``version``, completion in a
real bash, the Krew launcher, and the failures a person meets (connection refused, TLS, 401, 403, a server that
does not answer) each as one sentence."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from k8s_builders import GROUP, VERSION, build, create, task

from longshot.cli import main as cli
from longshot_testing import wait_for

pytestmark = pytest.mark.integration


def run(*argv: str, kubeconfig: Path | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = (["--kubeconfig", str(kubeconfig)] if kubeconfig else []) + list(argv)
    code = cli.main(args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def one_sentence(err: str) -> str:
    """The error line: exactly one line, ``error: ...``."""
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert err.startswith("error: "), err
    return err[len("error: "):-1]


def admin_config(control_plane) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    return loaded


def write(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


# --- kubeconfig and identity -------------------------------------------------------------------------


def test_kubeconfig_files_are_merged_as_kubectl_merges_them(control_plane, custom, namespace, tmp_path, monkeypatch):
    create(custom, namespace, build("merged"))
    admin = admin_config(control_plane)
    # the first file: only a context (in this test's namespace) and the current-context; it names the cluster and
    # user that the second file defines
    first = write(tmp_path / "first", {"apiVersion": "v1", "kind": "Config", "current-context": "mine",
                                       "contexts": [{"name": "mine", "context": {
                                           "cluster": "longshot-test", "user": "admin", "namespace": namespace}}]})
    # the second: the real cluster and user; its own current-context and its own "mine" lose to the first file's
    second = write(tmp_path / "second", {**admin, "contexts": [*admin["contexts"], {"name": "mine", "context": {
        "cluster": "longshot-test", "user": "admin", "namespace": "default"}}]})
    # the third: the same cluster name at an address where nothing listens; the second file's wins
    third = write(tmp_path / "third", {"apiVersion": "v1", "kind": "Config", "current-context": "longshot-test",
                                       "clusters": [{"name": "longshot-test",
                                                     "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}]})
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(first), str(tmp_path / "missing"), str(second), str(third)]))
    code, out, err = run("list")
    assert code == 0, err
    assert out.splitlines()[0].split() == ["NAME", "PHASE", "TASKS", "AGE"] and "merged" in out
    # --context picks another context of the merge: the second file's (no namespace: default, no build there)
    code, out, err = run("--context", "longshot-test", "list")
    assert code == 0 and "merged" not in out and "no BuildRequests in namespace 'default'" in err
    code, _, err = run("--context", "nope", "list")
    assert code == 1 and "no context 'nope'" in one_sentence(err)


def test_as_impersonates_a_user_the_api_server_refuses_and_a_group_it_allows(control_plane, rbac, custom, namespace):
    create(custom, namespace, build("b1"))
    kc = control_plane.kubeconfig
    code, _, err = run("-n", namespace, "--as", "alice", "list", kubeconfig=kc)
    assert code == 1
    sentence = one_sentence(err)
    assert sentence.startswith("the API server refused (403 Forbidden): ")
    assert 'User "alice" cannot list resource "buildrequests"' in sentence, sentence
    # a Role that may list builds, bound to a group; alice in that group (the second of two: each group is its own
    # Impersonate-Group header) may list
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "readers"}, "rules": [
        {"apiGroups": [GROUP], "resources": ["buildrequests"], "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "readers"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                     "name": "readers"},
        "subjects": [{"kind": "Group", "name": "longshot-readers", "apiGroup": "rbac.authorization.k8s.io"}]})

    def allowed() -> tuple[int, str, str] | None:
        result = run("-n", namespace, "--as", "alice", "--as-group", "somebody", "--as-group", "longshot-readers",
                     "list", "-o", "json", kubeconfig=kc)
        return result if result[0] == 0 else None

    code, out, err = wait_for(allowed, timeout=30, what="alice may list through the group's binding")
    assert [r["name"] for r in json.loads(out)["items"]] == ["b1"]
    # the group alone does not help a different verb: patching is still refused, with the server's reason
    code, _, err = run("-n", namespace, "--as", "alice", "--as-group", "longshot-readers", "suspend", "br/b1",
                       kubeconfig=kc)
    assert code == 1 and 'User "alice" cannot patch resource "buildrequests"' in one_sentence(err)
    code, _, err = run("-n", namespace, "--as-group", "longshot-readers", "list", kubeconfig=kc)
    assert code == 1 and one_sentence(err) == "--as-group and --as-uid need --as (the user to impersonate)"


@pytest.fixture
def rbac(api_client):
    return kubernetes.client.RbacAuthorizationV1Api(api_client)


# --- list --------------------------------------------------------------------------------------------


def test_list_shows_phase_tasks_and_age_and_all_namespaces_with_a(control_plane, custom, namespace,
                                                                   another_namespace):
    other = another_namespace("cli-other")
    create(custom, namespace, build("alpha"))
    create(custom, other, build("beta"))
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "buildrequests", "alpha", {
        "status": {"phase": "Working", "tasks": {"total": 4, "succeeded": 3}}})
    code, out, _ = run("-n", namespace, "list")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2 and lines[1].split()[:3] == ["alpha", "Working", "3/4"], out
    assert lines[1].split()[3].endswith("s") or lines[1].split()[3].endswith("m")
    code, out, _ = run("-n", namespace, "list", "-A")
    rows = {tuple(line.split()[:2]) for line in out.splitlines()[1:]}
    assert code == 0 and out.splitlines()[0].split()[0] == "NAMESPACE"
    assert {(namespace, "alpha"), (other, "beta")} <= rows
    code, out, _ = run("list", "--all-namespaces", "-o", "yaml")
    items = {(r["namespace"], r["name"]): r for r in yaml.safe_load(out)["items"]}
    assert items[(namespace, "alpha")]["tasks"] == {"done": 3, "total": 4} and (other, "beta") in items
    # tree -A finds a build by its name in whichever namespace holds it; a name in two namespaces asks for -n
    code, out, err = run("tree", "-A", "beta", "-o", "json")
    assert code == 0 and json.loads(out)["namespace"] == other, err
    create(custom, other, build("alpha"))
    code, _, err = run("tree", "-A", "alpha")
    assert code == 1 and one_sentence(err) == (f"BuildRequest 'alpha' is in several namespaces "
                                               f"({', '.join(sorted([namespace, other]))}): pass -n instead of -A")


# --- tree -w -----------------------------------------------------------------------------------------


class Frames(io.TextIOBase):
    """What ``tree -w`` wrote, each write with the time it arrived (read from the test's thread)."""

    def __init__(self) -> None:
        self.writes: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            self.writes.append((time.monotonic(), text))
        return len(text)

    def first_with(self, needle: str, after: float = 0.0) -> float | None:
        with self.lock:
            return next((t for t, text in self.writes if t >= after and needle in text), None)

    def text(self) -> str:
        with self.lock:
            return "".join(text for _, text in self.writes)


def watch_in_thread(*argv: str) -> tuple[Frames, io.StringIO, dict[str, int], threading.Thread]:
    frames, err, result = Frames(), io.StringIO(), {}

    def go() -> None:
        result["code"] = cli.main(list(argv), out=frames, err=err)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return frames, err, result, thread


def test_tree_watch_shows_a_status_write_within_2_s_at_50_tasks_and_stops_when_the_build_is_terminal(
        custom, namespace):
    create(custom, namespace, build("fifty"))
    for i in range(50):
        create(custom, namespace, task(f"fifty-t{i:02d}", buildRef={"name": "fifty"}))
    frames, err, result, thread = watch_in_thread("-n", namespace, "tree", "fifty", "-w")
    wait_for(lambda: frames.first_with("AgentTask/fifty-t49"), timeout=30, what="the first drawing")
    latencies = []
    for i in (7, 23, 49):
        before = time.monotonic()
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "agenttasks", f"fifty-t{i:02d}", {
            "status": {"phase": "Running"}})
        seen = wait_for(lambda i=i, before=before: frames.first_with(f"AgentTask/fifty-t{i:02d}  worker  Running",
                                                                     after=before),
                        timeout=10, what=f"fifty-t{i:02d} drawn Running")
        latencies.append(seen - before)
    print(f"\ntree -w at 50 tasks: status write to redraw {', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")
    assert max(latencies) < 2.0, latencies
    assert thread.is_alive() and "code" not in result
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "buildrequests", "fifty", {
        "status": {"phase": "Succeeded"}})
    wait_for(lambda: not thread.is_alive(), timeout=10, what="tree -w ends when the build is terminal")
    assert result["code"] == 0, err.getvalue()
    assert "BuildRequest/fifty  Succeeded" in frames.text().rstrip().rsplit("\n\n", 1)[-1].split("\n")[0]


def test_tree_watch_is_bounded_by_its_timeout(custom, namespace):
    create(custom, namespace, build("slow"))
    started = time.monotonic()
    frames, err, result, thread = watch_in_thread("-n", namespace, "tree", "slow", "-w", "--watch-timeout", "2")
    wait_for(lambda: not thread.is_alive(), timeout=20, what="tree -w ends at its --watch-timeout")
    assert result["code"] == 0 and "stopped watching after 2 s (--watch-timeout)" in err.getvalue()
    assert 2 <= time.monotonic() - started < 15
    assert "BuildRequest/slow" in frames.text()


# --- errors: one sentence each -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def with_server(control_plane, tmp_path: Path, *, server: str | None = None, token: str | None = None,
                ca: bool = True) -> Path:
    config = admin_config(control_plane)
    cluster = config["clusters"][0]["cluster"]
    if server:
        cluster["server"] = server
    if not ca:
        del cluster["certificate-authority-data"]
    if token:
        config["users"][0]["user"]["token"] = token
    return write(tmp_path / "kubeconfig", config)


def test_connection_refused_is_one_sentence(control_plane, tmp_path):
    address = f"https://127.0.0.1:{free_port()}"
    code, _, err = run("list", "--request-timeout", "5", kubeconfig=with_server(control_plane, tmp_path,
                                                                                 server=address))
    assert code == 1
    assert one_sentence(err) == (f"cannot connect to the API server at {address}: connection refused (is the "
                                 "cluster running, and is the kubeconfig's server right?)")


def test_an_unknown_certificate_authority_is_one_sentence(control_plane, tmp_path):
    code, _, err = run("list", kubeconfig=with_server(control_plane, tmp_path, ca=False))
    sentence = one_sentence(err)
    assert code == 1 and sentence.startswith(f"the TLS handshake with the API server at {control_plane.server} "
                                             "failed (certificate verify failed"), sentence
    assert sentence.endswith("check the kubeconfig's certificate-authority for this cluster")


def test_a_wrong_token_is_one_sentence(control_plane, tmp_path):
    code, _, err = run("list", kubeconfig=with_server(control_plane, tmp_path, token="not-a-token"))
    assert code == 1 and one_sentence(err).startswith(
        f"the API server at {control_plane.server} did not accept your credentials (401 Unauthorized)")


def test_a_server_that_does_not_answer_is_a_timeout_in_one_sentence(control_plane, tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel's backlog) and never answers
    try:
        address = f"https://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        code, _, err = run("list", "--request-timeout", "0.5",
                           kubeconfig=with_server(control_plane, tmp_path, server=address))
        assert code == 1 and time.monotonic() - started < 15
        sentence = one_sentence(err)
        assert sentence.startswith(f"the API server at {address} did not ") and "in time" in sentence, sentence
    finally:
        silent.close()


def test_the_console_script_prints_the_sentence_and_nothing_else(control_plane, tmp_path):
    """The installed ``kubectl-longshot``: stderr is the one sentence (urllib3's retry warnings stay off it)."""
    import subprocess
    import sys

    script = Path(sys.executable).with_name("kubectl-longshot")
    address = f"https://127.0.0.1:{free_port()}"
    kc = with_server(control_plane, tmp_path, server=address)
    done = subprocess.run([str(script), "--kubeconfig", str(kc), "tree", "b1"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert one_sentence(done.stderr).startswith(f"cannot connect to the API server at {address}: connection refused")


# --- completion in a real shell ---------------------------------------------------------------------


def bash_complete(script: str, *words: str) -> list[str]:
    """What bash completes after ``kubectl-longshot WORDS`` (the last word is the one being completed)."""
    line = " ".join(f"'{w}'" for w in ("kubectl-longshot", *words))
    program = (f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words)}; _kubectl_longshot; "
               'printf "%s\\n" "${COMPREPLY[@]}"')
    import subprocess

    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True, text=True,
                          timeout=30, check=True)
    return done.stdout.split()


def test_the_bash_script_completes_commands_flags_and_values_in_bash():
    """The generated script, sourced by a real bash: commands, a command's flags after the global ones, the values
    of a flag with choices, a shell for ``completion``; nothing for a free value."""
    out = io.StringIO()
    assert cli.main(["completion", "bash"], out=out, err=io.StringIO()) == 0
    script = out.getvalue()
    assert set(bash_complete(script, "")) >= {"list", "tree", "logs", "version", "completion", "retry", "trace"}
    assert sorted(bash_complete(script, "tr")) == ["trace", "tree"]
    after_globals = bash_complete(script, "-n", "team-a", "tree", "b1", "-")
    assert {"-w", "--watch", "--watch-timeout", "-o", "--namespace"} <= set(after_globals)
    assert "--follow" not in after_globals and "--ledger" not in after_globals  # logs' flags, not tree's
    assert bash_complete(script, "list", "-o", "") == ["json", "yaml"]
    assert bash_complete(script, "completion", "") == ["bash", "zsh", "fish", "-h", "--help", "-n", "--namespace",
                                                       "--context", "--kubeconfig", "--as", "--as-group", "--as-uid",
                                                       "--request-timeout"]
    assert bash_complete(script, "-n", "") == []  # a namespace: nothing offered rather than a wrong word


# --- version -----------------------------------------------------------------------------------------


def test_version_prints_the_plugins_and_the_operators_from_its_deployment(api_client, another_namespace):
    system = another_namespace("cli-system")
    labels = {"app.kubernetes.io/part-of": "longshot", "app.kubernetes.io/component": "operator",
              "app.kubernetes.io/version": "0.2.0"}
    kubernetes.client.AppsV1Api(api_client).create_namespaced_deployment(system, {
        "metadata": {"name": "longshot", "labels": labels},
        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                     {"name": "operator", "image": "ghcr.io/example/longshot-operator:0.2.0"}]}}}})
    code, out, err = run("version", "--operator-namespace", system)
    assert code == 0, err
    assert out.splitlines() == ["plugin: 0.1.0", f"operator: 0.2.0 (deployment {system}/longshot, image "
                                                 "ghcr.io/example/longshot-operator:0.2.0)"]
    code, out, _ = run("version", "--operator-namespace", system, "-o", "json")
    assert json.loads(out)["operator"]["version"] == "0.2.0"
    # a user who may not read Deployments there: the plugin's line, and why the operator's is unknown
    code, out, err = run("version", "--operator-namespace", system, "--as", "alice")
    assert code == 1 and out.splitlines()[0] == "plugin: 0.1.0"
    assert out.splitlines()[1].startswith("operator: unknown (the API server refused (403 Forbidden): ")
    assert 'User "alice" cannot list resource "deployments"' in out
    code, out, _ = run("version", "--operator-namespace", "default")
    assert code == 1 and out.splitlines()[1] == ("operator: unknown (no Longshot operator Deployment in namespace "
                                                 "'default'; pass --operator-namespace)")


# --- the Krew archive's launcher ---------------------------------------------------------------------


def test_the_krew_launcher_runs_the_plugin_on_the_given_python_and_says_what_is_missing(tmp_path):
    import subprocess
    import sys
    import tarfile

    import hack_modules

    krew = hack_modules.load("krew_manifest")
    with tarfile.open(fileobj=io.BytesIO(krew.archive(krew.version())), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    launcher = tmp_path / "kubectl-longshot"
    done = subprocess.run([str(launcher), "version", "--client"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LONGSHOT_PYTHON": sys.executable})
    assert done.returncode == 0 and done.stdout == f"plugin: {krew.version()}\n", done.stderr
    bare = tmp_path / "bare-python"  # a Python without the package
    bare.write_text("#!/bin/sh\nexit 1\n")
    bare.chmod(0o755)
    done = subprocess.run([str(launcher), "list"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LONGSHOT_PYTHON": str(bare)})
    assert done.returncode == 1 and done.stderr.startswith("error: kubectl longshot needs the longshot package in ")


# --- logs -f on the real API server ------------------------------------------------------------------


def test_logs_follow_prints_a_growing_pod_log_then_where_the_ledger_entry_is(control_plane, core_v1, custom,
                                                                             namespace):
    from log_kubelet import LogKubelet, restricted_pod

    from longshot.core import ledger

    create(custom, namespace, build("b1"))
    create(custom, namespace, task("b1-w", buildRef={"name": "b1"}))
    started = "2026-11-28T08:00:00Z"
    with LogKubelet(core_v1, control_plane.pki, f"log-{namespace}"[:63]) as kubelet:
        core_v1.create_namespaced_pod(namespace, restricted_pod("b1-w-a1", kubelet.node))
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "agenttasks", "b1-w", {"status": {
            "phase": "Running", "attempts": [{"number": 1, "pod": "b1-w-a1", "startTime": started}]}})
        frames, err, result, thread = watch_in_thread("-n", namespace, "logs", "b1-w", "-f")
        kubelet.write('{"type": "message", "text": "one"}\n')
        wait_for(lambda: frames.first_with('"text": "one"'), timeout=30, what="the first line, through the API server")
        kubelet.write("two \x1b[31mred\x1b[0m\n")
        wait_for(lambda: frames.first_with("two red\n"), timeout=30, what="the second line, cleaned")
        assert thread.is_alive() and "code" not in result  # still following
        kubelet.end()
        # the attempt ends: the operator records it and its ledger entry exists
        core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "b1-w-a1-ledger"}, "data": {
            ledger.RESULT_KEY: json.dumps({"exitCode": 0, "endTime": "2026-11-28T08:01:00Z"})}})
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "agenttasks", "b1-w", {"status": {
            "phase": "Succeeded", "attempts": [{"number": 1, "pod": "b1-w-a1", "startTime": started,
                                                "endTime": "2026-11-28T08:01:00Z", "exitReason": "Completed",
                                                "ledger": "b1-w-a1-ledger"}]}})
        wait_for(lambda: not thread.is_alive(), timeout=30, what="logs -f ends after the attempt's end")
    assert result["code"] == 0, err.getvalue()
    assert frames.text() == ('{"type": "message", "text": "one"}\ntwo red\n'
                             '{"type": "result", "exitCode": 0, "endTime": "2026-11-28T08:01:00Z"}\n')
    assert err.getvalue() == (f"attempt 1 ended (Completed); its transcript is kept in the ledger entry ConfigMap "
                              f"{namespace}/b1-w-a1-ledger (kubectl longshot logs b1-w --attempt 1 --ledger)\n")
    assert any(r.startswith(f"/containerLogs/{namespace}/b1-w-a1/agent?") and "follow=true" in r
               for r in kubelet.requests), kubelet.requests


def completion_script(shell: str) -> str:
    out = io.StringIO()
    assert cli.main(["completion", shell], out=out, err=io.StringIO()) == 0
    return out.getvalue()


def zsh_complete(*words: str) -> list[str]:
    """What the zsh script offers after ``kubectl-longshot WORDS`` (zsh's completion builtins replaced by ones that
    print what they are given: the function's decisions, run by a real zsh)."""
    import subprocess

    stubs = ('compdef() { : }\ncompadd() { [[ $1 == -- ]] && shift; print -rl -- "$@" }\n'
             '_describe() { local name=$2; print -rl -- ${${(P)name}%%:*} }\n')
    line = " ".join(f"'{w}'" for w in ("kubectl-longshot", *words))
    program = f"{stubs}{completion_script('zsh')}\nwords=({line}); CURRENT={len(words) + 1}; _kubectl_longshot\n"
    done = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True, timeout=30)
    assert done.stderr == "" and done.returncode == (0 if done.stdout else 1), done  # 1: no matches, for zsh
    return done.stdout.split()


def test_the_zsh_script_completes_commands_flags_and_values_in_zsh():
    assert {"list", "tree", "logs", "version", "completion", "-n", "--context"} <= set(zsh_complete(""))
    after_globals = zsh_complete("-n", "team-a", "tree", "b1", "-")
    assert {"-w", "--watch", "-A", "-o"} <= set(after_globals) and "--follow" not in after_globals
    assert zsh_complete("list", "-o", "") == ["json", "yaml"]
    assert {"bash", "zsh", "fish"} <= set(zsh_complete("completion", ""))
    assert zsh_complete("--namespace", "") == []


def fish_complete(line: str) -> list[str]:
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".fish") as f:
        f.write(completion_script("fish"))
        f.flush()
        done = subprocess.run(["fish", "--no-config", "-c", f"source {f.name}; complete -C '{line}'"],
                              capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return [row.split("\t")[0] for row in done.stdout.splitlines()]


def test_the_fish_script_completes_commands_flags_and_values_in_fish():
    assert {"list", "tree", "logs", "version", "completion"} <= set(fish_complete("kubectl-longshot "))
    after = fish_complete("kubectl-longshot -n team-a tree b1 -")
    assert {"-w", "-A", "-o", "-n"} <= set(after) and "-f" not in after
    assert fish_complete("kubectl-longshot list -o ") == ["json", "yaml"]
    assert sorted(fish_complete("kubectl-longshot completion ")) == ["bash", "fish", "zsh"]
