"""The console's HTTP server (aiohttp, through the project's one ingress: ``longshot.net.ingress``).

::

    GET  /                                    the page (plain HTML; no build step)
    GET  /console.js, /console.css            its script and style (served from console/static)
    GET  /healthz, /readyz                    probes (ready once the three kinds were listed)
    GET  /api/whoami                          who the API server says the token is       (person-token)
    GET  /api/events                          Server-Sent Events: a snapshot of the      (person-token)
                                              namespaces the person may list, then each change
    GET  /api/transcript/{ns}/{task}          an attempt's transcript (?attempt=N&source=ledger|pod), read
                                              with the person's token as kubectl longshot logs does   (person-token)
    GET  /api/follow/{ns}/{task}              Server-Sent Events: a running attempt's log as it grows (?attempt=N),
                                              then how it ended, as kubectl longshot logs -f does     (person-token)
    POST /api/act/{ns}/{kind}/{name}/{action} answer, approve, suspend, resume, cancel, relaunch (and the
                                              message hook), made with the person's token            (person-token)

Every ``/api`` route needs ``Authorization: Bearer <the person's Kubernetes token>`` (never a cookie, never a query
parameter): a browser does not add that header by itself, so another site cannot make a person's browser act
(no CSRF), and a token never lands in a URL, an access log or a Referer. Nothing is logged of a token but nothing:
caches and lanes are keyed by its hash (``core.console.token_key``).

Reads of the live view come from one shared watch per kind (``console.watch``) folded into one ``core.console.View``;
before a person sees a namespace's objects, a SelfSubjectAccessReview made with their token says they may list
BuildRequests there (``core.console.Access``, cached a few seconds). Writes and transcripts are made with the
person's token only (``console.people``): the API server's RBAC decides, and its refusal is what the person sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import kubernetes
from aiohttp import web

from longshot import logs
from longshot.api import boundedjson
from longshot.cli import follow as cli_follow
from longshot.console import people
from longshot.console import watch as cwatch
from longshot.console.settings import ConsoleSettings
from longshot.core import console as core
from longshot.core.ingress import Route
from longshot.net import ingress

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
"""On every answer, refusals included."""
STATIC = {"page": ("index.html", "text/html"), "script": ("console.js", "text/javascript"),
          "style": ("console.css", "text/css")}
ACTION_BUDGET = boundedjson.Budget(max_bytes=64 * 1024, max_values=16, max_depth=2)
KEEPALIVE_SECONDS = 15.0
"""A comment line on an idle stream this often (proxies close silent connections)."""
DENIED_SECONDS = 5.0
"""A token the API server refused is refused again without asking for this long."""
NAMESPACE_PATTERN = r"{ns:[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?}"
NAME_PATTERN = r"[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?"


def dumps(data: Any) -> str:
    """JSON for the page: ASCII, with ``<``, ``>`` and ``&`` escaped too, so that no field can close a tag or a
    script even if a future page embedded it (the page only sets text: defence in depth)."""
    return (json.dumps(data, ensure_ascii=True, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


@dataclass(frozen=True)
class Person:
    key: str
    """The token's hash (caches, lanes)."""
    token: str
    user: str


@dataclass(eq=False)
class Viewer:
    person: Person
    outbox: core.Outbox
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class _Held(cli_follow.Streams):
    """A follow's streams that say when the log's answer came (the API server accepted the read)."""

    def __init__(self, opened: Callable[[], None]) -> None:
        super().__init__()
        self.opened = opened

    def hold(self, resp: Any) -> None:
        self.opened()
        super().hold(resp)


