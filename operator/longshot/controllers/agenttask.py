"""agenttasks handlers."""

from __future__ import annotations

from typing import Any

import kopf

from longshot import api
from longshot.api import conditions


@kopf.on.resume(api.GROUP, api.VERSION, "agenttasks")
@kopf.on.create(api.GROUP, api.VERSION, "agenttasks")
def initialise(status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    """Give a new object its conditions (Unknown) and observedGeneration."""
    now = conditions.now_utc()
    conds = list(status.get("conditions") or [])
    changed = False
    for type_ in conditions.AGENT_TASK_TYPES:
        if conditions.find(conds, type_) is None:
            conds, c = conditions.set_condition(conds, type_, conditions.UNKNOWN, "Initializing",
                                                "The operator has not acted yet.",
                                                observed_generation=meta.get("generation"), now=now)
            changed = changed or c
    if changed:
        patch.status["conditions"] = conds
    if status.get("observedGeneration") != meta.get("generation"):
        patch.status["observedGeneration"] = meta.get("generation")
    if not status.get("phase"):
        patch.status["phase"] = "Pending"
