"""The gateway's HTTP server (aiohttp): routes, authentication of every agent request, metrics, health.

::

    on the metrics port (``metrics_port``), apart from the agents:
    GET  /healthz                                     200 ok (liveness)
    GET  /readyz                                      200 ok once serving, 503 from the stop signal on (readiness)
    GET  /metrics                                     Prometheus text (longshot.gateway.metrics)

    on the agents' port (``port``):
    POST /progress                                    {"message": "...", "heartbeat": true} -> status.progress
    POST /ledger                                      {"events": [...]}: the runner's transcript, into its
                                                      attempt's ledger entry (longshot.gateway.ledger)
    POST /delegation/spawn                            {"tasks": [{"name", "prompt", "scope"}]}: children of the
                                                      caller's task (longshot.gateway.delegation)
    GET  /delegation/children                         how they are doing (status.children)
    GET  /v1/messages?after=ID&wait=S                 people's messages to this attempt after ID (spec.messages),
                                                      waiting up to S seconds for one (core.messages); each is a
                                                      ``message`` event in the attempt's ledger and is recorded in
                                                      status.messages.delivered
    POST /traces                                      an agent's spans (OTLP/HTTP protobuf), relayed to the
                                                      collector (longshot.gateway.traces)
    GET  /git/<ns>/<build>.git/info/refs              \\
    POST /git/<ns>/<build>.git/git-upload-pack         > longshot.gateway.gitserve
    POST /git/<ns>/<build>.git/git-receive-pack       /
    POST /model/openai/chat/completions, ...          longshot.gateway.modelproxy (the allowlist:
    POST /model/anthropic/v1/messages, ...            longshot.gateway.modelroutes)
    POST /mcp/<server>                                one JSON-RPC message to an MCP server of the build
                                                      (spec.agent.mcpServers): longshot.gateway.mcpproxy
    GET  /v1/claim?wait=S                             a warm sandbox waits for its claim: its attempt's task
                                                      input once bound (docs/warm-pools.md), else 204 (with
                                                      ``wait``: the repository it may pre-clone, if its pool
                                                      does)

Every route of the agents' port needs the caller's Pod-bound token (``longshot.gateway.identity``), and every one
but ``/v1/claim`` an attempt bound to that Pod (a warm sandbox is refused there until its claim, except the clone and
fetch of its own build's repository when its pool pre-clones: ``identity.Reader``); the metrics
port answers anyone the NetworkPolicy lets in (Prometheus, the kubelet's probes), and no agent is. Every route is
declared with its body limit, deadlines and per-attempt concurrency in :meth:`Gateway.ingress` (agents) and
:meth:`Gateway.probes` (metrics and probes) and served through ``longshot.net.ingress``, which checks route, method
and caller before it reads a byte of the body.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

import httpx
import pydantic
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from longshot import logs, tracing
from longshot.api import agenttask, boundedjson, handoff, timeutil
from longshot.core import ingress as core_ingress
from longshot.core import messages as core_messages
from longshot.core.ingress import Route
from longshot.gateway import cluster as gcluster
from longshot.gateway import delegation as gdelegation
from longshot.gateway import gitserve, identity, mcpproxy, metrics, modelproxy, modelroutes, traces
from longshot.gateway import ledger as gledger
from longshot.gateway import status as gstatus
from longshot.gateway.settings import GatewaySettings
from longshot.net import guard as gd
from longshot.net import ingress
from longshot.net import transport as egress_transport
from longshot.runtime import kube as kubemod

log = logging.getLogger(__name__)

CLAIM_BUDGET = boundedjson.Budget(max_bytes=256 * 1024, max_values=20_000, max_depth=16)
"""What parsing a claimed Pod's task input annotation may cost (annotations are at most 256 KiB together)."""
PROGRESS_BUDGET = boundedjson.Budget(max_bytes=64 * 1024, max_values=1000, max_depth=8)
"""What parsing a ``POST /progress`` body may cost (``api.boundedjson``): ``{"message": "..."}`` is 3 values."""

CALLER: web.RequestKey[identity.Caller] = web.RequestKey("longshot_caller", identity.Caller)
"""The authenticated caller of a request (tracing: its span's trace and parent)."""


