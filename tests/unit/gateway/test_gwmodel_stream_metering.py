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
