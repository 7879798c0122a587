"""What admission by capacity reads of the cluster (``Settings.admission_capacity``: ``auto`` or explicit): the Nodes
(``auto`` only), the Pods that have not ended, and the ResourceQuotas, as ``core.admission`` views.

Three list calls (``resourceVersion=0``: the API server answers from its watch cache), every
``Settings.admission_refresh_seconds``, in a thread. Of a Pod only its node, its phase, its containers' requests and,
for an agent Pod, its namespace are kept: nothing else of a spec (environment, commands) is read into the operator.
The rights: ``list`` on Nodes (the chart grants it with ``admission.capacity: auto``), on Pods and on
ResourceQuotas in every namespace (granted cluster-wide unless ``operator.watchNamespaces``). Without the Nodes
:meth:`Reader.read` raises :class:`Unavailable` and dispatch falls back to the numeric limits; without the Pods only
the agent Pods the operator watches are counted, and without the ResourceQuotas none is (``ClusterFacts.partial``
says why).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from longshot.api import keys
from longshot.core import admission
from longshot.runtime import kube


class Unavailable(Exception):
    """The Nodes or Pods cannot be listed (no right to, or the API failed): the message says which and why."""


@dataclass(frozen=True)
class ClusterFacts:
    nodes: tuple[admission.NodeView, ...]
    pods: dict[tuple[str, str], admission.PodUse] = field(default_factory=dict)
    """(namespace, name) -> the room the Pod holds."""
    partial: str = ""
    """Why the Pods or the ResourceQuotas could not be listed ("" when they were): then only the agent Pods the
    operator watches are counted, and no quota (the chart's ``operator.watchNamespaces`` mode grants no cluster-wide
    list)."""
    quotas: dict[str, admission.Resources] = field(default_factory=dict)
    """Namespace -> what its ResourceQuotas leave for agent Pods (``core.admission.quota_limits``)."""


def node_view(item: Mapping[str, Any]) -> admission.NodeView:
    meta = item.get("metadata") or {}
    spec = item.get("spec") or {}
    status = item.get("status") or {}
    try:
        allocatable = admission.Resources.parse(status.get("allocatable") or {})
    except (ValueError, TypeError, ZeroDivisionError):
        allocatable = admission.NOTHING  # a Node we cannot read offers nothing
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [] if isinstance(c, Mapping))
    taints = tuple(admission.Taint(str(t.get("key") or ""), str(t.get("value") or ""),
                                   str(t.get("effect") or "NoSchedule"))
                   for t in spec.get("taints") or [] if isinstance(t, Mapping))
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    return admission.NodeView(name=str(meta.get("name") or ""), allocatable=allocatable, labels=labels,
                              taints=taints, schedulable=ready and not spec.get("unschedulable"))


def quota_view(item: Mapping[str, Any]) -> admission.QuotaView:
    """A ResourceQuota as admission reads it: ``status.hard`` (``spec.hard`` until the quota controller has written
    its status) and ``status.used``."""
    meta = item.get("metadata") or {}
    spec = item.get("spec") or {}
    status = item.get("status") or {}
    hard = status.get("hard") or spec.get("hard") or {}
    used = status.get("used") or {}
    return admission.quota_view(str(meta.get("namespace") or ""), hard if isinstance(hard, Mapping) else {},
                                used if isinstance(used, Mapping) else {},
                                scoped=bool(spec.get("scopes") or spec.get("scopeSelector")))


def pod_use(item: Mapping[str, Any], requests: admission.Resources) -> admission.PodUse:
    meta = item.get("metadata") or {}
    labels = meta.get("labels") or {}
    ours = labels.get(keys.MANAGED_BY) == keys.OPERATOR
    return admission.PodUse(node=str((item.get("spec") or {}).get("nodeName") or ""), requests=requests,
                            tenant=str(meta.get("namespace") or "") if ours else "")


class Reader:
    """Lists the Nodes and the Pods that hold room on them."""

    def __init__(self, client: kubernetes.client.ApiClient, *, nodes: bool = True) -> None:
        self.core = kube.Core(client)
        self.nodes = nodes
        """List the Nodes (``auto``); without them (an explicit capacity) only the agent Pods (what the quotas' use
        is counted less) and the quotas are read."""

    def _list(self, what: str, path: str, query: list[tuple[str, Any]]) -> list[Mapping[str, Any]]:
        try:
            answer = self.core.call("GET", path, {}, query=[("resourceVersion", "0"), *query])
        except ApiException as e:
            raise Unavailable(f"cannot list {what} ({e.status} {e.reason})") from None
        except Exception as e:
            raise Unavailable(f"cannot list {what} ({type(e).__name__}: {e})") from None
        items = answer.get("items") if isinstance(answer, Mapping) else None
        return [i for i in items or [] if isinstance(i, Mapping)]

    def read(self) -> ClusterFacts:
        """The Nodes, the Pods not ended (none when there is no Node; only the agent Pods without the Nodes) and the
        ResourceQuotas (not read when the Pods could not be: their room is worked out from both)."""
        nodes = tuple(node_view(n) for n in self._list("Nodes", "/api/v1/nodes", [])) if self.nodes else ()
        pods: dict[tuple[str, str], admission.PodUse] = {}
        if self.nodes and not nodes:
            return ClusterFacts(nodes=nodes)
        partial = []
        query: list[tuple[str, Any]] = [("fieldSelector", "status.phase!=Succeeded,status.phase!=Failed")]
        if not self.nodes:  # no node room to count: the quotas need only the agent Pods' requests
            query.append(("labelSelector", f"{keys.MANAGED_BY}={keys.OPERATOR}"))
        try:
            listed = self._list("Pods", "/api/v1/pods", query)
        except Unavailable as e:
            listed = []
            partial.append(str(e))
        for p in listed:
            meta = p.get("metadata") or {}
            pods[(str(meta.get("namespace") or ""), str(meta.get("name") or ""))] = pod_use(
                p, admission.pod_requests(p.get("spec") or {}))
        quotas: dict[str, admission.Resources] = {}
        if not partial:
            try:
                views = [quota_view(q) for q in self._list("ResourceQuotas", "/api/v1/resourcequotas", [])]
                quotas = admission.quota_limits(views, pods.values())
            except Unavailable as e:
                partial.append(str(e))
        return ClusterFacts(nodes=nodes, pods=pods, partial="; ".join(partial), quotas=quotas)
