"""The web console's decisions (core.console): what it shows, which events reach viewers, who sees a namespace,
and what happens to a viewer that falls behind."""

from __future__ import annotations

from typing import Any

import pytest

from longshot.core import console as core


def obj(kind: str, name: str, ns: str = "a", *, spec: dict[str, Any] | None = None,
        status: dict[str, Any] | None = None, rv: str = "1") -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": ns, "resourceVersion": rv,
                                       "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec or {}, "status": status or {}}


def test_a_new_object_is_a_change_and_the_same_summary_again_is_none() -> None:
    view = core.View()
    first = view.apply("AgentTask", "ADDED", obj("AgentTask", "t1", spec={"buildRef": {"name": "b"}}))
    assert first is not None and first.seq == 1 and first.summary is not None
    assert first.summary["build"] == "b" and first.summary["phase"] is None
    # a new resourceVersion that changes nothing the console shows reaches no viewer
    assert view.apply("AgentTask", "MODIFIED", obj("AgentTask", "t1", spec={"buildRef": {"name": "b"}}, rv="2")) is None
    changed = view.apply("AgentTask", "MODIFIED", obj("AgentTask", "t1", spec={"buildRef": {"name": "b"}},
                                                       status={"phase": "Running"}, rv="3"))
    assert changed is not None and changed.seq == 2 and changed.summary["phase"] == "Running"  # type: ignore[index]


def test_deleted_bookmark_and_unknown_events() -> None:
    view = core.View()
    view.apply("MergeJob", "ADDED", obj("MergeJob", "m1"))
    assert view.apply("MergeJob", "BOOKMARK", obj("MergeJob", "m1")) is None
    assert view.apply("MergeJob", "ERROR", obj("MergeJob", "m1")) is None
    assert view.apply("Secret", "ADDED", obj("Secret", "s")) is None
    gone = view.apply("MergeJob", "DELETED", obj("MergeJob", "m1"))
    assert gone is not None and gone.summary is None
    assert view.apply("MergeJob", "DELETED", obj("MergeJob", "m1")) is None
    assert view.objects == {}


def test_a_relist_reports_what_appeared_changed_and_vanished() -> None:
    view = core.View()
    view.replace("BuildRequest", [obj("BuildRequest", "b1"), obj("BuildRequest", "b2")])
    changes = view.replace("BuildRequest", [obj("BuildRequest", "b2", status={"phase": "Running"}),
                                            obj("BuildRequest", "b3")])
    assert sorted((c.name, c.summary is None) for c in changes) == [("b1", True), ("b2", False), ("b3", False)]
    assert {k[2] for k in view.objects} == {"b2", "b3"}


def test_the_snapshot_holds_only_the_allowed_namespaces() -> None:
    view = core.View()
    view.apply("BuildRequest", "ADDED", obj("BuildRequest", "b", ns="a"))
    view.apply("BuildRequest", "ADDED", obj("BuildRequest", "b", ns="secret-team"))
    snap = view.snapshot(["a"])
    assert [(o["namespace"], o["name"]) for o in snap["objects"]] == [("a", "b")]
    assert snap["seq"] == 2 and view.namespaces() == {"a", "secret-team"}


def test_hostile_text_is_cleaned_and_bounded_and_the_rest_of_the_object_is_not_sent() -> None:
    hostile = "<img src=x onerror=alert(1)>\x1b[31mred\x07\u202eevil" + "x" * 5000
    s = core.summarize("AgentTask", obj("AgentTask", "t", spec={"description": hostile, "prompt": "secret-ish"},
                                        status={"phase": "AwaitingInput", "question": hostile}))
    assert "\x1b" not in s["question"] and "\x07" not in s["question"] and "\u202e" not in s["question"]
    assert s["question"].startswith("<img src=x onerror=alert(1)>")  # stays text: the page sets textContent
    assert len(s["question"]) <= core.MAX_TEXT + 1 and len(s["description"]) <= 513
    assert "prompt" not in s and "secret-ish" not in repr(s)


def test_a_question_is_shown_only_while_the_task_awaits_input() -> None:
    asking = core.summarize("AgentTask", obj("AgentTask", "t", status={"phase": "AwaitingInput", "question": "why?"}))
    done = core.summarize("AgentTask", obj("AgentTask", "t", status={"phase": "Running", "question": "why?"}))
    assert (asking["question"], done["question"]) == ("why?", None)


