"""The web console's decisions (docs/console.md): what it shows of each resource, which watch events change what a
viewer sees, who may see a namespace, and what happens to a viewer that cannot keep up. Pure: no I/O, time passed in.

The console holds one :class:`View` per process, fed by one shared watch per kind; every viewer's stream is a
snapshot of the namespaces that person may list, then the :class:`Change` records that :meth:`View.apply` returns.

Watch events (``View.apply``)::

    event        object in the view     summary          result
    ADDED        absent                 -                Change(summary), stored
    ADDED        present                same as stored   None (nothing a viewer would see changed)
    MODIFIED     present                different        Change(summary), stored
    MODIFIED     absent                 -                Change(summary), stored (a missed ADDED)
    DELETED      present                -                Change(None), removed
    DELETED      absent                 -                None
    BOOKMARK, ERROR, anything else      -                None
    relist (replace)                    -                a Change per object added, changed or gone

Access (``Access.decide``), per (token hash, namespace), cached ``ttl`` seconds::

    cached answer   age < ttl   decision
    none            -           CHECK (a SelfSubjectAccessReview with the person's token)
    allowed/denied  yes         ALLOW / DENY
    allowed/denied  no          CHECK

A namespace is shown only after an ALLOW: an unknown person, an expired or revoked token, and an API server that
cannot answer all give DENY (fail closed).

Viewers (``Outbox.offer``): each viewer has a bounded queue; a change offered to a full queue drops the viewer
(its stream ends with a ``reload`` event): one slow browser never holds the shared view or the other viewers.

A followed transcript (``Tail.offer``/``take``): the lines of a running attempt's log wait between the thread that
reads them and the viewer's stream in a queue of ``limit`` lines at most::

    queue           offer(line)                         take()
    below limit     appended                            (gap, lines): gap = lines dropped since the last take
    full            the oldest dropped, gap + 1, line appended
    any             a line longer than ``line_chars``: cut there, "[cut]" appended

A slow viewer loses the oldest lines (and is told how many: a ``gap`` event), never the newest, and never holds the
reader back: the log is read at the API server's pace, in bounded memory.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from longshot.api import sanitize

KINDS: Final = ("BuildRequest", "AgentTask", "MergeJob")
"""What the console watches and shows (its ServiceAccount may list and watch these and nothing else)."""
PLURALS: Final = {"BuildRequest": "buildrequests", "AgentTask": "agenttasks", "MergeJob": "mergejobs"}

MAX_TEXT: Final = 2048
"""Longest free text (a question, a message) a summary carries; the rest is cut and marked."""
MAX_NAME: Final = 253
MAX_LIST: Final = 64
"""Most items of a list (dependencies, attempts) a summary carries."""

Key = tuple[str, str, str]
"""(kind, namespace, name)."""


def text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """Free text from a resource, as the console shows it: control characters, ANSI escapes and bidi overrides
    removed (``api.sanitize.clean``), at most ``limit`` characters. HTML stays text: the page sets it with
    ``textContent`` and the JSON escapes ``<``, ``>`` and ``&`` (:func:`longshot.console.server.dumps`)."""
    if value is None:
        return None
    cleaned = sanitize.clean(str(value))
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "…"


def _name(value: Any) -> str | None:
    return text(value, MAX_NAME) if value else None


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return {"status": text(cond.get("status"), 16), "reason": text(cond.get("reason"), 128),
                    "message": text(cond.get("message"))}
    return None


def _build_ref(obj: Mapping[str, Any]) -> str | None:
    return _name(((obj.get("spec") or {}).get("buildRef") or {}).get("name"))


def summarize(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the console shows of one resource (the fields its page draws, each cleaned and bounded); the rest of the
    object (a build's request text, a task's prompt) is not sent to browsers."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    out: dict[str, Any] = {"kind": kind, "namespace": _name(meta.get("namespace")), "name": _name(meta.get("name")),
                           "created": text(meta.get("creationTimestamp"), 40),
                           "phase": text(status.get("phase"), 64)}
    if kind == "BuildRequest":
        budget = spec.get("budget") or {}
        usage = status.get("usage") or {}
        counts = status.get("tasks") or {}
        merges = status.get("merges") or {}
        out.update({
            "suspended": bool(spec.get("suspend")),
            "tasks": {k: _number(counts.get(k)) or 0 for k in ("total", "pending", "running", "succeeded", "failed",
                                                                 "cancelled")},
            "merges": {k: _number(merges.get(k)) or 0 for k in ("queued", "testing", "merged", "conflicted",
                                                                  "failed")},
            "budget": {"tokens": _number(usage.get("tokens")) or 0, "maxTokens": _number(budget.get("maxTokens")),
                       "cost": _number(usage.get("cost")) or 0, "maxCost": _number(budget.get("maxCost"))},
            "iteration": _number(status.get("iteration")) or 0,
            "stalled": _condition(obj, "Stalled"),
            "ready": _condition(obj, "Ready"),
            "finalized": _condition(obj, "Finalized"),
        })
    elif kind == "AgentTask":
        attempts = [a for a in status.get("attempts") or [] if isinstance(a, Mapping)][-MAX_LIST:]
        out.update({
            "build": _build_ref(obj),
            "role": text(spec.get("role") or "worker", 32),
            "description": text(spec.get("description"), 512),
            "dependsOn": [n for n in (_name(d) for d in (spec.get("dependsOn") or [])[:MAX_LIST]) if n],
            "suspended": bool(spec.get("suspend")),
            "cancel": bool(spec.get("cancel")),
            "question": text(status.get("question")) if status.get("phase") == "AwaitingInput" else None,
            "branch": text((status.get("handoff") or {}).get("branch"), 255),
            "mergeJob": _name(status.get("mergeJob")),
            "attempts": [{"number": _number(a.get("number")), "pod": _name(a.get("pod")),
                          "start": text(a.get("startTime"), 40), "end": text(a.get("endTime"), 40),
                          "exitReason": text(a.get("exitReason"), 256), "failureClass": text(a.get("failureClass"), 64),
                          "ledger": _name(a.get("ledger"))} for a in attempts],
        })
    elif kind == "MergeJob":
        batch = status.get("batch") or {}
        out.update({
            "build": _build_ref(obj),
            "task": _name((spec.get("taskRef") or {}).get("name")),
            "branch": text(spec.get("branch"), 255),
            "target": text(spec.get("target"), 255),
            "approved": bool(spec.get("approved")),
            "position": _number(status.get("queuePosition")),
            "batch": {"id": text(batch.get("id"), 64), "position": _number(batch.get("position"))} if batch else None,
            "mergedCommit": text(status.get("mergedCommit"), 64),
            "testedCommit": text(status.get("testedCommit"), 64),
            "checks": text(status.get("checks"), 16),
            "lastResult": text(((status.get("attempts") or [{}])[-1] or {}).get("result"), 64)
            if status.get("attempts") else None,
        })
    else:
        raise ValueError(f"the console does not show {kind!r}")
    return out


def waits_for_person(summary: Mapping[str, Any]) -> str | None:
    """Why this resource waits for a person (``question``, ``approval``, ``stalled``), or None."""
    kind, phase = summary.get("kind"), summary.get("phase")
    if kind == "AgentTask" and phase == "AwaitingInput":
        return "question"
    if kind == "MergeJob" and phase == "AwaitingApproval" and not summary.get("approved"):
        return "approval"
    if kind == "BuildRequest" and (summary.get("stalled") or {}).get("status") == "True":
        return "stalled"
    return None


@dataclass(frozen=True)
class Change:
    """What one viewer stream sends: the summary of an object now (None: it is gone), and the view's sequence."""

    kind: str
    namespace: str
    name: str
    summary: dict[str, Any] | None
    seq: int

    def event(self) -> dict[str, Any]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "object": self.summary,
                "seq": self.seq}


