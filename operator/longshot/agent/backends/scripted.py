"""The scripted backend: a YAML script of tool actions, so a whole build runs with no model.

Format (``$LONGSHOT_SCRIPT_DIR/script.yaml``, see docs/agent.md)::

    tasks:                  # by task name: the AgentTask's name, or the plan-local name
      api-users:            #   (the AgentTask name without its "<build>-" prefix)
        - write: {path: api/users.py, content: "..."}
        - finish: {summary: "users endpoint"}
    roles:                  # by role, when no task entry matches
      planner:
        - finish: {summary: plan, tasks: [{name: api-users, description: ...}]}
      reviewer:
        - finish: {summary: ok, verdict: approved}
    steps:                  # everything else
      - run: {command: "make fmt"}

A step is a mapping with one action key: ``write``/``write_file``, ``edit``/``edit_file``,
``read``/``read_file``, ``list``/``list_files``, ``search``, ``run``/``run_command``, ``finish``,
``ask: "question"`` (ends the attempt with outcome ``needs-input``), ``spawn: {name, prompt, scope}`` and
``await: {names: [...], timeout: 600}`` (delegation: a worker of a build with ``spec.delegation.enabled``),
``mcp: {tool: SERVER.TOOL, arguments: {...}, save: PATH}`` (a tool of one of the build's MCP servers,
``spec.agent.mcpServers``, through the gateway; with ``save``, its result is written to ``PATH`` in the checkout),
``await_message: {timeoutSeconds: N, write: PATH}`` (a person's message, below), or
``fail: {class: AgentError, message: ...}`` to simulate a failure. A step may add ``check: true`` (next
to the action, or among a ``run``'s arguments) to make a tool error, or a command that does not exit 0, fail
the attempt; otherwise errors are reported and the script goes on. A script that ends
without ``finish`` finishes with a summary of its steps.

An entry (of ``tasks``, ``roles`` or ``steps``) may instead be a mapping that picks its steps by what the
task input says, first match wins::

    tasks:
      api:
        answered: [...]          # the task input carries an answer to an earlier ``ask``
        attempt: {1: [...]}      # by attempt number
        iteration: {2: [...]}    # by planning iteration (the planner of iteration 2, say)
        judging: [...]           # a reviewer given candidates to judge
        steps: [...]             # otherwise

A planner entry that does not pick by ``iteration`` plans the first iteration only: from iteration 2 on, the
build's planner finishes with ``done: true`` (the script's plan was the whole request).

People's messages (``kubectl longshot say``; docs/agent.md, "Talking to a running agent"): the steps take them in
order. What the script does with what came::

    step            message that came                      then
    run             an interrupt, while the command runs    the command is killed; its result says "interrupted by
                                                           a person" (a failure under ``check``); the script goes on
    run             an interrupt, before the command        nothing: taken before the command starts, so it cannot
                                                           stop a later command
    await_message   messages not yet taken                  the oldest; with ``write``, its text is written to PATH
    await_message   none                                   waits (long poll) for one, at most ``timeoutSeconds``
                                                           (default ``LONGSHOT_MESSAGE_HOLD_SECONDS``); none: a
                                                           tool error (a failure under ``check``)
    any             an interrupt                           never the answer of an ``await_message`` (its text is
                                                           logged as a ``message`` event): the step waits for the
                                                           message after it, as the built-in loop holds
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from longshot.agent import errors, messages, sandbox, tools
from longshot.agent.backends import base

SCRIPT_FILE = "script.yaml"

ACTIONS = {
    "write": "write_file", "write_file": "write_file",
    "edit": "edit_file", "edit_file": "edit_file",
    "read": "read_file", "read_file": "read_file",
    "list": "list_files", "list_files": "list_files",
    "search": "search",
    "run": "run_command", "run_command": "run_command",
    "finish": "finish",
    "ask": "ask",
    "spawn": "spawn_task", "spawn_task": "spawn_task",
    "await": "await_tasks", "await_tasks": "await_tasks",
    "mcp": "mcp",
    "await_message": "await_message",
    "fail": "fail",
}
AWAIT_KEYS = ("timeoutSeconds", "write")
FAILURES: dict[str, type[errors.AgentFailure]] = {
    "AgentError": errors.AgentError,
    "Auth": errors.AuthError,
    "RateLimited": errors.RateLimitedError,
    "Infrastructure": errors.InfrastructureError,
    "Timeout": errors.AgentTimeout,
}


def load_script(script_dir: Path) -> dict[str, Any]:
    path = script_dir / SCRIPT_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise errors.ConfigError(
            f"the scripted backend needs {path}; mount a ConfigMap with a script.yaml key there"
        ) from None
    except yaml.YAMLError as e:
        raise errors.ConfigError(f"{path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if isinstance(data, list):
        return {"steps": data}
    if not isinstance(data, dict):
        raise errors.ConfigError(f"{path} must be a mapping (tasks/roles/steps) or a list of steps")
    return data


SELECTORS = ("answered", "attempt", "iteration", "judging", "steps")


DONE_STEPS: list[Any] = [{"finish": {"summary": "the script plans one iteration; the request is met",
                                      "done": True}}]


def select_steps(script: dict[str, Any], *, task: str, build: str, role: str, attempt: int = 1,
                 iteration: int = 1, answered: bool = False, judging: bool = False) -> list[Any]:
    """The steps for a task: by full task name, by plan-local name, by role, then the default steps; an
    entry that is a mapping picks among its variants (see the module docstring)."""
    value, where = _entry(script, task=task, build=build, role=role)
    if role == "planner" and iteration > 1 and not (isinstance(value, dict) and "iteration" in value) \
            and not answered:
        return DONE_STEPS
    return _steps(value, where, attempt=attempt, iteration=iteration, answered=answered, judging=judging)


def _entry(script: dict[str, Any], *, task: str, build: str, role: str) -> tuple[Any, str]:
    tasks = script.get("tasks") or {}
    roles = script.get("roles") or {}
    local = task[len(build) + 1:] if task.startswith(build + "-") else None
    found: tuple[Any, str] | None = None
    for key, table in ((task, tasks), (local, tasks), (role, roles)):
        if key is not None and key in table:
            found = (table[key], f"{key!r}")
            break
    value, where = found or (script.get("steps") or [], "steps")
    return value, where


def _steps(value: Any, where: str, *, attempt: int = 1, iteration: int = 1, answered: bool = False,
           judging: bool = False) -> list[Any]:
    if isinstance(value, dict):
        unknown = sorted(str(k) for k in value if k not in SELECTORS)
        if unknown:
            raise errors.ConfigError(f"script entry {where} has unknown key(s) {', '.join(unknown)}; "
                                     f"an entry mapping has {', '.join(SELECTORS)}")
        by_attempt = _numbered(value.get("attempt"), attempt, f"{where}.attempt")
        by_iteration = _numbered(value.get("iteration"), iteration, f"{where}.iteration")
        if answered and "answered" in value:
            value = value["answered"]
        elif judging and "judging" in value:
            value = value["judging"]
        elif by_attempt is not None:
            value = by_attempt
        elif by_iteration is not None:
            value = by_iteration
        else:
            value = value.get("steps", [])
    if not isinstance(value, list):
        raise errors.ConfigError(f"script entry {where} must be a list of steps")
    return value


def _numbered(table: Any, number: int, where: str) -> Any:
    """The entry of ``table`` (a mapping keyed by numbers, as ints or strings) for ``number``, or None."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise errors.ConfigError(f"script entry {where} must map numbers to lists of steps")
    for key, steps in table.items():
        if str(key) == str(number):
            return steps
    return None


