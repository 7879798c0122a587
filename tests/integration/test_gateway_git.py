"""Git through the gateway against a real smart-HTTP git server that needs a password: the build's
credential is injected upstream, the agent holds only its Pod's token, and an attempt may update only its
own branch and handoff ref."""

from __future__ import annotations

import subprocess
from pathlib import Path

import git_servers
import pytest
from gateway_attempts import make_attempt, secret

from longshot_testing import wait_for

pytestmark = pytest.mark.integration

PASSWORD = "s3cr3t-upstream-passw0rd"
IDENTITY = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
            "GIT_TERMINAL_PROMPT": "0"}
admin = git_servers.Git(IDENTITY, isolated=True, strip=True)


@pytest.fixture
def forge(tmp_path):
    """A forge (git smart HTTP behind Basic auth) with app.git: one commit on main."""
    root = tmp_path / "forge"
    root.mkdir()
    admin("init", "--quiet", "--bare", "-b", "main", str(root / "app.git"))
    seed = tmp_path / "seed"
    admin("init", "--quiet", "-b", "main", str(seed))
    (seed / "README.md").write_text("# app\n")
    admin("add", "-A", cwd=seed)
    admin("commit", "--quiet", "-m", "initial", cwd=seed)
    admin("push", "--quiet", str(root / "app.git"), "main", cwd=seed)
    with git_servers.git_http(root, git=admin, accounts=[("alice", PASSWORD)]) as server:
        yield server


def refs(forge) -> dict[str, str]:
    out = admin("for-each-ref", "--format=%(refname) %(objectname)", cwd=forge.root / "app.git")
    return dict(line.split(" ", 1) for line in out.splitlines())


@pytest.fixture
def attempt(core_v1, custom, namespace, gateway, forge):
    secret(core_v1, namespace, "git-token", {"username": "alice", "password": PASSWORD})
    spec = {"repository": {"url": forge.url("app"), "credentialsSecret": "git-token"}}
    return lambda **kw: make_attempt(core_v1, custom, namespace, gateway.url, build_spec=spec, **kw)


