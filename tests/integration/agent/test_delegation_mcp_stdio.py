"""``python -m longshot mcp`` as a real process: the MCP server of the delegation tools over stdio, against a
stand-in for the gateway's delegation routes (the tools themselves: tests/unit/agent/test_delegation_tools.py)."""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.integration


def done(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "task": f"p-{name}", "phase": "Succeeded", "done": True, "merged": True, **kw}


class _Routes(http.server.BaseHTTPRequestHandler):
    """A stand-in for longshot-gateway's two delegation routes (checks the token, records the spawn)."""

    spawned: ClassVar[list[dict[str, Any]]] = []

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        if self.headers.get("Authorization") != "Bearer pod-token":
            return self._answer(401, {"error": "no token"})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body["tasks"][0]["name"] == "off":
            return self._answer(403, {"error": "delegation is off: spec.delegation.enabled is false"})
        self.spawned.extend(body["tasks"])
        return self._answer(202, {"accepted": [t["name"] for t in body["tasks"]], "children": []})

    def do_GET(self) -> None:
        self._answer(200, {"requested": [t["name"] for t in self.spawned],
                           "children": [done(t["name"]) for t in self.spawned]})

    def log_message(self, *args: Any) -> None:
        pass


def test_python_m_longshot_mcp_serves_the_tools_over_stdio_through_the_gateway(tmp_path: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Routes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token = tmp_path / "token"
    token.write_text("pod-token")
    env = {"LONGSHOT_GATEWAY_URL": f"http://127.0.0.1:{server.server_address[1]}",
           "LONGSHOT_GATEWAY_TOKEN_FILE": str(token), "PYTHONPATH": os.pathsep.join(sys.path)}

    async def session() -> tuple[Any, Any, Any]:
        params = StdioServerParameters(command=sys.executable, args=["-m", "longshot", "mcp"], env=env)
        with anyio.fail_after(60):
            async with Client(params) as client:
                spawned = await client.call_tool("spawn_task", {"name": "api", "prompt": "Add the API"})
                awaited = await client.call_tool("await_tasks", {"names": ["api"], "timeout": 5})
                refused = await client.call_tool("spawn_task", {"name": "off", "prompt": "p"})
                return spawned, awaited, refused

    try:
        spawned, awaited, refused = anyio.run(session)
    finally:
        server.shutdown()
        server.server_close()
    assert not spawned.is_error and _Routes.spawned == [{"name": "api", "prompt": "Add the API"}]
    assert "- api: Succeeded, merged" in awaited.content[0].text
    assert refused.is_error and "refused (403)" in refused.content[0].text
    assert "spec.delegation.enabled" in refused.content[0].text
