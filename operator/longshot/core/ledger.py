"""The attempt ledger: what an attempt's entry holds, how it is bounded and redacted, and which entries go. Pure.

Every attempt of an AgentTask gets one ConfigMap in the build's namespace, ``<pod>-ledger`` (:func:`entry_name`),
labelled ``longshot.dev/ledger: "true"`` plus the build, task, attempt and role labels of its Pod, owned by the
AgentTask (so it goes with the build). It holds

* ``binaryData["transcript.jsonl.gz"]``: the attempt's transcript, gzip-compressed JSONL, written by
  longshot-gateway: the events the agent runner posted (``source: agent``: logs, tool calls with their results,
  messages, usage, the handoff) and the gateway's own record of every model call it proxied for the attempt
  (``source: gateway``, ``type: model_call``: model, status, usage, duration), which the agent cannot fake;
* ``data["result.json"]``: the attempt's end as the operator recorded it on ``status.attempts[]`` (exit code,
  failure class, usage, start and end, model), written when the attempt ends (``core.tasks.FinalizeLedger``).

Bounds (:class:`Transcript`, :func:`bound_event`): at most :data:`MAX_TRANSCRIPT_BYTES` of JSONL before
compression, the head and the tail kept with one ``{"type": "truncated", "dropped": n}`` line between them; each
event at most :data:`MAX_EVENT_BYTES` (longer strings are cut with a marker). Everything is redacted before it is
stored (:class:`Redactor`): the secrets the gateway knows and token shapes, matched with RE2 (linear time).

Retention (:func:`to_delete`): ``spec.retention.ledger`` of the BuildRequest, ``maxEntries`` per build and
``ttlSeconds``, oldest first; an entry whose attempt has not ended is never deleted.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import re2

from longshot.api import boundedjson, keys
from longshot.core import names

LABEL: Final = keys.PREFIX + "ledger"
"""Label of every ledger entry (value ``"true"``)."""
ENDED_ANNOTATION: Final = keys.PREFIX + "ended"
"""Annotation the operator sets when it finalises an entry: the attempt's end (RFC 3339); retention reads it."""
TRANSCRIPT_KEY: Final = "transcript.jsonl.gz"
RESULT_KEY: Final = "result.json"
SUFFIX: Final = "-ledger"
MAX_TRANSCRIPT_BYTES: Final = 256 * 1024
"""JSONL bytes of one transcript before compression (head + truncation line + tail)."""
MAX_EVENT_BYTES: Final = 4 * 1024
"""Bytes of one event's JSON line."""
MASK: Final = "***"
CUT: Final = "...[cut {n} chars]"
MAX_DEPTH: Final = 16
"""Nesting kept in an event; deeper values are replaced by a marker."""
LINE_BUDGET: Final = boundedjson.Budget(max_bytes=2 * MAX_EVENT_BYTES, max_values=MAX_EVENT_BYTES)
"""What parsing one stored line may cost (the gateway writes lines of at most :data:`MAX_EVENT_BYTES`; the stored
blob is in a ConfigMap of the build's namespace, so it is read as untrusted)."""

_TOKEN_SHAPES: Final = re2.compile(
    r"(?:\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"
    r"|\bgithub_pat_[A-Za-z0-9_]{40,}"
    r"|\bglpat-[A-Za-z0-9_-]{20,}"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|\bsk-[A-Za-z0-9_-]{20,}"
    r"|\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # a JWT (a ServiceAccount token)
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{16,})"
)
"""Token shapes redacted even when the gateway does not know the value (RE2: linear in the text)."""
_URL_USERINFO: Final = re2.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@:]+:[^/\s@]+@")


def entry_name(pod: str) -> str:
    """The ledger entry (ConfigMap) of the attempt whose Pod is ``pod``: ``<pod>-ledger``."""
    return pod + SUFFIX


