"""One ingress for every HTTP surface (the gateway's routes, the operator's webhook, metrics and probes).

A server builds its aiohttp application only through :class:`Ingress`: each route is declared as data
(:class:`longshot.core.ingress.Route`) with its handler. For every request, before any byte of its body is read,
the ingress

1. runs the route's ``precheck`` (a route that is decided by more than its pattern, e.g. the model allowlist),
2. refuses a declared ``Content-Length`` over the route's ``max_body_bytes`` (413), and any body on a route that
   takes none,
3. checks the caller (``agent-token``, ``webhook-signature``: see ``core.ingress.CallerCheck``),
4. takes a place in the caller's lane (``per_caller`` requests in flight; more are 429 at once),

and only then calls the handler with a :class:`Call`, whose :meth:`Call.body` reads the body in chunks: under the
route's limit, by the route's body deadline (counted from the request's start, not per read) and against the
replica-wide :class:`~longshot.core.ingress.Budget` of in-flight body bytes (reserved before the bytes are read, a
window of :data:`RESERVE_AHEAD` ahead of what has arrived; 503 with ``Retry-After`` when full). Content-Length is
never allocated, nor reserved, up front. The whole request has the route's
``timeout_seconds``.

:class:`Server` serves an application with bounded connections (more are answered 503 at accept and closed),
a header deadline (``header_seconds``: a connection that has not sent a whole request head by then is closed, as
Go's ``ReadHeaderTimeout``) and bounded header sizes (``MaxHeaderBytes``); asyncio, no thread per connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from longshot.core import ingress as core
from longshot.core import modelcalls

log = logging.getLogger(__name__)


RESERVE_AHEAD = 64 * 1024
"""Bytes of a body reserved in the in-flight budget ahead of what has arrived (at most its declared length): a
request that declares a large body and sends it slowly holds a window, not its declared length."""


class Refused(Exception):
    """A request the ingress (or a handler, through :meth:`Call.body`) answers with ``status`` and ``message``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


CallerFn = Callable[[web.Request], Awaitable[tuple[Hashable, Any]]]
"""A caller check: ``(lane key, caller)`` of a request, or :class:`Refused`. It must not read the body."""
Render = Callable[[Refused], web.StreamResponse]
Precheck = Callable[[web.Request], None]


def plain(refused: Refused) -> web.StreamResponse:
    """The default answer to a refused request: its message as one line of text."""
    return web.Response(status=refused.status, text=f"{refused.message}\n", content_type="text/plain",
                        headers=refused.headers)


@dataclass(frozen=True)
class Limits:
    """Server-wide bounds of one listening port."""

    max_connections: int = 512
    """Connections held at once; more are answered 503 at accept and closed."""
    header_seconds: float = 10.0
    """A connection must send a whole request head this many seconds after it opened or its last request ended
    (idle keep-alive connections are closed after it too)."""
    max_header_bytes: int = 8190
    """Largest request line and largest header field."""
    max_headers: int = 64
    """Most header fields of one request."""
    inflight_body_bytes: int = 64 * 1024 * 1024
    """Request bodies held at once on this port (reserved before they are read)."""
    read_bufsize: int = 16 * 1024
    """Bytes aiohttp buffers per connection before it stops reading the socket (a connection's unread body)."""
    lingering_seconds: float = 2.0
    """How long an unread body is drained (and dropped) after an early answer, so that the client hears it."""
    shutdown_seconds: float = 25.0
    """How long requests in flight may take to finish when the server stops (the chart's Pods have 30 s)."""


