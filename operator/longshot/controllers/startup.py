"""Every kopf setting in one place, each with the reason it is set that way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf

from longshot import config, metrics
from longshot.controllers import engine
from longshot.runtime import kube

FINALIZER = "longshot.dev/finalizer"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    ours = config.Settings.from_env()
    memo.settings = ours

    # Leader election is ours (a coordination.k8s.io Lease per merge queue), not kopf's peering, which
    # needs its own cluster-wide CRDs and pauses every handler rather than just the merge queue.
    settings.peering.standalone = True

    # kopf keeps handler progress and the last-handled spec. Keep both in annotations under our own
    # prefix: status.kopf would be pruned by our structural schemas, and users read status.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.longshot.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kopf.longshot.dev", key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER

    # We post our own Events with reasons from longshot.api.conditions; kopf's per-log-line Events
    # would flood `kubectl describe`. Only warnings and errors from kopf itself become Events.
    settings.posting.level = logging.WARNING

    # Watches are restarted by the server every few minutes anyway; a client timeout a little above the
    # server's catches silently dead connections (NAT, load balancers) instead of waiting forever.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60

    # Per-object workers exit soon after their last event, so 10,000 quiet AgentTasks hold no tasks.
    settings.queueing.idle_timeout = 5.0
    # Bound concurrent workers so 10,000 AgentTasks do not mean 10,000 asyncio tasks at once.
    settings.queueing.worker_limit = 200

    # Sync handlers run in this thread pool; the kubernetes client is synchronous.
    settings.execution.max_workers = 20

    logger.info("longshot operator starting as %s (agent image %s, max workers %d)",
                ours.identity, ours.agent_image, ours.max_workers)
    memo.engine = engine.Engine(kube.Kube(kube.load_client()), ours)
    memo.engine_task = asyncio.create_task(memo.engine.run(), name="longshot-engine")
    memo.metrics_server = None
    if ours.metrics_port:
        memo.metrics_server = metrics.start_http_server(ours.metrics_port)
        logger.info("metrics on :%d/metrics, health on /healthz", memo.metrics_server.port)


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    memo.engine.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await memo.engine_task
    await memo.engine.delivery.stop()  # releases the merge-queue Leases for a quick hand-over
    if memo.metrics_server is not None:
        memo.metrics_server.close()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, else $KUBECONFIG (read at login time, not at import time)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