def parse_step(step: Any, index: int) -> tuple[str, dict[str, Any], bool]:
    """``(tool, arguments, check)`` of a step."""
    if not isinstance(step, dict):
        raise errors.ConfigError(f"script step {index} must be a mapping with one action, got {step!r}")
    check = bool(step.get("check", False))
    keys = [k for k in step if k != "check"]
    if len(keys) != 1 or keys[0] not in ACTIONS:
        raise errors.ConfigError(
            f"script step {index} must have exactly one action of {', '.join(sorted(ACTIONS))}; got {keys}"
        )
    args = step[keys[0]]
    if isinstance(args, str):
        key = {"run_command": "command", "ask": "question", "await_message": "write"}.get(ACTIONS[keys[0]], "summary")
        args = {key: args}
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise errors.ConfigError(f"script step {index} ({keys[0]}) needs a mapping of arguments")
    if "check" in args:  # ``run: {command: ..., check: true}`` means the same as a step-level ``check``
        args = {k: v for k, v in args.items() if k != "check"}
        check = check or bool(step[keys[0]]["check"])
    return ACTIONS[keys[0]], args, check


def failed(tool: str, result: tools.ToolResult) -> bool:
    """Whether a step's tool call failed: a tool error, or a command that did not exit 0."""
    return result.is_error or (tool == "run_command" and not result.content.startswith("[exit code 0]"))


def _mcp_step(toolbox: tools.Toolbox, args: dict[str, Any], index: int) -> tools.ToolResult:
    """``mcp: {tool, arguments, save}``: the MCP tool's call as the model would make it, then, with ``save``, its
    result written to the checkout (``write_file``)."""
    name, arguments, save = args.get("tool"), args.get("arguments") or {}, args.get("save")
    if not isinstance(name, str) or not isinstance(arguments, dict) or (save is not None and not isinstance(save, str)):
        raise errors.ConfigError(f"script step {index} (mcp) needs tool: SERVER.TOOL, and optionally arguments: "
                                 "{...} and save: PATH")
    result = toolbox.call(name, arguments)
    if save is None or result.is_error:
        return result
    return toolbox.call("write_file", {"path": save, "content": result.content})