class Call:
    """One admitted request: its route, its caller, and its body (read on demand, once, within the limits)."""

    def __init__(self, request: web.Request, route: core.Route, caller: Any, budget: core.Budget,
                 started: float) -> None:
        """``started``: the event loop's time when the request's head had arrived."""
        self.request = request
        self.route = route
        self.caller = caller
        self._budget = budget
        self._started = started
        self._reserved = 0
        self._read = False

    @property
    def started(self) -> float:
        """The event loop's time when the request's head had arrived (before its caller check)."""
        return self._started

    async def body(self) -> bytearray:
        """The body, read in chunks: 413 past ``max_body_bytes``, 408 past the body deadline, 503 when the
        replica's in-flight byte budget is full (:class:`Refused`)."""
        if self._read:
            raise RuntimeError("a request's body is read once")
        self._read = True
        route = self.route
        if route.stream:
            raise RuntimeError(f"route {route.name} streams its body: read request.content under its limit")
        if route.max_body_bytes == 0:
            return bytearray()
        declared = self.request.content_length
        most = route.max_body_bytes if declared is None else min(declared, route.max_body_bytes)
        buf = bytearray()
        try:
            async with asyncio.timeout_at(self._started + route.body_seconds):
                while True:
                    # reserved before it is read: a window ahead of what has arrived, never past the declared length
                    ahead = min(most, len(buf) + RESERVE_AHEAD)
                    if ahead > self._reserved:
                        self._reserve(ahead - self._reserved)
                    chunk = await self.request.content.readany()
                    if not chunk:
                        break
                    size = len(buf) + len(chunk)
                    if size > route.max_body_bytes:
                        raise Refused(413, route.too_large())
                    if size > self._reserved:
                        self._reserve(size - self._reserved)
                    buf += chunk
        except ConnectionError:  # the client left: nobody hears the answer, and nothing is logged as a failure
            raise Refused(400, "the connection closed before the request body arrived", {"Connection": "close"}) \
                from None
        except TimeoutError:
            raise Refused(408, f"the request body did not arrive within {route.body_seconds:g} s of its headers "
                               f"(the {route.name} route's deadline): send the whole body at once",
                          {"Connection": "close"}) from None
        if declared is not None and len(buf) != declared:
            raise Refused(400, "the request body ended before its Content-Length")
        return buf

    def _reserve(self, n: int) -> None:
        if not self._budget.reserve(n):
            raise Refused(503, "too many request bytes are in flight on this server; retry in a moment",
                          {"Retry-After": "1"})
        self._reserved += n

    def release(self) -> None:
        """The handler holds the body no more (it was sent on): its bytes leave the budget."""
        self._budget.release(self._reserved)
        self._reserved = 0


Handler = Callable[[web.Request, Call], Awaitable[web.StreamResponse]]
OnRefused = Callable[[core.Route, Refused], None]


@dataclass(frozen=True)
class Declared:
    route: core.Route
    handler: Handler
    render: Render
    precheck: Precheck | None


