"""A hostile agent against the gateway's budget reservation, on a real API server and the real gateway (a fake
model API upstream that generates every token it is allowed): one call with ``n=128`` and ``max_tokens=4000``,
and one call naming no maximum, each against ``spec.budget.maxTokens: 10000``. Before issue 50 the first
metered 512,005 tokens (the reservation ignored ``n`` and went beyond the budget) and the second 30,005 (the
upstream was never told the reserved maximum)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway_attempts import make_attempt, secret
from gateway_fakes import Reply, fake_model, openai_json

pytestmark = pytest.mark.integration

BUDGET = 10_000
UNBOUNDED = 30_000
"""What the greedy upstream generates per choice when the request names no maximum."""


def greedy(body: Any) -> dict[str, Any]:
    """Usage as an upstream reports it that generates ``n`` choices of as many tokens as it is allowed."""
    limits = [body.get(k) for k in ("max_tokens", "max_completion_tokens", "max_output_tokens")]
    limits = [v for v in limits if isinstance(v, int)]
    return openai_json("gpt-test", (5, int(body.get("n") or 1) * (min(limits) if limits else UNBOUNDED)))


@pytest.fixture
def model():
    with fake_model() as m:
        yield m


@pytest.fixture
def attempt(gateway, model, core_v1, custom, namespace):
    secret(core_v1, namespace, "llm-key", {"api-key": "sk-reservations"})
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "longshot-prices"},
                                                     "data": {"prices.yaml": "models:\n  gpt-test: {input: 2, "
                                                                             "output: 8}\n"}})
    spec = {"agent": {"backend": "openai", "model": "gpt-test", "baseUrl": f"{model.url}/v1",
                      "credentialsSecret": "llm-key"}, "budget": {"maxTokens": BUDGET}}
    return make_attempt(core_v1, custom, namespace, gateway.url, build_spec=spec)


@pytest.mark.parametrize(("extra", "field"), [
    ({"n": 128, "max_tokens": 4000}, "max_tokens"),
    ({}, "max_completion_tokens"),
], ids=["n128-max4000", "no-maximum"])
def test_calls_meter_at_most_the_budget(gateway, model, attempt, custom, extra, field):
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "write as much as you may"}], **extra}
    statuses: list[int] = []
    while 402 not in statuses and len(statuses) < 6:  # until the budget's end refuses the call
        model.script(Reply(body=greedy))
        r = httpx.post(f"{gateway.url}/model/openai/chat/completions", json=body, headers=attempt.headers,
                       timeout=60)
        statuses.append(r.status_code)
        assert r.status_code in (200, 402), r.text
        if r.status_code == 402:
            assert r.json()["error"]["type"] == "budget_exceeded"
    used = attempt.progress(custom).get("tokens", 0)
    assert statuses[0] == 200 and statuses[-1] == 402
    assert 0 < used <= BUDGET, f"{statuses}: metered {used} tokens against a budget of {BUDGET}"
    for seen in model.seen:  # the upstream was told every reserved maximum
        assert 0 < seen.body[field] * seen.body.get("n", 1) <= BUDGET
