"""Hostile tenants (issue 29, items 7 and 8): no credential crosses a tenant boundary, refs carry the namespace,
and disks are bounded, on a real API server with real git servers.

* two namespaces build on one repository URL and target with different credentials Secrets: the git server
  sees each tenant's branches and each tenant's merge pushed with that tenant's own credential, and the two
  builds, both named ``demo``, share no ref;
* a handoff from a server that ignores fetch filters is refused at the limit, and the fetch wrote no more than
  the limit;
* a fetch into a merge-queue workspace past its cap fails naming the cap;
* the gateway refuses a push over its limit (256 MiB by default) and a mirror over its cap.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import git_servers
import kubernetes
import pytest
import sample_repo
import yaml
from gateway_attempts import make_attempt, secret
from k8s_builders import build, condition, create, dump, get, list_of

from longshot.api import handoff as ho
from longshot.gateway import settings as gwsettings
from longshot.runtime import handoffs
from longshot.vcs import packlimit, workspace
from longshot_testing import wait_for

pytestmark = pytest.mark.integration

IDENTITY = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
            "GIT_TERMINAL_PROMPT": "0"}
admin = git_servers.Git(IDENTITY, isolated=True, strip=True)
MiB = 1024 * 1024


# --- a forge that records who pushed what -----------------------------------------------------------------


class _RecordingHandler(git_servers._GitHTTPHandler):
    def _body(self) -> bytes:
        body = super()._body()
        if self.path.split("?", 1)[0].endswith("/git-receive-pack"):
            user = self.server.users.get(self.headers.get("Authorization", ""))
            for _old, new, ref in _commands(body):
                self.server.pushes.append((user, ref, new))  # type: ignore[attr-defined]
        return body


def _commands(body: bytes) -> Iterator[tuple[str, str, str]]:
    """The ``old new ref`` commands at the start of a receive-pack request (pkt-lines up to the flush)."""
    at = 0
    while at + 4 <= len(body):
        size = int(body[at:at + 4], 16)
        if size == 0:
            return
        line = body[at + 4:at + size].split(b"\0", 1)[0].decode(errors="replace").strip()
        parts = line.split(" ")
        if len(parts) == 3:
            yield parts[0], parts[1], parts[2]
        at += size


class RecordingForge(git_servers.GitHTTPServer):
    """The shared smart-HTTP git server, also recording ``(user, ref, new commit)`` of every pushed ref."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.RequestHandlerClass = _RecordingHandler
        self.pushes: list[tuple[str | None, str, str]] = []


@pytest.fixture
def forge(tmp_path: Path) -> Iterator[RecordingForge]:
    """``calc.git`` (the sample project: its tests pass) behind Basic auth for two tenants, alice and bob."""
    import threading

    sample_repo.make(tmp_path)
    server = RecordingForge(tmp_path / "server", git=admin, accounts=[("alice", "alice-pw-1"), ("bob", "bob-pw-22")])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def forge_refs(forge: RecordingForge) -> dict[str, str]:
    out = admin("for-each-ref", "--format=%(refname) %(objectname)", cwd=forge.root / "calc.git")
    return dict(line.split(" ", 1) for line in out.splitlines())


# --- item 7: two tenants on one repository and target --------------------------------------------------------


SCRIPT = {
    "roles": {"planner": [{"finish": {"summary": "one function", "tasks": [
        {"name": "work", "description": "Add the tenant's function", "scope": ["calc/"]}]}}]},
    "tasks": {},
}


def tenant_script(tenant: str) -> dict[str, Any]:
    script = dict(SCRIPT)
    script["tasks"] = {"work": [
        {"write": {"path": f"calc/{tenant}.py", "content": f"def {tenant}():\n    return {tenant!r}\n"}},
        {"finish": f"Add {tenant}()"}]}
    return script


@pytest.fixture
def second_namespace(request: pytest.FixtureRequest, core_v1: kubernetes.client.CoreV1Api) -> Iterator[str]:
    name = f"t2-{hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]}"
    core_v1.create_namespace({"metadata": {"name": name, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest",
        "longshot.dev/test": "true"}}})
    yield name
    core_v1.delete_namespace(name)


@pytest.fixture
def two_tenant_operator(control_plane: Any, namespace: str, second_namespace: str,
                        operator_env: dict[str, str]) -> Iterator[object]:
    """The operator, in-process, watching both namespaces (one Longshot for two teams)."""
    from kopf.testing import KopfRunner

    import longshot.controllers  # noqa: F401  (registers the handlers)

    with KopfRunner(["run", "--standalone", "--namespace", namespace, "--namespace", second_namespace,
                     "-m", "longshot.controllers"], timeout=60) as runner:
        yield runner
    assert runner.exception is None, runner.output


