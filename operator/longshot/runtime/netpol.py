"""The agent NetworkPolicy of a build namespace: default deny, egress only to longshot-gateway and DNS.

``build_agent_policy(namespace, settings)`` is a pure builder (tested without a cluster);
``ensure(client, namespace, settings)`` creates it, or replaces it when it differs, and does nothing when
it is as it should be, so the operator may call it whenever it sees a build in a namespace.

The policy selects the agent Pods of the namespace (``app.kubernetes.io/component: agent``,
``app.kubernetes.io/managed-by: longshot-operator``) and allows

* no ingress at all;
* egress to the gateway's Pods (``app.kubernetes.io/component: gateway``, ``app.kubernetes.io/part-of:
  longshot`` in the operator's namespace) on the gateway's port;
* egress to DNS (``settings.agent_dns_peers``: by default kube-dns in kube-system), UDP and TCP 53;
* the extra egress rules of ``settings.agent_extra_egress`` (a package mirror, ...), when an operator
  chooses to open more.

It only takes effect where the cluster's network plugin enforces NetworkPolicy (see docs/security.md).
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from typing import Any, Final

import kubernetes
from kubernetes.client.exceptions import ApiException

from longshot.api import keys
from longshot.config import Settings
from longshot.runtime import kube

log = logging.getLogger(__name__)
NAME: Final = "longshot-agent-egress"
AGENT_SELECTOR: Final = {keys.COMPONENT: "agent", keys.MANAGED_BY: keys.OPERATOR}
GATEWAY_SELECTOR: Final = {keys.COMPONENT: "gateway", keys.PART_OF: "longshot"}
DEFAULT_DNS_PEERS: Final = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                             "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
DEFAULT_GATEWAY_PORT: Final = 8080
PATH: Final = "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"


class PolicyError(ValueError):
    """A setting of the policy is invalid; the message names it."""


def _json_list(name: str, raw: str, default: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not raw.strip():
        return default
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise PolicyError(f"LONGSHOT_{name.upper()} is not JSON: {e}") from None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise PolicyError(f"LONGSHOT_{name.upper()} must be a JSON list of objects")
    return value


def gateway_port(settings: Settings) -> int:
    port = urllib.parse.urlsplit(settings.gateway_url).port if settings.gateway_url else None
    return port or DEFAULT_GATEWAY_PORT


def build_agent_policy(namespace: str, settings: Settings) -> dict[str, Any]:
    """The NetworkPolicy of agent Pods in ``namespace``."""
    dns = _json_list("agent_dns_peers", settings.agent_dns_peers, DEFAULT_DNS_PEERS)
    extra = _json_list("agent_extra_egress", settings.agent_extra_egress, [])
    egress: list[dict[str, Any]] = [
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.namespace}},
                 "podSelector": {"matchLabels": dict(GATEWAY_SELECTOR)}}],
         "ports": [{"protocol": "TCP", "port": gateway_port(settings)}]},
    ]
    if dns:
        egress.append({"to": dns, "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]})
    egress += extra
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": NAME,
            "namespace": namespace,
            "labels": {keys.NAME: "longshot", keys.COMPONENT: "agent-network-policy",
                       keys.MANAGED_BY: keys.OPERATOR},
            "annotations": {keys.DESCRIPTION: "Agent Pods: no ingress; egress only to longshot-gateway "
                                                        "and DNS (docs/security.md)"},
        },
        "spec": {
            "podSelector": {"matchLabels": dict(AGENT_SELECTOR)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    }


def _pruned(value: Any) -> Any:
    """``value`` without empty lists, maps and nulls (the API server drops ``ingress: []``)."""
    if isinstance(value, dict):
        out = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def ensure(client: kubernetes.client.ApiClient, namespace: str, settings: Settings) -> str:
    """Make the namespace's agent NetworkPolicy what :func:`build_agent_policy` says; returns ``created``,
    ``updated`` or ``unchanged``. Idempotent and safe to call on every build event."""
    api = kube.Core(client)
    where = {"namespace": namespace, "name": NAME}
    wanted: Any = build_agent_policy(namespace, settings)
    try:
        have = api.call("GET", f"{PATH}/{{name}}", where)
    except ApiException as e:
        if e.status != 404:
            raise
        try:
            api.call("POST", PATH, where, body=wanted)
        except ApiException as e2:
            if e2.status != 409:  # created meanwhile by another replica
                raise
            return "unchanged"
        log.info("created NetworkPolicy %s/%s", namespace, NAME)
        return "created"
    if (_pruned(have.get("spec")) == _pruned(wanted["spec"])
            and (have["metadata"].get("labels") or {}) == wanted["metadata"]["labels"]):
        return "unchanged"
    wanted["metadata"]["resourceVersion"] = have["metadata"]["resourceVersion"]
    api.call("PUT", f"{PATH}/{{name}}", where, body=wanted)
    log.info("updated NetworkPolicy %s/%s", namespace, NAME)
    return "updated"
