"""The merge queue's git work against real repositories: strategies, order, conflicts, idempotence, CAS."""

from __future__ import annotations

from pathlib import Path

import pytest
from git_servers import GitDaemon, GitHTTPServer
from vcs_servers import Server, git, make_server

from longshot.vcs import merge, workspace


def request(name: str, branch: str, strategy: str = "rebase", commit: str | None = None,
            **kw: object) -> merge.MergeRequest:
    kw.setdefault("uid", f"uid-of-{name}")
    return merge.MergeRequest(namespace="ns1", name=name, branch=branch, target="main", strategy=strategy,  # type: ignore[arg-type]
                              commit=commit, task=f"task-{name}", build="rest-api", **kw)  # type: ignore[arg-type]


def test_fast_forward_moves_target_to_the_exact_commit(server: Server, ws: workspace.Workspace) -> None:
    old = server.head()
    c1 = server.commit("longshot/b/t1", {"a.txt": "a\n"}, message="Add a")
    c2 = server.commit("longshot/b/t1", {"b.txt": "b\n"}, message="Add b")
    # the job pins c1: a later push to the branch is not merged
    result = merge.merge(ws, request("mj-ff", "longshot/b/t1", "fast-forward", commit=c1))
    assert result.outcome == "Merged", result
    assert result.merged_commit == c1 == server.head()
    assert server.parents(c1) == [old]
    assert not server.is_ancestor(c2, "main")
    assert result.duration_seconds > 0


def test_fast_forward_of_a_diverged_branch_is_not_fast_forward(server: Server, ws: workspace.Workspace) -> None:
    c = server.commit("longshot/b/t1", {"a.txt": "a\n"})
    moved = server.commit("main", {"other.txt": "x\n"})
    result = merge.merge(ws, request("mj", "longshot/b/t1", "fast-forward", commit=c))
    assert (result.outcome, result.reason) == ("Conflicted", "NotFastForward")
    assert result.conflicting_files == ()  # a rebase would apply cleanly
    assert server.head() == moved


def test_rebase_is_linear_with_trailers_and_keeps_authors(server: Server, ws: workspace.Workspace) -> None:
    server.commit("longshot/b/t1", {"a.txt": "a\n"}, message="Add a", author="Ada <ada@example.com>")
    c = server.commit("longshot/b/t1", {"a.txt": "a2\n", "b.txt": "b\n"}, message="Change a, add b\n\nBody.")
    moved = server.commit("main", {"README.md": "# app, v2\n"}, message="Readme")

    result = merge.merge(ws, request("mj-rebase", "longshot/b/t1", commit=c))
    assert result.outcome == "Merged", result
    head = server.head()
    assert result.merged_commit == head
    second, first = server.first_parent_log()[:2]
    assert server.parents(head) == [first] and server.parents(first) == [moved]  # linear, on top of main
    for sha in (first, second):
        assert merge.trailer_values(server.message(sha)) == ["ns1/mj-rebase"]
    assert server.message(first).startswith("Add a\n")
    assert server.message(second).startswith("Change a, add b\n\nBody.\n")
    assert server.author(first) == "Ada <ada@example.com>"
    assert server.show(head, "a.txt") == "a2" and server.show(head, "README.md") == "# app, v2"


