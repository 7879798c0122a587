"""The operator's Prometheus metrics, defined once, in one registry, and the HTTP endpoint serving them.

Every metric lives in :data:`REGISTRY` (not prometheus-client's global one, so tests and several operators
in one process do not collide), with ``longshot_build_info{version}`` (always 1) and prometheus-client's process,
platform and garbage-collector collectors (``process_*``, ``python_info``, ``python_gc_*``:
:func:`add_runtime_collectors`). Names are ``longshot_<thing>_<unit>``, counters end in ``_total``,
durations are in seconds, costs in dollars, ratios end in ``_ratio``. Labels are bounded sets of values only
(a state, a result, a failure class, a role): never a build, task, branch or repository name, never anything from
a Secret. ``tests/unit/test_metrics.py`` checks every name of both registries against these rules.

Serving: :func:`start_http_server` runs the operator's HTTP servers on a daemon thread with its own event loop
(aiohttp through ``longshot.net.ingress``: bounded connections, a header deadline, no thread per connection; every
route declared with its limits in :func:`probe_ingress` and :func:`webhook_ingress`):

* the metrics and probe port (``metrics_port``): ``GET /metrics`` (the Prometheus text exposition of ``registry``),
  ``GET /healthz`` (``200 ok``, or ``503`` when the ``healthy`` callable says False: liveness) and ``GET /readyz``
  (the ``ready`` callable: readiness); no route there reads a body;
* the webhook port (``webhook_port``, its own Service in the chart): ``POST /intake/<namespace>/<name>``, a
  standing intake's webhook, handed to the ``webhook`` callable (``(path, headers, body) -> (status, text)``, in a
  worker thread) after its body was read under the route's limits: per source address at most ``per_source`` in
  flight and a token bucket, the body at most :data:`MAX_WEBHOOK_BYTES` (413 on its Content-Length, unread) and
  whole within ``body_seconds`` (408);
* anything else — 404 (405 for another method).

Port 0 picks a free port (``server.port``, ``server.webhook_port``); ``server.close()`` stops them. The chart points
the metrics Service, the ServiceMonitor and the probes at ``metrics_port``, and the webhook Service at
``webhook_port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter as Counter_
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import get_args

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

import longshot
from longshot.api import agenttask
from longshot.core import builds, standing, tasks
from longshot.core.ingress import Route
from longshot.net import ingress

REGISTRY = CollectorRegistry(auto_describe=True)

RUNTIME_PREFIXES = ("process_", "python_")
"""Names of the families the standard collectors add (:func:`add_runtime_collectors`), not ``longshot_``."""


def add_runtime_collectors(registry: CollectorRegistry) -> None:
    """prometheus-client's process (``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
    ``process_open_fds``, ``process_start_time_seconds``...: Linux only), platform (``python_info``) and garbage
    collector (``python_gc_*``) collectors, registered in ``registry`` (the operator's and the gateway's are their
    own, not prometheus-client's global one)."""
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


add_runtime_collectors(REGISTRY)

TASK_STATES: tuple[str, ...] = tuple(tasks.PHASES)
"""Values of the ``state`` label of :data:`TASKS` (the AgentTask phases)."""
MERGE_RESULTS = ("Merged", "AlreadyMerged", "Conflicted", "Stale", "Error")
"""Values of the ``result`` label of :data:`MERGES` (``longshot.vcs.merge.MergeResult.outcome``)."""
SWEEP_RESULTS = ("Passed", "TestsFailed")
FINALIZATION_OUTCOMES = ("Passed", "TasksFailed", "TestsFailed", "UnmergedBranches")
"""Values of the ``outcome`` label of :data:`FINALIZATIONS` (``core.finalization.Finish.reason``)."""
FAILURE_CLASSES: tuple[str, ...] = get_args(agenttask.FailureClass)
"""Values of the ``failure_class`` label of :data:`POD_FAILURES`."""
ROLES = ("leader", "follower")
RECONCILE_KINDS = ("AgentTask", "MergeJob", "Queue", "BuildRequest")
"""Values of the ``kind`` label of :data:`RECONCILES` (``controllers.manager.ORDER``; ``Queue`` is one
repository branch's merge queue)."""
RECONCILE_RESULTS = ("Success", "Conflict", "Error")
"""Values of the ``result`` label of :data:`RECONCILES`: done; an object changed meanwhile (a fenced status write
lost with 409); failed. Both failures are retried with the reference's backoff (``controllers.workqueue``)."""

BUILD_INFO = Gauge("longshot_build_info", "Always 1; the operator's version in the version label.", ["version"],
                   registry=REGISTRY)

# --- work -----------------------------------------------------------------------------------------------------

TASKS = Gauge("longshot_tasks", "AgentTasks by state, across builds.", ["state"], registry=REGISTRY)
ACTIVE_WORKERS = Gauge("longshot_active_workers", "Agent Pods running now.", registry=REGISTRY)
PENDING_TASKS = Gauge("longshot_pending_tasks", "AgentTasks ready to run and waiting for a worker slot.",
                      registry=REGISTRY)
CAPACITY_MODES = ("auto", "explicit", "fallback", "off")
"""Values of the ``mode`` label of :data:`ADMISSION_MODE` (``Settings.admission_capacity``; ``fallback``: auto
without a Node it may count)."""
ADMISSION_MODE = Gauge("longshot_admission_capacity_mode", "1 for the mode admission by capacity runs in now: auto, "
                       "explicit, fallback (auto without Nodes it may count: the numeric limits alone), off.",
                       ["mode"], registry=REGISTRY)
ADMISSION_WAITING = Gauge("longshot_admission_waiting_tasks", "AgentTasks ready to run and held because their Pod "
                          "would not run now (Admitted=False/WaitingForCapacity).", registry=REGISTRY)
ADMISSION_FREE_CPU = Gauge("longshot_admission_free_cpu_cores", "Cpu left for agent Pods on the Nodes they may use "
                           "(or in the explicit capacity) after the last dispatch; 0 when not counted.",
                           registry=REGISTRY)
ADMISSION_WITHDRAWN = Counter("longshot_admission_withdrawn_total", "Agent Pods withdrawn because the kube-scheduler "
                              "found no node for them for longer than the grace (their task went back in line).",
                              registry=REGISTRY)
MAX_TENANT_SERIES = 50
"""Most namespaces :data:`TENANT_AGENTS` and :data:`TENANT_SHARE` have a series for (the ones with the most agents;
the rest are summed as ``_other``)."""
TENANT_AGENTS = Gauge("longshot_tenant_agents", "Agent Pods running per tenant (the namespace of the builds; the "
                      "label is not `namespace`, which Prometheus gives the operator's own).", ["tenant"],
                      registry=REGISTRY)
TENANT_SHARE = Gauge("longshot_tenant_share_ratio", "Each tenant's share in fair admission: its agents running "
                     "divided by its weight.", ["tenant"], registry=REGISTRY)
TENANT_HELD = Gauge("longshot_tenant_held", "1 for a tenant whose ready work the last dispatch held at the tenant's "
                    "own limits: reason TenantLimit (maxAgents, cpu, memory, its ResourceQuotas) or TokensPerHour.",
                    ["tenant", "reason"], registry=REGISTRY)
TENANT_TOKENS = Gauge("longshot_tenant_tokens_last_hour", "Model tokens a tenant's agents used in the last hour, for "
                      "the tenants with a tokensPerHour (as admission last counted them).", ["tenant"],
                      registry=REGISTRY)
DISPATCH_LATENCY = Histogram("longshot_dispatch_latency_seconds",
                             "From an AgentTask that could start (dependencies ready, a worker slot free) to its Pod "
                             "being created.",
                             buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=REGISTRY)
WARM_CLAIMS = Counter("longshot_warm_pool_claims_total", "Attempts of builds with a warm pool by how their Pod "
                      "started: hit (a warm sandbox was claimed) or miss (none fitted or all were taken: a cold Pod).",
                      ["result"], registry=REGISTRY)
WARM_READY = Gauge("longshot_warm_pool_ready_sandboxes", "Warm sandboxes running and unclaimed, across this "
                   "replica's builds (docs/warm-pools.md).", registry=REGISTRY)
WARM_HELD_BACK = Gauge("longshot_warm_pool_held_back_sandboxes", "Warm sandboxes this replica's pools want (size and "
                       "pending tasks) and the room does not give them: the operator's max_workers, or their tenant's "
                       "maxAgents, cpu or memory, less what runs (docs/warm-pools.md).", registry=REGISTRY)
POD_FAILURES = Counter("longshot_pod_failures_total", "Failed agent Pod attempts by failure class.",
                       ["failure_class"], registry=REGISTRY)
EVENTS_DROPPED = Counter("longshot_events_dropped_total",
                         "Kubernetes Events not written: rate (an object's burst spent, or the same Event again "
                         "within 30 s) or routine (the build's budget of routine Events spent).", ["reason"],
                         registry=REGISTRY)
READS_ANEW = Counter("longshot_cache_reads_anew_total",
                     "Objects read anew from the API server after a write fenced on the version the operator held "
                     "lost: the watch had not yet brought the newer version (a steady rise: a late or stalled watch).",
                     ["kind"], registry=REGISTRY)
TOKENS = Counter("longshot_tokens_total", "Model tokens reported by agent handoffs.", registry=REGISTRY)
COST = Counter("longshot_cost_dollars_total", "Model cost reported by agent handoffs, in US dollars.",
               registry=REGISTRY)

# --- merge queue --------------------------------------------------------------------------------------------------

MERGE_QUEUE_DEPTH = Gauge("longshot_merge_queue_depth", "MergeJobs waiting, across this replica's queues.",
                          registry=REGISTRY)
MERGES = Counter("longshot_merges_total", "Merge attempts by result.", ["result"], registry=REGISTRY)
MERGE_DURATION = Histogram("longshot_merge_duration_seconds",
                           "Time to land a tested batch on the target (compare and push), per candidate.",
                           buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=REGISTRY)
MERGE_QUEUE_PHASES = ("fetch", "checks", "decide", "prepare", "land")
"""The phases of a queue reconcile: fetch the target; the checks of new jobs (their fetch and secret scan); build
the queue's state and decide; build and publish speculative commits; push a tested prefix."""
MERGE_QUEUE_PHASE = Histogram("longshot_merge_queue_phase_seconds",
                              "Time a merge-queue reconcile spent in each phase (fetch, checks, decide, prepare, "
                              "land).", ["phase"],
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                              registry=REGISTRY)

BUILD_STAGE = Histogram("longshot_build_stage_seconds",
                        "Time a BuildRequest reconcile spent in each of its stages (standing, cleanup, "
                        "networkpolicy, observe, preflight, plans, retention, ledger, delegation, intake, tasks, "
                        "sweeps, iteration, comments, finalization, status); the count is how often each ran.",
                        ["stage"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                        registry=REGISTRY)

# --- reconcile and finalize -------------------------------------------------------------------------------------

SWEEPS = Counter("longshot_sweeps_total", "Reconciler sweeps by result.", ["result"], registry=REGISTRY)
FINALIZATION_ATTEMPTS = Counter("longshot_finalization_attempts_total", "Finalization attempts started.",
                                registry=REGISTRY)
FINALIZATIONS = Counter("longshot_finalizations_total", "Finished finalizations by outcome.", ["outcome"],
                        registry=REGISTRY)

RECONCILES = Counter("longshot_reconciles_total", "Reconciles by kind of object and result.", ["kind", "result"],
                     registry=REGISTRY)
RECONCILE_DURATION = Histogram("longshot_reconcile_duration_seconds",
                               "Time a reconcile took, its actions carried out, by kind of object.", ["kind"],
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                               registry=REGISTRY)
WORKQUEUE_DEPTH = Gauge("longshot_workqueue_depth", "References waiting in each controller's work queue (dirty or "
                        "held until a time), by kind; Dispatch is the dispatch controller's one key.", ["kind"],
                        registry=REGISTRY)
WORKQUEUE_LONGEST_RUNNING = Gauge("longshot_workqueue_longest_running_seconds",
                                  "How long the oldest reconcile in flight has run, by kind (0: none); past the "
                                  "kind's stall limit /healthz fails.", ["kind"], registry=REGISTRY)

# --- this replica ---------------------------------------------------------------------------------------------------

ROLE = Gauge("longshot_replica_role", "1 for this replica's current role (leader of at least one merge "
             "queue, or follower), 0 for the other.", ["role"], registry=REGISTRY)
BUILDS_STALLED = Gauge("longshot_builds_stalled", "BuildRequests this replica reconciles that wait for a person "
                       "(Stalled=True: Configuration, AuthFailed, BudgetExceeded, TaskBlocked, AwaitingInput, "
                       "AwaitingApproval), by reason.", ["reason"], registry=REGISTRY)
BUDGET_USED = Gauge("longshot_budget_used_ratio", "The largest share of its budget (tokens or cost, whichever is "
                    "further) used by a BuildRequest this replica reconciles that is not finished; 0 when none has "
                    "a budget.", registry=REGISTRY)
LEASE_RESULTS = ("ok", "error", "lost", "expired")
LEASE_RENEWALS = Counter("longshot_lease_renewals_total", "Renewals and acquisitions of this replica's Leases by "
                         "result: ok, error (the API server failed or did not answer), lost (another holder has "
                         "it), expired (no renewal within the renew deadline: the replica stepped down).",
                         ["result"], registry=REGISTRY)

# --- standing intake ------------------------------------------------------------------------------------------------

INTAKE_RESULTS = ("ok", "error")
INTAKE_BUILDS = Counter("longshot_intake_builds_total", "Child BuildRequests a standing intake (spec.intake) "
                        "started.", registry=REGISTRY)
INTAKE_POLLS = Counter("longshot_intake_polls_total", "Polls of a standing intake's tracker by result: ok, or error "
                       "(the tracker refused, failed or could not be reached; see the intake's Ready condition).",
                       ["result"], registry=REGISTRY)
WEBHOOK_RESULTS = ("accepted", "refused")
INTAKE_WEBHOOKS = Counter("longshot_intake_webhooks_total", "Webhook deliveries to POST /intake/<namespace>/<name> "
                          "by result: accepted (a poll was scheduled) or refused (bad signature).", ["result"],
                          registry=REGISTRY)


def _init_labels() -> None:
    # expose every known series from the start (a rate() over a series that appears late misses its first step)
    BUILD_INFO.labels(version=longshot.__version__).set(1)
    for s in TASK_STATES:
        TASKS.labels(state=s)
    for r in MERGE_RESULTS:
        MERGES.labels(result=r)
    for r in SWEEP_RESULTS:
        SWEEPS.labels(result=r)
    for o in FINALIZATION_OUTCOMES:
        FINALIZATIONS.labels(outcome=o)
    for c in FAILURE_CLASSES:
        POD_FAILURES.labels(failure_class=c)
    for r in builds.WAITING_REASONS:
        BUILDS_STALLED.labels(reason=r)
    for r in LEASE_RESULTS:
        LEASE_RENEWALS.labels(result=r)
    for k in RECONCILE_KINDS:
        RECONCILE_DURATION.labels(kind=k)
        WORKQUEUE_DEPTH.labels(kind=k)
        WORKQUEUE_LONGEST_RUNNING.labels(kind=k)
        for r in RECONCILE_RESULTS:
            RECONCILES.labels(kind=k, result=r)
    for r in INTAKE_RESULTS:
        INTAKE_POLLS.labels(result=r)
    for r in WEBHOOK_RESULTS:
        INTAKE_WEBHOOKS.labels(result=r)
    set_role(leader=False)


def set_role(*, leader: bool) -> None:
    """``longshot_replica_role{role="leader"}`` 1 and ``{role="follower"}`` 0, or the other way round."""
    ROLE.labels(role="leader").set(1 if leader else 0)
    ROLE.labels(role="follower").set(0 if leader else 1)


def set_builds(waiting: Iterable[str | None], budget_shares: Iterable[float | None]) -> None:
    """Set :data:`BUILDS_STALLED` from the builds' wait reasons (``core.builds.waiting_for_a_person``; None and
    unknown reasons are not counted) and :data:`BUDGET_USED` from their budget shares (``core.builds.budget_used``
    of the unfinished builds)."""
    counts = Counter_(r for r in waiting if r in builds.WAITING_REASONS)
    for reason in builds.WAITING_REASONS:
        BUILDS_STALLED.labels(reason=reason).set(counts.get(reason, 0))
    BUDGET_USED.set(max((x for x in budget_shares if x is not None), default=0.0))


def set_tasks_by_state(counts: Mapping[str, int]) -> None:
    """Set :data:`TASKS` from ``{state: count}``; states missing from ``counts`` become 0, states outside
    :data:`TASK_STATES` are ignored (labels stay bounded)."""
    for state in TASK_STATES:
        TASKS.labels(state=state).set(counts.get(state, 0))


def set_admission(mode: str, waiting: int, free_cpu_millis: int | None) -> None:
    """Admission by capacity's gauges after a dispatch plan."""
    for m in CAPACITY_MODES:
        ADMISSION_MODE.labels(mode=m).set(1 if m == mode else 0)
    ADMISSION_WAITING.set(waiting)
    ADMISSION_FREE_CPU.set((free_cpu_millis or 0) / 1000)


def set_tenants(agents: Mapping[str, int], weights: Mapping[str, float]) -> None:
    """:data:`TENANT_AGENTS` and :data:`TENANT_SHARE` from each namespace's agents running and weight; at most
    :data:`MAX_TENANT_SERIES` namespaces (the busiest) get a series of their own, the rest are ``_other``."""
    busiest = sorted(agents, key=lambda t: (-agents[t], t))
    TENANT_AGENTS.clear()
    TENANT_SHARE.clear()
    other = 0
    for i, t in enumerate(busiest):
        if i < MAX_TENANT_SERIES:
            TENANT_AGENTS.labels(tenant=t).set(agents[t])
            TENANT_SHARE.labels(tenant=t).set(agents[t] / (weights.get(t) or 1.0))
        else:
            other += agents[t]
    if other:
        TENANT_AGENTS.labels(tenant="_other").set(other)


def set_tenant_limits(held: Mapping[str, str], tokens: Mapping[str, int]) -> None:
    """:data:`TENANT_HELD` (tenant -> reason) and :data:`TENANT_TOKENS`, each for at most :data:`MAX_TENANT_SERIES`
    tenants (in name order)."""
    TENANT_HELD.clear()
    for t in sorted(held)[:MAX_TENANT_SERIES]:
        TENANT_HELD.labels(tenant=t, reason=held[t]).set(1)
    TENANT_TOKENS.clear()
    for t in sorted(tokens)[:MAX_TENANT_SERIES]:
        TENANT_TOKENS.labels(tenant=t).set(tokens[t])


def observe_reconcile(kind: str, result: str, duration_seconds: float) -> None:
    """Count a reconcile of ``kind`` (one of :data:`RECONCILE_KINDS`; others are not counted) and its duration."""
    if kind in RECONCILE_KINDS and result in RECONCILE_RESULTS:
        RECONCILES.labels(kind=kind, result=result).inc()
        RECONCILE_DURATION.labels(kind=kind).observe(duration_seconds)


def observe_queue_phase(phase: str, seconds: float) -> None:
    """Time a merge-queue reconcile spent in ``phase`` (one of :data:`MERGE_QUEUE_PHASES`)."""
    MERGE_QUEUE_PHASE.labels(phase=phase).observe(seconds)


def observe_build_stage(stage: str, seconds: float) -> None:
    """Time a BuildRequest reconcile spent in ``stage`` (``controllers.builds.BUILD_STAGES``)."""
    BUILD_STAGE.labels(stage=stage).observe(seconds)


def observe_merge(outcome: str, duration_seconds: float) -> None:
    """Count a :class:`longshot.vcs.merge.MergeResult` (``outcome``, ``duration_seconds``)."""
    MERGES.labels(result=outcome).inc()
    MERGE_DURATION.observe(duration_seconds)


@dataclass(frozen=True)
class Increment:
    """A count of something that happened, carried by the status write that records it
    (``controllers.executor.WriteStatus.counts``): the executor counts it once that write has succeeded, so a write
    that loses with 409 and is retried counts nothing twice (count after the write, never while planning it)."""

    counter: Counter
    amount: float = 1.0
    labels: tuple[tuple[str, str], ...] = ()

    def count(self) -> None:
        (self.counter.labels(**dict(self.labels)) if self.labels else self.counter).inc(self.amount)


_init_labels()


# --- the endpoint ------------------------------------------------------------------------------------------------


MAX_WEBHOOK_BYTES = standing.MAX_BODY_BYTES
"""Largest webhook delivery body read."""
Webhook = Callable[[str, dict[str, str], bytes], tuple[int, str]]


@dataclass(frozen=True)
class WebhookLimits:
    """Bounds of the webhook port (``LONGSHOT_WEBHOOK_*``; docs/security.md, "One ingress")."""

    max_connections: int = 256
    """Connections held at once; more are answered 503 at accept and closed."""
    header_seconds: float = 10.0
    """A connection must send a whole request head within this many seconds."""
    body_seconds: float = 10.0
    """A delivery's whole body must arrive within this many seconds of its headers."""
    per_source: int = 4
    """Deliveries one source address may have in flight; more are answered 429 at once."""
    rate_per_second: float = 5.0
    """Deliveries a second one source address may start on average (a token bucket; 0: no limit)."""
    burst: int = 20
    """Deliveries one source address may start at once before ``rate_per_second`` applies."""
    inflight_bytes: int = 16 * 1024 * 1024
    """Delivery bodies held at once on this replica (reserved before they are read); past it 503."""


PROBE_LIMITS = ingress.Limits(max_connections=64, header_seconds=10.0, inflight_body_bytes=1024)
"""The metrics and probe port: no route reads a body; scrapes and probes hold few connections."""


def probe_ingress(registry: CollectorRegistry = REGISTRY, *, healthy: Callable[[], bool] | None = None,
                  ready: Callable[[], bool] | None = None) -> ingress.Ingress:
    """``/metrics``, ``/healthz`` and ``/readyz``, declared with their limits (no body, anyone on the port)."""
    door = ingress.Ingress(PROBE_LIMITS, {})

    async def metrics_route(request: web.Request, call: ingress.Call) -> web.StreamResponse:
        text = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def probe(check: Callable[[], bool] | None) -> ingress.Handler:
        async def answer(request: web.Request, call: ingress.Call) -> web.StreamResponse:
            ok = await asyncio.to_thread(check) if check is not None else True
            return web.Response(status=200 if ok else 503, text="ok\n" if ok else "unhealthy\n")
        return answer

    door.add(Route("metrics", "/metrics", ("GET",), "none", 0, 0.0, 30.0, per_caller=16), metrics_route)
    door.add(Route("healthz", "/healthz", ("GET",), "none", 0, 0.0, 10.0, per_caller=16), probe(healthy))
    door.add(Route("readyz", "/readyz", ("GET",), "none", 0, 0.0, 10.0, per_caller=16), probe(ready or healthy))
    return door


def webhook_ingress(webhook: Webhook, limits: WebhookLimits = WebhookLimits()) -> ingress.Ingress:
    """``POST /intake/<namespace>/<name>``, declared with its limits: lanes per source address under a token
    bucket, the body read (at most :data:`MAX_WEBHOOK_BYTES`, by ``body_seconds``) before ``webhook`` checks its
    signature in a worker thread."""
    door = ingress.Ingress(
        ingress.Limits(max_connections=limits.max_connections, header_seconds=limits.header_seconds,
                       inflight_body_bytes=limits.inflight_bytes),
        {"webhook-signature": ingress.source_check(limits.rate_per_second, limits.burst)})

    async def intake_route(request: web.Request, call: ingress.Call) -> web.StreamResponse:
        body = bytes(await call.body())
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            status, text = await asyncio.to_thread(webhook, request.path, headers, body)
        except Exception:  # a bug must not answer with a traceback
            status, text = 500, "internal error"
        return web.Response(status=status, text=text + "\n")

    door.add(Route("intake", "/intake/{ns}/{name}", ("POST",), "webhook-signature", MAX_WEBHOOK_BYTES,
                   limits.body_seconds, limits.body_seconds + 30.0, limits.per_source), intake_route)
    return door


class MetricsServer:
    """The operator's HTTP servers (metrics and probes; the webhook on its own port), on a thread of their own with
    their own event loop; :meth:`close` stops them."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.servers: list[ingress.Server] = []
        self.doors: list[ingress.Ingress] = []
        """The ingresses served (the probe port's, then the webhook's): their budgets and lanes."""
        self.ports: list[int] = []
        self.thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The metrics and probe port."""
        return self.ports[0]

    @property
    def webhook_port(self) -> int | None:
        """The webhook port (None: no webhook served)."""
        return self.ports[1] if len(self.ports) > 1 else None

    def _run(self, plan: list[tuple[ingress.Ingress, str, int]]) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve(plan))
        except BaseException as e:  # surfaced by start_http_server
            self._error = e
            self._started.set()
        finally:
            # connections still draining an unread body (aiohttp's lingering close) end with the loop
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    async def _serve(self, plan: list[tuple[ingress.Ingress, str, int]]) -> None:
        self._stop = asyncio.Event()
        try:
            for door, addr, port in plan:
                server = ingress.Server(door.app(), door.limits)
                self.servers.append(server)
                self.doors.append(door)
                self.ports.append(await server.start(addr, port))
            self._started.set()
            await self._stop.wait()
        finally:
            for server in self.servers:
                await server.cleanup()

    def close(self) -> None:
        if self._stop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._stop.set)
        if self.thread is not None:
            self.thread.join(10)