def agent_git(token: str, cwd: Path | None = None, *args: str) -> subprocess.CompletedProcess[str]:
    """git as the agent runs it: the token as an extra header from the environment, nothing else."""
    env = {**IDENTITY, "PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_COUNT": "1",
           "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {token}"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def clone(a, gateway, namespace, dest: Path) -> Path:
    r = agent_git(a.token, None, "clone", "--quiet", f"{gateway.url}/git/{namespace}/b1.git", str(dest))
    assert r.returncode == 0, r.stderr
    return dest


def commit(work: Path, name: str) -> str:
    (work / name).write_text(name)
    admin("add", "-A", cwd=work)
    admin("commit", "--quiet", "-m", name, cwd=work)
    return admin("rev-parse", "HEAD", cwd=work)


def stage_counts() -> dict[str, float]:
    from longshot.gateway import metrics
    return {stage: metrics.REGISTRY.get_sample_value("longshot_gateway_git_stage_seconds_count", {"stage": stage})
            or 0.0 for stage in metrics.GIT_STAGES}


def test_clone_and_push_its_own_branch_with_the_builds_credential_injected(gateway, attempt, forge, namespace,
                                                                          tmp_path):
    a = attempt()
    before = stage_counts()
    work = clone(a, gateway, namespace, tmp_path / "work")
    assert (work / "README.md").read_text() == "# app\n"
    head = commit(work, "feature.txt")

    r = agent_git(a.token, work, "push", "--porcelain", f"{gateway.url}/git/{namespace}/b1.git",
                  f"HEAD:refs/heads/longshot/{namespace}/b1/b1-t1")
    assert r.returncode == 0, r.stderr
    assert refs(forge)[f"refs/heads/longshot/{namespace}/b1/b1-t1"] == head
    # every stage of a clone and a push was timed (longshot_gateway_git_stage_seconds)
    timed = {stage for stage, n in stage_counts().items() if n > before[stage]}
    assert timed == set(stage_counts()), sorted(set(stage_counts()) - timed)
    # the handoff ref too, forced as the runner does
    url = f"{gateway.url}/git/{namespace}/b1.git"
    r = agent_git(a.token, work, "push", url, f"+HEAD:refs/longshot/handoffs/{namespace}/b1/b1-t1/1")
    assert r.returncode == 0, r.stderr
    assert refs(forge)[f"refs/longshot/handoffs/{namespace}/b1/b1-t1/1"] == head
    # the forge only ever saw the gateway with the build's credential, never the agent's token
    assert {user for _, _, user in forge.requests} == {"alice"}
    assert not any(a.token in h for h in forge.auth_headers)
    # and a force-push of its own branch is its own business
    admin("reset", "--quiet", "--hard", "HEAD~1", cwd=work)
    again = commit(work, "other.txt")
    r = agent_git(a.token, work, "push", "--force", f"{gateway.url}/git/{namespace}/b1.git",
                  f"HEAD:refs/heads/longshot/{namespace}/b1/b1-t1")
    assert r.returncode == 0, r.stderr
    assert refs(forge)[f"refs/heads/longshot/{namespace}/b1/b1-t1"] == again


def test_a_clone_of_a_repository_with_many_branches_gzips_its_request_and_works(gateway, attempt, forge, namespace,
                                                                               tmp_path):
    """git gzips an upload-pack request over 1 KiB (one want line per ref): the gateway inflated it a second
    time after aiohttp had, the request failed with `incorrect header check` and the clone with HTTP 502."""
    bare = forge.root / "app.git"
    main = admin("rev-parse", "main", cwd=bare)
    for i in range(80):
        admin("update-ref", f"refs/heads/longshot/b1/b1-t{i:02d}", main, cwd=bare)
    a = attempt()
    r = agent_git(a.token, None, "-c", "protocol.version=0", "clone", "--quiet", "--mirror",
                  f"{gateway.url}/git/{namespace}/b1.git", str(tmp_path / "mirror"))
    assert r.returncode == 0, r.stderr
    cloned = admin("for-each-ref", "--format=%(refname)", "refs/heads/longshot/", cwd=tmp_path / "mirror")
    assert len(cloned.splitlines()) == 80


@pytest.mark.parametrize("refspec, shown", [
    ("HEAD:refs/heads/main", "main -> main"),
    ("HEAD:refs/heads/longshot/b1/b1-other", "HEAD -> longshot/b1/b1-other"),
    ("HEAD:refs/longshot/handoffs/b1-other/1", "HEAD -> refs/longshot/handoffs/b1-other/1"),
    ("HEAD:refs/tags/v1", "HEAD -> v1"),
])
def test_any_other_ref_is_refused_with_a_message_the_agent_sees(gateway, attempt, forge, namespace, tmp_path,
                                                               refspec, shown):
    a = attempt()
    work = clone(a, gateway, namespace, tmp_path / "work")
    commit(work, "evil.txt")
    before = refs(forge)

    r = agent_git(a.token, work, "push", f"{gateway.url}/git/{namespace}/b1.git", refspec.replace("HEAD:", "HEAD:"))

    assert r.returncode != 0
    assert "[remote rejected]" in r.stderr and f"agents may only update refs/heads/longshot/{namespace}/b1/b1-t1 or " \
        f"refs/longshot/handoffs/{namespace}/b1/b1-t1/1" in r.stderr, r.stderr
    assert "remote: longshot-gateway: refused" in r.stderr
    assert refs(forge) == before


def test_deletes_are_refused_even_of_its_own_branch(gateway, attempt, forge, namespace, tmp_path):
    a = attempt()
    work = clone(a, gateway, namespace, tmp_path / "work")
    commit(work, "x.txt")
    url = f"{gateway.url}/git/{namespace}/b1.git"
    assert agent_git(a.token, work, "push", url, f"HEAD:refs/heads/longshot/{namespace}/b1/b1-t1").returncode == 0

    r = agent_git(a.token, work, "push", url, f":refs/heads/longshot/{namespace}/b1/b1-t1")
    assert r.returncode != 0 and "deleting refs is not allowed" in r.stderr, r.stderr
    r = agent_git(a.token, work, "push", url, ":refs/heads/main")
    assert r.returncode != 0 and "deleting refs is not allowed" in r.stderr
    assert {"refs/heads/main", f"refs/heads/longshot/{namespace}/b1/b1-t1"} <= set(refs(forge))


def test_one_forbidden_ref_refuses_the_whole_push(gateway, attempt, forge, namespace, tmp_path):
    a = attempt()
    work = clone(a, gateway, namespace, tmp_path / "work")
    commit(work, "x.txt")
    before = refs(forge)
    r = agent_git(a.token, work, "push", f"{gateway.url}/git/{namespace}/b1.git",
                  f"HEAD:refs/heads/longshot/{namespace}/b1/b1-t1", "HEAD:refs/heads/main")
    assert r.returncode != 0 and "another ref of this push was refused" in r.stderr, r.stderr
    assert refs(forge) == before


def test_a_reviewer_reads_the_branch_but_may_not_push_it(gateway, attempt, forge, namespace, tmp_path):
    a = attempt(task="b1-review", role="reviewer", branch=f"longshot/{namespace}/b1/b1-t1")
    work = clone(a, gateway, namespace, tmp_path / "work")
    commit(work, "sneaky.txt")
    r = agent_git(a.token, work, "push", f"{gateway.url}/git/{namespace}/b1.git",
                  f"HEAD:refs/heads/longshot/{namespace}/b1/b1-t1")
    assert r.returncode != 0, r.stderr
    assert f"agents may only update refs/longshot/handoffs/{namespace}/b1/b1-review/1" in r.stderr, r.stderr


def test_a_wrong_upstream_credential_is_an_error_naming_the_repository(gateway, core_v1, custom, namespace, forge,
                                                                      tmp_path):
    secret(core_v1, namespace, "bad-token", {"username": "alice", "password": "not-the-Passw0rd-x9"})
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec={
        "repository": {"url": forge.url("app"), "credentialsSecret": "bad-token"}})
    r = agent_git(a.token, None, "clone", f"{gateway.url}/git/{namespace}/b1.git", str(tmp_path / "w"))
    assert r.returncode != 0
    assert "remote: longshot-gateway: the gateway could not fetch the repository" in r.stderr, r.stderr
    assert "refused the credentials of spec.repository.credentialsSecret bad-token" in r.stderr, r.stderr
    assert "not-the-Passw0rd-x9" not in r.stderr and PASSWORD not in r.stderr