@dataclass
class View:
    """Every watched object's summary, keyed by (kind, namespace, name); ``seq`` counts the changes."""

    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    seq: int = 0

    def apply(self, kind: str, event: str, obj: Mapping[str, Any]) -> Change | None:
        """Fold one watch event in; the change a viewer would see, or None (see the module's table)."""
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if kind not in KINDS or not isinstance(namespace, str) or not isinstance(name, str):
            return None
        key = (kind, namespace, name)
        if event == "DELETED":
            if self.objects.pop(key, None) is None:
                return None
            return self._change(key, None)
        if event not in ("ADDED", "MODIFIED"):
            return None
        summary = summarize(kind, obj)
        if self.objects.get(key) == summary:
            return None
        self.objects[key] = summary
        return self._change(key, summary)

    def replace(self, kind: str, items: Iterable[Mapping[str, Any]], namespace: str = "") -> list[Change]:
        """A fresh list of ``kind`` in ``namespace`` ("": every namespace), the first and after a watch expired:
        what it lacks of that kind there is gone."""
        changes: list[Change] = []
        seen: set[Key] = set()
        for item in items:
            meta = item.get("metadata") or {}
            seen.add((kind, str(meta.get("namespace")), str(meta.get("name"))))
            change = self.apply(kind, "ADDED", item)
            if change is not None:
                changes.append(change)
        for key in [k for k in self.objects if k[0] == kind and k[1] == (namespace or k[1]) and k not in seen]:
            del self.objects[key]
            changes.append(self._change(key, None))
        return changes

    def _change(self, key: Key, summary: dict[str, Any] | None) -> Change:
        self.seq += 1
        return Change(key[0], key[1], key[2], summary, self.seq)

    def namespaces(self) -> set[str]:
        return {ns for _, ns, _ in self.objects}

    def snapshot(self, allowed: Iterable[str]) -> dict[str, Any]:
        """What a viewer that may see ``allowed`` gets first: those namespaces' summaries, and the sequence."""
        spaces = set(allowed)
        return {"seq": self.seq, "namespaces": sorted(spaces),
                "objects": [s for (_, ns, _), s in sorted(self.objects.items()) if ns in spaces]}


