"""Workspace hooks (``spec.agent.hooks``) run by the agent runner: real ``/bin/sh`` processes in a real checkout of a
local repository (``file://``), the scripted backend as the agent."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_agent_sandbox import _alive

from longshot.agent import errors, hooks, runner, sandbox
from longshot.api import buildrequest, handoff

pytestmark = pytest.mark.integration

GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "Test",
           "GIT_AUTHOR_EMAIL": "test@example.com", "GIT_COMMITTER_NAME": "Test",
           "GIT_COMMITTER_EMAIL": "test@example.com"}
FEATURE = "longshot/default/b1/b1-feature"


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare repository with ``main`` (README.md) and a feature branch (app.py)."""
    seed = tmp_path / "seed"
    seed.mkdir()
    git("init", "-q", "-b", "main", cwd=seed)
    (seed / "README.md").write_text("# app\n")
    git("add", "README.md", cwd=seed)
    git("commit", "-q", "-m", "init", cwd=seed)
    git("checkout", "-q", "-b", FEATURE, cwd=seed)
    (seed / "app.py").write_text("x = 1\n")
    git("add", "app.py", cwd=seed)
    git("commit", "-q", "-m", "feature", cwd=seed)
    bare = tmp_path / "origin.git"
    git("clone", "-q", "--bare", str(seed), str(bare), cwd=tmp_path)
    return bare


class Run:
    def __init__(self, code: int, stdout: str, termination: str) -> None:
        self.code = code
        self.lines = [json.loads(line) for line in stdout.splitlines()]
        self.handoff = handoff.parse_termination_message(termination)
        assert isinstance(self.handoff, handoff.Handoff)

    def hook_events(self) -> list[dict[str, Any]]:
        return [e for e in self.lines if e["type"] == "tool_call" and e.get("tool") == "hook"]


def run_agent(tmp_path: Path, origin: Path, *, role: str = "worker", hooks_: dict[str, Any],
              script: Any = None, **fields: Any) -> Run:
    home = tmp_path / "home"
    for d in ("git", "llm", "script", "prompts"):
        (home / d).mkdir(parents=True, exist_ok=True)
    task = {"task": "b1-t1", "build": "b1", "namespace": "default", "role": role, "description": "Add a file",
            "repository_url": f"file://{origin}", "branch": fields.pop("branch", "longshot/default/b1/b1-t1"),
            "hooks": hooks_, **fields}
    (home / "task.json").write_text(handoff.TaskInput.model_validate(task).model_dump_json(by_alias=True))
    (home / "script" / "script.yaml").write_text(yaml.safe_dump(script or {"steps": [
        {"run": {"command": f"echo agent >> {tmp_path}/order.log"}},
        {"write": {"path": "new.txt", "content": "from the agent\n"}},
        {"finish": {"summary": "added new.txt"}},
    ]}))
    env = {**os.environ, **GIT_ENV,
           "LONGSHOT_TASK_INPUT": str(home / "task.json"),
           "LONGSHOT_GIT_CREDENTIALS_DIR": str(home / "git"),
           "LONGSHOT_LLM_CREDENTIALS_DIR": str(home / "llm"),
           "LONGSHOT_SCRIPT_DIR": str(home / "script"),
           "LONGSHOT_PROMPTS_DIR": str(home / "prompts"),
           "LONGSHOT_WORKSPACE_DIR": str(home / "workspace"),
           "LONGSHOT_TERMINATION_LOG": str(home / "termination-log"),
           "LONGSHOT_HEARTBEAT_SECONDS": "0"}
    env.pop("LONGSHOT_GATEWAY_URL", None)
    out = io.StringIO()
    code = runner.run(env, sleep=lambda s: None, rand=lambda: 0.5, stdout=out)
    return Run(code, out.getvalue(), (home / "termination-log").read_text())


def logging_hooks(tmp_path: Path) -> dict[str, str]:
    """Every hook appends its name (``$LONGSHOT_HOOK``) to order.log."""
    line = f'echo "$LONGSHOT_HOOK" >> {tmp_path}/order.log'
    return {"afterClone": line, "beforeRun": line, "afterRun": line, "beforeGate": line}


def order(tmp_path: Path) -> list[str]:
    log = tmp_path / "order.log"
    return log.read_text().split() if log.exists() else []


def branches(origin: Path) -> dict[str, str]:
    out = git("for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads", cwd=origin)
    return dict(line.split() for line in out.splitlines())


