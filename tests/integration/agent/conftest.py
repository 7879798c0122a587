"""Fixtures of the agent runner's integration tests: loopback git servers, fake model APIs, and a
helper that runs the runner in-process against them with its own environment."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Helper modules are imported by bare name; the shared git servers (used by agent_servers) live one level up.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import agent_servers as servers
import pytest
import yaml

from longshot.agent import runner
from longshot.api import handoff

README = "# app\n\nA small app.\n"


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.GitDaemon]:
    with servers.git_daemon(tmp_path_factory.mktemp("git-daemon")) as d:
        yield d


@pytest.fixture
def repo(daemon: servers.GitDaemon, request: pytest.FixtureRequest) -> str:
    """A fresh repository (per test) served by the daemon, with a README and app.py on main."""
    name = f"r{abs(hash(request.node.nodeid)) % 10**10}"
    daemon.repos.create(name, {"README.md": README, "app.py": "def greet():\n    return 'hi'\n"})
    return name


@pytest.fixture
def model() -> Iterator[servers.ModelAPI]:
    with servers.model_api() as api:
        yield api


@dataclass
class AgentResult:
    exit_code: int
    stdout: str
    termination: str
    sleeps: list[float]
    lines: list[dict[str, Any]] = field(default_factory=list)

    @property
    def handoff(self) -> handoff.Handoff:
        parsed = handoff.parse_termination_message(self.termination)
        if isinstance(parsed, handoff.HandoffPointer):
            # too large for the termination message (a CLI's long output in the summary): it went through a git
            # ref (test_agent_planner checks that path), and the runner's last stdout line has it whole
            last = next(line for line in reversed(self.lines) if "handoff" in line)
            return handoff.parse_handoff_bytes(json.dumps(last["handoff"]).encode())
        return parsed

    def events(self, type_: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["type"] == type_]

    def tool_calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events("tool_call") if tool is None or e["tool"] == tool]


@pytest.fixture
def run_agent(tmp_path: Path) -> Callable[..., AgentResult]:
    """Run the agent runner in-process: ``run_agent(task_input, script=..., git_secret=..., api_key=...)``."""
    counter = iter(range(1000))

    def run(task: dict[str, Any], *, script: Any = None, git_secret: dict[str, str] | None = None,
            api_key: str | None = None, prompts: dict[str, str] | None = None,
            env: dict[str, str] | None = None) -> AgentResult:
        home = tmp_path / f"run{next(counter)}"
        for d in ("git", "llm", "script", "prompts"):
            (home / d).mkdir(parents=True)
        (home / "task.json").write_text(json.dumps(task))
        for key, value in (git_secret or {}).items():
            (home / "git" / key).write_text(value + "\n")
        if api_key:
            (home / "llm" / "api-key").write_text(api_key + "\n")
        if script is not None:
            (home / "script" / "script.yaml").write_text(script if isinstance(script, str) else yaml.safe_dump(script))
        for name, text in (prompts or {}).items():
            (home / "prompts" / name).write_text(text)
        full_env = {
            **os.environ, **servers.GIT_ENV,
            "LONGSHOT_TASK_INPUT": str(home / "task.json"),
            "LONGSHOT_GIT_CREDENTIALS_DIR": str(home / "git"),
            "LONGSHOT_LLM_CREDENTIALS_DIR": str(home / "llm"),
            "LONGSHOT_SCRIPT_DIR": str(home / "script"),
            "LONGSHOT_PROMPTS_DIR": str(home / "prompts"),
            "LONGSHOT_WORKSPACE_DIR": str(home / "workspace"),
            "LONGSHOT_TERMINATION_LOG": str(home / "termination-log"),
            "LONGSHOT_HEARTBEAT_SECONDS": "0",
            **(env or {}),
        }
        sleeps: list[float] = []
        out = io.StringIO()
        code = runner.run(full_env, sleep=sleeps.append, rand=lambda: 0.5, stdout=out)
        term = home / "termination-log"
        text = out.getvalue()
        result = AgentResult(code, text, term.read_text() if term.exists() else "", sleeps,
                             [json.loads(line) for line in text.splitlines()])
        assert result.lines, "the runner printed nothing"
        assert result.lines[-1]["type"] == "handoff", "the handoff must be the last line on stdout"
        return result

    return run
