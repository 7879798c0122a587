"""Issue 50, item 2, on the real API server with the real operator and gateway: a tenant's tracker and forge that
answer with the largest bodies the operator reads, shaped to cost the most once parsed, fail only that tenant's
intake or MergeJob, with a condition naming the limit, and the operator's memory stays bounded; a tenant in another
namespace goes on. An agent's OTLP batch of half a million empty resources is refused by the gateway, which relays
nothing.

On main (74fe7c0) each amplifying answer was parsed whole (8 MiB of ``[],`` is 226 MiB of lists; three intakes at
once peaked at 721 MiB) and left the intake Watching; the batch took 18 s of CPU and 579 MiB and relayed 75 MiB.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sample_repo
from amplifying_servers import (
    SHAPES,
    AmplifyingTracker,
    CountingCollector,
    amplifying,
    amplifying_forge,
    peak_mib_since,
    reset_peak,
)
from gateway_attempts import make_attempt
from gateway_server import GatewayThread
from k8s_builders import condition, create, dump, get, list_of
from test_delivery import script_configmap
from test_pull_requests import PROJECT, TOKEN, forge_secret, one_task_script, pr_build
from test_standing_intake import intake_build, secrets
from tracker_server import tracker_server

from longshot import tracing
from longshot.gateway import traces
from longshot.runtime import trackers
from longshot_testing import wait_for

pytestmark = pytest.mark.integration

PEAK_MIB = 150
"""The operator's (here: the test process's) peak RSS may rise by at most this while three amplifying answers are
read at once (three at once parsed whole: over 700 MiB)."""


@pytest.fixture
def other_namespace(core_v1: Any, namespace: str) -> Iterator[str]:
    name = f"v-{hashlib.sha1(namespace.encode()).hexdigest()[:10]}"
    core_v1.create_namespace({"metadata": {"name": name, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "longshot.dev/test": "true"}}})
    yield name
    core_v1.delete_namespace(name)


@pytest.fixture
def hostile_tracker() -> Iterator[AmplifyingTracker]:
    with AmplifyingTracker() as t:
        yield t


@pytest.fixture
def victim_tracker() -> Iterator[Any]:
    from test_standing_intake import TOKEN as INTAKE_TOKEN

    with tracker_server(time.time, INTAKE_TOKEN) as s:
        s.project("org/app").add(1, "Add add()", body="calc/add.py", labels=["longshot"], assignees=["bot"])
        yield s


def _ready(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    return condition(get(custom, namespace, "buildrequests", name), "Ready") or {}


def test_amplifying_tracker_answers_fail_only_that_tenants_intakes_and_memory_stays_bounded(
        control_plane: Any, operator_env: dict[str, str], core_v1: Any, custom: Any, namespace: str,
        other_namespace: str, tmp_path: Any, hostile_tracker: AmplifyingTracker, victim_tracker: Any) -> None:
    from kopf.testing import KopfRunner

    import longshot.controllers  # noqa: F401  (registers the handlers)

    url = sample_repo.make(tmp_path)
    for shape in SHAPES:  # made before the peak is reset: the server's bodies are not the operator's memory
        assert len(amplifying(shape)) <= trackers.MAX_RESPONSE_BYTES
    secrets(core_v1, namespace)
    secrets(core_v1, other_namespace)
    mark = reset_peak()
    with KopfRunner(["run", "--standalone", "--namespace", namespace, "--namespace", other_namespace,
                     "-m", "longshot.controllers"], timeout=60) as runner:
        for shape in SHAPES:
            b = intake_build(url, hostile_tracker.github_url)
            b["metadata"]["name"] = f"intake-{shape}"
            b["spec"]["intake"]["tracker"]["repository"] = f"org/{shape}"
            create(custom, namespace, b)
        create(custom, other_namespace, intake_build(url, victim_tracker.github_url))

        def refused() -> dict[str, dict[str, Any]] | None:
            got = {s: _ready(custom, namespace, f"intake-{s}") for s in SHAPES}
            return got if all(c.get("reason") == "Configuration" for c in got.values()) else None

        try:
            conds = wait_for(refused, timeout=120, what="the three hostile intakes Ready=False/Configuration")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None
        for shape, c in conds.items():
            message = c["message"]
            assert c["status"] == "False" and "refused before it was parsed" in message, message
            assert "spec.intake.tracker.url" in message, message
            assert ("levels deep" if shape == "deep" else "JSON values") in message, message
            stalled = condition(get(custom, namespace, "buildrequests", f"intake-{shape}"), "Stalled")
            assert stalled["status"] == "True", stalled
        assert hostile_tracker.listings >= 3
        peak = peak_mib_since(mark)
        assert peak < PEAK_MIB, f"peak RSS rose by {peak:.0f} MiB reading three amplifying answers"
        # the other tenant's intake watches its tracker and starts its build
        wait_for(lambda: _ready(custom, other_namespace, "intake").get("reason") == "Watching", timeout=60,
                 what="the victim's intake Watching")
        wait_for(lambda: any(b["metadata"]["name"] == "intake-i1" for b in list_of(custom, other_namespace,
                                                                                   "buildrequests")),
                 timeout=60, what="the victim's build for issue 1")
        assert not [b for b in list_of(custom, namespace, "buildrequests")
                    if (b["metadata"].get("labels") or {}).get("longshot.dev/intake")]
    assert runner.exception is None, runner.output
    print(f"peak RSS rose by {peak:.0f} MiB while three amplifying answers were refused")  # (kopf held stdout)


@pytest.mark.timeout(600)
def test_an_amplifying_forge_answer_fails_only_the_merge_job_poll_with_a_message(
        operator: object, kubelet: object, core_v1: Any, custom: Any, namespace: str, tmp_path: Any) -> None:
    url = sample_repo.make(tmp_path)
    with amplifying_forge(TOKEN) as forge:
        forge.repo(PROJECT, url)
        script_configmap(core_v1, namespace, one_task_script())
        forge_secret(core_v1, namespace)
        create(custom, namespace, pr_build(url, forge.github_url))

        def refused() -> str | None:
            for job in list_of(custom, namespace, "mergejobs"):
                for c in (job.get("status") or {}).get("conditions") or []:
                    if "refused before it was parsed" in (c.get("message") or ""):
                        return str(c["message"])
            return None

        try:
            message = wait_for(refused, timeout=300, what="a MergeJob condition naming the refused forge answer")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None
        assert "JSON values" in message and "spec.merge.pullRequest.apiUrl" in message, message
        assert TOKEN not in message
        assert forge.amplified >= 1
        assert not [p for p in forge.pulls(PROJECT)]  # nothing was opened on an answer that was not read


def _ld(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (written here, not with the code under test)."""
    size, head = len(payload), bytearray([number << 3 | 2])
    while size >= 0x80:
        head.append(size & 0x7F | 0x80)
        size >>= 7
    return bytes(head) + bytes([size]) + payload


