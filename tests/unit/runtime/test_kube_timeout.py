"""Every API call has a time limit: a connection that is accepted and never answered fails the call (and so the
reconcile, which is retried) instead of holding its thread for ever."""

from __future__ import annotations

import socket
import threading

import kubernetes
import pytest

from longshot.runtime import kube

pytestmark = pytest.mark.unit


def test_a_call_to_a_server_that_never_answers_fails_within_the_limit():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (the kernel does), never reads or answers
    configuration = kubernetes.client.Configuration()
    configuration.host = f"http://127.0.0.1:{silent.getsockname()[1]}"
    configuration.retries = 0
    client = kube.BoundedApiClient(configuration)
    client.request_timeout = (1.0, 0.5)
    outcome: list[BaseException | object] = []

    def call() -> None:
        try:
            outcome.append(kube.Kube(client).get_pod("ns", "p"))
        except BaseException as e:  # what the call raised is the result
            outcome.append(e)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(timeout=30)  # a bound for the test itself: without the limit the call never returns
    silent.close()
    assert not t.is_alive(), "the call is still waiting for an answer"
    assert len(outcome) == 1 and isinstance(outcome[0], Exception), outcome
    assert "timed out" in str(outcome[0]).lower(), outcome[0]


def test_a_call_s_own_limit_wins_and_load_client_is_bounded(monkeypatch, tmp_path):
    seen: list[object] = []
    client = kube.BoundedApiClient(kubernetes.client.Configuration())
    monkeypatch.setattr(kubernetes.client.ApiClient, "call_api",
                        lambda self, *a, _request_timeout=None, **k: seen.append(_request_timeout))
    client.call_api("GET", "http://x/")
    client.call_api("GET", "http://x/", _request_timeout=3)
    assert seen == [client.request_timeout, 3]
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
                      "users: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
                      "current-context: x\n")
    monkeypatch.setenv("KUBECONFIG", str(config))
    assert isinstance(kube.load_client(), kube.BoundedApiClient)
