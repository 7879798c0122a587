"""Workspace hooks (``spec.agent.hooks``): the build author's shell commands, run by the runner in the checkout.

Each hook runs as ``/bin/sh -c <command>`` in the checkout's root, in the agent Pod's sandbox with the same limits
as the agent's own commands (the environment of ``run_command``: no git plumbing, the runner's own git config is
not the checkout's), in its own process group: when ``hooks.timeoutSeconds`` is up the whole group is killed, and
any process a hook leaves behind in its group goes when it ends. Its output is kept bounded (:data:`OUTPUT_CAP`,
head and tail) and redacted like every other line the runner prints.

Which role runs which hook (:data:`ROLE_HOOKS`), in this order:

=========================  ===========================================================================
worker, fixer              ``afterClone`` (after the branch is checked out), ``beforeRun``, the agent,
                           ``afterRun`` (before the commit and push: what it changes is committed)
tester (gates, sweeps)     ``afterClone`` (after the bound commit is checked out), ``beforeGate``, the tests
planner, reviewer, judge   ``afterClone`` only (they read, they do not change the branch)
=========================  ===========================================================================

Failures (:func:`failure`): a hook that exits non-zero fails the attempt with ``spec.agent.hooks.<name> exited
<code>: <output tail>``. It is ``Configuration`` (the task stops until a person fixes the hook or the repository:
the same command on the same checkout fails again), except ``afterRun``, which runs on the agent's uncommitted
changes and is the agent's error (``AgentError``: the next attempt is told the hook's output). A hook that runs out
of time is ``Timeout``, retried with backoff (a slow network or node, as for the agent's commands).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal

from longshot import tracing
from longshot.agent import errors, events, sandbox
from longshot.api import buildrequest, handoff

HookName = Literal["afterClone", "beforeRun", "afterRun", "beforeGate"]

OUTPUT_CAP: Final = 64 * 1024
"""Characters of a hook's output kept: the first and the last 32 KiB."""
EVENT_OUTPUT_CHARS: Final = 16_000
"""Characters of the output shown in the hook's progress event (head and tail of what was kept)."""
MESSAGE_TAIL_CHARS: Final = 1500
"""Characters of the output's end quoted in the failure message."""

ROLE_HOOKS: Final[Mapping[str, tuple[HookName, ...]]] = {
    "worker": ("afterClone", "beforeRun", "afterRun"),
    "fixer": ("afterClone", "beforeRun", "afterRun"),
    "tester": ("afterClone", "beforeGate"),
    "planner": ("afterClone",),
    "reviewer": ("afterClone",),
}
"""The hooks each role runs (every other hook of the task input is ignored by that role)."""

_FIELDS: Final[Mapping[HookName, str]] = {
    "afterClone": "after_clone", "beforeRun": "before_run", "afterRun": "after_run", "beforeGate": "before_gate",
}
assert tuple(_FIELDS) == buildrequest.HOOK_NAMES


def command_of(hooks: buildrequest.Hooks, name: HookName) -> str | None:
    command: str | None = getattr(hooks, _FIELDS[name])
    return command


def field_path(name: HookName) -> str:
    """Where the hook is set, as the failure message names it."""
    return f"spec.agent.hooks.{name}"


def run(name: HookName, task: handoff.TaskInput, *, cwd: Path, env: Mapping[str, str],
        ev: events.Events) -> sandbox.CommandResult | None:
    """Run hook ``name`` of ``task`` in ``cwd`` when the task sets it and its role runs it (None otherwise); a hook
    that fails raises the :func:`failure` of its result."""
    command = command_of(task.hooks, name)
    if command is None or name not in ROLE_HOOKS.get(task.role, ()):
        return None
    timeout = float(task.hooks.timeout_seconds)
    ev.log("running hook", hook=name, command=command, timeout_seconds=timeout)
    with tracing.span(f"hook {name}", {"longshot.hook": name}, service=tracing.AGENT) as traced:
        try:
            result = sandbox.run(["/bin/sh", "-c", command], cwd=cwd, env={**env, "LONGSHOT_HOOK": name},
                                 timeout=timeout, output_cap=OUTPUT_CAP)
        except errors.ToolError as e:  # /bin/sh cannot start: the image (spec.agent.image) is not one that can
            raise errors.ConfigError(f"{field_path(name)} could not start: {e}; check spec.agent.image") from None
        output = ev.redactor.text(result.output)
        ok = result.exit_code == 0 and not result.timed_out
        ev.emit("tool_call", tool="hook", hook=name, ok=ok, exit_code=result.exit_code, timed_out=result.timed_out,
                duration_seconds=round(result.duration, 3), result=sandbox.truncate(output, EVENT_OUTPUT_CHARS))
        if not ok:
            traced.error("hook failed")
            raise failure(name, result, output, timeout)
    return result


def failure(name: HookName, result: sandbox.CommandResult, output: str, timeout: float) -> errors.AgentFailure:
    """The attempt's failure for hook ``name`` that ended with ``result`` (``output``: its redacted output)."""
    text = output.strip()
    tail = ("[...]" + text[-MESSAGE_TAIL_CHARS:]) if len(text) > MESSAGE_TAIL_CHARS else (text or "(no output)")
    where = field_path(name)
    if result.timed_out:
        return errors.AgentTimeout(
            f"{where} did not finish within {timeout:g}s and was killed (raise spec.agent.hooks.timeoutSeconds if "
            f"it needs longer): {tail}")
    code = result.exit_code if result.exit_code is not None else -1
    how = f"was killed by signal {-code}" if code < 0 else f"exited {code}"
    if name == "afterRun":
        return errors.AgentError(f"{where} {how} on the agent's changes (nothing was committed): {tail}")
    return errors.ConfigError(f"{where} {how}: {tail}; fix the hook (or the repository) and relaunch the task")
