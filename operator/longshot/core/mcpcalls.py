"""MCP calls through the gateway (pure): which server an attempt may reach, which JSON-RPC messages go to it, the
headers its Secret adds, and what of the server's ``tools/list`` answer the attempt sees.

A build names its remote MCP servers in ``spec.agent.mcpServers`` (``api.buildrequest.McpServer``); an agent reaches
one only as ``POST <gateway>/mcp/<name>`` (streamable HTTP, one JSON-RPC message per request), and the gateway
decides each request with :func:`decide` before it connects anywhere::

    request                                              decision
    ---------------------------------------------------  ---------------------------------------------------------
    <name> not in spec.agent.mcpServers                   Refuse 404 (the names the build has)
    the attempt's role not in the server's roles          Refuse 403
    body not one JSON object (a batch, a value, too big)  Refuse 400
    a JSON-RPC response or error (answers a server's      Refuse 400 (the gateway offers no sampling, elicitation
      request)                                              or roots: no server request reaches an agent)
    notification (no id) in FORWARDED_NOTIFICATIONS       Forward
    other notification                                    Drop (202, not forwarded)
    request initialize, ping                              Forward
    request tools/list                                    Forward, the answer filtered to the allowlist
                                                            (:func:`filter_tools_answer`)
    request tools/call of a tool in the allowlist         Forward (a call: metered, recorded in the ledger)
    request tools/call of another tool (or no name)       Answer a JSON-RPC error -32602 naming the allowlist
    any other request (resources/*, prompts/*, ...)       Answer a JSON-RPC error -32601 (not offered)

The allowlist is the server's ``tools`` (every tool when unset). Refusals happen before the upstream is contacted;
an answered JSON-RPC error reaches the agent's MCP client as the call's error.

**Headers.** Every key of the server's ``headersSecretRef`` Secret is a header name and its value the header's value
(:func:`secret_headers`): a name must be an HTTP token and not one the transport owns (``Host``,
``Content-Length``, ``Mcp-Session-Id``, ...), a value a single line of at most :data:`MAX_HEADER_VALUE` bytes;
anything else stops the call with a message naming the Secret and the key, never the value. Of the agent's own
headers only :data:`AGENT_HEADERS` go upstream (its ``Authorization``, the gateway token, never does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from longshot.api import boundedjson

MAX_REQUEST_BYTES = 1024 * 1024
"""Largest JSON-RPC message an agent may send to an MCP server (the route's body limit)."""
PARSE_BUDGET = boundedjson.Budget(max_bytes=MAX_REQUEST_BYTES, max_values=50_000, max_depth=32)
"""What parsing one agent message may cost (``api.boundedjson``)."""
ANSWER_BUDGET = boundedjson.Budget(max_bytes=8 * 1024 * 1024, max_values=200_000, max_depth=64)
"""What parsing one ``tools/list`` answer may cost (its size is bounded by the gateway's response limit first)."""
MAX_HEADER_VALUE = 8192
MAX_HEADERS = 32

FORWARDED_REQUESTS = frozenset({"initialize", "ping", "tools/list", "tools/call"})
FORWARDED_NOTIFICATIONS = frozenset({"notifications/initialized", "notifications/cancelled"})
AGENT_HEADERS = ("content-type", "accept", "mcp-session-id", "mcp-protocol-version", "last-event-id")
"""The agent's request headers that go upstream (values checked by :func:`agent_headers`)."""
ANSWER_HEADERS = ("content-type", "mcp-session-id", "mcp-protocol-version")
"""The server's answer headers that reach the agent."""
RESERVED_HEADERS = frozenset({
    "host", "content-length", "content-type", "content-encoding", "transfer-encoding", "connection", "keep-alive",
    "te", "trailer", "upgrade", "expect", "accept", "accept-encoding", "proxy-authorization", "proxy-connection",
    "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "cookie",
    "mcp-session-id", "mcp-protocol-version", "last-event-id", "traceparent", "tracestate"})
"""Header names a Secret may not set: the transport's, the session's and the proxy's own."""

_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")
_VISIBLE = re.compile(r"^[\x21-\x7e]{1,256}$")
_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")

Method = Literal["initialize", "ping", "tools/list", "tools/call", "notification", "other"]
METHODS: tuple[Method, ...] = ("initialize", "ping", "tools/list", "tools/call", "notification", "other")
"""The metric label of a message's method (bounded: a server's method names are not labels)."""


@dataclass(frozen=True)
class Server:
    """One entry of ``spec.agent.mcpServers``, as the gateway reads it from the build's spec."""

    name: str
    url: str
    secret: str | None
    tools: frozenset[str] | None
    roles: frozenset[str] | None

    def allows(self, tool: str) -> bool:
        return self.tools is None or tool in self.tools


def servers(agent: Mapping[str, Any]) -> dict[str, Server]:
    """The servers of a build's ``spec.agent`` (wire form, as admitted by the CRD's schema), by name."""
    out: dict[str, Server] = {}
    for item in agent.get("mcpServers") or []:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            continue
        ref = item.get("headersSecretRef") or {}
        tools, roles = item.get("tools"), item.get("roles")
        out[item["name"]] = Server(
            name=item["name"], url=str(item.get("url") or ""),
            secret=str(ref["name"]) if isinstance(ref, Mapping) and ref.get("name") else None,
            tools=frozenset(str(t) for t in tools) if isinstance(tools, list) else None,
            roles=frozenset(str(r) for r in roles) if isinstance(roles, list) else None)
    return out


def for_role(agent: Mapping[str, Any], role: str) -> list[Server]:
    """The servers an attempt of ``role`` gets, in the spec's order."""
    return [s for s in servers(agent).values() if s.roles is None or role in s.roles]


# --- a request ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forward:
    """Send the message upstream."""

    server: Server
    method: Method
    id: Any
    tool: str | None = None
    filter_tools: bool = False
    """A ``tools/list``: the answer is filtered to the server's allowlist."""


@dataclass(frozen=True)
class Answer:
    """Answer the agent without contacting the server: a JSON-RPC error (``body``), or 202 for a dropped
    notification (``body`` None)."""

    status: int
    body: dict[str, Any] | None
    method: Method
    tool: str | None = None


@dataclass(frozen=True)
class Refuse:
    """Refuse the request (an HTTP error naming the cause)."""

    status: int
    message: str


Decision = Forward | Answer | Refuse


def find(agent: Mapping[str, Any], role: str, name: str) -> Server | Refuse:
    """The server ``name`` of the build, for an attempt of ``role`` (the first two rows of the table)."""
    known = servers(agent)
    server = known.get(name)
    if server is None:
        listed = ", ".join(sorted(known)) or "none"
        return Refuse(404, f"this build has no MCP server {name[:63]!r} in spec.agent.mcpServers (it has: {listed})")
    if server.roles is not None and role not in server.roles:
        return Refuse(403, f"MCP server {name!r} is for the roles {', '.join(sorted(server.roles))} "
                           f"(spec.agent.mcpServers[].roles), not {role}")
    return server


def decide(server: Server, body: bytes | bytearray) -> Decision:
    """What to do with one JSON-RPC message an agent sends to ``server`` (the rest of the table)."""
    try:
        message = boundedjson.loads(body, PARSE_BUDGET)
    except boundedjson.Refused as e:
        return Refuse(400, f"the body must be one JSON-RPC message (a JSON object) of at most {MAX_REQUEST_BYTES} "
                           f"bytes: {e}")
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return Refuse(400, 'the body must be one JSON-RPC 2.0 message: {"jsonrpc": "2.0", "method": ..., ...} '
                           "(batches are not forwarded)")
    method = message.get("method")
    if not isinstance(method, str):
        return Refuse(400, "longshot-gateway forwards requests and notifications only: the MCP servers it serves "
                           "send agents no request to answer (no sampling, elicitation or roots)")
    if "id" not in message:
        if method in FORWARDED_NOTIFICATIONS:
            return Forward(server, "notification", None)
        return Answer(202, None, "notification")
    ident = message.get("id")
    if not isinstance(ident, str | int) or isinstance(ident, bool):
        return Refuse(400, "a JSON-RPC request's id must be a string or an integer")
    if method not in FORWARDED_REQUESTS:
        offered = "initialize, ping, tools/list, tools/call"
        return Answer(200, error(ident, -32601, f"longshot-gateway offers the tools of MCP server {server.name!r} "
                                                f"only ({offered}), not {method[:100]!r}"), "other")
    if method != "tools/call":
        return Forward(server, method, ident, filter_tools=method == "tools/list")  # type: ignore[arg-type]
    params = message.get("params")
    tool = params.get("name") if isinstance(params, dict) else None
    if not isinstance(tool, str) or not tool:
        return Answer(200, error(ident, -32602, "tools/call needs params.name"), "tools/call")
    if not server.allows(tool):
        allowed = ", ".join(sorted(server.tools or ())) or "none"
        return Answer(200, error(ident, -32602, f"longshot-gateway: tool {tool[:128]!r} of MCP server {server.name!r} "
                                                f"is not in its allowlist (spec.agent.mcpServers[].tools: {allowed})"),
                      "tools/call", tool[:128])
    return Forward(server, "tools/call", ident, tool=tool)


def error(ident: Any, code: int, message: str) -> dict[str, Any]:
    """A JSON-RPC error response."""
    return {"jsonrpc": "2.0", "id": ident, "error": {"code": code, "message": message}}


# --- headers -----------------------------------------------------------------------------------------------


class HeaderError(ValueError):
    """A header Secret that cannot be used; the message names the Secret's key, never its value."""


def secret_headers(secret_name: str, data: Mapping[str, Any]) -> dict[str, str]:
    """The headers of a ``headersSecretRef`` Secret (its decoded data): each key a header name, its value the
    header's value. Raises :class:`HeaderError` naming the key (and what to do) for one that cannot be sent."""
    if len(data) > MAX_HEADERS:
        raise HeaderError(f"Secret {secret_name} has {len(data)} keys; an MCP server's headers are at most "
                          f"{MAX_HEADERS}")
    out: dict[str, str] = {}
    for key, value in sorted(data.items()):
        where = f"Secret {secret_name}, key {key[:128]!r}"
        if not _TOKEN.match(key):
            raise HeaderError(f"{where}: a header name is letters, digits and !#$%&'*+.^_`|~- (for example "
                              "Authorization)")
        if key.lower() in RESERVED_HEADERS:
            raise HeaderError(f"{where}: longshot-gateway sets this header itself; remove the key")
        if key.lower() in {k.lower() for k in out}:
            raise HeaderError(f"{where}: the header is named twice (header names ignore case)")
        if not isinstance(value, str) or len(value.encode()) > MAX_HEADER_VALUE or not _VALUE.match(value) \
                or value != value.strip():
            raise HeaderError(f"{where}: the value must be one line of at most {MAX_HEADER_VALUE} bytes, without "
                              "leading or trailing spaces")
        out[key] = value
    return out


def agent_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The agent's headers that go upstream (:data:`AGENT_HEADERS`), each a single visible-ASCII value."""
    out: dict[str, str] = {}
    for name, value in headers:
        low = name.lower()
        if low in AGENT_HEADERS and low not in out and len(value) <= 1024 and _VALUE.match(value) \
                and (low not in ("mcp-session-id", "last-event-id") or _VISIBLE.match(value)):
            out[low] = value
    return out


# --- the tools/list answer ---------------------------------------------------------------------------------


def _keep(result: Any, server: Server) -> Any:
    if server.tools is None or not isinstance(result, dict) or not isinstance(result.get("tools"), list):
        return result
    return {**result, "tools": [t for t in result["tools"]
                                if isinstance(t, dict) and isinstance(t.get("name"), str) and server.allows(t["name"])]}


def _filtered(message: Any, ident: Any, server: Server) -> Any:
    if isinstance(message, dict) and message.get("id") == ident and "result" in message:
        return {**message, "result": _keep(message["result"], server)}
    return message


def filter_tools_answer(body: bytes, content_type: str, ident: Any, server: Server) -> bytes | None:
    """A ``tools/list`` answer (JSON or a server-sent-event stream) with the tools outside ``server``'s allowlist
    taken out of the response to request ``ident``; None when the answer cannot be read (the gateway then refuses
    it rather than pass an unfiltered list)."""
    if server.tools is None:
        return body
    if "text/event-stream" in content_type:
        events = body.replace(b"\r\n", b"\n").split(b"\n\n")
        out: list[bytes] = []
        for event in events:
            lines = event.split(b"\n")
            data = b"\n".join(line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:"))
            if not data:
                out.append(event)
                continue
            try:
                message = boundedjson.loads(data, ANSWER_BUDGET)
            except boundedjson.Refused:
                return None
            kept = [line for line in lines if not line.startswith(b"data:")]
            kept.append(b"data: " + _dumps(_filtered(message, ident, server)))
            out.append(b"\n".join(kept))
        return b"\n\n".join(out)
    try:
        message = boundedjson.loads(body, ANSWER_BUDGET)
    except boundedjson.Refused:
        return None
    return _dumps(_filtered(message, ident, server))


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

