"""The agent's side of delegation: ``spawn_task`` and ``await_tasks`` through longshot-gateway.

A worker of a build with ``spec.delegation.enabled`` asks the gateway for child tasks (``POST /delegation/spawn``)
and reads how they are doing (``GET /delegation/children``), with the Pod's token, which names its task and
attempt: it can ask only for children of its own task. The operator creates the children; each runs, and merges
through the merge queue, before its parent's own branch merges. :meth:`Client.wait` polls until every named child
is done (refused, failed, cancelled, or succeeded with its branch merged) or the timeout is up.

The same client serves the MCP server (``python -m longshot mcp``) that command-backend agents use.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from longshot.agent import errors
from longshot.agent import gateway as agent_gateway

MAX_TIMEOUT = 4 * 3600.0
"""Longest wait of one ``await_tasks`` (the attempt's own timeout bounds it too)."""
DEFAULT_TIMEOUT = 1800.0
POLL_SECONDS = 3.0
MAX_ANSWER = 1024 * 1024


class Delegation(Protocol):
    """What the tools need: the real client, or a fake in tests."""

    def spawn(self, tasks: Sequence[Mapping[str, Any]]) -> dict[str, Any]: ...

    def children(self) -> dict[str, Any]: ...


class Client:
    """Calls the gateway's delegation routes with the Pod's token (read per request: it rotates)."""

    def __init__(self, url: str, token: Callable[[], str], *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_gateway(cls, gw: agent_gateway.Gateway) -> Client:
        return cls(gw.url, gw.token)

    def spawn(self, tasks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return self._call("POST", "/delegation/spawn", {"tasks": [dict(t) for t in tasks]})

    def children(self) -> dict[str, Any]:
        return self._call("GET", "/delegation/children", None)

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.token()}"})
        try:
            with agent_gateway._OPENER.open(request, timeout=self.timeout) as response:
                raw = response.read(MAX_ANSWER)
        except urllib.error.HTTPError as e:
            raise errors.ToolError(f"longshot-gateway refused ({e.code}): {_error_of(e.read(65536))}") from None
        except (OSError, urllib.error.URLError) as e:
            raise errors.ToolError(f"longshot-gateway is not reachable: {e}") from None
        try:
            value = json.loads(raw)
        except ValueError:
            raise errors.ToolError("longshot-gateway answered something that is not JSON") from None
        if not isinstance(value, dict):
            raise errors.ToolError("longshot-gateway answered something that is not a JSON object")
        return value


def _error_of(raw: bytes) -> str:
    try:
        value = json.loads(raw)
        if isinstance(value, dict) and isinstance(value.get("error"), str):
            return str(value["error"])[:2000]
    except ValueError:
        pass
    return raw.decode(errors="replace")[:2000]


def spawn(client: Delegation, args: Mapping[str, Any]) -> str:
    """``spawn_task(name, prompt, scope?, model?)``: the tool's answer (the gateway refuses a model the build does
    not list, naming its models)."""
    name, prompt, scope = args.get("name"), args.get("prompt"), args.get("scope")
    if not isinstance(name, str) or not isinstance(prompt, str):
        raise errors.ToolError("spawn_task needs name and prompt (strings)")
    task: dict[str, Any] = {"name": name, "prompt": prompt}
    if scope is not None:
        if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
            raise errors.ToolError("scope must be a list of paths or globs")
        task["scope"] = scope
    model = args.get("model")
    if model is not None:
        if not isinstance(model, str):
            raise errors.ToolError("model must be the name of one of the build's models (a string)")
        task["model"] = model
    client.spawn([task])
    return (f"asked for child task {name!r}; the operator creates it (or refuses it, saying why). Call "
            "await_tasks with its name to wait until it finished and merged.")


def wait(client: Delegation, args: Mapping[str, Any], *, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic, poll: float = POLL_SECONDS) -> str:
    """``await_tasks(names, timeout?)``: poll until every named child is done or ``timeout`` seconds passed."""
    names = args.get("names")
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise errors.ToolError("await_tasks needs names: a list of the children's names")
    timeout = args.get("timeout", DEFAULT_TIMEOUT)
    if not isinstance(timeout, int | float) or timeout < 0:
        raise errors.ToolError("timeout must be a number of seconds")
    deadline = clock() + min(float(timeout), MAX_TIMEOUT)
    while True:
        answer = client.children()
        requested = set(answer.get("requested") or [])
        unknown = [n for n in names if n not in requested]
        if unknown:
            raise errors.ToolError(f"no child named {', '.join(unknown)} was spawned; spawn_task it first")
        by_name = {c.get("name"): c for c in answer.get("children") or [] if isinstance(c, dict)}
        done = all(bool((by_name.get(n) or {}).get("done")) for n in names)
        if done or clock() >= deadline:
            return render([by_name.get(n) or {"name": n, "phase": "Pending"} for n in names], done)
        sleep(min(poll, max(0.0, deadline - clock())))


def render(children: Sequence[Mapping[str, Any]], done: bool) -> str:
    lines = []
    for c in children:
        state = str(c.get("phase") or "Pending")
        if c.get("merged"):
            state += ", merged"
        line = f"- {c.get('name')}: {state}"
        if c.get("reason"):
            line += f" ({c['reason']})"
        if c.get("summary"):
            line += f": {c['summary']}"
        lines.append(line)
    head = ("every child is done; the merged children's work is on the target branch (fetch it to build on it)"
            if done else "the timeout is up; some children are still running (await them again, or go on)")
    return head + "\n" + "\n".join(lines)


SPAWN_SCHEMA: dict[str, Any] = {
    "description": "Delegate a part of your task to a new child task that another agent works on in parallel, on "
                   "its own branch. It merges into the target before your own work does. Give it a self-contained "
                   "prompt and, if you can, the files it may change (scope). Then call await_tasks.",
    "parameters": {"type": "object", "properties": {
        "name": {"type": "string", "description": "a short lowercase DNS label, at most 40 characters",
                 "pattern": "^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"},
        "prompt": {"type": "string", "description": "what the child should do (at most 16 KiB)"},
        "scope": {"type": "array", "items": {"type": "string"}, "description": "files or globs it may change"}},
        "required": ["name", "prompt"]},
}


def spawn_schema(models: Sequence[str] = ()) -> dict[str, Any]:
    """``spawn_task``'s schema; with the build's model names (``TaskInput.models``) it takes a ``model`` among them."""
    if not models:
        return SPAWN_SCHEMA
    properties = dict(SPAWN_SCHEMA["parameters"]["properties"])
    properties["model"] = {"type": "string", "enum": list(models),
                           "description": "optional: which of the build's models the child runs"}
    return {**SPAWN_SCHEMA, "parameters": {**SPAWN_SCHEMA["parameters"], "properties": properties}}


AWAIT_SCHEMA: dict[str, Any] = {
    "description": "Wait until the named child tasks are done (merged, failed or refused) and read their results. "
                   "Returns after timeout seconds at the latest.",
    "parameters": {"type": "object", "properties": {
        "names": {"type": "array", "items": {"type": "string"}},
        "timeout": {"type": "number", "description": "seconds to wait at most (default 1800)"}},
        "required": ["names"]},
}
