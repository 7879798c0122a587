"""The operator's Prometheus metrics, defined once, in one registry, and the HTTP endpoint serving them.

Every metric lives in :data:`REGISTRY` (not prometheus-client's global one, so tests and several operators
in one process do not collide). Names are ``longshot_<thing>_<unit>``, counters end in ``_total``,
durations are in seconds. Labels are bounded sets of values only (a state, a result, a failure class, a
role): never a build, task, branch or repository name, never anything from a Secret.

Serving: :func:`start_http_server` ``(port, registry=REGISTRY, addr="0.0.0.0") -> MetricsServer`` runs a
small stdlib HTTP server in a daemon thread:

* ``GET /metrics`` — the Prometheus text exposition of ``registry``;
* ``GET /healthz`` — ``200 ok`` while the process serves requests (liveness), or the result of the
  ``healthy`` callable given to it (``False`` answers 503);
* ``POST /intake/<namespace>/<name>`` — a standing intake's webhook, handed to the ``webhook`` callable given to
  it (``(path, headers, body) -> (status, text)``); a body over :data:`MAX_WEBHOOK_BYTES` answers 413 unread, one
  without ``Content-Length`` 411, and no callable 404;
* anything else — 404.

Port 0 picks a free port (``server.port`` tells which); ``server.close()`` stops it. The chart points the
Service, the ServiceMonitor and the liveness probe at ``settings.metrics_port``.
"""

from __future__ import annotations

import http.server
import threading
from collections import Counter as Counter_
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from longshot.api import agenttask
from longshot.core import builds, tasks

REGISTRY = CollectorRegistry(auto_describe=True)

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

# --- work -----------------------------------------------------------------------------------------------------

TASKS = Gauge("longshot_tasks", "AgentTasks by state, across builds.", ["state"], registry=REGISTRY)
ACTIVE_WORKERS = Gauge("longshot_active_workers", "Agent Pods running now.", registry=REGISTRY)
PENDING_TASKS = Gauge("longshot_pending_tasks", "AgentTasks ready to run and waiting for a worker slot.",
                      registry=REGISTRY)
DISPATCH_LATENCY = Histogram("longshot_dispatch_latency_seconds",
                             "From an AgentTask that could start (dependencies ready, a worker slot free) to its Pod "
                             "being created.",
                             buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=REGISTRY)
POD_FAILURES = Counter("longshot_pod_failures_total", "Failed agent Pod attempts by failure class.",
                       ["failure_class"], registry=REGISTRY)
EVENTS_DROPPED = Counter("longshot_events_dropped_total",
                         "Kubernetes Events not written: rate (an object's burst spent, or the same Event again "
                         "within 30 s) or routine (the build's budget of routine Events spent).", ["reason"],
                         registry=REGISTRY)
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


def observe_reconcile(kind: str, result: str, duration_seconds: float) -> None:
    """Count a reconcile of ``kind`` (one of :data:`RECONCILE_KINDS`; others are not counted) and its duration."""
    if kind in RECONCILE_KINDS and result in RECONCILE_RESULTS:
        RECONCILES.labels(kind=kind, result=result).inc()
        RECONCILE_DURATION.labels(kind=kind).observe(duration_seconds)


def observe_queue_phase(phase: str, seconds: float) -> None:
    """Time a merge-queue reconcile spent in ``phase`` (one of :data:`MERGE_QUEUE_PHASES`)."""
    MERGE_QUEUE_PHASE.labels(phase=phase).observe(seconds)


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


MAX_WEBHOOK_BYTES = 1024 * 1024
"""Largest webhook delivery body read."""
Webhook = Callable[[str, dict[str, str], bytes], tuple[int, str]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 15  # seconds a connection may take per read (a slow-drip client is dropped)

    def do_POST(self) -> None:
        path = self.path.partition("?")[0]
        hook = self.server.webhook
        if hook is None or not path.startswith("/intake/"):
            self.close_connection = True
            self._reply(404, b"not found\n", "text/plain; charset=utf-8")
            return
        length = self.headers.get("content-length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            self._reply(411, b"Content-Length required\n", "text/plain; charset=utf-8")
            return
        if int(length) > MAX_WEBHOOK_BYTES:
            self.close_connection = True  # the body is not read: the connection cannot be reused
            self._reply(413, b"payload too large\n", "text/plain; charset=utf-8")
            return
        body = self.rfile.read(int(length))
        try:
            status, text = hook(path, {k.lower(): v for k, v in self.headers.items()}, body)
        except Exception:  # a bug must not answer with a traceback
            status, text = 500, "internal error"
        self._reply(status, (text + "\n").encode(), "text/plain; charset=utf-8")

    def log_message(self, format: str, *args: object) -> None:  # scrapes are not log lines
        pass

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/metrics":
            self._reply(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok = self.server.healthy() if self.server.healthy else True
            self._reply(200 if ok else 503, b"ok\n" if ok else b"unhealthy\n", "text/plain; charset=utf-8")
        else:
            self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    healthy: Callable[[], bool] | None
    webhook: Webhook | None


@dataclass
class MetricsServer:
    """A running metrics endpoint; :meth:`close` stops it."""

    server: _Server
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def start_http_server(port: int, registry: CollectorRegistry = REGISTRY, *, addr: str = "0.0.0.0",
                      healthy: Callable[[], bool] | None = None, webhook: Webhook | None = None) -> MetricsServer:
    """Serve ``/metrics`` (``registry``) and ``/healthz`` on ``addr:port`` from a daemon thread.

    Returns at once, listening. ``port=0`` binds a free port (see ``.port``). ``healthy`` is called per
    ``/healthz`` request and must be quick and thread-safe.
    """
    server = _Server((addr, port), _Handler)
    server.registry = registry
    server.healthy = healthy
    server.webhook = webhook
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                              name=f"longshot-metrics-{server.server_address[1]}", daemon=True)
    thread.start()
    return MetricsServer(server, thread)
