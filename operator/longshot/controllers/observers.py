"""kopf event handlers: every event of our resources and agent Pods goes to the engine.

Event handlers keep no state in the objects (no progress annotations, no finalizers): deletion is
garbage collection through owner references (BuildRequest -> AgentTask -> Pod, MergeJob).
"""

from __future__ import annotations

from typing import Any

import kopf

from longshot import api

AGENT_POD_LABELS = {"app.kubernetes.io/managed-by": "longshot-operator"}


def _engine(memo: kopf.Memo) -> Any:
    return memo.engine


@kopf.on.event(api.GROUP, api.VERSION, "buildrequests")
async def build_request(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _engine(memo).observe("BuildRequest", event.get("type"), event["object"])


@kopf.on.event(api.GROUP, api.VERSION, "agenttasks")
async def agent_task(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _engine(memo).observe("AgentTask", event.get("type"), event["object"])


@kopf.on.event(api.GROUP, api.VERSION, "mergejobs")
async def merge_job(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _engine(memo).observe("MergeJob", event.get("type"), event["object"])


@kopf.on.event("", "v1", "pods", labels=AGENT_POD_LABELS)
async def agent_pod(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    _engine(memo).observe("Pod", event.get("type"), event["object"])
