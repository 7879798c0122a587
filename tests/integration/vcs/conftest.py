"""Fixtures of the merge-queue tests: a fresh bare repository per test, a workspace, a git daemon and an
authenticated smart-HTTP server (both from the shared ``tests/integration/git_servers.py``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

# Helper modules are imported by bare name; the shared git servers live one level up, in tests/integration.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest
from git_servers import GitDaemon, GitHTTPServer, git_daemon, git_http
from vcs_servers import Server, git, make_server

from longshot.vcs import workspace


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return make_server(tmp_path / "server", "app")


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def ws(server: Server, cache_dir: Path) -> workspace.Workspace:
    return workspace.Workspace(server.url, cache_dir, committer=("Longshot", "longshot@example.com"))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    root = tmp_path / "daemon"
    root.mkdir()
    with git_daemon(root, git=git, timeout=20) as d:
        yield d


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[GitHTTPServer]:
    """Smart HTTP over loopback accepting Basic bot:s3cret-password and Bearer t0ken-abcdef."""
    root = tmp_path / "http"
    root.mkdir()
    with git_http(root, git=git, accounts={("bot", "s3cret-password")},
                  headers={"Bearer t0ken-abcdef": "bot"}) as server:
        yield server
