"""The runner's git puts the checkout's config back before every command and refuses a replaced .git."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from longshot.agent import errors, gitops, redact

pytestmark = pytest.mark.integration


@pytest.fixture
def git(tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    g = gitops.Git(repo, credentials=gitops.Credentials(), redactor=redact.Redactor(),
                   base_env={"PATH": "/usr/bin:/bin"}, url="file:///nowhere.git")
    g.trust()
    return g


def test_the_config_the_model_writes_is_undone_before_the_next_command(git, tmp_path):
    config = git.cwd / ".git" / "config"
    trusted = config.read_text()
    config.write_text(trusted + '[remote "origin"]\n\tpushurl = /elsewhere\n[include]\n\tpath = /tmp/x\n')
    (git.cwd / ".git" / "commondir").write_text("/tmp/evil\n")

    assert git.run("config", "--get", "remote.origin.pushurl", check=False).returncode == 1
    assert config.read_text() == trusted
    assert not (git.cwd / ".git" / "commondir").exists()


def test_a_replaced_git_directory_stops_the_runner(git):
    shutil.rmtree(git.cwd / ".git")
    (git.cwd / ".git").write_text("gitdir: /tmp/evil\n")
    with pytest.raises(errors.AgentError, match="was replaced or removed"):
        git.run("status")


def test_only_the_protocol_of_the_url_is_allowed_and_no_git_env_leaks():
    g = gitops.Git(gitops.Path("/tmp"), credentials=gitops.Credentials(), redactor=redact.Redactor(),
                   base_env={"GIT_DIR": "/x", "GIT_SSH_COMMAND": "evil", "GIT_AUTHOR_NAME": "a", "PATH": "/bin"},
                   url="https://gw/git/ns/b.git")
    assert g._protocols(("push", "--", "https://gw/git/ns/b.git", "x:y")) == ["-c", "protocol.https.allow=always"]
    assert "GIT_DIR" not in g.env and "GIT_SSH_COMMAND" not in g.env and g.env["GIT_AUTHOR_NAME"] == "a"
    assert g.env["GIT_CONFIG_GLOBAL"] == "/dev/null" and g.env["GIT_CONFIG_NOSYSTEM"] == "1"


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_clone_that_cannot_connect_yet_is_tried_again_with_backoff(tmp_path):
    """A Pod's network can be programmed moments after it starts (CNIs that isolate first): the clone waits
    for it instead of failing the attempt; here the server comes up during the first backoff."""
    import functools
    import http.server
    import threading

    bare = tmp_path / "served" / "repo.git"
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "first"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)  # dumb HTTP: plain files
    port = _free_port()
    servers: list[http.server.ThreadingHTTPServer] = []
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if not servers:
            class Quiet(http.server.SimpleHTTPRequestHandler):
                def log_message(self, *args: object) -> None:
                    pass

            handler = functools.partial(Quiet, directory=str(tmp_path / "served"))
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)

    url = f"http://127.0.0.1:{port}/repo.git"
    g = gitops.Git(tmp_path, credentials=gitops.Credentials(), redactor=redact.Redactor(),
                   base_env={"PATH": "/usr/bin:/bin"}, url=url)
    try:
        g.clone(url, tmp_path / "checkout", sleep=sleep)
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
    assert slept == [gitops.CLONE_BACKOFF_SECONDS]
    assert (tmp_path / "checkout" / ".git").is_dir()


def test_a_connection_is_retried_often_at_first_then_with_a_doubling_wait():
    """A lone Pod's first connections fail until its network is programmed (isolate-first CNIs): retrying every
    quarter second for 5 s starts it within 0.25 s of the network being ready (0.5, 1, 2 s waits from the start
    cost up to 2 s more), and the whole budget stays near a minute."""
    delays = [gitops.reconnect_delay(n) for n in range(1, gitops.CLONE_ATTEMPTS)]
    assert delays[:gitops.CLONE_FAST_RETRIES] == [0.25] * gitops.CLONE_FAST_RETRIES
    assert delays[gitops.CLONE_FAST_RETRIES:gitops.CLONE_FAST_RETRIES + 3] == [0.5, 1.0, 2.0]
    assert max(delays) == 8.0
    assert 45 <= sum(delays) <= 60


def test_a_clone_gives_up_after_its_attempts_and_other_failures_are_not_retried(tmp_path):
    slept: list[float] = []
    closed = f"http://127.0.0.1:{_free_port()}/repo.git"
    g = gitops.Git(tmp_path, credentials=gitops.Credentials(), redactor=redact.Redactor(),
                   base_env={"PATH": "/usr/bin:/bin"}, url=closed)
    with pytest.raises(errors.InfrastructureError, match="clone of the repository failed"):
        g.clone(closed, tmp_path / "a", sleep=slept.append, attempts=4)
    assert slept == [0.25, 0.25, 0.25]

    slept.clear()
    missing = f"file://{tmp_path}/missing.git"
    g = gitops.Git(tmp_path, credentials=gitops.Credentials(), redactor=redact.Redactor(),
                   base_env={"PATH": "/usr/bin:/bin"}, url=missing)
    with pytest.raises(errors.InfrastructureError):
        g.clone(missing, tmp_path / "b", sleep=slept.append)
    assert slept == []


def test_a_push_that_cannot_connect_yet_is_retried_and_lands_and_a_refused_push_is_not(tmp_path):
    """A name that does not resolve for a moment or a gateway restarting must not throw away the attempt's
    work at its last step: the push waits like the clone. Here the git server comes up during the first
    backoff; then a push the server refuses (not a fast-forward) fails at once."""
    import socket
    import time

    bare = tmp_path / "served" / "repo.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "first"], check=True)
    port = _free_port()
    daemons: list[subprocess.Popen[bytes]] = []
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if daemons:
            return
        daemons.append(subprocess.Popen(
            ["git", "daemon", "--export-all", "--enable=receive-pack", "--reuseaddr", "--listen=127.0.0.1",
             f"--port={port}", f"--base-path={tmp_path / 'served'}", str(tmp_path / "served")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until it accepts connections (a condition, not a fixed wait)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)

    url = f"git://127.0.0.1:{port}/repo.git"
    g = gitops.Git(work, credentials=gitops.Credentials(), redactor=redact.Redactor(),
                   base_env={"PATH": "/usr/bin:/bin"}, url=url)
    try:
        g.push("main:refs/heads/task-1", what="push of task-1", sleep=sleep)
        assert slept == [gitops.CLONE_BACKOFF_SECONDS]
        pushed = subprocess.run(["git", "--git-dir", str(bare), "rev-parse", "task-1"], capture_output=True,
                                text=True, check=True).stdout.strip()
        assert pushed == g.head()

        slept.clear()
        subprocess.run(["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                        "--amend", "--allow-empty", "-m", "rewritten"], check=True)
        with pytest.raises(errors.InfrastructureError, match="push of task-1 failed"):
            g.push("main:refs/heads/task-1", what="push of task-1", sleep=sleep)
        assert slept == []
    finally:
        for d in daemons:
            d.terminate()
            d.wait()


def test_a_push_refused_for_files_outside_an_enforced_scope_is_the_agents_error_naming_the_files():
    g = gitops.Git(gitops.Path("/tmp"), credentials=gitops.Credentials(), redactor=redact.Redactor())
    err = g.error("push of the branch", "remote: longshot-gateway: refusing refs/heads/longshot/ns/b/b-t1: 2 changed "
                  "file(s) outside the task's scope [src]: docs/a.md, README.md; the build enforces scopes "
                  "(spec.scope.enforce): change only files the scope covers\n"
                  " ! [remote rejected] HEAD -> longshot/ns/b/b-t1 (pre-receive hook declined)\n")
    assert isinstance(err, errors.AgentError) and err.failure_class == "AgentError"
    assert str(err).startswith("push of the branch was refused: 2 changed file(s) outside the task's scope [src]: "
                               "docs/a.md, README.md")
    other = g.error("push of the branch", " ! [remote rejected] HEAD -> x (pre-receive hook declined)\n")
    assert isinstance(other, errors.InfrastructureError)
