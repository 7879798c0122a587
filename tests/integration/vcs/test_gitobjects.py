"""The merge queue's clean picks computed in the operator (``vcs.gitobjects``) against git itself: where the fast path
answers, its tree is the one ``git merge-tree --write-tree`` writes for the same three-way merge (merge base: the
commit's parent) and its commit the one ``git commit-tree`` writes; where git's merge could differ (deletions and
renames, a path both sides changed, a directory the head no longer has, a type change) or the input is not as git
writes it or over a bound, it answers None and git is asked. Real git, a real repository, random and chosen cases."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from longshot.vcs import gitobjects as go
from longshot.vcs import workspace as ws

NOW = 1_764_421_300.0
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


@pytest.fixture
def w(tmp_path: Path) -> ws.Workspace:
    return ws.Workspace("file:///nowhere.git", tmp_path / "cache", committer=("Longshot", "longshot@example.com"),
                        key="repo").ensure()


def git(w: ws.Workspace, *args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> str:
    return w.git(*args, input=input, env=env).stdout.decode().strip()


def commit_files(w: ws.Workspace, parent: str | None, files: dict[str, str | None], message: str = "work\n",
                 mode: str = "100644") -> str:
    """A commit on ``parent`` with ``files`` written (None: removed), through a private index."""
    index = str(w.path / f"index-{random.random()}")
    env = {"GIT_INDEX_FILE": index}
    try:
        if parent:
            git(w, "read-tree", parent, env=env)
        lines = []
        for path, text in files.items():  # mode 0: the path removed (a bare repository has no work tree)
            blob = git(w, "hash-object", "-w", "--stdin", input=text.encode()) if text is not None else "0" * 40
            lines.append(f"{mode if text is not None else '0'} {blob}\t{path}\n")
        git(w, "update-index", "--index-info", input="".join(lines).encode(), env=env)
        tree = git(w, "write-tree", env=env)
    finally:
        if os.path.exists(index):
            os.unlink(index)
    args = ["commit-tree", tree, *(["-p", parent] if parent else [])]
    return git(w, *args, input=message.encode(), env={"GIT_AUTHOR_DATE": "1700000000 +0000",
                                                      "GIT_COMMITTER_DATE": "1700000000 +0000"})


def tree_of(w: ws.Workspace, rev: str) -> str:
    return git(w, "rev-parse", f"{rev}^{{tree}}")


def by_git(w: ws.Workspace, head: str, commit: str) -> str | None:
    """The tree git's ort merge writes for ``commit`` picked onto ``head`` (merge base: its parent), or None on a
    conflict."""
    proc = w.git("merge-tree", "--write-tree", "-z", "--name-only", "--no-messages",
                 head, commit, ok=(0, 1))  # merge base: the commit's parent, an ancestor of the head
    return proc.stdout.decode().split("\0")[0].strip() if proc.returncode == 0 else None


def fast(w: ws.Workspace, head: str, commit: str) -> str | None:
    with go.Objects(w) as objs:
        return go.pick(objs, tree_of(w, f"{commit}^"), tree_of(w, commit), tree_of(w, head))


PATHS = ["a.py", "b.py", "src/x.py", "src/y.py", "src/deep/z.py", "src/deep/w.py", "docs/readme.md",
         "docs/guide/one.md", "t/test_a.py", "t/test_b.py", "lib.py", "lib/x.py", "lib-a/y.py"]


def test_random_picks_are_the_trees_git_merges_and_most_are_answered_here(w: ws.Workspace) -> None:
    rng = random.Random(56)
    fast_answers = asked_git = 0
    for case in range(40):
        base = commit_files(w, None, {p: f"{p} {case}\n" for p in rng.sample(PATHS, 6)})
        # the head: the target moved on (other members' work) from the commit's parent
        head_files: dict[str, str | None] = {p: f"head {case} {p}\n" for p in rng.sample(PATHS, rng.randint(0, 3))}
        head_files |= {f"new/h{case}-{i}.py": "h\n" for i in range(rng.randint(0, 2))}
        if rng.random() < 0.2:
            head_files[rng.choice(PATHS)] = None
        head = commit_files(w, base, head_files)
        # the member's commit on the parent: adds and changes, sometimes a deletion or the same path as the head
        mine: dict[str, str | None] = {f"tasks/t{case}.py": "mine\n",
                                       rng.choice(PATHS): f"mine {case}\n"}
        if rng.random() < 0.2:
            mine[rng.choice(PATHS)] = None
        commit = commit_files(w, base, mine)
        expected, got = by_git(w, head, commit), fast(w, head, commit)
        if got is None:
            asked_git += 1
        else:
            fast_answers += 1
            assert got == expected, (case, mine, head_files)
    assert fast_answers >= 20 and asked_git >= 3, (fast_answers, asked_git)
    assert "error" not in w.git("fsck", "--no-dangling", check=False).stderr.decode().lower()


@pytest.mark.parametrize("case", ["deletion", "both-changed", "directory-gone", "type-change"])
def test_what_git_s_merge_may_do_otherwise_is_left_to_git(w: ws.Workspace, case: str) -> None:
    base = commit_files(w, None, {"src/a.py": "a\n", "src/b.py": "b\n", "top.py": "t\n"})
    head_files: dict[str, str | None] = {"other.py": "o\n"}
    mine: dict[str, str | None] = {"new.py": "n\n"}
    if case == "deletion":  # a rename, for ort: src/a.py -> lib/a.py
        mine |= {"src/a.py": None, "lib/a.py": "a\n"}
    elif case == "both-changed":
        head_files["src/a.py"] = "a, the head's\n"
        mine["src/a.py"] = "a, mine\n"
    elif case == "directory-gone":  # the head moved src/ away; the commit adds to it (ort's directory rename)
        head_files |= {"src/a.py": None, "src/b.py": None, "lib/a.py": "a\n", "lib/b.py": "b\n"}
        mine["src/c.py"] = "c\n"
    else:  # top.py becomes a directory
        mine |= {"top.py": None, "top.py/inner.py": "i\n"}
    head, commit = commit_files(w, base, head_files), commit_files(w, base, mine)
    assert fast(w, head, commit) is None
    assert fast(w, base, commit_files(w, base, {"new.py": "n\n"})) is not None  # the same repository answers


def test_a_commit_written_here_is_the_one_git_commit_tree_writes(w: ws.Workspace) -> None:
    base = commit_files(w, None, {"a.py": "a\n"})
    tree = tree_of(w, base)
    message = "tâche: ünïcode\n\nLongshot-Merge-Id: 1234\n"
    author = ("Zoë Ågent", "zoe@example.com", "1700000123 +0130")
    with go.Objects(w, clock=lambda: NOW) as objs:
        mine = go.commit(objs, tree, [base], message, author)
        assert objs.written == 1
    env = {"GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1], "GIT_AUTHOR_DATE": author[2],
           "GIT_COMMITTER_DATE": go.local_date(NOW)}
    assert mine == git(w, "commit-tree", tree, "-p", base, "-F", "-", input=message.encode(), env=env)
    assert git(w, "cat-file", "-t", mine or "") == "commit"  # a loose object git reads


@pytest.mark.parametrize("name,email,date", [(" padded", "e@x", "1 +0000"), ("dot.", "e@x", "1 +0000"),
                                             ("a<b", "e@x", "1 +0000"), ("", "e@x", "1 +0000"),
                                             ("n", "", "1 +0000"), ("n", "e@x", "yesterday"),
                                             ("n", "e@x", "01 +0000"), ("n", "e@x", "1 +9999"),
                                             ("n", "e@x", "1 +0160"), ("a\0b", "e@x", "1 +0000")])
def test_an_author_git_would_write_otherwise_is_left_to_git(name: str, email: str, date: str) -> None:
    tree = EMPTY_TREE
    assert go.commit_bytes(tree, [], (name, email, date), ("L", "l@x", "1 +0000"), "m\n") is None
    assert go.commit_bytes(tree, [], ("n", "e@x", "1 +0000"), ("L", "l@x", "1 +0000"), "m\n") is not None


def test_a_tree_not_as_git_writes_it_or_over_the_bounds_is_left_to_git(w: ws.Workspace,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    blob = git(w, "hash-object", "-w", "--stdin", input=b"x\n")
    padded = git(w, "hash-object", "-w", "-t", "tree", "--literally", "--stdin",
                 input=b"040000 d\0" + bytes.fromhex(EMPTY_TREE))
    with go.Objects(w) as objs:
        with pytest.raises(go.Malformed):
            objs.tree(padded)  # a zero-padded mode
        with pytest.raises(go.Malformed):
            objs.tree(blob)  # not a tree
        with pytest.raises(go.Malformed):
            objs.tree("f" * 40)  # missing
    base = commit_files(w, None, {"a.py": "a\n"})
    wide = commit_files(w, base, {f"f{i}.py": "x\n" for i in range(30)})
    monkeypatch.setattr(go, "MAX_CHANGES", 10)
    with go.Objects(w) as objs, pytest.raises(go.Malformed):
        go.pick(objs, tree_of(w, base), tree_of(w, wide), tree_of(w, base))
    monkeypatch.setattr(go, "MAX_TREE_BYTES", 100)
    with go.Objects(w) as objs:
        with pytest.raises(go.Malformed):
            objs.tree(tree_of(w, wide))  # 31 entries: over 100 bytes
        assert objs.tree(tree_of(w, base))  # the process goes on after a refusal


def test_the_cat_file_process_ends_with_the_preparation(w: ws.Workspace) -> None:
    base = commit_files(w, None, {"a.py": "a\n"})
    with go.Objects(w) as objs:
        objs.tree(tree_of(w, base))
        proc = objs._proc
        assert proc is not None and proc.poll() is None
    assert proc.poll() is not None


def test_git_reads_every_object_written_here(w: ws.Workspace) -> None:
    base = commit_files(w, None, {"src/deep/a.py": "a\n", "b.py": "b\n"})
    commit = commit_files(w, base, {"src/deep/c.py": "c\n", "src/new/d.py": "d\n"})
    with go.Objects(w) as objs:
        tree = go.pick(objs, tree_of(w, base), tree_of(w, commit), tree_of(w, base))
        assert tree == tree_of(w, commit) and objs.written == 0  # onto its own parent: git's tree, nothing new
    head = commit_files(w, base, {"b.py": "b, moved on\n"})
    with go.Objects(w) as objs:
        tree = go.pick(objs, tree_of(w, base), tree_of(w, commit), tree_of(w, head))
        assert tree is not None and objs.written == 1  # the root (src/ came out as the commit's own)
    listing = subprocess.run(["git", "--git-dir", str(w.path), "ls-tree", "-r", "--name-only", tree or ""],
                             capture_output=True, check=True).stdout.decode().split()
    assert listing == ["b.py", "src/deep/a.py", "src/deep/c.py", "src/new/d.py"]
    assert git(w, "cat-file", "-p", f"{tree}:b.py") == "b, moved on"


def test_read_ahead_leaves_the_picks_nothing_to_read(w: ws.Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch's picks read their trees ahead, level by level (``prefetch``): a few round trips to ``cat-file`` for
    the batch, none in the picks themselves."""
    base = commit_files(w, None, {f"work/{i:02x}/seed.txt": "s\n" for i in range(16)} | {"README.md": "r\n"})
    commits = [commit_files(w, base, {f"work/{i % 16:02x}/t{i}.txt": f"{i}\n"}) for i in range(12)]
    trips: list[int] = []
    real = go.Objects.read_many

    def counted(self: go.Objects, oids, limit=None):  # type: ignore[no-untyped-def]
        trips.append(len(oids))
        return real(self, oids, limit)

    monkeypatch.setattr(go.Objects, "read_many", counted)
    with go.Objects(w) as objs:
        go.prefetch(objs, [(base, None, tree_of(w, c)) for c in commits], tree_of(w, base))
        ahead = len(trips)
        head = tree_of(w, base)
        for c in commits:
            picked = go.pick(objs, objs.tree_of(base), tree_of(w, c), head)
            assert picked is not None
            head = picked
        assert len(trips) == ahead, trips[ahead:]  # the picks read nothing
    assert ahead <= 4, trips  # the parents' commits, then one round trip per level (root, work/, work/xx)
    listing = w.out("ls-tree", "-r", "--name-only", head).split()
    assert [p for p in listing if "/t" in p] == sorted(f"work/{i % 16:02x}/t{i}.txt" for i in range(12))


