"""Failures of an agent attempt: each carries the handoff's failure class and the process exit code.

The exit codes and failure classes are the shared table of :mod:`longshot.api.exitcodes` (documented in
docs/agent.md), so the runner and the operator cannot disagree.
"""

from __future__ import annotations

from longshot.api import exitcodes
from longshot.api.exitcodes import FailureClass

EXIT_OK = exitcodes.EXIT_OK
EXIT_AGENT_ERROR = exitcodes.EXIT_AGENT_ERROR
EXIT_CONFIG = exitcodes.EXIT_CONFIGURATION
EXIT_AUTH = exitcodes.EXIT_AUTH
EXIT_RATE_LIMITED = exitcodes.EXIT_RATE_LIMITED
EXIT_INFRASTRUCTURE = exitcodes.EXIT_INFRASTRUCTURE
EXIT_TIMEOUT = exitcodes.EXIT_TIMEOUT
EXIT_BUDGET_EXCEEDED = exitcodes.EXIT_BUDGET_EXCEEDED


class AgentFailure(Exception):
    """Base of every failure the runner reports in a handoff."""

    failure_class: FailureClass = "AgentError"
    exit_code = EXIT_AGENT_ERROR


class AgentError(AgentFailure):
    """The agent could not do its task (bad model output, refused push of a secret, ...)."""


class ConfigError(AgentFailure):
    """The task input, the backend settings or a request the server refuses as invalid: retrying the same
    thing cannot help. The operator stops the task with a condition naming what to fix."""

    failure_class = "Configuration"
    exit_code = EXIT_CONFIG


class AuthError(AgentFailure):
    failure_class = "Auth"
    exit_code = EXIT_AUTH


class RateLimitedError(AgentFailure):
    failure_class = "RateLimited"
    exit_code = EXIT_RATE_LIMITED


class InfrastructureError(AgentFailure):
    failure_class = "Infrastructure"
    exit_code = EXIT_INFRASTRUCTURE


class AgentTimeout(AgentFailure):
    failure_class = "Timeout"
    exit_code = EXIT_TIMEOUT


class BudgetExceededError(AgentFailure):
    """The gateway refused a model call: the build's token or cost budget is spent."""

    failure_class = "BudgetExceeded"
    exit_code = EXIT_BUDGET_EXCEEDED


class ToolError(Exception):
    """A tool call the model made cannot be carried out; the message is shown to the model."""
