"""The delegation tools of a worker (``spawn_task``, ``await_tasks``) and the MCP server that offers them to CLI
agents, against a fake gateway behind the same interface as the real client (``longshot.agent.delegation``)."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from longshot.agent import delegation, errors, events, mcpserver, redact, sandbox, tools
from longshot.agent.backends import scripted

pytestmark = pytest.mark.unit


class FakeGateway:
    """The gateway's delegation routes as the agent sees them: records spawns, answers children; the operator's
    ``status.children`` is ``children``, which a test changes as the operator would."""

    def __init__(self, *, refuse: str | None = None) -> None:
        self.requested: list[dict[str, Any]] = []
        self.children_by_name: dict[str, dict[str, Any]] = {}
        self.refuse = refuse
        self.polls = 0

    def spawn(self, tasks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if self.refuse:
            raise errors.ToolError(f"longshot-gateway refused (403): {self.refuse}")
        for t in tasks:
            if all(r["name"] != t["name"] for r in self.requested):
                self.requested.append(dict(t))
        return {"accepted": [t["name"] for t in tasks], "children": []}

    def children(self) -> dict[str, Any]:
        self.polls += 1
        return {"children": list(self.children_by_name.values()), "requested": [r["name"] for r in self.requested]}


def done(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "task": f"p-{name}", "phase": "Succeeded", "done": True, "merged": True, **kw}


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_await_polls_until_every_named_child_is_done():
    gw = FakeGateway()
    delegation.spawn(gw, {"name": "a", "prompt": "p"})
    delegation.spawn(gw, {"name": "b", "prompt": "p", "scope": ["b/**"]})
    assert gw.requested[1] == {"name": "b", "prompt": "p", "scope": ["b/**"]}
    clock = Clock()

    def sleep(s: float) -> None:
        clock.sleep(s)
        if gw.polls == 2:
            gw.children_by_name["a"] = done("a", summary="did a")
        if gw.polls == 3:
            gw.children_by_name["b"] = {"name": "b", "phase": "Refused", "done": True,
                                        "reason": "spec.planner.maxTotalTasks (3)"}

    text = delegation.wait(gw, {"names": ["a", "b"], "timeout": 60}, sleep=sleep, clock=clock)
    assert text.startswith("every child is done")
    assert "- a: Succeeded, merged: did a" in text and "- b: Refused (spec.planner.maxTotalTasks (3))" in text


def test_await_returns_at_its_timeout_with_the_children_still_running():
    gw = FakeGateway()
    delegation.spawn(gw, {"name": "a", "prompt": "p"})
    gw.children_by_name["a"] = {"name": "a", "phase": "Running", "done": False}
    clock = Clock()
    text = delegation.wait(gw, {"names": ["a"], "timeout": 10}, sleep=clock.sleep, clock=clock)
    assert text.startswith("the timeout is up") and "- a: Running" in text
    assert clock.t == 10


def test_await_of_a_child_never_spawned_is_a_tool_error():
    with pytest.raises(errors.ToolError, match="no child named x"):
        delegation.wait(FakeGateway(), {"names": ["x"]})
    with pytest.raises(errors.ToolError, match="names"):
        delegation.wait(FakeGateway(), {"names": []})


def toolbox(tmp_path: Path, role: str, gw: FakeGateway | None) -> tools.Toolbox:
    ev = events.Events(redact.Redactor([]), stream=io.StringIO())
    return tools.Toolbox(sandbox.Sandbox(tmp_path), ev, role, delegation=gw)


def test_only_a_worker_that_may_delegate_gets_the_tools(tmp_path: Path):
    assert {"spawn_task", "await_tasks"} <= set(tools.specs("worker", delegate=True))
    assert "spawn_task" not in tools.specs("worker")
    assert "spawn_task" not in tools.specs("planner", delegate=True)
    assert toolbox(tmp_path, "fixer", FakeGateway()).delegation is None
    result = toolbox(tmp_path, "worker", None).call("spawn_task", {"name": "a", "prompt": "p"})
    assert result.is_error and "unknown tool" in result.content


def test_the_scripted_agent_spawns_and_awaits(tmp_path: Path):
    gw = FakeGateway()
    box = toolbox(tmp_path, "worker", gw)
    steps = [{"spawn": {"name": "a", "prompt": "do a"}}, {"await": {"names": ["a"], "timeout": 0}}]
    for i, step in enumerate(steps):
        tool, args, _ = scripted.parse_step(step, i)
        result = box.call(tool, args)
        assert not result.is_error, result.content
    assert [r["name"] for r in gw.requested] == ["a"]
    assert "the timeout is up" in result.content
    refused = toolbox(tmp_path, "worker", FakeGateway(refuse="spec.delegation.enabled is false"))
    r = refused.call("spawn_task", {"name": "a", "prompt": "p"})
    assert r.is_error and "spec.delegation.enabled" in r.content


def test_the_mcp_server_offers_the_same_tools_and_forwards_to_the_gateway():
    gw = FakeGateway()
    gw.children_by_name["api"] = done("api", summary="the API")

    async def session() -> tuple[Any, Any, Any, Any]:
        async with Client(mcpserver.make_server(gw)) as client:
            listed = await client.list_tools()
            spawned = await client.call_tool("spawn_task", {"name": "api", "prompt": "Add the API",
                                                            "scope": ["api/**"]})
            awaited = await client.call_tool("await_tasks", {"names": ["api"], "timeout": 5})
            unknown = await client.call_tool("await_tasks", {"names": ["nope"], "timeout": 5})
            return listed, spawned, awaited, unknown

    listed, spawned, awaited, unknown = anyio.run(session)
    assert {t.name for t in listed.tools} == {"spawn_task", "await_tasks"}
    schema = next(t for t in listed.tools if t.name == "spawn_task").input_schema
    assert set(schema["required"]) == {"name", "prompt"}
    assert not spawned.is_error and "asked for child task 'api'" in spawned.content[0].text
    assert gw.requested == [{"name": "api", "prompt": "Add the API", "scope": ["api/**"]}]
    assert not awaited.is_error and "- api: Succeeded, merged: the API" in awaited.content[0].text
    assert unknown.is_error and "no child named nope" in unknown.content[0].text


def test_the_mcp_server_refusals_reach_the_agent():
    gw = FakeGateway(refuse="delegation is off for this build: spec.delegation.enabled is false")

    async def session() -> Any:
        async with Client(mcpserver.make_server(gw)) as client:
            return await client.call_tool("spawn_task", {"name": "api", "prompt": "p"})

    result = anyio.run(session)
    assert result.is_error and "spec.delegation.enabled" in result.content[0].text


def test_the_mcp_server_reads_the_gateway_and_token_from_the_pods_environment(tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    client = mcpserver.client_from_env({"LONGSHOT_GATEWAY_URL": "http://gw:8080/",
                                        "LONGSHOT_GATEWAY_TOKEN_FILE": str(token)})
    assert client.url == "http://gw:8080" and client.token() == "tok-1"
    token.write_text("tok-2")  # rotated by the kubelet: read again
    assert client.token() == "tok-2"
    fallback = mcpserver.client_from_env({"LONGSHOT_GATEWAY_URL": "http://gw", "LONGSHOT_API_KEY": "k",
                                          "LONGSHOT_GATEWAY_TOKEN_FILE": str(tmp_path / "none")})
    assert fallback.token() == "k"
    with pytest.raises(errors.ConfigError, match="LONGSHOT_GATEWAY_URL"):
        mcpserver.client_from_env({})
    assert json.dumps(delegation.SPAWN_SCHEMA)  # plain JSON, as backends send it