@pytest.fixture
def two_kubelets(api_client: Any, namespace: str, second_namespace: str, tmp_path: Path) -> Iterator[None]:
    from process_kubelet import ProcessKubelet

    with ProcessKubelet(api_client, namespace, tmp_path / "kubelet-a"), \
            ProcessKubelet(api_client, second_namespace, tmp_path / "kubelet-b"):
        yield


def tenant_build(url: str, secret_name: str) -> dict[str, Any]:
    b = build("demo", repository__url=url, repository__credentialsSecret=secret_name)
    b["spec"].update({"agent": {"backend": "scripted", "script": {"name": "script"}},
                      "reconciler": {"command": sample_repo.TEST_COMMAND, "intervalSeconds": 30},
                      "qualityGate": {"profile": "minimal", "testCommand": sample_repo.TEST_COMMAND},
                      "finalization": {"maxAttempts": 2}})
    return b


def finalized(custom: Any, namespace: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        b = get(custom, namespace, "buildrequests", "demo")
        c = condition(b, "Finalized")
        return b if c and c["status"] in ("True", "False") else None

    try:
        return wait_for(done, timeout=180, what=f"build demo in {namespace} Finalized")  # type: ignore[no-any-return]
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None


def test_two_tenants_on_one_repository_and_target_each_push_with_their_own_credential_and_share_no_ref(
        two_tenant_operator: object, two_kubelets: None, core_v1: Any, custom: Any, namespace: str,
        second_namespace: str, forge: RecordingForge) -> None:
    url = forge.url("calc")
    tenants = {namespace: ("alice", "alice-pw-1", "git-alice", "alpha"),
               second_namespace: ("bob", "bob-pw-22", "git-bob", "beta")}
    for ns, (user, password, secret_name, fn) in tenants.items():
        secret(core_v1, ns, secret_name, {"username": user, "password": password})
        core_v1.create_namespaced_config_map(ns, {"metadata": {"name": "script"},
                                                  "data": {"script.yaml": yaml.safe_dump(tenant_script(fn))}})
        create(custom, ns, tenant_build(url, secret_name))

    for ns in tenants:
        b = finalized(custom, ns)
        assert condition(b, "Finalized")["status"] == "True", dump(custom, ns)

    refs = forge_refs(forge)
    for ns, (user, _, _, fn) in tenants.items():
        other = next(u for n, (u, *_) in tenants.items() if n != ns)
        # the tenant's task branch carries its namespace: two builds named demo share no branch
        branch = f"refs/heads/longshot/{ns}/demo/demo-work"
        assert branch in refs, sorted(refs)
        pushers = {u for u, ref, _ in forge.pushes if ref.startswith(f"refs/heads/longshot/{ns}/")
                   or ref.startswith(f"refs/longshot/handoffs/{ns}/")}
        assert pushers == {user}, forge.pushes
        # the tenant's merge landed on main pushed with the tenant's own credential, never the other's
        (job,) = [j for j in list_of(custom, ns, "mergejobs") if j["spec"]["taskRef"]["name"] == "demo-work"]
        merged = job["status"]["mergedCommit"]
        main_pushes = {(u, new) for u, ref, new in forge.pushes if ref == "refs/heads/main"}
        assert (user, merged) in main_pushes, (merged, forge.pushes)
        assert (other, merged) not in main_pushes
        assert sample_repo.show(f"file://{forge.root / 'calc.git'}", f"calc/{fn}.py") is not None
    # nothing Longshot wrote lies outside a namespace's directory
    for ref in refs:
        if ref.startswith(("refs/heads/longshot/", "refs/longshot/handoffs/")):
            assert re.match(rf"^refs/(heads/longshot|longshot/handoffs)/({namespace}|{second_namespace})/", ref), ref


# --- item 8: disks are bounded -------------------------------------------------------------------------------


def unfiltered_forge_with(tmp_path: Path, files: dict[str, bytes], ref: str) -> tuple[git_servers.GitHTTPServer,
                                                                                       str, Any]:
    """A forge whose server ignores fetch filters (``uploadpack.allowFilter=false``, git's default) with
    ``files`` committed on ``ref``."""
    root = tmp_path / "plain"
    root.mkdir()
    bare = root / "app.git"
    admin("init", "--quiet", "--bare", str(bare))
    admin("config", "uploadpack.allowFilter", "false", cwd=bare)
    work = tmp_path / "plain-work"
    admin("init", "--quiet", str(work))
    for name, data in files.items():
        (work / name).write_bytes(data)
    admin("add", "--all", cwd=work)
    admin("commit", "--quiet", "-m", "handoff", cwd=work)
    admin("push", "--quiet", str(bare), f"HEAD:{ref}", cwd=work)
    server = git_servers.GitHTTPServer(root, git=admin, accounts=[("bot", "bot-password")])
    return server, admin("rev-parse", "HEAD", cwd=work), bare


def serve(server: git_servers.GitHTTPServer) -> Any:
    import threading

    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    return thread


def test_a_handoff_from_a_server_ignoring_filters_is_refused_at_the_limit_without_writing_more(tmp_path: Path
                                                                                               ) -> None:
    limit = 1 * MiB
    data = ho.encode(ho.Handoff(task="t1", role="planner", outcome="succeeded",
                                tasks=[ho.PlannedTask(name="a", description="x")]))
    ref = ho.handoff_ref("ns", "b", "t1", 1)
    server, commit, _ = unfiltered_forge_with(tmp_path, {ho.HANDOFF_FILE: data, "junk.bin": os.urandom(6 * MiB)},
                                              ref)
    thread = serve(server)
    try:
        pointer = ho.HandoffPointer(ref=ref, commit=commit, sha256=ho.digest(data), size=len(data))
        creds = workspace.GitCredentials(username="bot", password="bot-password")
        result = handoffs.fetch_from(server.url("app"), creds, pointer, limit=limit, workdir=tmp_path / "w")
        assert isinstance(result, ho.HandoffError), result
        assert f"handoff limit of {limit} bytes" in str(result)
        written = packlimit.tree_bytes(tmp_path / "w")
        print(f"handoff fetch from a filter-ignoring server: wrote {written} bytes of a {limit}-byte limit")
        assert written <= limit
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_handoff_alone_in_its_commit_still_arrives_from_a_server_ignoring_filters(tmp_path: Path) -> None:
    data = ho.encode(ho.Handoff(task="t1", role="planner", outcome="succeeded",
                                tasks=[ho.PlannedTask(name=f"t{i}", description="y" * 500) for i in range(300)]))
    ref = ho.handoff_ref("ns", "b", "t1", 1)
    server, commit, _ = unfiltered_forge_with(tmp_path, {ho.HANDOFF_FILE: data}, ref)
    thread = serve(server)
    try:
        pointer = ho.HandoffPointer(ref=ref, commit=commit, sha256=ho.digest(data), size=len(data))
        creds = workspace.GitCredentials(username="bot", password="bot-password")
        result = handoffs.fetch_from(server.url("app"), creds, pointer, limit=1 * MiB, workdir=tmp_path / "w")
        assert isinstance(result, ho.Handoff) and len(result.tasks) == 300
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_fetch_into_a_workspace_over_its_cap_fails_naming_the_cap(tmp_path: Path) -> None:
    url = sample_repo.make(tmp_path)
    sample_repo.git(tmp_path / "seed", "checkout", "-q", "-b", "big")
    (tmp_path / "seed" / "big.bin").write_bytes(os.urandom(3 * MiB))
    sample_repo.git(tmp_path / "seed", "add", "-A")
    sample_repo.git(tmp_path / "seed", "commit", "-q", "-m", "big")
    sample_repo.git(tmp_path / "seed", "push", "-q", url.removeprefix("file://"), "big")
    w = workspace.Workspace(url, tmp_path / "cache", key=workspace.tenant_key("ns", None, url), max_bytes=1 * MiB)
    with w.locked():
        w.ensure()
        w.fetch("main")  # the small target fits
        with pytest.raises(workspace.GitError, match="LONGSHOT_WORKSPACE_MAX_BYTES"):
            w.fetch("main", "big")
    assert not w.path.exists()  # removed: nothing over the cap stays on the operator's disk


def test_the_gateway_refuses_a_push_over_its_limit_which_is_256_mib_by_default(
        control_plane: Any, core_v1: Any, custom: Any, namespace: str, forge: RecordingForge,
        gateway_settings: Any, tmp_path: Path) -> None:
    from gateway_server import GatewayThread

    assert gwsettings.GatewaySettings().max_push_bytes == 256 * MiB
    assert gwsettings.GatewaySettings.from_env({"LONGSHOT_GATEWAY_MAX_PUSH_BYTES": "65536"}).max_push_bytes == 65536
    secret(core_v1, namespace, "git-alice", {"username": "alice", "password": "alice-pw-1"})
    settings = gateway_settings.replace(max_push_bytes=256 * 1024)
    with GatewayThread(control_plane.kubeconfig, settings) as gw:
        a = make_attempt(core_v1, custom, namespace, gw.url, build_spec={
            "repository": {"url": forge.url("calc"), "credentialsSecret": "git-alice"}})
        env = {**IDENTITY, "PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_COUNT": "1",
               "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {a.token}"}
        agent = git_servers.Git(env, isolated=True, strip=True)
        work = tmp_path / "work"
        agent("clone", "--quiet", f"{gw.url}/git/{namespace}/b1.git", str(work))
        (work / "big.bin").write_bytes(os.urandom(1 * MiB))
        agent("add", "-A", cwd=work)
        agent("commit", "--quiet", "-m", "big", cwd=work)
        out = agent("push", f"{gw.url}/git/{namespace}/b1.git", f"HEAD:refs/heads/longshot/{namespace}/b1/b1-t1",
                    cwd=work, check=False)
        assert f"refs/heads/longshot/{namespace}/b1/b1-t1" not in forge_refs(forge), out
        assert not [p for p in forge.pushes if p[1].startswith("refs/heads/longshot/")]


def test_the_gateway_refuses_to_mirror_a_repository_over_its_cap(
        control_plane: Any, core_v1: Any, custom: Any, namespace: str, forge: RecordingForge,
        gateway_settings: Any, tmp_path: Path) -> None:
    from gateway_server import GatewayThread

    seed = tmp_path / "seed"
    (seed / "big.bin").write_bytes(os.urandom(3 * MiB))
    sample_repo.git(seed, "add", "-A")
    sample_repo.git(seed, "commit", "-q", "-m", "big")
    sample_repo.git(seed, "push", "-q", str(forge.root / "calc.git"), "main")
    secret(core_v1, namespace, "git-alice", {"username": "alice", "password": "alice-pw-1"})
    settings = gateway_settings.replace(mirror_max_bytes=1 * MiB)
    with GatewayThread(control_plane.kubeconfig, settings) as gw:
        a = make_attempt(core_v1, custom, namespace, gw.url, build_spec={
            "repository": {"url": forge.url("calc"), "credentialsSecret": "git-alice"}})
        env = {**IDENTITY, "PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_COUNT": "1",
               "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {a.token}"}
        agent = git_servers.Git(env, isolated=True)
        r = agent("clone", "--quiet", f"{gw.url}/git/{namespace}/b1.git", str(tmp_path / "w"), check=False)
        assert not (tmp_path / "w" / "big.bin").exists()
        mirrors = Path(settings.mirror_dir) / "repos"
        assert packlimit.tree_bytes(mirrors) <= 1 * MiB + 64 * 1024, r


def test_the_chart_sets_the_disk_bounds_and_they_are_configurable(control_plane: Any, namespace: str) -> None:
    from chart_render import of_kinds, render

    def env_of(docs: list[dict[str, Any]], component: str) -> dict[str, str]:
        (dep,) = [d for d in of_kinds(docs, "Deployment")
                  if d["metadata"]["labels"].get("app.kubernetes.io/component") == component]
        return {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}

    docs = render(control_plane, namespace)
    assert env_of(docs, "gateway")["LONGSHOT_GATEWAY_MAX_PUSH_BYTES"] == str(256 * MiB)
    assert env_of(docs, "gateway")["LONGSHOT_GATEWAY_MIRROR_MAX_BYTES"] == str(2048 * MiB)
    assert env_of(docs, "operator")["LONGSHOT_WORKSPACE_MAX_BYTES"] == str(1024 * MiB)
    docs = render(control_plane, namespace, "gateway.maxPushBytes=1048576", "gateway.mirrorMaxBytes=0",
                  "operator.workspaceMaxBytes=5000000000")
    assert env_of(docs, "gateway")["LONGSHOT_GATEWAY_MAX_PUSH_BYTES"] == "1048576"
    assert env_of(docs, "gateway")["LONGSHOT_GATEWAY_MIRROR_MAX_BYTES"] == "0"
    assert env_of(docs, "operator")["LONGSHOT_WORKSPACE_MAX_BYTES"] == "5000000000"
