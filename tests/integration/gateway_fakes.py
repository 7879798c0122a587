"""A fake model API for the gateway's tests: scripted replies (JSON or server-sent events, sent in
chunks), optionally held until the test releases them, and every request recorded with its headers."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """A dict (sent as JSON) or a list of byte chunks (sent as server-sent events, one write per chunk), or a
    function of the request's parsed body returning one of them (an upstream that answers what was asked)."""
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None
    """When set, the reply waits for it (so a test can look at the world while a call is in flight)."""


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        with self.server.lock:
            self.server.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                                         body))
            reply = self.server.replies.pop(0) if self.server.replies else Reply(
                500, {"error": {"message": "the fake model API has no reply left"}})
        self.server.arrived.set()
        if reply.hold is not None:
            reply.hold.wait(60)
        if callable(reply.body):
            reply = dataclasses.replace(reply, body=reply.body(body))
        if isinstance(reply.body, list):
            self.send_response(reply.status)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            for chunk in reply.body:
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return
        payload = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    replies: list[Reply]
    seen: list[Seen]
    lock: threading.Lock
    arrived: threading.Event


@dataclass
class FakeModel:
    server: _Server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def seen(self) -> list[Seen]:
        return self.server.seen

    def script(self, *replies: Reply) -> None:
        with self.server.lock:
            self.server.replies.extend(replies)


@contextlib.contextmanager
def fake_model() -> Iterator[FakeModel]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.replies, server.seen, server.lock, server.arrived = [], [], threading.Lock(), threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield FakeModel(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def sse(*events: tuple[str | None, Any], done: bool = False) -> list[bytes]:
    """Server-sent events, one chunk per event."""
    chunks = [(f"event: {name}\n" if name else "").encode() + f"data: {json.dumps(data)}\n\n".encode()
              for name, data in events]
    return chunks + ([b"data: [DONE]\n\n"] if done else [])


def openai_json(model: str, usage: tuple[int, int], *, tool: tuple[str, Any] | None = None,
                content: str | None = "ok") -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool:
        message["tool_calls"] = [{"id": "call_1", "type": "function",
                                  "function": {"name": tool[0], "arguments": json.dumps(tool[1])}}]
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool else "stop"}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}


def openai_stream(model: str, usage: tuple[int, int] | None) -> list[bytes]:
    events: list[tuple[str | None, Any]] = [
        (None, {"model": model, "choices": [{"index": 0, "delta": {"content": "he"}}]}),
        (None, {"model": model, "choices": [{"index": 0, "delta": {"content": "llo"}, "finish_reason": "stop"}]})]
    if usage:
        events.append((None, {"model": model, "choices": [],
                              "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}}))
    return sse(*events, done=True)


def anthropic_json(model: str, usage: tuple[int, int]) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}


def anthropic_stream(model: str, usage: tuple[int, int]) -> list[bytes]:
    return sse(("message_start", {"type": "message_start", "message": {
                   "id": "msg_1", "model": model, "usage": {"input_tokens": usage[0], "output_tokens": 1}}}),
               ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": "hi"}}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                  "usage": {"output_tokens": usage[1]}}),
               ("message_stop", {"type": "message_stop"}))