def test_a_missing_credentials_secret_is_named(gateway, core_v1, custom, namespace, forge, tmp_path):
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec={
        "repository": {"url": forge.url("app"), "credentialsSecret": "nope"}})
    r = agent_git(a.token, None, "clone", f"{gateway.url}/git/{namespace}/b1.git", str(tmp_path / "w"))
    assert r.returncode != 0 and f"Secret {namespace}/nope" in r.stderr, r.stderr


def test_a_push_over_the_limit_is_refused_and_the_mirror_still_serves_clones(control_plane, core_v1, custom, namespace,
                                                                          forge, gateway_settings, tmp_path):
    """The whole push is received before the mirror's push lock is taken (a slow sender must not hold up the
    build's clones); one over ``max_push_bytes`` is refused without reaching the upstream."""
    import os

    from gateway_server import GatewayThread

    secret(core_v1, namespace, "git-token", {"username": "alice", "password": PASSWORD})
    settings = gateway_settings.replace(max_push_bytes=64 * 1024)
    with GatewayThread(control_plane.kubeconfig, settings) as gw:
        a = make_attempt(core_v1, custom, namespace, gw.url, build_spec={
            "repository": {"url": forge.url("app"), "credentialsSecret": "git-token"}})
        work = clone(a, gw, namespace, tmp_path / "work")
        (work / "big.bin").write_bytes(os.urandom(512 * 1024))  # incompressible: the pack stays over the limit
        admin("add", "-A", cwd=work)
        admin("commit", "--quiet", "-m", "big", cwd=work)
        r = agent_git(a.token, work, "push", f"{gw.url}/git/{namespace}/b1.git",
                      f"HEAD:refs/heads/longshot/{namespace}/b1/b1-t1")
        assert r.returncode != 0
        assert f"refs/heads/longshot/{namespace}/b1/b1-t1" not in refs(forge)
        # the mirror is not left locked: a clone still works
        clone(a, gw, namespace, tmp_path / "again")


