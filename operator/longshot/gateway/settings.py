"""Settings of ``longshot-gateway``, read once at start-up from ``LONGSHOT_GATEWAY_<NAME>`` (the chart sets them).

pydantic-settings (``longshot.envsettings``): a value that does not validate fails start-up naming the variable; an
empty variable means the default (the chart's egress lists say ``none`` for an empty list).
"""

from __future__ import annotations

import contextlib
from typing import Self

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from longshot.core import egress
from longshot.core import proxy as cproxy
from longshot.envsettings import EnvBool, EnvSettings

AUDIENCE = "longshot-gateway"
"""Audience of the agent Pods' projected ServiceAccount tokens; a token for another audience is refused."""
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_ANTHROPIC_URL = "https://api.anthropic.com"


class GatewaySettings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="LONGSHOT_GATEWAY_", env_ignore_empty=True)

    port: int = Field(default=8080, ge=0, le=65535)
    """Port of the agents' routes (``/git``, ``/model``, ``/progress``, ...): nothing else is served there."""
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    """Port of ``/metrics``, ``/healthz`` and ``/readyz``, apart from the agents' port: an agent reaches the
    gateway's agent port only, and cannot read the metrics of other tenants' builds (0: any free port, for tests)."""
    address: str = "0.0.0.0"
    namespace: str = "longshot-system"
    """The operator's namespace, where the price table ConfigMap lives."""
    audience: str = AUDIENCE
    prices_configmap: str = "longshot-prices"
    """ConfigMap (key ``prices.yaml``) with the price table; see ``longshot.gateway.pricing``."""
    prices_cache_seconds: float = Field(default=30.0, ge=0)
    mirror_dir: str = "/var/cache/longshot-gateway"
    """Where the per-repository git mirrors live (an emptyDir in the chart)."""
    allow_file_urls: EnvBool = False
    """Serve ``file://`` repositories (tests and single-machine setups only: a build could otherwise name
    any path the gateway can read)."""
    token_cache_seconds: float = Field(default=600.0, ge=0, le=600)
    """How long a successful TokenReview is reused, never past the token's own ``exp`` (the Pod, AgentTask and
    BuildRequest are checked on every lookup, from the watch cache, so an ended attempt or a deleted Pod still loses
    access within seconds). 600 s since the late night of 2026-11-28 (120 s before, 30 s before that): an agent's
    token is reviewed about once in its attempt (``make bench-fleet --through-gateway``: 5.9 reviews per merge at
    120 s, 3.1 at 600); at most 600 s, the floor of a projected token's lifetime. What a longer cache keeps
    accepting is a token the API server would now refuse for another reason than its Pod: its ServiceAccount
    deleted, the signing key rotated."""
    api_threads: int = Field(default=32, ge=1, le=256)
    """Threads for the gateway's Kubernetes API calls (TokenReviews, the caller's Pod, task and build, status
    writes): asyncio's default executor, which is otherwise ``min(32, cores + 4)``, 6 on two cores, and made a
    thousand agents' heartbeats and git requests queue behind each other's API round trips."""
    token_denied_cache_seconds: float = Field(default=10.0, ge=0)
    """How long a token the API server refused is refused again without a TokenReview (keyed by the token's
    SHA-256, at most 4,096 tokens; the token itself is not kept): a caller repeating a bogus token costs one review
    per window, not one per request. 0 reviews every request."""
    usage_cache_seconds: float = Field(default=1.0, ge=0)
    """How long a build's task list (for its budget and backoff) is reused between model calls."""
    upstream_timeout_seconds: float = Field(default=600.0, ge=0)
    git_timeout_seconds: float = Field(default=600.0, ge=0)
    max_model_request_bytes: int = Field(default=4 * 1024 * 1024, ge=0)
    """Largest model request body; a larger one is answered 413 (on its Content-Length, before it is read)."""
    max_push_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    """Largest push (the request body of one ``git-receive-pack``, spooled to the mirror disk before it is
    forwarded); a larger one is refused with 413. Chart value ``gateway.maxPushBytes``."""
    max_fetch_request_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    default_backoff_seconds: float = Field(default=30.0, ge=0)
    """How long a build's calls to one model API are held after a 429 without ``Retry-After``."""
    max_backoff_seconds: float = Field(default=600.0, ge=0)
    tracing_endpoint: str = ""
    """OTLP/HTTP base URL of the trace collector (chart ``tracing.endpoint`` when ``tracing.enabled``): the gateway
    exports a span per git and model request of an attempt, and relays the agents' spans (``POST /traces``).
    Empty: no tracing, at no cost."""
    max_trace_bytes: int = Field(default=1024 * 1024, ge=0)
    """Largest body of one ``POST /traces`` (an agent's batch of spans); a larger one is answered 413."""
    progress_min_interval_seconds: float = Field(default=1.0, ge=0)
    """Progress messages of one task closer together than this are acknowledged but not written."""
    heartbeat_write_seconds: float = Field(default=60.0, ge=0, le=120)
    """A bare heartbeat (``{"heartbeat": true}``, no message) is written to ``status.progress.lastHeartbeat`` only
    when the attempt's progress was not written for this long; others are acknowledged. At most 120 s: the
    operator ends an attempt whose heartbeat is older than ``LONGSHOT_HEARTBEAT_TIMEOUT_SECONDS`` (chart
    ``agent.heartbeatTimeoutSeconds``, 300 s by default)."""
    openai_url: str = DEFAULT_OPENAI_URL
    """Upstream of ``/model/openai/`` when a build sets no ``spec.agent.baseUrl``."""
    anthropic_url: str = DEFAULT_ANTHROPIC_URL
    """Upstream of ``/model/anthropic/`` when a build sets no ``spec.agent.baseUrl``."""
    # --- model proxy containment (docs/security: the model proxy) ---
    max_model_calls_per_attempt: int = Field(default=4, ge=0)
    """Model calls one attempt may have in flight on this replica; more are answered 429 (Retry-After 1)."""
    model_calls_per_second: float = Field(default=2.0, ge=0)
    """Average model calls a second one attempt may start (a token bucket; 0 turns the limit off)."""
    model_call_burst: int = Field(default=20, ge=0)
    """Model calls one attempt may start at once before ``model_calls_per_second`` applies."""
    max_model_inflight_bytes: int = Field(default=48 * 1024 * 1024, ge=0)
    """Request bodies all model calls on this replica may hold at once; a call that would pass it is 429."""
    default_reserve_output_tokens: int = Field(default=4096, ge=0)
    """Output tokens reserved against spec.budget for a call that names no max_tokens."""
    max_model_meter_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    """Response bytes all model calls on this replica may buffer to read their usage (beyond 64 KiB each);
    a response that would pass it is settled at its reservation."""
    # --- MCP servers (spec.agent.mcpServers; gateway.mcpproxy; docs/agent.md) ---
    max_mcp_request_bytes: int = Field(default=256 * 1024, ge=1024, le=1024 * 1024)
    """Largest JSON-RPC message an agent may send to an MCP server (``POST /mcp/<name>``); a larger one is 413."""
    max_mcp_response_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Largest answer of an MCP server to one message (read whole before it is passed on): beyond it the call is
    answered 502 with a JSON-RPC error."""
    mcp_timeout_seconds: float = Field(default=120.0, gt=0)
    """An MCP server must have answered a message within this many seconds (connection and whole answer); else 504."""
    max_mcp_calls_per_attempt: int = Field(default=4, ge=1)
    """MCP messages one attempt may have in flight on this replica; more are answered 429 before their body is read."""
    # --- egress (core.egress; docs/security.md) ---
    egress_allow: str = ""
    """Allowlist entries with their purposes and ports, as JSON (``core.egress.parse_allow``; the chart's
    egress.allow): a git server allowed for ``git`` is not a model endpoint unless an entry says ``model``."""
    egress_allowed_hosts: str = "*"
    """Legacy host entries, each for every purpose (an exact name on ports 80, 443, 22 and 9418 only; a wildcard
    on every port): exact names, ``*.suffix`` or ``*`` (any name), comma-separated (the chart's egress.allowedHosts)."""
    egress_allowed_cidrs: str = ""
    """Legacy address ranges, each for every purpose on every port, even inside the denied ones (tests list
    loopback here; the chart sets none)."""
    egress_denied_cidrs: str = ",".join(egress.DEFAULT_DENIED_CIDRS)
    """Ranges refused unless a host is listed exactly in ``egress_allowed_hosts`` (default: the private ranges)."""
    egress_cluster_cidrs: str = ""
    """The cluster's Pod and Service ranges (and any other range never to reach): refused whatever the host list."""
    egress_proxy_url: str = ""
    """The HTTP proxy every model, tracker and forge call goes through (``http://host:port``, no credentials; the
    chart's egress.proxy.url; ``core.proxy``): empty reads ``HTTPS_PROXY``/``HTTP_PROXY``; none: direct. It must be
    in the allowlist for the purpose ``proxy`` (an egress.allow entry), else the process refuses to start."""
    egress_no_proxy: str = ""
    """Destinations that go direct (still guarded), as curl reads ``NO_PROXY``: names (and every name below them),
    addresses, CIDRs, ``*`` (the chart's egress.proxy.noProxy); empty reads ``NO_PROXY``."""
    https_proxy: str = Field(default="", validation_alias=AliasChoices("https_proxy", "HTTPS_PROXY"))
    """The standard ``HTTPS_PROXY`` (either case), read only here: used when ``egress_proxy_url`` is empty."""
    http_proxy: str = Field(default="", validation_alias=AliasChoices("http_proxy", "HTTP_PROXY"))
    """The standard ``HTTP_PROXY`` (either case), for ``http://`` destinations when ``egress_proxy_url`` is empty."""
    no_proxy: str = Field(default="", validation_alias=AliasChoices("no_proxy", "NO_PROXY"))
    """The standard ``NO_PROXY`` (either case), used when ``egress_no_proxy`` is empty."""

    # --- tenancy: disk bounds (issue 29, item 8) -------------------------------------------------------------
    mirror_max_bytes: int = Field(default=2 * 1024 * 1024 * 1024, ge=0)
    """Largest size of one mirror (one tenant's use of one repository): a fetch from the upstream stores at most
    what is left under it (``vcs.packlimit``) and fails with a reason naming this cap, and a mirror found over
    it is removed. 0: no cap. Chart value ``gateway.mirrorMaxBytes``."""

    # --- the attempt ledger (docs/ledger.md) -----------------------------------------------------------------
    ledger_flush_seconds: float = Field(default=5.0, gt=0)
    """How often an attempt's buffered transcript is written to its ledger entry (a ConfigMap; the handoff flushes at
    once): a gateway restart loses at most this many seconds of transcript."""
    max_ledger_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest body of one ``POST /ledger`` (a batch of the runner's events); a larger one is answered 413."""
    max_ledger_buffer_bytes: int = Field(default=48 * 1024 * 1024, ge=256 * 1024)
    """Memory for all attempts' transcripts on this replica: each buffered attempt holds up to 256 KiB, so this
    many bytes / 256 KiB attempts are buffered at once (flushed ones make room; then new attempts wait, 503)."""

    # --- the ingress (longshot.net.ingress; docs/security.md, "One ingress") ----------------------------------
    max_connections: int = Field(default=1024, ge=1)
    """Connections the gateway holds at once; more are answered 503 at accept and closed."""
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    """A connection must send a whole request head within this many seconds (of opening, or of its last request):
    else it is closed."""
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    """The whole body of a ``/progress``, ``/ledger``, ``/delegation/spawn``, ``/traces`` or model request must
    arrive within this many seconds of its headers (not per read); else 408."""
    max_inflight_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Request bodies all requests on this replica may hold at once, reserved before they are read; a request that
    would pass it is answered 503 with ``Retry-After``."""
    max_requests_per_attempt: int = Field(default=4, ge=1)
    """Requests one attempt may have in flight on each of ``/progress``, ``/ledger``, ``/delegation`` and
    ``/traces``; more are answered 429 at once, before their body is read."""
    max_git_requests_per_attempt: int = Field(default=8, ge=1)
    """Git requests one attempt may have in flight; more are answered 429."""

    claim_wait_seconds: float = Field(default=20.0, gt=0, le=120)
    """``GET /v1/claim``: how long one request of a warm sandbox waits for its claim before it is answered 204 (the
    runner asks again)."""
    claim_poll_seconds: float = Field(default=0.2, gt=0, le=5)
    """``GET /v1/claim``: how often a waiting sandbox's Pod is read (one Pod read each; docs/warm-pools.md)."""

    # --- identity cache and per-attempt rate limit (docs/security.md) -----------------------------
    mirror_max_age_seconds: float = Field(default=2.0, ge=0, le=30)
    """A clone or fetch (``git-upload-pack``) is served from the mirror when its last upstream fetch started at most
    this long before the request asked, without waiting for a fetch that runs now; otherwise, and always for a push,
    the request waits for a fetch that started after it asked. So a clone may miss what reached the upstream in the
    last this-many seconds (a commit another gateway replica took, the target's newest merge); 0: every clone waits
    for a fresh fetch."""
    secret_cache_seconds: float = Field(default=5.0, ge=0, le=60)
    """How long a Secret a build names (its git or model credentials) is reused after it was read: every git request
    read it before (6,704 ``GET secrets`` in a 600 s ``make bench-fleet --through-gateway``). A rotated credential is
    used from at most this long after; 0 reads it every time."""
    watch_cache: EnvBool = True
    """Read the callers' Pods, live AgentTasks and BuildRequests from a watch cache (list and watch, as
    controller-runtime's cached client) instead of three GETs per caller every ``identity_cache_seconds``
    (``gateway.watchcache``); a refusal is still confirmed with GETs. false: every read is a GET."""
    watch_namespaces: str = ""
    """Comma-separated namespaces the watch cache lists and watches (the chart: ``operator.watchNamespaces``);
    empty: every namespace."""

    identity_cache_seconds: float = Field(default=2.0, ge=0)
    """How long the gateway reuses a caller's Pod, AgentTask and BuildRequest (keyed by the Pod's UID, at most
    4,096 callers): an attempt that ended, a deleted Pod or a cancelled task loses access at most this long after
    the API server knows it. 0 reads them on every request."""
    requests_per_second: float = Field(default=50.0, ge=0)
    """Requests (git, model, progress) one attempt may send a second on average; more are answered 429 with
    ``Retry-After``. 0 turns the limit off."""
    request_burst: float = Field(default=200.0, ge=0)
    """Requests one attempt may send at once before ``requests_per_second`` applies."""

    def watched_namespaces(self) -> tuple[str, ...]:
        """``watch_namespaces`` as a tuple; empty for every namespace."""
        return tuple(ns.strip() for ns in self.watch_namespaces.split(",") if ns.strip())

    def egress_policy(self) -> egress.Policy:
        """The egress policy of these settings; ``file://`` follows ``allow_file_urls``."""
        return egress.Policy.parse(allowed_hosts=self.egress_allowed_hosts, allowed_cidrs=self.egress_allowed_cidrs,
                                   denied_cidrs=self.egress_denied_cidrs, cluster_cidrs=self.egress_cluster_cidrs,
                                   allow_file=self.allow_file_urls, allow=self.egress_allow)

    def proxies(self) -> cproxy.Proxies:
        """The proxies of these settings (``core.proxy``); ProxyError names a malformed setting or a proxy the
        allowlist does not name for the purpose ``proxy``."""
        return cproxy.configured(self.egress_proxy_url, self.egress_no_proxy, self.http_proxy, self.https_proxy,
                                 self.no_proxy, self.egress_policy())

    @model_validator(mode="after")
    def _proxy_allowed(self) -> Self:
        with contextlib.suppress(egress.PolicyError):  # the policy's own error is raised where it is used
            self.proxies()
        return self

