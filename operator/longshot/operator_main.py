"""Run the operator: kopf with every handler of ``longshot.controllers`` registered."""

from __future__ import annotations

import asyncio
import logging

import kopf


def run(*, namespaces: list[str] | None = None) -> int:
    import longshot.controllers  # noqa: F401  (registers the handlers)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(kopf.operator(
        standalone=True,  # leadership is ours (controllers/leadership.py), never kopf's peering
        namespaces=namespaces or [],
        clusterwide=not namespaces,
    ))
    return 0
