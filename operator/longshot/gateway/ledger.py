"""The gateway's side of the attempt ledger (``core.ledger``, docs/ledger.md): ``POST /ledger`` and the buffers.

An agent runner posts its transcript events in batches (``{"events": [...]}``, at most
``max_ledger_request_bytes``) with its Pod's token: the token names the attempt, so an attempt writes only its own
entry (the body names nothing). The gateway adds its own record of every model call it proxied for the attempt
(:meth:`Ledger.model_call`, ``source: gateway``); an agent's event is stored with ``source: agent`` whatever it
claims. Every event is redacted (the attempt's token, the build's credential values, token shapes: RE2) and
bounded (4 KiB an event, 256 KiB a transcript, head and tail kept) before it is held.

Buffers live in memory per attempt and are written to the attempt's ConfigMap ``<pod>-ledger`` (created, then
merge-patched: ``binaryData["transcript.jsonl.gz"]``) every ``ledger_flush_seconds`` and at once when the handoff
arrives; a restart loses at most the unflushed seconds (a buffer that is gone is read back from its entry on the
attempt's next post). Memory: each buffer reserves the whole transcript bound, and all of them together stay within
``max_ledger_buffer_bytes``; flushed buffers make room for new ones (least recently used first), and when none can,
a new attempt's post is answered 503 with ``Retry-After``: one agent's flood fills only its own buffer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from longshot.api import boundedjson
from longshot.core import ledger, mcpcalls
from longshot.gateway import cluster as gcluster
from longshot.gateway.identity import Caller
from longshot.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)
MAX_EVENTS_PER_POST = 2000
SKIPPED_TYPES = frozenset({"heartbeat"})
"""Agent events not worth their space in the ledger."""


class Full(Exception):
    """No room for another attempt's buffer on this replica now; ``retry_after`` seconds."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("the gateway's ledger buffers are full")
        self.retry_after = retry_after


@dataclass
class Buffer:
    caller: Caller
    transcript: ledger.Transcript
    redactor: ledger.Redactor
    dirty: bool = False
    used: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    events: int = 0


def _key(caller: Caller) -> tuple[str, str]:
    return caller.namespace, caller.pod


