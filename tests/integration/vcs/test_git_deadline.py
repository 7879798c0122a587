"""A caller's deadline (``vcs.workspace.within``, the reconciles' ``controllers.lanes.git``) bounds the git work in a
tenant's workspace: a slow git server, and a workspace held by someone else, cost at most the deadline."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from git_servers import Git, slow_git_http
from vcs_servers import make_server

from longshot.controllers import lanes
from longshot.vcs import speculate, workspace


def test_a_slow_servers_ls_remote_is_cut_at_the_callers_deadline(tmp_path: Path) -> None:
    make_server(tmp_path / "server", "app")
    with slow_git_http(tmp_path / "server", git=Git({}), delay=5.0) as server:
        w = workspace.Workspace(server.url("app"), tmp_path / "cache")
        started = time.monotonic()
        with pytest.raises(workspace.GitError, match="timed out"):
            workspace.within(1.0, speculate.remote_head, w, "main")
        took = time.monotonic() - started
    assert took < 3.0, took


def test_a_workspace_held_by_another_thread_is_given_up_at_the_deadline(tmp_path: Path) -> None:
    server = make_server(tmp_path / "server", "app")
    w = workspace.Workspace(server.url, tmp_path / "cache")
    held, release = threading.Event(), threading.Event()

    def merge_queue() -> None:  # the merge queue's git work holds the workspace
        with w.locked():
            held.set()
            release.wait(30)

    t = threading.Thread(target=merge_queue)
    t.start()
    try:
        assert held.wait(30)
        started = time.monotonic()
        with pytest.raises(workspace.GitError, match="stayed busy"):
            workspace.within(0.5, speculate.head_of, w, "main")
        assert time.monotonic() - started < 2.0
    finally:
        release.set()
        t.join(30)
    assert speculate.head_of(w, "main")  # without a deadline, once it is free, it is read


async def test_the_reconciles_git_calls_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_server(tmp_path / "server", "app")
    monkeypatch.setattr(lanes, "GIT_SECONDS", 1.0)
    with slow_git_http(tmp_path / "server", git=Git({}), delay=5.0) as server:
        w = workspace.Workspace(server.url("app"), tmp_path / "cache")
        started = time.monotonic()
        with pytest.raises(workspace.GitError):
            await lanes.git(speculate.remote_head, w, "main")
    assert time.monotonic() - started < 3.0
