"""The metrics endpoint: a counter incremented in the registry shows up in a real scrape."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import longshot
from longshot import metrics
from longshot.gateway import metrics as gateway_metrics


@pytest.fixture
def server() -> Iterator[metrics.MetricsServer]:
    s = metrics.start_http_server(0, addr="127.0.0.1")
    yield s
    s.close()


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and (labels is None or s.labels == labels):
                return float(s.value)
    return None


def test_scrape_shows_an_incremented_counter(server: metrics.MetricsServer) -> None:
    url = f"http://127.0.0.1:{server.port}"
    with httpx.Client() as client:
        before = sample(client.get(f"{url}/metrics").text, "longshot_merges_total", {"result": "Conflicted"})
        metrics.observe_merge("Conflicted", 0.2)
        metrics.set_role(leader=True)
        response = client.get(f"{url}/metrics")
        health = client.get(f"{url}/healthz")
        missing = client.get(f"{url}/nope")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert sample(response.text, "longshot_merges_total", {"result": "Conflicted"}) == (before or 0) + 1
    assert sample(response.text, "longshot_replica_role", {"role": "leader"}) == 1
    assert sample(response.text, "longshot_replica_role", {"role": "follower"}) == 0
    assert sample(response.text, "longshot_merge_duration_seconds_count") is not None
    assert (health.status_code, health.text) == (200, "ok\n")
    assert missing.status_code == 404


def test_health_reflects_the_callback() -> None:
    state = {"ok": False}
    s = metrics.start_http_server(0, addr="127.0.0.1", healthy=lambda: state["ok"])
    try:
        with httpx.Client() as client:
            assert client.get(f"http://127.0.0.1:{s.port}/healthz").status_code == 503
            assert client.get(f"http://127.0.0.1:{s.port}/readyz").status_code == 503  # ready follows healthy
            state["ok"] = True
            assert client.get(f"http://127.0.0.1:{s.port}/healthz").status_code == 200
    finally:
        s.close()


def test_intake_webhooks_are_served_on_their_own_port_bounded_and_handed_to_the_callback() -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    def hook(path: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        seen.append((path, headers, body))
        return 202, "poll scheduled"

    s = metrics.start_http_server(0, addr="127.0.0.1", webhook=hook, webhook_port=0)
    plain = metrics.start_http_server(0, addr="127.0.0.1", webhook=hook)  # no webhook port: no webhook
    try:
        assert s.webhook_port and s.webhook_port != s.port and plain.webhook_port is None
        with httpx.Client() as client:
            url = f"http://127.0.0.1:{s.webhook_port}"
            ok = client.post(f"{url}/intake/ns/i?x=1", content=b"{}", headers={"X-Hub-Signature-256": "sha256=ab"})
            big = client.post(f"{url}/intake/ns/i", content=b"x" * (metrics.MAX_WEBHOOK_BYTES + 1))
            other = client.post(f"{url}/metrics", content=b"{}")
            on_metrics = client.post(f"http://127.0.0.1:{s.port}/intake/ns/i", content=b"{}")
            none = client.post(f"http://127.0.0.1:{plain.port}/intake/ns/i", content=b"{}")
            ready = client.get(f"http://127.0.0.1:{s.port}/readyz")
    finally:
        s.close()
        plain.close()
    assert (ok.status_code, ok.text) == (202, "poll scheduled\n")
    assert seen == [("/intake/ns/i", seen[0][1], b"{}")] and seen[0][1]["x-hub-signature-256"] == "sha256=ab"
    assert (big.status_code, other.status_code, on_metrics.status_code, none.status_code) == (413, 404, 404, 404)
    assert (ready.status_code, ready.text) == (200, "ok\n")


def test_names_and_labels_are_bounded() -> None:
    forbidden = {"build", "task", "name", "namespace", "branch", "repository"}
    for family in metrics.REGISTRY.collect():
        # ours are longshot_*; the runtime collectors' are prometheus-client's standard process_* and python_*
        assert family.name.startswith(("longshot_", *metrics.RUNTIME_PREFIXES)), family.name
        for s in family.samples:
            assert not forbidden & set(s.labels), (s.name, s.labels)
    metrics.set_tasks_by_state({"Running": 3, "made-up": 7})
    text = metrics.generate_latest(metrics.REGISTRY).decode()
    assert 'longshot_tasks{state="Running"} 3.0' in text
    assert "made-up" not in text


def test_the_builds_waiting_for_a_person_and_the_largest_budget_share() -> None:
    from longshot.core import builds

    def stalled(reason: str) -> list[dict[str, str]]:
        return [{"type": "Stalled", "status": "True", "reason": reason}]

    waiting = [builds.waiting_for_a_person(stalled("Configuration")),
               builds.waiting_for_a_person(stalled("Configuration")),
               builds.waiting_for_a_person(stalled("TestsFailed")),  # finished for good: not waiting
               builds.waiting_for_a_person([{"type": "Stalled", "status": "False", "reason": "NotStalled"}]),
               builds.waiting_for_a_person(None)]
    assert waiting == ["Configuration", "Configuration", None, None, None]
    shares = [builds.budget_used(1000, None, 930, 0.0), builds.budget_used(None, 10.0, 0, 2.5),
              builds.budget_used(None, None, 10**9, 1e9)]
    assert shares == [0.93, 0.25, None]
    assert builds.budget_used(0, None, 0, 0.0) == 1.0
    metrics.set_builds(waiting, shares)
    value = metrics.REGISTRY.get_sample_value
    assert value("longshot_builds_stalled", {"reason": "Configuration"}) == 2
    assert value("longshot_builds_stalled", {"reason": "BudgetExceeded"}) == 0
    assert value("longshot_budget_used_ratio") == 0.93
    metrics.set_builds([], [])
    assert value("longshot_builds_stalled", {"reason": "Configuration"}) == 0
    assert value("longshot_budget_used_ratio") == 0


@pytest.mark.parametrize(("registry", "name"), [(metrics.REGISTRY, "longshot_build_info"),
                                                (gateway_metrics.REGISTRY, "longshot_gateway_build_info")])
def test_build_info_and_the_runtime_collectors_are_in_each_registry(registry: CollectorRegistry, name: str) -> None:
    """The operator's and the gateway's registries (their own, not prometheus-client's global one) each carry a
    build_info gauge of 1 with the version, and the process, platform and garbage-collector collectors."""
    assert registry.get_sample_value(name, {"version": longshot.__version__}) == 1
    families = {f.name for f in registry.collect()}
    assert {"python_info", "python_gc_objects_collected", "python_gc_collections"} <= families
    if sys.platform == "linux":  # the process collector reads /proc
        assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_start_time_seconds",
                "process_open_fds"} <= families
        assert (registry.get_sample_value("process_resident_memory_bytes") or 0) > 0
    text = generate_latest(registry).decode()
    assert f'{name}{{version="{longshot.__version__}"}} 1.0' in text
    assert "python_info{" in text and "python_gc_collections_total{" in text


def test_the_scrape_serves_build_info_and_the_runtime_collectors(server: metrics.MetricsServer) -> None:
    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics").text
    assert sample(text, "longshot_build_info", {"version": longshot.__version__}) == 1
    assert sample(text, "python_gc_collections_total", {"generation": "0"}) is not None


UNIT_SUFFIXES = ("_seconds", "_bytes", "_ratio", "_dollars", "_cores", "_info")
"""What a metric's name ends in (before a counter's ``_total``) when it measures a quantity with a unit."""
COUNTS = {
    # things counted: the name says what is counted (a count's unit is the thing)
    "longshot_tasks", "longshot_pending_tasks", "longshot_active_workers", "longshot_tenant_agents",
    "longshot_cache_reads_anew",
    "longshot_builds_stalled", "longshot_admission_waiting_tasks", "longshot_merge_queue_depth",
    "longshot_workqueue_depth", "longshot_tenant_tokens_last_hour", "longshot_tokens", "longshot_gateway_tokens",
    "longshot_merges", "longshot_sweeps", "longshot_reconciles", "longshot_pod_failures", "longshot_finalizations",
    "longshot_finalization_attempts", "longshot_events_dropped", "longshot_lease_renewals",
    "longshot_admission_withdrawn", "longshot_intake_builds", "longshot_intake_polls", "longshot_intake_webhooks",
    "longshot_gateway_requests", "longshot_gateway_model_calls", "longshot_gateway_unpriced_calls",
    "longshot_gateway_estimated_calls", "longshot_gateway_git_pushes", "longshot_gateway_mcp_calls",
    "longshot_gateway_status_conflicts", "longshot_gateway_token_reviews", "longshot_warm_pool_claims",
    "longshot_warm_pool_ready_sandboxes", "longshot_warm_pool_held_back_sandboxes",
    "longshot_gateway_watch_cache_reads", "longshot_gateway_watch_cache_objects",
    "longshot_gateway_mirror_refreshes",
    # states: an enumeration or a flag, 0/1 per label value
    "longshot_replica_role", "longshot_admission_capacity_mode", "longshot_tenant_held",
}


@pytest.mark.parametrize("registry", [metrics.REGISTRY, gateway_metrics.REGISTRY], ids=["operator", "gateway"])
def test_every_metric_name_carries_its_unit_or_names_what_it_counts(registry: CollectorRegistry) -> None:
    """Every longshot_* metric of both registries (enumerated from the registry, so a new metric is checked too):
    a counter's samples end in ``_total``; its name ends in a unit (seconds, bytes, ratio, dollars, cores) or is one
    of the listed counts of things and states. A new metric without a unit fails here until it gets one or is
    listed, on purpose, as a count."""
    seen = 0
    for family in registry.collect():
        if not family.name.startswith("longshot_"):
            continue
        seen += 1
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name
        assert family.name.endswith(UNIT_SUFFIXES) or family.name in COUNTS, (
            f"{family.name}: name a unit ({', '.join(UNIT_SUFFIXES)}) or add it to COUNTS if it counts things")
    assert seen >= 10


def test_the_price_table_is_in_dollars_as_the_cost_metrics_say() -> None:
    from longshot.gateway import pricing
    assert pricing.PriceTable.parse("currency: USD\nmodels: {}\n").currency == "USD"
    with pytest.raises(pricing.PriceError, match="currency"):
        pricing.PriceTable.parse("currency: EUR\nmodels: {}\n")
