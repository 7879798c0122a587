"""The runner's git puts the checkout's config back before every command and refuses a replaced .git."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from longshot.agent import errors, gitops, redact

pytestmark = pytest.mark.unit


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
