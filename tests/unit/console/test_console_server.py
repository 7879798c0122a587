"""The console's server without an API server: every route is declared through the one ingress, the page and its
answers carry the security headers, and nothing under /api is served (or sent to the API server) without a bearer
token in the Authorization header: not a cookie, not a query parameter."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import aiohttp
import pytest

from longshot.console import people, server
from longshot.console.settings import ConsoleSettings

STATIC = resources.files("longshot.console").joinpath("static")


@pytest.fixture
async def console() -> AsyncIterator[tuple[server.Console, str]]:
    # an endpoint nothing listens on: a test that reached the API server would fail
    c = server.Console(ConsoleSettings(port=0), people.Endpoint("https://127.0.0.1:9", None))
    served = await server.serve(c, None)
    try:
        yield c, f"http://127.0.0.1:{served.port}"
    finally:
        await served.cleanup()


def test_every_console_route_is_declared_with_its_limits() -> None:
    c = server.Console(ConsoleSettings(), people.Endpoint("https://127.0.0.1:9", None))
    door = c.ingress()
    app = server.make_app(c, door)
    assert door.undeclared(app) == []
    by_name = {r.name: r for r in door.routes}
    assert set(by_name) == {"page", "script", "style", "healthz", "readyz", "whoami", "events", "transcript", "follow",
                            "act"}
    for route in door.routes:
        assert route.problems() == []
        # what is not the static page or a probe is a person's, with their token
        assert route.caller == ("none" if route.name in {"page", "script", "style", "healthz", "readyz"}
                                else "person-token"), route
    assert [r.name for r in door.routes if r.max_body_bytes > 0] == ["act"]
    follow = by_name["follow"]  # a stream of a Pod log: a small lane per person, and a deadline past its own end
    assert follow.per_caller == 2 and follow.timeout_seconds > ConsoleSettings().follow_seconds
    assert by_name["act"].methods == ("POST",) and by_name["act"].max_body_bytes == ConsoleSettings().max_action_bytes


async def test_the_page_and_its_files_carry_a_strict_policy(console: tuple[server.Console, str]) -> None:
    _, base = console
    async with aiohttp.ClientSession() as http:
        for path, kind in (("/", "text/html"), ("/console.js", "text/javascript"), ("/console.css", "text/css"),
                           ("/api/events", "application/json")):
            async with http.get(base + path) as r:
                assert r.content_type == kind, path
                csp = r.headers["Content-Security-Policy"]
                assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Referrer-Policy"] == "no-referrer"


async def test_no_token_no_api_and_a_query_parameter_or_cookie_is_not_a_token(
        console: tuple[server.Console, str]) -> None:
    c, base = console
    async with aiohttp.ClientSession() as http:
        for method, path, headers in (
                ("GET", "/api/events", {}),
                ("GET", "/api/events?token=abc&access_token=abc", {}),
                ("GET", "/api/whoami", {"Cookie": "token=abc"}),
                ("GET", "/api/events", {"Authorization": "Basic YTpi"}),
                ("POST", "/api/act/a/AgentTask/t1/cancel", {"Content-Type": "application/json"}),
                ("GET", "/api/transcript/a/t1", {}),
                ("GET", "/api/follow/a/t1?attempt=1", {})):
            async with http.request(method, base + path, headers=headers) as r:
                assert r.status == 401, (method, path)
                assert "Bearer" in r.headers["WWW-Authenticate"]
                assert (await r.json())["error"].startswith("send your Kubernetes token")
    assert c.identities == {}  # nothing was asked of the API server
    async with aiohttp.ClientSession() as http, http.get(base + "/api/nothing") as r:
        assert r.status == 404


async def test_readiness_waits_for_the_three_first_lists(console: tuple[server.Console, str]) -> None:
    c, base = console
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/readyz") as r:
            assert r.status == 503
        for kind in ("BuildRequest", "AgentTask", "MergeJob"):
            c.on_list(kind, "", [])
        async with http.get(base + "/readyz") as r:
            assert r.status == 200


def test_the_script_sets_text_only() -> None:
    script = "\n".join(line for line in STATIC.joinpath("console.js").read_text().splitlines()
                       if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setAttribute(\"on", "localStorage"):
        assert sink not in script, sink
    # the one place attributes are set takes data-* names only
    assert re.findall(r"setAttribute\(([^,]+),", script) == ["key"]
    assert 'key.startsWith("data-")' in script
    page = STATIC.joinpath("index.html").read_text()
    assert "<script>" not in page and " on" not in re.sub(r"\s+", " ", page).replace(" only", "")


def test_json_for_the_page_escapes_markup() -> None:
    text = server.dumps({"q": "</script><img src=x onerror=alert(1)>&\u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    data: Any = __import__("json").loads(text)
    assert data["q"].startswith("</script>")


def test_the_page_is_in_the_wheel() -> None:
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["longshot"]
    assert "console/static/*" in data
    assert sorted(p.name for p in STATIC.iterdir()) == ["console.css", "console.js", "index.html"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _events(http: aiohttp.ClientSession, url: str) -> tuple[int, list[tuple[str, Any]]]:
    """A follow's answer: its status and its Server-Sent Events (or its refusal's JSON as one "refused" event)."""
    import json

    async with http.get(url, headers={"Authorization": "Bearer t"}) as r:
        if r.status != 200:
            return r.status, [("refused", await r.json())]
        blocks = (await r.text()).split("\n\n")
    out = []
    for block in blocks:
        fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
        if fields:
            out.append((fields["event"], json.loads(fields["data"])))
    return 200, out


@pytest.fixture
async def following(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[server.Console, str, Clock, list[Any]]]:
    """A console whose person is "alice" and whose follows are ``follow`` (people.follow's interface): the fake's
    behaviour is the test's; ``calls`` holds each call's streams."""
    clock = Clock()
    calls: list[Any] = []
    monkeypatch.setattr(people, "who", lambda endpoint, token: "alice")
    c = server.Console(ConsoleSettings(port=0, follow_queue=10, follow_seconds=10), people.Endpoint(
        "https://127.0.0.1:9", None), clock=clock)
    served = await server.serve(c, None)
    try:
        yield c, f"http://127.0.0.1:{served.port}", clock, calls
    finally:
        await served.cleanup()


async def test_a_follow_sends_the_lines_in_order_then_the_end(
        following: tuple[server.Console, str, Clock, list[Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    c, base, _, calls = following

    def follow(endpoint: Any, token: str, ns: str, task: str, attempt: int | None, push: Any,
               streams: Any) -> dict[str, Any]:
        calls.append((token, ns, task, attempt))
        for line in ("one", "two <b>", "three"):
            push(line)
        return {"attempt": 1, "result": {"exitCode": 0}, "said": "attempt 1 ended (Completed)"}

    monkeypatch.setattr(people, "follow", follow)
    async with aiohttp.ClientSession() as http:
        status, events = await _events(http, base + "/api/follow/a/t1?attempt=1")
    assert status == 200 and calls == [("t", "a", "t1", 1)]
    assert events == [("line", {"text": "one"}), ("line", {"text": "two <b>"}), ("line", {"text": "three"}),
                      ("end", {"attempt": 1, "result": {"exitCode": 0}, "said": "attempt 1 ended (Completed)"})]
    await _until(lambda: not c.follows)


async def test_a_refused_follow_is_the_api_servers_answer(
        following: tuple[server.Console, str, Clock, list[Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    _, base, _, _ = following

    def follow(*args: Any) -> dict[str, Any]:
        raise people.Refused(403, 'pods "t1-a1" is forbidden: cannot get resource "pods/log"')

    monkeypatch.setattr(people, "follow", follow)
    async with aiohttp.ClientSession() as http:
        assert await _events(http, base + "/api/follow/a/t1") == (403, [("refused", {
            "error": 'pods "t1-a1" is forbidden: cannot get resource "pods/log"'})])
        for bad in ("x", "\u00b2", "1234567"):  # a superscript two is a digit to str.isdigit, not to int()
            async with http.get(base + "/api/follow/a/t1", params={"attempt": bad},
                                headers={"Authorization": "Bearer t"}) as r:
                assert r.status == 400, bad


async def test_a_follow_past_its_time_says_reload_and_stops_its_thread(
        following: tuple[server.Console, str, Clock, list[Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    c, base, clock, calls = following

    def follow(endpoint: Any, token: str, ns: str, task: str, attempt: int | None, push: Any,
               streams: Any) -> dict[str, Any]:
        calls.append(streams)
        push("one")
        clock.now += 11  # past follow_seconds
        streams.stopped.wait(30)  # a log that does not end: only a stop() ends this
        return {"said": "stopped"}

    monkeypatch.setattr(people, "follow", follow)
    async with aiohttp.ClientSession() as http:
        status, events = await _events(http, base + "/api/follow/a/t1")
    assert status == 200 and events[0] == ("line", {"text": "one"}) and events[-1][0] == "reload", events
    assert calls[0].stopped.is_set()
    await _until(lambda: not c.follows)


async def test_lines_past_the_queue_drop_the_oldest_and_are_counted() -> None:
    import asyncio

    f = server.Follow(asyncio.get_running_loop(), limit=10)
    for n in range(25):
        f._push(f"line {n}")
    gap, lines, opened, done, outcome = f.take()
    assert (gap, lines, opened, done, outcome) == (15, [f"line {n}" for n in range(15, 25)], True, False, None)


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