class Gateway:
    """Everything the routes share; :func:`make_app` wires it into an aiohttp application."""

    def __init__(self, cluster: gcluster.Cluster, settings: GatewaySettings) -> None:
        self.cluster = cluster
        self.settings = settings
        if isinstance(cluster, gcluster.Cluster):  # (tests give stand-ins)
            cluster.secret_cache_seconds = settings.secret_cache_seconds
        self.auth = identity.Authenticator(cluster, audience=settings.audience,
                                           cache_seconds=settings.token_cache_seconds,
                                           denied_cache_seconds=settings.token_denied_cache_seconds,
                                           identity_cache_seconds=settings.identity_cache_seconds,
                                           rate=settings.requests_per_second, burst=settings.request_burst)
        self.egress = gd.Guard(settings.egress_policy(), proxies=settings.proxies())
        """Where builds may send the gateway (``core.egress``): checked before each call and at each connection."""
        self.git_service = gitserve.GitService(settings, egress=self.egress)
        # every upstream connection goes to an address the egress policy checked, or through the installation's proxy
        # after the destination was checked (longshot.net.transport)
        transport = egress_transport.AsyncGuardedTransport(
            self.egress, "spec.agent.baseUrl", purpose="model",
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        self.client = httpx.AsyncClient(
            transport=transport, timeout=httpx.Timeout(settings.upstream_timeout_seconds, connect=30.0),
            follow_redirects=False, trust_env=False)
        self.ledger = gledger.Ledger(cluster, settings)
        """The attempts' transcripts, buffered and written to their ledger entries (docs/ledger.md)."""
        self.model = modelproxy.ModelProxy(cluster, settings, self.client)
        self.model.on_call = self.ledger.model_call
        self.mcp = mcpproxy.McpProxy(cluster, settings, self.egress)
        """The build's MCP servers (spec.agent.mcpServers), their headers injected and their tools allowlisted."""
        self.mcp.on_call = self.ledger.mcp_call
        self.status = gstatus.TaskStatus(cluster)
        self._progress_written: dict[tuple[str, str, int], float] = {}
        self.traces = traces.Relay(settings) if tracing.setup(tracing.GATEWAY, settings.tracing_endpoint) else None
        """Tracing (only with ``tracing_endpoint``): the relay of agents' spans."""
        self.door: ingress.Ingress | None = None
        """The ingress serving this gateway (:func:`serve`): its byte budget and lanes, for tests and benchmarks."""
        self.serving = False
        """``/readyz``: True from the start of serving until the stop signal (then the Service stops sending
        requests here while the ones in flight finish)."""
        self.metrics_port: int | None = None
        """The bound metrics port (:func:`serve`)."""

    async def close(self) -> None:
        await self.ledger.close()
        await self.client.aclose()
        await self.mcp.close()
        if self.traces is not None:
            await self.traces.close()
            await asyncio.to_thread(tracing.shutdown, tracing.GATEWAY)

    async def agent_caller(self, request: web.Request) -> tuple[Hashable, identity.Caller]:
        """The ``agent-token`` caller check of the ingress: the attempt whose Pod-bound token the request carries
        (its lane is the attempt's Pod)."""
        try:
            caller = await self.auth.authenticate(request.headers)
        except identity.Denied as e:
            raise ingress.Refused(e.status, e.message, e.headers) from None
        request[CALLER] = caller
        return (caller.namespace, caller.pod_uid), caller

    async def reader_caller(self, request: web.Request) -> tuple[Hashable, identity.Caller | identity.Reader]:
        """The ``reader-token`` caller check of the clone and fetch routes: the attempt bound to the token's Pod, or a
        warm sandbox of a build whose pool pre-clones (its lane is the Pod, as an attempt's)."""
        try:
            caller = await self.auth.authenticate_reader(request.headers)
        except identity.Denied as e:
            raise ingress.Refused(e.status, e.message, e.headers) from None
        if isinstance(caller, identity.Caller):
            request[CALLER] = caller
        return (caller.namespace, caller.pod_uid), caller

    async def sandbox_caller(self, request: web.Request) -> tuple[Hashable, gcluster.Review]:
        """The ``sandbox-token`` caller check of ``GET /v1/claim``: a valid Pod-bound token, bound attempt or not
        (its lane is the Pod)."""
        try:
            review = await self.auth.sandbox(request.headers)
        except identity.Denied as e:
            raise ingress.Refused(e.status, e.message, e.headers) from None
        return (review.namespace, review.pod_uid), review

    # --- routes -----------------------------------------------------------------------------------------

    async def healthz_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        return web.Response(text="ok\n")

    async def readyz_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        return web.Response(text="ok\n") if self.serving else web.Response(status=503, text="not serving\n")

    async def metrics_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        text = await asyncio.to_thread(generate_latest, metrics.REGISTRY)
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def git_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        # its caller check (TokenReview, the attempt's lookup) ran before this handler, from the request's head on
        metrics.GIT_STAGE.labels(stage="admit").observe(asyncio.get_running_loop().time() - call.started)

        async def handle() -> tuple[web.StreamResponse, str]:
            caller: identity.Caller | identity.Reader = call.caller
            ns, build = request.match_info["ns"], request.match_info["build"]
            rest = request.path.rpartition(".git/")[2]
            who = "this attempt" if isinstance(caller, identity.Caller) else f"the warm sandbox {caller.pod}"
            if (ns, build) != (caller.namespace, caller.build):
                return _text(403, f"{who} belongs to build {caller.namespace}/{caller.build}, not "
                                  f"{ns}/{build}"), "forbidden"
            if isinstance(caller, identity.Reader) and not (
                    (request.method, rest) == ("POST", "git-upload-pack")
                    or ((request.method, rest) == ("GET", "info/refs")
                        and request.query.get("service") == "git-upload-pack")):
                return _text(403, f"{who} is not claimed by an attempt yet: it may clone and fetch its build's "
                                  "repository, nothing more"), "forbidden"
            secret_name = (caller.build_spec.get("repository") or {}).get("credentialsSecret")
            try:
                with gitserve.stage("secret"):
                    secret = (await self.cluster.aget_secret(ns, str(secret_name))
                              if secret_name else None)
            except kubemod.Forbidden:
                return _text(403, f"longshot-gateway may not read the repository credentials Secret {ns}/"
                                  f"{secret_name} (spec.repository.credentialsSecret): grant it with the chart's "
                                  "rbac.secrets (docs/install.md, RBAC)"), "forbidden"
            if secret_name and secret is None:
                return _text(403, f"the repository credentials Secret {ns}/{secret_name} "
                                  "(spec.repository.credentialsSecret) does not exist"), "forbidden"
            try:
                upstream = self.git_service.upstream(caller, secret)
                if rest in ("info/refs", "git-receive-pack"):  # the requests that reach the upstream
                    with gitserve.stage("pin"):
                        await self.git_service.pin(upstream)
                if request.method == "GET" and rest == "info/refs":
                    return await self.git_service.info_refs(request, caller, upstream), "ok"
                if request.method == "POST" and rest == "git-upload-pack":
                    return await self.git_service.upload_pack(request, caller, upstream), "ok"
                if request.method == "POST" and rest == "git-receive-pack" and isinstance(caller, identity.Caller):
                    response = await self.git_service.receive_pack(request, caller, upstream)
                    refused = response.content_type == "application/x-git-receive-pack-result" and isinstance(
                        response, web.Response)
                    return response, "refused" if refused else "ok"
            except gitserve.UpstreamError as e:
                return _text(502, str(e)), "upstream_error"
            return _text(404, f"not a git smart HTTP route: {request.method} {rest}"), "bad_request"

        return await _timed("git", handle, request)

    async def model_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        async def handle() -> tuple[web.StreamResponse, str]:
            route = modelroutes.parse_target(request.method, request.raw_path)  # checked by model_precheck
            caller: identity.Caller = call.caller
            # the upstream is held to the egress policy before the call (here, for a message naming the field) and
            # at its connection (the client's transport connects only to addresses it checked itself)
            base = modelproxy.upstream_base(route.flavour, caller.build_spec, self.settings)
            own = base == str((caller.build_spec.get("agent") or {}).get("baseUrl") or "").rstrip("/")
            try:
                await self.egress.aaddresses(base, "spec.agent.baseUrl" if own
                                             else f"LONGSHOT_GATEWAY_{route.flavour.upper()}_URL", purpose="model")
            except gd.Refused as e:
                log.warning("refused a model call of %s/%s: %s", caller.namespace, caller.task, e)
                return modelproxy.json_error(403, "egress_refused", f"longshot-gateway: {e}"), "forbidden"
            return await self.model.handle(request, caller, route, call)

        return await _timed("model", handle, request)

    async def mcp_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        async def handle() -> tuple[web.StreamResponse, str]:
            return await self.mcp.handle(request, call.caller, call)

        return await _timed("mcp", handle, request)

    async def progress_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        async def handle() -> tuple[web.StreamResponse, str]:
            caller: identity.Caller = call.caller
            raw = await call.body()
            try:
                data = boundedjson.loads(raw, PROGRESS_BUDGET) if raw else {}
            except boundedjson.Refused:
                data = None
            if not isinstance(data, dict):
                return web.json_response({"error": "the body must be a JSON object under 64 KiB, e.g. "
                                                   '{"message": "running tests"}'}, status=400), "bad_request"
            message = data.get("message")
            if message is not None and not isinstance(message, str):
                return web.json_response({"error": "message must be a string"}, status=400), "bad_request"
            key = (caller.namespace, caller.task, caller.attempt)
            now = time.monotonic()
            # a message at most every progress_min_interval_seconds; a bare heartbeat (no message) only when the
            # attempt's progress has not been written for heartbeat_write_seconds: the operator needs one every
            # LONGSHOT_HEARTBEAT_TIMEOUT_SECONDS (300 s), the runner sends one every 30 s
            floor = (self.settings.progress_min_interval_seconds if message is not None
                     else self.settings.heartbeat_write_seconds)
            if now - self._progress_written.get(key, -1e9) < floor:
                return web.json_response({"written": False}, status=202), "ok"
            self._progress_written[key] = now
            if len(self._progress_written) > 10_000:
                self._progress_written.pop(next(iter(self._progress_written)))
            written = await asyncio.to_thread(self.status.report, caller, message)
            return web.json_response({"written": written is not None}, status=202), "ok"

        return await _timed("progress", handle, request)

    async def delegation_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        async def handle() -> tuple[web.StreamResponse, str]:
            caller: identity.Caller = call.caller
            try:
                if request.method == "GET":
                    answer = await asyncio.to_thread(gdelegation.children, self.cluster, caller)
                    return web.json_response(answer), "ok"
                gdelegation.check_caller(caller)  # before a byte of the body: a build without delegation reads none
                raw = await call.body()
                answer = await asyncio.to_thread(gdelegation.spawn, self.cluster, caller, bytes(raw))
            except gdelegation.Refused as e:
                label = {400: "bad_request", 403: "forbidden", 409: "bad_request", 503: "unavailable"}.get(
                    e.status, "error")
                return web.json_response({"error": e.message}, status=e.status), label
            log.info("%s/%s attempt %d asked for children %s", caller.namespace, caller.task, caller.attempt,
                     ", ".join(answer["accepted"])[:500])
            return web.json_response(answer, status=202), "ok"

        return await _timed("delegation", handle, request)

    async def messages_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        async def handle() -> tuple[web.StreamResponse, str]:
            caller: identity.Caller = call.caller
            try:
                after = int(request.query.get("after") or 0)
                wait = float(request.query.get("wait") or 0)
            except ValueError:
                after, wait = -1, -1.0
            if not (0 <= after <= agenttask.MAX_MESSAGE_ID and 0 <= wait <= MESSAGES_MAX_WAIT):
                return web.json_response({"error": f"after must be a message id (0-{agenttask.MAX_MESSAGE_ID}) and "
                                                   f"wait 0-{MESSAGES_MAX_WAIT:g} seconds"},
                                         status=400), "bad_request"
            deadline = time.monotonic() + wait
            task: Mapping[str, Any] | None = caller.task_obj  # first as the identity read it (at most its cache old)
            while True:  # then read again each MESSAGES_POLL_SECONDS: spec.messages is what people wrote
                if task is None or (task.get("metadata") or {}).get("uid") != caller.task_obj["metadata"].get("uid"):
                    return web.json_response({"error": f"the AgentTask {caller.namespace}/{caller.task} no longer "
                                                       "exists"}, status=403), "forbidden"
                try:
                    identity.bound_attempt(task, caller.pod, caller.pod_uid)
                except identity.Denied as e:  # the attempt ended while waiting
                    return web.json_response({"error": e.message}, status=403), "forbidden"
                found = core_messages.pending((task.get("spec") or {}).get("messages") or [],
                                              attempt=caller.attempt, after=after)
                left = deadline - time.monotonic()
                if found or left <= 0:
                    break
                await asyncio.sleep(min(MESSAGES_POLL_SECONDS, left))
                task = await asyncio.to_thread(self.cluster.get_task, caller.namespace, caller.task)
            if found:
                await asyncio.to_thread(self.status.messages_delivered, caller, [m["id"] for m in found])
                for m in found:
                    await self.ledger.message(caller, {"from": "person", **m})
                log.info("%s/%s attempt %d got messages %s", caller.namespace, caller.task, caller.attempt,
                         ", ".join(str(m["id"]) for m in found))
            return web.json_response({"messages": found}), "ok"

        return await _timed("messages", handle, request)

    async def claim_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        """``GET /v1/claim`` (docs/warm-pools.md): a warm sandbox waits here for its claim. 200 with its task input
        once an attempt is bound to the Pod (identity steps 2-4, as for every other route), 204 when none was within
        ``claim_wait_seconds`` (ask again), 403 when the Pod can never be claimed (gone, ended, not a sandbox)."""
        async def handle() -> tuple[web.StreamResponse, str]:
            review: gcluster.Review = call.caller
            s = self.settings
            asked = request.query.get("wait", "")
            wait = s.claim_wait_seconds
            if asked:
                if not asked.isdigit() or len(asked) > 4:
                    return web.json_response({"error": "wait must be a whole number of seconds"},
                                             status=400), "bad_request"
                wait = min(wait, float(asked))
            try:
                found = await self.auth.claimed(review, wait=wait, poll=s.claim_poll_seconds)
            except identity.Denied as e:
                return web.json_response({"error": e.message}, status=e.status, headers=e.headers), _result(e.status)
            if found is None:
                # not claimed yet. A request that set its wait (the runner's first) of a sandbox of a build whose pool
                # pre-clones is told which repository it may read; the long polls after it cost no more reads
                reader = await self.auth.reader(review) if asked else None
                headers = {handoff.PRE_CLONE_HEADER: f"{reader.namespace}/{reader.build}"} if reader else None
                return web.Response(status=204, headers=headers), "ok"
            caller, pod = found
            request[CALLER] = caller
            raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(handoff.TASK_INPUT_ANNOTATION)
            try:
                data = boundedjson.loads(str(raw), CLAIM_BUDGET) if isinstance(raw, str) else None
                task_input = handoff.TaskInput.model_validate(data)
            except (boundedjson.Refused, pydantic.ValidationError):
                task_input = None
            # the input the operator wrote for this Pod's own task and attempt, nothing else
            if task_input is None or (task_input.task, task_input.attempt, task_input.namespace) != (
                    caller.task, caller.attempt, caller.namespace):
                return web.json_response({"error": f"the Pod {review.namespace}/{review.pod_name} carries no task "
                                                   "input of its attempt"}, status=403), "forbidden"
            return web.json_response(task_input.to_wire()), "ok"

        return await _timed("claim", handle, request)

    async def ledger_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        async def handle() -> tuple[web.StreamResponse, str]:
            caller: identity.Caller = call.caller
            raw = await call.body()  # never more than max_ledger_request_bytes held
            events = gledger.parse_body(bytes(raw), self.settings.max_ledger_request_bytes)
            del raw
            call.release()
            if events is None:
                return web.json_response({"error": 'the body must be a JSON object {"events": [{"type": ...}, ...]} '
                                                   f"of at most {gledger.BODY_VALUES} JSON values"},
                                         status=400), "bad_request"
            try:  # the token names the attempt: the body cannot point at another entry
                kept, flushed = await self.ledger.append(caller, identity.token_from(request.headers), events)
            except gledger.Full as e:
                return web.json_response({"error": str(e)}, status=503,
                                         headers={"Retry-After": str(max(1, int(e.retry_after)))}), "unavailable"
            return web.json_response({"kept": kept, "flushed": flushed}, status=202), "ok"

        return await _timed("ledger", handle, request)

    async def traces_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        async def handle() -> tuple[web.StreamResponse, str]:
            if self.traces is None:
                return web.json_response({"error": "tracing is off in longshot-gateway"}, status=404), "bad_request"
            return await self.traces.relay(call.caller, call)

        return await _timed("traces", handle)

    # --- the ingress --------------------------------------------------------------------------------------

    def probes(self) -> ingress.Ingress:
        """The metrics port's routes (no body, no caller), declared with their limits."""
        door = ingress.Ingress(PROBE_LIMITS, {}, render=ingress.plain)

        def probe(name: str, path: str, timeout: float = 10.0) -> Route:
            return Route(name, path, ("GET",), "none", 0, 0.0, timeout, per_caller=16)

        door.add(probe("healthz", "/healthz"), self.healthz_route, render=ingress.plain)
        door.add(probe("readyz", "/readyz"), self.readyz_route, render=ingress.plain)
        door.add(probe("metrics", "/metrics", 30.0), self.metrics_route, render=ingress.plain)
        return door

    def ingress(self) -> ingress.Ingress:
        """Every route of the agents' port, declared with its limits (docs/security.md, "One ingress")."""
        s = self.settings
        door = ingress.Ingress(
            ingress.Limits(max_connections=s.max_connections, header_seconds=s.header_timeout_seconds,
                           inflight_body_bytes=s.max_inflight_body_bytes),
            {"agent-token": self.agent_caller, "reader-token": self.reader_caller,
             "sandbox-token": self.sandbox_caller}, render=_json_refused,
            on_refused=_count_refused)
        body_s, per = s.body_timeout_seconds, s.max_requests_per_attempt
        answer_s = body_s + 120.0  # an API server write or two after the body

        # a warm sandbox's one door before its claim; the long poll's deadline bounds the request
        door.add(Route("claim", "/v1/claim", ("GET",), "sandbox-token", 0, 0.0, s.claim_wait_seconds + 30.0, 1),
                 self.claim_route)
        door.add(Route("progress", "/progress", ("POST",), "agent-token", PROGRESS_MAX_BYTES, body_s, answer_s, per),
                 self.progress_route)
        door.add(Route("traces", "/traces", ("POST",), "agent-token", s.max_trace_bytes, body_s, answer_s, per,
                       limit_name="max_trace_bytes"),
                 self.traces_route)
        door.add(Route("ledger", "/ledger", ("POST",), "agent-token", s.max_ledger_request_bytes, body_s, answer_s,
                       per, limit_name="max_ledger_request_bytes"), self.ledger_route)
        door.add(Route("delegation-spawn", "/delegation/spawn", ("POST",), "agent-token", gdelegation.MAX_BODY,
                       body_s, answer_s, per, lane="delegation"), self.delegation_route)
        door.add(Route("delegation-children", "/delegation/children", ("GET",), "agent-token", 0, 0.0, answer_s,
                       per, lane="delegation"), self.delegation_route)
        door.add(Route("messages", "/v1/messages", ("GET",), "agent-token", 0, 0.0, MESSAGES_MAX_WAIT + answer_s,
                       per, lane="messages"), self.messages_route)
        git_s, git_per = s.git_timeout_seconds + 60.0, s.max_git_requests_per_attempt
        repo = r"/git/{ns}/{build}.git"
        # a clone or fetch: also a warm sandbox of a build whose pool pre-clones (git_route: nothing but those)
        door.add(Route("git-info-refs", f"{repo}/info/refs", ("GET",), "reader-token", 0, 0.0, git_s, git_per,
                       lane="git"), self.git_route, render=_text_refused)
        door.add(Route("git-upload-pack", f"{repo}/git-upload-pack", ("POST",), "reader-token",
                       s.max_fetch_request_bytes, git_s, git_s, git_per, lane="git", stream=True,
                       limit_name="max_fetch_request_bytes"),
                 self.git_route, render=_text_refused)
        door.add(Route("git-receive-pack", f"{repo}/git-receive-pack", ("POST",), "agent-token", s.max_push_bytes,
                       git_s, git_s, git_per, lane="git", stream=True, limit_name="max_push_bytes"),
                 self.git_route, render=_text_refused)
        door.add(Route("model", r"/model/{path:.*}", tuple(sorted(core_ingress.METHODS)), "agent-token",
                     s.max_model_request_bytes, body_s, s.upstream_timeout_seconds + body_s + 60.0,
                     max(1, s.max_model_calls_per_attempt), limit_name="the gateway's max_model_request_bytes"),
                 self.model_route, render=_model_refused, precheck=_model_precheck)
        mcp_s = s.mcp_timeout_seconds + body_s + 60.0
        door.add(Route("mcp", r"/mcp/{server:[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?}", ("POST",), "agent-token",
                       s.max_mcp_request_bytes, body_s, mcp_s, s.max_mcp_calls_per_attempt,
                       limit_name="max_mcp_request_bytes"), self.mcp_route)
        return door


PROBE_LIMITS = ingress.Limits(max_connections=64, header_seconds=10.0, inflight_body_bytes=1024)
"""The metrics and probe port: no route reads a body; scrapes and probes hold few connections."""
PROGRESS_MAX_BYTES = 64 * 1024
"""Largest body of ``POST /progress``."""
MESSAGES_MAX_WAIT = 25.0
"""Longest ``GET /v1/messages`` waits for a message (``wait``); the runner asks again."""
MESSAGES_POLL_SECONDS = 2.0
"""How often a waiting ``GET /v1/messages`` reads its AgentTask again. Its first look is at the AgentTask as the
caller's identity read it (cached ``identity_cache_seconds``), so a ``wait=0`` check costs no read; and the runner
waits at the gateway only while a command runs or a person's interrupt holds the loop (``agent.messages``), so a
thousand agents thinking cost no reads and those running commands one each per 2 s."""


def _json_refused(e: ingress.Refused) -> web.StreamResponse:
    return web.json_response({"error": e.message}, status=e.status, headers=e.headers)


def _text_refused(e: ingress.Refused) -> web.StreamResponse:
    return _text(e.status, e.message, e.headers)


def _model_refused(e: ingress.Refused) -> web.StreamResponse:
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            405: "invalid_request_error", 408: "request_timeout", 413: "request_too_large", 429: "rate_limit_error",
            503: "overloaded_error"}.get(e.status, "permission_error")
    return modelproxy.json_error(e.status, kind, f"longshot-gateway: {e.message}", e.headers or None)


