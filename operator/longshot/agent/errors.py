"""Failures of an agent attempt: each carries the handoff's failure class and the process exit code.

Exit codes of ``python -m longshot agent`` (documented in docs/agent.md):

==  ===============  =========================================================================
0   -                outcome ``succeeded`` or ``empty``
1   AgentError       the agent (or its model) could not do the task, or produced invalid output
2   AgentError       the task input or the backend configuration is invalid (nothing was tried)
3   Auth             git or the model API refused the credentials
4   RateLimited      the model API kept answering 429 after the retries
5   Infrastructure   clone, fetch or push failed, the model API was unreachable or kept failing
6   Timeout          the agent's command (command backend, tester) ran out of time
==  ===============  =========================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_AGENT_ERROR = 1
EXIT_CONFIG = 2
EXIT_AUTH = 3
EXIT_RATE_LIMITED = 4
EXIT_INFRASTRUCTURE = 5
EXIT_TIMEOUT = 6


class AgentFailure(Exception):
    """Base of every failure the runner reports in a handoff."""

    failure_class = "AgentError"
    exit_code = EXIT_AGENT_ERROR


class AgentError(AgentFailure):
    """The agent could not do its task (bad model output, refused push of a secret, ...)."""


class ConfigError(AgentFailure):
    """The task input or backend settings cannot work; retrying will not help."""

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


class ToolError(Exception):
    """A tool call the model made cannot be carried out; the message is shown to the model."""
