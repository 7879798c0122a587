"""BuildRequest handlers."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from longshot import api
from longshot.api import conditions


@kopf.on.resume(api.GROUP, api.VERSION, "buildrequests")
@kopf.on.create(api.GROUP, api.VERSION, "buildrequests")
def initialise(body: kopf.Body, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch,
               logger: logging.Logger, **_: Any) -> None:
    """Give a new BuildRequest its conditions (Unknown), phase and observedGeneration."""
    now = conditions.now_utc()
    generation = meta.get("generation")
    existing = status.get("conditions") or []
    conds = list(existing)
    changed = False
    for type_ in conditions.BUILD_REQUEST_TYPES:
        if conditions.find(conds, type_) is None:
            conds, c = conditions.set_condition(conds, type_, conditions.UNKNOWN, "Initializing",
                                                "The operator has not acted yet.",
                                                observed_generation=generation, now=now)
            changed = changed or c
    if changed:
        patch.status["conditions"] = conds
    if status.get("observedGeneration") != generation:
        patch.status["observedGeneration"] = generation
    if not status.get("phase"):
        patch.status["phase"] = "Pending"
    if not status.get("startTime"):
        patch.status["startTime"] = conditions._rfc3339(now)
    if changed:
        kopf.info(body, reason="Initializing", message="The operator accepted the BuildRequest.")
        logger.info("initialised build %s", meta.get("name"))
