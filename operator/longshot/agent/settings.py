"""Where the runner finds its inputs and how it is tuned: mounted paths and knobs, from the environment.

Paths default to where the agent Pod mounts them (``longshot.api.handoff``) and are overridable so the
runner also works outside a Pod (tests, a laptop)::

    LONGSHOT_TASK_INPUT, LONGSHOT_GIT_CREDENTIALS_DIR, LONGSHOT_LLM_CREDENTIALS_DIR, LONGSHOT_SCRIPT_DIR,
    LONGSHOT_PROMPTS_DIR, LONGSHOT_SKILLS_DIR, LONGSHOT_INSTRUCTIONS_DIR, LONGSHOT_WORKSPACE_DIR,
    LONGSHOT_TERMINATION_LOG

Each :class:`Settings` field ``x`` is read from ``LONGSHOT_<X>`` (upper case). Both are pydantic-settings
(``longshot.envsettings``); an empty variable means the default, and a value that does not validate is a
ConfigError naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Self

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from longshot.agent import errors
from longshot.api import handoff
from longshot.envsettings import EnvSettings, SettingsError


class _AgentSettings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="LONGSHOT_", env_ignore_empty=True, validate_by_name=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        try:
            return super().from_env(env)
        except SettingsError as e:
            raise errors.ConfigError(str(e)) from None


class Paths(_AgentSettings):
    task_input: Path = Path(handoff.TASK_INPUT_PATH)
    git_credentials: Path = Field(default=Path(handoff.GIT_CREDENTIALS_DIR),
                                  validation_alias="LONGSHOT_GIT_CREDENTIALS_DIR")
    llm_credentials: Path = Field(default=Path(handoff.LLM_CREDENTIALS_DIR),
                                  validation_alias="LONGSHOT_LLM_CREDENTIALS_DIR")
    script: Path = Field(default=Path(handoff.SCRIPT_DIR), validation_alias="LONGSHOT_SCRIPT_DIR")
    prompts: Path = Field(default=Path(handoff.PROMPTS_DIR), validation_alias="LONGSHOT_PROMPTS_DIR")
    skills: Path = Field(default=Path(handoff.SKILLS_DIR), validation_alias="LONGSHOT_SKILLS_DIR")
    instructions: Path = Field(default=Path(handoff.INSTRUCTIONS_DIR), validation_alias="LONGSHOT_INSTRUCTIONS_DIR")
    workspace: Path = Field(default=Path(handoff.WORKSPACE_DIR), validation_alias="LONGSHOT_WORKSPACE_DIR")
    termination_log: Path = Path(handoff.TERMINATION_LOG)

    @property
    def checkout(self) -> Path:
        """The repository's working tree (the tools' root)."""
        return self.workspace / "repo"

    @property
    def scratch(self) -> Path:
        """Private files of the runner, outside the checkout (askpass helper, ssh key, prompt files)."""
        return self.workspace / ".longshot"


class Settings(_AgentSettings):
    heartbeat_seconds: float = Field(default=30.0, ge=0)
    """Interval of ``heartbeat`` events; 0 turns them off."""
    command_timeout_seconds: float = Field(default=600.0, ge=0)
    """Longest a ``run_command`` tool call may run (the model may ask for less)."""
    output_cap: int = Field(default=16_000, ge=0)
    """Characters of command output kept (head and tail)."""
    git_timeout_seconds: float = Field(default=600.0, ge=0)
    test_timeout_seconds: float = Field(default=1800.0, ge=0)
    """Tester role: longest the test command may run."""
    agent_timeout_seconds: float = Field(default=3600.0, ge=0)
    """Command backend: longest the CLI agent may run."""
    http_timeout_seconds: float = Field(default=300.0, ge=0)
    retry_max_attempts: int = Field(default=8, ge=0)
    retry_base_seconds: float = Field(default=1.0, ge=0)
    retry_max_seconds: float = Field(default=60.0, ge=0)
    message_hold_seconds: float = Field(default=900.0, ge=0)
    """After a person's interrupt, longest the agent waits for their next message before it carries on."""
    max_corrections: int = Field(default=3, ge=0)
    """How many times an invalid plan or verdict is sent back to the model before giving up."""
    max_output_tokens: int = Field(default=8192, ge=0)
    """Anthropic ``max_tokens`` per turn."""
    max_diff_chars: int = Field(default=100_000, ge=0)
    """Reviewer: largest diff put in the prompt (head and tail beyond)."""
