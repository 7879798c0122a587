"""core.mcpcalls: which MCP server an attempt reaches, which messages go to it, the Secret's headers, and the
``tools/list`` answer filtered to the allowlist (the table in the module's docstring, row by row)."""

from __future__ import annotations

import json
from typing import get_args

import pytest

from longshot.api import agenttask, buildrequest
from longshot.core import mcpcalls

AGENT = {"mcpServers": [
    {"name": "time", "url": "http://mcp.example/mcp", "headersSecretRef": {"name": "time-headers"},
     "tools": ["get_current_time"], "roles": ["worker", "fixer"]},
    {"name": "docs", "url": "https://docs.example/mcp"},
]}


def msg(method: str, ident: object = 1, **params: object) -> bytes:
    body: dict[str, object] = {"jsonrpc": "2.0", "method": method, "params": params}
    if ident is not None:
        body["id"] = ident
    return json.dumps(body).encode()


def server(name: str = "time") -> mcpcalls.Server:
    found = mcpcalls.find(AGENT, "worker", name)
    assert isinstance(found, mcpcalls.Server)
    return found


def test_the_roles_of_the_api_are_the_attempts_roles() -> None:
    assert get_args(buildrequest.AgentRole) == get_args(agenttask.Role)


def test_an_unknown_server_is_404_and_a_role_outside_the_list_403() -> None:
    unknown = mcpcalls.find(AGENT, "worker", "git")
    assert isinstance(unknown, mcpcalls.Refuse) and unknown.status == 404 and "docs, time" in unknown.message
    other = mcpcalls.find(AGENT, "planner", "time")
    assert isinstance(other, mcpcalls.Refuse) and other.status == 403 and "fixer, worker" in other.message
    assert isinstance(mcpcalls.find(AGENT, "planner", "docs"), mcpcalls.Server)  # no roles: every role
    assert [s.name for s in mcpcalls.for_role(AGENT, "planner")] == ["docs"]
    assert [s.name for s in mcpcalls.for_role(AGENT, "worker")] == ["time", "docs"]


def test_a_call_of_an_allowlisted_tool_is_forwarded_and_another_answered_with_an_error() -> None:
    ok = mcpcalls.decide(server(), msg("tools/call", 7, name="get_current_time", arguments={}))
    assert ok == mcpcalls.Forward(server(), "tools/call", 7, tool="get_current_time")
    refused = mcpcalls.decide(server(), msg("tools/call", "a", name="convert_time", arguments={}))
    assert isinstance(refused, mcpcalls.Answer) and refused.tool == "convert_time"
    assert refused.body is not None and refused.body["id"] == "a" and refused.body["error"]["code"] == -32602
    assert "not in its allowlist" in refused.body["error"]["message"]
    everything = mcpcalls.decide(server("docs"), msg("tools/call", 1, name="anything"))
    assert isinstance(everything, mcpcalls.Forward)


@pytest.mark.parametrize(("body", "kind", "status"), [
    (msg("initialize", 1), mcpcalls.Forward, None),
    (msg("ping", 2), mcpcalls.Forward, None),
    (msg("notifications/initialized", None), mcpcalls.Forward, None),
    (msg("notifications/roots/list_changed", None), mcpcalls.Answer, 202),
    (msg("resources/read", 3, uri="file:///etc/passwd"), mcpcalls.Answer, 200),
    (msg("tools/call", 4), mcpcalls.Answer, 200),
    (b'[{"jsonrpc": "2.0", "method": "ping", "id": 1}]', mcpcalls.Refuse, 400),
    (b'{"jsonrpc": "2.0", "id": 1, "result": {}}', mcpcalls.Refuse, 400),
    (b'{"jsonrpc": "2.0", "id": true, "method": "ping"}', mcpcalls.Refuse, 400),
    (b"not json", mcpcalls.Refuse, 400),
    (b"[" * 100 + b"]" * 100, mcpcalls.Refuse, 400),
])
def test_each_row_of_the_table(body: bytes, kind: type, status: int | None) -> None:
    decision = mcpcalls.decide(server(), body)
    assert isinstance(decision, kind)
    if status is not None:
        assert decision.status == status  # type: ignore[union-attr]


def test_tools_list_answers_are_filtered_to_the_allowlist_as_json_and_as_events() -> None:
    answer = {"jsonrpc": "2.0", "id": 5, "result": {"tools": [{"name": "get_current_time"}, {"name": "convert_time"}]}}
    out = mcpcalls.filter_tools_answer(json.dumps(answer).encode(), "application/json", 5, server())
    assert out is not None and [t["name"] for t in json.loads(out)["result"]["tools"]] == ["get_current_time"]
    stream = b"event: message\r\nid: e1\r\ndata: " + json.dumps(answer).encode() + b"\r\n\r\n"
    out = mcpcalls.filter_tools_answer(stream, "text/event-stream", 5, server())
    assert out is not None and b"convert_time" not in out and b"id: e1" in out and b"get_current_time" in out
    assert mcpcalls.filter_tools_answer(b"<html>", "text/html", 5, server()) is None
    assert mcpcalls.filter_tools_answer(b"anything", "text/html", 5, server("docs")) == b"anything"


def test_secret_headers_are_checked_and_errors_name_the_key_never_the_value() -> None:
    assert mcpcalls.secret_headers("s", {"Authorization": "Bearer abc", "X-Team": "a b"}) == {
        "Authorization": "Bearer abc", "X-Team": "a b"}
    for data, why in [({"Host": "evil"}, "sets this header itself"), ({"Mcp-Session-Id": "x"}, "itself"),
                      ({"bad name": "v"}, "header name"), ({"X-A": "line\r\nInjected: 1"}, "one line"),
                      ({"X-A": "v", "x-a": "w"}, "twice")]:
        with pytest.raises(mcpcalls.HeaderError, match=why) as e:
            mcpcalls.secret_headers("s", data)
        assert "evil" not in str(e.value) and "Injected" not in str(e.value)


def test_only_the_transport_headers_of_the_agent_go_upstream() -> None:
    out = mcpcalls.agent_headers([("Authorization", "Bearer gateway-token"), ("Content-Type", "application/json"),
                                  ("Accept", "application/json, text/event-stream"), ("Mcp-Session-Id", "abc"),
                                  ("X-Forwarded-For", "1.2.3.4"), ("Mcp-Session-Id", "second")])
    assert out == {"content-type": "application/json", "accept": "application/json, text/event-stream",
                   "mcp-session-id": "abc"}
