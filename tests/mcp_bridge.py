"""A streamable-HTTP bridge in front of a real stdio MCP server (``mcp-server-time`` from PyPI), for the MCP tests.

The reference MCP servers speak stdio; a build's ``spec.agent.mcpServers`` are remote (streamable HTTP). This
bridge, on the official SDK (``mcp`` 2.x: its low-level ``Server`` and ``Client``), serves the stdio server's
tools over streamable HTTP exactly as it lists and answers them, and stands for the team's server's front door: it
requires a header (``--require NAME=VALUE``: 401 without it) and appends every request's value of that header, and
the JSON-RPC method and tool it carried, to ``--seen`` (one JSON line each), so a test can show what reached the
server and what did not.

    python tests/mcp_bridge.py --port 0 --port-file P --require X-Team-Token=s3cret --seen S -- mcp-server-time
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from mcp import Client, StdioServerParameters, types
from mcp.server.lowlevel.server import Server
from mcp.server.transport_security import TransportSecuritySettings


class Door:
    """ASGI middleware: the required header, and a record of what came in."""

    def __init__(self, app: Any, header: str, value: str, seen: Path) -> None:
        self.app, self.header, self.value, self.seen = app, header.lower().encode(), value, seen

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        got = dict(scope["headers"]).get(self.header, b"").decode("latin-1")
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            rpc = json.loads(body) if body else {}
        except ValueError:
            rpc = {}
        rpc = rpc if isinstance(rpc, dict) else {}
        params = rpc.get("params") if isinstance(rpc.get("params"), dict) else {}
        with self.seen.open("a") as f:
            f.write(json.dumps({"method": scope["method"], "header": got, "rpc": rpc.get("method"),
                                "tool": params.get("name"),
                                "authorization": dict(scope["headers"]).get(b"authorization", b"").decode()}) + "\n")
        if got != self.value:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"error": "missing or wrong team token"}'})
            return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def serve(args: argparse.Namespace) -> None:
    header, _, value = args.require.partition("=")
    params = StdioServerParameters(command=args.command[0], args=args.command[1:])
    async with Client(params) as upstream:

        async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
            return await upstream.list_tools()

        async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
            return await upstream.call_tool(params.name, params.arguments or {})

        server: Server[Any] = Server("bridge", on_list_tools=list_tools, on_call_tool=call_tool)
        app = server.streamable_http_app(
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
        config = uvicorn.Config(Door(app, header, value, Path(args.seen)), host=args.host, port=args.port,
                                log_level="warning", lifespan="on")
        web = uvicorn.Server(config)
        task = asyncio.create_task(web.serve())
        while not web.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        port = web.servers[0].sockets[0].getsockname()[1]
        Path(args.port_file).write_text(str(port))
        await task


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--require", required=True)
    parser.add_argument("--seen", required=True)
    parser.add_argument("command", nargs="+")
    asyncio.run(serve(parser.parse_args()))
    return 0


@dataclass
class Bridge:
    url: str
    """The streamable-HTTP endpoint (``http://HOST:PORT/mcp``)."""
    seen_file: Path

    def seen(self) -> list[dict[str, Any]]:
        """What reached the server: one record per HTTP request (method, header value, JSON-RPC method, tool)."""
        text = self.seen_file.read_text() if self.seen_file.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line]


TIME_SERVER = str(Path(sys.executable).parent / "mcp-server-time")
"""The reference server ``mcp-server-time`` (PyPI, the ``test`` extra), installed next to this interpreter."""


@contextlib.contextmanager
def running(workdir: Path, header: str, value: str, *, host: str = "127.0.0.1",
            command: tuple[str, ...] = (TIME_SERVER,)) -> Iterator[Bridge]:
    """The bridge in front of ``command`` (the time server by default), as a process, until the block ends."""
    from longshot_testing import wait_for

    workdir.mkdir(parents=True, exist_ok=True)
    port_file, seen = workdir / "bridge.port", workdir / "bridge.seen"
    log = (workdir / "bridge.log").open("wb")
    proc = subprocess.Popen([sys.executable, __file__, "--host", host, "--port-file", str(port_file),
                             "--require", f"{header}={value}", "--seen", str(seen), "--", *command],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        def started() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the MCP bridge exited: {(workdir / 'bridge.log').read_text()[-2000:]}")
            return port_file.exists() and bool(port_file.read_text().strip())

        wait_for(started, 60, "the MCP bridge to listen")
        yield Bridge(f"http://{host}:{port_file.read_text().strip()}/mcp", seen)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
