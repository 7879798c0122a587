"""``promtool check metrics`` (Prometheus' own linter for exposition text: naming, suffixes, units, help) over what
the operator's /metrics endpoint serves."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from longshot import metrics
from longshot.gateway import metrics as gateway_metrics


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: apt-get install prometheus (hack/cluster/install-deps.sh installs it)"
    return path


@pytest.fixture
def server() -> Iterator[metrics.MetricsServer]:
    s = metrics.start_http_server(0, addr="127.0.0.1")
    yield s
    s.close()


def check(promtool: str, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)


def test_the_metrics_endpoint_passes_promtool(promtool: str, server: metrics.MetricsServer) -> None:
    # every labelled series has a value so that the whole registry is in the text
    metrics.observe_merge("Merged", 0.3)
    metrics.DISPATCH_LATENCY.observe(0.2)
    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics").text
    assert "longshot_merges_total" in text and "longshot_dispatch_latency_seconds_bucket" in text
    assert "longshot_build_info{" in text and "python_gc_collections_total" in text  # and the runtime collectors
    result = check(promtool, text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout  # no lint warning either


def test_the_gateway_metrics_pass_promtool(promtool: str) -> None:
    # what the gateway's /metrics serves: generate_latest of its registry (longshot.gateway.server.metrics_route),
    # its build_info and the runtime collectors included
    text = generate_latest(gateway_metrics.REGISTRY).decode()
    assert "longshot_gateway_build_info{" in text and "process_cpu_seconds_total" in text
    result = check(promtool, text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_promtool_reports_a_badly_named_metric(promtool: str) -> None:
    registry = CollectorRegistry()
    Gauge("longshot_things_total", "A gauge named like a counter.", registry=registry).set(1)
    result = check(promtool, generate_latest(registry).decode())
    assert result.returncode != 0
    assert 'non-counter metrics should not have "_total" suffix' in result.stdout + result.stderr