class Follow:
    """One followed attempt: the thread that reads it with the person's token (``people.follow``), and the lines
    waiting for the viewer's stream (``core.Tail``, bounded). The thread only appends under the lock and wakes the
    event loop; the loop takes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.tail = core.Tail(limit)
        self.wake = asyncio.Event()
        self.streams = _Held(self._opened)
        self.opened = False
        self.done = False
        self.outcome: dict[str, Any] | people.Refused | None = None
        self._signalled = False
        self.response: web.StreamResponse | None = None

    def run(self, endpoint: people.Endpoint, token: str, ns: str, task: str, attempt: int | None,
            ended: Callable[[Follow], object]) -> None:
        """The thread: follow until the attempt ends, it is refused, or ``streams.stop()``; then ``ended(self)``
        in the loop."""
        outcome: dict[str, Any] | people.Refused
        try:
            outcome = people.follow(endpoint, token, ns, task, attempt, self._push, self.streams)
        except people.Refused as e:
            outcome = e
        except Exception as e:  # the viewer is told, never left waiting
            log.exception("console: following %s/%s failed", ns, task)
            outcome = people.Refused(502, f"following the log failed: {type(e).__name__}")
        with self.lock:
            self.outcome, self.done = outcome, True
        self._signal()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody counts any more
            self.loop.call_soon_threadsafe(ended, self)

    def _push(self, line: str) -> None:
        with self.lock:
            self.tail.offer(line)
            self.opened = True
        self._signal()

    def _opened(self) -> None:
        with self.lock:
            self.opened = True
        self._signal()

    def _signal(self) -> None:
        with self.lock:
            if self._signalled:
                return
            self._signalled = True
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self.lock:
            self._signalled = False
        self.wake.set()

    def take(self) -> tuple[int, list[str], bool, bool, dict[str, Any] | people.Refused | None]:
        """(lines dropped, lines, opened, done, outcome), in the loop."""
        with self.lock:
            gap, lines = self.tail.take()
            return gap, lines, self.opened, self.done, self.outcome


class Console:
    """The shared view, the viewers, and the routes."""

    def __init__(self, settings: ConsoleSettings, endpoint: people.Endpoint,
                 clock: Any = time.monotonic) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.clock = clock
        self.view = core.View()
        self.access = core.Access(ttl=settings.access_cache_seconds)
        self.viewers: set[Viewer] = set()
        self.listed: set[tuple[str, str]] = set()
        self.identities: dict[str, tuple[str | None, float]] = {}
        self.dropped = 0
        """Viewers dropped for falling behind (tests and benchmarks read it)."""
        self.follows: set[Follow] = set()
        """Followed transcripts whose thread still runs (tests read it)."""
        self.closing = asyncio.Event()
        self.door: ingress.Ingress | None = None

    # --- the shared view (called in the event loop) -------------------------------------------------------

    def on_list(self, kind: str, namespace: str, items: list[dict[str, Any]]) -> None:
        self._publish(self.view.replace(kind, items, namespace))
        self.listed.add((kind, namespace))

    @property
    def ready(self) -> bool:
        """Every watched kind in every watched namespace was listed once."""
        return self.listed >= {(k, ns) for k in core.KINDS for ns in self.settings.namespace_list() or [""]}

    def on_event(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        change = self.view.apply(kind, event, obj)
        if change is not None:
            self._publish([change])

    def _publish(self, changes: list[core.Change]) -> None:
        if not changes:
            return
        for viewer in list(self.viewers):
            for change in changes:
                offered = viewer.outbox.offer(change)
                if offered == "dropped":
                    self.dropped += 1
                if offered != "queued":
                    break
            viewer.wake.set()

    # --- people -------------------------------------------------------------------------------------------

    async def person_caller(self, request: web.Request) -> tuple[Hashable, Person]:
        """The ``person-token`` caller check: the bearer token the API server accepts (SelfSubjectReview, cached
        per token hash); its lane is the token's hash."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or not token.isascii() or not token.isprintable():
            raise ingress.Refused(401, "send your Kubernetes token as Authorization: Bearer <token>",
                                  {"WWW-Authenticate": 'Bearer realm="longshot-console"'})
        key = core.token_key(token)
        now = self.clock()
        cached = self.identities.get(key)
        if cached is None or now >= cached[1]:
            try:
                user: str | None = await asyncio.to_thread(people.who, self.endpoint, token)
                until = now + self.settings.identity_cache_seconds
            except people.Refused as e:
                if e.status != 401:
                    raise ingress.Refused(e.status, e.message) from None
                user, until = None, now + DENIED_SECONDS
            if len(self.identities) >= 4096:
                self.identities = {k: v for k, v in self.identities.items() if v[1] > now}
                if len(self.identities) >= 4096:
                    self.identities.clear()
            self.identities[key] = cached = (user, until)
        if cached[0] is None:
            raise ingress.Refused(401, "the API server does not accept this token: paste a valid one",
                                  {"WWW-Authenticate": 'Bearer realm="longshot-console"'})
        return key, Person(key, token, cached[0])

    async def may_see(self, person: Person, namespace: str) -> bool:
        """Whether ``person`` may list BuildRequests in ``namespace`` (cluster-wide first: one review covers all)."""
        for ns in ("", namespace):
            decision = self.access.decide(person.key, ns, self.clock())
            if decision == "check":
                allowed = await asyncio.to_thread(people.may_list, self.endpoint, person.token, ns)
                self.access.record(person.key, ns, allowed, self.clock())
                decision = "allow" if allowed else "deny"
            if decision == "allow":
                return True
        return False

    # --- routes -------------------------------------------------------------------------------------------

    async def static_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        filename, content_type = STATIC[call.route.name]
        body = resources.files("longshot.console").joinpath("static", filename).read_bytes()
        return web.Response(body=body, content_type=content_type, headers={"Cache-Control": "no-cache"})

    async def healthz_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        return web.Response(text="ok\n")

    async def readyz_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        if self.ready and not self.closing.is_set():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="the first lists have not arrived yet\n")

    async def whoami_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        person: Person = call.caller
        return _json({"user": person.user})

    async def events_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        person: Person = call.caller
        if len(self.viewers) >= self.settings.max_viewers:
            raise ingress.Refused(503, "this console has as many live viewers as it serves; retry in a moment",
                                  {"Retry-After": "5"})
        viewer = Viewer(person, core.Outbox(self.settings.viewer_queue))
        self.viewers.add(viewer)  # from now on every change is queued for it: none is lost between snapshot and live
        try:
            checked: dict[str, bool] = {}
            while missing := self.view.namespaces() - checked.keys():  # none may appear between check and snapshot
                for ns in sorted(missing):
                    checked[ns] = await self.may_see(person, ns)
            snapshot = self.view.snapshot(ns for ns, ok in checked.items() if ok)
            viewer.outbox.take()  # what the snapshot already holds (changes after it are queued again below)
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                                   "X-Accel-Buffering": "no"})
            await response.prepare(request)
            try:
                await response.write(_sse("snapshot", {**snapshot, "user": person.user}))
                await self._stream(viewer, response, snapshot["seq"], set(snapshot["namespaces"]))
            except ConnectionError:  # the viewer left
                pass
            return response
        finally:
            self.viewers.discard(viewer)

    async def _stream(self, viewer: Viewer, response: web.StreamResponse, seq: int, shown: set[str]) -> None:
        """Changes after ``seq`` of the namespaces the person may list, as they come. A namespace the person newly
        may list arrives whole (``namespace``: its objects now); one they no longer may is taken back (``forget``)."""
        since: dict[str, int] = {}
        """Per namespace sent whole: the view's sequence then (older queued changes of it are already in it)."""
        deadline = self.clock() + self.settings.stream_seconds
        while not self.closing.is_set():
            left = deadline - self.clock()
            if left <= 0:
                await response.write(_sse("reload", {"reason": "the stream's time is up; reconnecting"}))
                return
            try:
                await asyncio.wait_for(viewer.wake.wait(), min(KEEPALIVE_SECONDS, left))
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            viewer.wake.clear()
            if viewer.outbox.dropped:
                await response.write(_sse("reload", {"reason": "this page fell too far behind; reload it"}))
                return
            out = []
            for change in viewer.outbox.take():
                ns = change.namespace
                if change.seq <= since.get(ns, seq):
                    continue
                allowed = await self.may_see(viewer.person, ns)
                if allowed and ns not in shown:
                    shown.add(ns)
                    whole = self.view.snapshot([ns])
                    since[ns] = whole["seq"]
                    out.append(_sse("namespace", {"namespace": ns, "objects": whole["objects"], "seq": whole["seq"]}))
                elif allowed:
                    out.append(_sse("change", change.event()))
                elif ns in shown:
                    shown.discard(ns)
                    out.append(_sse("forget", {"namespace": ns}))
            if out:
                await response.write(b"".join(out))
        await response.write(_sse("reload", {"reason": "the console is restarting"}))

    async def transcript_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        person: Person = call.caller
        ns, task = request.match_info["ns"], request.match_info["task"]
        raw_attempt = request.query.get("attempt")
        source = request.query.get("source", "ledger")
        if source not in ("ledger", "pod") or (raw_attempt is not None and not (raw_attempt.isascii() and
                                                                             raw_attempt.isdigit())) or \
                len(raw_attempt or "") > 6:
            raise ingress.Refused(400, "attempt is a number and source is ledger or pod")
        try:
            data = await asyncio.to_thread(people.transcript, self.endpoint, person.token, ns, task,
                                           int(raw_attempt) if raw_attempt else None, source)
        except people.Refused as e:
            raise ingress.Refused(e.status, e.message) from None
        return _json(data)

    async def follow_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        """``line`` events (the log's lines as they come, cleaned as ``kubectl longshot logs -f`` prints them),
        ``gap`` (lines this viewer was too slow for), then ``end`` (how the attempt ended) or ``reload`` (the stream's
        time is up). Refused with the API server's answer before the stream starts."""
        person: Person = call.caller
        ns, task = request.match_info["ns"], request.match_info["task"]
        raw_attempt = request.query.get("attempt")
        if raw_attempt is not None and not (raw_attempt.isascii() and raw_attempt.isdigit() and len(raw_attempt) <= 6):
            raise ingress.Refused(400, "attempt is a number")
        if len(self.follows) >= self.settings.max_follows:
            raise ingress.Refused(503, "this console follows as many transcripts as it serves; retry in a moment",
                                  {"Retry-After": "5"})
        deadline = self.clock() + self.settings.follow_seconds
        f = Follow(asyncio.get_running_loop(), self.settings.follow_queue)
        self.follows.add(f)
        threading.Thread(target=f.run, name=f"follow-{ns}/{task}", daemon=True,
                         args=(self.endpoint, person.token, ns, task, int(raw_attempt) if raw_attempt else None,
                               self.follows.discard)).start()
        try:
            await self._follow(request, f, deadline)
        except ConnectionError:  # the viewer left
            pass
        finally:
            f.streams.stop()  # the thread's blocked read returns; it ends
        return f.response if f.response is not None else web.Response(status=204)

    async def _follow(self, request: web.Request, f: Follow, deadline: float) -> None:
        response: web.StreamResponse | None = None
        quiet_since = self.clock()
        while True:
            gap, lines, opened, done, outcome = f.take()
            if response is None and isinstance(outcome, people.Refused):
                raise ingress.Refused(outcome.status, outcome.message)
            if response is None and (opened or done):
                response = f.response = _event_stream()
                await response.prepare(request)
            if response is not None:
                out = [_sse("gap", {"dropped": gap})] if gap else []
                out += [_sse("line", {"text": line}) for line in lines]
                if done:
                    out.append(_sse("end", outcome if isinstance(outcome, dict) else
                                    {"said": outcome.message if outcome is not None else "the follow ended"}))
                if out:
                    await response.write(b"".join(out))
                    quiet_since = self.clock()
                elif self.clock() - quiet_since >= KEEPALIVE_SECONDS:
                    await response.write(b": keepalive\n\n")
                    quiet_since = self.clock()
                if done:
                    return
            left = deadline - self.clock()
            transport = request.transport
            if left <= 0 or self.closing.is_set() or transport is None or transport.is_closing():
                if transport is None or transport.is_closing():
                    raise ConnectionError("the viewer left")
                if response is None:
                    response = f.response = _event_stream()
                    await response.prepare(request)
                why = "the console is restarting" if self.closing.is_set() else "the follow's time is up"
                await response.write(_sse("reload", {"reason": why + "; follow again"}))
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(f.wake.wait(), min(1.0, left))  # 1 s: a viewer that left is noticed
            f.wake.clear()

    async def act_route(self, request: web.Request, call: ingress.Call) -> web.StreamResponse:
        person: Person = call.caller
        if request.content_type != "application/json":
            raise ingress.Refused(415, "an action is a JSON body (Content-Type: application/json)")
        raw = await call.body()
        try:
            body = boundedjson.loads(bytes(raw or b"{}"), ACTION_BUDGET)
        except boundedjson.Refused as e:
            raise ingress.Refused(400, f"the action's body: {e}") from None
        if not isinstance(body, dict):
            raise ingress.Refused(400, "the body is a JSON object")
        m = request.match_info
        try:
            said = await asyncio.to_thread(people.act, self.endpoint, person.token, m["ns"], m["kind"], m["name"],
                                           m["action"], body)
        except people.Refused as e:
            log.info("console: %s %s %s/%s/%s refused (%d)", person.user, m["action"], m["ns"], m["kind"], m["name"],
                     e.status)
            raise ingress.Refused(e.status, e.message) from None
        log.info("console: %s %s %s/%s/%s", person.user, m["action"], m["ns"], m["kind"], m["name"])
        return _json({"done": said})

    # --- the ingress --------------------------------------------------------------------------------------

    def ingress(self) -> ingress.Ingress:
        """Every route, declared with its limits (docs/security.md, "One ingress")."""
        s = self.settings
        door = ingress.Ingress(ingress.Limits(max_connections=s.max_connections, inflight_body_bytes=8 << 20),
                               {"person-token": self.person_caller}, render=_json_refused)

        def anyone(name: str, path: str) -> Route:
            return Route(name, path, ("GET",), "none", 0, 0.0, 10.0, per_caller=64)

        for name in STATIC:
            door.add(anyone(name, {"page": "/", "script": "/console.js", "style": "/console.css"}[name]),
                     self.static_route)
        door.add(anyone("healthz", "/healthz"), self.healthz_route)
        door.add(anyone("readyz", "/readyz"), self.readyz_route)
        door.add(Route("whoami", "/api/whoami", ("GET",), "person-token", 0, 0.0, 30.0, 8), self.whoami_route)
        door.add(Route("events", "/api/events", ("GET",), "person-token", 0, 0.0, s.stream_seconds + 60.0, 4),
                 self.events_route)
        door.add(Route("transcript", f"/api/transcript/{NAMESPACE_PATTERN}/{{task:{NAME_PATTERN}}}", ("GET",),
                       "person-token", 0, 0.0, 60.0, 4), self.transcript_route)
        door.add(Route("follow", f"/api/follow/{NAMESPACE_PATTERN}/{{task:{NAME_PATTERN}}}", ("GET",),
                       "person-token", 0, 0.0, s.follow_seconds + 60.0, 2), self.follow_route)
        kinds = "|".join(core.KINDS)
        actions = "|".join(sorted(core.ACTIONS))
        door.add(Route("act", f"/api/act/{NAMESPACE_PATTERN}/{{kind:{kinds}}}/{{name:{NAME_PATTERN}}}/"
                              f"{{action:{actions}}}", ("POST",), "person-token", s.max_action_bytes, 10.0, 60.0, 8,
                       limit_name="console.maxActionBytes"), self.act_route)
        return door


