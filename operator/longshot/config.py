"""Operator-wide settings, read once at start-up from the environment (the chart sets them).

Every setting has a default that works on a laptop; ``Settings.from_env()`` reads ``LONGSHOT_<NAME>``
(upper-case field name), so ``agent_image`` comes from ``LONGSHOT_AGENT_IMAGE`` (pydantic-settings,
``longshot.envsettings``: a value that does not validate fails start-up naming the variable). An empty variable
is an empty value (``LONGSHOT_EGRESS_DENIED_CIDRS=""``: no denied range), and an empty boolean is false.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Literal, Self

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from longshot.core import admission, egress, lanes
from longshot.core import proxy as cproxy
from longshot.envsettings import EnvBool, EnvSettings


class Settings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="LONGSHOT_", env_ignore_empty=False)

    agent_image: str = "longshot-agent:dev"
    """Image of agent and sweep Pods when a build does not set ``spec.agent.image``."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Pull policy of agent Pods (``Never`` on clusters whose images are imported locally)."""
    default_cpu_request: str = "250m"
    default_cpu_limit: str = "1"
    default_memory_request: str = "256Mi"
    default_memory_limit: str = "1Gi"
    scratch_size: str = "2Gi"
    """Size limit of the agent Pod's scratch (emptyDir) volume."""
    max_workers: int = Field(default=50, ge=0)
    """Operator-wide limit of agent Pods running at once, across builds."""
    admission_capacity: str = "off"
    """Admit an agent Pod only when it can run at once (docs/admission-capacity.md): ``auto`` (the room on the Nodes
    agent Pods may land on, less what the Pods there request; with no such Node, or no right to list Nodes, the
    numeric limits alone, said in the log and the ``longshot_admission_capacity_mode`` metric), an explicit
    ``cpu=16,memory=64Gi`` for all agent Pods, or ``off`` (the numeric limits alone). The chart sets ``auto``."""
    admission_tenants: str = ""
    """Each namespace's weight in fair sharing and its own caps, as JSON, set by the platform team:
    ``{"team-a": {"weight": 2, "maxAgents": 10, "cpu": "8", "memory": "16Gi"}, "*": {"maxAgents": 20}}`` (``*``:
    every namespace without an entry; ``core.admission.parse_tenants``)."""
    admission_refresh_seconds: float = Field(default=5.0, gt=0, le=300)
    """How often ``admission_capacity: auto`` lists the Nodes and the Pods on them (agent Pods of watched namespaces
    are followed as they change, between two lists)."""
    admission_unschedulable_seconds: float = Field(default=30.0, ge=0)
    """An agent Pod the kube-scheduler has found Unschedulable for this long is withdrawn, and its task goes back to
    the line without counting a failure (0: never). Only while admission counts capacity (``auto`` with Nodes, or
    explicit): with the numeric limits alone the Pod keeps its place in the kube-scheduler's queue."""
    agent_node_selector: str = ""
    """Node selector of agent Pods, as a JSON object (``{"longshot.dev/pool": "agents"}``); admission by capacity
    counts only the Nodes it selects."""
    agent_tolerations: str = ""
    """Tolerations of agent Pods, as a JSON list as in a Pod spec; admission by capacity counts a tainted Node only
    when they tolerate its taints."""
    agent_runtime_class: str = Field(default="", max_length=253,
                                     pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$")
    """RuntimeClass of agent Pods whose BuildRequest names none (``spec.agent.runtimeClassName``): a sandboxed
    runtime such as gVisor's ``runsc`` or Kata (docs/security.md, "Kernel isolation"); empty: the cluster's
    default runtime."""
    warm_pool_size: int = Field(default=0, ge=0, le=32)
    """Warm sandboxes kept per build whose BuildRequest sets no ``spec.agent.warmPool`` (docs/warm-pools.md); 0:
    off, every attempt starts a cold Pod."""
    agent_priority_class: str = ""
    """PriorityClass of worker, planner and fixer agent Pods (empty: none)."""
    delivery_priority_class: str = ""
    """PriorityClass of the Pods the merge queue and finalization wait for (gates, reviews, sweeps, final tasks):
    with a higher value than ``agent_priority_class`` they may pre-empt workers (empty: as the others)."""
    tenant_share: float = Field(default=lanes.SHARE, gt=0, le=1)
    """The share of each controller's workers one namespace (tenant) may hold at once (at least one worker); the
    work queues take turns between namespaces, so the others always find the rest (``core.lanes``)."""
    killswitch: EnvBool = False
    """Start with the killswitch engaged (no agent Pod runs)."""
    killswitch_configmap: str = "longshot-killswitch"
    """ConfigMap in the operator's namespace whose ``engaged: "true"`` stops every agent Pod."""
    namespace: str = "longshot-system"
    """The operator's own namespace (Leases, killswitch ConfigMap)."""
    metrics_port: int = Field(default=8080, ge=0, le=65535)
    """Port of ``/metrics``, ``/healthz`` and ``/readyz``; 0 disables them (and the webhook)."""
    webhook_port: int = Field(default=8081, ge=0, le=65535)
    """Port of the standing intakes' webhook, ``POST /intake/<namespace>/<name>`` (its own Service in the chart,
    apart from the metrics and probes); 0 serves no webhook."""
    webhook_max_connections: int = Field(default=256, ge=1)
    """Connections the webhook port holds at once; more are answered 503 at accept and closed."""
    webhook_body_timeout_seconds: float = Field(default=10.0, gt=0)
    """A delivery's whole body must arrive within this many seconds of its headers (not per read); else 408."""
    webhook_per_source: int = Field(default=4, ge=1)
    """Deliveries one source address may have in flight; more are answered 429 before their body is read."""
    webhook_rate_per_second: float = Field(default=5.0, ge=0)
    """Deliveries a second one source address may start on average (0: no limit); more are answered 429."""
    webhook_burst: int = Field(default=20, ge=1)
    """Deliveries one source address may start at once before ``webhook_rate_per_second`` applies."""
    webhook_inflight_bytes: int = Field(default=16 * 1024 * 1024, ge=1024 * 1024)
    """Delivery bodies all deliveries on this replica may hold at once (reserved before they are read); past it
    503 with ``Retry-After``."""
    git_author_name: str = "Longshot"
    git_author_email: str = "longshot@localhost"
    workspace_dir: str = "/var/cache/longshot"
    """Operator-side git workspaces of the merge queue."""
    workspace_max_bytes: int = Field(default=1024 * 1024 * 1024, ge=0)
    """Largest size of one workspace (one tenant's repository) after a fetch; a fetch past it fails the job that
    asked for it with a reason naming this cap, and the workspace is removed. 0: no cap. The chart's workspace
    volume is 2Gi: keep this well under it."""
    lease_duration_seconds: int = Field(default=15, gt=0)
    lease_renew_seconds: int = Field(default=2, gt=0)
    gateway_url: str = ""
    """Base URL of longshot-gateway as agent Pods reach it (the chart sets
    ``http://longshot-gateway.<namespace>.svc:8080``). Agent Pods get it and a gateway token; without it they
    get neither and can reach only repositories and models that need no credential."""
    tracing_endpoint: str = ""
    """OTLP/HTTP base URL of the trace collector (``http://otel-collector.observability:4318``; the chart's
    ``tracing.endpoint`` when ``tracing.enabled``). Empty: no tracing, at no cost (docs/tracing.md). Set: the
    operator exports its spans there, records ``status.traceId`` and gives agent Pods a ``TRACEPARENT``."""
    tracing_ui_base_url: str = ""
    """Base URL of a trace UI (chart ``tracing.uiBaseUrl``): the build's ``Traced`` Event links
    ``<url>/<traceId>``."""
    network_policy: EnvBool = True
    """Keep the default-deny agent NetworkPolicy (``runtime.netpol``) in every namespace with builds."""
    agent_dns_peers: str = ""
    """JSON list of NetworkPolicy peers serving DNS to agent Pods (default: kube-dns in kube-system)."""
    agent_extra_egress: str = ""
    """JSON list of extra NetworkPolicy egress rules for agent Pods (default: none)."""
    heartbeat_timeout_seconds: int = Field(default=300, ge=0)
    """A running attempt whose agent sent no heartbeat (``status.progress.lastHeartbeat``, through the gateway;
    the runner beats every 30 s) for longer than this is hung: its Pod is deleted and the attempt fails as
    Timeout. 0 turns the check off; it is off without ``gateway_url`` (no heartbeat reaches the operator)."""
    egress_allow: str = ""
    """Allowlist entries with their purposes and ports, as JSON: ``[{"host": "git.corp", "purposes": ["git"],
    "ports": [443]}, {"cidr": "10.1.2.3/32", ...}]`` (``core.egress``; the chart's egress.allow)."""
    egress_allowed_hosts: str = "*"
    """Legacy host entries, each for every purpose (an exact name on ports 80, 443, 22 and 9418 only; a wildcard
    on every port): exact names, ``*.suffix`` or ``*`` (any name), comma-separated (``core.egress``; the chart's
    egress.allowedHosts)."""
    egress_allowed_cidrs: str = ""
    """Legacy address ranges, each for every purpose on every port, even inside the denied ones (the test tiers'
    loopback; the chart sets none: its entries say their purposes in egress.allow)."""
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
    egress_allow_file_urls: EnvBool = True
    """Let builds name ``file://`` repositories (tests and single-machine setups; the chart sets it from
    ``gateway.allowFileUrls``, false by default)."""
    scan_timeout_seconds: float = Field(default=90.0, ge=0)
    """Wall-clock limit of the merge queue's secret scan of one branch (``vcs.secretscan.scan_range``): past it the
    MergeJob fails with ``ScanTimedOut`` (a fixer gets it) and the repository's lock is released. Keep it well
    under the liveness bound of a reconcile (300 s). 0 turns the limit off."""
    identity: str = Field(default_factory=lambda: os.environ.get("POD_NAME") or os.uname().nodename)
    """This replica's name in Leases."""

    @model_validator(mode="after")
    def _admission(self) -> Settings:
        _admission(self.admission_capacity, self.admission_tenants, self.agent_node_selector, self.agent_tolerations)
        return self

    def capacity_mode(self) -> str:
        """``auto``, ``off`` or ``explicit``."""
        mode = self.admission_capacity.strip()
        return mode if mode in ("auto", "off") else "explicit"

    def explicit_capacity(self) -> admission.Resources | None:
        return _admission(self.admission_capacity, "", "", "")[0]

    def tenants(self) -> dict[str, admission.TenantPolicy]:
        return _admission("off", self.admission_tenants, "", "")[1]

    def node_selector(self) -> dict[str, str]:
        return _admission("off", "", self.agent_node_selector, "")[2]

    def tolerations(self) -> tuple[admission.Toleration, ...]:
        return _admission("off", "", "", self.agent_tolerations)[3]

    @model_validator(mode="after")
    def _ports_differ(self) -> Settings:
        if self.webhook_port and self.webhook_port == self.metrics_port:
            raise ValueError(f"webhook_port ({self.webhook_port}) must differ from metrics_port: the webhook is "
                             "served apart from /metrics and the probes; set LONGSHOT_WEBHOOK_PORT to another port "
                             "(or 0 for none)")
        return self

    def egress_policy(self) -> egress.Policy:
        """The egress policy of these settings (``core.egress``); PolicyError names a malformed entry."""
        return _policy(self.egress_allowed_hosts, self.egress_allowed_cidrs, self.egress_denied_cidrs,
                       self.egress_cluster_cidrs, self.egress_allow_file_urls, self.egress_allow)

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


@functools.lru_cache(maxsize=16)
def _admission(capacity: str, tenants: str, selector: str, tolerations: str
               ) -> tuple[admission.Resources | None, dict[str, admission.TenantPolicy], dict[str, str],
                          tuple[admission.Toleration, ...]]:
    """The admission settings parsed (``core.admission``); ValueError names the setting and what is wrong."""
    return (admission.parse_capacity(capacity), admission.parse_tenants(tenants),
            admission.parse_node_selector(selector), admission.parse_tolerations(tolerations))


@functools.lru_cache(maxsize=8)
def _policy(hosts: str, allowed: str, denied: str, cluster: str, allow_file: bool, allow: str) -> egress.Policy:
    return egress.Policy.parse(allowed_hosts=hosts, allowed_cidrs=allowed, denied_cidrs=denied,
                               cluster_cidrs=cluster, allow_file=allow_file, allow=allow)

