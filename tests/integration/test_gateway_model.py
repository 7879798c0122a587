"""Model calls through the gateway against fake OpenAI and Anthropic APIs: the key is injected, usage is
metered and priced onto the AgentTask as it happens, the build's budget stops calls, a 429 backs off the
whole build, and two replicas metering one task lose no update."""

from __future__ import annotations

import concurrent.futures
import json
import threading

import httpx
import pytest
from gateway_attempts import make_attempt, secret
from gateway_fakes import Reply, anthropic_json, anthropic_stream, fake_model, openai_json, openai_stream
from gateway_server import GatewayThread

from longshot.core import usage

pytestmark = pytest.mark.integration

API_KEY = "sk-upstream-0123456789abcdefghij"
PRICES = """currency: USD
models:
  gpt-test: {input: 2, output: 8}
  "claude-test*": {input: 3, output: 15}
"""


@pytest.fixture
def model():
    with fake_model() as m:
        yield m


@pytest.fixture
def setup(core_v1, namespace):
    secret(core_v1, namespace, "llm-key", {"api-key": API_KEY})
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "longshot-prices"},
                                                     "data": {"prices.yaml": PRICES}})


def openai_attempt(core_v1, custom, namespace, gateway, model, **kw):
    budget = kw.pop("budget", {})
    spec = {"agent": {"backend": "openai", "model": "gpt-test", "baseUrl": f"{model.url}/v1",
                      "credentialsSecret": "llm-key"}, "budget": budget}
    return make_attempt(core_v1, custom, namespace, gateway.url, build_spec=spec, **kw)


def chat(gateway, a, *, stream=False, model_name="gpt-test", timeout=60):
    body = {"model": model_name, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return httpx.post(f"{gateway.url}/model/openai/chat/completions", json=body, headers=a.headers, timeout=timeout)


def test_openai_call_gets_the_builds_key_and_its_usage_is_priced_onto_the_task(
        gateway, setup, model, core_v1, custom, namespace):
    a = openai_attempt(core_v1, custom, namespace, gateway, model)
    model.script(Reply(body=openai_json("gpt-test", (1000, 500))))

    r = chat(gateway, a)

    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok"
    (seen,) = model.seen
    assert seen.path == "/v1/chat/completions" and seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert a.token not in json.dumps(seen.headers) and "x-api-key" not in seen.headers
    p = a.progress(custom)
    assert (p["inputTokens"], p["outputTokens"], p["tokens"], p["calls"], p["attempt"]) == (1000, 500, 1500, 1, 1)
    assert p["cost"] == pytest.approx((1000 * 2 + 500 * 8) / 1e6)
    metrics = httpx.get(f"{gateway.metrics_url}/metrics", timeout=30).text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line and not line.startswith("#")}
    assert samples['longshot_gateway_tokens_total{api="openai",kind="input"}'] >= 1000
    assert samples['longshot_gateway_requests_total{result="ok",route="model"}'] >= 1
    assert a.token not in metrics and "b1-t1" not in metrics
    assert httpx.get(f"{gateway.metrics_url}/healthz", timeout=30).status_code == 200
    assert httpx.get(f"{gateway.metrics_url}/readyz", timeout=30).status_code == 200
    # the agents' port serves neither metrics nor probes: an agent cannot read other builds' figures
    for path in ("/metrics", "/healthz", "/readyz"):
        assert httpx.get(f"{gateway.url}{path}", timeout=30).status_code == 404, path


