"""A build's MCP server on the real cluster (issue 54): a scripted agent Pod calls a tool of a real MCP server
(``mcp-server-time`` from PyPI, behind the streamable-HTTP bridge of tests/mcp_bridge.py on this host) through
longshot-gateway; the gateway adds the team's header from the build's Secret (the server refuses any request without
it), and the tool's result, saved by the agent in the checkout, merges into main and the build finalizes Passed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

import mcp_bridge  # tests/mcp_bridge.py, as the integration tier uses it

from .conftest import apply, build_request, git_allow, host_address, install_chart, kget, script_configmap, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

HEADER = "X-Team-Token"
TEAM_TOKEN = "e2e-team-token-5d1c0b9a8e7f"

SCRIPT = json.dumps({
    "roles": {"planner": [{"finish": {"summary": "one task", "tasks": [
        {"name": "clock", "description": "Record the current UTC time from the team's time server",
         "scope": ["clock.json"]}]}}]},
    "tasks": {"clock": [
        {"mcp": {"tool": "time.get_current_time", "arguments": {"timezone": "UTC"}, "save": "clock.json"},
         "check": True},
        {"finish": "clock.json from the time server"}]},
    "steps": [{"finish": {"summary": "nothing to do"}}],
})


@pytest.fixture
def time_server(cluster: Any, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The time server on this host, where Pods reach it (the address the cluster's git server listens on)."""
    with mcp_bridge.running(tmp_path / "bridge", HEADER, TEAM_TOKEN, host=host_address(cluster)) as bridge:
        yield bridge


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


def test_a_scripted_agent_pod_calls_a_real_mcp_server_through_the_gateway_and_its_result_merges(  # type: ignore[no-untyped-def]
        operator, cluster, kubectl, namespace, git_repo, time_server) -> None:
    host, port = time_server.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    # the platform team lets the gateway reach the team's MCP server: an egress.allow entry for mcp on its port
    allow = [*git_allow(cluster), {"cidr": f"{host}/32", "purposes": ["mcp"], "ports": [int(port)]}]
    install_chart(cluster, extra=["--set-json", f"egress.allow={json.dumps(allow)}"])
    try:
        kubectl("-n", namespace, "create", "secret", "generic", "time-headers",
                f"--from-literal={HEADER}={TEAM_TOKEN}")
        br = build_request("mcp", git_repo, script="script")
        br["spec"]["agent"]["mcpServers"] = [{"name": "time", "url": time_server.url,
                                              "headersSecretRef": {"name": "time-headers"},
                                              "tools": ["get_current_time"], "roles": ["worker"]}]
        apply(kubectl, namespace, script_configmap("script", SCRIPT), br)

        def finalized() -> dict[str, Any] | None:
            c = condition(kget(kubectl, "-n", namespace, "br", "mcp"), "Finalized")
            return c if c.get("status") in ("True", "False") else None

        final = wait_for(finalized, 900, "BuildRequest mcp to be finalized", interval=2)
        assert final["status"] == "True" and final["reason"] == "Passed", (
            final, kget(kubectl, "-n", namespace, "agenttask", "mcp-clock"))
    finally:
        install_chart(cluster)  # the session's egress values again
    # the tool's result, as the agent saved it, is on main
    bare = str(cluster.git_root / f"{namespace}.git")
    saved = json.loads(subprocess.run(["git", "--git-dir", bare, "show", "main:clock.json"], check=True,
                                      capture_output=True, text=True).stdout)
    assert saved["timezone"] == "UTC" and saved["datetime"][:2] == "20", saved
    # the server saw the team's header on every request (it answers 401 without), and one tools/call
    seen = time_server.seen()
    assert [r["tool"] for r in seen if r["rpc"] == "tools/call"] == ["get_current_time"], seen
    assert {r["header"] for r in seen} == {TEAM_TOKEN} and all(r["authorization"] == "" for r in seen)
    # the agent's Pod never held it: the worker's attempt ran with no such value in its spec
    task = kget(kubectl, "-n", namespace, "agenttask", "mcp-clock") or {}
    attempts = (task.get("status") or {}).get("attempts") or []
    assert attempts and attempts[-1].get("exitCode") == 0, attempts
    pod = kget(kubectl, "-n", namespace, "pod", attempts[-1]["pod"])
    if pod is not None:
        assert TEAM_TOKEN not in json.dumps(pod) and "time-headers" not in json.dumps(pod["spec"])