def manifest(*, namespace: str, pod: str, task: str, task_uid: str, build: str, attempt: int,
             role: str) -> dict[str, Any]:
    """The entry's ConfigMap without its data: name, labels (the Pod's, plus :data:`LABEL`) and the AgentTask as
    owner (the garbage collector deletes it with the task, hence with the build)."""
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": entry_name(pod), "namespace": namespace,
            "labels": {keys.NAME: "longshot", keys.INSTANCE: names.fit(build), keys.COMPONENT: "ledger",
                       keys.MANAGED_BY: keys.OPERATOR, keys.BUILD: names.fit(build), keys.TASK: names.fit(task),
                       keys.ATTEMPT: str(attempt), keys.ROLE: role, LABEL: "true"},
            "ownerReferences": [{"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask", "name": task,
                                 "uid": task_uid, "controller": False, "blockOwnerDeletion": False}],
        },
    }


# --- redaction ---------------------------------------------------------------------------------------


class Redactor:
    """Replaces known secrets (exact values, at least 8 characters) and token shapes with ``***``."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        """Register a secret (shorter than 8 characters: ignored, it would mask ordinary words)."""
        value = (secret or "").strip()
        if len(value) >= 8 and value not in self._secrets:
            self._secrets.append(value)
            self._secrets.sort(key=len, reverse=True)
            del self._secrets[64:]  # bounded: a build has a handful of credentials

    def text(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if "://" in text:
            text = _URL_USERINFO.sub(r"\1" + MASK + "@", text)
        return str(_TOKEN_SHAPES.sub(MASK, text))

    def value(self, value: Any, depth: int = 0) -> Any:
        """Every string (and key) inside a JSON value redacted; nesting deeper than :data:`MAX_DEPTH` dropped."""
        if isinstance(value, str):
            return self.text(value)
        if depth >= MAX_DEPTH and isinstance(value, dict | list):
            return "[too deep]"
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v, depth + 1) for v in value]
        return value


# --- bounds ------------------------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _cut_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + CUT.format(n=len(value) - limit)
    if isinstance(value, dict):
        return {k: _cut_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_strings(v, limit) for v in value]
    return value


def bound_event(event: Mapping[str, Any], limit: int = MAX_EVENT_BYTES) -> str:
    """One JSON line (no newline) of at most ``limit`` bytes: the event itself, else with its strings cut to
    ever shorter lengths (with a marker saying how much went), else a stub naming its type and size."""
    line = _dumps(event)
    if len(line.encode()) <= limit:
        return line
    cut = max(16, limit // 2)
    while cut >= 16:
        line = _dumps(_cut_strings(event, cut))
        if len(line.encode()) <= limit:
            return line
        cut //= 2
    kind = event.get("type")
    stub = {"type": str(kind)[:64] if kind is not None else "event", "source": str(event.get("source", ""))[:16],
            "ts": event.get("ts") if isinstance(event.get("ts"), int | float) else None, "truncated": True,
            "bytes": len(_dumps(event).encode())}
    return _dumps(stub)


class Transcript:
    """An attempt's transcript held within ``limit`` bytes of JSONL: the first half of the budget keeps the
    head; once it is full, the tail keeps the latest events that fit the other half, and one line
    ``{"type": "truncated", "dropped": n}`` stands between them for the ``n`` events that went."""

    MARKER_RESERVE: Final = 64

    def __init__(self, limit: int = MAX_TRANSCRIPT_BYTES) -> None:
        self.limit = limit
        self.head: list[str] = []
        self.tail: deque[str] = deque()
        self.head_bytes = 0
        self.tail_bytes = 0
        self.dropped = 0
        self._overflowed = False

    @property
    def head_budget(self) -> int:
        return self.limit // 2

    @property
    def tail_budget(self) -> int:
        return self.limit - self.head_budget - self.MARKER_RESERVE

    @property
    def size(self) -> int:
        """Bytes of :meth:`jsonl`."""
        return self.head_bytes + self.tail_bytes + (len(self._marker()) + 1 if self.dropped else 0)

    def __len__(self) -> int:
        return len(self.head) + len(self.tail)

    def _marker(self) -> bytes:
        return _dumps({"type": "truncated", "dropped": self.dropped}).encode()

    def add(self, line: str) -> None:
        """Add one event line (already bounded by :func:`bound_event`, no newline)."""
        n = len(line.encode()) + 1
        if n > self.tail_budget:
            return  # longer than any event may be: never stored
        if not self._overflowed and self.head_bytes + n <= self.head_budget:
            self.head.append(line)
            self.head_bytes += n
            return
        self._overflowed = True
        self.tail.append(line)
        self.tail_bytes += n
        while self.tail_bytes > self.tail_budget:
            gone = self.tail.popleft()
            self.tail_bytes -= len(gone.encode()) + 1
            self.dropped += 1

    def add_event(self, event: Mapping[str, Any]) -> None:
        self.add(bound_event(event))

    def jsonl(self) -> bytes:
        parts = [*self.head]
        if self.dropped:
            parts.append(self._marker().decode())
        parts += self.tail
        return "".join(p + "\n" for p in parts).encode()

    def encode(self) -> bytes:
        """The gzip-compressed JSONL (deterministic: no timestamp in the gzip header)."""
        return gzip.compress(self.jsonl(), compresslevel=6, mtime=0)

    @classmethod
    def from_jsonl(cls, data: bytes, limit: int = MAX_TRANSCRIPT_BYTES) -> Transcript:
        """A transcript that continues a stored one (a gateway that lost its buffer reads it back)."""
        t = cls(limit)
        for raw in data.decode(errors="replace").splitlines():
            if not raw.strip():
                continue
            if raw.startswith('{"type":"truncated"'):
                with contextlib.suppress(ValueError, AttributeError, TypeError):
                    t.dropped += int(boundedjson.loads(raw, LINE_BUDGET).get("dropped") or 0)
                t._overflowed = True
                continue
            t.add(raw[:MAX_EVENT_BYTES])
        return t


def decompress(blob: bytes, limit: int = 2 * MAX_TRANSCRIPT_BYTES) -> bytes:
    """The JSONL of a stored transcript, at most ``limit`` bytes of it (a compression bomb stops there)."""
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(blob, limit)
    except zlib.error:
        return b""
    return out


def events(blob: bytes) -> list[dict[str, Any]]:
    """The events of a stored transcript (lines that are not JSON objects are skipped)."""
    out: list[dict[str, Any]] = []
    for raw in decompress(blob).decode(errors="replace").splitlines():
        try:
            value = boundedjson.loads(raw, LINE_BUDGET)
        except boundedjson.Refused:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


# --- the operator's part -----------------------------------------------------------------------------


RESULT_FIELDS: Final = ("number", "pod", "startTime", "endTime", "exitCode", "exitReason", "failureClass", "tokens",
                        "cost", "model")


def result(attempt: Mapping[str, Any], *, namespace: str, build: str, task: str, role: str) -> dict[str, Any]:
    """``result.json`` of a finished attempt: its ``status.attempts[]`` record (wire form) and whose it is."""
    out: dict[str, Any] = {"namespace": namespace, "build": build, "task": task, "role": role}
    for key in RESULT_FIELDS:
        if attempt.get(key) is not None:
            out[key] = attempt[key]
    return out


# --- retention ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """A ledger entry of a build, as its metadata says."""

    name: str
    created: datetime
    ended: datetime | None = None
    """The attempt's end (annotation :data:`ENDED_ANNOTATION`); None while the attempt runs (never deleted)."""

    @property
    def when(self) -> datetime:
        return self.ended or self.created


def to_delete(entries: Sequence[Entry], *, max_entries: int, ttl_seconds: int, now: datetime) -> list[str]:
    """Names of the entries to delete, oldest first: every finished entry older than ``ttl_seconds``, then the
    oldest finished ones beyond ``max_entries`` (entries of running attempts count towards the limit but are
    kept). Ties go by name, so every replica gives the same answer."""
    finished = sorted((e for e in entries if e.ended is not None), key=lambda e: (e.when, e.name))
    expired = {e.name for e in finished if now - e.when > timedelta(seconds=ttl_seconds)}
    excess = len(entries) - len(expired) - max_entries
    out = [e.name for e in finished if e.name in expired]
    for e in finished:
        if excess <= 0:
            break
        if e.name not in expired:
            out.append(e.name)
            excess -= 1
    return out