class Ledger:
    def __init__(self, cluster: gcluster.Cluster, settings: GatewaySettings, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.cluster = cluster
        self.settings = settings
        self.clock = clock
        self.wall = wall
        self.buffers: OrderedDict[tuple[str, str], Buffer] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    @property
    def capacity(self) -> int:
        """Attempts buffered at once (each reserves the whole transcript bound)."""
        return max(1, self.settings.max_ledger_buffer_bytes // ledger.MAX_TRANSCRIPT_BYTES)

    # --- the buffers -------------------------------------------------------------------------------------

    async def _buffer(self, caller: Caller, token: str | None) -> Buffer:
        key = _key(caller)
        b = self.buffers.get(key)
        if b is None:
            if len(self.buffers) >= self.capacity:
                self._evict()
            if len(self.buffers) >= self.capacity:
                raise Full(self.settings.ledger_flush_seconds)
            b = Buffer(caller, ledger.Transcript(), ledger.Redactor(), used=self.clock())
            self.buffers[key] = b  # reserved before the reads below, so concurrent posts share it (and wait)
            async with b.lock:
                for secret in await self._secrets(caller):
                    b.redactor.add(secret)
                try:  # a buffer this replica dropped, or another replica's: continue what is stored
                    stored = await asyncio.to_thread(self.cluster.get_ledger_transcript, caller.namespace,
                                                     ledger.entry_name(caller.pod))
                except Exception:
                    del self.buffers[key]
                    raise Full(1.0) from None
                if stored:
                    b.transcript = ledger.Transcript.from_jsonl(ledger.decompress(stored))
        b.redactor.add(token)
        b.used = self.clock()
        self.buffers.move_to_end(key)
        return b

    def _evict(self) -> None:
        """Drop the least recently used buffer that is written out (it is read back if its attempt posts again)."""
        for key, b in self.buffers.items():
            if not b.dirty and not b.lock.locked():
                del self.buffers[key]
                return

    async def _secrets(self, caller: Caller) -> list[str]:
        """The credential values the gateway knows for this build: its model API key, repository credentials and
        MCP servers' headers."""
        spec = caller.build_spec
        names = {str((spec.get("agent") or {}).get("credentialsSecret") or ""),
                 str((spec.get("repository") or {}).get("credentialsSecret") or "")}
        names |= {s.secret for s in mcpcalls.servers(spec.get("agent") or {}).values() if s.secret}
        out: list[str] = []
        for name in sorted(n for n in names if n):
            try:
                secret = await self.cluster.aget_secret(caller.namespace, name)
            except Exception:  # a Secret the gateway may not read holds nothing it could leak either
                continue
            out += [v for v in (secret or {}).values() if isinstance(v, str)]
        return out

    # --- writers -----------------------------------------------------------------------------------------

    async def append(self, caller: Caller, token: str | None, events: list[Any]) -> tuple[int, bool]:
        """Add the agent's ``events`` to its attempt's buffer; (events kept, whether a handoff was among them, which
        flushes at once). Raises :class:`Full`."""
        b = await self._buffer(caller, token)
        kept = 0
        handoff = False
        async with b.lock:
            for raw in events[:MAX_EVENTS_PER_POST]:
                if not isinstance(raw, dict):
                    continue
                kind = raw.get("type")
                if not isinstance(kind, str) or kind in SKIPPED_TYPES:
                    continue
                event = {**raw, "type": kind[:64], "source": "agent"}
                b.transcript.add(ledger.bound_event(b.redactor.value(event)))
                b.events += 1
                kept += 1
                handoff = handoff or kind == "handoff"
            b.dirty = b.dirty or kept > 0
        if handoff:
            await self.flush(_key(caller))
        return kept, handoff

    async def model_call(self, caller: Caller, record: Mapping[str, Any]) -> None:
        """The gateway's own record of a model call it proxied for ``caller`` (flushed later). Dropped when there
        is no room for the attempt's buffer: never a reason to fail the call."""
        await self._record(caller, "model_call", record)

    async def mcp_call(self, caller: Caller, record: Mapping[str, Any]) -> None:
        """The gateway's own record of an MCP tool call it proxied (or refused) for ``caller``: server, tool, status,
        duration (``gateway.mcpproxy``)."""
        await self._record(caller, "mcp_call", record)

    async def message(self, caller: Caller, record: Mapping[str, Any]) -> None:
        """A person's message the gateway handed to ``caller``'s runner (``GET /v1/messages``): id, interrupt, text
        and author (``core.messages``)."""
        await self._record(caller, "message", record)

    async def _record(self, caller: Caller, kind: str, record: Mapping[str, Any]) -> None:
        try:
            b = await self._buffer(caller, None)
        except Full:
            log.warning("no ledger buffer for %s/%s: a %s is not recorded", caller.namespace, caller.pod, kind)
            return
        event = {"type": kind, "source": "gateway", "ts": round(self.wall(), 3), **record}
        async with b.lock:
            b.transcript.add(ledger.bound_event(b.redactor.value(event)))
            b.dirty = True

    # --- flushing ----------------------------------------------------------------------------------------

    async def flush(self, key: tuple[str, str]) -> bool:
        """Write one attempt's buffer to its entry if it changed; False when the write failed (kept dirty)."""
        b = self.buffers.get(key)
        if b is None:
            return True
        async with b.lock:
            if not b.dirty:
                return True
            c = b.caller
            manifest = ledger.manifest(namespace=c.namespace, pod=c.pod, task=c.task,
                                       task_uid=str((c.task_obj.get("metadata") or {}).get("uid") or ""),
                                       build=c.build, attempt=c.attempt, role=c.role)
            manifest["binaryData"] = {ledger.TRANSCRIPT_KEY: base64.b64encode(b.transcript.encode()).decode()}
            b.dirty = False
            try:
                await asyncio.to_thread(self.cluster.put_configmap, manifest)
            except Exception as e:
                b.dirty = True
                log.warning("could not write the ledger entry of %s/%s: %s", c.namespace, c.pod, type(e).__name__)
                return False
            return True

    async def flush_all(self) -> None:
        for key in [k for k, b in self.buffers.items() if b.dirty]:
            await self.flush(key)

    async def run(self) -> None:
        """Flush every ``ledger_flush_seconds`` until cancelled."""
        while True:
            await asyncio.sleep(self.settings.ledger_flush_seconds)
            with contextlib.suppress(Exception):
                await self.flush_all()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="longshot-ledger-flush")

    async def close(self) -> None:
        """Stop the timer and write what is buffered (a graceful shutdown loses nothing)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush_all()


BODY_VALUES = 50_000
"""Most JSON values a ``POST /ledger`` body may hold (``api.boundedjson``; an event is a few dozen, and the
transcript keeps at most 256 KiB of them)."""


def parse_body(raw: bytes, max_bytes: int) -> list[Any] | None:
    """The events of a ``POST /ledger`` body (``{"events": [...]}``), or None when it is not that or is over its
    parse budget (``max_bytes``, :data:`BODY_VALUES` values, 32 levels)."""
    try:
        data = boundedjson.loads(raw, boundedjson.Budget(max_bytes=max_bytes, max_values=BODY_VALUES))
    except boundedjson.Refused:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        return None
    events: list[Any] = data["events"]
    return events
