"""Admission by capacity, and the tenants' weights and caps (issue 57). Pure: no I/O, no clock.

An agent Pod is created only when it can run at once: there is room for its requests on a node its Pod may land on
(:class:`Capacity`, made by :func:`cluster_capacity` from the Nodes and the Pods already on them, or by
:func:`explicit_capacity` from a capacity an administrator sets), and within its namespace's own limits
(:class:`TenantPolicy`: ``maxAgents``, ``cpu``, ``memory``, set by the platform team in the operator's settings).
``core.scheduler.select`` asks :meth:`Capacity.take` for each task it would start, in its fair order, and stops at
the first that does not fit (the next slot is that task's: capacity that frees goes to it, not to a tenant with a
larger share that asks for less).

Room is counted as the kube-scheduler counts it: a node's ``status.allocatable`` less the requests of every Pod
bound to it that has not ended (cpu, memory, and the number of Pods). Agent Pods admitted but not bound yet are
placed where the kube-scheduler's default scoring would put them (the node with the most cpu free among those they
fit on), so that two plans in a row never hand out the same room. A node counts when it is schedulable (Ready, not
cordoned), its labels match the agent Pods' node selector and its ``NoSchedule``/``NoExecute`` taints are all
tolerated by the agent Pods' tolerations.

Shares: a tenant's share is its agent Pods running (and admitted in this plan) divided by its weight; the next slot
goes to the tenant with the smallest share (``core.scheduler``), as in Kueue's fair sharing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from functools import lru_cache
from typing import Any, Final

WILDCARD: Final = "*"
"""The key of :func:`parse_tenants`'s map whose policy every namespace without an entry of its own gets."""
EXPLICIT_NODE: Final = "(explicit capacity)"
"""The one node of an :func:`explicit_capacity`."""

_QUANTITY = re.compile(r"^([+]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_SUFFIX: Final = {
    None: Fraction(1), "m": Fraction(1, 1000), "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9),
    "T": Fraction(10**12), "P": Fraction(10**15), "E": Fraction(10**18), "Ki": Fraction(2**10),
    "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40), "Pi": Fraction(2**50),
    "Ei": Fraction(2**60)}
MAX_QUANTITY_LENGTH: Final = 64
UNLIMITED: Final = 2**62
"""An amount no limit sets (a tenant's limit without pods, a quota without cpu)."""


@lru_cache(maxsize=1024)
def quantity(text: str | int | float) -> Fraction:
    """A Kubernetes quantity (``250m``, ``1.5``, ``256Mi``, ``1e3``) as an exact fraction; ValueError when it is not
    one (negative amounts are not)."""
    if isinstance(text, bool):
        raise ValueError(f"not a quantity: {text!r}")
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"not a quantity: {text!r}")
        return Fraction(str(text))
    s = str(text).strip()
    m = _QUANTITY.match(s) if len(s) <= MAX_QUANTITY_LENGTH else None
    if m is None:
        raise ValueError(f"not a Kubernetes quantity: {s[:MAX_QUANTITY_LENGTH]!r}")
    return Fraction(m.group(1)) * _SUFFIX[m.group(2)]


@lru_cache(maxsize=1024)
def cpu_millis(text: str | int | float) -> int:
    """A cpu quantity in millicores, rounded up (``250m`` -> 250, ``1`` -> 1000). Kept per text: a plan reads the
    same few amounts for every pending task."""
    return math.ceil(quantity(text) * 1000)


@lru_cache(maxsize=1024)
def memory_bytes(text: str | int | float) -> int:
    """A memory quantity in bytes, rounded up (``256Mi`` -> 268435456)."""
    return math.ceil(quantity(text))


