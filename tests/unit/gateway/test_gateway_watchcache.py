"""The gateway's watch cache (gateway.watchcache): what it keeps, and when it answers. Pure: no API server."""

from __future__ import annotations

from typing import Any

from longshot.gateway import watchcache as wc


def task(name: str, attempts: list[dict[str, Any]], ns: str = "ns") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": "1", "managedFields": [{"big": 1}]},
            "spec": {"role": "worker"}, "status": {"attempts": attempts}}


def test_only_tasks_whose_last_attempt_has_not_ended_are_kept():
    assert wc.live_task(task("t", [{"number": 1, "pod": "t-a1"}]))
    assert wc.live_task(task("t", [{"number": 1, "endTime": "x"}, {"number": 2}]))
    assert not wc.live_task(task("t", []))  # pending: no Pod calls for it
    assert not wc.live_task(task("t", [{"number": 2, "endTime": "x"}, {"number": 1}]))  # by number, not order
    assert not wc.live_task({"metadata": {"name": "t"}})
    assert wc.kept("Pod", {"metadata": {"name": "p"}}) and wc.kept("BuildRequest", {"metadata": {"name": "b"}})


def test_a_store_answers_only_what_it_holds_and_only_while_synced():
    s = wc.Store("AgentTask")
    live, pending = task("a", [{"number": 1}]), task("b", [])
    assert s.get("ns", "a") == (False, None)  # not synced yet: the caller reads the API server
    s.replace("", [live, pending])
    held, got = s.get("ns", "a")
    assert held and got is not None and got["metadata"]["name"] == "a"
    assert "managedFields" not in got["metadata"]  # slim
    assert s.get("ns", "b") == (False, None)  # not kept: read from the API server
    s.unsync("")  # the watch failed
    assert s.get("ns", "a") == (False, None)
    s.replace("", [live])
    assert s.get("ns", "a")[0]


def test_watch_events_add_change_and_drop_objects():
    s = wc.Store("AgentTask")
    s.replace("ns", [])
    s.apply("ADDED", task("a", [{"number": 1}]))
    assert s.get("ns", "a")[0]
    s.apply("MODIFIED", task("a", [{"number": 1, "endTime": "x"}]))  # its attempt ended: no longer kept
    assert s.get("ns", "a") == (False, None) and len(s) == 0
    s.apply("MODIFIED", task("a", [{"number": 1, "endTime": "x"}, {"number": 2}]))
    assert s.get("ns", "a")[1]["status"]["attempts"][-1]["number"] == 2  # type: ignore[index]
    s.apply("DELETED", task("a", [{"number": 2}]))
    assert s.get("ns", "a") == (False, None)


def test_a_namespace_list_replaces_only_that_namespace_and_syncs_only_it():
    s = wc.Store("Pod")
    pod = lambda name, ns: {"metadata": {"name": name, "namespace": ns}}  # noqa: E731
    s.replace("one", [pod("p1", "one"), pod("p2", "one")])
    s.replace("two", [pod("q1", "two")])
    s.replace("one", [pod("p2", "one")])  # p1 went while the watch was down
    assert s.get("one", "p1") == (False, None) and s.get("one", "p2")[0] and s.get("two", "q1")[0]
    s.unsync("two")
    assert s.get("two", "q1") == (False, None) and s.get("one", "p2")[0]
    assert s.get("three", "x") == (False, None)
