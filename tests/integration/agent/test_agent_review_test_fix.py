"""Reviewer, tester and fixer roles on branches that already exist in the repository."""

from __future__ import annotations

import agent_servers as servers
import pytest
from agent_servers import openai_tools, task_input

pytestmark = pytest.mark.integration

BRANCH = "longshot/default/b1/b1-feature"


@pytest.fixture
def feature(daemon, repo):
    """A branch that changes app.py; returns its head."""
    return daemon.repos.commit(repo, {"app.py": "def greet():\n    return 'hi'\n\n\ndef bye():\n    return 1\n"},
                               branch=BRANCH, start="main", message="Add bye")


def test_reviewer_reads_the_diff_and_requests_changes(daemon, repo, feature, run_agent, model):
    model.script(openai_tools(("finish", {"summary": "bye() is wrong", "verdict": "changes-requested",
                                          "reasons": ["bye() should return 'bye', not 1"]})))
    backend = {"name": "openai", "model": "m", "baseUrl": model.base_url + "/v1"}
    before = daemon.ls_remote(repo)
    result = run_agent(task_input(daemon.url(repo), task="b1-review", role="reviewer", branch=BRANCH,
                                  description="Add a bye() function returning 'bye'", backend=backend))

    assert result.exit_code == 0, result.stdout
    h = result.handoff
    assert (h.verdict, h.reasons) == ("changes-requested", ["bye() should return 'bye', not 1"])
    assert h.commit == feature and h.files_changed == ["app.py"]
    prompt = model.requests[0].body["messages"][1]["content"]
    assert "+def bye():" in prompt and "+    return 1" in prompt
    assert daemon.ls_remote(repo) == before  # a reviewer never pushes


def test_reviewer_verdict_must_be_valid(daemon, repo, feature, run_agent):
    script = {"roles": {"reviewer": [
        {"finish": {"summary": "meh", "verdict": "maybe"}},
        {"finish": {"summary": "meh", "verdict": "changes-requested"}},
        {"finish": {"summary": "fine", "verdict": "approved"}},
    ]}}
    result = run_agent(task_input(daemon.url(repo), task="b1-review", role="reviewer", branch=BRANCH),
                       script=script)

    assert result.exit_code == 0
    assert result.handoff.verdict == "approved"
    errors = [c["result"] for c in result.tool_calls("finish") if not c["ok"]]
    assert "verdict must be" in errors[0] and "needs at least one reason" in errors[1]


def test_reviewer_of_a_missing_branch_fails(daemon, repo, run_agent):
    result = run_agent(task_input(daemon.url(repo), role="reviewer", branch="longshot/default/b1/none"), script=[])

    assert result.exit_code == 5
    assert "'longshot/default/b1/none' to reviewer does not exist" in result.handoff.failure.message


@pytest.mark.parametrize(("command", "verdict", "exit_reason"), [
    ("python3 -c 'import app; assert app.bye() == 1'", "passed", "exited with code 0"),
    ("echo 'FAILED test_bye - assert 1 == 2'; exit 3", "failed", "exited with code 3"),
])
def test_tester_runs_the_test_command(daemon, repo, feature, run_agent, command, verdict, exit_reason):
    result = run_agent(task_input(daemon.url(repo), task="b1-test", role="tester", branch=BRANCH,
                                  test_command=command))

    assert result.exit_code == 0, result.stdout
    h = result.handoff
    assert h.outcome == "succeeded" and h.verdict == verdict and h.commit == feature
    assert exit_reason in h.reasons[0]
    if verdict == "failed":
        assert "FAILED test_bye" in h.reasons[1]


def test_tester_whose_tests_hang_fails_them(daemon, repo, feature, run_agent):
    result = run_agent(task_input(daemon.url(repo), role="tester", branch=BRANCH, test_command="sleep 60"),
                       env={"LONGSHOT_TEST_TIMEOUT_SECONDS": "0.5"})

    assert result.handoff.verdict == "failed"
    assert "did not finish within 0.5s" in result.handoff.reasons[0]


def test_fixer_resolves_a_merge_conflict_and_pushes(daemon, repo, feature, run_agent, tmp_path):
    base = daemon.repos.commit(repo, {"app.py": "def greet():\n    return 'hello'\n"}, message="Say hello")
    resolved = "def greet():\n    return 'hello'\n\n\ndef bye():\n    return 1\n"
    script = {"roles": {"fixer": [
        {"finish": {"summary": "too early"}},  # refused: markers are still there
        {"write": {"path": "app.py", "content": resolved}},
        {"finish": {"summary": "Merge main, keep hello and bye"}},
    ]}}
    result = run_agent(task_input(daemon.url(repo), task="b1-fix", role="fixer", branch=BRANCH,
                                  description="Resolve the conflict with main"), script=script)

    assert result.exit_code == 0, result.stdout
    h = result.handoff
    assert h.outcome == "succeeded" and h.branch == BRANCH
    assert "conflict markers are still in: app.py" in result.tool_calls("finish")[0]["result"]
    assert daemon.ls_remote(repo)[f"refs/heads/{BRANCH}"] == h.commit
    clone = tmp_path / "check"
    servers.git("clone", "-q", "-b", BRANCH, daemon.url(repo), str(clone))
    assert (clone / "app.py").read_text() == resolved
    servers.git("merge-base", "--is-ancestor", base, "HEAD", cwd=clone)
    servers.git("merge-base", "--is-ancestor", feature, "HEAD", cwd=clone)
    parents = servers.git("log", "-1", "--format=%P", cwd=clone).split()
    assert parents == [feature, base]


def test_fixer_with_a_clean_merge_pushes_the_merge(daemon, repo, feature, run_agent):
    base = daemon.repos.commit(repo, {"NEWS.md": "news\n"}, message="News")
    script = {"roles": {"fixer": [{"finish": {"summary": "merged"}}]}}
    result = run_agent(task_input(daemon.url(repo), role="fixer", branch=BRANCH), script=script)

    assert result.exit_code == 0
    head = daemon.ls_remote(repo)[f"refs/heads/{BRANCH}"]
    assert head == result.handoff.commit and head not in (feature, base)
