"""A scoped worker under ``spec.scope.enforce`` stepping around its scope, on a real API server and the real
gateway (a real smart-HTTP git server upstream): a child asked for with scope ``["**"]`` (or wider than the
parent's), and a hand-made merge commit whose second parent is an old main commit, reverting a file outside the
scope. Before issue 50 the child was recorded unchecked, and the merge landed: ``git diff-tree -c`` shows no file
that equals one parent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import git_servers
from gateway_attempts import make_attempt, secret
from k8s_builders import get

pytestmark = pytest.mark.integration

PASSWORD = "s3cr3t-scope-passw0rd"
IDENTITY = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
            "GIT_TERMINAL_PROMPT": "0"}
admin = git_servers.Git(IDENTITY, isolated=True, strip=True)
SETTING = "deploy/security.yaml"


@pytest.fixture
def forge(tmp_path):
    """app.git: main is "initial" (SETTING lax) then "tighten" (SETTING strict); the tag old is "initial"."""
    root = tmp_path / "forge"
    root.mkdir()
    admin("init", "--quiet", "--bare", "-b", "main", str(root / "app.git"))
    seed = tmp_path / "seed"
    admin("init", "--quiet", "-b", "main", str(seed))
    (seed / "deploy").mkdir()
    (seed / "src").mkdir()
    (seed / "src" / "app.py").write_text("print('app')\n")
    (seed / SETTING).write_text("allowAnonymous: true\n")
    admin("add", "-A", cwd=seed)
    admin("commit", "--quiet", "-m", "initial", cwd=seed)
    admin("tag", "old", cwd=seed)
    (seed / SETTING).write_text("allowAnonymous: false\n")
    admin("commit", "--quiet", "-am", "tighten", cwd=seed)
    admin("push", "--quiet", str(root / "app.git"), "main", "old", cwd=seed)
    with git_servers.git_http(root, git=admin, accounts=[("alice", PASSWORD)]) as server:
        yield server


def agent_git(token: str, cwd: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**IDENTITY, "PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_COUNT": "1",
           "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {token}"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def scoped(core_v1, custom, namespace, gateway, forge):
    """A worker scoped to src/ of a build that enforces scopes and may delegate."""
    secret(core_v1, namespace, "git-token", {"username": "alice", "password": PASSWORD})
    spec = {"repository": {"url": forge.url("app"), "credentialsSecret": "git-token"}, "scope": {"enforce": True},
            "delegation": {"enabled": True}}
    return make_attempt(core_v1, custom, namespace, gateway.url, build_spec=spec, scope=["src"])


@pytest.mark.parametrize("scope", [["**"], ["src", "deploy"], ["*"]])
def test_a_child_wider_than_its_scoped_parent_is_refused_naming_the_field(gateway, scoped, custom, namespace,
                                                                          scope):
    r = httpx.post(f"{gateway.url}/delegation/spawn", json={"tasks": [
        {"name": "inside", "prompt": "p", "scope": ["src/api"]}, {"name": "wide", "prompt": "p", "scope": scope}]},
        headers=scoped.headers, timeout=30)
    assert r.status_code == 403, r.text
    assert "tasks[1].scope" in r.json()["error"] and "spec.scope.enforce" in r.json()["error"]
    assert "delegation" not in (get(custom, namespace, "agenttasks", scoped.name).get("status") or {})
    # within the parent's scope, or none (the parent's is inherited): recorded
    ok = httpx.post(f"{gateway.url}/delegation/spawn", json={"tasks": [
        {"name": "inside", "prompt": "p", "scope": ["src/api"]}, {"name": "same", "prompt": "p"}]},
        headers=scoped.headers, timeout=30)
    assert ok.status_code == 202, ok.text


def test_a_merge_reverting_an_out_of_scope_file_to_an_old_main_commit_is_refused(gateway, scoped, forge, namespace,
                                                                                 tmp_path):
    url, branch = f"{gateway.url}/git/{namespace}/b1.git", f"refs/heads/longshot/{namespace}/b1/b1-t1"
    work = tmp_path / "work"
    r = agent_git(scoped.token, None, "clone", "--quiet", url, str(work))
    assert r.returncode == 0, r.stderr
    (work / "src" / "app.py").write_text("print('app v2')\n")
    admin("commit", "--quiet", "-am", "in scope", cwd=work)
    mine = admin("rev-parse", "HEAD", cwd=work)
    old = admin("rev-parse", "origin/main~1", cwd=work)
    admin("checkout", "--quiet", old, "--", SETTING, cwd=work)
    tree = admin("write-tree", cwd=work)
    merge = admin("commit-tree", tree, "-p", mine, "-p", old, "-m", "Merge branch 'main'", cwd=work)
    assert admin("diff-tree", "-r", "-c", "--name-only", merge, cwd=work) == merge  # the combined diff: empty

    r = agent_git(scoped.token, work, "push", url, f"{merge}:{branch}")
    assert r.returncode != 0, "the reverting merge was pushed"
    assert SETTING in r.stderr and "outside the task's scope [src]" in r.stderr, r.stderr
    heads = admin("for-each-ref", "--format=%(refname)", cwd=forge.root / "app.git")
    assert branch not in heads.split()  # nothing reached the upstream
    # the same work without the revert lands
    r = agent_git(scoped.token, work, "push", url, f"{mine}:{branch}")
    assert r.returncode == 0, r.stderr