def take_messages(session: base.Session, queue: list[messages.Message], *, ask: bool = False,
                  came: list[messages.Message] | None = None) -> None:
    """Take what came to the inbox (after one ask without waiting, with ``ask``) into ``queue``, the messages the
    script has not used yet; an interrupt is logged, never queued (the table in the module docstring)."""
    inbox = session.inbox
    if inbox is None:
        return
    if came is None:
        if ask:
            inbox.check()
        came = inbox.take()
    for m in came:
        session.events.emit("message", role="user", source="person", id=m.id, interrupt=m.interrupt,
                             content=m.text[:3500])
        if not m.interrupt:
            queue.append(m)


def await_message(session: base.Session, queue: list[messages.Message], args: dict[str, Any],
                  index: int) -> tools.ToolResult:
    """``await_message: {timeoutSeconds, write}``: the oldest message the script has not used, waiting for one
    (bounded) when there is none; with ``write``, its text written to that file of the checkout."""
    unknown = sorted(str(k) for k in args if k not in AWAIT_KEYS)
    seconds, path = args.get("timeoutSeconds"), args.get("write")
    if unknown or (path is not None and not isinstance(path, str)) or (seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0)):
        raise errors.ConfigError(f"script step {index} (await_message) takes timeoutSeconds: a number of seconds "
                                 f"(0 or more) and write: PATH" + (f"; got {', '.join(unknown)}" if unknown else ""))
    inbox = session.inbox
    if inbox is None:
        return tools.ToolResult("error: no message can reach this attempt: it runs without longshot-gateway",
                                is_error=True)
    limit = inbox.hold_seconds if seconds is None else float(seconds)
    take_messages(session, queue, ask=True)
    if not queue:
        session.events.log("waiting for a person's message", step=index, timeout_seconds=limit)
        take_messages(session, queue, came=inbox.await_message(limit))
    if not queue:
        return tools.ToolResult(f"error: no message came within {limit:g} seconds", is_error=True)
    message = queue.pop(0)
    session.events.log("a person's message taken", step=index, id=message.id, write=path)
    if path is not None:
        written = session.toolbox.call("write_file", {"path": path, "content": message.text})
        if written.is_error:
            return written
    return tools.ToolResult(f"message #{message.id}: {message.text}")


class ScriptedBackend(base.Backend):
    name = "scripted"

    def __init__(self, script_dir: Path) -> None:
        self.script_dir = script_dir

    def run(self, session: base.Session) -> tools.Finish:
        script = load_script(self.script_dir)
        task = session.task
        steps = select_steps(script, task=task.task, build=task.build, role=task.role, attempt=task.attempt,
                             iteration=task.iteration, answered=bool(task.answer),
                             judging=bool(task.candidates))
        session.events.log("running script", steps=len(steps))
        done: list[str] = []
        queue: list[messages.Message] = []  # people's messages the script has not used yet
        for index, step in enumerate(steps):
            tool, args, check = parse_step(step, index)
            if tool == "fail":
                cls = FAILURES.get(str(args.get("class", "AgentError")), errors.AgentError)
                raise cls(str(args.get("message", f"script step {index} failed on purpose")))
            if tool == "await_message":
                result = await_message(session, queue, args, index)
                session.events.emit("tool_call", tool=tool, ok=not result.is_error, arguments=args,
                                    result=sandbox.truncate(result.content, 400))
            elif tool == "mcp":
                result = _mcp_step(session.toolbox, args, index)
            elif tool == "run_command":
                take_messages(session, queue, ask=True)  # an interrupt sent before this command does not stop it
                result = session.toolbox.call(tool, args)
                take_messages(session, queue)  # the interrupt that stopped it, if one did
            else:
                result = session.toolbox.call(tool, args)
            if check and failed(tool, result):
                raise errors.AgentError(f"script step {index} ({tool}) failed: {result.content}")
            if session.toolbox.finished is not None:
                return session.toolbox.finished
            done.append(tool)
        result = session.toolbox.call("finish", {"summary": f"applied {len(done)} scripted step(s)"})
        if session.toolbox.finished is None:
            # the rule the script's result broke (a task name, a cycle), not this summary-only finish's complaint
            why = session.toolbox.why(result.content.removeprefix("error: "))
            raise errors.AgentError(f"the script ended without a valid finish: {why}")
        return session.toolbox.finished