def _model_precheck(request: web.Request) -> None:
    """The model route is decided by its allowlist (``modelroutes``) on the raw target, before aiohttp decodes or
    normalises anything, and before the caller or the body."""
    try:
        modelroutes.parse_target(request.method, request.raw_path)
    except modelroutes.RouteError as e:
        raise ingress.Refused(e.status, e.message, {"Allow": e.allow} if e.allow else None) from None


def _count_refused(route: Route, e: ingress.Refused) -> None:
    """A request the ingress answered itself (before its handler ran), in the route's request counter."""
    if route.caller == "none":
        return
    metrics.REQUESTS.labels(route=route.lane_name, result=_result(e.status)).inc()


def _result(status: int) -> str:
    return {400: "bad_request", 401: "unauthorized", 403: "forbidden", 408: "bad_request", 413: "too_large",
            429: "rate_limited", 503: "unavailable"}.get(status, "error")


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    # git prints a text/plain error body as "remote: ..." lines
    return web.Response(status=status, text=f"longshot-gateway: {message}\n", content_type="text/plain",
                        headers=headers)


async def _timed(route: str, handle: Callable[[], Awaitable[tuple[web.StreamResponse, str]]],
                 request: web.Request | None = None) -> web.StreamResponse:
    start = time.monotonic()
    began = timeutil.utcnow() if request is not None and tracing.enabled(tracing.GATEWAY) else None
    result = "error"
    try:
        response, result = await handle()
        if began is not None and request is not None and CALLER in request:
            tracing.emit(traces.request_span(route, request[CALLER], request.headers, began, timeutil.utcnow(),
                                             result, response.status, request.path), tracing.GATEWAY)
        return response
    except web.HTTPException as e:
        result = {413: "too_large", 400: "bad_request", 403: "forbidden", 502: "upstream_error"}.get(e.status, "error")
        raise
    except ingress.Refused as e:  # the body was refused by the ingress (Call.body), which answers it
        result = _result(e.status)
        raise
    except Exception:
        log.exception("%s request failed", route)
        raise
    finally:
        metrics.REQUESTS.labels(route=route, result=result).inc()
        metrics.REQUEST_DURATION.labels(route=route).observe(time.monotonic() - start)