def _event_stream() -> web.StreamResponse:
    return web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {dumps(data)}\n\n".encode()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(data), status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _json_refused(e: ingress.Refused) -> web.StreamResponse:
    response = _json({"error": e.message}, e.status)
    response.headers.update(e.headers)
    return response


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def make_app(console: Console, door: ingress.Ingress) -> web.Application:
    app = door.app()
    app.on_response_prepare.append(_secure)
    return app


class Served:
    """A running console: its HTTP server and its watches; ``cleanup()`` stops both."""

    def __init__(self, console: Console, server: ingress.Server, watches: cwatch.Watches | None, port: int) -> None:
        self.console, self.server, self.watches, self.port = console, server, watches, port

    async def cleanup(self) -> None:
        self.console.closing.set()
        for viewer in list(self.console.viewers):
            viewer.wake.set()
        for f in list(self.console.follows):
            f.streams.stop()
        try:
            await self.server.cleanup()
        finally:
            if self.watches is not None:
                await asyncio.to_thread(self.watches.stop)


async def serve(console: Console, watch_client: kubernetes.client.ApiClient | None, host: str = "127.0.0.1",
                port: int = 0) -> Served:
    """Start the console in the running loop: its watches (with ``watch_client``, the console's own account; None:
    the caller feeds ``on_list``/``on_event``) and its server on ``host:port`` (0: a free one)."""
    loop = asyncio.get_running_loop()
    watches = None
    if watch_client is not None:
        watches = cwatch.Watches(
            watch_client, lambda kind, ns, items: loop.call_soon_threadsafe(console.on_list, kind, ns, items),
            lambda kind, event, obj: loop.call_soon_threadsafe(console.on_event, kind, event, obj),
            namespaces=console.settings.namespace_list())
        watches.start()
    door = console.door = console.ingress()
    server = ingress.Server(make_app(console, door), door.limits)
    try:
        bound = await server.start(host, port)
    except BaseException:
        if watches is not None:
            await asyncio.to_thread(watches.stop)
        raise
    return Served(console, server, watches, bound)


def run(settings: ConsoleSettings | None = None) -> int:
    """``python -m longshot console``: serve until SIGTERM/SIGINT."""
    from longshot.runtime import kube

    logs.configure_from_env()
    settings = settings or ConsoleSettings.from_env()
    client = kube.load_client(pool_size=8)
    console = Console(settings, people.Endpoint.of(client.configuration))
    log.info("longshot-console listening on %s:%d (watching %s)", settings.address, settings.port,
             settings.namespaces or "every namespace")

    async def main() -> None:
        served = await serve(console, client, settings.address, settings.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await served.cleanup()

    asyncio.run(main())
    return 0