def _agent_resources(bodies: list[bytes]) -> list[Any]:
    """The ResourceSpans the gateway relayed for agents (the gateway's own spans may go to the same collector)."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    out = []
    for body in bodies:
        for rs in trace_service_pb2.ExportTraceServiceRequest.FromString(body).resource_spans:
            attrs = {x.key: x.value.string_value for x in rs.resource.attributes}
            if attrs.get("service.name") == tracing.AGENT:
                out.append(rs)
    return out


def test_an_amplifying_trace_batch_is_refused_and_relays_nothing(
        control_plane: Any, gateway_settings: Any, core_v1: Any, custom: Any, namespace: str) -> None:
    with CountingCollector() as collector, GatewayThread(
            control_plane.kubeconfig, gateway_settings.replace(tracing_endpoint=collector.endpoint)) as gateway:
        a = make_attempt(core_v1, custom, namespace, gateway.url)
        headers = {**a.headers, "Content-Type": traces.PROTOBUF}
        trace_id = tracing.build_trace_id(a.build["metadata"]["uid"]).to_bytes(16, "big")
        one = _ld(1, _ld(2, _ld(2, _ld(1, trace_id) + _ld(2, b"\x00" * 7 + b"\x01"))))
        empty = b"\x0a\x00" * (524_288 - len(one)) + one  # 1 MiB: half a million empty ResourceSpans and a span
        mark = reset_peak()
        began = time.process_time()
        answer = httpx.post(f"{gateway.url}/traces", content=empty, headers=headers, timeout=120)
        cpu = time.process_time() - began
        peak = peak_mib_since(mark)
        assert answer.status_code == 413, answer.text
        assert f"at most {traces.MAX_RESOURCE_SPANS} ResourceSpans" in answer.json()["error"]
        assert cpu < 2 and peak < 64, (cpu, peak)
        # the agent's own spans still arrive, with the identity added once to their one resource
        spans = b"".join(_ld(2, _ld(1, trace_id) + _ld(2, i.to_bytes(8, "big")) + _ld(5, b"s"))
                         for i in range(1, 200))
        batch = _ld(1, _ld(2, spans)) + b"\x0a\x00" * 30  # and thirty empty resources, left out
        answer = httpx.post(f"{gateway.url}/traces", content=batch, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        relayed = [b for b in collector.bodies if _agent_resources([b])]
        assert len(relayed) == 1 and len(relayed[0]) <= len(batch) + 1024, [len(b) for b in relayed]
        (rs,) = _agent_resources(relayed)
        assert len(rs.scope_spans[0].spans) == 199
        assert {x.key: x.value.string_value for x in rs.resource.attributes}["longshot.pod"] == a.pod["metadata"][
            "name"]
