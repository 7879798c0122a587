"""kopf event handlers: every event of our resources and agent Pods goes to the manager's cache.

Handlers keep no state in the objects (no kopf progress annotations, no kopf finalizers). The one finalizer,
``longshot.dev/cleanup`` on every BuildRequest, is the operator's own, put on and taken off by the BuildRequest
reconciler (``controllers.cleanup``, docs/cleanup.md) so that a deleted build's refs are cleaned up in its
repository first. Everything else is deleted by garbage collection through owner references (BuildRequest ->
AgentTask -> Pod, MergeJob; BuildSchedule -> its child BuildRequests).
"""

from __future__ import annotations

from typing import Any

import kopf

from longshot import api
from longshot.api import keys

AGENT_POD_LABELS = {keys.MANAGED_BY: keys.OPERATOR}


def _observe(memo: kopf.Memo, kind: str, event: kopf.RawEvent) -> None:
    memo.manager.observe(kind, event.get("type"), event["object"])


@kopf.on.event(api.GROUP, api.VERSION, "buildrequests")
async def build_request(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _observe(memo, "BuildRequest", event)


@kopf.on.event(api.GROUP, api.VERSION, "agenttasks")
async def agent_task(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _observe(memo, "AgentTask", event)


@kopf.on.event(api.GROUP, api.VERSION, "mergejobs")
async def merge_job(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _observe(memo, "MergeJob", event)


@kopf.on.event(api.GROUP, api.VERSION, "buildschedules")
async def build_schedule(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _observe(memo, "BuildSchedule", event)


@kopf.on.event("", "v1", "pods", labels=AGENT_POD_LABELS)
async def agent_pod(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _observe(memo, "Pod", event)
