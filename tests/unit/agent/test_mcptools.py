"""The build's MCP servers as the model's tools (``longshot.agent.mcptools``): names the model APIs accept, the
answer found in JSON or server-sent events, the scripted ``mcp`` step; a server behind the same interface as the real
one (``Server.call``), no network."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from longshot.agent import events, mcptools, redact, sandbox, tools
from longshot.agent import gateway as agent_gateway
from longshot.agent.backends import scripted

pytestmark = pytest.mark.unit


class FakeServer(mcptools.Server):
    """A server whose tools answer from a table (what the gateway would relay)."""

    def __init__(self, name: str, answers: dict[str, tuple[str, bool]]) -> None:
        super().__init__(name, agent_gateway.Gateway("http://gw", Path("/nonexistent")))
        self.tools = {t: {"name": t, "description": f"the {t} tool",
                          "inputSchema": {"type": "object", "properties": {"timezone": {"type": "string"}}}}
                      for t in answers}
        self.answers = answers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, tool: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        self.calls.append((tool, arguments))
        return self.answers[tool]


def box(tmp_path: Path, *servers: mcptools.Server) -> tools.Toolbox:
    ev = events.Events(redact.Redactor([]), stream=io.StringIO())
    return tools.Toolbox(sandbox.Sandbox(tmp_path), ev, "worker", mcp=mcptools.McpTools(list(servers), ev))


def test_server_tools_reach_the_model_as_server__tool_next_to_the_built_in_ones(tmp_path: Path) -> None:
    time = FakeServer("time", {"get_current_time": ('{"timezone": "UTC"}', False), "bad.name": ("", False)})
    toolbox = box(tmp_path, time)
    offered = tools.specs("worker", mcp=toolbox.mcp_specs())
    assert "time__get_current_time" in offered and "read_file" in offered and list(offered)[-1] == "finish"
    assert offered["time__get_current_time"]["description"] == "[MCP server time] the get_current_time tool"
    assert offered["time__get_current_time"]["parameters"]["properties"] == {"timezone": {"type": "string"}}
    assert not any("bad" in name for name in offered)  # a name the model APIs refuse is left out
    # a server cannot shadow a built-in tool or finish
    assert tools.specs("worker", mcp={"finish": {"description": "x", "parameters": {}}})["finish"] != {
        "description": "x", "parameters": {}}
    both = [toolbox.call("time__get_current_time", {"timezone": "UTC"}), toolbox.call("time.get_current_time", {})]
    assert [r.content for r in both] == ['{"timezone": "UTC"}'] * 2 and time.calls[0] == (
        "get_current_time", {"timezone": "UTC"})
    unknown = toolbox.call("time.convert_time", {})
    assert unknown.is_error and "unknown tool" in unknown.content


def test_a_personas_allowlist_names_mcp_tools_as_server_dot_tool(tmp_path: Path) -> None:
    time = FakeServer("time", {"get_current_time": ("now", False), "convert_time": ("later", False)})
    git = FakeServer("git", {"git_log": ("log", False)})
    ev = events.Events(redact.Redactor([]), stream=io.StringIO())
    toolbox = tools.Toolbox(sandbox.Sandbox(tmp_path), ev, "worker", mcp=mcptools.McpTools([time, git], ev),
                            allow=["read_file", "time.get_current_time", "git.*"])
    offered = toolbox.offered()
    assert {"read_file", "time__get_current_time", "git__git_log", "finish"} <= set(offered)
    assert "time__convert_time" not in offered and "write_file" not in offered
    assert toolbox.call("time.get_current_time", {}).content == "now"
    refused = toolbox.call("time__convert_time", {})  # not offered: never reaches the server
    assert refused.is_error and "not offered" in refused.content and ("convert_time", {}) not in time.calls


def test_a_tool_error_reaches_the_model_as_an_error(tmp_path: Path) -> None:
    toolbox = box(tmp_path, FakeServer("tickets", {"get": ("no such ticket", True)}))
    result = toolbox.call("tickets__get", {})
    assert result.is_error and "tickets.get: no such ticket" in result.content


def test_the_scripted_mcp_step_saves_the_result_in_the_checkout(tmp_path: Path) -> None:
    toolbox = box(tmp_path, FakeServer("time", {"get_current_time": ('{"timezone": "UTC"}', False)}))
    tool, args, check = scripted.parse_step(
        {"mcp": {"tool": "time.get_current_time", "arguments": {"timezone": "UTC"}, "save": "now.json"},
         "check": True}, 0)
    assert (tool, check) == ("mcp", True)
    result = scripted._mcp_step(toolbox, args, 0)
    assert not result.is_error and json.loads((tmp_path / "now.json").read_text()) == {"timezone": "UTC"}


@pytest.mark.parametrize(("body", "content_type"), [
    (b'{"jsonrpc": "2.0", "id": 3, "result": {"ok": true}}', "application/json"),
    (b'event: message\r\ndata: {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}}\r\n\r\n'
     b'event: message\r\ndata: {"jsonrpc": "2.0", "id": 3, "result": {"ok": true}}\r\n\r\n', "text/event-stream"),
])
def test_the_answer_is_found_in_json_and_in_events(body: bytes, content_type: str) -> None:
    assert mcptools._find_answer(body, content_type, 3) == {"jsonrpc": "2.0", "id": 3, "result": {"ok": True}}
    assert mcptools._find_answer(body, content_type, 4) is None
    assert mcptools._find_answer(b"[" * 100_000, content_type, 3) is None