def start_http_server(port: int, registry: CollectorRegistry = REGISTRY, *, addr: str = "0.0.0.0",
                      healthy: Callable[[], bool] | None = None, ready: Callable[[], bool] | None = None,
                      webhook: Webhook | None = None, webhook_port: int | None = None,
                      webhook_limits: WebhookLimits = WebhookLimits()) -> MetricsServer:
    """Serve ``/metrics`` (``registry``), ``/healthz`` and ``/readyz`` on ``addr:port`` and, with ``webhook`` and
    ``webhook_port``, ``POST /intake/<namespace>/<name>`` on ``addr:webhook_port``, from a daemon thread.

    Returns at once, listening. Port 0 binds a free port (see ``.port`` and ``.webhook_port``). ``healthy`` and
    ``ready`` are called per probe in a worker thread and must be quick and thread-safe.
    """
    plan = [(probe_ingress(registry, healthy=healthy, ready=ready), addr, port)]
    if webhook is not None and webhook_port is not None:
        plan.append((webhook_ingress(webhook, webhook_limits), addr, webhook_port))
    served = MetricsServer()
    served.thread = threading.Thread(target=served._run, args=(plan,), name=f"longshot-http-{port}", daemon=True)
    served.thread.start()
    served._started.wait(30)
    if served._error is not None:
        raise served._error
    if len(served.ports) != len(plan):
        served.close()
        raise RuntimeError("the operator's HTTP servers did not start within 30 s")
    return served
