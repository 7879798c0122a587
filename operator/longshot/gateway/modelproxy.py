"""Model calls through the gateway: the build's API key injected, usage metered and priced as it happens,
the build's budget reserved before each call and settled after it, and one upstream 429 backing off the
whole build.

Routes (``longshot.gateway.modelroutes``: the build's one provider, an allowlist of methods and paths
checked on the raw request target, the query string dropped)::

    POST /model/openai/chat/completions ...   -> <spec.agent.baseUrl or https://api.openai.com/v1>/<path>
    POST /model/anthropic/v1/messages ...     -> <spec.agent.baseUrl or https://api.anthropic.com>/<path>

The key is the ``api-key`` of ``spec.agent.credentialsSecret``, sent as ``Authorization: Bearer`` (OpenAI)
or ``x-api-key`` (Anthropic); the agent's own authorization headers (its gateway token) never go upstream.

Per call, in order: the provider (403), the attempt's rate limit (429), the body's declared size (413,
before reading it), the attempt's calls in flight and the replica's bytes in flight (429), a spent budget
(402), a held build (429), the body read into one buffer and its few fields parsed (400), then for a
metered route the reservation (``core.modelcalls``: 402, or 429 while the rest is reserved; the output
maximum it reserved is written into the forwarded body where the call names none or more). After the
call its usage (JSON or server-sent events; ``stream_options.include_usage`` asked for on OpenAI chat and
completion streams; a stream without usage counted from its text; a 2xx response without any usage
charged its reservation) is priced and added to the task's ``status.progress`` before the response ends,
and only then is the reservation released. docs/security.md (the model proxy under a hostile agent) has
the limits and what they do not stop.

Rate limits: an upstream 429 holds the whole build's calls to that API for ``Retry-After`` seconds (or
``default_backoff_seconds``): this replica remembers it at once, and it is written to the calling task's
``status.progress.backoffUntil`` so the other replica, which reads the build's tasks before every call
(cached for ``usage_cache_seconds``), holds them too. Held calls are answered ``429`` with the remaining
``Retry-After`` without reaching the upstream.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from aiohttp import web

from longshot.core import modelcalls, personas, usage
from longshot.gateway import metering, metrics, modelroutes, pricing
from longshot.gateway import status as gstatus
from longshot.gateway.cluster import Cluster
from longshot.gateway.identity import Caller
from longshot.gateway.settings import GatewaySettings
from longshot.net import ingress
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


def _priced_model(fields: modelroutes.Fields, caller: Caller) -> str | None:
    """The model a call is reserved, metered and priced as (``core.personas.priced_model``): the one it names, else
    the model chosen for the attempt (its task input, written by the operator), else the build's."""
    return personas.priced_model(fields.model, caller.task_input.backend.model,
                                 (caller.build_spec.get("agent") or {}).get("model"))


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
        self._tasks: dict[tuple[str, str], tuple[float, int, list[dict[str, Any]]]] = {}
        self._settled: dict[tuple[str, str], int] = {}
        """Per build, how many of this replica's calls have written their usage: a read of the build's tasks
        started before a settlement may miss it, so it is not used to admit a call after that settlement."""
        self._backoff: dict[tuple[str, str, str], float] = {}
        self._warned: set[tuple[str, str, str]] = set()
        self.ledger = modelcalls.Ledger()
        self.bucket = modelcalls.TokenBucket(settings.model_calls_per_second, settings.model_call_burst)
        self._active: dict[tuple[str, str, int], int] = {}
        self._inflight_bytes = 0
        self.meter_buffers = metering.Buffers(settings.max_model_meter_bytes)
        self.on_call: Callable[[Caller, dict[str, Any]], Awaitable[None]] | None = None
        """The ledger's record of each proxied call (``gateway.ledger``): model, status, usage, duration."""

    # --- the build's state ------------------------------------------------------------------------------

    async def build_tasks(self, caller: Caller) -> list[dict[str, Any]]:
        key = (caller.namespace, caller.build)
        epoch = self._settled.get(key, 0)
        cached = self._tasks.get(key)
        if cached and cached[0] > self.clock() and cached[1] == epoch:
            return cached[2]
        tasks = await asyncio.to_thread(self.cluster.build_tasks, caller.namespace, caller.build)
        self._tasks[key] = (self.clock() + self.settings.usage_cache_seconds, epoch, tasks)
        if len(self._tasks) > 10_000:
            self._tasks.pop(next(iter(self._tasks)))
        return tasks

    async def current_tasks(self, caller: Caller) -> list[dict[str, Any]]:
        """The build's tasks as read after this replica's last settlement for the build: the caller admits
        on them without awaiting anything in between, so no settled call is missed by both the tasks and
        the ledger (a reservation is released only after its usage is written and counted here)."""
        key = (caller.namespace, caller.build)
        while True:
            epoch = self._settled.get(key, 0)
            tasks = await self.build_tasks(caller)
            if self._settled.get(key, 0) == epoch:
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

    async def handle(self, request: web.Request, caller: Caller, route: modelroutes.Route, call: ingress.Call
                     ) -> tuple[web.StreamResponse, str]:
        """Answer one model call admitted by the ingress (``call`` reads its body under the route's limits);
        returns the response and the result label for the metrics."""
        flavour = route.flavour
        agent = caller.build_spec.get("agent") or {}
        own = modelroutes.provider(agent)
        if own != flavour:
            uses = f"uses the {own} API" if own else "calls no model API"
            return json_error(403, "permission_error", f"longshot-gateway: build {caller.namespace}/{caller.build} "
                                                       f"{uses} (spec.agent.backend {agent.get('backend')!r}); "
                                                       f"/model/{flavour}/ is refused so that its key never goes to "
                                                       "another provider"), "forbidden"
        wait = self.bucket.take((caller.namespace, caller.pod_uid), self.clock())
        if wait > 0:
            return json_error(429, "rate_limit_error", "longshot-gateway: this attempt starts model calls faster than "
                                                       f"{self.settings.model_calls_per_second:g} a second (burst "
                                                       f"{self.settings.model_call_burst})",
                              {"Retry-After": str(max(1, math.ceil(wait)))}), "rate_limited"
        cap = self.settings.max_model_request_bytes
        if request.content_length is not None and request.content_length > cap:
            return _too_large(cap), "too_large"
        attempt = (caller.namespace, caller.task, caller.attempt)
        if self._active.get(attempt, 0) >= self.settings.max_model_calls_per_attempt:
            return json_error(429, "rate_limit_error", "longshot-gateway: this attempt already has "
                                                       f"{self.settings.max_model_calls_per_attempt} model calls in "
                                                       "flight; retry when one ends", {"Retry-After": "1"}), \
                "rate_limited"
        posts = request.method == "POST"  # the GET routes (models) carry no body: none is read or sent
        holds = (request.content_length if request.content_length is not None else cap) if posts else 0
        if self._inflight_bytes + holds > self.settings.max_model_inflight_bytes:
            return json_error(429, "rate_limit_error", "longshot-gateway: too many model request bytes in flight on "
                                                       "this replica; retry in a moment", {"Retry-After": "1"}), \
                "rate_limited"
        self._active[attempt] = self._active.get(attempt, 0) + 1
        self._inflight_bytes += holds
        held = [holds]

        def body_done() -> None:  # the body is sent (or refused): its bytes no longer count
            self._inflight_bytes -= held.pop() if held else 0
            call.release()

        try:
            return await self._call(request, caller, route, call, body_done)
        finally:
            body_done()
            left = self._active.get(attempt, 1) - 1
            if left > 0:
                self._active[attempt] = left
            else:
                self._active.pop(attempt, None)

    async def _call(self, request: web.Request, caller: Caller, route: modelroutes.Route, call: ingress.Call,
                    body_done: Callable[[], None]) -> tuple[web.StreamResponse, str]:
        flavour = route.flavour
        tasks = await self.build_tasks(caller)
        budget = caller.build_spec.get("budget")
        spent = usage.build_usage(tasks)
        why = usage.budget_spent(budget, spent)
        if why and route.metered:
            return json_error(402, "budget_exceeded", f"longshot-gateway: {why}; no more model calls for this "
                                                      "build until spec.budget is raised"), "budget_exceeded"
        until = self.backoff_until(caller, flavour, tasks)
        now = self.wall()
        if until > now:
            wait = max(1, math.ceil(until - now))
            return json_error(429, "rate_limit_error",
                              f"longshot-gateway: the {flavour} API answered 429 to this build; all its calls wait "
                              f"{wait}s", {"Retry-After": str(wait)}), "rate_limited"
        body: bytes | bytearray = await call.body() if request.method == "POST" else bytearray()
        try:
            fields = modelroutes.read_fields(body)
        except modelroutes.BodyError as e:
            return json_error(400, "invalid_request_error", f"longshot-gateway: {e}"), "bad_request"
        request_model = _priced_model(fields, caller)
        ticket: int | None = None
        claim = modelcalls.Claim()
        if route.metered:
            price = (await self.prices.table()).lookup(request_model)
            asked = modelcalls.request(len(body), fields.max_output_tokens, choices=fields.choices,
                                       default_output_tokens=self.settings.default_reserve_output_tokens,
                                       input_price=price.input if price else 0.0,
                                       output_price=price.output if price else 0.0, per_tokens=pricing.PER_TOKENS)
            spent = usage.build_usage(await self.current_tasks(caller))
            # no await from here to the admission: the ledger and ``spent`` are one consistent view
            decision = self.ledger.admit((caller.namespace, caller.build), (caller.namespace, caller.task,
                                                                              caller.attempt),
                                         asked, budget=budget, spent=spent)
            if isinstance(decision, modelcalls.Refused):
                headers = {"Retry-After": str(decision.retry_after)} if decision.retry_after else None
                return json_error(decision.status, decision.kind, f"longshot-gateway: {decision.message}", headers), \
                    ("budget_exceeded" if decision.status == 402 else "rate_limited")
            ticket, claim = decision.ticket, decision.claim
            if decision.write_max is not None:
                # the upstream enforces the reserved maximum: written where the call names none or more
                try:
                    body = modelroutes.with_maximum(body, (flavour, route.path), fields, decision.write_max)
                except (ValueError, RecursionError):
                    self.ledger.release(ticket)
                    return json_error(400, "invalid_request_error", "longshot-gateway: the request body is not "
                                                                    "valid JSON"), "bad_request"
        # _forward drops the body once it is sent: the response may stream for minutes
        holder: list[bytes | bytearray] = [body]
        del body
        try:
            return await self._forward(request, caller, route, holder, body_done, fields, claim, ticket is not None)
        finally:
            if ticket is not None:
                self.ledger.release(ticket)

    async def _forward(self, request: web.Request, caller: Caller, route: modelroutes.Route,
                       holder: list[bytes | bytearray], body_done: Callable[[], None], fields: modelroutes.Fields,
                       claim: modelcalls.Claim, metered: bool) -> tuple[web.StreamResponse, str]:
        flavour = route.flavour
        body = holder.pop()
        if (fields.stream and (flavour, route.path) in modelroutes.STREAM_OPTIONS
                and (fields.stream_options or {}).get("include_usage") is not True):
            body = modelroutes.with_usage_requested(body, fields)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST
                   and not k.lower().startswith("proxy-")}
        headers["accept-encoding"] = "identity"
        key = await self._api_key(caller)
        if key:
            if flavour == "openai":
                headers["authorization"] = f"Bearer {key}"
            else:
                headers["x-api-key"] = key
        url = f"{upstream_base(flavour, caller.build_spec, self.settings)}/{route.path}"
        if request.method == "POST":
            headers["content-length"] = str(len(body))  # sent as declared, not chunked
        upstream = self.client.build_request(request.method, url, headers=headers,
                                             content=_chunks(body) if request.method == "POST" else None)
        del body
        began = time.monotonic()
        model = _priced_model(fields, caller)
        try:
            response = await self.client.send(upstream, stream=True)
        except httpx.HTTPError as e:
            metrics.MODEL_CALLS.labels(api=flavour, status="error").inc()
            log.warning("model upstream %s unreachable: %s", flavour, type(e).__name__)
            await self._ledger(caller, {"api": flavour, "path": route.path, "model": model, "status": 502,
                                        "error": f"unreachable: {type(e).__name__}",
                                        "durationSeconds": round(time.monotonic() - began, 3)})
            return json_error(502, "upstream_error", f"longshot-gateway: cannot reach the {flavour} API: "
                                                     f"{type(e).__name__}"), "upstream_error"
        finally:
            upstream.stream = httpx.ByteStream(b"")  # the sent body's last reference
            body_done()
        metrics.MODEL_CALLS.labels(api=flavour, status=status_class(response.status_code)).inc()
        content_type = response.headers.get("content-type", "")
        meter = metering.Meter(flavour, streaming="text/event-stream" in content_type,
                               request_model=_priced_model(fields, caller),
                               buffers=self.meter_buffers)
        settled = False
        used: metering.Usage | None = None
        try:
            if response.status_code == 429:
                await self._hold(caller, flavour, response.headers.get("retry-after"))
            out = web.StreamResponse(status=response.status_code, headers={
                k: v for k, v in response.headers.items() if k.lower() not in _DROP_RESPONSE})
            await out.prepare(request)
            async for chunk in response.aiter_bytes(CHUNK):
                if metered:
                    meter.feed(chunk)
                await out.write(chunk)
            if metered and response.is_success:
                settled = True
                used = await self._record(caller, flavour, meter, claim)
            await out.write_eof()
        finally:
            await response.aclose()
            if metered and response.is_success and not settled:
                # cut short (the agent went away, the upstream failed mid-body): what was metered so far, or
                # the whole reservation, is charged; the upstream bills the call either way
                used = await asyncio.shield(self._record(caller, flavour, meter, claim))
            elif not (metered and response.is_success):
                meter.close()
            record: dict[str, Any] = {"api": flavour, "path": route.path, "model": model,
                                      "status": response.status_code,
                                      "durationSeconds": round(time.monotonic() - began, 3)}
            if used is not None:
                record.update(inputTokens=used.input_tokens, outputTokens=used.output_tokens,
                              estimated=used.estimated, **({"model": used.model} if used.model else {}))
            await asyncio.shield(self._ledger(caller, record))
        return out, ("ok" if response.is_success else "rate_limited" if response.status_code == 429
                     else "upstream_error")

    async def _api_key(self, caller: Caller) -> str | None:
        name = (caller.build_spec.get("agent") or {}).get("credentialsSecret")
        if not name:
            return None
        secret = await self.cluster.aget_secret(caller.namespace, str(name))
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

    async def _ledger(self, caller: Caller, record: dict[str, Any]) -> None:
        if self.on_call is not None:
            try:
                await self.on_call(caller, record)
            except Exception as e:  # the ledger never fails a call
                log.warning("could not record a model call of %s/%s in the ledger: %s", caller.namespace, caller.task,
                            type(e).__name__)

    async def _record(self, caller: Caller, flavour: metering.Flavour, meter: metering.Meter,
                      claim: modelcalls.Claim) -> metering.Usage:
        try:
            used = meter.result(estimated_input=claim.input_tokens)
        finally:
            meter.close()
        if used is None:
            log.warning("a %s response of %s/%s reports no usage%s: charged its reservation of %d tokens", flavour,
                        caller.namespace, caller.task, " (too large to meter)" if meter.truncated else "",
                        claim.tokens)
            metrics.UNMETERED_CALLS.labels(api=flavour).inc()
            used = metering.Usage(claim.input_tokens, claim.output_tokens, model=meter.request_model, estimated=True)
        elif used.estimated:
            metrics.UNMETERED_CALLS.labels(api=flavour).inc()
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
        key = (caller.namespace, caller.build)
        try:
            await asyncio.to_thread(self.status.add_usage, caller, input_tokens=used.input_tokens,
                                    output_tokens=used.output_tokens, cost=cost)
        finally:
            self._tasks.pop(key, None)
            self._settled[key] = self._settled.get(key, 0) + 1
            if len(self._settled) > 10_000:
                self._settled.pop(next(iter(self._settled)))
        return used

    async def _warn_unpriced(self, caller: Caller, model: str) -> None:
        key = (caller.namespace, caller.build, model)
        if key in self._warned:
            return
        self._warned.add(key)
        message = (f"model {model[:200]!r} has no price in ConfigMap {self.settings.namespace}/"
                   f"{self.settings.prices_configmap} (key {pricing.CONFIGMAP_KEY}); its calls count 0 towards "
                   "spec.budget.maxCost")
        await asyncio.to_thread(self.cluster.event, caller.build_obj, "Warning", "UnpricedModel", message)


def _too_large(cap: int) -> web.Response:
    return json_error(413, "request_too_large", f"longshot-gateway: the request body is larger than {cap} bytes "
                                                "(the gateway's max_model_request_bytes)")


async def _chunks(body: bytes | bytearray) -> AsyncIterator[bytes]:
    """The body as 64 KiB pieces, so that sending it upstream copies a piece at a time, never the whole."""
    view = memoryview(body)
    try:
        for start in range(0, len(body), CHUNK):
            yield bytes(view[start:start + CHUNK])
    finally:
        view.release()