def test_without_the_charts_secret_grant_the_agent_is_told_which_value_to_set(
        control_plane, kubectl, core_v1, custom, namespace, forge, gateway_settings, tmp_path):
    """The gateway running with the chart's own RBAC, rendered with ``rbac.secrets.namespaces`` naming another
    namespace: it may not read the build's repository Secret, and the agent's git sees a 403 naming the Secret,
    the build field and the chart value that grants it, not a bare upstream failure."""
    import yaml
    from chart_render import of_kinds, render
    from gateway_server import GatewayThread

    from longshot_testing.controlplane import write_kubeconfig

    secret(core_v1, namespace, "git-token", {"username": "alice", "password": PASSWORD})
    release = f"gw-{namespace[-6:]}"
    docs = of_kinds(render(control_plane, namespace, "rbac.secrets.namespaces={default}", release=release),
                    "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    try:
        (account,) = [d["metadata"]["name"] for d in of_kinds(docs, "ServiceAccount")
                      if d["metadata"]["name"].endswith("-gateway")]
        token = core_v1.create_namespaced_service_account_token(
            account, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
        config = write_kubeconfig(tmp_path / "gateway.kubeconfig", control_plane.server,
                                  Path(control_plane.pki) / "ca.crt", token, user=account)
        with GatewayThread(config, gateway_settings) as gw:
            a = make_attempt(core_v1, custom, namespace, gw.url, build_spec={
                "repository": {"url": forge.url("app"), "credentialsSecret": "git-token"}})
            r = agent_git(a.token, None, "clone", f"{gw.url}/git/{namespace}/b1.git", str(tmp_path / "w"))
        assert r.returncode != 0
        assert "403" in r.stderr, r.stderr
        assert f"may not read the repository credentials Secret {namespace}/git-token" in r.stderr, r.stderr
        assert "spec.repository.credentialsSecret" in r.stderr and "rbac.secrets" in r.stderr, r.stderr
        assert PASSWORD not in r.stderr
    finally:
        kubectl("delete", "-f", "-", "--wait=false", "--ignore-not-found", input=yaml.safe_dump_all(docs),
                check=False)


def test_with_scopes_enforced_a_push_changing_files_outside_the_tasks_scope_is_refused_naming_them(
        core_v1, custom, namespace, gateway, forge, tmp_path):
    secret(core_v1, namespace, "git-token", {"username": "alice", "password": PASSWORD})
    spec = {"repository": {"url": forge.url("app"), "credentialsSecret": "git-token"}, "scope": {"enforce": True}}
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=spec, scope=["src", "tests/**"])
    url, branch = f"{gateway.url}/git/{namespace}/b1.git", f"refs/heads/longshot/{namespace}/b1/b1-t1"
    work = clone(a, gateway, namespace, tmp_path / "work")
    (work / "src").mkdir()
    ok = commit(work, "src/app.py")
    r = agent_git(a.token, work, "push", "--porcelain", url, f"HEAD:{branch}")
    assert r.returncode == 0, r.stderr
    assert refs(forge)[branch] == ok

    (work / "docs").mkdir()
    commit(work, "docs/notes.md")
    commit(work, "README.md")
    r = agent_git(a.token, work, "push", url, f"HEAD:{branch}")
    assert r.returncode != 0
    assert "2 changed file(s) outside the task's scope [src, tests/**]" in r.stderr, r.stderr
    assert "README.md" in r.stderr and "docs/notes.md" in r.stderr and "spec.scope.enforce" in r.stderr
    assert refs(forge)[branch] == ok  # nothing reached the upstream
    # the handoff ref is not the task's work: it is not checked
    r = agent_git(a.token, work, "push", url, f"+HEAD:refs/longshot/handoffs/{namespace}/b1/b1-t1/1")
    assert r.returncode == 0, r.stderr


def test_without_enforcement_the_scope_is_only_a_hint_and_the_same_push_lands(core_v1, custom, namespace, gateway,
                                                                             forge, tmp_path):
    secret(core_v1, namespace, "git-token", {"username": "alice", "password": PASSWORD})
    spec = {"repository": {"url": forge.url("app"), "credentialsSecret": "git-token"}}
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=spec, scope=["src"])
    work = clone(a, gateway, namespace, tmp_path / "work")
    head = commit(work, "README.md")
    r = agent_git(a.token, work, "push", f"{gateway.url}/git/{namespace}/b1.git",
                  f"HEAD:refs/heads/longshot/{namespace}/b1/b1-t1")
    assert r.returncode == 0, r.stderr
    assert refs(forge)[f"refs/heads/longshot/{namespace}/b1/b1-t1"] == head


