"""Reading model usage from API responses as they pass through the gateway (pure).

Both response shapes of both APIs are understood:

* OpenAI-compatible, JSON: ``usage.prompt_tokens`` / ``completion_tokens`` (chat completions; cached
  prompt tokens in ``usage.prompt_tokens_details.cached_tokens``) or ``usage.input_tokens`` /
  ``output_tokens`` (the Responses API).
* OpenAI-compatible, server-sent events: the chunk that carries ``usage`` (the gateway asks for it with
  ``stream_options.include_usage``), or the ``response.completed`` event of the Responses API.
* Anthropic, JSON: ``usage.input_tokens``, ``output_tokens``, ``cache_creation_input_tokens``,
  ``cache_read_input_tokens``.
* Anthropic, server-sent events: ``message_start`` carries the input side, each ``message_delta`` the
  output tokens so far.

A stream that ends without usage (a server that ignores ``stream_options``, a stream cut short) is
counted: its output is the bytes of text and tool-call arguments in its deltas divided by
``BYTES_PER_TOKEN`` (rounded up), its input the gateway's estimate of the request (``estimated_input``);
the result is marked ``estimated``. An Anthropic stream cut before its ``message_delta`` counts the larger
of the two. A body with no usage at all (not JSON, too large, no events) has no result: the gateway then
settles the call at its full reservation.

``input_tokens`` always counts every prompt token, cached or not; ``cache_read_tokens`` and
``cache_write_tokens`` say how many of them were cache reads and writes (priced differently).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from longshot.api import boundedjson

Flavour = Literal["openai", "anthropic"]
MAX_JSON_BYTES = 2 * 1024 * 1024
RESPONSE_BUDGET = boundedjson.Budget(max_bytes=MAX_JSON_BYTES, max_values=400_000, max_depth=64)
"""What parsing an upstream's answer for its usage may cost (``api.boundedjson``; objects are reduced to the usage
keys as they are built). An answer over it is not metered: the call is settled at its reservation."""
EVENT_BUDGET = boundedjson.Budget(max_bytes=MAX_JSON_BYTES, max_values=100_000, max_depth=64)
"""What parsing one server-sent event of a streamed answer may cost (an event over it is not counted)."""
"""Largest JSON response body read for its usage (a bigger one passes through and is settled at its
reservation): about 500,000 output tokens."""
MAX_SSE_LINE = 1024 * 1024
"""Longest server-sent-event line looked at."""
FREE_BYTES = 64 * 1024
"""What a meter may buffer (a JSON body, one event line) without asking its :class:`Buffers`."""
BYTES_PER_TOKEN = 4
"""Bytes of streamed text per output token, when a stream reports no usage."""


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    model: str | None = None
    estimated: bool = False
    """Counted from the stream's text, not reported by the API."""

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _model(data: dict[str, Any]) -> str | None:
    model = data.get("model")
    return model[:256] if isinstance(model, str) and model else None


