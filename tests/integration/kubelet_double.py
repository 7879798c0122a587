"""Playing the kubelet's and the agent's part through the API: no kubelet runs in the integration tier.

``finish_pod`` writes what a kubelet writes when the agent container ends: the Pod's phase and the
container's terminated state, with the agent's handoff as the termination message.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kubernetes

from longshot.api import handoff as ho


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def handoff(task: str, attempt: int = 1, *, role: str = "worker", **fields: Any) -> str:
    """An encoded handoff (the termination message of a successful agent)."""
    h = ho.Handoff(task=task, attempt=attempt, role=role, outcome=fields.pop("outcome", "succeeded"), **fields)
    return ho.encode(h).decode()


def plan_handoff(task: str, tasks: list[dict[str, Any]], attempt: int = 1) -> str:
    return handoff(task, attempt, role="planner", tasks=[ho.PlannedTask.model_validate(t) for t in tasks])


def finish_pod(core: kubernetes.client.CoreV1Api, namespace: str, name: str, *, exit_code: int = 0,
               reason: str = "Completed", message: str = "", pod_reason: str | None = None) -> None:
    """Mark the Pod's agent container terminated, as the kubelet would."""
    pod = core.read_namespaced_pod(name, namespace)
    container = pod.spec.containers[0]
    status: dict[str, Any] = {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "startTime": now(),
        "containerStatuses": [{
            "name": container.name, "image": container.image, "imageID": "", "ready": False,
            "restartCount": 0, "started": False,
            "state": {"terminated": {"exitCode": exit_code, "reason": reason, "message": message,
                                     "startedAt": now(), "finishedAt": now()}},
        }],
    }
    if pod_reason:
        status["reason"] = pod_reason
    core.patch_namespaced_pod_status(name, namespace, {"status": status})


def run_pod(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> None:
    """Mark the Pod running."""
    pod = core.read_namespaced_pod(name, namespace)
    container = pod.spec.containers[0]
    core.patch_namespaced_pod_status(name, namespace, {"status": {
        "phase": "Running", "startTime": now(),
        "containerStatuses": [{"name": container.name, "image": container.image, "imageID": "", "ready": True,
                               "restartCount": 0, "started": True, "state": {"running": {"startedAt": now()}}}],
    }})
