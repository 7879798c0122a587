"""The attempt ledger's pure parts (``core.ledger``): event and transcript bounds, redaction, the retention decision,
and the finalisation effect of the task decider (``core.tasks.with_ledger``)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from effect_helpers import checked, of

from longshot.api.buildrequest import RetryPolicy
from longshot.api.handoff import Handoff
from longshot.core import ledger, names, tasks
from longshot.core.tasks import (
    CancelRequested,
    FinalizeLedger,
    HeartbeatLost,
    PodFinished,
    PodVanished,
    RecordAttempt,
    StartFanout,
    SuspendChanged,
    TaskState,
)

pytestmark = pytest.mark.unit

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


# --- one event ---------------------------------------------------------------------------------------


def test_a_small_event_is_stored_as_it_is():
    event = {"type": "log", "message": "cloning", "ts": 1.5}
    assert json.loads(ledger.bound_event(event)) == event


def test_a_long_string_field_is_cut_with_a_marker_and_the_line_fits_the_bound():
    event = {"type": "tool_call", "tool": "read_file", "result": "x" * 100_000}
    line = ledger.bound_event(event)
    assert len(line.encode()) <= ledger.MAX_EVENT_BYTES
    kept = json.loads(line)
    assert kept["type"] == "tool_call" and kept["tool"] == "read_file"
    assert kept["result"].startswith("xxxx") and "[cut " in kept["result"]


def test_multibyte_text_is_bounded_in_bytes_not_characters():
    line = ledger.bound_event({"type": "log", "message": "\u00e9\u4e2d" * 10_000})
    assert len(line.encode()) <= ledger.MAX_EVENT_BYTES


def test_an_event_of_many_small_fields_becomes_a_stub_naming_its_type_and_size():
    event = {"type": "flood", **{f"k{i}": i for i in range(5000)}}
    kept = json.loads(ledger.bound_event(event))
    assert kept["type"] == "flood" and kept["truncated"] is True and kept["bytes"] > ledger.MAX_EVENT_BYTES


# --- the transcript ----------------------------------------------------------------------------------


def lines(n: int, size: int = 100) -> list[str]:
    return [json.dumps({"type": "log", "i": i, "pad": "p" * size}) for i in range(n)]


def test_a_transcript_under_the_bound_keeps_every_event_in_order():
    t = ledger.Transcript()
    for line in lines(50):
        t.add(line)
    kept = [json.loads(x) for x in t.jsonl().decode().splitlines()]
    assert [e["i"] for e in kept] == list(range(50)) and t.dropped == 0


def test_a_flood_keeps_the_head_and_the_tail_with_one_truncation_line_between_within_the_bound():
    t = ledger.Transcript()
    flood = lines(20_000)
    for line in flood:
        t.add(line)
    data = t.jsonl()
    assert len(data) <= ledger.MAX_TRANSCRIPT_BYTES and t.size == len(data)
    kept = [json.loads(x) for x in data.decode().splitlines()]
    marker = [e for e in kept if e["type"] == "truncated"]
    assert len(marker) == 1
    at = kept.index(marker[0])
    head, tail = kept[:at], kept[at + 1:]
    assert [e["i"] for e in head] == list(range(len(head)))  # the first events
    assert [e["i"] for e in tail] == list(range(20_000 - len(tail), 20_000))  # the last events
    assert marker[0]["dropped"] == 20_000 - len(head) - len(tail) > 0


def test_the_stored_form_is_gzip_and_reads_back_into_a_transcript_that_continues():
    t = ledger.Transcript()
    for line in lines(5000):
        t.add(line)
    blob = t.encode()
    assert gzip.decompress(blob) == t.jsonl()
    again = ledger.Transcript.from_jsonl(ledger.decompress(blob))
    assert again.dropped == t.dropped and again.jsonl() == t.jsonl()
    again.add(json.dumps({"type": "log", "i": "late"}))
    assert json.loads(again.jsonl().decode().splitlines()[-1])["i"] == "late"
    assert [e.get("i") for e in ledger.events(blob)][:3] == [0, 1, 2]


def test_a_compression_bomb_is_read_only_up_to_its_limit():
    bomb = gzip.compress(b"{}\n" * (10 * 1024 * 1024))
    assert len(ledger.decompress(bomb, limit=1024)) == 1024
    assert ledger.decompress(b"not gzip") == b""


# --- redaction ---------------------------------------------------------------------------------------

TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJhdWQiOlsibG9uZ3Nob3QtZ2F0ZXdheSJdfQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def test_known_secrets_and_token_shapes_are_masked_everywhere_in_an_event():
    r = ledger.Redactor(["hunter2-api-key-value", "short"])
    event = {"type": "tool_call", "result": "key=hunter2-api-key-value and ghp_" + "a" * 36,
             "nested": [{"auth": f"Authorization: Bearer {TOKEN}"}], "url": "https://bot:s3cr3t@git.example/x.git",
             "hunter2-api-key-value": "as a key", "n": 3}
    out = r.value(event)
    text = json.dumps(out)
    assert "hunter2-api-key-value" not in text and "ghp_" not in text and TOKEN not in text and "s3cr3t" not in text
    assert out["n"] == 3 and "short" not in r._secrets  # too short to mask: it would hide ordinary words


def test_a_jwt_is_masked_even_when_the_gateway_was_not_told_it():
    assert ledger.Redactor().text(f"token {TOKEN} leaked") == "token *** leaked"


def test_redaction_keeps_nesting_bounded():
    deep: Any = "leaf"
    for _ in range(100):
        deep = [deep]
    out = ledger.Redactor().value({"type": "x", "deep": deep})
    assert "[too deep]" in json.dumps(out)


def test_redaction_is_linear_on_hostile_text():  # RE2: no catastrophic backtracking whatever the input
    text = "sk-" + "a-" * 200_000 + "!" + "https://" + "a:" * 100_000
    assert isinstance(ledger.Redactor(["x" * 10]).text(text), str)


# --- retention ---------------------------------------------------------------------------------------


def entry(name: str, minutes_ago: int | None, created_ago: int = 10_000) -> ledger.Entry:
    return ledger.Entry(name, NOW - timedelta(minutes=created_ago),
                        None if minutes_ago is None else NOW - timedelta(minutes=minutes_ago))


def test_the_oldest_finished_entries_beyond_max_entries_go_first():
    entries = [entry(f"e{i}", 100 - i) for i in range(10)]
    assert ledger.to_delete(entries, max_entries=7, ttl_seconds=86400, now=NOW) == ["e0", "e1", "e2"]


def test_entries_older_than_the_ttl_go_whatever_the_count():
    entries = [entry("old", 3 * 24 * 60), entry("new", 5)]
    assert ledger.to_delete(entries, max_entries=500, ttl_seconds=86400, now=NOW) == ["old"]


def test_an_entry_of_a_running_attempt_is_never_deleted_but_counts():
    entries = [entry("running", None, created_ago=10 ** 6), entry("a", 50), entry("b", 40)]
    assert ledger.to_delete(entries, max_entries=2, ttl_seconds=3600 * 24, now=NOW) == ["a"]
    assert ledger.to_delete(entries, max_entries=1, ttl_seconds=60, now=NOW) == ["a", "b"]


def test_ties_go_by_name_so_every_replica_agrees():
    entries = [entry(n, 5) for n in ("c", "a", "b")]
    assert ledger.to_delete(entries, max_entries=1, ttl_seconds=86400, now=NOW) == ["a", "b"]


# --- the entry and its result ------------------------------------------------------------------------


def test_the_entry_is_owned_by_its_task_and_labelled_for_its_build():
    m = ledger.manifest(namespace="ns", pod="b-t1-a2", task="b-t1", task_uid="u1", build="b", attempt=2,
                        role="worker")
    assert m["metadata"]["name"] == "b-t1-a2-ledger"
    assert m["metadata"]["labels"][ledger.LABEL] == "true" and m["metadata"]["labels"]["longshot.dev/build"] == "b"
    assert m["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert m["metadata"]["ownerReferences"][0]["kind"] == "AgentTask"


def test_the_result_is_the_attempt_record_and_whose_it_is():
    r = ledger.result({"number": 1, "pod": "b-t1-a1", "exitCode": 3, "failureClass": "AgentError", "tokens": 9,
                       "junk": "x"}, namespace="ns", build="b", task="b-t1", role="worker")
    assert r == {"namespace": "ns", "build": "b", "task": "b-t1", "role": "worker", "number": 1, "pod": "b-t1-a1",
                 "exitCode": 3, "failureClass": "AgentError", "tokens": 9}


# --- the finalisation effect of the task decider ----------------------------------------------------


def decide(s: TaskState, event: Any) -> list[Any]:
    _, effects = tasks.decide(s, event, now=NOW, rand=lambda: 1.0)
    return checked(effects)


def running(attempt: int = 1) -> TaskState:
    return TaskState(name="b-t1", phase="Running", attempt=attempt, policy=RetryPolicy(max_attempts=3))


def exited(code: int) -> dict[str, Any]:
    return {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
        {"name": "agent", "state": {"terminated": {"exitCode": code, "reason": "Error", "message": ""}}}]}


@pytest.mark.parametrize("event", [
    PodFinished(exited(0), Handoff(task="b-t1", attempt=1, role="worker", outcome="succeeded", branch="longshot/b/t1",
                                   commit="abcdef1", summary="ok"), 1),
    PodFinished(exited(3), None, 1),
    PodVanished(1),
    HeartbeatLost(900, 600, 1),
    CancelRequested(),
    SuspendChanged(True),
], ids=["succeeded", "failed", "vanished", "hung", "cancelled", "suspended"])
def test_every_end_of_an_attempt_finalises_its_entry_before_recording_the_end(event: Any):
    effects = decide(running(), event)
    (fin,) = of(effects, FinalizeLedger)
    pod = names.pod_name("b-t1", 1)
    assert fin == FinalizeLedger(1, pod, ledger.entry_name(pod))
    ends = [e for e in of(effects, RecordAttempt) if e.end_time is not None]
    assert len(ends) == 1 and ends[0].ledger == ledger.entry_name(pod)
    assert ends[0].to_wire()["ledger"] == "b-t1-a1-ledger"
    assert effects.index(fin) < effects.index(ends[0])


def test_starting_an_attempt_finalises_nothing():
    effects = decide(TaskState(name="b-t1"), tasks.Admitted())
    assert of(effects, FinalizeLedger) == []
    assert all(e.ledger is None for e in of(effects, RecordAttempt))


def test_a_best_of_n_round_has_no_pod_and_so_no_entry_of_its_own():
    _, effects = tasks.decide(TaskState(name="b-t1"), StartFanout(3), now=NOW, rand=lambda: 1.0)
    fanned = tasks.TaskState(name="b-t1", phase="Running", attempt=1)
    done = decide(fanned, tasks.FanoutFinished(None, "no candidate passed"))
    assert of(effects, FinalizeLedger) == [] and of(done, FinalizeLedger) == []
