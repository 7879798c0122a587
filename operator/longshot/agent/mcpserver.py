"""``python -m longshot mcp``: an MCP server (stdio) with the delegation tools, for command-backend agents.

A CLI agent run by the command backend (Claude Code, aider, ...) in an agent Pod gets the same ``spawn_task`` and
``await_tasks`` tools a native worker has, by starting this server as an MCP server of its own (docs/planning.md,
Delegation, has the configuration). The server holds no credential: it forwards every call to longshot-gateway
(``LONGSHOT_GATEWAY_URL``, which the command backend sets) with the Pod's token (read per call from
``LONGSHOT_GATEWAY_TOKEN_FILE``, else the Pod's projected token; ``LONGSHOT_API_KEY`` when no file is there), which
names the attempt: children are asked for the Pod's own task, and the build's ``spec.delegation`` bounds them.

Built on the official SDK (the ``mcp`` package, 2.x: ``MCPServer``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from longshot.agent import delegation, errors
from longshot.agent import gateway as agent_gateway

INSTRUCTIONS = ("Longshot delegation: spawn_task asks for a child task (another agent works on it in parallel on "
                "its own branch; it merges into the target before your work does); await_tasks waits until the "
                "named children are done and tells you how each ended.")


def client_from_env(env: Mapping[str, str]) -> delegation.Client:
    """The gateway client of this Pod's attempt (:class:`longshot.agent.errors.ConfigError` without a gateway)."""
    gw = agent_gateway.Gateway.from_env(env)
    if gw is None:
        raise errors.ConfigError(f"the MCP server needs {agent_gateway.URL_ENV}: it runs in a Longshot agent Pod")
    fallback = (env.get("LONGSHOT_API_KEY") or "").strip()

    def token() -> str:
        if fallback and not Path(gw.token_file).exists():
            return fallback
        return gw.token()

    return delegation.Client(gw.url, token)


def make_server(client: delegation.Delegation) -> MCPServer:
    """The MCP server whose tools forward to ``client`` (the gateway, or a fake in tests)."""
    server = MCPServer("longshot", instructions=INSTRUCTIONS)

    @server.tool(name="spawn_task", description=delegation.SPAWN_SCHEMA["description"])
    async def spawn_task(name: str, prompt: str, scope: list[str] | None = None, model: str | None = None) -> str:
        args: dict[str, object] = {"name": name, "prompt": prompt}
        if scope is not None:
            args["scope"] = scope
        if model is not None:  # the name of one of the build's models; the gateway refuses any other
            args["model"] = model
        try:
            return await anyio.to_thread.run_sync(delegation.spawn, client, args)
        except errors.ToolError as e:
            raise ToolError(str(e)) from None

    @server.tool(name="await_tasks", description=delegation.AWAIT_SCHEMA["description"])
    async def await_tasks(names: list[str], timeout: float = delegation.DEFAULT_TIMEOUT) -> str:
        try:
            return await anyio.to_thread.run_sync(lambda: delegation.wait(client, {"names": names, "timeout": timeout}))
        except errors.ToolError as e:
            raise ToolError(str(e)) from None

    return server


def main() -> int:
    """Serve on stdin/stdout until the client closes them."""
    try:
        client = client_from_env(os.environ)
    except errors.AgentFailure as e:
        print(f"longshot mcp: {e}", file=sys.stderr)
        return 2
    anyio.run(make_server(client).run_stdio_async)
    return 0
