"""A batch prepared with a few git calls for all its members (``speculate.prepare``): whether a member is already on
the target (ancestry, the queue's ``Longshot-Merge-Id`` record anywhere in a long history), which commits the
workspace has, and the branches' commits are read once per batch, and every answer is the one the member alone gets
(``speculate.already_merged``, ``Workspace.has_commit``, ``vcs.merge._branch_commits``), on real git."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest
from vcs_servers import Server, git

from longshot.core import mergequeue as q
from longshot.vcs import merge as vmerge
from longshot.vcs import speculate
from longshot.vcs import workspace as ws


def member(server: Server, branch: str, strategy: str = "rebase", uid: str | None = None,
           stacked_on: tuple[str, ...] = ()) -> speculate.Member:
    return speculate.Member(name=f"b-{branch}", namespace="ns", uid=f"uid-{branch}" if uid is None else uid,
                            branch=branch, commit=server.head(branch), strategy=strategy,  # type: ignore[arg-type]
                            task=f"b-{branch}", build="b", stacked_on=stacked_on)


def queue_commits(server: Server, messages: Sequence[str]) -> list[str]:
    """Empty commits on the server's ``main``, one per message, oldest first (one push)."""
    git("fetch", "--quiet", "origin", cwd=server.work)
    git("checkout", "--quiet", "-B", "main", "origin/main", cwd=server.work)
    shas = []
    for message in messages:
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=server.work)
        shas.append(git("rev-parse", "HEAD", cwd=server.work))
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=server.work)
    return shas


def landed(uid: str, subject: str = "a task's work") -> str:
    """A message as the queue writes it for the MergeJob ``uid``."""
    return f"{subject}\n\nLongshot-Merge: ns/x\n{speculate.ID_TRAILER}: {uid}\n"


def fillers(n: int, start: int = 0) -> list[str]:
    return [landed(f"uid-filler-{i}", f"filler {i}") for i in range(start, start + n)]


