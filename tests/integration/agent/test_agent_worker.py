"""A worker in a real checkout: edits pushed to a git daemon, and every way it can go wrong."""

from __future__ import annotations

import os
from pathlib import Path

import agent_servers as servers
import pytest
from agent_servers import task_input

from longshot.api import handoff
from longshot_testing import wait_for
from longshot_testing.controlplane import free_port

pytestmark = pytest.mark.integration


def test_scripted_multi_file_change_is_committed_pushed_and_handed_off(daemon, repo, run_agent, tmp_path):
    script = {"tasks": {"t1": [
        {"write": {"path": "farewell/__init__.py", "content": "def bye():\n    return 'bye'\n"}},
        {"edit": {"path": "app.py", "old": "return 'hi'", "new": "return 'hello'"}},
        {"run": {"command": "git rm -q README.md && python3 -c 'import farewell; print(farewell.bye())'"}},
        {"finish": {"summary": "Add farewell and say hello\n\nDetails in the body."}},
    ]}}
    result = run_agent(task_input(daemon.url(repo), task="b1-t1"), script=script)

    assert result.exit_code == 0, result.stdout
    h = result.handoff
    assert h.outcome == "succeeded" and h.role == "worker" and h.task == "b1-t1"
    assert h.branch == "longshot/default/b1/b1-t1"
    assert h.files_changed == ["README.md", "app.py", "farewell/__init__.py"]
    # the pushed branch is the handoff's commit, on top of main
    remote = daemon.ls_remote(repo)
    assert remote["refs/heads/longshot/default/b1/b1-t1"] == h.commit
    assert h.base_commit == remote["refs/heads/main"]
    clone = tmp_path / "check"
    servers.git("clone", "-q", "-b", "longshot/default/b1/b1-t1", daemon.url(repo), str(clone))
    assert (clone / "app.py").read_text() == "def greet():\n    return 'hello'\n"
    assert (clone / "farewell/__init__.py").exists() and not (clone / "README.md").exists()
    log = servers.git("log", "-1", "--format=%an <%ae>%n%s%n%b", cwd=clone)
    assert log.startswith("Longshot Agent <agent@longshot.local>\nAdd farewell and say hello\n")
    assert "Longshot-Task: b1-t1" in log
    # the run_command output reached the event stream, and the last line carries the same handoff
    assert "bye" in result.tool_calls("run_command")[0]["result"]
    assert handoff.Handoff.model_validate(result.lines[-1]["handoff"]) == h


def test_no_change_is_reported_empty_and_nothing_is_pushed(daemon, repo, run_agent):
    script = {"steps": [{"read": {"path": "app.py"}}, {"finish": {"summary": "nothing to do"}}]}
    result = run_agent(task_input(daemon.url(repo)), script=script)

    assert result.exit_code == 0
    assert result.handoff.outcome == "empty"
    assert result.handoff.commit is None
    assert list(daemon.ls_remote(repo)) == ["HEAD", "refs/heads/main"]


def test_a_committed_secret_blocks_the_push(daemon, repo, run_agent):
    key = "AKIA" + "Q3EXAMPLE7TESTKEY0"[:16]
    script = {"steps": [
        {"write": {"path": "deploy/settings.py", "content": f"import os\nAWS_KEY = '{key}'\n"}},
        {"finish": {"summary": "configure deploy"}},
    ]}
    result = run_agent(task_input(daemon.url(repo)), script=script)

    assert result.exit_code == 1
    failure = result.handoff.failure
    assert result.handoff.outcome == "failed" and failure is not None
    assert failure.failure_class == "AgentError"
    assert "deploy/settings.py:2: aws-access-token" in failure.message
    assert key not in result.stdout and key not in result.termination
    assert list(daemon.ls_remote(repo)) == ["HEAD", "refs/heads/main"]


def test_the_model_api_key_copied_into_a_file_is_blocked(daemon, repo, run_agent):
    api_key = "plain-looking-api-key-1234"
    script = {"steps": [
        {"run": {"command": f"cat {'$LONGSHOT_LLM_CREDENTIALS_DIR'}/api-key > leaked.txt; cat leaked.txt"}},
        {"finish": {"summary": "leak"}},
    ]}
    result = run_agent(task_input(daemon.url(repo)), script=script, api_key=api_key)

    assert result.exit_code == 1
    assert "leaked.txt:1: known-credential" in result.handoff.failure.message
    assert api_key not in result.stdout
    assert "***" in result.tool_calls("run_command")[0]["result"]
    assert "refs/heads/longshot/default/b1/b1-t1" not in daemon.ls_remote(repo)


def test_a_push_refused_by_the_server_is_an_infrastructure_failure(daemon, repo, run_agent):
    daemon.repos.hook(repo, "pre-receive", "#!/bin/sh\necho 'branch protection: pushes are frozen' >&2\nexit 1\n")
    script = {"steps": [{"write": {"path": "x.txt", "content": "x\n"}}, {"finish": {"summary": "x"}}]}
    result = run_agent(task_input(daemon.url(repo)), script=script)

    assert result.exit_code == 5
    failure = result.handoff.failure
    assert failure.failure_class == "Infrastructure"
    assert "push of longshot/default/b1/b1-t1 failed" in failure.message
    assert "pushes are frozen" in failure.message