@dataclass(frozen=True, slots=True)
class Resources:
    """Amounts of what a Pod requests or a node offers: cpu in millicores, memory in bytes, and Pods."""

    cpu: int = 0
    memory: int = 0
    pods: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory, self.pods + other.pods)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory, self.pods - other.pods)

    def least(self, other: Resources) -> Resources:
        """Each amount's smaller of the two (the tighter of two limits)."""
        return Resources(min(self.cpu, other.cpu), min(self.memory, other.memory), min(self.pods, other.pods))

    def covers(self, other: Resources) -> bool:
        """Every amount of ``other`` fits in this one."""
        return self.cpu >= other.cpu and self.memory >= other.memory and self.pods >= other.pods

    def describe(self) -> str:
        return f"cpu {self.cpu}m, memory {self.memory // (1 << 20)}Mi, {self.pods} Pods"

    @classmethod
    def parse(cls, values: Mapping[str, Any], *, pods: int = 0) -> Resources:
        """From a Kubernetes resource list (``{"cpu": "250m", "memory": "256Mi", "pods": "110"}``); an absent amount
        is 0, an unreadable one raises ValueError."""
        cpu = values.get("cpu")
        memory = values.get("memory")
        count = values.get("pods")
        return cls(cpu_millis(cpu) if cpu is not None else 0, memory_bytes(memory) if memory is not None else 0,
                   int(quantity(count)) if count is not None else pods)


NOTHING: Final = Resources()
AGENT_POD: Final = Resources(pods=1)
"""What every agent Pod takes besides its requests: one of the node's Pods."""


def pod_requests(spec: Mapping[str, Any]) -> Resources:
    """What a Pod spec requests, as the kube-scheduler counts it: the sum of its containers' requests, or its largest
    init container's when that is more (an amount it cannot read counts as 0)."""
    def of(containers: Any) -> list[Resources]:
        out = []
        for c in containers or []:
            if not isinstance(c, Mapping):
                continue
            req = (c.get("resources") or {}).get("requests") or {}
            try:
                out.append(Resources.parse(req) if isinstance(req, Mapping) else NOTHING)
            except (ValueError, TypeError, ZeroDivisionError):
                out.append(NOTHING)
        return out

    total = NOTHING
    for r in of(spec.get("containers")):
        total = total + r
    for r in of(spec.get("initContainers")):
        total = Resources(max(total.cpu, r.cpu), max(total.memory, r.memory), total.pods)
    return total


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: Taint) -> bool:
        """Kubernetes' rule: an empty effect matches every effect; ``Exists`` with an empty key matches every
        taint; else the keys are equal and (``Equal``) so are the values."""
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value


@dataclass(frozen=True, slots=True)
class NodeView:
    """What admission reads of a Node."""

    name: str
    allocatable: Resources
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    schedulable: bool = True
    """Ready, and not cordoned (``spec.unschedulable``)."""


@dataclass(frozen=True, slots=True)
class PodUse:
    """A Pod that holds room: the node it is bound to ("" while it is not bound yet), what it requests, and, for an
    agent Pod, its namespace (its tenant)."""

    node: str
    requests: Resources
    tenant: str = ""


def node_matches(node: NodeView, selector: Mapping[str, str], tolerations: Sequence[Toleration]) -> bool:
    """Whether an agent Pod with this node selector and these tolerations may be scheduled on ``node``."""
    if not node.schedulable:
        return False
    if any(node.labels.get(k) != v for k, v in selector.items()):
        return False
    return all(any(t.tolerates(taint) for t in tolerations)
               for taint in node.taints if taint.effect in ("NoSchedule", "NoExecute"))


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """What the platform team allows one namespace (``LONGSHOT_ADMISSION_TENANTS``, the chart's
    ``admission.tenants``)."""

    weight: float = 1.0
    """Its weight in fair sharing: a tenant of weight 2 gets twice the agents of a tenant of weight 1."""
    max_agents: int | None = None
    """Most agent Pods of the namespace running at once (across its builds), whatever the builds ask for."""
    limit: Resources | None = None
    """Most cpu and memory the namespace's agent Pods may request at once (None: no limit of its own)."""
    tokens_per_hour: int | None = None
    """Most model tokens the namespace's agents may use in an hour: while its last hour's tokens
    (:func:`tokens_in_window`) reach it, the namespace starts no agent (the running ones finish their attempts)."""


DEFAULT_POLICY: Final = TenantPolicy()


def _json_setting(text: str, what: str) -> object:
    """One of these JSON settings parsed (the operator's own settings: chart values); ValueError names the
    setting."""
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"{what}: not JSON ({e})") from None