def test_budgets_queue_and_waiting_fields() -> None:
    b = core.summarize("BuildRequest", obj("BuildRequest", "b", spec={"budget": {"maxTokens": 100, "maxCost": 2.5}},
                                          status={"usage": {"tokens": 40, "cost": 1.0}, "conditions": [
                                              {"type": "Stalled", "status": "True", "reason": "BudgetSpent",
                                               "message": "raise spec.budget"}]}))
    assert b["budget"] == {"tokens": 40, "maxTokens": 100, "cost": 1.0, "maxCost": 2.5}
    assert core.waits_for_person(b) == "stalled"
    m = core.summarize("MergeJob", obj("MergeJob", "m", spec={"buildRef": {"name": "b"}, "target": "main"},
                                      status={"phase": "AwaitingApproval", "queuePosition": 2,
                                              "batch": {"id": "abc", "position": 1, "base": "x", "commit": "y"},
                                              "attempts": [{"result": "Conflicted"}]}))
    assert (m["position"], m["batch"], m["lastResult"]) == (2, {"id": "abc", "position": 1}, "Conflicted")
    assert core.waits_for_person(m) == "approval"
    assert core.waits_for_person({**m, "approved": True}) is None
    t = core.summarize("AgentTask", obj("AgentTask", "t", status={"phase": "AwaitingInput", "question": "?"}))
    assert core.waits_for_person(t) == "question"
    with pytest.raises(ValueError):
        core.summarize("Secret", obj("Secret", "s"))


def test_access_is_checked_then_cached_for_its_ttl_and_fails_closed_by_default() -> None:
    access = core.Access(ttl=5.0)
    assert access.decide("p", "a", 0.0) == "check"
    access.record("p", "a", True, 0.0)
    access.record("p", "b", False, 0.0)
    assert (access.decide("p", "a", 4.9), access.decide("p", "b", 4.9)) == ("allow", "deny")
    assert access.decide("p", "a", 5.0) == "check"  # a revoked right stops showing within the ttl
    assert access.decide("someone-else", "a", 1.0) == "check"  # per token


def test_access_stays_bounded() -> None:
    access = core.Access(ttl=5.0, max_entries=3)
    for i in range(10):
        access.record("p", f"ns{i}", True, float(i))
    assert len(access.answers) <= 3 and access.decide("p", "ns9", 9.0) == "allow"


def test_token_key_is_not_the_token() -> None:
    key = core.token_key("eyJhbGciOi.secret")
    assert "secret" not in key and len(key) == 32 and key == core.token_key("eyJhbGciOi.secret")


def test_a_viewer_past_its_queue_is_dropped_once() -> None:
    box = core.Outbox(limit=2)
    change = core.Change("AgentTask", "a", "t", None, 1)
    assert [box.offer(change) for _ in range(4)] == ["queued", "queued", "dropped", "closed"]
    assert box.dropped and box.take() == []
    fresh = core.Outbox(limit=2)
    fresh.offer(change)
    assert fresh.take() == [change] and fresh.take() == []


def test_a_followed_log_keeps_the_newest_lines_and_counts_the_dropped() -> None:
    tail = core.Tail(limit=3, line_chars=10)
    assert tail.take() == (0, [])
    for n in range(5):
        tail.offer(f"line {n}")
    assert tail.take() == (2, ["line 2", "line 3", "line 4"])
    assert tail.take() == (0, [])  # the gap is told once
    tail.offer("x" * 11)
    assert tail.take() == (0, ["x" * 10 + " [cut]"])


@pytest.mark.parametrize(("action", "kind", "body", "problem"), [
    ("answer", "AgentTask", {"text": "yes"}, None),
    ("answer", "AgentTask", {"text": "  "}, "non-empty"),
    ("answer", "MergeJob", {"text": "yes"}, "applies to AgentTask"),
    ("approve", "MergeJob", {}, None),
    ("cancel", "BuildRequest", {}, None),
    ("relaunch", "AgentTask", {"model": "m2"}, None),
    ("relaunch", "AgentTask", {"model": 3}, "non-text"),
    ("suspend", "AgentTask", {"spec": "x"}, "unknown"),
    ("delete", "AgentTask", {}, "unknown action"),
])
def test_action_form(action: str, kind: str, body: dict[str, Any], problem: str | None) -> None:
    found = core.action_problem(action, kind, body)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_a_relist_of_one_namespace_leaves_the_others() -> None:
    view = core.View()
    view.replace("AgentTask", [obj("AgentTask", "t", ns="a")], "a")
    view.replace("AgentTask", [obj("AgentTask", "t", ns="b")], "b")
    changes = view.replace("AgentTask", [], "a")
    assert [(c.namespace, c.summary) for c in changes] == [("a", None)]
    assert set(view.objects) == {("AgentTask", "b", "t")}
