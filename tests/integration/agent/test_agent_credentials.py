"""Git credentials from the mounted Secret, against git's smart HTTP server behind Basic auth."""

from __future__ import annotations

import agent_servers as servers
import pytest
from agent_servers import task_input

pytestmark = pytest.mark.integration

PASSWORD = "s3cr3t-passw0rd-for-git"
TOKEN = "tok-9f8e7d6c5b4a39281706"
SCRIPT = {"steps": [{"write": {"path": "hello.txt", "content": "hello\n"}}, {"finish": {"summary": "hello"}}]}


@pytest.fixture
def http_git(tmp_path):
    accounts = {("alice", PASSWORD), ("x-access-token", TOKEN)}
    with servers.git_http(tmp_path / "http-repos", accounts) as server:
        server.repos.create("app", {"README.md": "# app\n"})
        yield server


def test_username_and_password_clone_and_push_over_http(http_git, run_agent):
    result = run_agent(task_input(http_git.url("app")), script=SCRIPT,
                       git_secret={"username": "alice", "password": PASSWORD})

    assert result.exit_code == 0, result.stdout
    assert http_git.repos.refs("app")["refs/heads/longshot/default/b1/b1-t1"] == result.handoff.commit
    users = {user for _, _, user in http_git.server.requests}
    assert users == {None, "alice"}  # git asks anonymously first, then answers the 401 with the Secret
    assert PASSWORD not in result.stdout and PASSWORD not in result.termination
    assert PASSWORD not in http_git.url("app")


def test_a_token_alone_is_used_with_a_default_username(http_git, run_agent):
    result = run_agent(task_input(http_git.url("app")), script=SCRIPT, git_secret={"token": TOKEN})

    assert result.exit_code == 0, result.stdout
    assert "x-access-token" in {user for _, _, user in http_git.server.requests}


def test_wrong_credentials_are_an_auth_failure(http_git, run_agent):
    result = run_agent(task_input(http_git.url("app")), script=SCRIPT,
                       git_secret={"username": "alice", "password": "wrong-password-123"})

    assert result.exit_code == 3
    assert result.handoff.failure.failure_class == "Auth"
    assert "credentials" in result.handoff.failure.message
    assert "wrong-password-123" not in result.stdout + result.termination


def test_no_credentials_for_a_protected_repository_is_an_auth_failure(http_git, run_agent):
    result = run_agent(task_input(http_git.url("app")), script=SCRIPT)

    assert result.exit_code == 3
    assert result.handoff.failure.failure_class == "Auth"
