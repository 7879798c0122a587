"""Usage read from model responses (JSON and server-sent events, both APIs) and priced from the table."""

from __future__ import annotations

import json

import pytest

from longshot.gateway import metering, pricing
from longshot.gateway.metering import Usage

pytestmark = pytest.mark.unit


def sse(*events: tuple[str | None, object], done: bool = False) -> bytes:
    out = b""
    for name, data in events:
        if name:
            out += f"event: {name}\n".encode()
        out += f"data: {json.dumps(data)}\n\n".encode()
    return out + (b"data: [DONE]\n\n" if done else b"")


def meter_all(flavour, body: bytes, *, streaming: bool, chunk: int = 7, request_model=None):
    m = metering.Meter(flavour, streaming=streaming, request_model=request_model)
    for i in range(0, len(body), chunk):
        m.feed(body[i:i + chunk])
    return m.result()


def test_openai_chat_completion_json():
    body = {"model": "gpt-4o-2024", "choices": [], "usage": {
        "prompt_tokens": 120, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 100}}}
    assert meter_all("openai", json.dumps(body).encode(), streaming=False) == Usage(120, 30, 100, 0, "gpt-4o-2024")


def test_openai_responses_api_json():
    body = {"model": "gpt-5", "usage": {"input_tokens": 50, "output_tokens": 5,
                                        "input_tokens_details": {"cached_tokens": 10}}}
    assert metering.from_json("openai", body) == Usage(50, 5, 10, 0, "gpt-5")


def test_openai_streamed_chat_completion_counts_the_usage_chunk():
    body = sse((None, {"model": "gpt-4o", "choices": [{"delta": {"content": "he"}}]}),
               (None, {"model": "gpt-4o", "choices": [{"delta": {"content": "llo"}}], "usage": None}),
               (None, {"model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}),
               done=True)
    for chunk in (1, 5, 64, len(body)):
        assert meter_all("openai", body, streaming=True, chunk=chunk) == Usage(9, 2, 0, 0, "gpt-4o")


def test_openai_streamed_responses_api_reads_response_completed():
    body = sse(("response.output_text.delta", {"type": "response.output_text.delta", "delta": "x"}),
               ("response.completed", {"type": "response.completed", "response": {
                   "model": "gpt-5", "usage": {"input_tokens": 11, "output_tokens": 4}}}))
    assert meter_all("openai", body, streaming=True) == Usage(11, 4, 0, 0, "gpt-5")


def test_anthropic_json_counts_cache_reads_and_writes_as_input():
    body = {"model": "claude-sonnet-4-5", "usage": {"input_tokens": 10, "output_tokens": 20,
                                                    "cache_read_input_tokens": 1000,
                                                    "cache_creation_input_tokens": 200}}
    assert metering.from_json("anthropic", body) == Usage(1210, 20, 1000, 200, "claude-sonnet-4-5")


def test_anthropic_stream_takes_input_from_message_start_and_the_last_output_count():
    body = sse(("message_start", {"type": "message_start", "message": {
                   "model": "claude-haiku-4-5", "usage": {"input_tokens": 25, "output_tokens": 1,
                                                          "cache_read_input_tokens": 5}}}),
               ("content_block_delta", {"type": "content_block_delta", "delta": {"text": "hi"}}),
               ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 7}}),
               ("message_delta", {"type": "message_delta", "usage": {"output_tokens": 15}}),
               ("message_stop", {"type": "message_stop"}))
    assert meter_all("anthropic", body, streaming=True, chunk=3) == Usage(30, 15, 5, 0, "claude-haiku-4-5")


def test_no_usage_garbage_and_oversized_lines_are_survived():
    assert meter_all("openai", b"not json", streaming=False) is None
    assert meter_all("anthropic", b'{"content": []}', streaming=False) is None
    assert meter_all("openai", b"data: {broken\n\ndata: [DONE]\n", streaming=True) is None
    m = metering.Meter("openai", streaming=True)
    m.feed(b"data: " + b"x" * (metering.MAX_SSE_LINE + 10))
    m.feed(b"\n" + sse((None, {"model": "m", "usage": {"prompt_tokens": 1, "completion_tokens": 1}})))
    assert m.result() == Usage(1, 1, 0, 0, "m") and m.truncated


