"""Model calls through the gateway: the build's API key injected, usage metered and priced as it happens,
the build's budget enforced, and one upstream 429 backing off the whole build.

Routes::

    <any method> /model/openai/<path>      -> <spec.agent.baseUrl or https://api.openai.com/v1>/<path>
    <any method> /model/anthropic/<path>   -> <spec.agent.baseUrl or https://api.anthropic.com>/<path>

``spec.agent.baseUrl`` is used for the route of the build's backend (``openai`` or ``anthropic``) and, for
the ``command`` backend, for both. The key is the ``api-key`` of ``spec.agent.credentialsSecret``, sent as
``Authorization: Bearer`` (OpenAI) or ``x-api-key`` (Anthropic); the agent's own authorization headers
(its gateway token) never go upstream.

Before a call: the build's total (``core.usage.build_usage`` over its AgentTasks: finished attempts plus
the live progress of running ones) is compared with ``spec.budget``; when spent, the gateway answers
``402`` with ``{"error": {"type": "budget_exceeded", ...}}`` and the agent stops with exit code 7. After
a call: its usage (JSON or server-sent events; for streamed OpenAI chat completions the gateway sets
``stream_options.include_usage``) is priced from the price table and added to the task's
``status.progress`` before the response ends.

Rate limits: an upstream 429 holds the whole build's calls to that API for ``Retry-After`` seconds (or
``default_backoff_seconds``): this replica remembers it at once, and it is written to the calling task's
``status.progress.backoffUntil`` so the other replica, which reads the build's tasks before every call
(cached for ``usage_cache_seconds``), holds them too. Held calls are answered ``429`` with the remaining
``Retry-After`` without reaching the upstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from aiohttp import web

from longshot.core import usage
from longshot.gateway import metering, metrics, pricing
from longshot.gateway import status as gstatus
from longshot.gateway.cluster import Cluster
from longshot.gateway.identity import Caller
from longshot.gateway.settings import GatewaySettings
from longshot.runtime import kube as kubemod

log = logging.getLogger(__name__)
CHUNK = 64 * 1024
_DROP_REQUEST = frozenset({"host", "content-length", "authorization", "x-api-key", "cookie", "accept-encoding",
                           "connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer",
                           "transfer-encoding", "upgrade", "forwarded", "x-forwarded-for", "x-forwarded-host",
                           "x-forwarded-proto", "x-real-ip", "expect"})
_DROP_RESPONSE = frozenset({"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive",
                            "set-cookie", "trailer", "upgrade", "proxy-authenticate", "te"})


def error_body(kind: str, message: str) -> dict[str, Any]:
    """An error both SDK families read: OpenAI's ``error.message`` and Anthropic's ``type: error``."""
    return {"type": "error", "error": {"type": kind, "code": kind, "message": message}}


def json_error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(kind, message), status=status, headers=headers)


def upstream_base(flavour: metering.Flavour, build_spec: dict[str, Any] | Any, settings: GatewaySettings) -> str:
    agent = build_spec.get("agent") or {}
    backend, base_url = agent.get("backend"), agent.get("baseUrl")
    if base_url and backend in (flavour, "command"):
        return str(base_url).rstrip("/")
    return (settings.openai_url if flavour == "openai" else settings.anthropic_url).rstrip("/")


def status_class(code: int) -> str:
    return "429" if code == 429 else f"{code // 100}xx"


class Prices:
    """The price table ConfigMap, re-read at most every ``prices_cache_seconds``; the last good one is kept."""

    def __init__(self, cluster: Cluster, settings: GatewaySettings, clock: Callable[[], float] = time.monotonic):
        self.cluster = cluster
        self.settings = settings
        self.clock = clock
        self._table = pricing.PriceTable({})
        self._expires = -math.inf
        self._lock = asyncio.Lock()

    async def table(self) -> pricing.PriceTable:
        if self.clock() < self._expires:
            return self._table
        async with self._lock:  # one read at a time; calls meanwhile wait for it rather than price with nothing
            if self.clock() < self._expires:
                return self._table
            try:
                data = await asyncio.to_thread(self.cluster.get_configmap, self.settings.namespace,
                                               self.settings.prices_configmap)
                self._table = pricing.PriceTable.parse((data or {}).get(pricing.CONFIGMAP_KEY))
            except kubemod.Forbidden as e:
                log.error("cannot read the price table (%s: Forbidden); keeping the previous table", e)
            except pricing.PriceError as e:
                log.error("price table ConfigMap %s/%s: %s; keeping the previous table", self.settings.namespace,
                          self.settings.prices_configmap, e)
            self._expires = self.clock() + self.settings.prices_cache_seconds
        return self._table


class ModelProxy:
    def __init__(self, cluster: Cluster, settings: GatewaySettings, client: httpx.AsyncClient, *,
                 wall: Callable[[], float] = time.time, clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.settings = settings
        self.client = client
        self.wall = wall
        self.clock = clock
        self.prices = Prices(cluster, settings, clock)
        self.status = gstatus.TaskStatus(cluster)
        self._tasks: dict[tuple[str, str], tuple[float, list[dict[str, Any]]]] = {}
        self._backoff: dict[tuple[str, str, str], float] = {}
        self._warned: set[tuple[str, str, str]] = set()

    # --- the build's state ------------------------------------------------------------------------------

    async def build_tasks(self, caller: Caller) -> list[dict[str, Any]]:
        key = (caller.namespace, caller.build)
        cached = self._tasks.get(key)
        if cached and cached[0] > self.clock():
            return cached[1]
        tasks = await asyncio.to_thread(self.cluster.build_tasks, caller.namespace, caller.build)
        self._tasks[key] = (self.clock() + self.settings.usage_cache_seconds, tasks)
        if len(self._tasks) > 10_000:
            self._tasks.pop(next(iter(self._tasks)))
        return tasks

    def backoff_until(self, caller: Caller, api: str, tasks: list[dict[str, Any]]) -> float:
        until = self._backoff.get((caller.namespace, caller.build, api), 0.0)
        for task in tasks:
            progress = (task.get("status") or {}).get("progress") or {}
            if progress.get("backoffApi") == api and progress.get("backoffUntil"):
                try:
                    when = datetime.fromisoformat(str(progress["backoffUntil"]).replace("Z", "+00:00"))
                except ValueError:
                    continue
                until = max(until, when.timestamp())
        return until

    # --- a call -----------------------------------------------------------------------------------------

    async def handle(self, request: web.Request, caller: Caller, flavour: metering.Flavour, path: str
                     ) -> tuple[web.StreamResponse, str]:
        """Answer one model call; returns the response and the result label for the metrics."""
        tasks = await self.build_tasks(caller)
        spent = usage.budget_spent(caller.build_spec.get("budget"), usage.build_usage(tasks))
        if spent:
            return json_error(402, "budget_exceeded", f"longshot-gateway: {spent}; no more model calls for this "
                                                      "build until spec.budget is raised"), "budget_exceeded"
        until = self.backoff_until(caller, flavour, tasks)
        now = self.wall()
        if until > now:
            wait = max(1, math.ceil(until - now))
            return json_error(429, "rate_limit_error",
                              f"longshot-gateway: the {flavour} API answered 429 to this build; all its calls wait "
                              f"{wait}s", {"Retry-After": str(wait)}), "rate_limited"
        body = await _read(request, self.settings.max_model_request_bytes)
        if body is None:
            return json_error(413, "request_too_large", "longshot-gateway: the request body is larger than "
                                                        f"{self.settings.max_model_request_bytes} bytes"), "too_large"
        payload: Any = None
        if body:
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                payload = None
        streaming = isinstance(payload, dict) and payload.get("stream") is True
        if (flavour == "openai" and streaming and isinstance(payload, dict)
                and path.rstrip("/").endswith("chat/completions")):
            options = payload.get("stream_options")
            if not isinstance(options, dict) or options.get("include_usage") is not True:
                payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
                body = json.dumps(payload).encode()
        request_model = payload.get("model") if isinstance(payload, dict) and isinstance(payload.get("model"),
                                                                                          str) else None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST
                   and not k.lower().startswith("proxy-")}
        headers["accept-encoding"] = "identity"
        key = await self._api_key(caller)
        if key:
            if flavour == "openai":
                headers["authorization"] = f"Bearer {key}"
            else:
                headers["x-api-key"] = key
        url = f"{upstream_base(flavour, caller.build_spec, self.settings)}/{path.lstrip('/')}"
        if request.query_string:
            url += f"?{request.query_string}"
        upstream = self.client.build_request(request.method, url, headers=headers, content=body)
        try:
            response = await self.client.send(upstream, stream=True)
        except httpx.HTTPError as e:
            metrics.MODEL_CALLS.labels(api=flavour, status="error").inc()
            log.warning("model upstream %s unreachable: %s", flavour, type(e).__name__)
            return json_error(502, "upstream_error", f"longshot-gateway: cannot reach the {flavour} API: "
                                                     f"{type(e).__name__}"), "upstream_error"
        metrics.MODEL_CALLS.labels(api=flavour, status=status_class(response.status_code)).inc()
        try:
            if response.status_code == 429:
                await self._hold(caller, flavour, response.headers.get("retry-after"))
            out = web.StreamResponse(status=response.status_code, headers={
                k: v for k, v in response.headers.items() if k.lower() not in _DROP_RESPONSE})
            await out.prepare(request)
            content_type = response.headers.get("content-type", "")
            meter = metering.Meter(flavour, streaming="text/event-stream" in content_type,
                                   request_model=request_model)
            async for chunk in response.aiter_bytes(CHUNK):
                meter.feed(chunk)
                await out.write(chunk)
            if response.is_success:
                await self._record(caller, flavour, meter)
            await out.write_eof()
        finally:
            await response.aclose()
        return out, ("ok" if response.is_success else "rate_limited" if response.status_code == 429
                     else "upstream_error")

    async def _api_key(self, caller: Caller) -> str | None:
        name = (caller.build_spec.get("agent") or {}).get("credentialsSecret")
        if not name:
            return None
        secret = await asyncio.to_thread(self.cluster.get_secret, caller.namespace, str(name))
        key = ((secret or {}).get("api-key") or "").strip()
        return key or None

    async def _hold(self, caller: Caller, api: str, retry_after: str | None) -> None:
        seconds = self.settings.default_backoff_seconds
        if retry_after:
            try:
                seconds = float(retry_after)
            except ValueError:
                try:
                    from email.utils import parsedate_to_datetime

                    seconds = parsedate_to_datetime(retry_after).timestamp() - self.wall()
                except (TypeError, ValueError):
                    pass
        seconds = min(max(seconds, 1.0), self.settings.max_backoff_seconds)
        until = self.wall() + seconds
        key = (caller.namespace, caller.build, api)
        self._backoff[key] = max(self._backoff.get(key, 0.0), until)
        log.warning("the %s API answered 429 for build %s/%s: holding its calls for %.0fs", api, caller.namespace,
                    caller.build, seconds)
        try:
            await asyncio.to_thread(self.status.back_off, caller, api, datetime.fromtimestamp(math.ceil(until), UTC))
        except Exception as e:  # the other replica learns it from its own 429 then
            log.warning("could not record the backoff on %s/%s: %s", caller.namespace, caller.task, e)

    async def _record(self, caller: Caller, flavour: metering.Flavour, meter: metering.Meter) -> None:
        used = meter.result()
        if used is None:
            if meter.truncated:
                log.warning("a %s response too large to meter for %s/%s", flavour, caller.namespace, caller.task)
            used = metering.Usage()
        table = await self.prices.table()
        cost = table.cost(used)
        if cost is None:
            cost = 0.0
            if used.tokens:
                metrics.UNPRICED_CALLS.labels(api=flavour).inc()
                await self._warn_unpriced(caller, used.model or "(unnamed)")
        metrics.TOKENS.labels(api=flavour, kind="input").inc(used.input_tokens)
        metrics.TOKENS.labels(api=flavour, kind="output").inc(used.output_tokens)
        metrics.COST.labels(api=flavour).inc(cost)
        try:
            await asyncio.to_thread(self.status.add_usage, caller, input_tokens=used.input_tokens,
                                    output_tokens=used.output_tokens, cost=cost)
        finally:
            self._tasks.pop((caller.namespace, caller.build), None)

    async def _warn_unpriced(self, caller: Caller, model: str) -> None:
        key = (caller.namespace, caller.build, model)
        if key in self._warned:
            return
        self._warned.add(key)
        message = (f"model {model[:200]!r} has no price in ConfigMap {self.settings.namespace}/"
                   f"{self.settings.prices_configmap} (key {pricing.CONFIGMAP_KEY}); its calls count 0 towards "
                   "spec.budget.maxCost")
        await asyncio.to_thread(self.cluster.event, caller.build_obj, "Warning", "UnpricedModel", message)


async def _read(request: web.Request, limit: int) -> bytes | None:
    data = bytearray()
    async for chunk in request.content.iter_chunked(CHUNK):
        data += chunk
        if len(data) > limit:
            return None
    return bytes(data)
