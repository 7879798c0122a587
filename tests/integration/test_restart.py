"""The operator killed (SIGKILL) in the middle of a build and started again: no duplicate Pod, no lost task.

The operator runs as a real process (``python -m longshot operator``) so that it can be killed at any
moment, not stopped politely.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

from k8s_builders import build, create, list_of
from kubelet_double import finish_pod, plan_handoff

from longshot_testing import wait_for


def agent_pods(core, namespace):
    return core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/managed-by=longshot-operator").items


def test_killed_operator_restarts_without_duplicates_or_losses(operator_process, core_v1, custom, namespace):
    n = 30
    first = operator_process()
    b = build("demo")
    b["spec"]["workers"] = {"max": n}
    create(custom, namespace, b)
    wait_for(lambda: any(p.metadata.name == "demo-planner-a1" for p in agent_pods(core_v1, namespace)),
             timeout=60, what="the planner Pod")
    finish_pod(core_v1, namespace, "demo-planner-a1",
               message=plan_handoff("demo-planner", [{"name": f"t{i}", "description": f"task {i}"}
                                                     for i in range(n)]))
    # kill it while it creates the workers' tasks and Pods
    wait_for(lambda: len(agent_pods(core_v1, namespace)) >= 5, timeout=60, what="the first worker Pods")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = {p.metadata.name for p in agent_pods(core_v1, namespace)}

    operator_process()

    def settled():
        tasks = list_of(custom, namespace, "agenttasks")
        workers = [t for t in tasks if t["spec"]["role"] == "worker"]
        running = [t for t in workers if (t.get("status") or {}).get("phase") == "Running"]
        return tasks if len(workers) == n and len(running) == n else None

    tasks = wait_for(settled, timeout=90, what=f"{n} worker tasks, all Running after the restart")
    pods = agent_pods(core_v1, namespace)
    by_task = Counter(p.metadata.labels["longshot.dev/task"] for p in pods)
    assert all(count == 1 for count in by_task.values()), by_task  # one Pod per task: attempt 1 only
    assert {p.metadata.name for p in pods} >= before  # nothing created before the kill was lost
    for t in tasks:
        if t["spec"]["role"] == "worker":
            attempts = t["status"]["attempts"]
            assert [a["number"] for a in attempts] == [1], t["metadata"]["name"]
            assert attempts[0]["pod"] == f"{t['metadata']['name']}-a1"
