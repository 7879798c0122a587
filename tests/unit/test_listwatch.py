"""runtime.listwatch: the list-then-watch loop shared by the gateway's watch cache and the console, against a
scripted ``call`` (the real one is exercised on an API server by tests/integration/test_gateway_watch_cache.py and
test_console.py)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from longshot.runtime import listwatch


class Raw:
    """A raw (``_preload_content=False``) response: ``data`` for a list, ``stream`` for a watch."""

    def __init__(self, data: bytes = b"", lines: list[dict[str, Any]] | None = None) -> None:
        self.data = data
        self.lines = lines or []
        self.released = False

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        for line in self.lines:
            blob = json.dumps(line).encode() + b"\n"
            yield blob[:5]  # split across chunks, and an empty line between events
            yield blob[5:] + b"\n"

    def release_conn(self) -> None:
        self.released = True


class Forbidden(Exception):
    status = 403


def obj(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


class Script:
    """Answers each call from a queue per (list|watch); records the calls; stops the loop when it runs out."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.lw: listwatch.ListWatch | None = None

    def __call__(self, kind: str, ns: str, **kw: Any) -> Any:
        self.calls.append({"kind": kind, "ns": ns, **kw})
        if not self.answers:
            assert self.lw is not None
            self.lw.stopping.set()
            self.done.set()
            raise ConnectionError("the script is over")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def run(answers: list[Any], **kw: Any) -> tuple[Script, list[tuple[str, ...]]]:
    script = Script(answers)
    seen: list[tuple[str, ...]] = []
    lw = listwatch.ListWatch(
        script, kinds=("Pod",), namespaces=("ns",),
        on_list=lambda kind, ns, items: seen.append(("list", kind, ns, *[i["metadata"]["name"] for i in items])),
        on_event=lambda kind, type_, o: seen.append((type_, o["metadata"]["name"])),
        on_unsync=lambda kind, ns: seen.append(("unsync", kind, ns)), retry_seconds=0.0,
        refused_retry_seconds=0.0, **kw)
    script.lw = lw
    lw.start()
    assert script.done.wait(10), "the loop did not use up its script"
    lw.stop()
    return script, seen


def page(items: list[dict[str, Any]], rv: str, cont: str | None = None) -> Raw:
    return Raw(json.dumps({"items": items, "metadata": {"resourceVersion": rv, "continue": cont}}).encode())


def test_a_paginated_list_then_a_watch_resumed_from_the_last_version_bookmarks_included():
    first_watch = Raw(lines=[{"type": "ADDED", "object": obj("c", "12")},
                             {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}])
    second_watch = Raw(lines=[{"type": "DELETED", "object": obj("a", "16")}])
    script, seen = run([page([obj("a", "1")], "10", cont="tok"), page([obj("b", "2")], "11"),
                        first_watch, second_watch])
    assert seen[:3] == [("list", "Pod", "ns", "a", "b"), ("ADDED", "c"), ("DELETED", "a")]
    assert [c.get("_continue") for c in script.calls[:2]] == [None, "tok"]
    assert all(c["limit"] == listwatch.PAGE and not c["_preload_content"] for c in script.calls[:2])
    assert script.calls[2]["resource_version"] == "11" and script.calls[2]["watch"]
    assert script.calls[3]["resource_version"] == "15"  # from the bookmark, not re-listing
    assert first_watch.released and second_watch.released


def test_an_expired_watch_unsyncs_and_lists_again():
    expired = Raw(lines=[{"type": "ERROR", "object": {"message": "too old resource version", "code": 410}}])
    script, seen = run([page([obj("a", "1")], "10"), expired, page([obj("b", "2")], "20")])
    assert seen[:3] == [("list", "Pod", "ns", "a"), ("unsync", "Pod", "ns"), ("list", "Pod", "ns", "b")]
    assert "watch" not in script.calls[2]  # a list, not a watch from the expired version


def test_a_refused_list_is_logged_once_and_tried_again(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger=listwatch.__name__):
        _, seen = run([Forbidden("no"), Forbidden("no"), page([], "5")], refused_hint="grant it")
    refusals = [r for r in caplog.records if "may not list and watch" in r.getMessage()]
    assert len(refusals) == 1 and "grant it" in refusals[0].getMessage()
    assert seen[:3] == [("unsync", "Pod", "ns"), ("unsync", "Pod", "ns"), ("list", "Pod", "ns")]


def test_one_thread_per_kind_and_namespace_and_every_namespace_by_default():
    lw = listwatch.ListWatch(lambda *a, **k: None, kinds=("A", "B"), on_list=lambda *a: None,
                             on_event=lambda *a: None)
    assert lw.namespaces == ("",)
    lw.stopping.set()  # threads exit at once
    lw.start()
    assert sorted(t.name for t in lw._threads) == ["watch-A-all", "watch-B-all"]
    lw.stop()
    assert not any(t.is_alive() for t in lw._threads)
    assert not lw.wait(lambda: False, 1.0)  # stopping: gives up at once
