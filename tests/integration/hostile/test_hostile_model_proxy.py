"""Hostile agents against the gateway's model proxy, on a real API server and the real gateway (fake model
APIs upstream): the build's key stays with its provider, the path cannot leave the allowlist, a huge body is
refused before it is read, parallel calls cannot spend past the budget, every stream is metered, and an
attempt cannot call faster than its rate limit. Each test fails on the gateway before issue 29."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import sys
import threading
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway_attempts import make_attempt, secret
from gateway_fakes import Reply, fake_model, openai_json, sse
from gateway_server import GatewayThread

from longshot_testing import controlplane

pytestmark = pytest.mark.integration

API_KEY = "sk-upstream-hostile-0123456789"
PRICES = "models:\n  gpt-test: {input: 2, output: 8}\n"


@pytest.fixture
def model():
    with fake_model() as m:
        yield m


@pytest.fixture
def setup(core_v1, namespace):
    secret(core_v1, namespace, "llm-key", {"api-key": API_KEY})
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "longshot-prices"},
                                                     "data": {"prices.yaml": PRICES}})


def openai_attempt(core_v1, custom, namespace, url, model, *, budget=None, task="b1-t1"):
    spec = {"agent": {"backend": "openai", "model": "gpt-test", "baseUrl": f"{model.url}/v1",
                      "credentialsSecret": "llm-key"}, "budget": budget or {}}
    return make_attempt(core_v1, custom, namespace, url, build_spec=spec, task=task)


def raw(url: str, method: str, target: str, headers: dict[str, str], body: bytes = b"",
        content_length: int | None = None) -> tuple[int, dict[str, object]]:
    """One request with exactly this target (no client-side normalisation or encoding)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body) if content_length is None else content_length))
        conn.endheaders()
        if body:
            conn.send(body)
        response = conn.getresponse()
        data = response.read()
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = {"raw": data.decode(errors="replace")}
        return response.status, parsed
    finally:
        conn.close()


def test_the_builds_key_never_goes_to_the_other_providers_api(
        gateway_settings, setup, model, core_v1, custom, namespace, control_plane):
    with fake_model() as other:
        settings = gateway_settings.replace(anthropic_url=other.url)
        with GatewayThread(control_plane.kubeconfig, settings) as gw:
            a = openai_attempt(core_v1, custom, namespace, gw.url, model)
            r = httpx.post(f"{gw.url}/model/anthropic/v1/messages", headers={"x-api-key": a.token}, json={
                "model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
        assert r.status_code == 403
        assert "uses the openai API" in r.json()["error"]["message"]
        assert other.seen == [] and model.seen == []


@pytest.mark.parametrize("target", [
    "/model/openai/..%2F..%2Fadmin/secrets",
    "/model/openai/%2e%2e/%2e%2e/admin",
    "/model/openai/chat/completions%3Fapi-version=evil",
    "/model/openai/chat%2Fcompletions",
])
def test_a_path_cannot_escape_the_base_url_or_inject_a_query(
        gateway, setup, model, core_v1, custom, namespace, target):
    a = openai_attempt(core_v1, custom, namespace, gateway.url, model)
    model.script(Reply(body=openai_json("gpt-test", (1, 1))))

    status, body = raw(gateway.url, "POST", target, a.headers, b'{"model": "gpt-test"}')

    assert status == 400, body
    assert "percent-encoding" in json.dumps(body)
    assert model.seen == []


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "batches", 404), ("DELETE", "files/file-abc", 404), ("GET", "files", 404),
    ("DELETE", "chat/completions", 405)])
def test_unlisted_methods_and_paths_are_refused(gateway, setup, model, core_v1, custom, namespace, method, path,
                                                status):
    a = openai_attempt(core_v1, custom, namespace, gateway.url, model)
    model.script(Reply(body={"id": "batch_1"}))

    r = httpx.request(method, f"{gateway.url}/model/openai/{path}", headers=a.headers,
                      content=b'{"input_file_id": "f"}' if method == "POST" else None, timeout=60)

    assert r.status_code == status
    assert "POST /model/openai/chat/completions" in r.json()["error"]["message"] or status == 405
    assert model.seen == []