Decision = Literal["allow", "deny", "check"]


def token_key(token: str) -> str:
    """A person's token as the console keys caches and lanes by (never logged, never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


@dataclass
class Access:
    """Who may see which namespace, as the API server last said (SelfSubjectAccessReviews with each person's token:
    ``list buildrequests.longshot.dev`` in the namespace), remembered ``ttl`` seconds; at most ``max_entries``."""

    ttl: float = 5.0
    max_entries: int = 10_000
    answers: dict[tuple[str, str], tuple[bool, float]] = field(default_factory=dict)

    def decide(self, person: str, namespace: str, now: float) -> Decision:
        found = self.answers.get((person, namespace))
        if found is None or now - found[1] >= self.ttl:
            return "check"
        return "allow" if found[0] else "deny"

    def record(self, person: str, namespace: str, allowed: bool, now: float) -> None:
        if len(self.answers) >= self.max_entries:
            for key in [k for k, (_, at) in self.answers.items() if now - at >= self.ttl]:
                del self.answers[key]
            while len(self.answers) >= self.max_entries:  # all fresh: the oldest goes
                del self.answers[min(self.answers, key=lambda k: self.answers[k][1])]
        self.answers[(person, namespace)] = (allowed, now)


Offer = Literal["queued", "dropped", "closed"]


@dataclass
class Outbox:
    """One viewer's pending changes, at most ``limit``: a change past it drops the viewer (it must reload)."""

    limit: int
    pending: list[Change] = field(default_factory=list)
    dropped: bool = False

    def offer(self, change: Change) -> Offer:
        if self.dropped:
            return "closed"
        if len(self.pending) >= self.limit:
            self.dropped = True
            self.pending.clear()
            return "dropped"
        self.pending.append(change)
        return "queued"

    def take(self) -> list[Change]:
        out, self.pending = self.pending, []
        return out


@dataclass
class Tail:
    """A followed log's lines waiting for the viewer's stream: at most ``limit``, the oldest dropped (and counted)."""

    limit: int
    line_chars: int = 16_384
    lines: deque[str] = field(default_factory=deque)
    gap: int = 0

    def offer(self, line: str) -> None:
        if len(line) > self.line_chars:
            line = line[:self.line_chars] + " [cut]"
        if len(self.lines) >= self.limit:
            self.lines.popleft()
            self.gap += 1
        self.lines.append(line)

    def take(self) -> tuple[int, list[str]]:
        """The lines dropped since the last take, and the lines waiting (the queue is then empty)."""
        gap, lines = self.gap, list(self.lines)
        self.gap = 0
        self.lines.clear()
        return gap, lines


ACTIONS: Final = {
    "answer": ("AgentTask",),
    "approve": ("MergeJob",),
    "suspend": ("AgentTask", "BuildRequest"),
    "resume": ("AgentTask", "BuildRequest"),
    "cancel": ("AgentTask", "BuildRequest"),
    "relaunch": ("AgentTask",),
    "message": ("AgentTask",),
}
"""What a person may ask the console to do, and to which kinds (the API server then decides whether they may)."""


def action_problem(action: str, kind: str, body: Mapping[str, Any]) -> str | None:
    """Why a requested action is malformed (None: well formed). Rights are the API server's decision, not this."""
    kinds = ACTIONS.get(action)
    if kinds is None:
        return f"unknown action {action!r}: one of {', '.join(sorted(ACTIONS))}"
    if kind not in kinds:
        return f"{action} applies to {' or '.join(kinds)}, not {kind}"
    if action in ("answer", "message"):
        value = body.get("text")
        if not isinstance(value, str) or not value.strip():
            return f"{action} needs a non-empty \"text\""
    for key, value in body.items():
        if key == "interrupt" and action == "message" and isinstance(value, bool):
            continue
        if key not in ("text", "model", "prompt") or not isinstance(value, str):
            return f"unknown or non-text field {str(key)[:64]!r} in the request"
    return None
