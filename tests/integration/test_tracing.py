"""One build, one trace: a whole build on the real API server with tracing on, its spans read back from a real
collector (Jaeger built from the Go module proxy when it is cached, else an OTLP/HTTP receiver decoding with the
official protobuf classes; ``longshot_testing.otlp``).

The operator runs in-process, longshot-gateway in a thread, and the agents as real processes (the process
kubelet), each exporting on its own: the operator and the gateway to the collector, the agents to the gateway's
``/traces``, which relays them. Every span must be in the trace whose ID the build's status names, and hang
together: agent spans under their attempt's span, attempts under the build's root span, gateway requests under the
agent or its attempt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import sample_repo
from k8s_builders import condition, create, dump, get
from test_delivery import SCRIPT, delivery_build, finalized, script_configmap

from longshot import tracing
from longshot_testing import otlp, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trace_collector() -> Iterator[otlp.Collector]:
    with otlp.collector() as c:
        print(f"trace collector: {c.kind} {getattr(c, 'why', '')}")
        yield c


@pytest.fixture
def gateway_settings(gateway_settings, trace_collector):  # type: ignore[no-untyped-def]
    return gateway_settings.replace(tracing_endpoint=trace_collector.endpoint)


@pytest.fixture
def operator_env(operator_env, monkeypatch, trace_collector):  # type: ignore[no-untyped-def]
    extra = {"LONGSHOT_TRACING_ENDPOINT": trace_collector.endpoint,
             "LONGSHOT_TRACING_UI_BASE_URL": "https://jaeger.example.com/trace"}
    for k, v in extra.items():
        monkeypatch.setenv(k, v)
    return {**operator_env, **extra}


@pytest.mark.timeout(900)
def test_one_build_is_one_trace_across_operator_gateway_and_agents(trace_collector, operator, kubelet, core_v1,
                                                                   custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, SCRIPT)
    create(custom, namespace, delivery_build(url))
    b = finalized(custom, namespace, timeout=600)  # a build takes about 35 s; the shared machine can be slow
    assert condition(b, "Finalized")["status"] == "True", dump(custom, namespace)

    uid = b["metadata"]["uid"]
    trace_id = b["status"]["traceId"]
    assert trace_id == hashlib.sha256(uid.encode()).hexdigest()[:32]

    wanted = {("build", tracing.OPERATOR), ("finalization", tracing.OPERATOR), ("planning", tracing.OPERATOR),
              ("attempt", tracing.OPERATOR), ("gate", tracing.OPERATOR), ("batch", tracing.OPERATOR),
              ("landing", tracing.OPERATOR), ("agent", tracing.AGENT), ("git clone", tracing.AGENT),
              ("tool write_file", tracing.AGENT), ("tool finish", tracing.AGENT), ("gateway git", tracing.GATEWAY)}

    def arrived() -> list[otlp.Span] | None:
        spans = trace_collector.spans(trace_id)
        ids = {s.span_id for s in spans}
        # an attempt's span is sent when its end is written, after its agent's: wait for every agent's parent too
        whole = all(s.parent_id in ids for s in spans if s.name == "agent")
        return spans if whole and wanted <= {(s.name, s.service) for s in spans} else None

    try:
        spans = wait_for(arrived, timeout=60, what="the build's spans from the operator, the agents and the gateway")
    except TimeoutError:
        got = sorted({(s.name, s.service) for s in trace_collector.spans(trace_id)})
        raise AssertionError(f"missing {sorted(wanted - set(got))}; the collector has {got}") from None

    assert {s.trace_id for s in spans} == {trace_id}
    by_id = {s.span_id: s for s in spans}
    root = tracing.build_span(uid)
    (build,) = [s for s in spans if s.name == "build"]
    assert build.span_id == f"{root.span_id:016x}" and not build.parent_id
    assert build.attributes["longshot.outcome"] == "Passed"

    # every attempt's span hangs under the build, with the IDs its Pod's TRACEPARENT named
    attempts = [s for s in spans if s.service == tracing.OPERATOR and s.attributes.get("longshot.pod")]
    assert {s.name for s in attempts} <= {"planning", "attempt", "gate", "sweep", "review"}
    assert all(s.parent_id == build.span_id for s in attempts)
    tasks = {t["metadata"]["name"]: t for t in custom.list_namespaced_custom_object(
        "longshot.dev", "v1alpha1", namespace, "agenttasks")["items"]}
    for s in attempts:
        task = tasks[s.attributes["longshot.task"]]
        expected = tracing.attempt_span(uid, task["metadata"]["uid"], s.attributes["longshot.attempt"])
        assert s.span_id == f"{expected.span_id:016x}"
        assert s.end_ns >= s.start_ns and s.attributes["longshot.exit_code"] == 0
    planning = [s for s in attempts if s.name == "planning"]
    assert planning and planning[0].attributes["longshot.role"] == "planner"

    # the agent runner's spans are children of their attempt; its git requests reached the gateway in this trace
    agents = [s for s in spans if s.name == "agent"]
    assert agents and all(s.parent_id in by_id and by_id[s.parent_id] in attempts for s in agents)
    # the relay's identity, from the caller's verified token
    assert all(s.service == tracing.AGENT and s.resource["longshot.pod"].startswith("demo-") for s in agents)
    for s in spans:
        if s.service == tracing.GATEWAY:
            parent = by_id.get(s.parent_id)
            assert parent is not None and parent.service in (tracing.AGENT, tracing.OPERATOR), s
    assert any(by_id[s.parent_id].name == "git clone" for s in spans if s.name == "gateway git")

    # the merge queue's batch and landing are in the build's trace
    landings = [s for s in spans if s.name == "landing"]
    assert landings and all(s.parent_id == build.span_id and s.attributes["longshot.landed"] for s in landings)

    events = core_v1.list_namespaced_event(namespace, field_selector="reason=Traced").items
    assert [e.message for e in events] == [f"trace {trace_id}: https://jaeger.example.com/trace/{trace_id}"]
    assert get(custom, namespace, "buildrequests", "demo")["status"]["traceId"] == trace_id
