"""Listing and deleting a build's refs (``vcs.refs``, the clean-up of a deleted build) against a real authenticated
git server: only the build's refs are listed, a deletion is a compare-and-swap, wrong credentials fail loudly."""

from __future__ import annotations

import pytest
from git_servers import GitHTTPServer
from vcs_servers import git

from longshot.core import cleanup
from longshot.vcs import refs, workspace

CREDENTIALS = workspace.GitCredentials.from_secret_data({"username": "bot", "password": "s3cret-password"})
BRANCHES, HANDOFFS = cleanup.prefixes("ns", "demo")
OURS = [BRANCHES + "demo-a", BRANCHES + "_queue/b1/1", HANDOFFS + "demo-a/1"]
THEIRS = ["refs/heads/longshot/ns/demo2/demo2-a", "refs/heads/longshot/other/demo/demo-a", "refs/heads/main"]


def repository(server: GitHTTPServer) -> tuple[str, dict[str, str]]:
    bare = server.root / "app.git"
    git("init", "--quiet", "--bare", str(bare))
    work = bare.parent / "work"
    git("init", "--quiet", str(work))
    shas: dict[str, str] = {}
    for i, ref in enumerate(OURS + THEIRS):
        (work / "f.txt").write_text(f"{i}\n")
        git("add", "--all", cwd=work)
        git("commit", "--quiet", "-m", ref, cwd=work)
        git("push", "--quiet", str(bare), f"HEAD:{ref}", cwd=work)
        shas[ref] = git("rev-parse", "HEAD", cwd=work)
    return server.url("app"), shas


def on_server(server: GitHTTPServer) -> set[str]:
    out = git("for-each-ref", "--format=%(refname)", cwd=server.root / "app.git")
    return set(out.split())


def test_the_build_refs_are_listed_and_deleted_and_nothing_else(http_server: GitHTTPServer, tmp_path) -> None:
    url, shas = repository(http_server)
    w = workspace.Workspace(url, tmp_path / "cache", credentials=CREDENTIALS)
    listed = refs.list_refs(w, (BRANCHES, HANDOFFS))
    assert dict(listed) == {r: shas[r] for r in OURS}
    refs.delete_refs(w, listed)
    assert on_server(http_server) == set(THEIRS)


def test_a_ref_pushed_to_after_it_was_listed_is_not_deleted(http_server: GitHTTPServer, tmp_path) -> None:
    url, shas = repository(http_server)
    w = workspace.Workspace(url, tmp_path / "cache", credentials=CREDENTIALS)
    listed = refs.list_refs(w, (BRANCHES, HANDOFFS))
    bare = http_server.root / "app.git"
    git("update-ref", BRANCHES + "demo-a", shas["refs/heads/main"], cwd=bare)  # a person pushed meanwhile
    refs.delete_refs(w, listed)
    left = on_server(http_server)
    assert BRANCHES + "demo-a" in left  # kept: it no longer points where it was listed
    assert BRANCHES + "_queue/b1/1" not in left and HANDOFFS + "demo-a/1" not in left


def test_wrong_credentials_fail_without_showing_them(http_server: GitHTTPServer, tmp_path) -> None:
    url, _ = repository(http_server)
    wrong = workspace.GitCredentials.from_secret_data({"username": "bot", "password": "not-the-password"})
    w = workspace.Workspace(url, tmp_path / "cache", credentials=wrong)
    with pytest.raises(workspace.GitError) as e:
        refs.list_refs(w, (BRANCHES, HANDOFFS))
    assert "not-the-password" not in str(e.value)