def parse_tenants(text: str) -> dict[str, TenantPolicy]:
    """The tenants' policies from JSON: ``{"team-a": {"weight": 2, "maxAgents": 10, "cpu": "8", "memory": "16Gi"},
    "*": {"maxAgents": 20}}`` (``*``: every namespace without an entry). Empty: none. ValueError names the entry and
    the field that is wrong."""
    if not text.strip():
        return {}
    raw = _json_setting(text, "admission tenants")
    if not isinstance(raw, dict):
        raise ValueError("admission tenants: expected a JSON object of namespace -> policy")
    out: dict[str, TenantPolicy] = {}
    for ns, entry in raw.items():
        if not isinstance(entry, dict):
            raise ValueError(f"admission tenants[{ns!r}]: expected an object")
        unknown = set(entry) - {"weight", "maxAgents", "cpu", "memory", "tokensPerHour"}
        if unknown:
            raise ValueError(f"admission tenants[{ns!r}]: unknown field(s) {sorted(unknown)} (allowed: weight, "
                             "maxAgents, cpu, memory, tokensPerHour)")
        weight = entry.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 1000:
            raise ValueError(f"admission tenants[{ns!r}].weight: expected a number in (0, 1000], not {weight!r}")
        max_agents = entry.get("maxAgents")
        if max_agents is not None and (isinstance(max_agents, bool) or not isinstance(max_agents, int)
                                       or max_agents < 0):
            raise ValueError(f"admission tenants[{ns!r}].maxAgents: expected a whole number >= 0, not "
                             f"{max_agents!r}")
        tokens = entry.get("tokensPerHour")
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0):
            raise ValueError(f"admission tenants[{ns!r}].tokensPerHour: expected a whole number >= 0, not "
                             f"{tokens!r}")
        limit = None
        if "cpu" in entry or "memory" in entry:
            try:
                cpu = cpu_millis(entry["cpu"]) if "cpu" in entry else UNLIMITED
                memory = memory_bytes(entry["memory"]) if "memory" in entry else UNLIMITED
            except (ValueError, TypeError) as e:
                raise ValueError(f"admission tenants[{ns!r}]: {e}") from None
            limit = Resources(cpu, memory, UNLIMITED)
        out[str(ns)] = TenantPolicy(weight=float(weight), max_agents=max_agents, limit=limit,
                                    tokens_per_hour=tokens)
    return out


def policy_of(tenants: Mapping[str, TenantPolicy], tenant: str) -> TenantPolicy:
    return tenants.get(tenant) or tenants.get(WILDCARD) or DEFAULT_POLICY


def parse_capacity(text: str) -> Resources | None:
    """An explicit operator-wide capacity, ``cpu=16,memory=64Gi[,pods=100]``; None for ``auto`` and ``off``.
    ValueError names what is wrong."""
    s = text.strip()
    if s in ("auto", "off"):
        return None
    values: dict[str, str] = {}
    for part in s.split(","):
        k, sep, v = part.partition("=")
        k = k.strip()
        if not sep or k not in ("cpu", "memory", "pods") or k in values:
            raise ValueError(f"admission capacity {text!r}: expected auto, off, or cpu=<quantity>,memory=<quantity>"
                             "[,pods=<n>]")
        values[k] = v.strip()
    if "cpu" not in values or "memory" not in values:
        raise ValueError(f"admission capacity {text!r}: an explicit capacity names both cpu and memory")
    return Resources.parse(values, pods=UNLIMITED)


@dataclass(frozen=True, slots=True)
class QuotaView:
    """What admission reads of a ResourceQuota: its namespace, its hard limits and what it counts as used (cpu and
    memory requests, Pods; an amount the quota does not limit is :data:`UNLIMITED`), and whether it is scoped (a
    ``scopes`` or ``scopeSelector`` quota counts only some Pods: admission does not read it)."""

    namespace: str
    hard: Resources
    used: Resources
    scoped: bool = False


_QUOTA_NAMES: Final = {"cpu": ("cpu", "requests.cpu"), "memory": ("memory", "requests.memory"),
                       "pods": ("pods", "count/pods")}


