"""The pre-receive hook's scope check (spec.scope.enforce) on real git repositories: which commits count as the
task's, which of their files, and what the refusal names. The gateway end of it (the hook's environment from the
build and task) is refpolicy.scope_env; the whole door is tested on a real API server in
tests/integration/test_gateway_git.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from longshot.gateway import hook, refpolicy

pytestmark = pytest.mark.integration

ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t",
       "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
ZERO = "0" * 40
REF = "refs/heads/longshot/ns/b/b-t1"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env={**os.environ, **ENV}, check=True, capture_output=True,
                          text=True).stdout.strip()


def write(repo: Path, path: str, text: str = "x\n") -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)


def commit(repo: Path, *paths: str, message: str = "change") -> str:
    for p in paths:
        write(repo, p, f"{message} {p}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path, monkeypatch):
    r = tmp_path / "r"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    commit(r, "README.md", "src/a.py", "docs/guide.md", message="initial")
    monkeypatch.chdir(r)
    monkeypatch.setenv("LONGSHOT_GATEWAY_SCOPE", json.dumps(["src", "tests/**"]))
    monkeypatch.setenv("LONGSHOT_GATEWAY_SCOPE_REF", REF)
    monkeypatch.setenv("LONGSHOT_GATEWAY_SCOPE_BASE", "refs/heads/main refs/heads/gone")  # a missing base is fine
    return r


def test_commits_inside_the_scope_pass_and_one_file_outside_refuses_the_push_naming_it(repo):
    git(repo, "checkout", "-q", "-b", "work")
    commit(repo, "src/b.py", "tests/test_b.py")
    ok = git(repo, "rev-parse", "HEAD")
    assert hook.check_scope([[ZERO, ok, REF]], 30) is None
    commit(repo, "src/c.py", "docs/guide.md", "setup.cfg")
    bad = git(repo, "rev-parse", "HEAD")
    why = hook.check_scope([[ZERO, bad, REF]], 30)
    assert why is not None and why.startswith(f"refusing {REF}: 2 changed file(s) outside the task's scope")
    assert "docs/guide.md, setup.cfg" in why and "src/c.py" not in why
    # pushed on top of the first push (old = what the branch was): only the new commits count
    assert "docs/guide.md" in (hook.check_scope([[ok, bad, REF]], 30) or "")


def test_a_commit_already_on_the_branch_or_the_base_is_not_the_tasks(repo):
    git(repo, "checkout", "-q", "-b", "work")
    outside = commit(repo, "docs/guide.md")  # pushed before enforcement, say: the branch's old value holds it
    git(repo, "checkout", "-q", "main")
    commit(repo, "Makefile", "docs/other.md", message="main moved on")
    git(repo, "checkout", "-q", "work")
    git(repo, "merge", "-q", "--no-edit", "main")  # brings main's files in: not the task's change
    merged = commit(repo, "src/d.py")
    assert hook.check_scope([[outside, merged, REF]], 30) is None


def test_a_merge_counts_the_files_it_changed_from_every_parent(repo):
    git(repo, "checkout", "-q", "-b", "work")
    commit(repo, "src/a.py")
    git(repo, "checkout", "-q", "main")
    commit(repo, "README.md", message="main edits README")
    git(repo, "checkout", "-q", "work")
    git(repo, "merge", "-q", "--no-commit", "main")
    write(repo, "README.md", "an evil merge rewrites it\n")  # differs from both parents
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "merge")
    why = hook.check_scope([[ZERO, git(repo, "rev-parse", "HEAD"), REF]], 30)
    assert why is not None and "1 changed file(s)" in why and "README.md" in why


def reverting_merge(repo: Path, revert: str) -> str:
    """A hand-made merge of the task's work with an old main commit whose tree takes ``revert`` from that commit
    (every other file from the task's side): ``git diff-tree -c`` shows nothing, as the file equals a parent."""
    old = git(repo, "rev-parse", "main")
    commit(repo, revert, message="main tightens a setting")
    git(repo, "checkout", "-q", "-b", "work")
    mine = commit(repo, "src/a.py")
    git(repo, "checkout", "-q", old, "--", revert)
    tree = git(repo, "write-tree")
    merge = git(repo, "commit-tree", tree, "-p", mine, "-p", old, "-m", "Merge an old main")
    assert git(repo, "diff-tree", "-r", "-c", "--name-only", merge) == merge  # the old check saw no file
    return merge


def test_a_merge_that_reverts_a_file_to_an_old_main_commit_counts_that_file(repo):
    merge = reverting_merge(repo, "docs/guide.md")
    why = hook.check_scope([[ZERO, merge, REF]], 30)
    assert why is not None and "1 changed file(s)" in why and "docs/guide.md" in why


def test_a_conflicted_merges_resolution_is_the_pushers_change(repo):
    git(repo, "checkout", "-q", "-b", "work")
    commit(repo, "docs/guide.md", message="task side")
    git(repo, "checkout", "-q", "-b", "other", "main")
    other = commit(repo, "docs/guide.md", message="other side")
    git(repo, "checkout", "-q", "work")
    subprocess.run(["git", "merge", "-q", "--no-edit", other], cwd=repo, env={**os.environ, **ENV},
                   capture_output=True, check=False)  # conflicts in docs/guide.md
    write(repo, "docs/guide.md", "resolved\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "merge")
    monkey = hook.check_scope([[ZERO, git(repo, "rev-parse", "HEAD"), REF]], 30)
    assert monkey is not None and "docs/guide.md" in monkey


def test_a_merge_of_more_than_two_parents_is_refused(repo):
    git(repo, "checkout", "-q", "-b", "work")
    a = commit(repo, "src/a.py")
    b = commit(repo, "src/b.py")
    octopus = git(repo, "commit-tree", git(repo, "rev-parse", "HEAD^{tree}"), "-p", a, "-p", b, "-p", "main", "-m",
                  "octopus")
    why = hook.check_scope([[ZERO, octopus, REF]], 30)
    assert why is not None and "more than two parents" in why


def test_other_refs_and_an_unscoped_push_are_not_checked(repo, monkeypatch):
    git(repo, "checkout", "-q", "-b", "work")
    bad = commit(repo, "docs/guide.md")
    assert hook.check_scope([[ZERO, bad, "refs/longshot/handoffs/ns/b/b-t1/1"]], 30) is None
    monkeypatch.delenv("LONGSHOT_GATEWAY_SCOPE")
    assert hook.check_scope([[ZERO, bad, REF]], 30) is None


def test_a_push_past_the_checks_bounds_is_refused_not_let_through(repo, monkeypatch):
    git(repo, "checkout", "-q", "-b", "work")
    head = ""
    for i in range(4):
        head = commit(repo, f"src/{i}.py", message=f"c{i}")
    monkeypatch.setattr(hook, "MAX_COMMITS", 3)
    why = hook.check_scope([[ZERO, head, REF]], 30)
    assert why is not None and "could not be checked" in why and "more than 3 new commits" in why
    monkeypatch.setattr(hook, "MAX_COMMITS", 100)
    monkeypatch.setattr(hook, "MAX_DIFF_BYTES", 10)
    assert "bytes of changes" in (hook.check_scope([[ZERO, head, REF]], 30) or "")


def test_the_gateway_sets_the_hooks_scope_only_for_an_enforcing_build_and_a_scoped_pushing_task():
    worker = refpolicy.RefPolicy(namespace="ns", build="b", task="b-t1", attempt=1, role="worker",
                                 branch="longshot/ns/b/b-t1")
    env = refpolicy.scope_env(worker, enforce=True, scope=["src"], base_branches=["main", "main", "bad..ref"],
                              stack_commits=["abc1234", "--upload-pack=x"])
    assert env == {"LONGSHOT_GATEWAY_SCOPE": '["src"]', "LONGSHOT_GATEWAY_SCOPE_REF": REF,
                   "LONGSHOT_GATEWAY_SCOPE_BASE": "refs/heads/main abc1234"}
    assert refpolicy.scope_env(worker, enforce=False, scope=["src"], base_branches=["main"], stack_commits=[]) == {}
    assert refpolicy.scope_env(worker, enforce=True, scope=[], base_branches=["main"], stack_commits=[]) == {}
    reviewer = refpolicy.RefPolicy(namespace="ns", build="b", task="b-r", attempt=1, role="reviewer",
                                   branch="longshot/ns/b/b-t1")
    assert refpolicy.scope_env(reviewer, enforce=True, scope=["src"], base_branches=["main"], stack_commits=[]) == {}


# --- the credential file: only its path in an environment ------------------------------------------------------

def test_the_credential_is_included_by_path_after_the_config_entries_already_there():
    env = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.curloptResolve", "GIT_CONFIG_VALUE_0": "h:443:1.2.3.4"}
    out = hook.with_include(env, "/m/keys/.credential-x.gitconfig")
    assert out == {**env, "GIT_CONFIG_COUNT": "2", "GIT_CONFIG_KEY_1": "include.path",
                   "GIT_CONFIG_VALUE_1": "/m/keys/.credential-x.gitconfig"}
    assert hook.with_include(env, None) is env


def test_config_text_quotes_values_and_refuses_a_newline():
    assert hook.config_text([("http.extraHeader", 'a "b" \\c')]) == '[http]\n\textraHeader = "a \\"b\\" \\\\c"\n'
    with pytest.raises(ValueError, match=r"http\.extraHeader"):
        hook.config_text([("http.extraHeader", "a\n[core]\n\tsshCommand = evil")])
