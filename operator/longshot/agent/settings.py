"""Where the runner finds its inputs and how it is tuned: mounted paths and knobs, from the environment.

Paths default to where the agent Pod mounts them (``longshot.api.handoff``) and are overridable so the
runner also works outside a Pod (tests, a laptop)::

    LONGSHOT_TASK_INPUT, LONGSHOT_GIT_CREDENTIALS_DIR, LONGSHOT_LLM_CREDENTIALS_DIR, LONGSHOT_SCRIPT_DIR,
    LONGSHOT_PROMPTS_DIR, LONGSHOT_WORKSPACE_DIR, LONGSHOT_TERMINATION_LOG

Each :class:`Settings` field ``x`` is read from ``LONGSHOT_<X>`` (upper case).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from longshot.agent import errors
from longshot.api import handoff


@dataclass(frozen=True)
class Paths:
    task_input: Path
    git_credentials: Path
    llm_credentials: Path
    script: Path
    prompts: Path
    workspace: Path
    termination_log: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Paths:
        def get(name: str, default: str) -> Path:
            return Path(env.get(name) or default)

        return cls(
            task_input=get("LONGSHOT_TASK_INPUT", handoff.TASK_INPUT_PATH),
            git_credentials=get("LONGSHOT_GIT_CREDENTIALS_DIR", handoff.GIT_CREDENTIALS_DIR),
            llm_credentials=get("LONGSHOT_LLM_CREDENTIALS_DIR", handoff.LLM_CREDENTIALS_DIR),
            script=get("LONGSHOT_SCRIPT_DIR", handoff.SCRIPT_DIR),
            prompts=get("LONGSHOT_PROMPTS_DIR", handoff.PROMPTS_DIR),
            workspace=get("LONGSHOT_WORKSPACE_DIR", handoff.WORKSPACE_DIR),
            termination_log=get("LONGSHOT_TERMINATION_LOG", handoff.TERMINATION_LOG),
        )

    @property
    def checkout(self) -> Path:
        """The repository's working tree (the tools' root)."""
        return self.workspace / "repo"

    @property
    def scratch(self) -> Path:
        """Private files of the runner, outside the checkout (askpass helper, ssh key, prompt files)."""
        return self.workspace / ".longshot"


@dataclass(frozen=True)
class Settings:
    heartbeat_seconds: float = 30.0
    """Interval of ``heartbeat`` events; 0 turns them off."""
    command_timeout_seconds: float = 600.0
    """Longest a ``run_command`` tool call may run (the model may ask for less)."""
    output_cap: int = 16_000
    """Characters of command output kept (head and tail)."""
    git_timeout_seconds: float = 600.0
    test_timeout_seconds: float = 1800.0
    """Tester role: longest the test command may run."""
    agent_timeout_seconds: float = 3600.0
    """Command backend: longest the CLI agent may run."""
    http_timeout_seconds: float = 300.0
    retry_max_attempts: int = 8
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    max_corrections: int = 3
    """How many times an invalid plan or verdict is sent back to the model before giving up."""
    max_output_tokens: int = 8192
    """Anthropic ``max_tokens`` per turn."""
    max_diff_chars: int = 100_000
    """Reviewer: largest diff put in the prompt (head and tail beyond)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            name = f"LONGSHOT_{field.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            kind = int if field.type in (int, "int") else float
            try:
                values[field.name] = kind(raw)
            except ValueError:
                raise errors.ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
        return cls(**values)  # type: ignore[arg-type]
