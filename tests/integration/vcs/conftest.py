"""Fixtures of the merge-queue tests: a fresh bare repository per test, a workspace, a git daemon."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from vcs_servers import GIT_ENV, Daemon, GitHTTPServer, Server, listening, make_server

from longshot.testing import wait_for
from longshot.testing.controlplane import free_port
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
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    root = tmp_path / "daemon"
    root.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | GIT_ENV
    proc = subprocess.Popen(["git", "daemon", "--export-all", "--enable=receive-pack", f"--base-path={root}",
                             f"--port={port}", "--reuseaddr", "--listen=127.0.0.1", "--informative-errors",
                             str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_for(lambda: listening(port) or proc.poll() is not None, 20, "git daemon to listen")
        assert proc.poll() is None, "git daemon exited at start"
        yield Daemon(root, port)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[GitHTTPServer]:
    """Smart HTTP over loopback accepting Basic bot:s3cret-password and Bearer t0ken-abcdef."""
    root = tmp_path / "http"
    root.mkdir()
    accepted = {"Basic " + base64.b64encode(b"bot:s3cret-password").decode(), "Bearer t0ken-abcdef"}
    server = GitHTTPServer(root, accepted)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