class CountingWorkspace(ws.Workspace):
    """The real workspace, counting its git commands by subcommand."""

    calls: Counter[str]

    def git(self, *args: str, input: bytes | str | None = None, check: bool = True, ok: Sequence[int] = (0,),
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        self.calls[ws._subcommand(args)] += 1
        return super().git(*args, input=input, check=check, ok=ok, env=env)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        self.calls[ws._subcommand(args)] += 1
        return super().popen(*args)


@pytest.fixture
def cws(server: Server, cache_dir) -> CountingWorkspace:
    w = CountingWorkspace(server.url, cache_dir, committer=("Longshot", "longshot@example.com"))
    w.calls = Counter()
    return w


def batch_answers(w: ws.Workspace, tip: str, members: Sequence[speculate.Member]) -> dict[int, str | None]:
    with w.locked():
        _, ids = speculate._fetch(w, "main", members)
        return speculate._merged_on_target(w, tip, members, speculate._read_branches(w, tip, tip, members, ids))


def alone(w: ws.Workspace, tip: str, members: Sequence[speculate.Member]) -> list[str | None]:
    with w.locked():
        return [speculate.already_merged(w, tip, m) for m in members]


def test_a_member_landed_long_ago_is_found_and_an_unmerged_one_never_is(server: Server, ws: ws.Workspace) -> None:
    old = server.commit("old", {"old.py": "x = 1\n"}, message="old: work")  # forked from the first commit
    server.commit("new", {"new.py": "y = 2\n"}, message="new: work")
    server.commit("nouid", {"nouid.py": "z = 3\n"}, message="nouid: work")
    (landing, *_) = queue_commits(server, [landed("uid-old"), *fillers(60)])
    server.commit("recent", {"recent.py": "r = 4\n"}, message="recent: work")  # forked from the last one
    tip = server.head()
    members = [member(server, "old"), member(server, "new"), member(server, "nouid", uid=""),
               member(server, "recent")]
    assert not server.is_ancestor(old, tip)

    answers = batch_answers(ws, tip, members)
    assert answers == {0: landing, 1: None, 2: None, 3: None}
    assert alone(ws, tip, members) == [landing, None, None, None]
    prepared = speculate.prepare(ws, "main", members)
    assert [type(m).__name__ for m in prepared.members] == ["AlreadyOnTarget", "Applied", "Applied", "Applied"]
    assert prepared.members[0] == q.AlreadyOnTarget("b-old", landing)


def test_ancestry_answers_for_every_member_at_once(server: Server, ws: ws.Workspace) -> None:
    server.commit("ff", {"ff.py": "x = 1\n"}, message="ff: work")
    member_ff = member(server, "ff", "fast-forward")
    git("push", "--quiet", "origin", f"{member_ff.commit}:refs/heads/main", cwd=server.work)  # merged by hand
    server.commit("open", {"open.py": "y = 2\n"}, message="open: work")
    tip = server.head()
    at_tip = speculate.Member(name="tip", namespace="ns", uid="", branch="main", commit=tip)
    members = [member_ff, member(server, "open"), at_tip]
    assert batch_answers(ws, tip, members) == {0: member_ff.commit, 1: None, 2: tip}
    assert alone(ws, tip, members) == [member_ff.commit, None, tip]


def test_only_the_newest_five_commits_with_the_uid_line_count_as_alone(server: Server, ws: ws.Workspace) -> None:
    """``already_merged`` reads the newest 5 commits whose message has the member's line (``-n 5``) and takes the
    first whose trailer block carries the UID: one older than 5 lookalikes is not seen, alone or in the batch (whose
    walk, reading up to 5 such commits per member, sees it)."""
    server.commit("hidden", {"h.py": "x = 1\n"}, message="hidden: work")
    server.commit("seen", {"s.py": "x = 2\n"}, message="seen: work")
    lookalike = f"mentions it\n\n{speculate.ID_TRAILER}: uid-hidden\n\nbut not as a trailer\n"
    queue_commits(server, [landed("uid-hidden"), *[lookalike] * 5, *fillers(3)])
    seen_lookalikes = queue_commits(server, [landed("uid-seen"), *[lookalike.replace("hidden", "seen")] * 2])
    tip = server.head()
    members = [member(server, "hidden"), member(server, "seen")]
    assert batch_answers(ws, tip, members) == {0: None, 1: seen_lookalikes[0]}
    assert alone(ws, tip, members) == [None, seen_lookalikes[0]]


def test_the_walk_reads_a_bounded_number_of_commits_and_leaves_the_rest_to_the_member_alone(
        server: Server, cws: CountingWorkspace) -> None:
    """A hostile history with many commits carrying one member's line: the batch's walk stops after 5 per member,
    and a member it could not answer is asked alone, with the same answer."""
    server.commit("noisy", {"n.py": "x = 1\n"}, message="noisy: work")
    server.commit("quiet", {"q.py": "x = 2\n"}, message="quiet: work")
    (quiet_landing,) = queue_commits(server, [landed("uid-quiet")])
    queue_commits(server, [f"noise {i}\n\n{speculate.ID_TRAILER}: uid-noisy\n\nnot a trailer\n" for i in range(30)])
    tip = server.head()
    members = [member(server, "noisy"), member(server, "quiet")]
    answers = batch_answers(cws, tip, members)
    assert answers == {0: None}  # 10 commits read, all of them the noisy member's: the quiet one is asked alone
    assert alone(cws, tip, members) == [None, quiet_landing]
    prepared = speculate.prepare(cws, "main", members)
    assert prepared.members[1] == q.AlreadyOnTarget("b-quiet", quiet_landing)
    assert isinstance(prepared.members[0], q.Applied)


def test_which_commits_the_workspace_has_is_what_has_commit_says(server: Server, ws: ws.Workspace) -> None:
    head = server.commit("b", {"b.py": "x = 1\n"}, message="b: work")
    with ws.locked():
        speculate.fetch(ws, "main", [member(server, "b")])
        tree = ws.out("rev-parse", f"{head}^{{tree}}")
        revs = [head, head[:10], "0" * 40, "", "refs/remotes/origin/main", tree, "no such thing", "b a"]
        ids = speculate._commit_ids(ws, revs)
        assert [ids[r] is not None for r in revs] == [ws.has_commit(r) for r in revs]
        assert ids[head] == head and ids[head[:10]] == head and ids[tree] is None


def test_a_batch_of_plain_members_costs_a_few_git_commands_in_all(server: Server, cws: CountingWorkspace) -> None:
    """A member's ancestry, the queue's record and its branch's commits are read for the whole batch, and a clean
    pick is computed and committed in the operator (``vcs.gitobjects``) through one ``cat-file --batch``: the batch
    takes no merge-tree nor commit-tree (with git alone, two a member; each member alone took eight commands)."""
    members = []
    for i in range(8):
        server.commit(f"m{i}", {f"m{i}.py": f"x = {i}\n"}, message=f"m{i}: work")
        members.append(member(server, f"m{i}"))
    queue_commits(server, fillers(20))
    prepared = speculate.prepare(cws, "main", members)
    assert all(isinstance(m, q.Applied) for m in prepared.members)
    cws.calls = Counter()
    speculate.prepare(cws, "main", members)
    assert cws.calls["merge-tree"] == 0 and cws.calls["commit-tree"] == 0, cws.calls
    assert sum(cws.calls.values()) <= 7, cws.calls


def outcomes(w: ws.Workspace, prepared: q.Prepared) -> list[tuple[str, ...]]:
    """Each member's outcome with, for an applied one, the commits it added on the one before: (tree, parents
    count, message) of each, oldest first."""
    out: list[tuple[str, ...]] = []
    below = prepared.base
    for m in prepared.members:
        if isinstance(m, q.Applied):
            log = w.out("log", "--reverse", "--format=%T %p%x00%B", f"{below}..{m.commit}")
            out.append(("Applied", m.name, *[f"{r.split(' ', 1)[0]} {len(r.split()) - 1}" if i % 2 == 0 else r
                                             for i, r in enumerate(log.split("\0"))]))
            below = m.commit
        else:
            out.append((type(m).__name__, m.name, *getattr(m, "files", ())))
    return out


@pytest.mark.parametrize("strategy", ["fast-forward", "merge-commit"])
def test_a_branch_built_on_a_member_applied_before_it_is_replayed_without_its_commits(
        server: Server, ws: ws.Workspace, monkeypatch: pytest.MonkeyPatch, strategy: str) -> None:
    """``a`` lands with ``strategy`` (its own commits join the batch's head); ``b`` was built on ``a`` and is rebased:
    only ``b``'s commit is replayed, as when git is asked for ``head..b``; then the same batch stacked on a batch
    below holding ``a``."""
    server.commit("a", {"a.py": "a = 1\n"}, message="a: one")
    server.commit("a", {"a.py": "a = 2\n"}, message="a: two")  # replayed again on the head, "a: one" conflicts
    server.commit("b", {"b.py": "b = 1\n"}, start="a", message="b: on a")
    server.commit("c", {"c.py": "c = 1\n"}, message="c: alone")
    members = [member(server, "a", strategy), member(server, "b"), member(server, "c")]
    batched = speculate.prepare(ws, "main", members)
    stacked = speculate.prepare(ws, "main", members[1:], onto=batched.members[0].commit)  # type: ignore[union-attr]
    monkeypatch.setattr(speculate, "_read_branches", lambda *_: None)  # every member alone
    each = speculate.prepare(ws, "main", members)
    stacked_each = speculate.prepare(ws, "main", members[1:], onto=each.members[0].commit)  # type: ignore[union-attr]
    assert outcomes(ws, batched) == outcomes(ws, each)
    assert outcomes(ws, stacked) == outcomes(ws, stacked_each)
    (b_commits,) = [o for o in outcomes(ws, batched) if o[1] == "b-b"]
    assert len(b_commits) == 4 and "b: on a" in b_commits[3]  # one commit: its tree, then its message


def test_stacked_and_conflicting_members_give_the_same_batch_as_each_alone(server: Server, ws: ws.Workspace,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    dep = server.commit("dep", {"models.py": "class User: ...\n"}, message="dep: models")
    server.commit("on-dep", {"api.py": "import models\n"}, start="dep", message="on-dep: api")
    server.commit("clash", {"README.md": "theirs\n"}, message="clash: readme")
    server.commit("merges", {"m.py": "m = 1\n"}, message="merges: one")
    server.commit("main", {"README.md": "ours\n"}, message="main moved")
    git("fetch", "--quiet", "origin", cwd=server.work)
    git("checkout", "--quiet", "-B", "merges", "origin/merges", cwd=server.work)
    git("merge", "--quiet", "--no-edit", "origin/main", cwd=server.work)  # a branch that merged the target in
    git("push", "--quiet", "origin", "HEAD:refs/heads/merges", cwd=server.work)
    land = speculate.prepare(ws, "main", [member(server, "dep")])
    assert speculate.land(ws, "main", land.base, land.members[0].commit, "unused")[0]  # type: ignore[union-attr]
    members = [member(server, "clash"), member(server, "on-dep", stacked_on=(dep,)), member(server, "merges"),
               member(server, "dep")]
    batched = speculate.prepare(ws, "main", members)
    monkeypatch.setattr(speculate, "_read_branches", lambda *_: None)
    each = speculate.prepare(ws, "main", members)
    assert outcomes(ws, batched) == outcomes(ws, each)
    assert [o[0] for o in outcomes(ws, batched)] == ["DidNotApply", "Applied", "Applied", "AlreadyOnTarget"]


def test_branch_commits_match_git_for_a_line_off_the_target(server: Server, ws: ws.Workspace) -> None:
    for i in range(3):
        server.commit("line", {f"l{i}.py": f"x = {i}\n"}, message=f"line: {i}")
    m = member(server, "line")
    tip = server.head()
    with ws.locked():
        _, ids = speculate._fetch(ws, "main", [m])
        branches = speculate._read_branches(ws, tip, tip, [m], ids)
        assert branches is not None
        assert branches.commits(ws, tip, m.commit, {}) == vmerge._branch_commits(ws, tip, m.commit)
        assert len(branches.commits(ws, tip, m.commit, {})) == 3


@pytest.mark.parametrize("strategy", ["fast-forward", "merge-commit"])
def test_branch_commits_leave_out_what_a_member_applied_before_brought_to_the_head(server: Server, ws: ws.Workspace,
                                                                                  strategy: str) -> None:
    server.commit("a", {"a.py": "a = 1\n"}, message="a: one")
    server.commit("b", {"b.py": "b = 1\n"}, start="a", message="b: on a")
    a, b = member(server, "a", strategy), member(server, "b")
    tip = server.head()
    with ws.locked():
        _, ids = speculate._fetch(ws, "main", [a, b])
        branches = speculate._read_branches(ws, tip, tip, [a, b], ids)
        assert branches is not None
        head = speculate._apply(ws, tip, a, {}, branches)
        assert isinstance(head, str)
        branches.advance(head, a)
        batched = [c.sha for c in branches.commits(ws, head, b.commit, {})]
        assert batched == [c.sha for c in vmerge._branch_commits(ws, head, b.commit)] == [b.commit]


def test_a_batch_stacked_on_a_commit_the_target_is_not_below_asks_git_for_every_branch(server: Server,
                                                                                      ws: ws.Workspace) -> None:
    server.commit("side", {"s.py": "s = 1\n"}, message="side: work")
    server.commit("main", {"x.py": "x = 1\n"}, message="main moved")
    server.commit("m", {"m.py": "m = 1\n"}, message="m: work")
    m, side = member(server, "m"), member(server, "side")
    tip = server.head()
    with ws.locked():
        _, ids = speculate._fetch(ws, "main", [m, side])
        branches = speculate._read_branches(ws, tip, side.commit, [m], ids)
        assert branches is not None and branches.above is None
        assert branches.commits(ws, side.commit, m.commit, {}) == vmerge._branch_commits(ws, side.commit, m.commit)
