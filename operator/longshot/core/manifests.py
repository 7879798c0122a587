"""Every AgentTask and MergeJob the operator makes, shaped in one place.

The planner, the plan's workers and sub-planners, testers and reviewers of the merge queue, fixers, sweeps, best-of-N
candidates and judges are all AgentTasks; they differ in role, owner, labels, annotations and a few spec fields. The
callers (``core.plan``, ``core.fanout``, the merge queue's and the build's reconcilers) decide those; this module
gives the object its shape: the API version and kind, the labels every AgentTask carries (``task_labels``), the
owner reference, the priority clamped to the CRD's range. Pure: plain dicts in, plain dicts out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from longshot.api import keys, objects
from longshot.api.buildrequest import GateStep
from longshot.api.common import API_VERSION
from longshot.core import gates, names, scheduler

BUILD_LABEL = keys.BUILD
GATE = "gate"
"""The purpose of a merge queue's gate task (label ``longshot.dev/purpose``): a tester of a batch's prefix."""
ROLE_LABEL = keys.ROLE


def label_value(value: str) -> str:
    """``value`` made fit for a label value (at most 63 characters)."""
    return names.fit(value)


def task_labels(build: str, role: str) -> dict[str, str]:
    """Labels of an AgentTask of ``build``."""
    return {
        keys.NAME: "longshot",
        keys.INSTANCE: label_value(build),
        keys.COMPONENT: "agent-task",
        keys.MANAGED_BY: keys.OPERATOR,
        BUILD_LABEL: label_value(build),
        ROLE_LABEL: role,
    }


def owned_by_build(name: str, uid: str) -> dict[str, Any]:
    """The owner reference to a BuildRequest (deleting the build deletes what it owns)."""
    return {"apiVersion": API_VERSION, "kind": "BuildRequest", "name": name, "uid": uid, "controller": True,
            "blockOwnerDeletion": True}


def owned_by_task(name: str, uid: str) -> dict[str, Any]:
    """The owner reference to an AgentTask (a best-of-N task owns its candidates and judge)."""
    return {"apiVersion": API_VERSION, "kind": "AgentTask", "name": name, "uid": uid, "controller": True,
            "blockOwnerDeletion": True}


def clamp_priority(priority: int) -> int:
    return min(10, max(1, int(priority)))


def agent_task(*, name: str, namespace: str, build: str, role: str, description: str, priority: int,
               owner: Mapping[str, Any], labels: Mapping[str, str] | None = None,
               annotations: Mapping[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """An AgentTask of ``build``: the task labels for ``role`` plus ``labels``, owned by ``owner``; ``spec`` adds
    spec fields by their wire names (``dependsOn``, ``scope``, ``branch``, ...; None values are left out)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace,
                                "labels": {**task_labels(build, role), **(labels or {})},
                                "ownerReferences": [dict(owner)]}
    if annotations:
        metadata["annotations"] = dict(annotations)
    body: dict[str, Any] = {"buildRef": {"name": build}, "description": description, "role": role,
                            "priority": clamp_priority(priority)}
    body.update({k: v for k, v in spec.items() if v is not None})
    return {"apiVersion": API_VERSION, "kind": "AgentTask", "metadata": metadata, "spec": body}


def tester(*, name: str, namespace: str, build: str, owner: Mapping[str, Any], branch: str, command: str,
           purpose: str, description: str, priority: int, annotations: Mapping[str, str] | None = None,
           labels: Mapping[str, str] | None = None, role: str = "tester", commit: str | None = None) -> dict[str, Any]:
    """A tester (a gate, a sweep) or a reviewer on ``branch`` (at ``commit`` when given: bound to it), running
    ``command`` (a tester's; "" for a reviewer)."""
    return agent_task(
        name=name, namespace=namespace, build=build, role=role, description=description, priority=priority,
        owner=owner, labels={keys.PURPOSE: purpose, **(labels or {})},
        annotations={**({keys.TEST_COMMAND: command} if command else {}), **(annotations or {})},
        branch=branch, commit=commit or None)


def fixer(*, name: str, namespace: str, build: str, owner: Mapping[str, Any], branch: str, description: str,
          scope: Sequence[str], priority: int, fix_depth: int, fixes: str) -> dict[str, Any]:
    """A fixer of the branch of ``fixes`` (a MergeJob's task, a sweep), ``fix_depth`` fixes deep."""
    return agent_task(
        name=name, namespace=namespace, build=build, role="fixer", description=description, priority=priority,
        owner=owner, labels={keys.FIX_DEPTH: str(fix_depth)}, annotations={keys.FIXES: fixes}, branch=branch,
        scope=list(scope))


def gate_steps(build: objects.BuildRequest) -> tuple[GateStep, ...]:
    """The quality gate's named steps for the build's profile, in the order they run (``core.gates.steps_of``)."""
    return gates.steps_of(build.spec.quality_gate, build.spec.reconciler.command)


def gate_parts(build: objects.BuildRequest) -> list[str]:
    """The quality gate's commands for the build's profile, in the order they run."""
    return gates.parts_of(gate_steps(build))


def gate_command(build: objects.BuildRequest) -> str:
    """The quality gate's command for the build's profile (``&&``-joined), or "" when there is none."""
    return gates.command_of(gate_steps(build))


def tester_of(build: objects.BuildRequest, name: str, *, branch: str, command: str, purpose: str,
              description: str, priority: int, annotations: dict[str, str] | None = None,
              labels: dict[str, str] | None = None, role: str = "tester",
              commit: str | None = None) -> dict[str, Any]:
    """A tester or reviewer of ``build`` (:func:`tester`), owned by the build."""
    return tester(name=name, namespace=build.namespace, build=build.name, owner=build.owner_reference(),
                  branch=branch, command=command, purpose=purpose, description=description,
                  priority=priority, annotations=annotations, labels=labels, role=role, commit=commit)


def fixer_of(build: objects.BuildRequest, name: str, *, branch: str, description: str,
             scope: Sequence[str], priority: int, fix_depth: int, fixes: str) -> dict[str, Any]:
    """A fixer of ``build`` (:func:`fixer`), owned by the build; its scope bounded as the CRD requires."""
    return fixer(name=name, namespace=build.namespace, build=build.name, owner=build.owner_reference(),
                 branch=branch, description=description, scope=scheduler.bounded_scope(scope),
                 priority=priority, fix_depth=fix_depth, fixes=fixes)


def merge_job(*, task: str, namespace: str, build: str, role: str, task_uid: str, branch: str, commit: str,
              target: str, strategy: str, priority: int, base_commit: str | None = None,
              stacked_on: Sequence[str] = (), name: str = "") -> dict[str, Any]:
    """The MergeJob of ``task``'s branch at ``commit``, owned by it: named ``name`` (``names.merge_job_name``), else
    after the task."""
    spec: dict[str, Any] = {"buildRef": {"name": build}, "taskRef": {"name": task}, "branch": branch,
                            "commit": commit, "target": target, "strategy": strategy, "priority": priority}
    if base_commit and len(base_commit) >= 7:
        spec["baseCommit"] = base_commit
    stacked = [c for c in stacked_on if 7 <= len(c) <= 64 and all(ch in "0123456789abcdef" for ch in c)]
    if stacked:
        spec["stackedOn"] = stacked[:256]
    return {"apiVersion": API_VERSION, "kind": "MergeJob",
            "metadata": {"name": name or task, "namespace": namespace,
                         "labels": {**task_labels(build, role), keys.COMPONENT: "merge-job"},
                         "ownerReferences": [owned_by_task(task, task_uid)]},
            "spec": spec}