def test_rebase_drops_merge_commits_of_the_branch(server: Server, ws: workspace.Workspace) -> None:
    server.commit("side", {"s.txt": "s\n"}, message="Side")
    server.commit("longshot/b/t1", {"a.txt": "a\n"}, message="Add a")
    git("fetch", "--quiet", "origin", cwd=server.work)
    git("merge", "--quiet", "--no-ff", "-m", "Merge side", "origin/side", cwd=server.work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/longshot/b/t1", cwd=server.work)
    server.commit("main", {"m.txt": "m\n"}, message="Main moves")
    result = merge.merge(ws, request("mj", "longshot/b/t1"))
    assert result.outcome == "Merged", result
    log = server.first_parent_log()
    assert all(len(server.parents(sha)) <= 1 for sha in log)  # (the root has none)
    assert {server.show("main", p) for p in ("a.txt", "s.txt", "m.txt")} == {"a", "s", "m"}


def test_merge_commit_has_two_parents_and_names_the_task(server: Server, ws: workspace.Workspace) -> None:
    c = server.commit("longshot/b/t1", {"a.txt": "a\n"})
    old = server.commit("main", {"other.txt": "x\n"})
    result = merge.merge(ws, request("mj-mc", "longshot/b/t1", "merge-commit", commit=c))
    assert result.outcome == "Merged", result
    head = server.head()
    assert server.parents(head) == [old, c]
    message = server.message(head)
    assert "task-mj-mc" in message and "longshot/b/t1" in message
    assert merge.trailer_values(message) == ["ns1/mj-mc"]


def test_merges_follow_queue_order(server: Server, ws: workspace.Workspace) -> None:
    jobs = []
    for i, (priority, created) in enumerate([(5, "2025-01-01T00:00:02Z"), (10, "2025-01-01T00:00:03Z"),
                                             (5, "2025-01-01T00:00:01Z"), (1, "2025-01-01T00:00:00Z")]):
        commit = server.commit(f"longshot/b/t{i}", {f"f{i}.txt": f"{i}\n"}, message=f"Task {i}")
        jobs.append({"metadata": {"namespace": "ns1", "name": f"mj-{i}", "creationTimestamp": created},
                     "spec": {"branch": f"longshot/b/t{i}", "commit": commit, "target": "main",
                              "strategy": "rebase", "priority": priority,
                              "taskRef": {"name": f"t{i}"}, "buildRef": {"name": "b"}}})
    assert merge.positions(jobs) == {"ns1/mj-1": 0, "ns1/mj-2": 1, "ns1/mj-0": 2, "ns1/mj-3": 3}
    for job in merge.order(jobs):
        assert merge.merge(ws, merge.MergeRequest.from_mergejob(job)).outcome == "Merged"
    merged = [merge.trailer_values(server.message(sha))[0] for sha in server.first_parent_log()[:4]]
    assert merged[::-1] == ["ns1/mj-1", "ns1/mj-2", "ns1/mj-0", "ns1/mj-3"]


@pytest.mark.parametrize("strategy", ["rebase", "merge-commit"])
def test_conflict_lists_files_and_leaves_nothing_behind(server: Server, ws: workspace.Workspace,
                                                        strategy: str) -> None:
    c = server.commit("longshot/b/t1", {"app.py": "def greet():\n    return 'hello'\n", "docs/x.md": "x\n",
                                        "ok.txt": "fine\n"})
    main = server.commit("main", {"app.py": "def greet():\n    return 'hey'\n", "docs/x.md": "y\n"})
    result = merge.merge(ws, request("mj", "longshot/b/t1", strategy, commit=c))
    assert (result.outcome, result.reason) == ("Conflicted", "MergeConflict")
    assert result.conflicting_files == ("app.py", "docs/x.md")
    assert "app.py" in result.message
    assert server.head() == main
    # the workspace is bare (nothing to leave dirty) and only holds the refs it fetched
    assert not (ws.path / "index").exists()
    refs = git("for-each-ref", "--format=%(refname)", cwd=ws.path).split()
    assert sorted(refs) == ["refs/longshot/incoming", "refs/remotes/origin/main"]
    # and the next job merges fine
    server.commit("longshot/b/t2", {"t2.txt": "2\n"})
    assert merge.merge(ws, request("mj2", "longshot/b/t2", strategy)).outcome == "Merged"


def test_rebase_conflict_in_a_later_commit(server: Server, ws: workspace.Workspace) -> None:
    server.commit("longshot/b/t1", {"n.txt": "1\n"})
    server.commit("longshot/b/t1", {"app.py": "x = 1\n"})
    c = server.commit("longshot/b/t1", {"app.py": "x = 2\n"})
    server.commit("main", {"app.py": "y = 1\n"})
    result = merge.merge(ws, request("mj", "longshot/b/t1", commit=c))
    assert result.outcome == "Conflicted" and result.conflicting_files == ("app.py",)


@pytest.mark.parametrize("strategy", ["fast-forward", "rebase", "merge-commit"])
def test_a_merged_job_is_recognised_after_a_restart(server: Server, ws: workspace.Workspace, tmp_path: Path,
                                                    strategy: str) -> None:
    c = server.commit("longshot/b/t1", {"a.txt": "a\n"})
    first = merge.merge(ws, request("mj-1", "longshot/b/t1", strategy, commit=c))
    assert first.outcome == "Merged"
    # another job lands on top, then the operator restarts with an empty cache and retries mj-1
    server.commit("longshot/b/t2", {"b.txt": "b\n"})
    assert merge.merge(ws, request("mj-2", "longshot/b/t2", strategy)).outcome == "Merged"
    head = server.head()
    fresh = workspace.Workspace(server.url, tmp_path / "restarted-cache")
    again = merge.merge(fresh, request("mj-1", "longshot/b/t1", strategy, commit=c))
    assert again.outcome == "AlreadyMerged", again
    assert again.merged_commit == first.merged_commit
    assert server.head() == head


def test_a_forged_trailer_does_not_fake_a_merge(server: Server, ws: workspace.Workspace) -> None:
    """Issue 11: a commit carrying another job's `Longshot-Merge: <ns>/<job>` trailer must not make that job
    report AlreadyMerged without its work landing."""
    server.commit("main", {"x.txt": "x\n"}, message="innocent\n\nLongshot-Merge: ns1/mj-1\n")
    c = server.commit("longshot/b/t1", {"a.txt": "a\n"})
    result = merge.merge(ws, request("mj-1", "longshot/b/t1", commit=c))
    assert result.outcome == "Merged", result
    assert server.show("main", "a.txt") == "a"


def test_a_job_with_a_similar_name_is_not_taken_for_merged(server: Server, ws: workspace.Workspace) -> None:
    server.commit("longshot/b/t1", {"a.txt": "a\n"})
    assert merge.merge(ws, request("mj-1", "longshot/b/t1")).outcome == "Merged"
    server.commit("longshot/b/t10", {"b.txt": "b\n"})
    assert merge.merge(ws, request("mj-10", "longshot/b/t10")).outcome == "Merged"
    assert merge.merge(ws, request("mj", "longshot/b/t10")).outcome == "AlreadyMerged"  # by ancestry


def test_stale_target_is_reported_and_nothing_is_lost(server: Server, ws: workspace.Workspace) -> None:
    c = server.commit("longshot/b/t1", {"a.txt": "a\n"})
    ws.ensure()
    ws.fetch("main", "longshot/b/t1", c)  # the leader's view ...
    theirs = server.commit("main", {"b.txt": "b\n"}, message="Pushed by someone else")  # ... goes stale
    stale = merge.merge(ws, request("mj", "longshot/b/t1", commit=c), fetch=False)
    assert (stale.outcome, stale.reason) == ("Stale", "StaleTarget"), stale
    assert server.head() == theirs
    retry = merge.merge(ws, request("mj", "longshot/b/t1", commit=c))
    assert retry.outcome == "Merged"
    assert server.is_ancestor(theirs, "main")
    assert server.show("main", "a.txt") == "a" and server.show("main", "b.txt") == "b"


def test_two_workspaces_racing_merge_once(server: Server, tmp_path: Path) -> None:
    """A deposed leader and a new one compute the same merge: only one push lands."""
    c = server.commit("longshot/b/t1", {"a.txt": "a\n"})
    old_leader = workspace.Workspace(server.url, tmp_path / "a")
    # (another identity: identical inputs in the same second would make the very same commit)
    new_leader = workspace.Workspace(server.url, tmp_path / "b", committer=("Replica B", "b@example.com"))
    old_leader.ensure().fetch("main", "longshot/b/t1", c)
    assert merge.merge(new_leader, request("mj", "longshot/b/t1", "merge-commit", commit=c)).outcome == "Merged"
    late = merge.merge(old_leader, request("mj", "longshot/b/t1", "merge-commit", commit=c), fetch=False)
    assert late.outcome == "Stale"
    assert merge.merge(old_leader, request("mj", "longshot/b/t1", "merge-commit", commit=c)).outcome \
        == "AlreadyMerged"
    assert len([s for s in server.first_parent_log() if len(server.parents(s)) == 2]) == 1


def test_missing_branch_is_an_error_naming_it(server: Server, ws: workspace.Workspace) -> None:
    result = merge.merge(ws, request("mj", "longshot/b/nope"))
    assert result.outcome == "Error"
    assert "longshot/b/nope" in result.message


def test_merge_through_git_daemon(daemon: GitDaemon) -> None:
    server = make_server(daemon.root, "app", url=daemon.url("app"))
    c = server.commit("longshot/b/t1", {"a.txt": "a\n"})
    moved = server.commit("main", {"b.txt": "b\n"})
    ws = workspace.Workspace(server.url, daemon.root / "cache")
    result = merge.merge(ws, request("mj", "longshot/b/t1", commit=c))
    assert result.outcome == "Merged", result
    assert server.head() == result.merged_commit and server.parents(server.head()) == [moved]
    assert merge.merge(ws, request("mj", "longshot/b/t1", commit=c)).outcome == "AlreadyMerged"


@pytest.mark.parametrize("credentials", [
    workspace.GitCredentials(username="bot", password="s3cret-password"),
    workspace.GitCredentials(extra_header="Authorization: Bearer t0ken-abcdef"),
], ids=["askpass", "extra-header"])
def test_merge_over_authenticated_http(http_server: GitHTTPServer, tmp_path: Path,
                                       credentials: workspace.GitCredentials) -> None:
    server = make_server(http_server.root, "app", url=http_server.url("app"))
    server.commit("longshot/b/t1", {"a.txt": "a\n"})
    ws = workspace.Workspace(server.url, tmp_path / "cache", credentials=credentials)
    result = merge.merge(ws, request("mj", "longshot/b/t1"))
    assert result.outcome == "Merged", result
    assert set(http_server.auth_headers) & http_server.accepted  # authenticated requests reached the server
    # nothing secret was written into the workspace's config or logs
    config = (ws.path / "config").read_text()
    assert "s3cret" not in config and "t0ken" not in config and server.url in config


def test_wrong_credentials_are_an_error_without_the_secret(http_server: GitHTTPServer, tmp_path: Path) -> None:
    server = make_server(http_server.root, "app", url=http_server.url("app"))
    server.commit("longshot/b/t1", {"a.txt": "a\n"})
    ws = workspace.Workspace(server.url, tmp_path / "cache",
                             credentials=workspace.GitCredentials(username="bot", password="wr0ng-password"))
    result = merge.merge(ws, request("mj", "longshot/b/t1"))
    assert result.outcome == "Error"
    assert "wr0ng-password" not in result.message