# --- order and roles ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("role", "fields"), [("worker", {}), ("fixer", {"branch": FEATURE})])
def test_workers_and_fixers_run_after_clone_before_run_the_agent_then_after_run_and_commit_what_it_changed(
        tmp_path, origin, role, fields):
    hooks_ = {**logging_hooks(tmp_path), "afterRun": f'echo afterRun >> {tmp_path}/order.log; echo fmt > fmt.txt'}
    result = run_agent(tmp_path, origin, role=role, hooks_=hooks_, **fields)

    assert result.code == 0, result.lines
    assert order(tmp_path) == ["afterClone", "beforeRun", "agent", "afterRun"]  # never beforeGate
    h = result.handoff
    assert h.outcome == "succeeded" and {"fmt.txt", "new.txt"} <= set(h.files_changed)  # (a fixer's: app.py too)
    assert git("show", f"{h.commit}:fmt.txt", cwd=origin) == "fmt"
    assert [e["hook"] for e in result.hook_events()] == ["afterClone", "beforeRun", "afterRun"]


def test_a_service_a_hook_starts_in_its_own_session_outlives_the_hook_for_the_agent(tmp_path, origin):
    pidfile = tmp_path / "service.pid"
    start = (f"setsid -f sh -c 'echo $$ > {pidfile}; exec sleep 120' > /dev/null 2>&1 < /dev/null; "
             f"while [ ! -s {pidfile} ]; do sleep 0.05; done")
    script = {"steps": [{"run": {"command": f"kill -0 $(cat {pidfile}) && echo service-up >> {tmp_path}/order.log"}},
                        {"finish": {"summary": "checked"}}]}
    try:
        result = run_agent(tmp_path, origin, hooks_={"beforeRun": start}, script=script)
        assert result.code == 0, result.lines
        assert order(tmp_path) == ["service-up"]
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), 9)


def test_hooks_run_in_the_checkout_of_the_branch_the_role_works_on(tmp_path, origin):
    """A tester's hooks see the bound commit (app.py of the feature branch), then the tests run."""
    hooks_ = {**logging_hooks(tmp_path), "afterClone": f"test -f app.py && echo afterClone >> {tmp_path}/order.log"}
    result = run_agent(tmp_path, origin, role="tester", hooks_=hooks_, branch=FEATURE,
                       test_command=f"echo tests >> {tmp_path}/order.log")

    assert result.code == 0, result.lines
    assert result.handoff.verdict == "passed"
    assert order(tmp_path) == ["afterClone", "beforeGate", "tests"]


@pytest.mark.parametrize(("role", "script", "fields"), [
    ("planner", {"roles": {"planner": [{"finish": {"summary": "plan", "tasks": [
        {"name": "a", "description": "do a"}]}}]}}, {}),
    ("reviewer", {"roles": {"reviewer": [{"finish": {"summary": "ok", "verdict": "approved"}}]}},
     {"branch": FEATURE}),
])
def test_planners_and_reviewers_run_after_clone_only(tmp_path, origin, role, script, fields):
    result = run_agent(tmp_path, origin, role=role, hooks_=logging_hooks(tmp_path), script=script, **fields)

    assert result.code == 0, result.lines
    assert order(tmp_path) == ["afterClone"]


def test_without_hooks_nothing_runs_and_the_task_input_is_valid_without_the_field(tmp_path, origin):
    assert handoff.TaskInput.model_validate({"task": "t", "build": "b", "namespace": "n", "role": "worker",
                                             "description": "d", "repository_url": "file:///x", "branch": "b"}
                                            ).hooks == buildrequest.Hooks()
    result = run_agent(tmp_path, origin, hooks_={})
    assert result.code == 0 and result.hook_events() == []
    assert order(tmp_path) == ["agent"]


# --- failures ----------------------------------------------------------------------------------------

def test_a_failing_after_clone_is_a_configuration_failure_naming_the_hook_and_nothing_else_runs(tmp_path, origin):
    before = branches(origin)
    hooks_ = {**logging_hooks(tmp_path), "afterClone": "echo 'npm ERR! missing script: ci' >&2; exit 2"}
    result = run_agent(tmp_path, origin, hooks_=hooks_)

    assert result.code == errors.EXIT_CONFIG == 2
    failure = result.handoff.failure
    assert failure is not None and failure.failure_class == "Configuration"
    assert failure.message.startswith("spec.agent.hooks.afterClone exited 2: npm ERR! missing script: ci")
    assert order(tmp_path) == []  # neither beforeRun nor the agent ran
    assert branches(origin) == before  # nothing pushed


