"""The command backend: an external CLI agent run from a template in the checkout."""

from __future__ import annotations

import json
import sys

import pytest
from agent_servers import task_input

pytestmark = pytest.mark.integration

FAKE_CLI = """\
import json, os, sys
prompt = sys.argv[1]
with open("PROMPT.txt", "w") as f:
    f.write(prompt)
if os.environ["LONGSHOT_ROLE"] == "planner":
    with open(os.environ["LONGSHOT_RESULT_FILE"], "w") as f:
        json.dump({"summary": "one task", "tasks": [{"name": "only", "description": "do it"}]}, f)
print("edited PROMPT.txt; key=" + os.environ.get("OPENAI_API_KEY", ""))
"""


@pytest.fixture
def cli(tmp_path):
    path = tmp_path / "fake_cli.py"
    path.write_text(FAKE_CLI)
    return f"{sys.executable} {path}"


def test_the_cli_edits_are_committed_and_the_prompt_is_passed_quoted(daemon, repo, run_agent, cli):
    description = "Handle quotes ' \" and $(touch pwned) `id` safely"
    task = task_input(daemon.url(repo), description=description,
                      backend={"name": "command", "command": cli + " {prompt}"})
    result = run_agent(task, api_key="sk-cli-key-0000000000000000000000")

    assert result.exit_code == 0, result.stdout
    assert result.handoff.files_changed == ["PROMPT.txt"]  # and no file named pwned
    prompt = daemon.repos.show(repo, result.handoff.commit, "PROMPT.txt")
    assert description in prompt and prompt.startswith("You are a careful software engineer")
    call = result.tool_calls("command")[0]
    assert call["ok"] and "key=***" in call["result"]
    assert "sk-cli-key" not in result.stdout
    assert result.handoff.summary.startswith("edited PROMPT.txt")


def test_a_command_planner_reports_through_the_result_file(daemon, repo, run_agent, cli):
    task = task_input(daemon.url(repo), task="b1-plan", role="planner",
                      backend={"name": "command", "command": cli + " {prompt_file}"})
    result = run_agent(task)

    assert result.exit_code == 0, result.stdout
    assert [t.name for t in result.handoff.tasks] == ["only"]


def test_a_cli_that_runs_too_long_is_killed_as_a_timeout(daemon, repo, run_agent):
    task = task_input(daemon.url(repo), backend={"name": "command", "command": "sleep 60 # {prompt_file}"})
    result = run_agent(task, env={"LONGSHOT_AGENT_TIMEOUT_SECONDS": "0.5"})

    assert result.exit_code == 6
    assert result.handoff.failure.failure_class == "Timeout"


def test_a_failing_cli_is_an_agent_error(daemon, repo, run_agent):
    task = task_input(daemon.url(repo), backend={"name": "command", "command": "echo 'model refused' >&2; exit 9"})
    result = run_agent(task)

    assert result.exit_code == 1
    assert "exited with code 9" in result.handoff.failure.message
    assert "model refused" in result.handoff.failure.message
    assert json.loads(result.termination)["outcome"] == "failed"
