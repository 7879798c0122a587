"""Issue 57's scenario on the real cluster: a noisy tenant fills the nodes, a quiet tenant's build comes after.

Tenant A (the test's namespace) applies a build whose planner plans 24 tasks of 400m cpu each, every one sleeping
``WORK_SECONDS``: more than the nodes hold, so admission by capacity (the chart's default ``auto``) holds the rest in
line (``Admitted=False/WaitingForCapacity``). Then tenant B (a second namespace) applies one small build whose Pods
request as much as A's (so it cannot slip into a smaller gap). Its planner's Pod must be made as soon as one of A's
agents ends, that is within one worker's runtime, and it must be scheduled at once: no agent Pod of either tenant is
ever reported ``FailedScheduling`` by the real kube-scheduler.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import build_request, git_credentials, kget, script_configmap, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

NOISY_TASKS = 24
WORK_SECONDS = 20
NOISY_CPU = "400m"
BOUND_SECONDS = WORK_SECONDS + 40
"""How soon after B's build is applied its planner's Pod must be made: one of A's agents' runtime (they were all
started before B came), plus B's build's own start (its reconcile, the planner task, the operator's dispatch) and
the slack of a 2-core machine."""

NOISY_SCRIPT = "roles:\n  planner:\n    - finish:\n        summary: many tasks\n        tasks:\n" + "".join(
    f"          - {{name: t{i:02d}, description: 'wait', scope: [f{i:02d}.txt]}}\n" for i in range(NOISY_TASKS)) + (
    f"steps:\n  - run: {{command: 'sleep {WORK_SECONDS}', timeout: 120}}\n  - finish: {{summary: waited}}\n")
QUIET_SCRIPT = ("roles:\n  planner:\n    - finish: {summary: nothing to plan, tasks: []}\n"
                "steps:\n  - finish: {summary: ok}\n")


@pytest.fixture
def quiet_namespace(kubectl, namespace: str, cluster: Any) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Tenant B's namespace, labelled as the ``namespace`` fixture's, with the same git Secret."""
    name = f"{namespace[:55]}-q"
    kubectl("delete", "namespace", name, "--wait=true", "--timeout=120s", check=False)
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest", "longshot.dev/test=true")
    user, password = git_credentials(cluster, namespace)
    kubectl("-n", name, "create", "secret", "generic", "git-token", f"--from-literal=username={user}",
            f"--from-literal=password={password}")
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def apply(kubectl, namespace: str, *objects: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    done = kubectl("-n", namespace, "apply", "-f", "-", check=False,
                   input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))
    assert done.returncode == 0, done.stderr


def _agent_pods(kubectl, ns: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    got = kget(kubectl, "-n", ns, "pods", "-l", "app.kubernetes.io/managed-by=longshot-operator") or {}
    return list(got.get("items") or [])


def _waiting_for_capacity(kubectl, ns: str) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    for t in (kget(kubectl, "-n", ns, "agenttasks") or {}).get("items") or []:
        for c in (t.get("status") or {}).get("conditions") or []:
            if c["type"] == "Admitted" and c.get("reason") == "WaitingForCapacity":
                return dict(c)
    return None


def _failed_scheduling(kubectl, *namespaces: str) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for ns in namespaces:
        events = kget(kubectl, "-n", ns, "events", "--field-selector", "reason=FailedScheduling") or {}
        out.extend(f"{ns}/{e['involvedObject']['name']}: {e.get('message')}" for e in events.get("items") or [])
    return out


def test_a_quiet_tenants_first_pod_is_made_within_one_workers_runtime_and_runs_at_once(  # type: ignore[no-untyped-def]
        operator, kubectl, namespace, quiet_namespace, git_repo) -> None:
    noisy = build_request("noisy", git_repo, script="noisy", finalization=False, workers={"max": NOISY_TASKS})
    noisy["spec"]["agent"]["resources"]["requests"]["cpu"] = NOISY_CPU
    apply(kubectl, namespace, script_configmap("noisy", NOISY_SCRIPT), noisy)
    # A fills the nodes, and the rest of its tasks wait in line for capacity (not in the kube-scheduler's queue)
    said = wait_for(lambda: _waiting_for_capacity(kubectl, namespace), 240,
                    "tenant A's tasks held by admission, the nodes full", interval=2)
    assert "place" in said["message"], said
    running_a = [p for p in _agent_pods(kubectl, namespace) if p["status"].get("phase") in ("Pending", "Running")]

    quiet = build_request("quiet", git_repo, script="quiet", finalization=False)
    quiet["spec"]["agent"]["resources"]["requests"]["cpu"] = NOISY_CPU  # no smaller: it must wait for A's room
    apply(kubectl, quiet_namespace, script_configmap("quiet", QUIET_SCRIPT), quiet)
    applied = time.time()

    def quiet_planner() -> dict[str, Any] | None:
        pods = _agent_pods(kubectl, quiet_namespace)
        return pods[0] if pods else None

    pod = wait_for(quiet_planner, BOUND_SECONDS + 60, "tenant B's first agent Pod", interval=0.5)
    made = calendar.timegm(time.strptime(pod["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
    took = made - applied
    print(f"tenant B's first agent Pod made {took:.0f}s after its build was applied; tenant A had "
          f"{len(running_a)} agents on the nodes and tasks in line")
    assert took <= BOUND_SECONDS, f"tenant B's first Pod came {took:.0f}s after its build (bound {BOUND_SECONDS}s)"
    name = pod["metadata"]["name"]

    def scheduled() -> bool:
        p = kget(kubectl, "-n", quiet_namespace, "pod", name) or {}
        return any(c["type"] == "PodScheduled" and c["status"] == "True"
                   for c in (p.get("status") or {}).get("conditions") or [])

    wait_for(scheduled, 30, "tenant B's Pod scheduled", interval=0.5)
    assert _failed_scheduling(kubectl, namespace, quiet_namespace) == []