def openai_usage(usage: Any, model: str | None) -> Usage | None:
    """Usage from an OpenAI-compatible ``usage`` object (chat completions or Responses)."""
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        details = usage.get("prompt_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
        return Usage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")), cached, 0, model)
    if "input_tokens" in usage or "output_tokens" in usage:
        details = usage.get("input_tokens_details")
        cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else 0
        return Usage(_int(usage.get("input_tokens")), _int(usage.get("output_tokens")), cached, 0, model)
    return None


def anthropic_usage(usage: Any, model: str | None) -> Usage | None:
    """Usage from an Anthropic ``usage`` object; ``input_tokens`` there excludes the cache, here it does not."""
    if not isinstance(usage, dict):
        return None
    read, write = _int(usage.get("cache_read_input_tokens")), _int(usage.get("cache_creation_input_tokens"))
    return Usage(_int(usage.get("input_tokens")) + read + write, _int(usage.get("output_tokens")), read, write, model)


def from_json(flavour: Flavour, body: Any) -> Usage | None:
    """Usage of a whole (non-streamed) response body, None when it reports none."""
    if not isinstance(body, dict):
        return None
    if flavour == "openai":
        return openai_usage(body.get("usage"), _model(body))
    return anthropic_usage(body.get("usage"), _model(body))


_USAGE_KEYS = frozenset({"usage", "model", "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
                         "prompt_tokens_details", "input_tokens_details", "cached_tokens", "cache_read_input_tokens",
                         "cache_creation_input_tokens"})


def _usage_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # a whole response is parsed keeping only what metering reads: every object shrinks as it is built
    return {k: v for k, v in pairs if k in _USAGE_KEYS}


class Buffers:
    """The bytes all meters of a process may buffer beyond ``FREE_BYTES`` each, together (one event loop).
    A meter refused more stops buffering that body or line: the call is settled as unmetered."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used = max(self.used - n, 0)


class Meter:
    """Fed a response body chunk by chunk (JSON or server-sent events); :meth:`result` is its usage."""

    def __init__(self, flavour: Flavour, *, streaming: bool, request_model: str | None = None,
                 buffers: Buffers | None = None) -> None:
        self.flavour = flavour
        self.buffers = buffers
        self._taken = 0
        self.streaming = streaming
        self.request_model = request_model
        self.truncated = False
        self._body = bytearray()
        self._line = bytearray()
        self._skip_line = False
        self._event: str | None = None
        self._usage: Usage | None = None
        self._model: str | None = None
        self.content_bytes = 0
        """Bytes of text and tool-call arguments seen in stream deltas."""
        self.events = 0

    def _room(self, size: int) -> bool:
        """Whether the buffer may grow to ``size`` bytes (taking what it needs beyond FREE_BYTES)."""
        need = max(size - FREE_BYTES, 0) - self._taken
        if need <= 0 or self.buffers is None:
            return True
        if not self.buffers.take(need):
            return False
        self._taken += need
        return True

    def _free(self) -> None:
        if self.buffers is not None and self._taken:
            self.buffers.give(self._taken)
        self._taken = 0

    def close(self) -> None:
        """Give back what the meter buffered (call it once the response is done)."""
        self._body = bytearray()
        self._line = bytearray()
        self._free()

    def feed(self, chunk: bytes) -> None:
        if not self.streaming:
            if self.truncated:
                return
            size = len(self._body) + len(chunk)
            if size > MAX_JSON_BYTES or not self._room(size):
                self.truncated = True
                self._body = bytearray()
                self._free()
            else:
                self._body += chunk
            return
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not self._skip_line:
                size = len(self._line) + len(piece)
                if size > MAX_SSE_LINE or not self._room(size):
                    self._skip_line, self.truncated = True, True
                    self._line = bytearray()
                    self._free()
                else:
                    self._line += piece
            if end < 0:
                return
            if not self._skip_line:
                self._on_line(bytes(self._line).rstrip(b"\r"))
            if self._taken:
                self._line = bytearray()
                self._free()
            else:
                self._line.clear()
            self._skip_line = False
            start = end + 1

    def result(self, estimated_input: int = 0) -> Usage | None:
        """The response's usage; for a stream without usage, an estimate (see the module's docstring)."""
        if not self.streaming:
            if self.truncated or not self._body:
                return None
            raw = bytes(self._body)
            try:  # over its budget (countless tiny values): not parsed, settled at its reservation
                body = boundedjson.loads(raw, RESPONSE_BUDGET, object_pairs_hook=_usage_keys)
            except boundedjson.Refused:
                return None
            usage = from_json(self.flavour, body)
        else:
            if self._line and not self._skip_line:  # a last line without its newline
                self._on_line(bytes(self._line).rstrip(b"\r"))
                self._line.clear()
            usage = self._usage
            counted = -(-self.content_bytes // BYTES_PER_TOKEN)
            if usage is None and self.events:
                usage = Usage(estimated_input, counted, model=self._model, estimated=True)
            elif usage is not None and self.flavour == "anthropic" and counted > usage.output_tokens:
                usage = replace(usage, output_tokens=counted, estimated=True)
        if usage is None:
            return None
        return replace(usage, model=usage.model or self._model or self.request_model)

    # --- server-sent events -------------------------------------------------------------------------

    def _on_line(self, line: bytes) -> None:
        if line.startswith(b"event:"):
            self._event = line[6:].strip().decode(errors="replace")
            return
        if not line.startswith(b"data:"):
            if not line:
                self._event = None
            return
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            return
        try:
            data = boundedjson.loads(payload, EVENT_BUDGET)
        except boundedjson.Refused:
            return
        if isinstance(data, dict):
            self.events += 1
            self._count(data)
            self._on_data(data)

    def _count(self, data: dict[str, Any]) -> None:
        """Add the text of a delta event to ``content_bytes`` (both APIs' chat, completion and Responses shapes)."""
        texts: list[Any] = []
        choices = data.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                texts.append(choice.get("text"))
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    texts += [delta.get("content"), delta.get("reasoning_content"), delta.get("reasoning")]
                    calls = delta.get("tool_calls")
                    for call in calls if isinstance(calls, list) else ():
                        function = call.get("function") if isinstance(call, dict) else None
                        if isinstance(function, dict):
                            texts.append(function.get("arguments"))
        delta = data.get("delta")
        if isinstance(delta, str):  # Responses API: response.output_text.delta and the like
            texts.append(delta)
        elif isinstance(delta, dict):  # Anthropic content_block_delta
            texts += [delta.get("text"), delta.get("partial_json"), delta.get("thinking")]
        self.content_bytes += sum(len(t.encode()) for t in texts if isinstance(t, str))

    def _on_data(self, data: dict[str, Any]) -> None:
        kind = data.get("type") if isinstance(data.get("type"), str) else self._event
        if self.flavour == "openai":
            self._model = _model(data) or self._model
            if kind in ("response.completed", "response.incomplete", "response.failed"):
                response = data.get("response")
                if isinstance(response, dict):
                    self._model = _model(response) or self._model
                    self._usage = openai_usage(response.get("usage"), self._model) or self._usage
                return
            if data.get("usage") is not None:
                self._usage = openai_usage(data.get("usage"), self._model) or self._usage
            return
        if kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                self._model = _model(message) or self._model
                self._usage = anthropic_usage(message.get("usage"), self._model)
        elif kind == "message_delta":
            usage = data.get("usage")
            if not isinstance(usage, dict):
                return
            base = self._usage or Usage(model=self._model)
            if "input_tokens" in usage or "cache_read_input_tokens" in usage:
                base = anthropic_usage(usage, self._model) or base
            self._usage = replace(base, output_tokens=_int(usage.get("output_tokens")) or base.output_tokens)
