"""A build's MCP servers through the real gateway, on the real API server, against a real MCP server no one here
wrote: ``mcp-server-time`` (PyPI) behind a streamable-HTTP bridge on the official SDK (tests/mcp_bridge.py) that
requires the team's header and records what reached it.

The agent side is the official SDK's client (as a CLI agent would connect) and the real agent runner (the scripted
backend's ``mcp`` step, as a Pod runs it): the header is added by the gateway from the Secret, the server sees it,
the agent never holds it; a tool outside the allowlist is refused before it reaches the server; a role without the
server, and a server the egress policy does not allow for ``mcp``, are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from gateway_attempts import make_attempt, secret
from gateway_server import GatewayThread, settings_for
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from test_gateway_agent import PASSWORD, admin, finish, forge, refs, start_agent  # noqa: F401  (fixtures)
from test_ledger_gateway import stored

import mcp_bridge
from longshot_testing import wait_for

pytestmark = pytest.mark.integration

TEAM_TOKEN = "team-token-7b3c9d2e1f0a"
HEADER = "X-Team-Token"


@pytest.fixture
def time_server(tmp_path: Path):
    with mcp_bridge.running(tmp_path / "bridge", HEADER, TEAM_TOKEN) as bridge:
        yield bridge


def spec(url: str, **server: Any) -> dict[str, Any]:
    return {"agent": {"backend": "scripted", "mcpServers": [
        {"name": "time", "url": url, "headersSecretRef": {"name": "time-headers"}, "tools": ["get_current_time"],
         "roles": ["worker"], **server}]}}


def sdk_session(url: str, token: str, work: Any) -> Any:
    """Run ``work(client)`` in a session of the official SDK's client on ``url`` (the Pod's token as its key)."""
    async def main() -> Any:
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            with anyio.fail_after(90):
                async with Client(streamable_http_client(url, http_client=http)) as client:
                    return await work(client)

    return anyio.run(main)


def samples(gateway: Any) -> dict[str, float]:
    text = httpx.get(f"{gateway.metrics_url}/metrics", timeout=30).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_an_mcp_call_goes_through_the_gateway_with_the_header_injected_and_the_agent_never_holds_it(
        gateway, time_server, core_v1, custom, namespace):
    secret(core_v1, namespace, "time-headers", {HEADER: TEAM_TOKEN})
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=spec(time_server.url))

    async def work(client: Any) -> Any:
        listed = await client.list_tools()
        called = await client.call_tool("get_current_time", {"timezone": "UTC"})
        return listed, called

    listed, called = sdk_session(f"{gateway.url}/mcp/time", a.token, work)

    # the server's own tools, filtered to the allowlist (it also has convert_time)
    assert [t.name for t in listed.tools] == ["get_current_time"]
    assert not called.is_error
    answer = json.loads(called.content[0].text)
    assert answer["timezone"] == "UTC" and answer["datetime"][:2] == "20"
    # the server saw the Secret's header on every request, and never the agent's token
    seen = time_server.seen()
    assert {r["rpc"] for r in seen} >= {"initialize", "tools/list", "tools/call"}
    assert {r["header"] for r in seen} == {TEAM_TOKEN}
    assert all(r["authorization"] == "" for r in seen) and a.token not in json.dumps(seen)
    # the agent never holds it: not in its Pod, not in its task input
    assert TEAM_TOKEN not in json.dumps(a.pod) and "time-headers" not in json.dumps(a.pod)
    # counted on the task (the attempt's forwarded tool calls), metered (bounded labels, no secret) and recorded in
    # the attempt's ledger by the gateway
    assert a.progress(custom)["mcpCalls"] == 1
    m = samples(gateway)
    assert m['longshot_gateway_mcp_calls_total{method="tools/call",result="ok"}'] >= 1
    assert m['longshot_gateway_requests_total{result="ok",route="mcp"}'] >= 3
    assert TEAM_TOKEN not in httpx.get(f"{gateway.metrics_url}/metrics", timeout=30).text

    def recorded() -> list[dict[str, Any]] | None:
        text = stored(core_v1, namespace, "b1-t1-a1-ledger")
        calls = [e for e in map(json.loads, (text or "").splitlines()) if e["type"] == "mcp_call"]
        return calls or None

    (call,) = wait_for(recorded, 30, "the MCP call in the attempt's ledger entry")
    assert (call["source"], call["server"], call["tool"], call["status"]) == ("gateway", "time", "get_current_time",
                                                                              200)


def test_a_tool_outside_the_allowlist_is_refused_before_it_reaches_the_server(
        gateway, time_server, core_v1, custom, namespace):
    secret(core_v1, namespace, "time-headers", {HEADER: TEAM_TOKEN})
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=spec(time_server.url))

    async def work(client: Any) -> Any:
        try:
            return await client.call_tool("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                           "target_timezone": "Europe/Paris"})
        except Exception as e:  # the SDK raises the JSON-RPC error the gateway answered
            return e

    refused = sdk_session(f"{gateway.url}/mcp/time", a.token, work)
    assert isinstance(refused, Exception), refused
    assert "not in its allowlist" in str(refused) and "get_current_time" in str(refused)
    assert [r for r in time_server.seen() if r["rpc"] == "tools/call"] == []
    # the same refusal for a raw request that names the tool, whatever the client
    r = httpx.post(f"{gateway.url}/mcp/time", headers=a.headers, timeout=30, json={
        "jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "convert_time", "arguments": {}}})
    assert r.status_code == 200 and r.json()["error"]["code"] == -32602
    assert [r for r in time_server.seen() if r["rpc"] == "tools/call"] == []
    assert samples(gateway)['longshot_gateway_mcp_calls_total{method="tools/call",result="refused"}'] >= 2


def test_a_role_without_the_server_an_unknown_server_and_a_server_outside_the_egress_policy_are_refused(
        gateway, time_server, core_v1, custom, namespace, tmp_path):
    secret(core_v1, namespace, "time-headers", {HEADER: TEAM_TOKEN})
    planner = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=spec(time_server.url),
                           task="b1-plan", role="planner")
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    r = httpx.post(f"{gateway.url}/mcp/time", headers=planner.headers, json=ping, timeout=30)
    assert r.status_code == 403 and "roles worker" in r.json()["error"]["message"]
    r = httpx.post(f"{gateway.url}/mcp/git", headers=planner.headers, json=ping, timeout=30)
    assert r.status_code == 404 and "no MCP server 'git'" in r.json()["error"]["message"]
    r = httpx.post(f"{gateway.url}/mcp/time", json=ping, timeout=30)  # no token
    assert r.status_code == 401
    # the long-lived GET stream and DELETE are not served (SDK clients go on without them)
    assert httpx.get(f"{gateway.url}/mcp/time", headers=planner.headers, timeout=30).status_code == 405
    assert time_server.seen() == []
    # a gateway whose egress policy allows loopback for git and model calls, not for MCP servers
    port = int(time_server.url.rsplit(":", 1)[1].split("/")[0])
    allow = json.dumps([{"cidr": "127.0.0.0/8", "purposes": ["git", "model"], "ports": [port]}])
    settings = settings_for(namespace, tmp_path / "strict", egress_allowed_cidrs="", egress_allow=allow)
    with GatewayThread(gateway.kubeconfig, settings) as strict:
        worker = make_attempt(core_v1, custom, namespace, strict.url, build_spec=spec(time_server.url))
        r = httpx.post(f"{strict.url}/mcp/time", headers=worker.headers, json=ping, timeout=30)
    assert r.status_code == 403 and "egress" in r.json()["error"]["message"]
    assert time_server.seen() == []


def test_the_runner_offers_the_servers_tools_and_a_scripted_step_saves_a_result_on_its_branch(
        gateway, time_server, forge, core_v1, custom, namespace, tmp_path):  # noqa: F811
    secret(core_v1, namespace, "time-headers", {HEADER: TEAM_TOKEN})
    secret(core_v1, namespace, "git-token", {"username": "alice", "password": PASSWORD})
    build = {"repository": {"url": forge.url("app"), "credentialsSecret": "git-token"}, **spec(time_server.url)}
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=build)
    script = {"steps": [
        {"mcp": {"tool": "time.get_current_time", "arguments": {"timezone": "UTC"}, "save": "now.json"},
         "check": True},
        {"mcp": {"tool": "time.convert_time", "arguments": {}}},  # not offered: an error the script goes past
        {"finish": {"summary": "saved the time"}}]}
    proc, root = start_agent(a, core_v1, tmp_path, script=script)
    code, out, result = finish(proc, root)
    assert code == 0, out
    branch = f"refs/heads/longshot/{namespace}/b1/b1-t1"
    assert refs(forge)[branch] == result.commit
    saved = json.loads(admin("show", f"{result.commit}:now.json", cwd=forge.root / "app.git"))
    assert saved["timezone"] == "UTC"
    assert [r["tool"] for r in time_server.seen() if r["rpc"] == "tools/call"] == ["get_current_time"]
    assert TEAM_TOKEN not in out and "MCP server ready" in out