def test_an_object_over_the_bound_in_a_read_ahead_ends_it_and_the_rest_is_read_alone(
        w: ws.Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    small = commit_files(w, None, {"a.py": "a\n"})
    wide = commit_files(w, None, {f"f{i}.py": "x\n" for i in range(30)})
    monkeypatch.setattr(go, "MAX_TREE_BYTES", 200)
    with go.Objects(w) as objs:
        got = objs.read_many([tree_of(w, wide), tree_of(w, small)])
        assert isinstance(got[tree_of(w, wide)], go.Malformed) and tree_of(w, small) not in got
        assert objs.tree(tree_of(w, small)) == {b"a.py": (b"100644", git(w, "rev-parse", f"{small}:a.py"))}


def test_a_preparation_reads_at_most_its_budget_of_bytes_then_leaves_every_pick_to_git(
        w: ws.Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant's branch of many large trees does not grow the operator's memory: past ``MAX_READ_BYTES`` read by
    one preparation, every read is refused (``Malformed``: the pick goes to git)."""
    base = commit_files(w, None, {f"f{i:03d}.py": "x\n" for i in range(100)})
    other = commit_files(w, None, {f"g{i:03d}.py": "y\n" for i in range(100)})
    monkeypatch.setattr(go, "MAX_READ_BYTES", 5000)  # each root tree is about 3,300 bytes
    with go.Objects(w) as objs:
        assert len(objs.tree(tree_of(w, base))) == 100
        with pytest.raises(go.Malformed):
            objs.tree(tree_of(w, other))
