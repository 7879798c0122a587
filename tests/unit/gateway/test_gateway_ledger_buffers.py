"""The gateway's ledger buffers (``gateway.ledger``) against an in-memory cluster: memory is bounded per attempt and
in total, a flood from one attempt never grows past its transcript bound nor takes another attempt's place while
that one has unwritten events, a written buffer makes room and is read back when its attempt posts again, and an
agent's event never passes for the gateway's record."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from longshot.core import ledger
from longshot.gateway import ledger as gledger
from longshot.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit


@dataclass
class FakeCluster:
    maps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    puts: int = 0

    def put_configmap(self, manifest: dict[str, Any]) -> None:
        self.puts += 1
        key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        self.maps.setdefault(key, {"metadata": manifest["metadata"]}).update(
            {"binaryData": manifest.get("binaryData") or {}})

    def get_ledger_transcript(self, namespace: str, name: str) -> bytes | None:
        blob = ((self.maps.get((namespace, name)) or {}).get("binaryData") or {}).get(ledger.TRANSCRIPT_KEY)
        return base64.b64decode(blob) if blob else None

    def get_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.secrets.get((namespace, name))

    async def aget_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.get_secret(namespace, name)


@dataclass(frozen=True)
class Caller:
    pod: str
    namespace: str = "ns"
    task: str = "b-t1"
    attempt: int = 1
    role: str = "worker"
    build: str = "b"
    task_obj: dict[str, Any] = field(default_factory=lambda: {"metadata": {"uid": "u1"}})
    build_obj: dict[str, Any] = field(default_factory=lambda: {"spec": {
        "repository": {"credentialsSecret": "git"}, "agent": {"credentialsSecret": "llm"}}})

    @property
    def build_spec(self) -> dict[str, Any]:
        return dict(self.build_obj["spec"])


def events_of(cluster: FakeCluster, pod: str) -> list[dict[str, Any]]:
    blob = cluster.get_ledger_transcript("ns", ledger.entry_name(pod))
    assert blob is not None
    return ledger.events(blob)


def writer(cluster: FakeCluster, buffers: int = 2) -> gledger.Ledger:
    settings = GatewaySettings(max_ledger_buffer_bytes=buffers * ledger.MAX_TRANSCRIPT_BYTES)
    return gledger.Ledger(cluster, settings)  # type: ignore[arg-type]


async def test_a_flood_stays_within_the_transcript_bound_and_the_handoff_flushes_it():
    cluster = FakeCluster(secrets={("ns", "git"): {"password": "repo-passw0rd-123"}})
    w = writer(cluster)
    a = Caller("b-t1-a1")
    for batch in range(50):
        await w.append(a, "token-of-a-1234", [{"type": "log", "i": batch * 100 + k, "message": "m" * 3000,
                                               "note": "repo-passw0rd-123 token-of-a-1234"} for k in range(100)])
    assert w.buffers[("ns", "b-t1-a1")].transcript.size <= ledger.MAX_TRANSCRIPT_BYTES
    assert cluster.puts == 0  # nothing written before the timer or the handoff
    kept, flushed = await w.append(a, None, [{"type": "handoff", "handoff": {}}])
    assert (kept, flushed) == (1, True) and cluster.puts == 1
    events = events_of(cluster, "b-t1-a1")
    assert events[0]["i"] == 0 and events[-1]["type"] == "handoff"
    assert "repo-passw0rd-123" not in json.dumps(events) and "token-of-a-1234" not in json.dumps(events)


async def test_an_agent_cannot_pass_its_event_for_the_gateways_record():
    cluster = FakeCluster()
    w = writer(cluster)
    a = Caller("b-t1-a1")
    await w.append(a, None, [{"type": "model_call", "source": "gateway", "model": "free"}, {"type": "heartbeat"},
                             "not an object", {"no": "type"}])
    await w.model_call(a, {"model": "gpt-test", "status": 200})
    await w.flush_all()
    assert [(e["type"], e["source"]) for e in events_of(cluster, "b-t1-a1")] == [
        ("model_call", "agent"), ("model_call", "gateway")]


async def test_total_memory_is_bounded_and_an_unwritten_buffer_is_never_dropped_for_another():
    cluster = FakeCluster()
    w = writer(cluster, buffers=2)
    await w.append(Caller("b-t1-a1"), None, [{"type": "log", "message": "one"}])
    await w.append(Caller("b-t2-a1", task="b-t2"), None, [{"type": "log", "message": "two"}])
    with pytest.raises(gledger.Full):  # both hold unwritten events: the third waits
        await w.append(Caller("b-t3-a1", task="b-t3"), None, [{"type": "log", "message": "three"}])
    await w.flush_all()
    # a written buffer made room
    await w.append(Caller("b-t3-a1", task="b-t3"), None, [{"type": "log", "message": "three"}])
    assert len(w.buffers) == 2 and ("ns", "b-t1-a1") not in w.buffers
    # the attempt whose buffer went posts again: its entry continues, nothing it wrote is lost
    await w.flush_all()
    await w.append(Caller("b-t1-a1"), None, [{"type": "log", "message": "one again"}])
    await w.flush_all()
    assert [e["message"] for e in events_of(cluster, "b-t1-a1")] == ["one", "one again"]
    assert [e["message"] for e in events_of(cluster, "b-t2-a1")] == ["two"]
