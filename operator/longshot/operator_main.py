"""Run the operator: kopf with every handler of ``longshot.controllers`` registered."""

from __future__ import annotations

import asyncio
import logging

import kopf


def run(*, namespaces: list[str] | None = None, standalone: bool = True, liveness: str | None = None) -> int:
    import longshot.controllers  # noqa: F401  (registers the handlers)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(kopf.operator(
        standalone=standalone,
        namespaces=namespaces or [],
        clusterwide=not namespaces,
        liveness_endpoint=liveness,
    ))
    return 0
