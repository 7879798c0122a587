"""MCP calls through the gateway: a build's remote MCP servers (``spec.agent.mcpServers``, streamable HTTP) reached by
its agents only as ``POST /mcp/<name>``, with the headers of the server's Secret injected, the egress allowlist
(purpose ``mcp``) applied, the server's tool allowlist enforced, every call bounded in size and time, counted
(``longshot_gateway_mcp_calls_total``) and recorded in the attempt's ledger (``type: mcp_call``) and its trace.

What is forwarded is decided by ``core.mcpcalls`` (its table) before anything is connected; this module reads the
body, the Secret and the answer, and does the I/O. Per call, in order: the server and the caller's role (404, 403),
the body read under the route's limit (``max_mcp_request_bytes``, 413) and decided (400, or a JSON-RPC error
answered at once), the URL held to the egress policy (403), the Secret's headers (403 naming the Secret and key),
the upstream call under ``mcp_timeout_seconds`` (504) with its answer read up to ``max_mcp_response_bytes`` (502
beyond it), a ``tools/list`` answer filtered to the allowlist, then the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from aiohttp import web

from longshot.core import mcpcalls
from longshot.gateway import metrics
from longshot.gateway import status as gstatus
from longshot.gateway.cluster import Cluster
from longshot.gateway.identity import Caller
from longshot.gateway.settings import GatewaySettings
from longshot.net import guard as gd
from longshot.net import ingress
from longshot.net import transport as egress_transport
from longshot.runtime import kube as kubemod

log = logging.getLogger(__name__)
FIELD = "spec.agent.mcpServers[].url"


class McpProxy:
    def __init__(self, cluster: Cluster, settings: GatewaySettings, egress: gd.Guard) -> None:
        self.cluster = cluster
        self.settings = settings
        self.egress = egress
        # every upstream connection goes to an address the egress policy checked for the purpose mcp
        transport = egress_transport.AsyncGuardedTransport(
            egress, FIELD, purpose="mcp", limits=httpx.Limits(max_connections=128, max_keepalive_connections=32))
        self.client = httpx.AsyncClient(
            transport=transport, timeout=httpx.Timeout(settings.mcp_timeout_seconds, connect=10.0),
            follow_redirects=False, trust_env=False)
        self.status = gstatus.TaskStatus(cluster)
        self.on_call: Callable[[Caller, dict[str, Any]], Awaitable[None]] | None = None
        """The ledger's record of each tool call (``gateway.ledger``): server, tool, status, duration."""

    async def close(self) -> None:
        await self.client.aclose()

    async def handle(self, request: web.Request, caller: Caller, call: ingress.Call) -> tuple[web.StreamResponse, str]:
        """Answer one message an agent sends to ``/mcp/<name>``; returns the answer and the result label."""
        agent = caller.build_spec.get("agent") or {}
        found = mcpcalls.find(agent, caller.role, request.match_info["server"])
        if isinstance(found, mcpcalls.Refuse):
            return _refused(found), "forbidden" if found.status == 403 else "bad_request"
        body = await call.body()
        decision = mcpcalls.decide(found, body)
        if isinstance(decision, mcpcalls.Refuse):
            _count("other", "bad_request")
            return _refused(decision), "bad_request"
        if isinstance(decision, mcpcalls.Answer):
            result = "ok" if decision.body is None else "refused"
            _count(decision.method, result)
            if decision.method == "tools/call":
                await self._ledger(caller, {"server": found.name, "tool": decision.tool, "status": "refused",
                                            "error": "not in spec.agent.mcpServers[].tools"})
            if decision.body is None:
                return web.Response(status=202), result
            return web.json_response(decision.body, status=decision.status), result
        began = time.monotonic()
        response, result, error = await self._forward(request, caller, decision, body)
        call.release()
        _count(decision.method, result, time.monotonic() - began)
        if decision.method == "tools/call":
            record: dict[str, Any] = {"server": found.name, "tool": decision.tool, "status": response.status,
                                      "durationSeconds": round(time.monotonic() - began, 3)}
            if error:
                record["error"] = error
            try:  # the task's count of the attempt's tool calls (progress.mcpCalls); never fails the call
                await asyncio.to_thread(self.status.add_mcp_call, caller)
            except Exception as e:
                log.warning("could not count an MCP call of %s/%s: %s", caller.namespace, caller.task,
                            type(e).__name__)
            await self._ledger(caller, record)
        return response, result

    async def _forward(self, request: web.Request, caller: Caller, decision: mcpcalls.Forward,
                       body: bytes | bytearray) -> tuple[web.Response, str, str | None]:
        server = decision.server
        try:
            await self.egress.aaddresses(server.url, FIELD, purpose="mcp")
        except gd.Refused as e:
            log.warning("refused an MCP call of %s/%s to server %s: %s", caller.namespace, caller.task, server.name, e)
            return _jsonrpc(403, decision, f"longshot-gateway: {e}"), "forbidden", "egress refused"
        try:
            headers = await self._secret_headers(caller, server)
        except mcpcalls.HeaderError as e:
            return _jsonrpc(403, decision, f"longshot-gateway: MCP server {server.name!r}: {e}"), "forbidden", \
                "header secret"
        forwarded = {**mcpcalls.agent_headers(request.headers.items()), **headers}
        cap = self.settings.max_mcp_response_bytes
        try:
            async with asyncio.timeout(self.settings.mcp_timeout_seconds):
                async with self.client.stream("POST", server.url, content=bytes(body), headers=forwarded) as upstream:
                    answer = bytearray()
                    async for chunk in upstream.aiter_raw(64 * 1024):
                        answer += chunk
                        if len(answer) > cap:
                            return _jsonrpc(502, decision, f"longshot-gateway: the answer of MCP server "
                                                           f"{server.name!r} is larger than {cap} bytes (the gateway's "
                                                           "max_mcp_response_bytes)"), "too_large", "answer too large"
                    status, kept = upstream.status_code, {
                        k: v for k, v in upstream.headers.items() if k.lower() in mcpcalls.ANSWER_HEADERS}
        except TimeoutError:
            return _jsonrpc(504, decision, f"longshot-gateway: MCP server {server.name!r} did not answer within "
                                           f"{self.settings.mcp_timeout_seconds:g}s (mcp_timeout_seconds)"), \
                "upstream_error", "timeout"
        except httpx.HTTPError as e:
            log.warning("MCP server %s of %s/%s unreachable: %s", server.name, caller.namespace, caller.build,
                        type(e).__name__)
            return _jsonrpc(502, decision, f"longshot-gateway: cannot reach MCP server {server.name!r}: "
                                           f"{type(e).__name__}"), "upstream_error", f"unreachable: {type(e).__name__}"
        out: bytes | None = bytes(answer)
        if decision.filter_tools and 200 <= status < 300 and out:
            out = mcpcalls.filter_tools_answer(out, kept.get("content-type", ""), decision.id, server)
            if out is None:
                return _jsonrpc(502, decision, f"longshot-gateway: the tools/list answer of MCP server {server.name!r} "
                                               "is not JSON-RPC; it is not passed on unfiltered"), "upstream_error", \
                    "unreadable tools/list"
        result = "ok" if 200 <= status < 300 else "upstream_error"
        return web.Response(status=status, body=out, headers=kept), result, None if result == "ok" else f"{status}"

    async def _secret_headers(self, caller: Caller, server: mcpcalls.Server) -> dict[str, str]:
        if server.secret is None:
            return {}
        try:
            secret = await self.cluster.aget_secret(caller.namespace, server.secret)
        except kubemod.Forbidden:
            raise mcpcalls.HeaderError(f"longshot-gateway may not read Secret {caller.namespace}/{server.secret} "
                                       "(spec.agent.mcpServers[].headersSecretRef): grant it with the chart's "
                                       "rbac.secrets") from None
        if secret is None:
            raise mcpcalls.HeaderError(f"Secret {caller.namespace}/{server.secret} "
                                       "(spec.agent.mcpServers[].headersSecretRef) does not exist")
        return mcpcalls.secret_headers(server.secret, secret)

    async def _ledger(self, caller: Caller, record: dict[str, Any]) -> None:
        if self.on_call is not None:
            try:
                await self.on_call(caller, record)
            except Exception as e:  # the ledger never fails a call
                log.warning("could not record an MCP call of %s/%s in the ledger: %s", caller.namespace, caller.task,
                            type(e).__name__)


def _count(method: mcpcalls.Method, result: str, seconds: float | None = None) -> None:
    metrics.MCP_CALLS.labels(method=method, result=result).inc()
    if seconds is not None:
        metrics.MCP_CALL_DURATION.labels(method=method).observe(seconds)


def _refused(r: mcpcalls.Refuse) -> web.Response:
    return web.json_response(mcpcalls.error(None, -32600, f"longshot-gateway: {r.message}"), status=r.status)


def _jsonrpc(status: int, decision: mcpcalls.Forward, message: str) -> web.Response:
    return web.json_response(mcpcalls.error(decision.id, -32603, message), status=status)
