"""A worker of a ``spec.dependencies: stacked`` build in a real checkout: it starts from its dependencies' unmerged
commits (``TaskInput.stack``), reports them as ``stackedOn`` and only its own changes as files changed."""

from __future__ import annotations

import agent_servers as servers
import pytest
from agent_servers import task_input

pytestmark = pytest.mark.integration

MAIN = {"README.md": "# app\n", "app.py": "def greet():\n    return 'hi'\n"}


def stack_entry(task: str, branch: str, commit: str) -> dict[str, str]:
    return {"task": task, "branch": branch, "commit": commit}


def test_the_worker_starts_on_both_dependencies_and_hands_off_only_its_own_change(daemon, run_agent, tmp_path):
    daemon.repos.create("stk1", MAIN)
    main = daemon.ls_remote("stk1")["refs/heads/main"]
    a = daemon.repos.commit("stk1", {"models.py": "class User: ...\n"}, branch="longshot/default/b1/b1-a", start="main")
    c = daemon.repos.commit("stk1", {"store.py": "STORE = {}\n"}, branch="longshot/default/b1/b1-c", start="main")
    script = {"tasks": {"b1-b": [
        {"read": {"path": "models.py"}, "check": True},  # a missing file fails the attempt
        {"read": {"path": "store.py"}, "check": True},
        {"write": {"path": "api.py", "content": "from models import User\nfrom store import STORE\n"}},
        {"finish": {"summary": "api over models and store"}},
    ]}}
    task = task_input(daemon.url("stk1"), task="b1-b", stack=[stack_entry("a", "longshot/default/b1/b1-a", a),
                                                               stack_entry("c", "longshot/default/b1/b1-c", c)])
    result = run_agent(task, script=script)

    assert result.exit_code == 0, result.stdout
    h = result.handoff
    assert h.outcome == "succeeded" and h.files_changed == ["api.py"]
    assert h.stacked_on == [a, c] and h.base_commit == main
    assert daemon.ls_remote("stk1")["refs/heads/longshot/default/b1/b1-b"] == h.commit
    clone = tmp_path / "check"
    servers.git("clone", "-q", "-b", "longshot/default/b1/b1-b", daemon.url("stk1"), str(clone))
    for dep in (a, c):
        servers.git("merge-base", "--is-ancestor", dep, "HEAD", cwd=clone)
    assert (clone / "models.py").exists() and (clone / "store.py").exists()
    assert f"Longshot-Stacked-On: {a}" in servers.git("log", "-1", "--format=%B", cwd=clone)


def test_dependencies_that_conflict_with_each_other_fail_the_attempt_naming_them(daemon, run_agent):
    daemon.repos.create("stk2", MAIN)
    a = daemon.repos.commit("stk2", {"app.py": "A = 1\n"}, branch="longshot/default/b1/b1-a", start="main")
    c = daemon.repos.commit("stk2", {"app.py": "C = 1\n"}, branch="longshot/default/b1/b1-c", start="main")
    task = task_input(daemon.url("stk2"), task="b1-b", stack=[stack_entry("a", "longshot/default/b1/b1-a", a),
                                                               stack_entry("c", "longshot/default/b1/b1-c", c)])
    result = run_agent(task, script={"steps": [{"write": {"path": "x.py", "content": "x = 1\n"}}]})

    assert result.exit_code == 1
    failure = result.handoff.failure
    assert failure is not None and failure.failure_class == "AgentError"
    assert "stacked dependencies conflict" in failure.message and "app.py" in failure.message
    assert "longshot/default/b1/b1-b" not in daemon.ls_remote("stk2")


def test_a_later_attempt_on_its_branch_still_knows_what_it_was_stacked_on(daemon, run_agent):
    daemon.repos.create("stk3", MAIN)
    a = daemon.repos.commit("stk3", {"models.py": "class User: ...\n"}, branch="longshot/default/b1/b1-a", start="main")
    script = {"tasks": {"b1-b": {
        "answered": [{"write": {"path": "api.py", "content": "from models import User\n"}},
                     {"finish": {"summary": "api"}}],
        "steps": [{"write": {"path": "notes.md", "content": "plan\n"}}, {"ask": "REST or RPC?"}],
    }}}
    first = run_agent(task_input(daemon.url("stk3"), task="b1-b",
                                 stack=[stack_entry("a", "longshot/default/b1/b1-a", a)]),
                      script=script)
    assert first.exit_code == 0 and first.handoff.outcome == "needs-input"
    # meanwhile the dependency merged (as a different commit): the next attempt's stack is empty
    main = daemon.repos.commit("stk3", {"models.py": "class User: ...\n"}, message="a: models (merged)")
    second = run_agent(task_input(daemon.url("stk3"), task="b1-b", attempt=2, question="REST or RPC?",
                                  answer="REST"), script=script)

    assert second.exit_code == 0, second.stdout
    h = second.handoff
    assert h.outcome == "succeeded" and h.stacked_on == [a] and h.base_commit == main
    assert h.files_changed == ["api.py", "notes.md"]  # not the dependency's models.py