class Ingress:
    """The routes of one server, each declared with its limits, and the application that enforces them."""

    def __init__(self, limits: Limits, callers: Mapping[str, CallerFn], *, render: Render = plain,
                 on_refused: OnRefused | None = None) -> None:
        self.limits = limits
        self.callers = dict(callers)
        self.render = render
        self.on_refused = on_refused
        self.budget = core.Budget(limits.inflight_body_bytes)
        self.lanes = core.Lanes()
        self._declared: list[Declared] = []
        self._by_handler: dict[Any, Declared] = {}

    def add(self, route: core.Route, handler: Handler, *, render: Render | None = None,
            precheck: Precheck | None = None) -> None:
        """Declare ``route``; ValueError when its declaration is incomplete or its caller check is unknown here."""
        problems = route.problems()
        if route.caller != "none" and route.caller not in self.callers:
            problems.append(f"route {route.name!r}: this server has no {route.caller!r} caller check")
        if any(d.route.name == route.name for d in self._declared):
            problems.append(f"route {route.name!r} is declared twice")
        if problems:
            raise ValueError("; ".join(problems))
        self._declared.append(Declared(route, handler, render or self.render, precheck))

    @property
    def routes(self) -> list[core.Route]:
        return [d.route for d in self._declared]

    def declaration(self, registered: AbstractRoute) -> core.Route | None:
        """The declared route of an aiohttp route of the application (None: registered around the ingress)."""
        declared = self._by_handler.get(registered.handler)
        if declared is None or registered.method not in declared.route.methods:
            return None
        return declared.route

    def undeclared(self, app: web.Application) -> list[str]:
        """Every route of ``app`` that is not declared with its limits through this ingress (``METHOD path``)."""
        out = []
        for registered in app.router.routes():
            route = self.declaration(registered)
            if route is None or route.problems():
                info = registered.resource.get_info() if registered.resource is not None else {}
                out.append(f"{registered.method} {info.get('path') or info.get('formatter') or registered.resource}")
        return out

    def app(self, **kwargs: Any) -> web.Application:
        """An aiohttp application with every declared route and nothing else."""
        app = web.Application(middlewares=[self._only_declared], **kwargs)
        for declared in self._declared:
            wrapped = self._wrap(declared)
            self._by_handler[wrapped] = declared
            for method in declared.route.methods:
                app.router.add_route(method, declared.route.path, wrapped)
        return app

    @web.middleware
    async def _only_declared(self, request: web.Request,
                             handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        route = request.match_info.route
        if route.handler not in self._by_handler and request.match_info.http_exception is None:
            log.error("refused a request to %s: the route was not declared through the ingress", route.resource)
            return plain(Refused(500, "this route was not declared with its limits"))
        return await handler(request)

    def _wrap(self, declared: Declared) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        route = declared.route

        async def serve(request: web.Request) -> web.StreamResponse:
            started = asyncio.get_running_loop().time()
            entered: tuple[str, Hashable] | None = None
            call: Call | None = None
            try:
                async with asyncio.timeout(route.timeout_seconds):
                    if declared.precheck is not None:
                        declared.precheck(request)
                    self._check_length(route, request)
                    key: Hashable = None
                    caller: Any = None
                    if route.caller != "none":
                        key, caller = await self.callers[route.caller](request)
                    if not self.lanes.enter(route.lane_name, key, route.per_caller):
                        raise Refused(429, f"this caller already has {route.per_caller} request(s) in flight on "
                                           f"{route.name}; retry when one ends", {"Retry-After": "1"})
                    entered = (route.lane_name, key)
                    call = Call(request, route, caller, self.budget, started)
                    return await declared.handler(request, call)
            except Refused as e:
                if self.on_refused is not None and (call is None or not call._read):
                    self.on_refused(route, e)
                return self._answer(declared, request, e)
            except TimeoutError:
                late = Refused(503, f"the request took longer than {route.timeout_seconds:g} s (the {route.name} "
                                    "route's deadline)", {"Connection": "close"})
                if self.on_refused is not None:
                    self.on_refused(route, late)
                return self._answer(declared, request, late)
            finally:
                if call is not None:
                    call.release()
                if entered is not None:
                    self.lanes.leave(*entered)

        serve.__name__ = f"ingress_{route.name}"
        return serve

    @staticmethod
    def _check_length(route: core.Route, request: web.Request) -> None:
        declared = request.content_length
        if route.max_body_bytes == 0:
            if (declared or 0) > 0 or (declared is None and request.body_exists):
                raise Refused(413, f"{route.name} takes no request body")
        elif declared is not None and declared > route.max_body_bytes:
            raise Refused(413, route.too_large())

    @staticmethod
    def _answer(declared: Declared, request: web.Request, refused: Refused) -> web.StreamResponse:
        response = declared.render(refused)
        if not request.content.is_eof() and refused.status in (408, 413, 503):
            response.force_close()  # the body is not read: the connection cannot carry another request
        return response


def source_check(rate: float, burst: int, *, max_sources: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> CallerFn:
    """The ``webhook-signature`` caller check: the request's source address is its lane, under a token bucket per
    source (``rate`` a second, bursts of ``burst``; at most ``max_sources`` remembered, oldest forgotten first).
    The signature itself needs the body: the handler checks it after :meth:`Call.body`."""
    bucket = modelcalls.TokenBucket(rate=rate, burst=burst, max_keys=max_sources)

    async def check(request: web.Request) -> tuple[Hashable, Any]:
        source = request.remote or "unknown"
        wait = bucket.take(source, clock())
        if wait > 0:
            raise Refused(429, "too many requests from this address; retry later",
                          {"Retry-After": str(max(1, int(wait + 0.999)))})
        return source, source

    return check


class _Refuse(asyncio.Protocol):
    """A connection past the server's limit: 503 and closed, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        transport.close()


class Server:
    """An application served on one port under :class:`Limits` (bounded connections, header deadline and sizes)."""

    def __init__(self, app: web.Application, limits: Limits) -> None:
        self.limits = limits
        self.runner = web.AppRunner(
            # a handler runs to its end though its client left (a model call is metered whether or not the agent
            # waits for its last byte); a held body's read ends at its deadline or at the connection's EOF
            app, access_log=None, handle_signals=False, handler_cancellation=False,
            keepalive_timeout=limits.header_seconds, max_line_size=limits.max_header_bytes,
            max_field_size=limits.max_header_bytes, max_headers=limits.max_headers,
            lingering_time=limits.lingering_seconds, read_bufsize=limits.read_bufsize,
            shutdown_timeout=limits.shutdown_seconds)
        self._listeners: list[asyncio.Server] = []
        self.refused_connections = 0

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: a free port); returns the bound port."""
        await self.runner.setup()
        server = self.runner.server
        assert server is not None

        def factory() -> asyncio.BaseProtocol:
            if len(server.connections) >= self.limits.max_connections:
                self.refused_connections += 1
                return _Refuse()
            return server()

        listener = await asyncio.get_running_loop().create_server(factory, host, port, reuse_address=True,
                                                                  backlog=min(4096, self.limits.max_connections))
        self._listeners.append(listener)
        return int(listener.sockets[0].getsockname()[1])

    @property
    def connections(self) -> int:
        server = self.runner.server
        return len(server.connections) if server is not None else 0

    async def cleanup(self) -> None:
        for listener in self._listeners:
            listener.close()
        await self.runner.cleanup()  # closes the connections, then the application's cleanup
        for listener in self._listeners:
            await listener.wait_closed()