def test_a_mirror_reads_the_upstream_head_once_then_follows_it_every_head_sync_seconds(
        gateway, attempt, forge, namespace, tmp_path, monkeypatch):
    from longshot.gateway import gitserve

    def advertisements() -> int:
        return sum(1 for method, path, _ in forge.requests if method == "GET" and "/info/refs" in path)

    a = attempt()
    clone(a, gateway, namespace, tmp_path / "first")
    first = advertisements()
    assert first == 2  # the mirror's first fetch, and its HEAD (ls-remote --symref)
    # the upstream's default branch moves: within HEAD_SYNC_SECONDS a clone costs the upstream one fetch, no more
    admin("branch", "trunk", "main", cwd=forge.root / "app.git")
    admin("symbolic-ref", "HEAD", "refs/heads/trunk", cwd=forge.root / "app.git")
    second = clone(a, gateway, namespace, tmp_path / "second")
    assert advertisements() == first + 1
    assert admin("symbolic-ref", "--short", "HEAD", cwd=second) == "main"
    # once HEAD_SYNC_SECONDS have passed, the next refresh reads HEAD again and clones check out the new default
    monkeypatch.setattr(gitserve, "HEAD_SYNC_SECONDS", 0.0)
    third = clone(a, gateway, namespace, tmp_path / "third")
    assert advertisements() == first + 3
    assert admin("symbolic-ref", "--short", "HEAD", cwd=third) == "trunk"