def test_a_clone_failure_is_an_infrastructure_failure(run_agent):
    closed = free_port()
    result = run_agent(task_input(f"git://127.0.0.1:{closed}/nowhere.git"), script={"steps": []})

    assert result.exit_code == 5
    assert result.handoff.failure.failure_class == "Infrastructure"
    assert "clone of the repository failed" in result.handoff.failure.message


def test_a_missing_base_branch_is_reported(daemon, repo, run_agent):
    result = run_agent(task_input(daemon.url(repo), base_branch="develop"), script={"steps": []})

    assert result.exit_code == 5
    assert "base branch 'develop' does not exist" in result.handoff.failure.message


def test_paths_outside_the_workspace_are_refused(daemon, repo, run_agent, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret\n")
    script = {"steps": [
        {"run": {"command": f"ln -s {outside} escape && ln -s {outside}/secret.txt notes.txt"}},
        {"write": {"path": "../../evil.txt", "content": "x"}},
        {"write": {"path": "escape/evil.txt", "content": "x"}},
        {"read": {"path": "notes.txt"}},
        {"read": {"path": str(outside / "secret.txt")}},
        {"edit": {"path": ".git/config", "old": "[core]", "new": "[core]\n\thooksPath = /tmp"}},
        {"list": {"path": "escape"}},
        {"run": "rm escape notes.txt"},
        {"write": {"path": "inside.txt", "content": "fine\n"}},
        {"finish": {"summary": "tried"}},
    ]}
    result = run_agent(task_input(daemon.url(repo)), script=script)

    calls = result.tool_calls()
    refused = [c for c in calls if not c["ok"]]
    assert [c["tool"] for c in refused] == ["write_file", "write_file", "read_file", "read_file", "edit_file",
                                            "list_files"]
    assert all("outside the workspace" in c["result"] for c in refused[:4] + refused[5:])
    assert "inside .git" in refused[4]["result"]
    assert "top secret" not in result.stdout
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not (tmp_path / "evil.txt").exists()
    assert result.exit_code == 0 and result.handoff.files_changed == ["inside.txt"]


def test_hanging_commands_are_killed_and_huge_output_is_truncated(daemon, repo, run_agent, tmp_path):
    pidfile = tmp_path / "child.pid"
    script = {"steps": [
        {"run": {"command": f"sleep 300 & echo $! > {pidfile}; wait", "timeout": 0.5}},
        {"run": {"command": "yes 0123456789 | head -c 5000000"}},
        {"finish": {"summary": "ran"}},
    ]}
    result = run_agent(task_input(daemon.url(repo)), script=script, env={"LONGSHOT_OUTPUT_CAP": "1000"})

    hang, flood = result.tool_calls("run_command")
    assert hang["result"].startswith("[timed out after")
    pid = int(pidfile.read_text())
    wait_for(lambda: not servers.process_alive(pid), 5, f"process {pid} to be gone")
    assert "[... truncated" in flood["result"]
    assert result.exit_code == 0 and result.handoff.outcome == "empty"


def test_the_script_can_fail_on_purpose(daemon, repo, run_agent):
    script = {"roles": {"worker": [{"fail": {"class": "Timeout", "message": "simulated"}}]}}
    result = run_agent(task_input(daemon.url(repo)), script=script)

    assert result.exit_code == 6
    assert result.handoff.failure.failure_class == "Timeout"


def test_heartbeats_are_emitted_while_the_agent_works(daemon, repo, run_agent):
    script = {"steps": [{"run": "sleep 0.3"}, {"finish": {"summary": "slept"}}]}
    result = run_agent(task_input(daemon.url(repo)), script=script, env={"LONGSHOT_HEARTBEAT_SECONDS": "0.05"})

    assert result.events("heartbeat")
    assert result.lines[-1]["type"] == "handoff"


def test_the_entrypoint_runs_as_a_process(daemon, repo, tmp_path):
    import json
    import subprocess
    import sys

    (tmp_path / "task.json").write_text(json.dumps(task_input(daemon.url(repo))))
    (tmp_path / "script").mkdir()
    (tmp_path / "script" / "script.yaml").write_text(
        "steps:\n  - write: {path: hello.txt, content: hello}\n  - finish: {summary: say hello}\n")
    env = {**os.environ, **servers.GIT_ENV, "LONGSHOT_TASK_INPUT": str(tmp_path / "task.json"),
           "LONGSHOT_SCRIPT_DIR": str(tmp_path / "script"), "LONGSHOT_WORKSPACE_DIR": str(tmp_path / "ws"),
           "LONGSHOT_TERMINATION_LOG": str(tmp_path / "term"),
           "LONGSHOT_GIT_CREDENTIALS_DIR": str(tmp_path / "none"),
           "LONGSHOT_LLM_CREDENTIALS_DIR": str(tmp_path / "none")}
    proc = subprocess.run([sys.executable, "-m", "longshot", "agent"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["type"] == "handoff" and last["handoff"]["outcome"] == "succeeded"
    assert handoff.parse_termination_message((tmp_path / "term").read_text()).commit == last["handoff"]["commit"]

    (tmp_path / "task.json").unlink()
    proc = subprocess.run([sys.executable, "-m", "longshot", "agent"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2
    assert "no task input" in (tmp_path / "term").read_text()
    assert Path(tmp_path / "term").read_text().startswith("invalid task input")
