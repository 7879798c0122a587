"""Every kopf setting in one place, each with the reason it is set that way, and the manager's life cycle."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from typing import Any

import kopf

from longshot import config, metrics, tracing
from longshot.controllers import manager
from longshot.runtime import kube


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff base is for change handlers, which we do not have: kopf deep-copies every watch event's whole
    body (managedFields, status) to compute an "essence" only change handlers read; that was a third of the event
    loop's time while a 10,000-task plan was taken in. Our handlers are event handlers: nothing to diff or store."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.startup()
async def configure(*, settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    ours = config.Settings.from_env()
    memo.settings = ours

    # Leadership is ours (member and per-repository shard Leases, controllers/leadership.py), not kopf's
    # peering, which needs its own cluster-wide CRDs and pauses every handler of every replica.
    settings.peering.standalone = True

    # We post our own Events (rate-limited, with reasons from longshot.api.conditions); kopf's per-log-line
    # Events would flood `kubectl describe`. Only warnings and errors from kopf itself become Events.
    settings.posting.level = logging.WARNING
    # kopf logs "Handler ... succeeded" at INFO for every watch event of every object: at 10,000 tasks that is
    # nearly the whole log (and a share of the CPU) and says nothing our own logs do not. Warnings and errors only.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    # Our handlers are event handlers only: kopf's per-event deep copy of the body for change detection is waste.
    settings.persistence.diffbase_storage = NoDiffBase()

    # Watches are restarted by the server every few minutes anyway; a client timeout a little above the
    # server's catches silently dead connections (NAT, load balancers) instead of waiting forever.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60

    # Per-object kopf workers exit soon after their last event, so 10,000 quiet AgentTasks hold no asyncio tasks,
    # and their number is bounded (our handlers only hand the event to the manager's cache).
    # A worker holds one of the worker_limit slots for idle_timeout after its object's last event, and kopf queues
    # the raw events (about 24 KiB each as Python dicts, managedFields and all) of objects waiting for a slot without
    # bound: with 5 s, 200 slots took in 40 new objects/s, and a plan created at 100/s left hundreds of MiB of events
    # queued. Our handlers only hand the event to the cache, so a short idle time costs a little worker churn.
    settings.queueing.idle_timeout = 0.2
    settings.queueing.worker_limit = 200

    # Every blocking call of the shell (the Kubernetes client, git) runs in asyncio's default thread pool, which
    # is min(32, cores + 4) threads: 6 on a 2-core node, so at most 6 API calls in flight while the manager
    # reconciles 32 objects at once. The calls wait on the network, not the CPU: size the pool to the manager's
    # concurrency (and the client's connection pool, 64).
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=manager.THREADS, thread_name_prefix="longshot-io"))

    logger.info("longshot operator starting as %s (agent image %s, max workers %d)",
                ours.identity, ours.agent_image, ours.max_workers)
    # OpenTelemetry only with an endpoint (LONGSHOT_TRACING_ENDPOINT): otherwise the SDK is never imported
    tracing.setup(tracing.OPERATOR, ours.tracing_endpoint)
    client = kube.load_client()
    memo.manager = manager.Manager(kube.Kube(client), ours, client=client)
    memo.manager_task = asyncio.create_task(memo.manager.run(), name="longshot-manager")
    memo.metrics_server = None
    if ours.metrics_port:
        memo.metrics_server = metrics.start_http_server(
            ours.metrics_port, healthy=memo.manager.healthy, ready=memo.manager.ready, webhook=memo.manager.webhook,
            webhook_port=ours.webhook_port or None, webhook_limits=metrics.WebhookLimits(
                max_connections=ours.webhook_max_connections, body_seconds=ours.webhook_body_timeout_seconds,
                per_source=ours.webhook_per_source, rate_per_second=ours.webhook_rate_per_second,
                burst=ours.webhook_burst, inflight_bytes=ours.webhook_inflight_bytes))
        logger.info("metrics on :%d/metrics, probes on /healthz and /readyz, intake webhooks on :%s/intake/",
                    memo.metrics_server.port, memo.metrics_server.webhook_port or "(off)")


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    memo.manager.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await memo.manager_task  # its leadership task releases the shard Leases for a quick hand-over
    if memo.metrics_server is not None:
        memo.metrics_server.close()
    await asyncio.to_thread(tracing.shutdown, tracing.OPERATOR)  # the spans still batched are sent


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, else $KUBECONFIG (read at login time, not at import time)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
