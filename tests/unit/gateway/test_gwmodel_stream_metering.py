"""Streams that report no usage are counted from their text, never metered as 0."""

from __future__ import annotations

import json

import pytest

from longshot.gateway import metering

pytestmark = pytest.mark.unit


def sse(*events: object, done: bool = True) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + (b"data: [DONE]\n\n" if done else b"")


def meter(flavour, body: bytes, estimated_input: int = 0, chunk: int = 5):
    m = metering.Meter(flavour, streaming=True, request_model="req-model")
    for i in range(0, len(body), chunk):
        m.feed(body[i:i + chunk])
    return m.result(estimated_input=estimated_input)


def test_a_streamed_completion_without_usage_is_counted_from_its_text():
    body = sse({"model": "gpt-x", "choices": [{"index": 0, "text": "a" * 40}]},
               {"model": "gpt-x", "choices": [{"index": 0, "text": "b" * 41, "finish_reason": "stop"}]})
    used = meter("openai", body, estimated_input=250)
    assert used == metering.Usage(250, 21, model="gpt-x", estimated=True)


def test_chat_deltas_and_tool_call_arguments_are_counted():
    body = sse({"choices": [{"delta": {"content": "hello"}}]},
               {"choices": [{"delta": {"tool_calls": [{"function": {"arguments": '{"path": "a.py"}'}}]}}]},
               {"choices": [{"delta": {"reasoning_content": "hmm"}}]})
    used = meter("openai", body)
    assert used is not None and used.output_tokens == -(-(5 + 16 + 3) // 4) and used.model == "req-model"


def test_responses_api_deltas_are_counted():
    body = sse({"type": "response.output_text.delta", "delta": "x" * 12})
    assert meter("openai", body).output_tokens == 3


def test_reported_usage_wins_over_the_count():
    body = sse({"choices": [{"text": "x" * 400}]},
               {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}})
    assert meter("openai", body, estimated_input=1000) == metering.Usage(9, 2, model="req-model")


def test_an_anthropic_stream_cut_before_message_delta_counts_its_text():
    body = (b'event: message_start\ndata: {"type": "message_start", "message": {"model": "claude-x", '
            b'"usage": {"input_tokens": 30, "output_tokens": 1}}}\n\n'
            b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {"type": "text_delta", '
            b'"text": "' + b"y" * 80 + b'"}}\n\n')
    assert meter("anthropic", body) == metering.Usage(30, 20, model="claude-x", estimated=True)


def test_a_stream_with_no_events_has_no_usage():
    assert meter("openai", b": keep-alive\n\nnot json\n") is None


def test_a_huge_json_response_is_not_metered():
    m = metering.Meter("openai", streaming=False)
    m.feed(b"{" + b" " * (metering.MAX_JSON_BYTES + 1))
    assert m.result() is None and m.truncated


def test_a_json_response_of_countless_containers_is_not_parsed():
    m = metering.Meter("openai", streaming=False)
    m.feed(b'{"x": [' + b"[]," * 600_000 + b'[]], "usage": {"prompt_tokens": 1}}')
    assert m.result() is None


def test_meters_share_a_bounded_buffer_and_give_it_back():
    buffers = metering.Buffers(100 * 1024)
    first = metering.Meter("openai", streaming=False, buffers=buffers)
    body = json.dumps({"model": "m", "x": "y" * (150 * 1024), "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    for i in range(0, len(body), 4096):
        first.feed(body[i:i + 4096].encode())
    assert buffers.used > 80 * 1024
    second = metering.Meter("openai", streaming=False, buffers=buffers)
    for i in range(0, len(body), 4096):
        second.feed(body[i:i + 4096].encode())
    assert second.truncated and second.result() is None  # no room left: settled at its reservation
    assert first.result() == metering.Usage(3, 4, model="m")
    first.close()
    second.close()
    assert buffers.used == 0


def test_a_long_event_line_takes_from_the_buffer_only_while_it_is_read():
    buffers = metering.Buffers(1024 * 1024)
    m = metering.Meter("openai", streaming=True, buffers=buffers)
    line = b"data: " + json.dumps({"type": "response.completed", "response": {
        "model": "m", "output": "z" * (200 * 1024), "usage": {"input_tokens": 5, "output_tokens": 6}}}).encode()
    m.feed(line[:100_000])
    assert buffers.used > 0
    m.feed(line[100_000:] + b"\n\n")
    assert buffers.used == 0
    assert m.result() == metering.Usage(5, 6, model="m")