def test_a_streamed_openai_call_is_metered_from_the_usage_chunk_the_gateway_asks_for(
        gateway, setup, model, core_v1, custom, namespace):
    a = openai_attempt(core_v1, custom, namespace, gateway, model)
    model.script(Reply(body=openai_stream("gpt-test", (40, 2))))

    r = chat(gateway, a, stream=True)

    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.count("data: ") == 4 and r.text.rstrip().endswith("data: [DONE]")
    assert model.seen[0].body["stream_options"] == {"include_usage": True}
    p = a.progress(custom)
    assert (p["tokens"], p["calls"]) == (42, 1) and p["cost"] == pytest.approx((40 * 2 + 2 * 8) / 1e6)


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_calls_get_x_api_key_and_are_metered(gateway, setup, model, core_v1, custom, namespace, stream):
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec={"agent": {
        "backend": "anthropic", "model": "claude-test-1", "baseUrl": model.url, "credentialsSecret": "llm-key"}})
    model.script(Reply(body=anthropic_stream("claude-test-1", (300, 20)) if stream
                       else anthropic_json("claude-test-1", (300, 20))))

    r = httpx.post(f"{gateway.url}/model/anthropic/v1/messages", headers={
        "x-api-key": a.token, "anthropic-version": "2023-06-01"}, json={
        "model": "claude-test-1", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "stream": stream},
        timeout=60)

    assert r.status_code == 200
    (seen,) = model.seen
    assert seen.path == "/v1/messages" and seen.headers["x-api-key"] == API_KEY
    assert seen.headers["anthropic-version"] == "2023-06-01" and "authorization" not in seen.headers
    p = a.progress(custom)
    assert (p["inputTokens"], p["outputTokens"]) == (300, 20)
    assert p["cost"] == pytest.approx((300 * 3 + 20 * 15) / 1e6)


def test_an_unpriced_model_costs_zero_with_one_warning_event(gateway, setup, model, core_v1, custom, namespace):
    a = openai_attempt(core_v1, custom, namespace, gateway, model)
    model.script(Reply(body=openai_json("mystery-model", (10, 10))), Reply(body=openai_json("mystery-model", (5, 5))))

    assert chat(gateway, a, model_name="mystery-model").status_code == 200
    assert chat(gateway, a, model_name="mystery-model").status_code == 200

    p = a.progress(custom)
    assert (p["tokens"], p["calls"], p["cost"]) == (30, 2, 0)
    events = [e for e in core_v1.list_namespaced_event(namespace).items if e.reason == "UnpricedModel"]
    assert len(events) == 1 and events[0].type == "Warning" and events[0].involved_object.kind == "BuildRequest"
    assert "mystery-model" in events[0].message and "longshot-prices" in events[0].message


def test_a_spent_budget_refuses_further_calls_before_they_reach_the_model(
        gateway, setup, model, core_v1, custom, namespace):
    a = openai_attempt(core_v1, custom, namespace, gateway, model, budget={"maxTokens": 1000})
    model.script(Reply(body=openai_json("gpt-test", (1200, 300))), Reply(body=openai_json("gpt-test", (1, 1))))

    assert chat(gateway, a).status_code == 200
    r = chat(gateway, a)

    assert r.status_code == 402
    assert r.json()["error"]["type"] == "budget_exceeded"
    assert "1500 tokens of its budget of 1000" in r.json()["error"]["message"]
    assert len(model.seen) == 1


def test_the_budget_counts_every_task_of_the_build(gateway, setup, model, core_v1, custom, namespace):
    first = openai_attempt(core_v1, custom, namespace, gateway, model, budget={"maxCost": 0.005})
    second = make_attempt(core_v1, custom, namespace, gateway.url, task="b1-t2")
    model.script(Reply(body=openai_json("gpt-test", (1000, 500))))  # 0.006
    assert chat(gateway, first).status_code == 200
    r = chat(gateway, second)
    assert r.status_code == 402 and "spec.budget.maxCost" in r.json()["error"]["message"]


def test_one_429_holds_the_whole_builds_calls_on_both_replicas(
        gateway, gateway_settings, setup, model, core_v1, custom, namespace, control_plane, tmp_path):
    first = openai_attempt(core_v1, custom, namespace, gateway, model)
    second = make_attempt(core_v1, custom, namespace, gateway.url, task="b1-t2")
    model.script(Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "30"}))

    r = chat(gateway, first)
    assert r.status_code == 429 and r.headers["retry-after"] == "30"
    # another Pod of the build, on this replica and on the other one: held without reaching the model
    r = chat(gateway, second)
    assert r.status_code == 429 and 25 <= int(r.headers["retry-after"]) <= 31  # stored in whole seconds
    assert "answered 429 to this build" in r.json()["error"]["message"]
    other = gateway_settings.replace(mirror_dir=str(tmp_path / "replica-2"))
    with GatewayThread(control_plane.kubeconfig, other) as replica:
        r = httpx.post(f"{replica.url}/model/openai/chat/completions", json={"model": "gpt-test"},
                       headers=second.headers, timeout=60)
        assert r.status_code == 429 and int(r.headers["retry-after"]) <= 31
    assert len(model.seen) == 1
    assert first.progress(custom)["backoffApi"] == "openai"


