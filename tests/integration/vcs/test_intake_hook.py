"""The merge queue's intake hook on real git: a roadmap item is checked off and an issue referenced in the same
commit as the work, for every strategy, byte for byte, and recognised after a restart."""

from __future__ import annotations

import subprocess

import pytest
from vcs_servers import Server, git

from longshot.core import mergequeue as q
from longshot.vcs import speculate
from longshot.vcs import workspace as ws

ROADMAP = "# Plan\r\n\r\n- [ ] add\r\n- [ ] mul\r\n  - [x] mul docs\r\n"


def raw(server: Server, rev: str, path: str) -> bytes:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=server.bare, env=git.env, check=True,
                          capture_output=True).stdout


def changed(server: Server, rev: str) -> list[str]:
    return sorted(git("diff-tree", "--no-commit-id", "--name-only", "-r", rev, cwd=server.bare).split())


def member(server: Server, branch: str, strategy: str, **kw) -> speculate.Member:
    return speculate.Member(name=f"b-{branch}", namespace="ns", uid=f"uid-{branch}", branch=branch,
                            commit=server.head(branch), strategy=strategy, task=f"b-{branch}", build="b", **kw)


@pytest.mark.parametrize("strategy", ["rebase", "merge-commit", "fast-forward"])
def test_the_item_is_checked_off_in_the_commit_that_lands_the_work(server, ws, strategy):
    server.commit("main", {"ROADMAP.md": ROADMAP}, message="roadmap")
    server.commit("add", {"calc.py": "def add(a, b):\n    return a + b\n"}, message="add()")
    m = member(server, "add", strategy, check_off=("ROADMAP.md", "add"), references=("Refs #12",))
    prepared = speculate.prepare(ws, "main", [m])
    (applied,) = prepared.members
    assert isinstance(applied, q.Applied)
    ok, _ = speculate.land(ws, "main", prepared.base, applied.commit, "unused")
    assert ok and server.head() == applied.commit
    assert raw(server, "main", "ROADMAP.md") == ROADMAP.replace("- [ ] add", "- [x] add").encode()
    touched = changed(server, "main") if strategy != "merge-commit" else sorted(
        git("diff", "--name-only", "main^1", "main", cwd=server.bare).split())
    assert touched == ["ROADMAP.md", "calc.py"]
    message = server.message("main")
    assert "Refs #12" in message and "Longshot-Merge-Id: uid-add" in message
    # after a restart the queue recognises the merge by its own record: never merged twice
    (again,) = speculate.prepare(ws, "main", [m]).members
    assert isinstance(again, q.AlreadyOnTarget) and again.name == "b-add"


def in_workspace(w: ws.Workspace, rev: str, path: str) -> bytes:
    return w.git("show", f"{rev}:{path}").stdout


def test_a_missing_item_or_file_changes_nothing_but_the_merge(server, ws):
    server.commit("main", {"ROADMAP.md": "- [ ] other\n"}, message="roadmap")
    server.commit("x", {"x.py": "x = 1\n"})
    for check_off in (("ROADMAP.md", "gone"), ("docs/ROADMAP.md", "x")):
        m = member(server, "x", "rebase", check_off=check_off)
        (applied,) = speculate.prepare(ws, "main", [m]).members
        assert isinstance(applied, q.Applied)
        assert in_workspace(ws, applied.commit, "ROADMAP.md") == b"- [ ] other\n"
        assert in_workspace(ws, applied.commit, "x.py") == b"x = 1\n"


def test_read_file_refuses_what_is_not_a_small_utf8_file(server, ws):
    server.commit("main", {"ROADMAP.md": "- [ ] a\n", "dir/f": "x"}, message="files")
    with ws.locked():
        head = speculate.fetch(ws, "main", [])
    assert speculate.read_file(ws, head, "ROADMAP.md") == "- [ ] a\n"
    assert speculate.read_file(ws, head, "missing.md") is None
    with pytest.raises(ValueError, match="not a file"):
        speculate.read_file(ws, head, "dir")
    with pytest.raises(ValueError, match="more than"):
        speculate.read_file(ws, head, "ROADMAP.md", limit=3)
    (server.work / "bin.md").write_bytes(b"\xff\xfe not utf-8")
    git("add", "--all", cwd=server.work)
    git("commit", "--quiet", "-m", "binary", cwd=server.work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=server.work)
    with ws.locked():
        head = speculate.fetch(ws, "main", [])
    with pytest.raises(ValueError, match="not UTF-8"):
        speculate.read_file(ws, head, "bin.md")


def test_copy_branch_starts_each_candidate_from_the_branch_to_fix(server, ws):
    fix = server.commit("fixme", {"a.py": "a = 1\n"})
    server.commit("c2", {"b.py": "b = 2\n"})
    kept = server.head("c2")
    assert speculate.copy_branch(ws, "fixme", ["c1", "c2"]) == fix
    assert server.head("c1") == fix and server.head("c2") == kept
