"""``hack/bench_e2e.py``'s breakdown of a build's time, from its objects: each kind of Pod's span and what ran
after the last worker (the tail the bare-Pod floor does not have)."""

from __future__ import annotations

import pytest

import hack_modules

pytestmark = pytest.mark.unit


def task(name: str, role: str, *spans: tuple[int, int]) -> dict:
    return {"metadata": {"name": name}, "spec": {"role": role}, "status": {"attempts": [
        {"number": i + 1, "pod": f"{name}-a{i + 1}", "startTime": f"2026-01-01T00:{s // 60:02d}:{s % 60:02d}Z",
         "endTime": f"2026-01-01T00:{e // 60:02d}:{e % 60:02d}Z"} for i, (s, e) in enumerate(spans)]}}


def test_the_timeline_says_each_kind_s_span_and_what_ran_after_the_last_worker():
    bench = hack_modules.load("bench_e2e")
    build = {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {"conditions": [
        {"type": "Finalized", "status": "True", "lastTransitionTime": "2026-01-01T00:02:30Z"}]}}
    tasks = [task("e2e-planner", "planner", (2, 13)), task("e2e-a", "worker", (14, 40)),
             task("e2e-b", "worker", (15, 120), ), task("e2e-gate-1", "tester", (60, 70), (121, 131)),
             task("e2e-planner-i2", "planner", (132, 140)), task("e2e-final-1", "tester", (141, 149)),
             task("e2e-c", "worker")]  # no attempt yet: not counted
    lines = bench.timeline(build, tasks)
    assert lines == [
        "planner: 2 Pod(s), first start 2s, last end 140s",
        "worker: 2 Pod(s), first start 14s, last end 120s",
        "gate: 2 Pod(s), first start 60s, last end 131s",
        "final sweep: 1 Pod(s), first start 141s, last end 149s",
        "after the last worker ended (120s): 1 planner, 1 gate, 1 final sweep",
        "Finalized=True at 150s",
    ]