def test_the_request_model_names_a_response_that_does_not():
    body = json.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode()
    assert meter_all("openai", body, streaming=False, request_model="my-model").model == "my-model"


TABLE = pricing.PriceTable.parse("""
currency: USD
models:
  gpt-4o: {input: 2.5, output: 10, cacheRead: 1.25}
  "gpt-4o*": {input: 100, output: 100}
  "claude-*": {input: 3, output: 15, cacheRead: 0.3, cacheWrite: 3.75}
  "*": {input: 1000, output: 1000}
""")


def test_prices_are_per_million_tokens_with_cache_prices():
    assert TABLE.cost(Usage(1_000_000, 1_000_000, 0, 0, "gpt-4o")) == pytest.approx(12.5)
    assert TABLE.cost(Usage(1_000_000, 0, 500_000, 0, "gpt-4o")) == pytest.approx(1.25 + 0.625)
    claude = Usage(1210, 20, 1000, 200, "claude-sonnet-4-5")
    assert TABLE.cost(claude) == pytest.approx((10 * 3 + 1000 * 0.3 + 200 * 3.75 + 20 * 15) / 1e6)


def test_an_exact_name_beats_globs_and_the_longest_glob_wins():
    assert TABLE.lookup("gpt-4o").input == 2.5
    assert TABLE.lookup("gpt-4o-mini").input == 100
    assert TABLE.lookup("other").input == 1000


def test_an_unknown_model_has_no_price():
    table = pricing.PriceTable.parse("models:\n  gpt-4o: {input: 1, output: 1}\n")
    assert table.cost(Usage(10, 10, 0, 0, "mystery")) is None
    assert table.cost(Usage(10, 10, 0, 0, None)) is None
    assert pricing.PriceTable.parse("").cost(Usage(1, 1, 0, 0, "x")) is None


@pytest.mark.parametrize("text, message", [
    ("models: [", "not valid YAML"),
    ("models:\n  m: {input: -1, output: 1}\n", "models.m.input"),
    ("models:\n  m: {input: 1}\n", "models.m.output"),
    ("model: {}\n", "model"),
])
def test_a_bad_table_is_refused_naming_the_key(text, message):
    with pytest.raises(pricing.PriceError, match=message):
        pricing.PriceTable.parse(text)


class _PriceConfigMaps:
    """The gateway's cluster as the price table sees it: get_configmap answers from a list, or raises."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.reads = 0

    def get_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        self.reads += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer  # type: ignore[return-value]


def test_the_price_table_is_kept_when_rbac_hides_it_or_it_breaks_and_is_re_read_after_its_cache_time():
    import asyncio

    from longshot.gateway.modelproxy import Prices
    from longshot.gateway.settings import GatewaySettings
    from longshot.runtime import kube

    now = [0.0]
    good = {pricing.CONFIGMAP_KEY: "models:\n  gpt-4o: {input: 2.5, output: 10}\n"}
    newer = {pricing.CONFIGMAP_KEY: "models:\n  gpt-4o: {input: 5, output: 20}\n"}
    cluster = _PriceConfigMaps(good, kube.Forbidden("configmaps longshot-prices"), {pricing.CONFIGMAP_KEY: "[:"},
                               newer)
    prices = Prices(cluster, GatewaySettings(prices_cache_seconds=30.0), clock=lambda: now[0])  # type: ignore[arg-type]

    async def table_at(t: float) -> pricing.PriceTable:
        now[0] = t
        return await prices.table()

    assert asyncio.run(table_at(0)).lookup("gpt-4o").input == 2.5
    assert asyncio.run(table_at(10)).lookup("gpt-4o").input == 2.5 and cluster.reads == 1  # cached
    assert asyncio.run(table_at(31)).lookup("gpt-4o").input == 2.5  # Forbidden: the last good table stays
    assert asyncio.run(table_at(62)).lookup("gpt-4o").input == 2.5  # not YAML: the last good table stays
    assert asyncio.run(table_at(93)).lookup("gpt-4o").input == 5  # readable again: the new prices
    assert cluster.reads == 4