def make_app(gateway: Gateway, door: ingress.Ingress | None = None) -> web.Application:
    """The gateway's application: every route through ``door`` (default: :meth:`Gateway.ingress`)."""
    app = (door or gateway.ingress()).app()

    async def close(app: web.Application) -> None:
        await gateway.close()

    async def start(app: web.Application) -> None:
        gateway.ledger.start()

    app.on_startup.append(start)
    app.on_cleanup.append(close)
    return app


def run(settings: GatewaySettings | None = None) -> int:
    """``python -m longshot gateway``: serve until SIGTERM/SIGINT. A bad ``LONGSHOT_LOG_FORMAT`` or
    ``LONGSHOT_LOG_LEVEL`` stops it first (a SettingsError naming the variable)."""
    from longshot.runtime import kube

    logs.configure_from_env()
    settings = settings or GatewaySettings.from_env()
    gateway = Gateway(gcluster.Cluster(kube.load_client()), settings)
    log.info("longshot-gateway listening on %s:%d for agents, %s:%d for metrics and probes (audience %s, mirrors "
             "in %s)", settings.address, settings.port, settings.address, settings.metrics_port, settings.audience,
             settings.mirror_dir)

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(settings.api_threads, thread_name_prefix="gateway-api"))
        served, _ = await serve(gateway, settings.address, settings.port, settings.metrics_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            gateway.serving = False  # /readyz 503 while the requests in flight finish
            await served.cleanup()

    asyncio.run(main())
    return 0


class Served:
    """The gateway's two servers: the agents' port and the metrics port; ``cleanup()`` stops both."""

    def __init__(self, agents: ingress.Server, probes: ingress.Server, cluster: gcluster.Cluster | None = None
                 ) -> None:
        self.agents, self.probes, self.cluster = agents, probes, cluster
        self.lag = asyncio.get_running_loop().create_task(loop_lag(), name="event loop lag")

    async def cleanup(self) -> None:
        self.lag.cancel()
        try:
            await self.agents.cleanup()
        finally:
            await self.probes.cleanup()
            if self.cluster is not None:  # the watch cache's threads
                await asyncio.to_thread(self.cluster.stop_watching)


LAG_SAMPLE_SECONDS = 0.5


async def loop_lag() -> None:
    """Sample the event loop's lag (``longshot_gateway_event_loop_lag_seconds``): how much later than asked a sleep
    of :data:`LAG_SAMPLE_SECONDS` ends. Runs until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + LAG_SAMPLE_SECONDS
        await asyncio.sleep(LAG_SAMPLE_SECONDS)
        metrics.LOOP_LAG.observe(max(0.0, loop.time() - due))


async def serve(gateway: Gateway, host: str = "127.0.0.1", port: int = 0,
                metrics_port: int = 0) -> tuple[Served, int]:
    """Start the gateway in the running loop: the agents' routes on ``host:port``, metrics and probes on
    ``host:metrics_port`` (``gateway.metrics_port`` is the bound one). Returns the servers (``cleanup()`` stops them)
    and the agents' bound port."""
    door = gateway.door = gateway.ingress()
    probes_door = gateway.probes()
    probes = ingress.Server(probes_door.app(), probes_door.limits)
    gateway.metrics_port = await probes.start(host, metrics_port)
    served = ingress.Server(make_app(gateway, door), door.limits)
    try:
        bound = await served.start(host, port)
    except BaseException:
        await probes.cleanup()
        raise
    if gateway.settings.watch_cache:
        gateway.cluster.watch(gateway.settings.watched_namespaces())
    gateway.serving = True
    return Served(served, probes, gateway.cluster), bound
