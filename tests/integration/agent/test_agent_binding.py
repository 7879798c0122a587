"""Reviewers and testers read the exact commit they are bound to (``TaskInput.commit``), not the branch's tip: a
push after the MergeJob was made does not change what they read; a commit the repository lacks is refused."""

from __future__ import annotations

import pytest
from agent_servers import task_input

pytestmark = pytest.mark.integration

BRANCH = "longshot/b1/b1-feature"


def test_a_reviewer_reads_its_bound_commit_after_the_branch_moved(daemon, repo, run_agent):
    bound = daemon.repos.commit(repo, {"app.py": "EVIL = 1\n"}, branch=BRANCH, start="main", message="evil")
    # the branch moves on after the MergeJob named ``bound`` (a process the worker left behind pushed again)
    tip = daemon.repos.commit(repo, {"app.py": "HARMLESS = 1\n"}, branch=BRANCH, message="harmless")
    script = {"roles": {"reviewer": [{"finish": {"summary": "ok", "verdict": "approved"}}]}}

    result = run_agent(task_input(daemon.url(repo), task="b1-review", role="reviewer", branch=BRANCH, commit=bound),
                       script=script)

    assert result.exit_code == 0, result.stdout
    assert result.handoff.commit == bound != tip
    checked_out = [e for e in result.events("log") if e.get("message") == "checked out the bound commit"]
    assert checked_out and checked_out[0]["commit"] == bound and checked_out[0]["tip"] == tip


def test_a_tester_refuses_a_bound_commit_the_repository_does_not_hold(daemon, repo, run_agent):
    daemon.repos.commit(repo, {"app.py": "X = 1\n"}, branch=BRANCH, start="main")
    missing = "0123456789abcdef0123456789abcdef01234567"

    result = run_agent(task_input(daemon.url(repo), task="b1-test", role="tester", branch=BRANCH, commit=missing,
                                  test_command="true"))

    assert result.exit_code != 0
    assert result.handoff.outcome == "failed" and "refusing to tester another commit" in result.handoff.failure.message
