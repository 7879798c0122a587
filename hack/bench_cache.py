"""Cache benchmark: what the operator's cache holds per AgentTask, and what taking one in costs.

Feeds ``--tasks`` AgentTasks (default 10,000; as the API server returns those of a large plan: the CRD's default
status, the plan's labels and annotations, an owner reference; ``--running`` of them with an attempt and conditions
of their own) through :meth:`Cache.observe`, the way watch events reach it, in this process without any tracer.
The figure is resident memory (``VmRSS``), the one ``make bench-dispatch`` bounds for the whole operator.

Last line: ``cache_rss_per_task_b=<n> cache_rss_mib=<n> observe_us=<n>``. Usage:
``python hack/bench_cache.py [--tasks 10000] [--running 1000]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

from longshot.api import agenttask
from longshot.controllers import cache as cachemod

BUILD_UID = str(uuid.uuid4())


def rss_kib() -> int:
    m = re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text())
    assert m is not None
    return int(m.group(1))


def task(i: int, running: bool) -> dict[str, Any]:
    plan = f"w{i % 1000:04d}"
    name = f"ingest-part-{i // 1000}-{plan}"
    status: dict[str, Any] = agenttask.initial_status()
    if running:
        pod = f"{name}-a1"
        status = {"phase": "Running", "observedGeneration": 1, "retryBase": 0,
                  "attempts": [{"number": 1, "pod": pod, "startTime": "2026-11-23T05:50:43Z", "tokens": 0,
                                "cost": 0}],
                  "conditions": [{"type": t, "status": s, "reason": r, "message": m, "observedGeneration": 1,
                                  "lastTransitionTime": "2026-11-23T05:50:43Z"}
                                 for t, s, r, m in (("Succeeded", "Unknown", "InProgress", "attempt 1 is running"),
                                                    ("Running", "True", "PodRunning", f"attempt 1 runs in Pod {pod}"),
                                                    ("AwaitingInput", "False", "NotRequired", "no question is open"),
                                                    ("Ready", "False", "InProgress", f"attempt 1 is running in {pod}"),
                                                    ("Stalled", "False", "NotStalled", "nothing needs a person"),
                                                    ("Reconciling", "True", "InProgress", f"attempt 1 in {pod}"),
                                                    ("Blocked", "False", "DependenciesReady",
                                                     "every dependency is done"))]}
    body = {
        "apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
        "metadata": {
            "name": name, "namespace": "bench", "uid": str(uuid.uuid4()), "resourceVersion": str(1000 + i),
            "generation": 1, "creationTimestamp": "2026-11-23T05:50:43Z",
            "labels": {"app.kubernetes.io/component": "agent-task", "app.kubernetes.io/instance": "ingest",
                       "app.kubernetes.io/managed-by": "longshot-operator", "app.kubernetes.io/name": "longshot",
                       "longshot.dev/build": "ingest", "longshot.dev/iteration": "1", "longshot.dev/role": "worker",
                       "longshot.dev/parent": f"ingest-part-{i // 1000}"},
            "annotations": {"longshot.dev/plan-name": plan},
            "ownerReferences": [{"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest", "name": "ingest",
                                 "uid": BUILD_UID, "controller": True, "blockOwnerDeletion": True}],
            "managedFields": [{"manager": "longshot-operator", "operation": "Update", "apiVersion":
                               "longshot.dev/v1alpha1", "time": "2026-11-23T05:50:43Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:labels": {}}, "f:spec": {}}}],
        },
        "spec": {"buildRef": {"name": "ingest"}, "cancel": False, "dependsOn": [], "dependsOnPolicy": {"type": "all"},
                 "depth": 1, "description": f"Implement piece {i % 1000} of ingest-part-{i // 1000}; write its tests.",
                 "parentTask": f"ingest-part-{i // 1000}", "priority": 5, "role": "worker",
                 "scope": [f"src/part-{i // 1000}/{plan}/**"]},
        "status": status,
    }
    fresh: dict[str, Any] = json.loads(json.dumps(body))  # new objects, as a watch event's JSON decoder makes them
    return fresh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--running", type=int, default=1_000, help="of them running: conditions of their own")
    args = parser.parse_args()
    c = cachemod.Cache()
    c.observe("BuildRequest", "ADDED", {
        "apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
        "metadata": {"name": "ingest", "namespace": "bench", "uid": BUILD_UID, "resourceVersion": "1",
                     "generation": 1},
        "spec": {"request": "r", "repository": {"url": "https://git.example/r.git"}}})
    c.observe("AgentTask", "ADDED", task(0, False))  # first-use costs (validators, class layouts) are not per task
    gc.collect()
    before = rss_kib()
    took = 0.0
    for i in range(1, args.tasks + 1):
        body = task(i, i <= args.running)  # made and dropped one at a time: only what the cache keeps stays
        start = time.perf_counter()
        c.observe("AgentTask", "ADDED", body)
        took += time.perf_counter() - start
        del body
    gc.collect()
    grown = (rss_kib() - before) * 1024
    assert len(c.tasks) == args.tasks + 1
    print(f"[bench-cache] {args.tasks} AgentTasks ({args.running} running) in the cache: resident memory grew "
          f"{grown / 2**20:.1f} MiB, {grown / args.tasks:.0f} B per task; observe {took / args.tasks * 1e6:.0f} us "
          f"per task")
    print(f"cache_rss_per_task_b={grown / args.tasks:.0f} cache_rss_mib={grown / 2**20:.1f} "
          f"observe_us={took / args.tasks * 1e6:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
