"""The build's MCP servers (``spec.agent.mcpServers``) as tools of the model, next to the built-in ones.

The runner reaches each server only through longshot-gateway (``POST <gateway>/mcp/<name>``, streamable HTTP, the
Pod's token as its key): the gateway adds the server's headers, which the Pod never holds, and refuses tools outside
the server's allowlist. At the start of a session the runner initializes each server the task input names
(``TaskInput.mcp_servers``: those of its role) and lists its tools; each reaches the model as ``SERVER__TOOL``
(OpenAI and Anthropic tool names allow no ``.``; ``SERVER.TOOL`` is accepted too), with the server's description
and input schema. A server that cannot be reached is left out with a log line: the attempt goes on without it.

Answers are read up to :data:`MAX_ANSWER_BYTES` and parsed under a cost budget (``api.boundedjson``); a tool's
result reaches the model as its text content (other content named by type), cut to the sandbox's output cap.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from longshot.agent import errors, events, sandbox
from longshot.agent import gateway as agent_gateway
from longshot.api import boundedjson

PROTOCOL_VERSION = "2025-06-18"
MAX_ANSWER_BYTES = 4 * 1024 * 1024
ANSWER_BUDGET = boundedjson.Budget(max_bytes=MAX_ANSWER_BYTES, max_values=200_000, max_depth=64)
MAX_TOOLS = 128
"""Most tools taken from one server (the rest are left out, with a log line)."""
MAX_PAGES = 10
SEPARATOR = "__"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class McpError(Exception):
    """A server that could not be used (the message says why, never a header)."""


@dataclass
class Server:
    """One server through the gateway: its session and its tools."""

    name: str
    gateway: agent_gateway.Gateway
    timeout: float = 150.0
    session: str | None = None
    protocol: str = PROTOCOL_VERSION
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Tool name (as the server gives it) -> its definition (``description``, ``inputSchema``)."""
    _next: int = 0

    @property
    def url(self) -> str:
        return f"{self.gateway.url}/mcp/{self.name}"

    def _post(self, message: dict[str, Any]) -> Any:
        headers = {"Authorization": f"Bearer {self.gateway.token()}", "Content-Type": "application/json",
                   "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": self.protocol}
        if self.session:
            headers["Mcp-Session-Id"] = self.session
        ident = message.get("id")
        try:
            with httpx.Client(timeout=self.timeout, trust_env=False, follow_redirects=False) as client, \
                    client.stream("POST", self.url, content=json.dumps(message).encode(), headers=headers) as r:
                body = bytearray()
                for chunk in r.iter_raw(64 * 1024):
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise McpError(f"MCP server {self.name!r} answered more than {MAX_ANSWER_BYTES} bytes")
                session = r.headers.get("mcp-session-id")
                content_type = r.headers.get("content-type", "")
                status = r.status_code
        except httpx.HTTPError as e:
            raise McpError(f"cannot reach MCP server {self.name!r} through the gateway: {type(e).__name__}") from None
        if session and not self.session:
            self.session = session
        if ident is None:
            if status >= 300:
                raise McpError(f"MCP server {self.name!r} refused a notification: HTTP {status}")
            return None
        answer = _find_answer(bytes(body), content_type, ident)
        if answer is None:
            raise McpError(f"MCP server {self.name!r} gave no JSON-RPC answer (HTTP {status}): "
                           f"{sandbox.truncate(bytes(body).decode('utf-8', 'replace'), 300)}")
        if "error" in answer:
            err = answer.get("error") or {}
            message_ = err.get("message") if isinstance(err, dict) else None
            raise McpError(f"MCP server {self.name!r}: {sandbox.truncate(str(message_ or err), 1000)}")
        return answer.get("result")

    def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        self._next += 1
        return self._post({"jsonrpc": "2.0", "id": self._next, "method": method, "params": params or {}})

    def connect(self) -> None:
        """Initialize the session and list the tools."""
        result = self.request("initialize", {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                                             "clientInfo": {"name": "longshot-agent", "version": "1"}})
        if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
            self.protocol = result["protocolVersion"][:32]
        self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = self.request("tools/list", {"cursor": cursor} if cursor else {})
            page = page if isinstance(page, dict) else {}
            listed = page.get("tools")
            for tool in listed if isinstance(listed, list) else []:
                if isinstance(tool, dict) and isinstance(tool.get("name"), str) and len(self.tools) < MAX_TOOLS:
                    self.tools[tool["name"]] = tool
            cursor = page.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break

    def call(self, tool: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        """The tool's result as text, and whether the server said it is an error."""
        result = self.request("tools/call", {"name": tool, "arguments": arguments})
        if not isinstance(result, dict):
            return "", False
        parts: list[str] = []
        for item in result.get("content") or []:
            if isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
                parts.append(item["text"])
            elif isinstance(item, dict):
                parts.append(f"[{str(item.get('type'))[:32]} content]")
        if not parts and "structuredContent" in result:
            parts.append(json.dumps(result["structuredContent"])[:100_000])
        return "\n".join(parts), result.get("isError") is True


def _find_answer(body: bytes, content_type: str, ident: Any) -> dict[str, Any] | None:
    """The JSON-RPC response to ``ident`` in a JSON body or a server-sent-event stream."""
    if "text/event-stream" in content_type:
        datas = [b"\n".join(line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
                 for event in body.replace(b"\r\n", b"\n").split(b"\n\n")]
    else:
        datas = [body]
    for data in datas:
        if not data.strip():
            continue
        try:
            message = boundedjson.loads(data, ANSWER_BUDGET)
        except boundedjson.Refused:
            continue
        if isinstance(message, dict) and message.get("id") == ident and ("result" in message or "error" in message):
            return message
    return None


class McpTools:
    """The tools of the attempt's MCP servers, by the name the model sees."""

    def __init__(self, servers: list[Server], ev: events.Events) -> None:
        self.events = ev
        self.servers = servers
        self._by_name: dict[str, tuple[Server, str]] = {}
        for server in servers:
            for tool in server.tools:
                model_name = f"{server.name}{SEPARATOR}{tool}"
                if not _MODEL_NAME.match(model_name):
                    ev.log("MCP tool left out: its name is not a valid model tool name", server=server.name,
                           tool=tool[:128])
                    continue
                self._by_name[model_name] = (server, tool)

    @classmethod
    def connect(cls, gw: agent_gateway.Gateway, names: list[str], ev: events.Events,
                timeout: float = 150.0) -> McpTools:
        """Initialize each server of ``names`` through the gateway; one that fails is left out (logged)."""
        servers = []
        for name in names:
            server = Server(name, gw, timeout=timeout)
            try:
                server.connect()
            except (McpError, errors.AgentFailure) as e:
                ev.log("MCP server left out", server=name, error=ev.redactor.text(str(e)))
                continue
            ev.log("MCP server ready", server=name, tools=len(server.tools))
            servers.append(server)
        return cls(servers, ev)

    def specs(self) -> dict[str, dict[str, Any]]:
        """Model tool name -> {description, parameters}, as ``tools.specs`` gives the built-in ones."""
        out = {}
        for model_name, (server, tool) in self._by_name.items():
            definition = server.tools[tool]
            schema = definition.get("inputSchema")
            description = definition.get("description")
            out[model_name] = {
                "description": f"[MCP server {server.name}] "
                               + (description[:2000] if isinstance(description, str) else tool),
                "parameters": schema if isinstance(schema, dict) else {"type": "object", "properties": {}}}
        return out

    def resolve(self, name: str) -> tuple[Server, str] | None:
        """The server and tool of a model tool name (``SERVER__TOOL``, or ``SERVER.TOOL``)."""
        found = self._by_name.get(name)
        if found is None and "." in name:
            server, _, tool = name.partition(".")
            found = self._by_name.get(f"{server}{SEPARATOR}{tool}")
        return found

    def call(self, name: str, arguments: Mapping[str, Any]) -> str:
        found = self.resolve(name)
        if found is None:
            raise errors.ToolError(f"unknown tool {name!r}")
        server, tool = found
        try:
            text, is_error = server.call(tool, dict(arguments))
        except McpError as e:
            raise errors.ToolError(str(e)) from None
        if is_error:
            raise errors.ToolError(f"{server.name}.{tool}: {text}")
        return text
