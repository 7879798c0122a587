"""The agent-side pre-push scan is the merge queue's: every commit, and no allow marker on added lines."""

from __future__ import annotations

import pytest
from agent_servers import task_input

pytestmark = pytest.mark.integration

GITHUB = "ghp_" + "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp9Oo8"


def test_a_secret_committed_then_deleted_is_still_refused(daemon, repo, run_agent):
    script = {"steps": [
        {"run": {"command": f"printf 'TOKEN = \"{GITHUB}\"\\n' > cfg.py && git add cfg.py && "
                            "git -c user.name=m -c user.email=m@example.com commit -qm 'add config'"}},
        {"run": {"command": "printf 'import os\\nTOKEN = os.environ[\"TOKEN\"]\\n' > cfg.py"}},
        {"finish": {"summary": "read the token from the environment"}},
    ]}
    result = run_agent(task_input(daemon.url(repo)), script=script)

    assert result.exit_code == 1
    failure = result.handoff.failure
    assert failure is not None and failure.failure_class == "AgentError"
    assert "cfg.py:1: github-pat (commit " in failure.message and "git reset --soft" in failure.message
    assert GITHUB not in result.stdout and GITHUB not in result.termination
    assert "refs/heads/longshot/default/b1/b1-t1" not in daemon.ls_remote(repo)


def test_the_allow_marker_on_a_new_line_does_not_let_a_secret_through(daemon, repo, run_agent):
    script = {"steps": [
        {"write": {"path": "tests/fixture.py", "content": f"T = '{GITHUB}'  # longshot:allow-secret\n"}},
        {"finish": {"summary": "a test fixture"}},
    ]}
    result = run_agent(task_input(daemon.url(repo)), script=script)

    assert result.exit_code == 1
    assert "tests/fixture.py:1: github-pat" in result.handoff.failure.message
    assert "refs/heads/longshot/default/b1/b1-t1" not in daemon.ls_remote(repo)
