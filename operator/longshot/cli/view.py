"""Pure shaping of what ``kubectl longshot`` read: a build's tree (its tasks, their attempts and MergeJobs) as data
for ``-o json|yaml`` and as text. Input is the resources as the API server returns them (camelCase dicts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from longshot.api import conditions as c
from longshot.api import sanitize


def _cond(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return c.find((obj.get("status") or {}).get("conditions") or [], type_)


def _cond_text(obj: Mapping[str, Any], type_: str) -> str | None:
    found = _cond(obj, type_)
    return f"{type_}={found.get('status')}/{found.get('reason')}" if found else None


def _build_of(obj: Mapping[str, Any]) -> str | None:
    return ((obj.get("spec") or {}).get("buildRef") or {}).get("name")


def tree(build: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]],
         jobs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The build with its tasks (oldest first), each with its attempts and MergeJobs (every one: a relaunched task's
    earlier MergeJob too, ``current`` marking the one its ``status.mergeJob`` names)."""
    name = build["metadata"]["name"]
    status = build.get("status") or {}
    by_task: dict[str, list[Mapping[str, Any]]] = {}
    for j in jobs:
        if _build_of(j) == name:
            by_task.setdefault(((j.get("spec") or {}).get("taskRef") or {}).get("name", ""), []).append(j)
    out_tasks: list[dict[str, Any]] = []
    mine = [t for t in tasks if _build_of(t) == name]
    for t in sorted(mine, key=lambda t: (t["metadata"].get("creationTimestamp") or "", t["metadata"]["name"])):
        ts = t.get("status") or {}
        spec = t.get("spec") or {}
        tname = t["metadata"]["name"]
        current = ts.get("mergeJob") or tname
        out_tasks.append({
            "name": tname,
            "role": spec.get("role", "worker"),
            "phase": ts.get("phase") or "Pending",
            "suspended": bool(spec.get("suspend")),
            "cancel": bool(spec.get("cancel")),
            "question": ts.get("question"),
            "waiting": _waiting(t),
            "attempts": [{k: a.get(k) for k in ("number", "pod", "model", "startTime", "endTime", "exitReason",
                                                  "failureClass", "tokens", "cost") if a.get(k) is not None}
                         for a in ts.get("attempts") or []],
            "mergeJobs": [{"name": j["metadata"]["name"], "phase": (j.get("status") or {}).get("phase") or "Queued",
                           "commit": (j.get("spec") or {}).get("commit"),
                           "mergedCommit": (j.get("status") or {}).get("mergedCommit"),
                           "approved": bool((j.get("spec") or {}).get("approved")),
                           "current": j["metadata"]["name"] == current}
                          for j in sorted(by_task.get(tname, []), key=lambda j: (
                              j["metadata"].get("creationTimestamp") or "", j["metadata"]["name"]))],
        })
    return {
        "name": name,
        "namespace": build["metadata"].get("namespace"),
        "phase": status.get("phase"),
        "suspended": bool((build.get("spec") or {}).get("suspend")),
        "conditions": [x for x in (_cond_text(build, t) for t in (c.READY, c.FINALIZED)) if x],
        "tasks": out_tasks,
    }


def _waiting(task: Mapping[str, Any]) -> str | None:
    """Why a pending task waits for capacity (its ``Admitted=False`` condition's reason and message), or None."""
    found = _cond(task, c.ADMITTED)
    if found is None or found.get("status") != "False" or found.get("reason") not in c.HELD_REASONS:
        return None
    if ((task.get("status") or {}).get("phase") or "Pending") != "Pending":
        return None
    return f"{found.get('reason')}: {found.get('message') or ''}"


def tree_text(view: Mapping[str, Any]) -> str:
    """The tree for a terminal."""
    head = [f"BuildRequest/{view['name']}", view.get("phase") or "Pending", *view["conditions"]]
    if view["suspended"]:
        head.append("[suspended]")
    lines = ["  ".join(head)]
    ts = view["tasks"]
    for i, t in enumerate(ts):
        last_task = i == len(ts) - 1
        flags = [x for x, on in (("[suspended]", t["suspended"]), ("[cancel]", t["cancel"])) if on]
        lines.append(("└── " if last_task else "├── ") + "  ".join(
            [f"AgentTask/{t['name']}", t["role"], t["phase"], *flags]))
        pad = "    " if last_task else "│   "
        children: list[str] = []
        for a in t["attempts"]:
            parts = [f"attempt {a['number']}", a.get("pod", "")]
            if a.get("model"):
                parts.append(f"model={a['model']}")
            if a.get("failureClass"):
                parts.append(str(a["failureClass"]))
            if a.get("exitReason"):
                parts.append(sanitize.one_line(str(a["exitReason"]))[:80])
            elif not a.get("endTime"):
                parts.append("running")
            children.append("  ".join(p for p in parts if p))
        for j in t["mergeJobs"]:
            parts = [f"MergeJob/{j['name']}", j["phase"]]
            if j.get("mergedCommit"):
                parts.append(str(j["mergedCommit"])[:12])
            if not j["current"]:
                parts.append("(replaced by a relaunch)")
            children.append("  ".join(parts))
        if t.get("waiting"):
            children.append(sanitize.one_line(str(t["waiting"]))[:200])
        if t.get("question") and t["phase"] == "AwaitingInput":
            children.append(f"question: {sanitize.one_line(str(t['question']))[:200]}")
        for k, child in enumerate(children):
            lines.append(pad + ("└── " if k == len(children) - 1 else "├── ") + child)
    return "\n".join(lines) + "\n"
