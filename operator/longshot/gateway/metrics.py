"""The gateway's Prometheus metrics, in their own registry (served on the gateway's ``/metrics``): the
``longshot_gateway_*`` families below, and prometheus-client's process, platform and garbage-collector collectors
(``process_*``, ``python_info``, ``python_gc_*``).

Labels are bounded: a route (``git``, ``model``, ``progress``, ``mcp``), a result, a model API (``openai``,
``anthropic``), a token kind, an MCP method (``core.mcpcalls.METHODS``). Never a build, task, Pod, model or
repository name.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

import longshot

REGISTRY = CollectorRegistry(auto_describe=True)
# prometheus-client's runtime collectors, as in the operator's registry (longshot.metrics.add_runtime_collectors):
# process_* (Linux), python_info, python_gc_*
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

ROUTES = ("git", "model", "progress", "mcp")
RESULTS = ("ok", "unauthorized", "forbidden", "refused", "budget_exceeded", "rate_limited", "too_large",
           "bad_request", "upstream_error", "unavailable", "error")
APIS = ("openai", "anthropic")

BUILD_INFO = Gauge("longshot_gateway_build_info", "Always 1; the gateway's version in the version label.",
                   ["version"], registry=REGISTRY)
REQUESTS = Counter("longshot_gateway_requests_total", "Requests by route and result.", ["route", "result"],
                   registry=REGISTRY)
REQUEST_DURATION = Histogram("longshot_gateway_request_duration_seconds", "Duration of a request by route.",
                             ["route"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
                             registry=REGISTRY)
TOKENS = Counter("longshot_gateway_tokens_total", "Model tokens metered, by API and kind (input, output).",
                 ["api", "kind"], registry=REGISTRY)
COST = Counter("longshot_gateway_cost_dollars_total", "Model cost metered in US dollars (the price table), by API.",
               ["api"], registry=REGISTRY)
MODEL_CALLS = Counter("longshot_gateway_model_calls_total",
                      "Model calls by API and upstream status class (2xx, 4xx, 429, 5xx, error).",
                      ["api", "status"], registry=REGISTRY)
UNPRICED_CALLS = Counter("longshot_gateway_unpriced_calls_total", "Model calls whose model has no price.",
                         ["api"], registry=REGISTRY)
UNMETERED_CALLS = Counter("longshot_gateway_estimated_calls_total",
                          "Model calls whose usage the API did not report: counted from the stream, or charged "
                          "their reservation.", ["api"], registry=REGISTRY)
GIT_PUSHES = Counter("longshot_gateway_git_pushes_total", "Pushes by result (forwarded, refused, invalid).",
                     ["result"], registry=REGISTRY)
MIRROR_FETCH = Histogram("longshot_gateway_mirror_fetch_seconds", "Upstream fetches into a mirror.", ["result"],
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=REGISTRY)
MIRROR_REPACK = Histogram("longshot_gateway_mirror_repack_seconds",
                          "Repacks of a mirror into one pack with a bitmap, run in the background after a fetch or a "
                          "push once it held more than 8 packs or about 1,024 loose objects.", ["result"],
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=REGISTRY)
LOOP_LAG = Histogram("longshot_gateway_event_loop_lag_seconds",
                     "How late the gateway's event loop ran a callback due now (sampled every 0.5 s): every request "
                     "waits that long for each of its turns.",
                     buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=REGISTRY)
GIT_STAGES = ("admit", "secret", "pin", "refresh_clone", "refresh_push", "receive", "push_lock", "info_refs",
              "upload_pack", "receive_pack")
GIT_STAGE = Histogram(
    "longshot_gateway_git_stage_seconds",
    "Where a git request's time goes, by stage: admit (its caller check: TokenReview and the attempt's lookup), "
    "secret (the repository credentials Secret), pin (the upstream's addresses checked), refresh_clone and "
    "refresh_push (a ref advertisement waiting for the mirror to be up to date), receive (a push's body spooled), "
    "push_lock (a push waiting for the mirror's push lock), and git http-backend's run for info_refs, upload_pack and "
    "receive_pack (the last with its pre-receive hook's push upstream).", ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=REGISTRY)
MIRROR_SERVED = Counter("longshot_gateway_mirror_refreshes_total",
                        "Ref advertisements by how the mirror was brought up to date: fetched (a fetch of its own), "
                        "waited (a fetch that started after it asked, run by another request), recent (a clone's: a "
                        "fetch that started at most LONGSHOT_GATEWAY_MIRROR_MAX_AGE_SECONDS before it asked).",
                        ["freshness"], registry=REGISTRY)
TOKEN_REVIEWS = Counter("longshot_gateway_token_reviews_total",
                        "TokenReviews the gateway asked the API server for, by result (accepted, refused); a "
                        "refused token is not reviewed again for LONGSHOT_GATEWAY_TOKEN_DENIED_CACHE_SECONDS.",
                        ["result"], registry=REGISTRY)
MCP_CALLS = Counter("longshot_gateway_mcp_calls_total",
                    "Messages agents sent to their build's MCP servers, by JSON-RPC method (initialize, ping, "
                    "tools/list, tools/call, notification, other) and result (ok, refused: answered by the gateway, "
                    "forbidden, bad_request, too_large, upstream_error).", ["method", "result"], registry=REGISTRY)
MCP_CALL_DURATION = Histogram("longshot_gateway_mcp_call_duration_seconds",
                              "Duration of a message forwarded to an MCP server, by JSON-RPC method.", ["method"],
                              buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=REGISTRY)
USAGE_CONFLICTS = Counter("longshot_gateway_status_conflicts_total",
                          "AgentTask status patches retried because another writer changed the task.",
                          registry=REGISTRY)

WATCH_CACHE_READS = Counter("longshot_gateway_watch_cache_reads_total",
                            "Reads of the watch cache (gateway.watchcache) by kind and result: hit, miss (not held: "
                            "read from the API server), unsynced (the watch is not synced: read from the API server).",
                            ["kind", "result"], registry=REGISTRY)
WATCH_CACHE_OBJECTS = Gauge("longshot_gateway_watch_cache_objects",
                            "Objects the watch cache holds, by kind (agent Pods, live AgentTasks, BuildRequests).",
                            ["kind"], registry=REGISTRY)


def _init() -> None:
    BUILD_INFO.labels(version=longshot.__version__).set(1)
    for route in ROUTES:
        for result in RESULTS:
            REQUESTS.labels(route=route, result=result)
    for a in APIS:
        for kind in ("input", "output"):
            TOKENS.labels(api=a, kind=kind)
        COST.labels(api=a)
        UNMETERED_CALLS.labels(api=a)
    for result in ("forwarded", "refused", "invalid"):
        GIT_PUSHES.labels(result=result)
    for result in ("accepted", "refused"):
        TOKEN_REVIEWS.labels(result=result)
    for method in ("tools/list", "tools/call"):
        for result in ("ok", "refused", "upstream_error"):
            MCP_CALLS.labels(method=method, result=result)
    for freshness in ("fetched", "waited", "recent"):
        MIRROR_SERVED.labels(freshness=freshness)
    for result in ("ok", "error"):
        MIRROR_REPACK.labels(result=result)
    for kind in ("Pod", "AgentTask", "BuildRequest"):
        WATCH_CACHE_OBJECTS.labels(kind=kind)
        for result in ("hit", "miss", "unsynced"):
            WATCH_CACHE_READS.labels(kind=kind, result=result)


_init()