def quota_view(namespace: str, hard: Mapping[str, Any], used: Mapping[str, Any], *, scoped: bool = False
               ) -> QuotaView:
    """A ResourceQuota's ``status.hard``/``status.used`` (or ``spec.hard``) as a :class:`QuotaView`: ``cpu`` and
    ``requests.cpu`` limit the same thing (the smaller counts), as do ``memory``/``requests.memory`` and
    ``pods``/``count/pods``. An amount it cannot read limits nothing (ValueError is not raised: a quota the API
    server accepted is the API server's to enforce)."""
    def amount(values: Mapping[str, Any], what: str, absent: int) -> int:
        found = []
        for name in _QUOTA_NAMES[what]:
            v = values.get(name)
            if v is None:
                continue
            try:
                q = quantity(v)
            except (ValueError, TypeError, ZeroDivisionError):
                continue
            found.append(math.ceil(q * 1000) if what == "cpu" else math.ceil(q))
        return min(found) if found else absent

    return QuotaView(namespace, Resources(amount(hard, "cpu", UNLIMITED), amount(hard, "memory", UNLIMITED),
                                          amount(hard, "pods", UNLIMITED)),
                     Resources(amount(used, "cpu", 0), amount(used, "memory", 0), amount(used, "pods", 0)),
                     scoped=scoped)


def quota_limits(quotas: Iterable[QuotaView], agent_pods: Iterable[PodUse]) -> dict[str, Resources]:
    """Namespace -> what its ResourceQuotas leave for agent Pods: each unscoped quota's hard limit less what it
    counts as used by other Pods (its ``used`` less the agent Pods' requests at the time it was read, never below
    0), the tightest of the namespace's quotas. ``agent_pods``: the agent Pods listed with the quotas."""
    agents: dict[str, Resources] = {}
    for p in agent_pods:
        if p.tenant:
            agents[p.tenant] = agents.get(p.tenant, NOTHING) + p.requests + AGENT_POD
    out: dict[str, Resources] = {}
    for q in quotas:
        if q.scoped:
            continue
        mine = agents.get(q.namespace, NOTHING)
        others = Resources(max(0, q.used.cpu - mine.cpu), max(0, q.used.memory - mine.memory),
                           max(0, q.used.pods - mine.pods))
        room = Resources(*(h if h >= UNLIMITED else max(0, h - o)
                           for h, o in ((q.hard.cpu, others.cpu), (q.hard.memory, others.memory),
                                        (q.hard.pods, others.pods))))
        out[q.namespace] = out[q.namespace].least(room) if q.namespace in out else room
    return out


@dataclass
class Capacity:
    """Room for agent Pods in one plan. :meth:`take` places a Pod and keeps what it took."""

    free: dict[str, Resources] | None
    """Node -> room left; None: no node limit (only the tenants' own)."""
    largest: Resources = field(default_factory=Resources)
    """Each amount's largest of the matching nodes' allocatable: a request over it never fits."""
    policies: Mapping[str, TenantPolicy] = field(default_factory=dict)
    tenant_used: dict[str, Resources] = field(default_factory=dict)
    """Tenant -> what its live agent Pods (and those taken in this plan) request, and their number."""
    quotas: Mapping[str, Resources] = field(default_factory=dict)
    """Tenant -> what its namespace's ResourceQuotas leave for agent Pods (:func:`quota_limits`)."""

    def _node_for(self, request: Resources) -> str | None:
        if self.free is None:
            return ""
        best: tuple[int, int, str] | None = None
        for name, room in self.free.items():
            if room.covers(request):
                key = (-room.cpu, -room.memory, name)  # the kube-scheduler's LeastAllocated: the emptiest node
                if best is None or key < best:
                    best = key
        return best[2] if best is not None else None

    def limit(self, tenant: str) -> Resources | None:
        """The tenant's own limit: the platform team's ``cpu``/``memory`` and its namespace's ResourceQuotas, the
        tighter of them (None: neither)."""
        policy = policy_of(self.policies, tenant).limit
        quota = self.quotas.get(tenant)
        if policy is None or quota is None:
            return policy if quota is None else quota
        return policy.least(quota)

    def tenant_fits(self, request: Resources, tenant: str) -> bool:
        """Whether one more Pod of ``request`` stays within the tenant's own limit (:meth:`limit`)."""
        limit = self.limit(tenant)
        return limit is None or (limit - self.tenant_used.get(tenant, NOTHING)).covers(request + AGENT_POD)

    def fits(self, request: Resources, tenant: str) -> bool:
        return self.tenant_fits(request, tenant) and self._node_for(request + AGENT_POD) is not None

    def ever_fits(self, request: Resources, tenant: str) -> bool:
        """Whether the request fits on an empty matching node and in the tenant's whole limit: one that never does
        waits for nobody (it is reported, not queued)."""
        limit = self.limit(tenant)
        if limit is not None and not limit.covers(request + AGENT_POD):
            return False
        return self.free is None or self.largest.covers(request + AGENT_POD)

    def take(self, request: Resources, tenant: str) -> str | None:
        """Place a Pod of ``request`` for ``tenant``: the node it goes to ("" without node limits), or None when it
        does not fit now (nothing is taken then)."""
        if not self.fits(request, tenant):
            return None
        node = self._node_for(request + AGENT_POD)
        assert node is not None
        if self.free is not None:
            self.free[node] = self.free[node] - request - AGENT_POD
        self.tenant_used[tenant] = self.tenant_used.get(tenant, NOTHING) + request + AGENT_POD
        return node

    def total_free(self) -> Resources:
        """The room left on every node, added up (0 without node limits)."""
        if self.free is None:
            return Resources()
        out = Resources()
        for room in self.free.values():
            out += Resources(max(0, room.cpu), max(0, room.memory), max(0, room.pods))
        return out


