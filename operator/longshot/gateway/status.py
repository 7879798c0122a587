"""Writing an attempt's live figures to ``AgentTask.status.progress`` (tokens, cost, calls, progress message,
heartbeat, backoff), with optimistic concurrency.

Every write reads the task, changes ``status.progress`` and patches it with the ``resourceVersion`` it
read; a 409 (another gateway replica, or the operator, wrote in between) means read again and redo the
change. So two replicas metering the same attempt at once never lose an increment. Figures belong to
one attempt (``progress.attempt``): the first write of a new attempt starts from zero, and a late write
of an older attempt is dropped, except a model call's charge: that goes to ``progress.earlier``, the
older attempt's total (``core.usage.charge_late``), as does what the old attempt's progress metered beyond its
record when a new attempt's progress replaces it (``core.usage.carry``). No charge is lost to a new attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from longshot.api import conditions, sanitize
from longshot.core import messages as core_messages
from longshot.core import usage as core_usage
from longshot.gateway import cluster as gcluster
from longshot.gateway import metrics
from longshot.gateway.identity import Caller

log = logging.getLogger(__name__)
MAX_RETRIES = 20
MAX_MESSAGE = 4096


def fresh(attempt: int) -> dict[str, Any]:
    """Progress of an attempt that has not reported anything (explicit nulls clear the previous attempt's)."""
    return {"attempt": attempt, "tokens": 0, "inputTokens": 0, "outputTokens": 0, "cost": 0.0, "calls": 0,
            "mcpCalls": 0, "message": None, "lastHeartbeat": None, "backoffUntil": None, "backoffApi": None}


class TaskStatus:
    def __init__(self, cluster: gcluster.Cluster, *, now: Callable[[], datetime] = conditions.now_utc) -> None:
        self.cluster = cluster
        self.now = now

    def update(self, caller: Caller, change: Callable[[dict[str, Any]], dict[str, Any] | None],
               late: core_usage.Totals | None = None) -> dict[str, Any] | None:
        """Apply ``change`` to the caller's progress and write it; the written progress, or None when the task
        is gone or already on a later attempt. ``change`` returns None to write nothing. ``late``: the charge
        ``change`` adds, kept in ``progress.earlier`` when the task is already on a later attempt."""
        for i in range(MAX_RETRIES):  # the watch cache's copy first; after a conflict, the API server's
            task = self.cluster.get_task(caller.namespace, caller.task, fresh=i > 0)
            if task is None or task["metadata"].get("uid") != caller.task_obj["metadata"].get("uid"):
                return None
            status = task.get("status") or {}
            current = status.get("progress") or {}
            attempts = [a for a in status.get("attempts") or [] if isinstance(a, dict)]
            attempt = current.get("attempt")
            if isinstance(attempt, int) and attempt > caller.attempt:
                if late is None or not (late.tokens or late.cost):
                    log.warning("dropping a progress update of %s/%s attempt %d: the task is on attempt %d",
                                caller.namespace, caller.task, caller.attempt, attempt)
                    return None
                new = {"earlier": core_usage.charge_late(current, attempts, caller.attempt, late)}
            else:
                base = {**fresh(caller.attempt), **current} if attempt == caller.attempt else fresh(caller.attempt)
                changed = change(dict(base))
                if changed is None:
                    return base
                new = changed
                if attempt != caller.attempt and (kept := core_usage.carry(current, attempts)) is not None:
                    new["earlier"] = kept  # (absent: the merge patch leaves the list as it is)
            try:
                self.cluster.patch_task_status(caller.namespace, caller.task, task["metadata"]["resourceVersion"],
                                               {"progress": new})
            except gcluster.Conflict:
                metrics.USAGE_CONFLICTS.inc()
                continue
            return new
        raise RuntimeError(f"AgentTask {caller.namespace}/{caller.task} kept changing; progress not written")

    def add_usage(self, caller: Caller, *, input_tokens: int, output_tokens: int, cost: float) -> dict[str, Any] | None:
        def change(p: dict[str, Any]) -> dict[str, Any]:
            p["inputTokens"] = int(p.get("inputTokens") or 0) + input_tokens
            p["outputTokens"] = int(p.get("outputTokens") or 0) + output_tokens
            p["tokens"] = p["inputTokens"] + p["outputTokens"]
            p["cost"] = round(float(p.get("cost") or 0.0) + cost, 9)
            p["calls"] = int(p.get("calls") or 0) + 1
            p["lastHeartbeat"] = conditions.rfc3339(self.now())
            return p

        return self.update(caller, change, late=core_usage.Totals(input_tokens + output_tokens, round(cost, 9)))

    def add_mcp_call(self, caller: Caller) -> dict[str, Any] | None:
        """One more MCP tool call forwarded for the attempt (``progress.mcpCalls``)."""
        def change(p: dict[str, Any]) -> dict[str, Any]:
            p["mcpCalls"] = int(p.get("mcpCalls") or 0) + 1
            return p

        return self.update(caller, change)

    def report(self, caller: Caller, message: str | None) -> dict[str, Any] | None:
        def change(p: dict[str, Any]) -> dict[str, Any]:
            if message is not None:
                p["message"] = sanitize.one_line(message)[:MAX_MESSAGE]
            p["lastHeartbeat"] = conditions.rfc3339(self.now())
            return p

        return self.update(caller, change)

    def back_off(self, caller: Caller, api: str, until: datetime) -> dict[str, Any] | None:
        def change(p: dict[str, Any]) -> dict[str, Any]:
            p["backoffUntil"] = conditions.rfc3339(until)
            p["backoffApi"] = api
            return p

        return self.update(caller, change)

    def messages_delivered(self, caller: Caller, ids: list[int]) -> bool:
        """Record that messages ``ids`` were handed to the caller's runner (``status.messages.delivered``,
        ``core.messages.deliver``), fenced on the resourceVersion like the progress; False when the task is gone."""
        for i in range(MAX_RETRIES):  # the watch cache's copy first; after a conflict, the API server's
            task = self.cluster.get_task(caller.namespace, caller.task, fresh=i > 0)
            if task is None or task["metadata"].get("uid") != caller.task_obj["metadata"].get("uid"):
                return False
            known = ((task.get("status") or {}).get("messages") or {}).get("delivered") or []
            new = core_messages.deliver(known, ids, attempt=caller.attempt, now=self.now())
            if new is None:
                return True
            try:
                self.cluster.patch_task_status(caller.namespace, caller.task, task["metadata"]["resourceVersion"],
                                               {"messages": {"delivered": new}})
            except gcluster.Conflict:
                metrics.USAGE_CONFLICTS.inc()
                continue
            return True
        raise RuntimeError(f"AgentTask {caller.namespace}/{caller.task} kept changing; deliveries not written")