def test_a_huge_body_is_refused_before_it_is_read(gateway, setup, model, core_v1, custom, namespace):
    a = openai_attempt(core_v1, custom, namespace, gateway.url, model)
    model.script(Reply(body=openai_json("gpt-test", (1, 1))))

    # declared 1 GiB, nothing sent: the answer comes from the Content-Length alone
    status, body = raw(gateway.url, "POST", "/model/openai/chat/completions", a.headers,
                       content_length=1024 ** 3)
    assert status == 413 and "max_model_request_bytes" in json.dumps(body)
    big = b'{"model": "gpt-test", "messages": [{"role": "user", "content": "' + b"x" * (8 * 1024 * 1024) + b'"}]}'
    r = httpx.post(f"{gateway.url}/model/openai/chat/completions", headers=a.headers, content=big, timeout=60)
    assert r.status_code == 413
    assert model.seen == []
    assert httpx.get(f"{gateway.metrics_url}/healthz", timeout=30).status_code == 200


def test_twenty_parallel_calls_cannot_spend_past_max_tokens(
        gateway_settings, setup, model, core_v1, custom, namespace, control_plane):
    settings = gateway_settings.replace(max_model_calls_per_attempt=64)  # only the budget limits
    release = threading.Event()
    model.script(*[Reply(body=openai_json("gpt-test", (40, 50)), hold=release) for _ in range(20)])
    body = {"model": "gpt-test", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    reservation = len(json.dumps(body)) // 4 + 1 + 50
    with GatewayThread(control_plane.kubeconfig, settings) as gw:
        a = openai_attempt(core_v1, custom, namespace, gw.url, model, budget={"maxTokens": 100})
        done: list[int] = []

        def call(_: int) -> int:
            status = httpx.post(f"{gw.url}/model/openai/chat/completions", json=body, headers=a.headers,
                                timeout=120).status_code
            done.append(status)
            return status

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(call, i) for i in range(20)]
            # every call is either answered by the gateway or held at the model: then let the model answer
            controlplane.wait_until(lambda: len(done) + len(model.seen) >= 20, 60, "all 20 calls decided")
            release.set()
            statuses = [f.result() for f in futures]
        served = statuses.count(200)
        used = a.progress(custom).get("tokens", 0)
    assert served < 20 and set(statuses) <= {200, 429}
    assert used == served * 90
    assert used - 100 <= reservation  # the overshoot is at most one reservation (one attempt)


def test_a_streamed_completion_without_usage_is_metered(gateway, setup, model, core_v1, custom, namespace):
    a = openai_attempt(core_v1, custom, namespace, gateway.url, model)
    # a server that ignores stream_options: text, no usage chunk
    model.script(Reply(body=sse((None, {"model": "gpt-test", "choices": [{"index": 0, "text": "x" * 400}]}),
                                done=True)))

    r = httpx.post(f"{gateway.url}/model/openai/completions", headers=a.headers, timeout=60, json={
        "model": "gpt-test", "prompt": "p" * 400, "stream": True})

    assert r.status_code == 200 and "x" * 400 in r.text
    assert model.seen[0].body["stream_options"] == {"include_usage": True}
    p = a.progress(custom)
    assert p["outputTokens"] == 100 and p["inputTokens"] > 100 and p["calls"] == 1
    assert p["cost"] > 0


def test_an_attempt_calling_too_fast_is_answered_429(
        gateway_settings, setup, model, core_v1, custom, namespace, control_plane):
    settings = gateway_settings.replace(model_calls_per_second=0.01, model_call_burst=2)
    model.script(*[Reply(body=openai_json("gpt-test", (1, 1))) for _ in range(3)])
    with GatewayThread(control_plane.kubeconfig, settings) as gw:
        a = openai_attempt(core_v1, custom, namespace, gw.url, model)
        statuses = [httpx.post(f"{gw.url}/model/openai/chat/completions", json={"model": "gpt-test"},
                               headers=a.headers, timeout=60) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert int(statuses[2].headers["retry-after"]) >= 1
    assert len(model.seen) == 2


def test_an_attempt_may_have_only_a_few_calls_in_flight(
        gateway_settings, setup, model, core_v1, custom, namespace, control_plane):
    settings = gateway_settings.replace(max_model_calls_per_attempt=2)
    release = threading.Event()
    model.script(*[Reply(body=openai_json("gpt-test", (1, 1)), hold=release) for _ in range(4)])
    with GatewayThread(control_plane.kubeconfig, settings) as gw:
        a = openai_attempt(core_v1, custom, namespace, gw.url, model)
        done: list[int] = []

        def call(_: int) -> int:
            status = httpx.post(f"{gw.url}/model/openai/chat/completions", json={"model": "gpt-test"},
                                headers=a.headers, timeout=120).status_code
            done.append(status)
            return status

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(call, i) for i in range(4)]
            controlplane.wait_until(lambda: len(done) + len(model.seen) >= 4, 60, "all 4 calls decided")
            release.set()
            statuses = sorted(f.result() for f in futures)
    assert statuses == [200, 200, 429, 429]
