"""Restacking on real git (``spec.dependencies: stacked``): a branch built on its dependency's unmerged commit
lands as its own commits only, replayed onto the target that holds the dependency as it merged (rebased, or
changed by a later attempt), never the dependency's commits a second time."""

from __future__ import annotations

import pytest
from vcs_servers import Server, git

from longshot.core import mergequeue as q
from longshot.vcs import speculate
from longshot.vcs import workspace as ws


def member(server: Server, branch: str, strategy: str = "rebase", stacked_on: tuple[str, ...] = ()
           ) -> speculate.Member:
    return speculate.Member(name=f"b-{branch}", namespace="ns", uid=f"uid-{branch}", branch=branch,
                            commit=server.head(branch), strategy=strategy, task=f"b-{branch}", build="b",
                            stacked_on=stacked_on)  # type: ignore[arg-type]


def land(server: Server, w: ws.Workspace, m: speculate.Member) -> str:
    prepared = speculate.prepare(w, "main", [m])
    (applied,) = prepared.members
    assert isinstance(applied, q.Applied), applied
    ok, why = speculate.land(w, "main", prepared.base, applied.commit, "unused")
    assert ok, why
    assert server.head() == applied.commit
    return applied.commit


def show(server: Server, path: str) -> str:
    """``path`` on the target (the helper strips the trailing newline)."""
    return server.show("main", path) + "\n"


def touched(server: Server, old: str, new: str) -> list[str]:
    return sorted(git("diff", "--name-only", old, new, cwd=server.bare).split())


def test_the_dependents_own_commit_lands_on_the_rebased_dependency(server: Server, ws: ws.Workspace) -> None:
    dep = server.commit("a", {"models.py": "class User:\n    pass\n"}, message="a: models")
    own = server.commit("b", {"api.py": "from models import User\n"}, start="a", message="b: api")
    server.commit("main", {"other.py": "x = 1\n"}, message="someone else")  # the dependency is rebased on merge
    land(server, ws, member(server, "a"))
    before = server.head()
    assert not server.is_ancestor(dep, before)  # the dependency landed as a different commit

    head = land(server, ws, member(server, "b", stacked_on=(dep,)))
    assert server.parents(head) == [before]  # one commit on top: the dependent's own
    assert touched(server, before, head) == ["api.py"]
    assert "b: api" in server.message(head) and "Longshot-Merge-Id: uid-b" in server.message(head)
    assert not server.is_ancestor(own, head) and not server.is_ancestor(dep, head)
    assert show(server, "models.py") == "class User:\n    pass\n"
    assert len(git("log", "--format=%s", "--grep=a: models", "main", cwd=server.bare).splitlines()) == 1


def test_a_dependency_changed_after_the_dependent_started_keeps_its_merged_content(server: Server,
                                                                                  ws: ws.Workspace) -> None:
    first = server.commit("a", {"models.py": "class User:\n    name = ''\n"}, message="a: models (attempt 1)")
    server.commit("b", {"api.py": "from models import User\n"}, start="a", message="b: api")
    # the dependency's next attempt rewrote its branch: a different head with different content merged
    git("push", "--quiet", "--force", "origin", "main:refs/heads/a", cwd=server.work)
    server.commit("a", {"models.py": "class User:\n    email = ''\n"}, message="a: models (attempt 2)")
    land(server, ws, member(server, "a"))
    before = server.head()

    # replayed whole (the dependency's first attempt included), the branch conflicts with what merged
    (whole,) = speculate.prepare(ws, "main", [member(server, "b")]).members
    assert isinstance(whole, q.DidNotApply) and "models.py" in whole.files

    head = land(server, ws, member(server, "b", stacked_on=(first,)))
    assert touched(server, before, head) == ["api.py"]
    assert show(server, "models.py") == "class User:\n    email = ''\n"  # the merged one, not attempt 1
    assert show(server, "api.py") == "from models import User\n"


@pytest.mark.parametrize("strategy", ["rebase", "merge-commit"])
def test_two_stacked_dependencies_and_the_merge_that_joined_them_are_not_replayed(server: Server, ws: ws.Workspace,
                                                                                  strategy: str) -> None:
    dep_a = server.commit("a", {"models.py": "M = 1\n"}, message="a: models")
    dep_c = server.commit("c", {"store.py": "S = 1\n"}, message="c: store")
    # the dependent starts from a and merges c in (what the worker does with a stack of two)
    git("fetch", "--quiet", "origin", cwd=server.work)
    git("checkout", "--quiet", "-B", "b", dep_a, cwd=server.work)
    git("merge", "--quiet", "--no-edit", dep_c, cwd=server.work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/b", cwd=server.work)
    server.commit("b", {"api.py": "import models, store\n"}, message="b: api")
    server.commit("main", {"other.py": "x = 1\n"}, message="someone else")
    # c's next attempt changed its work after b had started from the first one
    git("push", "--quiet", "--force", "origin", "main:refs/heads/c", cwd=server.work)
    server.commit("c", {"store.py": "S = 2\n"}, message="c: store (attempt 2)")
    land(server, ws, member(server, "a"))
    land(server, ws, member(server, "c"))
    before = server.head()

    # taken whole (the merge and c's first attempt included), the branch conflicts with what merged
    (whole,) = speculate.prepare(ws, "main", [member(server, "b", strategy)]).members
    assert isinstance(whole, q.DidNotApply) and "store.py" in whole.files

    head = land(server, ws, member(server, "b", strategy, stacked_on=(dep_a, dep_c)))
    assert touched(server, before, head) == ["api.py"]
    parents = server.parents(head)
    assert parents[0] == before and len(parents) == (2 if strategy == "merge-commit" else 1)
    for path, text in (("models.py", "M = 1\n"), ("store.py", "S = 2\n"), ("api.py", "import models, store\n")):
        assert show(server, path) == text
    # the queue recognises the member on the target after a restart: never merged twice
    (again,) = speculate.prepare(ws, "main", [member(server, "b", strategy, stacked_on=(dep_a, dep_c))]).members
    assert isinstance(again, q.AlreadyOnTarget)


def test_stacked_on_that_would_leave_nothing_of_the_branch_is_not_trusted(server: Server, ws: ws.Workspace) -> None:
    own = server.commit("b", {"api.py": "A = 1\n"}, message="b: api")
    before = server.head()
    # the agent reports stackedOn: a branch claiming its own head would otherwise be recorded merged unmerged
    head = land(server, ws, member(server, "b", stacked_on=(own,)))
    assert server.parents(head) == [before] and touched(server, before, head) == ["api.py"]