def _place(free: dict[str, Resources], pod: PodUse) -> None:
    """An unbound Pod's room, taken where the kube-scheduler would put it; when it fits nowhere it is taken from the
    emptiest node anyway (it will wait there: nothing else may be admitted into that room)."""
    need = pod.requests + AGENT_POD
    fitting = [n for n, room in free.items() if room.covers(need)]
    pool = fitting or list(free)
    if not pool:
        return
    node = min(pool, key=lambda n: (-free[n].cpu, -free[n].memory, n))
    free[node] = free[node] - need


def _used(pods: Iterable[PodUse]) -> dict[str, Resources]:
    used: dict[str, Resources] = {}
    for p in pods:
        if p.tenant:
            used[p.tenant] = used.get(p.tenant, NOTHING) + p.requests + AGENT_POD
    return used


@dataclass(frozen=True)
class NodeRoom:
    """The matching nodes' room less what the Pods that are not agent Pods of this operator hold: made once per read
    of the cluster (:func:`node_room`), then each plan takes the agent Pods from it (:func:`capacity_from`)."""

    free: Mapping[str, Resources]
    largest: Resources


def node_room(nodes: Iterable[NodeView], pods: Iterable[PodUse], *, selector: Mapping[str, str],
              tolerations: Sequence[Toleration]) -> NodeRoom | None:
    """The room on the nodes agent Pods may land on, less what ``pods`` bound to them request; None when no node
    matches. Unbound Pods of ``pods`` with a tenant (another operator's agent Pods) are placed as the kube-scheduler
    would; other unbound Pods are not counted (the kube-scheduler may place them anywhere, or nowhere)."""
    matching = {n.name: n for n in nodes if node_matches(n, selector, tolerations)}
    if not matching:
        return None
    free = {name: n.allocatable for name, n in matching.items()}
    largest = Resources(max(n.allocatable.cpu for n in matching.values()),
                        max(n.allocatable.memory for n in matching.values()),
                        max(n.allocatable.pods for n in matching.values()))
    unbound = []
    for p in pods:
        if not p.node:
            if p.tenant:
                unbound.append(p)
            continue
        if p.node in free:
            free[p.node] = free[p.node] - p.requests - AGENT_POD
    for p in unbound:  # after the bound ones: they take what is left
        _place(free, p)
    return NodeRoom(free=free, largest=largest)


def capacity_from(room: NodeRoom, agent_pods: Iterable[PodUse], *,
                  tenants: Mapping[str, TenantPolicy] | None = None,
                  quotas: Mapping[str, Resources] | None = None) -> Capacity:
    """One plan's :class:`Capacity`: ``room`` less the operator's live agent Pods (bound ones where they are, unbound
    ones where the kube-scheduler would put them)."""
    free = dict(room.free)
    pods = list(agent_pods)
    unbound = []
    for p in pods:
        if not p.node:
            unbound.append(p)
        elif p.node in free:
            free[p.node] = free[p.node] - p.requests - AGENT_POD
    for p in unbound:
        _place(free, p)
    return Capacity(free=free, largest=room.largest, policies=dict(tenants or {}), tenant_used=_used(pods),
                    quotas=dict(quotas or {}))


