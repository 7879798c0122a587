#!/usr/bin/env python3
"""What tracing costs, off and on (docs/tracing.md, docs/benchmarks.md).

    PYTHONPATH=operator python hack/bench_tracing.py [--runs 5] [--json]

1. **The no-op path** (tracing off): the lines a reconcile runs for tracing when it is off (``tracing.enabled()``,
   ``controllers.tasks.attempt_spans`` with nothing ended, a ``tracing.span`` block), in nanoseconds per call, and
   whether the SDK was imported at all.
2. **A span when on**: ``tracing.record`` + ``tracing.emit`` of an attempt's span, and a live ``tracing.span``
   block, exported in batches over OTLP/HTTP to a local receiver (``longshot_testing.otlp.Receiver``).
3. **The agent runner**, a whole scripted attempt (``python -m longshot agent``: clone a local repository, two
   tool calls, commit, push, handoff) with tracing off and on (``TRACEPARENT`` and
   ``LONGSHOT_TRACING_ENDPOINT`` to the receiver), alternated, median of ``--runs`` each.

No timed assertion anywhere: this prints figures. Loopback only, bounded loops.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from longshot import tracing
from longshot.api import handoff, objects
from longshot.controllers import tasks as taskc
from longshot_testing import otlp

ROOT = Path(__file__).resolve().parents[1]
GIT = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "b",
       "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.com"}


def per_call_ns(stmt: Any, number: int) -> float:
    best = min(timeit.repeat(stmt, number=number, repeat=5))
    return best / number * 1e9


def _task() -> tuple[objects.AgentTask, objects.BuildRequest]:
    task = objects.AgentTask.model_validate({
        "apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": "app-t1", "namespace": "ns", "uid": "task-uid"},
        "spec": {"buildRef": {"name": "app"}, "description": "d", "role": "worker"},
        "status": {"attempts": [{"number": n, "pod": f"app-t1-a{n}", "startTime": "2026-01-01T00:00:00Z",
                                 "endTime": "2026-01-01T00:01:00Z"} for n in range(1, 4)]}})
    build = objects.BuildRequest.model_validate({
        "apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
        "metadata": {"name": "app", "namespace": "ns", "uid": "build-uid"},
        "spec": {"request": "r", "repository": {"url": "https://git.example.com/a.git"}}})
    return task, build


def noop() -> dict[str, Any]:
    assert not tracing.enabled()
    task, build = _task()

    def block() -> None:
        with tracing.span("landing", {"longshot.size": 2}) as s:
            s.set("longshot.landed", True)

    out = {
        "enabled_check_ns": per_call_ns(tracing.enabled, 1_000_000),
        "attempt_spans_nothing_ended_ns": per_call_ns(lambda: taskc.attempt_spans(task, build, [], {}), 1_000_000),
        "span_block_ns": per_call_ns(block, 500_000),
        "sdk_imported": any(m.startswith("opentelemetry.sdk") for m in sys.modules),
    }
    return out


def on(receiver: otlp.Receiver) -> dict[str, Any]:
    tracing.setup(tracing.OPERATOR, receiver.endpoint)
    try:
        now = datetime.now(UTC)
        root = tracing.build_span("build-uid")
        counter = iter(range(10**9))

        def emit() -> None:
            n = next(counter)
            tracing.emit(tracing.record("attempt", tracing.attempt_span("build-uid", "task-uid", n), root, now, now,
                                        {"longshot.attempt": n, "longshot.task": "app-t1"}))

        def block() -> None:
            with tracing.span("landing", {"longshot.size": 2}, parent=root) as s:
                s.set("longshot.landed", True)

        out = {"emit_attempt_span_us": per_call_ns(emit, 2_000) / 1000,
               "span_block_us": per_call_ns(block, 2_000) / 1000}
        tracing.flush()
        out["exported_requests"] = receiver.requests
        return out
    finally:
        tracing.shutdown(tracing.OPERATOR)


def _git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env={**os.environ, **GIT})


def runner(receiver: otlp.Receiver, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
        root = Path(tmp)
        bare = root / "app.git"
        _git("init", "--quiet", "--bare", "-b", "main", str(bare))
        seed = root / "seed"
        _git("init", "--quiet", "-b", "main", str(seed))
        (seed / "README.md").write_text("# app\n")
        _git("add", "-A", cwd=seed)
        _git("commit", "--quiet", "-m", "initial", cwd=seed)
        _git("push", "--quiet", str(bare), "main", cwd=seed)
        (root / "script").mkdir()
        (root / "script" / "script.yaml").write_text(yaml.safe_dump({"roles": {"worker": [
            {"write": {"path": "hello.txt", "content": "hello\n"}},
            {"write": {"path": "world.txt", "content": "world\n"}}, {"finish": "two files"}]}}))
        times: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(runs * 2):
            mode = "off" if i % 2 == 0 else "on"
            ti = handoff.TaskInput(task=f"app-t{i}", build="app", namespace="ns", role="worker", description="d",
                                   repository_url=f"file://{bare}", branch=f"longshot/app/app-t{i}")
            work = root / f"run{i}"
            work.mkdir()
            (work / "task.json").write_text(json.dumps(ti.to_wire()))
            env = {k: v for k, v in os.environ.items() if not k.startswith(("LONGSHOT_", "GIT_", "TRACEPARENT"))}
            env.update(GIT, HOME=str(work), LONGSHOT_TASK_INPUT=str(work / "task.json"),
                       LONGSHOT_WORKSPACE_DIR=str(work / "ws"), LONGSHOT_SCRIPT_DIR=str(root / "script"),
                       LONGSHOT_TERMINATION_LOG=str(work / "termination-log"), LONGSHOT_HEARTBEAT_SECONDS="0",
                       PYTHONPATH=str(ROOT / "operator"))
            if mode == "on":
                env.update(TRACEPARENT=tracing.traceparent("build-uid", f"task-{i}", 1),
                           LONGSHOT_TRACING_ENDPOINT=receiver.endpoint)
            started = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "longshot", "agent"], env=env, capture_output=True,
                                  text=True, timeout=300, check=False)
            took = time.monotonic() - started
            if done.returncode != 0:
                raise SystemExit(f"the runner failed ({mode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
            times[mode].append(took)
        agent_spans = len([s for s in receiver.spans(tracing.trace_id_hex("build-uid")) if s.service == tracing.AGENT])
        return {"runs": runs, "off_median_s": statistics.median(times["off"]),
                "on_median_s": statistics.median(times["on"]), "off_s": times["off"], "on_s": times["on"],
                "spans_received": agent_spans}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {"noop": noop()}
    with otlp.Receiver() as receiver:
        result["on"] = on(receiver)
        result["runner"] = runner(receiver, max(1, min(args.runs, 50)))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    n, o, r = result["noop"], result["on"], result["runner"]
    print(f"off: tracing.enabled() {n['enabled_check_ns']:.0f} ns; attempt_spans (nothing ended) "
          f"{n['attempt_spans_nothing_ended_ns']:.0f} ns; a span block {n['span_block_ns']:.0f} ns; "
          f"SDK imported: {n['sdk_imported']}")
    print(f"on: an attempt's span emitted {o['emit_attempt_span_us']:.1f} us; a live span block "
          f"{o['span_block_us']:.1f} us; {o['exported_requests']} OTLP requests")
    print(f"agent runner (scripted attempt, median of {r['runs']}): off {r['off_median_s']:.2f} s, "
          f"on {r['on_median_s']:.2f} s; {r['spans_received']} spans received")
    return 0


if __name__ == "__main__":
    sys.exit(main())
