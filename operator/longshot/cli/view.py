"""Pure shaping of what ``kubectl longshot`` read: a build's tree (its tasks, their attempts and MergeJobs) as data
for ``-o json|yaml`` and as text, the rows of ``list``, and the state ``tree -w`` folds watch events into. Input is
the resources as the API server returns them (camelCase dicts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
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


# --- list --------------------------------------------------------------------------------------------

TERMINAL_BUILD = frozenset({"Succeeded", "Failed"})
"""The phases a build does not leave by itself (``tree -w`` stops there)."""


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(created: Any, now: datetime) -> str:
    """kubectl's short age: ``42s``, ``7m``, ``3h``, ``12d`` (``?`` when the time is missing or unreadable)."""
    then = _parse_time(created)
    if then is None:
        return "?"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size or (unit == "m" and seconds >= size):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def build_rows(builds: Sequence[Mapping[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """One row a build (by namespace, then name): its phase, tasks done (succeeded) of total, and age, from the
    build's own ``status`` (the operator counts its tasks there; no task is read)."""
    rows = []
    for b in builds:
        meta = b.get("metadata") or {}
        status = b.get("status") or {}
        counts = status.get("tasks") or {}
        rows.append({
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "phase": status.get("phase") or "Pending",
            "suspended": bool((b.get("spec") or {}).get("suspend")),
            "tasks": {"done": int(counts.get("succeeded") or 0), "total": int(counts.get("total") or 0)},
            "created": meta.get("creationTimestamp"),
            "age": age(meta.get("creationTimestamp"), now),
        })
    return sorted(rows, key=lambda r: (str(r["namespace"]), str(r["name"])))


def list_text(rows: Sequence[Mapping[str, Any]], *, all_namespaces: bool) -> str:
    """The rows as kubectl prints a table: upper-case headers, columns padded to the widest cell."""
    head = (["NAMESPACE"] if all_namespaces else []) + ["NAME", "PHASE", "TASKS", "AGE"]
    table = [head]
    for r in rows:
        phase = str(r["phase"]) + (" (suspended)" if r["suspended"] else "")
        table.append(([str(r["namespace"])] if all_namespaces else [])
                     + [str(r["name"]), phase, f"{r['tasks']['done']}/{r['tasks']['total']}", str(r["age"])])
    widths = [max(len(sanitize.one_line(row[i])) for row in table) for i in range(len(head))]
    return "".join("   ".join(sanitize.one_line(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                   + "\n" for row in table)


# --- tree -w: what the watches saw -------------------------------------------------------------------


@dataclass
class Watched:
    """What ``tree -w`` knows of one build: the build and every AgentTask and MergeJob of its namespace, keyed by
    name, as the last list or watch event left them. ``apply`` folds one event in (pure; the shell watches)."""

    build: dict[str, Any]
    objects: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {"AgentTask": {}, "MergeJob": {}})

    def apply(self, kind: str, event: str, obj: Mapping[str, Any]) -> bool:
        """Fold in a watch event (``ADDED``, ``MODIFIED``, ``DELETED``; ``BOOKMARK`` and unknown ones change
        nothing). Whether anything changed. The build's own ``DELETED`` keeps its last state (``gone`` says so)."""
        name = (obj.get("metadata") or {}).get("name")
        if event not in ("ADDED", "MODIFIED", "DELETED") or not isinstance(name, str):
            return False
        if kind == "BuildRequest":
            if name != self.build["metadata"]["name"]:
                return False
            if event == "DELETED":
                self.build = {**self.build, "deleted": True}
                return True
            changed = dict(obj) != self.build
            self.build = dict(obj)
            return changed
        bucket = self.objects[kind]
        if event == "DELETED":
            return bucket.pop(name, None) is not None
        changed = bucket.get(name) != dict(obj)
        bucket[name] = dict(obj)
        return changed

    def replace(self, kind: str, items: Sequence[Mapping[str, Any]]) -> None:
        """A fresh list of ``kind`` (the first, and after a watch expired): what it does not hold is gone."""
        self.objects[kind] = {i["metadata"]["name"]: dict(i) for i in items}

    def view(self) -> dict[str, Any]:
        return tree(self.build, list(self.objects["AgentTask"].values()), list(self.objects["MergeJob"].values()))

    @property
    def finished(self) -> bool:
        """The build reached a terminal phase, or was deleted: nothing more to watch."""
        return bool(self.build.get("deleted")) or (self.build.get("status") or {}).get("phase") in TERMINAL_BUILD


def image_version(image: str) -> str:
    """The version an image reference names: its tag (``...:0.1.0`` gives ``0.1.0``), else its digest, else
    ``unknown``."""
    if "@" in image:
        return image.split("@", 1)[1]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "unknown"
