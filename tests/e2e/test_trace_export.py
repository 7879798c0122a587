"""Traces on the real cluster: with the chart's ``tracing.*`` on, one build's spans from the operator, the gateway
and the agent Pods arrive in a real collector under one trace ID, the one the build records on
``status.traceId``.

The collector is Jaeger (the pinned build from ``hack/go-tools.sh jaeger``; ``make e2e`` builds it first, ``make
collector``, and the test fails rather than fall back), or, only when ``LONGSHOT_TRACING_COLLECTOR=receiver`` asks
for it, the OTLP/HTTP receiver of ``longshot_testing.otlp`` (``opentelemetry-proto`` decoding real exports),
listening on the host's
end of the local cluster's bridge so that the operator, gateway and agent Pods reach it; the chart lets the
operator and gateway reach it through their NetworkPolicy (``tracing.peers``)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from longshot import tracing
from longshot_testing import otlp

from .conftest import apply, build_request, host_address, install_operator, kget, script_configmap, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

SCRIPT = """
roles:
  planner:
    - finish:
        summary: one task
        tasks:
          - {name: traced, description: "Add traced.txt", scope: [traced.txt]}
tasks:
  traced:
    - write: {path: traced.txt, content: "traced\\n"}
    - finish: {summary: "Add traced"}
steps:
  - finish: {summary: nothing to do}
"""


@pytest.fixture
def collector(cluster, operator, kubectl) -> Iterator[otlp.Collector]:  # type: ignore[no-untyped-def]
    """A collector on the bridge, and the chart reinstalled with tracing on and pointed at it; reinstalled without
    tracing afterwards (the session's other tests run on the chart's defaults)."""
    host = host_address(cluster)  # the local cluster's bridge, or kind's network: where Pods reach this host
    # a real collector every time: make e2e builds Jaeger first (make collector) and the test refuses to fall back
    # to the project's own receiver unless LONGSHOT_TRACING_COLLECTOR=receiver asks for it
    with otlp.collector(host, require_jaeger=True) as c:
        print(f"trace collector: {c.kind} at {c.endpoint} {getattr(c, 'why', '')}")
        assert c.kind == "jaeger" or os.environ.get("LONGSHOT_TRACING_COLLECTOR") == "receiver", c.kind
        port = c.endpoint.rsplit(":", 1)[1]
        install_operator(cluster, kubectl, extra=[
            "--set", "tracing.enabled=true", "--set", f"tracing.endpoint={c.endpoint}",
            "--set", "tracing.uiBaseUrl=https://jaeger.example.com/trace",
            "--set", f"tracing.peers[0].ipBlock.cidr={host}/32", "--set", f"tracing.port={port}"])
        try:
            yield c
        finally:
            install_operator(cluster, kubectl)


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    return next((dict(c) for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == kind),
                {})


def test_one_builds_spans_from_operator_gateway_and_agent_pods_arrive_under_one_trace(  # type: ignore[no-untyped-def]
        collector, kubectl, namespace, git_repo) -> None:
    apply(kubectl, namespace, script_configmap("script", SCRIPT), build_request("traced", git_repo, script="script"))

    def finalized() -> dict[str, Any] | None:
        br = kget(kubectl, "-n", namespace, "br", "traced")
        return br if condition(br, "Finalized").get("status") in ("True", "False") else None

    br = wait_for(finalized, 420, "BuildRequest traced to be finalized", interval=2)
    assert condition(br, "Finalized")["status"] == "True", br["status"]
    trace_id = br["status"]["traceId"]
    assert trace_id == hashlib.sha256(br["metadata"]["uid"].encode()).hexdigest()[:32]

    wanted = {("build", tracing.OPERATOR), ("planning", tracing.OPERATOR), ("attempt", tracing.OPERATOR),
              ("landing", tracing.OPERATOR), ("agent", tracing.AGENT), ("git clone", tracing.AGENT),
              ("gateway git", tracing.GATEWAY)}

    def arrived() -> list[otlp.Span] | None:
        spans = collector.spans(trace_id)
        return spans if wanted <= {(s.name, s.service) for s in spans} else None

    try:
        spans = wait_for(arrived, 120, "the build's spans from the operator, the gateway and the agent Pods")
    except TimeoutError:
        got = sorted({(s.name, s.service) for s in collector.spans(trace_id)})
        raise AssertionError(f"missing {sorted(wanted - set(got))}; the collector has {got}") from None
    assert {s.trace_id for s in spans} == {trace_id}
    by_id = {s.span_id: s for s in spans}
    # the agents' spans came from Pods on the cluster (the gateway relays them with the caller's verified identity)
    agents = [s for s in spans if s.name == "agent"]
    assert all(s.resource.get("longshot.pod", "").startswith("traced-") for s in agents), [s.resource for s in agents]
    assert all(by_id.get(s.parent_id) is not None and by_id[s.parent_id].service == tracing.OPERATOR for s in agents)
    # the gateway's spans hang under the agent calls that reached it
    assert any(by_id[s.parent_id].name == "git clone" for s in spans
               if s.name == "gateway git" and s.parent_id in by_id)
    events = kget(kubectl, "-n", namespace, "events", "--field-selector", "reason=Traced") or {}
    assert [e["message"] for e in events.get("items", [])] == [
        f"trace {trace_id}: https://jaeger.example.com/trace/{trace_id}"]
