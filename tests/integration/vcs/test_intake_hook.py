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


def test_a_commit_with_nothing_to_add_is_not_rewritten(server, ws):
    # the item is checked, the reference and the queue's trailer are there: the commit lands as it is (its message
    # is read exactly, with GitPython; a format string's extra newline used to make every such commit "changed")
    server.commit("main", {"ROADMAP.md": "- [x] add\n"}, message="roadmap")
    server.commit("add", {"calc.py": "x = 1\n"}, message="add()\n\nRefs #12\n\nLongshot-Merge-Id: uid-add")
    m = member(server, "add", "fast-forward", check_off=("ROADMAP.md", "add"), references=("Refs #12",))
    with ws.locked():
        speculate.fetch(ws, "main", [m])
        assert speculate.finish_member(ws, m.commit, m) == m.commit


def test_the_rewritten_commit_keeps_its_author_date_and_time_zone(server, ws):
    git("fetch", "--quiet", "origin", cwd=server.work)
    git("checkout", "--quiet", "-B", "tz", "origin/main", cwd=server.work)
    (server.work / "tz.py").write_text("tz = 1\n")
    git("add", "--all", cwd=server.work)
    git("commit", "--quiet", "--author=Ann Ö <ann@example.com>", "--date=1700000000 +0530", "-m", "tz", cwd=server.work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/tz", cwd=server.work)
    m = member(server, "tz", "fast-forward", references=("Refs #7",))
    with ws.locked():
        speculate.fetch(ws, "main", [m])
        rewritten = speculate.finish_member(ws, m.commit, m)
    assert rewritten != m.commit
    shown = ws.out("log", "-1", "--date=raw", "--format=%an <%ae> %ad%x00%P%x00%T%x00%B", rewritten).split("\0")
    original = ws.out("log", "-1", "--format=%P%x00%T", m.commit).split("\0")
    assert shown[0] == "Ann Ö <ann@example.com> 1700000000 +0530"
    assert shown[1:3] == original
    assert shown[3] == "tz\n\nRefs #7\n\nLongshot-Merge: ns/b-tz\nLongshot-Merge-Id: uid-tz"


def test_an_agent_commit_whose_message_is_not_utf8_still_lands(server, ws):
    # a fast-forward lands the agent's own commit, whose headers and message are whatever it wrote: a message in no
    # encoding (and a made-up encoding header) is read with replacement characters, not a crash of the batch
    tree = git("rev-parse", "main^{tree}", cwd=server.bare)
    raw_commit = (f"tree {tree}\nparent {server.head()}\nauthor A <a@example.com> 1700000000 +0000\n"
                  "committer A <a@example.com> 1700000000 +0000\nencoding x-no-such-encoding\n\n").encode()
    obj = server.bare.parent / "odd-commit"
    obj.write_bytes(raw_commit + b"work \xff\xfe done\n")
    sha = git("hash-object", "-t", "commit", "-w", "--literally", str(obj), cwd=server.bare)
    git("update-ref", "refs/heads/odd", sha, cwd=server.bare)
    m = member(server, "odd", "fast-forward", references=("Refs #9",))
    prepared = speculate.prepare(ws, "main", [m])
    (applied,) = prepared.members
    assert isinstance(applied, q.Applied) and applied.commit != sha
    assert speculate.land(ws, "main", prepared.base, applied.commit, "unused")[0]
    message = server.message("main")
    assert message.startswith("work ") and "done" in message and "Refs #9" in message
