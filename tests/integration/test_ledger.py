"""The attempt ledger on the real API server (docs/ledger.md): an attempt's transcript (posted by the real agent
runner to the real gateway) and its result land in its ConfigMap ``<pod>-ledger``; ``kubectl longshot logs`` prints
it after the Pod was deleted; a flooding agent is held to the bounds and cannot write another attempt's entry; the
operator's housekeeping deletes the oldest entries beyond ``spec.retention.ledger.maxEntries``."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sample_repo
from gateway_attempts import make_attempt
from k8s_builders import create, default_repository, dump, get
from test_delivery import delivery_build, script_configmap

from longshot.api import timeutil
from longshot.cli import main as cli
from longshot.controllers import retention
from longshot.core import ledger
from longshot.runtime import kube
from longshot_testing import wait_for

MARKER = "ledger-marker-5c1e"


def entry(core_v1: Any, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        cm = core_v1.read_namespaced_config_map(name, namespace)
    except Exception:
        return None
    return {"data": cm.data or {}, "binaryData": cm.binary_data or {}, "metadata": cm.metadata}


def transcript(cm: dict[str, Any]) -> list[dict[str, Any]]:
    return ledger.events(base64.b64decode(cm["binaryData"][ledger.TRANSCRIPT_KEY]))


def test_a_transcript_outlives_its_pod_and_kubectl_longshot_logs_prints_it(operator, kubelet, core_v1, custom,
                                                                          api_client, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, {
        "roles": {"planner": [{"finish": {"summary": "one", "tasks": [
            {"name": "w", "description": "Write notes.txt", "scope": ["notes.txt"]}]}}]},
        "tasks": {"w": [{"write": {"path": "notes.txt", "content": "notes\n"}}, {"finish": MARKER}]}})
    create(custom, namespace, delivery_build(url))

    def finalised():
        task = get(custom, namespace, "agenttasks", "demo-w")
        attempts = (task.get("status") or {}).get("attempts") or []
        return attempts[0] if attempts and attempts[0].get("endTime") else None

    record = wait_for(finalised, timeout=120, what="attempt 1 of demo-w recorded")
    assert record["ledger"] == "demo-w-a1-ledger", dump(custom, namespace)
    cm = entry(core_v1, namespace, "demo-w-a1-ledger")
    assert cm is not None
    result = json.loads(cm["data"][ledger.RESULT_KEY])
    assert result["exitCode"] == 0 and result["endTime"] == record["endTime"] and result["task"] == "demo-w"
    events = transcript(cm)
    kinds = [e["type"] for e in events]
    assert "tool_call" in kinds and "message" in kinds and kinds[-1] == "handoff", kinds
    assert all(e["source"] == "agent" for e in events)
    assert MARKER in json.dumps(events[-1])
    assert cm["metadata"].owner_references[0].name == "demo-w" and cm["metadata"].labels[ledger.LABEL] == "true"

    # the Pod goes (as retention deletes it); the transcript stays readable
    core_v1.delete_namespaced_pod("demo-w-a1", namespace, grace_period_seconds=0)
    wait_for(lambda: not [p for p in core_v1.list_namespaced_pod(namespace).items if p.metadata.name == "demo-w-a1"],
             timeout=30, what="the Pod deleted")
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["logs", "demo-w", "-n", namespace], out=out, err=err, kube=cli.Kube(api_client, namespace))
    assert code == 0, err.getvalue()
    printed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert MARKER in out.getvalue() and printed[-1]["type"] == "result" and printed[-1]["exitCode"] == 0
    out = io.StringIO()
    assert cli.main(["logs", "demo-w", "-n", namespace, "-o", "json"], out=out, err=err,
                    kube=cli.Kube(api_client, namespace)) == 0
    whole = json.loads(out.getvalue())
    assert whole["entry"] == "demo-w-a1-ledger" and whole["result"]["exitCode"] == 0
    assert [e["type"] for e in whole["events"]] == kinds
    # an attempt that never was: exit code 1 and a message
    err = io.StringIO()
    assert cli.main(["logs", "demo-w", "--attempt", "9", "-n", namespace], out=io.StringIO(), err=err,
                    kube=cli.Kube(api_client, namespace)) == 1
    assert "no attempt 9" in err.getvalue()


def post(gateway: Any, a: Any, body: bytes) -> httpx.Response:
    return httpx.post(f"{gateway.url}/ledger", content=body, headers={**a.headers, "Content-Type": "application/json"},
                      timeout=30)


def events_body(events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"events": events}).encode()


def test_a_flooding_agent_is_bounded_and_cannot_write_another_attempts_entry(gateway, core_v1, custom, namespace):
    flood = make_attempt(core_v1, custom, namespace, gateway.url, task="b1-t1")
    quiet = make_attempt(core_v1, custom, namespace, gateway.url, task="b1-t2")

    # oversized and malformed bodies are refused before anything is kept
    assert post(gateway, flood, b"x" * (2 * 1024 * 1024)).status_code == 413
    assert post(gateway, flood, b"[1, 2]").status_code == 400
    assert post(gateway, flood, b"[" * 100_000).status_code == 400
    assert httpx.post(f"{gateway.url}/ledger", content=events_body([{"type": "log"}]), timeout=30).status_code == 401

    first = {"type": "log", "message": "the first event", "i": 0}
    assert post(gateway, flood, events_body([first])).status_code == 202
    # the quiet attempt's own event, then the flood: ~6 MB of events (some 100 KB each), posing as the other
    # attempt and as the gateway, carrying the attempt's own token
    assert post(gateway, quiet, events_body([{"type": "log", "message": "quiet and alone"}])).status_code == 202
    for batch in range(12):
        events = [{"type": "tool_call", "i": batch * 100 + k + 1, "task": "b1-t2", "attempt": 1,
                   "source": "gateway", "result": "r" * (100_000 if k == 0 else 3000),
                   "leak": f"my token is {flood.token}"} for k in range(100)]
        r = post(gateway, flood, events_body(events))
        assert r.status_code == 202, r.text
    fake = {"type": "model_call", "source": "gateway", "model": "free-model", "inputTokens": 0}
    last = {"type": "handoff", "handoff": {"outcome": "succeeded"}}
    r = post(gateway, flood, events_body([fake, last]))
    assert r.status_code == 202 and r.json()["flushed"] is True  # the handoff flushes at once
    assert post(gateway, quiet, events_body([{"type": "handoff", "handoff": {"outcome": "failed"}}])).json()["flushed"]

    cm = entry(core_v1, namespace, "b1-t1-a1-ledger")
    assert cm is not None
    raw = ledger.decompress(base64.b64decode(cm["binaryData"][ledger.TRANSCRIPT_KEY]))
    assert len(raw) <= ledger.MAX_TRANSCRIPT_BYTES
    assert all(len(line.encode()) <= ledger.MAX_EVENT_BYTES for line in raw.decode().splitlines())
    events = transcript(cm)
    assert events[0]["message"] == "the first event"  # the head
    assert events[-1]["type"] == "handoff" and events[-2]["type"] == "model_call"  # the tail
    (marker,) = [e for e in events if e["type"] == "truncated"]
    assert marker["dropped"] > 0
    assert all(e["source"] == "agent" for e in events if e["type"] != "truncated")  # a claim is not a record
    assert flood.token not in raw.decode() and "my token is ***" in raw.decode()
    assert any("[cut " in str(e.get("result", "")) for e in events) or marker["dropped"] > 100

    other = entry(core_v1, namespace, "b1-t2-a1-ledger")
    assert other is not None
    mine = transcript(other)
    assert [e["type"] for e in mine] == ["log", "handoff"] and mine[0]["message"] == "quiet and alone"


def test_the_operator_deletes_the_oldest_entries_beyond_max_entries(operator, core_v1, custom, api_client, namespace):
    for i in range(4):
        m = ledger.manifest(namespace=namespace, pod=f"keep-old{i}-a1", task=f"keep-old{i}", task_uid="", build="keep",
                            attempt=1, role="worker")
        del m["metadata"]["ownerReferences"]  # no task behind them: entries of a build made by hand
        ended = datetime.now(UTC) - timedelta(hours=10 - i)  # well within ttlSeconds (30 days)
        m["metadata"]["annotations"] = {ledger.ENDED_ANNOTATION: timeutil.rfc3339(ended)}
        core_v1.create_namespaced_config_map(namespace, m)
    running = ledger.manifest(namespace=namespace, pod="keep-run-a1", task="keep-run", task_uid="", build="keep",
                              attempt=1, role="worker")
    del running["metadata"]["ownerReferences"]
    core_v1.create_namespaced_config_map(namespace, running)  # no end: its attempt runs, never deleted
    # what the operator reads: the entries' metadata only
    listed = kube.Kube(api_client).list_configmap_metadata(namespace, retention.ledger_selector("keep"))
    assert sorted(m["name"] for m in listed)[0] == "keep-old0-a1-ledger" and len(listed) == 5
    assert all(ledger.ENDED_ANNOTATION in m.get("annotations", {}) for m in listed if "run" not in m["name"])
    create(custom, namespace, {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
                               "metadata": {"name": "keep"},
                               "spec": {"request": "keep three", "repository": {"url": default_repository()},
                                        "retention": {"ledger": {"maxEntries": 3}}}})

    def left():
        names = sorted(c.metadata.name for c in core_v1.list_namespaced_config_map(
            namespace, label_selector=f"{ledger.LABEL}=true").items)
        return names if len(names) <= 3 else None

    assert wait_for(left, timeout=60, what="the ledger held to maxEntries") == [
        "keep-old2-a1-ledger", "keep-old3-a1-ledger", "keep-run-a1-ledger"]