def cluster_capacity(nodes: Iterable[NodeView], pods: Iterable[PodUse], *, selector: Mapping[str, str],
                     tolerations: Sequence[Toleration], tenants: Mapping[str, TenantPolicy] | None = None,
                     quotas: Mapping[str, Resources] | None = None) -> Capacity | None:
    """The room on the nodes agent Pods may land on, less what the Pods on them (and agent Pods not bound yet)
    request; None when no node matches (the caller falls back to the numeric limits). ``pods``: every Pod that has
    not ended, with the agent Pods' namespace as their tenant."""
    pods = list(pods)
    room = node_room(nodes, [p for p in pods if not p.tenant], selector=selector, tolerations=tolerations)
    if room is None:
        return None
    return capacity_from(room, [p for p in pods if p.tenant], tenants=tenants, quotas=quotas)


def explicit_capacity(total: Resources, agent_pods: Iterable[PodUse],
                      tenants: Mapping[str, TenantPolicy] | None = None,
                      quotas: Mapping[str, Resources] | None = None) -> Capacity:
    """An administrator's capacity for all agent Pods (``cpu=16,memory=64Gi``), less what the live ones request."""
    pods = list(agent_pods)
    used = Resources()
    for p in pods:
        used = used + p.requests + AGENT_POD
    return Capacity(free={EXPLICIT_NODE: total - used}, largest=total, policies=dict(tenants or {}),
                    tenant_used=_used(pods), quotas=dict(quotas or {}))


def tenant_capacity(agent_pods: Iterable[PodUse], tenants: Mapping[str, TenantPolicy],
                    quotas: Mapping[str, Resources] | None = None) -> Capacity | None:
    """Only the tenants' own limits (no node limit): the platform team's cpu and memory, and the namespaces'
    ResourceQuotas; None when there is neither."""
    if not quotas and not any(p.limit is not None for p in tenants.values()):
        return None
    return Capacity(free=None, policies=dict(tenants), tenant_used=_used(agent_pods), quotas=dict(quotas or {}))


def tokens_in_window(attempts: Iterable[tuple[int, datetime | None]], since: datetime) -> int:
    """The tokens a tenant's agents used in the window from ``since``: the tokens of every attempt (``(tokens, its
    end)``) that ran in it, that is, still running (no end) or ended at or after ``since``. An attempt that began
    before the window counts whole (the safe side: a tenant at its cap waits a little longer, never less)."""
    since = _naive(since)
    return sum(tokens for tokens, end in attempts if end is None or _naive(end) >= since)


def _naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo is not None else t


def parse_node_selector(text: str) -> dict[str, str]:
    """The agent Pods' node selector from JSON (``{"longshot.dev/agents": "true"}``); empty: none."""
    if not text.strip():
        return {}
    raw = _json_setting(text, "agent node selector")
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ValueError("agent node selector: expected a JSON object of label -> value (strings)")
    return dict(raw)


def parse_tolerations(text: str) -> tuple[Toleration, ...]:
    """The agent Pods' tolerations from JSON, as a Pod spec has them (``[{"key": "agents", "operator": "Exists",
    "effect": "NoSchedule"}]``); empty: none."""
    if not text.strip():
        return ()
    raw = _json_setting(text, "agent tolerations")
    if not isinstance(raw, list):
        raise ValueError("agent tolerations: expected a JSON list of tolerations")
    out = []
    for i, t in enumerate(raw):
        if not isinstance(t, dict) or not all(isinstance(t.get(k, ""), str) for k in ("key", "operator", "value",
                                                                                         "effect")):
            raise ValueError(f"agent tolerations[{i}]: expected an object with string key, operator, value, effect")
        operator = t.get("operator") or "Equal"
        if operator not in ("Equal", "Exists"):
            raise ValueError(f"agent tolerations[{i}].operator: Equal or Exists, not {operator!r}")
        effect = t.get("effect") or ""
        if effect not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ValueError(f"agent tolerations[{i}].effect: NoSchedule, PreferNoSchedule or NoExecute, not "
                             f"{effect!r}")
        out.append(Toleration(key=t.get("key") or "", operator=operator, value=t.get("value") or "", effect=effect))
    return tuple(out)


def toleration_manifest(t: Toleration) -> dict[str, str]:
    """A toleration as a Pod spec has it."""
    out = {"operator": t.operator}
    if t.key:
        out["key"] = t.key
    if t.value and t.operator == "Equal":
        out["value"] = t.value
    if t.effect:
        out["effect"] = t.effect
    return out
