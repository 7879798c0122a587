"""The tools every backend offers the model, their JSON schemas, and the dispatcher that runs them.

The dispatcher turns every problem with a call (unknown tool, bad arguments, a path outside the
workspace, ...) into a tool error the model sees and can recover from; it emits one ``tool_call`` event
per call, redacted. ``finish`` ends the session; its payload is checked by the role's validator, and an
invalid payload is answered with the reason so the model can correct it, a bounded number of times.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from longshot import tracing
from longshot.agent import delegation, errors, events, mcptools, sandbox
from longshot.api import handoff, toolnames

MAX_CORRECTIONS = 3

_STR = {"type": "string"}

SCHEMAS: dict[str, dict[str, Any]] = {
    "list_files": {
        "description": "List files under a directory of the repository (relative path), optionally "
                       "filtered by a glob pattern.",
        "parameters": {"type": "object", "properties": {"path": _STR, "pattern": _STR}, "required": []},
    },
    "read_file": {
        "description": "Read a text file of the repository.",
        "parameters": {"type": "object", "properties": {"path": _STR}, "required": ["path"]},
    },
    "write_file": {
        "description": "Create or overwrite a file with the given content (parent directories are created).",
        "parameters": {"type": "object", "properties": {"path": _STR, "content": _STR},
                       "required": ["path", "content"]},
    },
    "edit_file": {
        "description": "Replace an exact string in a file. `old` must occur exactly once unless replace_all.",
        "parameters": {"type": "object", "properties": {
            "path": _STR, "old": _STR, "new": _STR, "replace_all": {"type": "boolean"}},
            "required": ["path", "old", "new"]},
    },
    "search": {
        "description": "Search files for a Python regular expression; returns file:line: text.",
        "parameters": {"type": "object", "properties": {"pattern": _STR, "path": _STR, "glob": _STR},
                       "required": ["pattern"]},
    },
    "run_command": {
        "description": "Run a shell command in the repository root (no network guarantees). Output is "
                       "capped; the command is killed when its timeout (seconds) is up.",
        "parameters": {"type": "object", "properties": {"command": _STR, "timeout": {"type": "number"}},
                       "required": ["command"]},
    },
}

_PLANNED_TASK: dict[str, Any] = {
    "type": "object",
    "properties": {
        # the pattern is the plan's own rule: servers that constrain tool calls by a grammar built from the
        # schema (llama.cpp) then only let the model write valid names
        "name": {"type": "string", "description": "unique lowercase DNS label, at most 40 characters",
                 "pattern": handoff.PLAN_TASK_NAME},
        "description": _STR,
        "scope": {"type": "array", "items": _STR},
        "depends_on": {"type": "array", "items": _STR},
        "priority": {"type": "integer", "minimum": 1, "maximum": 10},
        "decompose": {"type": "boolean"},
    },
    "required": ["name", "description"],
}


ASK_ROLES = frozenset({"planner", "worker", "fixer"})
"""Roles that may ``ask`` a person a question (reviewers and testers decide on their own)."""
MAX_QUESTION = 4000

ASK_SCHEMA: dict[str, Any] = {
    "description": "Ask a person a question you cannot answer from the repository or the task, when a wrong "
                   "guess would waste the work (a product decision, a missing requirement, an access you lack). "
                   "This ENDS the attempt: your changes so far are kept on the branch, and a new attempt starts "
                   "with the question and the person's answer. Do not ask what you can find out yourself.",
    "parameters": {"type": "object", "properties": {"question": {
        "type": "string", "description": "one clear, self-contained question"}}, "required": ["question"]},
}


def planned_task_schema(models: Sequence[str] = (), personas: Sequence[str] = ()) -> dict[str, Any]:
    """A planned task's schema; with the build's model and persona names, ``model`` and ``persona`` are enums."""
    properties = dict(_PLANNED_TASK["properties"])
    properties["model"] = {"type": "string", "description": "optional: the name of one of the build's models to run "
                                                            "this task", **({"enum": list(models)} if models else {})}
    properties["persona"] = {"type": "string", "description": "optional: the name of one of the build's personas "
                                                              "for this task",
                             **({"enum": list(personas)} if personas else {})}
    return {**_PLANNED_TASK, "properties": properties}


def finish_schema(role: str, *, max_tasks: int | None = None, judging: bool | None = None,
                  models: Sequence[str] = (), personas: Sequence[str] = ()) -> dict[str, Any]:
    """The ``finish`` tool of ``role``; a planner's with ``maxItems`` (``max_tasks``, when given), a reviewer's
    requiring ``verdict`` (a review, ``judging`` False) or ``winner`` (``judging`` True): servers that constrain
    tool calls to the schema (llama.cpp's grammars) then cannot leave out what the role's validation needs."""
    # no maxLength: llama.cpp turns one into that many nested grammar rules and refuses the grammar ("number of
    # rules that are going to be repeated ... exceeds sane defaults"; the server answered 500 on every request)
    properties: dict[str, Any] = {"summary": {"type": "string", "description": "what you did, in one or two "
                                                                             "sentences"}}
    required = ["summary"]
    if role == "planner":
        properties["tasks"] = {"type": "array", "items": planned_task_schema(models, personas),
                               **({"maxItems": max_tasks} if max_tasks is not None else {})}
        required.append("tasks")  # [] only with done: true; required, a constrained server always writes a plan
        properties["done"] = {"type": "boolean", "description": "true (with no tasks) when the build request is "
                                                                "already met and no more work is needed"}
    if role == "reviewer":
        # one schema for both reviewer modes (backends ask for the tools by role): a review passes a verdict,
        # a judge of candidates a winner; the mode's validator says which one is missing
        properties["verdict"] = {"type": "string", "enum": ["approved", "changes-requested"],
                                 "description": "your verdict on the change (review)"}
        properties["winner"] = {"type": "string", "description": "the name of the best candidate (judging)"}
        properties["reasons"] = {"type": "array", "items": _STR}
        if judging is not None:
            required.append("winner" if judging else "verdict")
    return {
        "description": "Call once when you are done. " + {
            "planner": "Pass the task list, or done: true when the request is already met.",
            "reviewer": "Pass your verdict (or, when judging candidates, the winner) and the reasons.",
        }.get(role, "Summarise the change."),
        "parameters": {"type": "object", "properties": properties, "required": required},
    }


DELEGATION_TOOLS = ("spawn_task", "await_tasks")
"""A worker's tools when its build lets it delegate (``TaskInput.delegate``; :mod:`longshot.agent.delegation`)."""


def specs(role: str, *, max_tasks: int | None = None, judging: bool | None = None,
          delegate: bool = False, ask: bool = True, allow: Collection[str] | None = None,
          models: Sequence[str] = (), personas: Sequence[str] = (),
          mcp: Mapping[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Tool name -> {description, parameters} for a role (with ``delegate``: a worker's spawn and await tools;
    without ``ask``, no ``ask`` tool: ``spec.agent.allowQuestions: false``). ``allow``: the persona's tool
    allowlist (``api.toolnames``; None: every tool); ``models`` and ``personas``: the names a planned task or a
    spawned child may choose (their schemas then list them); ``mcp``: the tools of the attempt's MCP servers the
    allowlist leaves (``Toolbox.mcp_specs``, which matches them as ``SERVER.TOOL``)."""
    extra: dict[str, dict[str, Any]] = {"ask": ASK_SCHEMA} if role in ASK_ROLES and ask else {}
    if delegate and role == "worker":
        extra.update({"spawn_task": delegation.spawn_schema(models), "await_tasks": delegation.AWAIT_SCHEMA})
    builtin = {name: spec for name, spec in {**SCHEMAS, **extra}.items() if toolnames.allowed(allow, name)}
    servers = {k: v for k, v in (mcp or {}).items() if k not in builtin and k != "finish"}
    return {**builtin, **servers,
            "finish": finish_schema(role, max_tasks=max_tasks, judging=judging, models=models, personas=personas)}


@dataclass
class Finish:
    """What ``finish`` returned once it passed the role's validation, or the question of ``ask``."""

    summary: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    validated: Any = None
    question: str | None = None
    """Set when the session ended with ``ask``: the attempt stops with outcome ``needs-input``."""


Validator = Callable[[dict[str, Any]], Any]
"""Checks a finish payload; returns the validated value or raises ToolError with the reason."""


@dataclass
class ToolResult:
    content: str
    is_error: bool = False


class Toolbox:
    """Runs tool calls against a sandbox and records the session's finish."""

    def __init__(self, box: sandbox.Sandbox, ev: events.Events, role: str, *,
                 validator: Validator | None = None, max_corrections: int = MAX_CORRECTIONS,
                 delegation: delegation.Delegation | None = None, ask: bool = True,
                 mcp: mcptools.McpTools | None = None, allow: Collection[str] | None = None) -> None:
        self.sandbox = box
        self.mcp = mcp
        """The tools of the attempt's MCP servers (``spec.agent.mcpServers`` of its role), through the gateway."""
        self.allow = None if allow is None else frozenset(allow)
        """The persona's tool allowlist (``api.toolnames``): a tool it leaves out is neither offered nor run."""
        self.ask = ask and role in ASK_ROLES
        """Whether the ``ask`` tool is offered (and answered) in this session."""
        self.delegation = delegation if role == "worker" else None
        """The gateway's delegation routes, when this worker may delegate (``spawn_task``, ``await_tasks``)."""
        self.events = ev
        self.role = role
        self.validator = validator
        self.max_corrections = max_corrections
        self.corrections = 0
        self.finished: Finish | None = None
        self.calls = 0
        self.refused: str | None = None
        """Why the last ``finish`` was refused (invalid arguments or the role's validation), if it was."""
        self.refused_result: str | None = None
        """Why the last ``finish`` that carried a result (any argument besides ``summary``: a plan, a verdict) was
        refused by the role's validation: the rule the result broke (a task name, a dependency cycle)."""

    def call(self, name: str, arguments: str | dict[str, Any] | None) -> ToolResult:
        """Run one call; ``arguments`` may be a JSON string (as OpenAI sends them) or a dict."""
        self.calls += 1
        # tracing: a made-up tool name is not a span name
        known = name in SCHEMAS or name in ("finish", "ask", *DELEGATION_TOOLS) or (
            self.mcp is not None and self.mcp.resolve(name) is not None)
        with tracing.span(f"tool {name}" if known else "tool", {"longshot.tool": name[:64]},
                          service=tracing.AGENT) as traced:
            try:
                args = parse_arguments(arguments)
                result = ToolResult(self._dispatch(name, args))
            except errors.ToolError as e:
                result = ToolResult(f"error: {e}", is_error=True)
                if name == "finish":
                    self.refused = self.events.redactor.text(str(e))
            if result.is_error:
                traced.error("the tool call failed")
        text = self.events.redactor.text(result.content)
        self.events.emit("tool_call", tool=name, ok=not result.is_error,
                         arguments=_summarise_args(arguments), result=sandbox.truncate(text, 400))
        return ToolResult(text, result.is_error)

    def offers(self, name: str) -> bool:
        """Whether ``name`` is offered under the persona's allowlist; an MCP tool (``SERVER__TOOL`` as the model sees
        it, or ``SERVER.TOOL``) is matched as ``SERVER.TOOL``."""
        found = self.mcp.resolve(name) if self.mcp is not None else None
        return toolnames.allowed(self.allow, f"{found[0].name}.{found[1]}" if found is not None else name)

    def _dispatch(self, name: str, args: dict[str, Any]) -> str:
        box = self.sandbox
        if not self.offers(name):
            raise errors.ToolError(f"tool {name!r} is not offered to this task's persona; the tools are "
                                   f"{', '.join(self.offered())}")
        try:
            if name == "list_files":
                return box.list_files(args.get("path") or ".", args.get("pattern"))
            if name == "read_file":
                return box.read_file(_required(args, "path"))
            if name == "write_file":
                return box.write_file(_required(args, "path"), _required(args, "content"))
            if name == "edit_file":
                return box.edit_file(_required(args, "path"), _required(args, "old"), _required(args, "new"),
                                     bool(args.get("replace_all", False)))
            if name == "search":
                return box.search(_required(args, "pattern"), args.get("path") or ".", args.get("glob"))
            if name == "run_command":
                timeout = args.get("timeout")
                if timeout is not None and not isinstance(timeout, int | float):
                    raise errors.ToolError("timeout must be a number of seconds")
                return box.run_command(_required(args, "command"), timeout).render()
            if name == "finish":
                return self._finish(args)
            if name == "ask" and self.ask:
                return self._ask(args)
            if name == "spawn_task" and self.delegation is not None:
                return delegation.spawn(self.delegation, args)
            if name == "await_tasks" and self.delegation is not None:
                return delegation.wait(self.delegation, args)
            if self.mcp is not None and self.mcp.resolve(name) is not None:
                return self.mcp.call(name, args)
        except OSError as e:
            raise errors.ToolError(f"{name} failed: {e.strerror or e}") from None
        raise errors.ToolError(f"unknown tool {name!r}; the tools are {', '.join(self.offered())}")

    def mcp_specs(self) -> dict[str, dict[str, Any]]:
        """The MCP servers' tools the persona's allowlist leaves, as the backends offer them (``specs(mcp=...)``)."""
        if self.mcp is None:
            return {}
        return {name: spec for name, spec in self.mcp.specs().items() if self.offers(name)}

    def offered(self) -> list[str]:
        """The names of the tools offered in this session."""
        return list(specs(self.role, delegate=self.delegation is not None, ask=self.ask, allow=self.allow,
                          mcp=self.mcp_specs()))

    def _ask(self, args: dict[str, Any]) -> str:
        question = _required(args, "question")
        if not isinstance(question, str) or not question.strip():
            raise errors.ToolError("question must be a non-empty string")
        question = question.strip()
        if len(question) > MAX_QUESTION:
            raise errors.ToolError(f"the question has {len(question)} characters; ask in at most {MAX_QUESTION}")
        question = self.events.redactor.text(question)
        self.finished = Finish(summary=f"asked: {question}", payload=args, question=question)
        return "asked; the attempt ends here and resumes with the answer"

    def _finish(self, args: dict[str, Any]) -> str:
        summary = args.get("summary", "")
        if not isinstance(summary, str):
            raise errors.ToolError("summary must be a string")
        validated = None
        if self.validator is not None:
            try:
                validated = self.validator(args)
            except errors.ToolError as e:
                self.corrections += 1
                carried = any(k != "summary" for k in args)
                if carried:
                    self.refused_result = self.events.redactor.text(str(e))
                if self.corrections > self.max_corrections:
                    raise errors.AgentError(
                        f"the model's {self.role} result is still invalid after {self.max_corrections} "
                        f"correction(s): {self.why(str(e), carried=carried)}"
                    ) from None
                raise errors.ToolError(f"{e} — fix it and call finish again") from None
        self.finished = Finish(summary=summary, payload=args, validated=validated)
        return "finished"

    def why(self, last: str, *, carried: bool = False) -> str:
        """Why the session's result was refused, given the ``last`` refusal: the rule its last result broke first
        (the condition of a rejected plan names it, not a later finish without a plan), then ``last`` when that
        is something else. ``carried``: the last refused finish carried a result itself."""
        rule = self.refused_result
        if carried or rule is None or last.startswith(rule):
            return last
        return f"{sandbox.truncate(rule, 600)} (then: {sandbox.truncate(last, 300)})"

    def unfinished(self, max_turns: int) -> errors.AgentError:
        """The failure of a session that ran out of turns: it says why the model's result was refused."""
        if self.refused_result is not None and self.refused is not None \
                and not self.refused.startswith(self.refused_result):
            return errors.AgentError(f"the model did not finish within {max_turns} turns: its result was refused "
                                     f"({sandbox.truncate(self.refused_result, 600)}); its last finish was refused "
                                     f"({sandbox.truncate(self.refused, 300)})")
        if self.refused is not None:
            return errors.AgentError(f"the model did not finish within {max_turns} turns: its last finish was "
                                     f"refused ({sandbox.truncate(self.refused, 600)})")
        return errors.AgentError(f"the model did not call finish within {max_turns} turns")


def parse_arguments(arguments: str | dict[str, Any] | None) -> dict[str, Any]:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments)
        if isinstance(value, str) and value.lstrip().startswith("{"):
            value = json.loads(value)  # a JSON string holding the JSON object (some models double-encode)
    except (json.JSONDecodeError, TypeError) as e:
        raise errors.ToolError(
            f"the arguments are not valid JSON ({e}); send a JSON object matching the tool's schema"
        ) from None
    if not isinstance(value, dict):
        raise errors.ToolError("the arguments must be a JSON object")
    return value


def _required(args: dict[str, Any], key: str) -> Any:
    if key not in args:
        raise errors.ToolError(f"missing required argument {key!r}")
    return args[key]


def _summarise_args(arguments: Any) -> Any:
    """Arguments as logged: long strings shortened (file contents are not progress)."""
    if isinstance(arguments, str):
        return sandbox.truncate(arguments, 200)
    if isinstance(arguments, dict):
        return {k: sandbox.truncate(v, 200) if isinstance(v, str) else ("[...]" if isinstance(v, list | dict)
                                                                          else v)
                for k, v in arguments.items()}
    return arguments