def test_a_failing_before_gate_fails_the_testers_attempt_instead_of_running_the_tests(tmp_path, origin):
    result = run_agent(tmp_path, origin, role="tester", hooks_={"beforeGate": "exit 7"}, branch=FEATURE,
                       test_command=f"echo tests >> {tmp_path}/order.log")

    assert result.code == 2
    assert result.handoff.failure.message.startswith("spec.agent.hooks.beforeGate exited 7: (no output)")
    assert order(tmp_path) == []


def test_a_failing_after_run_is_the_agents_error_and_nothing_is_pushed(tmp_path, origin):
    before = branches(origin)
    result = run_agent(tmp_path, origin, hooks_={"afterRun": "echo 'lint: new.txt is bad'; exit 1"})

    assert result.code == errors.EXIT_AGENT_ERROR == 1
    failure = result.handoff.failure
    assert failure.failure_class == "AgentError"
    assert failure.message.startswith("spec.agent.hooks.afterRun exited 1 on the agent's changes")
    assert "lint: new.txt is bad" in failure.message
    assert branches(origin) == before


def test_a_hook_that_runs_out_of_time_is_killed_with_its_children_and_is_a_timeout(tmp_path, origin):
    pidfile = tmp_path / "pid"
    hooks_ = {"beforeRun": f"sleep 300 & echo $! > {pidfile}; echo waiting; sleep 300", "timeoutSeconds": 1}
    result = run_agent(tmp_path, origin, hooks_=hooks_)

    assert result.code == errors.EXIT_TIMEOUT == 6
    failure = result.handoff.failure
    assert failure.failure_class == "Timeout"
    assert failure.message.startswith("spec.agent.hooks.beforeRun did not finish within 1s and was killed")
    assert failure.message.endswith("waiting")
    assert order(tmp_path) == []  # the agent never started
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10  # the group got SIGKILL: the background child goes with it
    while _alive(pid):
        assert time.monotonic() < deadline, "the hook's background child survived"
        time.sleep(0.02)


def test_a_hooks_output_is_bounded_and_redacted(tmp_path, origin):
    token = "ghp_" + "A" * 36
    noisy = f"seq 1 200000; echo 'token {token}'; echo last-line; exit 3"
    result = run_agent(tmp_path, origin, hooks_={"afterClone": noisy})

    failure = result.handoff.failure
    assert failure.message.startswith("spec.agent.hooks.afterClone exited 3: [...]")
    assert "token ***\nlast-line" in failure.message and token not in failure.message
    assert len(failure.message) < 2000
    [event] = result.hook_events()
    assert event["ok"] is False and event["exit_code"] == 3
    assert event["result"].startswith("1\n2\n3\n") and event["result"].endswith("last-line\n")
    assert "[... truncated" in event["result"] and len(event["result"]) < hooks.EVENT_OUTPUT_CHARS + 200
    assert token not in json.dumps(result.lines)


def test_the_output_kept_is_head_and_tail_of_at_most_64_kib(tmp_path):
    result = sandbox.run(["/bin/sh", "-c", "seq 1 100000"], cwd=tmp_path, env=dict(os.environ), timeout=60,
                         output_cap=hooks.OUTPUT_CAP)
    kept = result.output.split("\n[... truncated ")
    assert len(kept[0]) == hooks.OUTPUT_CAP // 2 and kept[1].endswith("99999\n100000\n")


def test_failure_classes_of_each_hook():
    done = sandbox.CommandResult(exit_code=2, output="", timed_out=False, duration=0.1)
    late = sandbox.CommandResult(exit_code=None, output="", timed_out=True, duration=1.0)
    killed = sandbox.CommandResult(exit_code=-9, output="", timed_out=False, duration=1.0)
    for name in buildrequest.HOOK_NAMES:
        assert hooks.failure(name, late, "", 5).failure_class == "Timeout"
        expected = "AgentError" if name == "afterRun" else "Configuration"
        assert hooks.failure(name, done, "", 5).failure_class == expected
    assert "was killed by signal 9" in str(hooks.failure("afterClone", killed, "", 5))