def test_two_replicas_metering_one_task_at_once_lose_no_update(
        gateway, gateway_settings, setup, model, core_v1, custom, namespace, control_plane, tmp_path):
    a = openai_attempt(core_v1, custom, namespace, gateway, model)
    calls = 16
    model.script(*[Reply(body=openai_json("gpt-test", (10, 5))) for _ in range(calls)])
    other = gateway_settings.replace(mirror_dir=str(tmp_path / "replica-2"))
    with GatewayThread(control_plane.kubeconfig, other) as replica, \
            concurrent.futures.ThreadPoolExecutor(4) as pool:  # the per-attempt limit is 4 a replica
        urls = [gateway.url, replica.url] * (calls // 2)
        results = list(pool.map(lambda url: httpx.post(
            f"{url}/model/openai/chat/completions", json={"model": "gpt-test"}, headers=a.headers,
            timeout=120).status_code, urls))
    assert results == [200] * calls
    p = a.progress(custom)
    assert (p["calls"], p["tokens"], p["inputTokens"]) == (calls, 15 * calls, 10 * calls)
    assert p["cost"] == pytest.approx(calls * (10 * 2 + 5 * 8) / 1e6)


def test_a_call_answered_after_the_task_s_next_attempt_started_metering_is_kept_for_its_own_attempt(
        gateway, setup, model, core_v1, custom, namespace):
    """A model call in flight when its attempt's Pod stopped is charged when its answer arrives; by then the operator
    may have recorded the attempt and the next one written its first progress. The charge goes to
    ``progress.earlier`` (it was dropped), and the build's usage counts it (``core.usage``)."""
    a = openai_attempt(core_v1, custom, namespace, gateway, model)
    held = threading.Event()
    model.script(Reply(body=openai_json("gpt-test", (1000, 500)), hold=held))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        call = pool.submit(chat, gateway, a)
        assert model.server.arrived.wait(60)
        # meanwhile: attempt 1 recorded as ended with what was metered before (100 tokens), attempt 2 metering
        first = custom.get_namespaced_custom_object_status("longshot.dev", "v1alpha1", namespace, "agenttasks",
                                                           a.task["metadata"]["name"])["status"]["attempts"][0]
        attempts = [{**first, "tokens": 100, "cost": 0.001, "endTime": "2026-11-29T10:00:00Z"},
                    {"number": 2, "pod": f"{a.task['metadata']['name']}-a2"}]
        custom.patch_namespaced_custom_object_status(
            "longshot.dev", "v1alpha1", namespace, "agenttasks", a.task["metadata"]["name"],
            {"status": {"attempts": attempts, "progress": {"attempt": 2, "tokens": 7, "cost": 0.0}}})
        held.set()
        assert call.result().status_code == 200
    p = a.progress(custom)
    assert (p["attempt"], p["tokens"], p["cost"]) == (2, 7, 0)  # attempt 2's own figures untouched
    assert [(e["attempt"], e["tokens"]) for e in p["earlier"]] == [(1, 1600)]  # its record's 100 and the call's 1,500
    assert p["earlier"][0]["cost"] == pytest.approx(0.001 + (1000 * 2 + 500 * 8) / 1e6)
    task = custom.get_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "agenttasks",
                                               a.task["metadata"]["name"])
    assert usage.task_usage(task).tokens == 1607


def test_a_listed_get_route_is_forwarded_without_its_query_and_not_metered(
        gateway, setup, model, core_v1, custom, namespace):
    a = openai_attempt(core_v1, custom, namespace, gateway, model, budget={"maxTokens": 1})
    model.script(Reply(body={"object": "list", "data": [{"id": "gpt-test"}]}))

    r = httpx.get(f"{gateway.url}/model/openai/models?after=x&key=steal", headers=a.headers, timeout=60)

    assert r.status_code == 200 and r.json()["data"][0]["id"] == "gpt-test"
    (seen,) = model.seen
    assert (seen.method, seen.path) == ("GET", "/v1/models")
    assert a.progress(custom).get("calls", 0) == 0
