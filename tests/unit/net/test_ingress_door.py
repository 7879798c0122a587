"""The ingress's door, on a real socket (longshot.net.ingress): route and caller before the body, the body whole
by its deadline and under the byte budget, lanes per caller, bounded connections and a header deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable
from typing import Any

import pytest
from aiohttp import web

from longshot.core.ingress import Route
from longshot.net import ingress


class Door:
    def __init__(self, served: ingress.Server, port: int, door: ingress.Ingress, seen: list[str]) -> None:
        self.served, self.port, self.door, self.seen = served, port, door, seen

    async def send(self, head: str, body: bytes = b"") -> tuple[int, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(head.encode() + b"\r\n" + body)
            await writer.drain()
            return await answer(reader)
        finally:
            writer.close()


async def answer(reader: asyncio.StreamReader) -> tuple[int, str]:
    data = await asyncio.wait_for(reader.read(65536), 5)
    status = int(data.split(b" ", 2)[1]) if data else 0
    return status, data.partition(b"\r\n\r\n")[2].decode(errors="replace")


def head(path: str, length: int | None, token: str = "a", extra: str = "") -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Authorization: {token}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return "\r\n".join(lines) + "\r\n" + extra


@pytest.fixture
async def door() -> AsyncIterator[Door]:
    seen: list[str] = []

    async def caller(request: web.Request) -> tuple[Hashable, Any]:
        token = request.headers.get("Authorization", "")
        seen.append(f"caller {token}")
        if token == "nobody":
            raise ingress.Refused(401, "no token")
        return token, token

    door = ingress.Ingress(ingress.Limits(max_connections=20, header_seconds=0.5, inflight_body_bytes=1000,
                                          lingering_seconds=0.1), {"agent-token": caller})

    async def echo(request: web.Request, call: ingress.Call) -> web.StreamResponse:
        if request.query.get("wait"):
            await asyncio.Event().wait()  # held until the route's deadline
        body = await call.body()
        seen.append(f"body {len(body)}")
        return web.Response(text=f"{len(body)}")

    door.add(Route("echo", "/echo", ("POST",), "agent-token", 600, 0.4, 1.0, per_caller=2), echo)
    served = ingress.Server(door.app(), door.limits)
    port = await served.start("127.0.0.1", 0)
    try:
        yield Door(served, port, door, seen)
    finally:
        await served.cleanup()


async def test_a_body_is_read_whole_and_its_bytes_leave_the_budget(door: Door) -> None:
    assert await door.send(head("/echo", 5), b"hello") == (200, "5")
    assert door.seen == ["caller a", "body 5"] and door.door.budget.used == 0


async def test_a_declared_length_past_the_limit_is_refused_before_the_caller_and_the_body(door: Door) -> None:
    status, text = await door.send(head("/echo", 601))
    assert status == 413 and "larger than 600 bytes (the echo route's limit)" in text
    assert door.seen == []


async def test_a_refused_caller_sends_no_byte_of_its_body_to_the_handler(door: Door) -> None:
    status, text = await door.send(head("/echo", 5, token="nobody"), b"hello")
    assert (status, text.strip()) == (401, "no token") and door.seen == ["caller nobody"]


async def test_a_chunked_body_past_the_limit_is_cut_at_the_limit(door: Door) -> None:
    chunk = b"258\r\n" + b"x" * 600 + b"\r\n" + b"1\r\nx\r\n0\r\n\r\n"
    status, text = await door.send(head("/echo", None, extra="Transfer-Encoding: chunked\r\n"), chunk)
    assert status == 413 and "600 bytes" in text and door.door.budget.used == 0


async def test_a_slow_drip_is_cut_by_the_whole_body_deadline_not_per_read(door: Door) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    writer.write(head("/echo", 500).encode() + b"\r\n")
    loop = asyncio.get_running_loop()
    start = loop.time()
    got: asyncio.Task[tuple[int, str]] = asyncio.ensure_future(answer_when_done(reader))
    while not got.done() and loop.time() - start < 3:  # a byte every 50 ms: each read is quick, the whole is not
        writer.write(b"x")
        await asyncio.wait([got], timeout=0.05)
    status, text = await got
    writer.close()
    assert status == 408 and "within 0.4 s" in text
    assert loop.time() - start < 1.5
    assert door.door.budget.used == 0


async def answer_when_done(reader: asyncio.StreamReader) -> tuple[int, str]:
    return await answer(reader)


async def test_the_budget_is_reserved_before_reading_and_a_full_one_answers_503(door: Door) -> None:
    held = [await asyncio.open_connection("127.0.0.1", door.port) for _ in range(2)]
    for (_, writer), token in zip(held, ("p", "q"), strict=True):
        writer.write(head("/echo", 500, token=token).encode() + b"\r\n")  # 1,000 bytes reserved, none sent
        await writer.drain()
    for _ in range(100):
        if door.door.budget.used == 1000:
            break
        await asyncio.sleep(0.01)
    assert door.door.budget.used == 1000
    status, text = await door.send(head("/echo", 5, token="r"), b"hello")
    assert status == 503 and "too many request bytes" in text
    for _, writer in held:
        writer.close()


async def test_one_caller_has_at_most_its_lane(door: Door) -> None:
    held = [await asyncio.open_connection("127.0.0.1", door.port) for _ in range(2)]
    for _, writer in held:
        writer.write(head("/echo?wait=1", 5).encode() + b"\r\n")
        await writer.drain()
    for _ in range(100):
        if door.door.lanes.in_flight("echo", "a") == 2:
            break
        await asyncio.sleep(0.01)
    status, text = await door.send(head("/echo", 5), b"hello")
    assert status == 429 and "2 request(s) in flight on echo" in text
    assert await door.send(head("/echo", 5, token="b"), b"hello") == (200, "5")  # another caller is served
    for reader, writer in held:  # the held ones end at the route's whole-request deadline
        assert (await answer(reader))[0] == 503
        writer.close()
    assert len(door.door.lanes) == 0


async def test_connections_are_bounded_and_a_slow_head_is_closed(door: Door) -> None:
    held = [await asyncio.open_connection("127.0.0.1", door.port) for _ in range(20)]
    for _, writer in held:
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
    reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
    assert (await answer(reader))[0] == 503  # the 21st: refused at accept
    writer.close()
    for reader, writer in held:  # the header deadline (0.5 s) closes them
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()
    assert await door.send(head("/echo", 5), b"hello") == (200, "5")


async def test_a_source_is_held_to_its_token_bucket() -> None:
    now = [0.0]
    check = ingress.source_check(rate=1.0, burst=2, max_sources=3, clock=lambda: now[0])

    class Request:
        def __init__(self, remote: str) -> None:
            self.remote = remote

    def req(remote: str) -> web.Request:
        return Request(remote)  # type: ignore[return-value]

    assert await check(req("1.2.3.4")) == ("1.2.3.4", "1.2.3.4")
    await check(req("1.2.3.4"))
    with pytest.raises(ingress.Refused) as refused:
        await check(req("1.2.3.4"))
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "1"}
    await check(req("5.6.7.8"))  # another source has its own bucket
    now[0] += 1.0
    await check(req("1.2.3.4"))  # refilled at `rate`


async def test_a_route_registered_around_the_ingress_is_answered_500() -> None:
    door = ingress.Ingress(ingress.Limits(), {})
    app = door.app()

    async def sneaky(request: web.Request) -> web.Response:
        return web.Response(text="no limits here")

    app.router.add_get("/sneaky", sneaky)
    served = ingress.Server(app, door.limits)
    port = await served.start("127.0.0.1", 0)
    try:
        got = await Door(served, port, door, []).send("GET /sneaky HTTP/1.1\r\nHost: x\r\n")
    finally:
        await served.cleanup()
    assert got == (500, "this route was not declared with its limits\n")