def test_a_clone_is_served_while_another_attempts_push_is_held_upstream_and_the_push_still_lands(
        gateway, attempt, forge, namespace, tmp_path):
    """A mirror fetch no longer waits for the pushes in flight (it leaves their refs out): a push held in the
    upstream's own pre-receive hook does not hold up another agent's clone, and when the push is let go it lands in
    the upstream and in the mirror (no "reference already exists" from a fetch that wrote its ref first)."""
    import threading

    gate = tmp_path / "gate"
    gate.mkdir()
    hook = forge.root / "app.git" / "hooks" / "pre-receive"
    hook.parent.mkdir(exist_ok=True)
    # the upstream holds the push until the test lets it go (a wait on a file the test writes, not a timed sleep)
    hook.write_text(f"#!/bin/sh\ncat >/dev/null\ntouch {gate}/started\n"
                    f"while [ ! -e {gate}/release ]; do sleep 0.05; done\n")
    hook.chmod(0o755)
    pusher = attempt()
    work = clone(pusher, gateway, namespace, tmp_path / "work")
    head = commit(work, "feature.txt")
    ref = f"refs/heads/longshot/{namespace}/b1/b1-t1"
    result: list[subprocess.CompletedProcess[str]] = []
    push = threading.Thread(target=lambda: result.append(agent_git(
        pusher.token, work, "push", "--porcelain", f"{gateway.url}/git/{namespace}/b1.git", f"HEAD:{ref}")))
    push.start()
    try:
        wait_for(lambda: (gate / "started").exists(), timeout=60, what="the upstream holding the push")
        # the push is in flight (the upstream holds it): another attempt's clone is served now, without its ref
        other = attempt(task="b1-t2")
        seen = agent_git(other.token, None, "clone", "--quiet", f"{gateway.url}/git/{namespace}/b1.git",
                         str(tmp_path / "other"))
        assert seen.returncode == 0, seen.stderr
        assert push.is_alive() and not (gate / "release").exists()
        branches = admin("for-each-ref", "--format=%(refname)", cwd=tmp_path / "other")
        assert f"refs/remotes/origin/longshot/{namespace}/b1/b1-t1" not in branches.split()
    finally:
        (gate / "release").touch()
        push.join(120)
    assert result and result[0].returncode == 0, result and result[0].stderr
    assert refs(forge)[ref] == head
    # the mirror took the push's ref too: the next clone has it
    again = agent_git(pusher.token, None, "clone", "--quiet", f"{gateway.url}/git/{namespace}/b1.git",
                      str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert admin("rev-parse", f"refs/remotes/origin/longshot/{namespace}/b1/b1-t1", cwd=tmp_path / "again") == head


def test_a_clone_is_served_from_a_fetch_of_the_last_seconds_and_a_push_always_waits_for_a_fresh_one(
        control_plane, attempt, forge, namespace, tmp_path):
    """``mirror_max_age_seconds``: a clone within that window of the mirror's last fetch costs the upstream nothing
    (and may miss what reached it since); the ref advertisement of a push always follows a fetch that started after it
    asked, so a push is never made against values the upstream no longer holds."""
    from gateway_server import GatewayThread, settings_for

    def advertisements() -> int:
        return sum(1 for method, path, _ in forge.requests if method == "GET" and "/info/refs" in path)

    settings = settings_for(namespace, tmp_path / "gw", mirror_max_age_seconds=30.0)
    with GatewayThread(control_plane.kubeconfig, settings) as gw:
        a = attempt()
        first = clone(a, gw, namespace, tmp_path / "first")
        fetched = advertisements()
        # the upstream moves (the queue lands something): a clone within the window is served from the mirror
        seed = tmp_path / "upstream-work"
        admin("clone", "--quiet", str(forge.root / "app.git"), str(seed))
        landed = commit(seed, "landed.txt")
        admin("push", "--quiet", "origin", "main", cwd=seed)
        second = clone(a, gw, namespace, tmp_path / "second")
        assert advertisements() == fetched, "a clone within mirror_max_age_seconds fetched the upstream"
        assert admin("rev-parse", "origin/main", cwd=second) == admin("rev-parse", "origin/main", cwd=first) != landed
        # a push's advertisement fetches first: the agent's branch is pushed against the upstream as it is now
        head = commit(second, "feature.txt")
        ref = f"refs/heads/longshot/{namespace}/b1/b1-t1"
        r = agent_git(a.token, second, "push", "--porcelain", f"{gw.url}/git/{namespace}/b1.git", f"HEAD:{ref}")
        assert r.returncode == 0, r.stderr
        assert advertisements() > fetched and refs(forge)[ref] == head
        # and the clone after it (the window restarted by that fetch) has what landed
        third = clone(a, gw, namespace, tmp_path / "third")
        assert admin("rev-parse", "origin/main", cwd=third) == landed


def test_a_clone_sees_its_own_and_its_base_branch_not_the_other_tasks_branches_of_its_build(
        gateway, attempt, forge, namespace, tmp_path):
    """The build's other task branches are hidden from an attempt's clone (a repository holds one per task of every
    build, and each clone took them all); the tips stay fetchable by id, and a reviewer (a judge reads its
    candidates' branches) sees them all."""
    seed = tmp_path / "seed-work"
    admin("clone", "--quiet", str(forge.root / "app.git"), str(seed))
    tips = {}
    for branch in (f"longshot/{namespace}/b1/b1-t1", f"longshot/{namespace}/b1/b1-t2",
                   f"longshot/{namespace}/b2/b2-t1"):
        admin("checkout", "--quiet", "-B", branch, "origin/main", cwd=seed)
        tips[branch] = commit(seed, branch.replace("/", "-") + ".txt")
        admin("push", "--quiet", "origin", f"{branch}:refs/heads/{branch}", cwd=seed)

    def branches(work: Path) -> set[str]:
        out = admin("for-each-ref", "--format=%(refname:lstrip=3)", "refs/remotes/origin/", cwd=work)
        return set(out.split()) - {"HEAD"}

    worker = attempt()
    work = clone(worker, gateway, namespace, tmp_path / "worker")
    assert branches(work) == {"main", f"longshot/{namespace}/b1/b1-t1", f"longshot/{namespace}/b2/b2-t1"}
    other = tips[f"longshot/{namespace}/b1/b1-t2"]
    r = agent_git(worker.token, work, "fetch", "--quiet", f"{gateway.url}/git/{namespace}/b1.git", other)
    assert r.returncode == 0, r.stderr
    assert admin("cat-file", "-t", other, cwd=work) == "commit"
    # a reviewer sees every branch
    reviewer = attempt(task="b1-r", role="reviewer", branch=f"longshot/{namespace}/b1/b1-t2")
    read = clone(reviewer, gateway, namespace, tmp_path / "reviewer")
    assert branches(read) == {"main", *tips}
