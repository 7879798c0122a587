"""The one table of agent exit codes and failure classes, shared by the agent runner and the operator.

The agent runner (``longshot.agent.errors``) exits with these codes; the operator
(``longshot.core.failures``) reads them back from the agent container's terminated state. Both import this
module, so the two sides cannot disagree.

==  ===============  =========================================================================================
0   -                outcome ``succeeded``, ``empty`` or ``needs-input``
1   AgentError       the agent (or its model) could not do the task, or produced invalid output
2   Configuration    the task input, the backend settings or a request the server refuses as invalid: retrying
                     the same thing cannot help; the build stops and says which field to fix
3   Auth             git or the model API refused the credentials
4   RateLimited      the model API kept answering 429 after the retries
5   Infrastructure   clone, fetch or push failed, the model API was unreachable or kept failing
6   Timeout          the agent's command (command backend, tester) ran out of time
7   BudgetExceeded   the gateway refused further model calls: the build's token or cost budget is spent
==  ===============  =========================================================================================

Exit codes 137 and 143 (killed by SIGKILL / SIGTERM from outside, without an OOM kill) are Infrastructure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal, get_args

FailureClass = Literal["AgentError", "Timeout", "OOMKilled", "RateLimited", "Auth", "Infrastructure",
                       "InvalidHandoff", "Configuration", "BudgetExceeded"]
"""Why an attempt failed; picks the retry behaviour (``longshot.core.backoff``)."""

FAILURE_CLASSES: Final[tuple[FailureClass, ...]] = get_args(FailureClass)

EXIT_OK: Final = 0
EXIT_AGENT_ERROR: Final = 1
EXIT_CONFIGURATION: Final = 2
EXIT_AUTH: Final = 3
EXIT_RATE_LIMITED: Final = 4
EXIT_INFRASTRUCTURE: Final = 5
EXIT_TIMEOUT: Final = 6
EXIT_BUDGET_EXCEEDED: Final = 7

EXIT_CODES: Final[Mapping[int, FailureClass]] = {
    EXIT_AGENT_ERROR: "AgentError",
    EXIT_CONFIGURATION: "Configuration",
    EXIT_AUTH: "Auth",
    EXIT_RATE_LIMITED: "RateLimited",
    EXIT_INFRASTRUCTURE: "Infrastructure",
    EXIT_TIMEOUT: "Timeout",
    EXIT_BUDGET_EXCEEDED: "BudgetExceeded",
    137: "Infrastructure",  # SIGKILL from outside (node shutdown, kubectl delete --force) without OOM
    143: "Infrastructure",  # SIGTERM: the Pod was deleted or preempted
}
"""Exit code -> failure class; any other non-zero code is AgentError."""

EXIT_OF_CLASS: Final[Mapping[FailureClass, int]] = {
    "AgentError": EXIT_AGENT_ERROR,
    "Configuration": EXIT_CONFIGURATION,
    "Auth": EXIT_AUTH,
    "RateLimited": EXIT_RATE_LIMITED,
    "Infrastructure": EXIT_INFRASTRUCTURE,
    "Timeout": EXIT_TIMEOUT,
    "BudgetExceeded": EXIT_BUDGET_EXCEEDED,
    "OOMKilled": EXIT_INFRASTRUCTURE,
    "InvalidHandoff": EXIT_AGENT_ERROR,
}
"""The exit code the agent uses for a failure of this class."""


def failure_class_of(exit_code: int) -> FailureClass:
    """The failure class of a non-zero exit code."""
    return EXIT_CODES.get(exit_code, "AgentError")
