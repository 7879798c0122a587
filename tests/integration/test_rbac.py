"""The chart's RBAC on the real API server: what the operator's ServiceAccount may do in each mode.

The rendered RBAC objects are applied for real and ``kubectl auth can-i --as=<the ServiceAccount>`` asks the
API server's authorizer. With ``watchNamespaces`` everything is a Role in those namespaces; cluster-wide,
Secrets are readable only where granted (no cluster-wide Secret read unless ``rbac.secrets.clusterWide``), and
the ``-writes`` admission policy holds the two ServiceAccounts' writes to Longshot's own objects (the last test
runs every write the code does through it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import kubernetes
import pytest
import yaml
from chart_render import of_kinds, render
from k8s_builders import build as build_obj
from k8s_builders import create
from k8s_builders import schedule as schedule_obj

from longshot.api import objects
from longshot.config import Settings
from longshot.controllers import schedules as schedulesc
from longshot.core import ledger, schedules
from longshot.gateway import cluster as gcluster
from longshot.runtime import kube, netpol, pods
from longshot_testing import wait_for

RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


@pytest.fixture
def extra_namespaces(kubectl: Any, namespace: str) -> Iterator[tuple[str, str]]:
    """Two more namespaces: one the operator watches, one it does not."""
    names = (f"{namespace[:50]}-a", f"{namespace[:50]}-z")
    for n in names:
        kubectl("create", "namespace", n)
    yield names
    for n in names:
        kubectl("delete", "namespace", n, "--wait=false", check=False)


@pytest.fixture
def install(kubectl: Any, control_plane: Any, namespace: str) -> Iterator[Callable[..., Callable[..., bool]]]:
    """``install(*sets)`` applies the chart's RBAC objects; returns ``can(verb, resource, ns)`` for its SA."""
    applied: list[list[dict[str, Any]]] = []
    release = f"rbac-{namespace[-6:]}"

    def apply(*sets: str) -> Callable[..., bool]:
        docs = of_kinds(render(control_plane, namespace, *sets, release=release), *RBAC_KINDS)
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        applied.append(docs)
        sa = f"system:serviceaccount:{namespace}:{release}-longshot"

        def can(verb: str, resource: str, ns: str | None = None, subresource: str = "") -> bool:
            where = [f"--namespace={ns}"] if ns else ["--all-namespaces"]
            where += [f"--subresource={subresource}"] if subresource else []
            return bool(kubectl("auth", "can-i", verb, resource, f"--as={sa}", *where, check=False).stdout.strip()
                        == "yes")

        return can

    yield apply
    for docs in applied:
        kubectl("delete", "-f", "-", "--wait=false", "--ignore-not-found", input=yaml.safe_dump_all(docs),
                check=False)


def cluster_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rules of the ClusterRoles that a ClusterRoleBinding grants cluster-wide."""
    bound = {d["roleRef"]["name"] for d in of_kinds(docs, "ClusterRoleBinding")}
    return [r for d in of_kinds(docs, "ClusterRole") if d["metadata"]["name"] in bound for r in d["rules"]]


def test_with_watch_namespaces_everything_is_a_role_in_those_namespaces(
        install: Any, control_plane: Any, namespace: str, extra_namespaces: tuple[str, str]) -> None:
    watched, other = extra_namespaces
    docs = render(control_plane, namespace, f"operator.watchNamespaces={{{watched}}}")
    cluster_wide = json.dumps(cluster_rules(docs))
    assert "secrets" not in cluster_wide and "pods" not in cluster_wide and "longshot.dev" not in cluster_wide
    assert [(d["kind"], d["metadata"]["namespace"]) for d in of_kinds(docs, "Role", "RoleBinding")
            if d["metadata"]["name"].endswith("-builds")] == [("Role", watched), ("RoleBinding", watched)]

    can = install(f"operator.watchNamespaces={{{watched}}}")
    allowed = [("create", "pods", watched), ("delete", "pods", watched), ("watch", "agenttasks.longshot.dev", watched),
               ("patch", "pods", watched),  # the claim of a warm sandbox (docs/warm-pools.md)
               ("patch", "buildrequests.longshot.dev/status", watched), ("create", "mergejobs.longshot.dev", watched),
               ("get", "secrets/git-token", watched), ("create", "events", watched),
               ("watch", "customresourcedefinitions.apiextensions.k8s.io", None), ("list", "namespaces", None),
               ("get", "configmaps/longshot-killswitch", namespace),
               # BuildSchedules: watched, their status written, their children owned (docs/schedules.md)
               ("watch", "buildschedules.longshot.dev", watched),
               ("patch", "buildschedules.longshot.dev", watched, "status"),
               ("update", "buildschedules.longshot.dev", watched, "finalizers")]
    denied = [("create", "pods", other), ("get", "secrets/git-token", other), ("list", "pods", None),
              # the operator never writes a schedule itself: its authors do
              ("create", "buildschedules.longshot.dev", watched), ("patch", "buildschedules.longshot.dev", watched),
              ("delete", "buildschedules.longshot.dev", watched), ("watch", "buildschedules.longshot.dev", other),
              ("update", "buildschedules.longshot.dev", watched, "status"),
              ("list", "resourcequotas", None),
              ("get", "secrets", None), ("list", "secrets", watched), ("watch", "agenttasks.longshot.dev", None),
              ("create", "pods", namespace), ("get", "secrets/git-token", namespace), ("patch", "pods", other)]
    assert [a for a in allowed if not can(*a)] == []
    assert [d for d in denied if can(*d)] == []


def test_cluster_wide_mode_reads_secrets_only_where_granted(
        install: Any, kubectl: Any, control_plane: Any, namespace: str, extra_namespaces: tuple[str, str]) -> None:
    team, other = extra_namespaces
    assert "secrets" not in json.dumps(cluster_rules(render(control_plane, namespace)))

    can = install(f"rbac.secrets.namespaces={{{team}}}")
    assert [a for a in [("create", "pods", other), ("watch", "pods", None), ("list", "agenttasks.longshot.dev", None),
                        ("get", "secrets/git-token", team), ("list", "nodes", None),
                        ("list", "resourcequotas", None), ("get", "runtimeclasses.node.k8s.io/gvisor", None)]
            if not can(*a)] == []
    assert [d for d in [("get", "secrets/git-token", other), ("get", "secrets", None), ("list", "secrets", team),
                        ("get", "secrets/git-token", namespace), ("list", "namespaces", None),
                        ("watch", "nodes", None), ("get", "resourcequotas", team),
                        ("update", "resourcequotas", team), ("list", "runtimeclasses.node.k8s.io", None)]
            if can(*d)] == []

    # the documented opt-in of another namespace: its admin binds the secret-reader ClusterRole
    release = f"rbac-{namespace[-6:]}"
    kubectl("-n", other, "create", "rolebinding", "longshot-secret-reader",
            f"--clusterrole={release}-longshot-secret-reader", f"--serviceaccount={namespace}:{release}-longshot")
    assert can("get", "secrets/git-token", other)
    assert not can("list", "secrets", other)


def test_default_grants_secrets_in_the_release_namespace_and_cluster_wide_only_when_asked(
        install: Any, namespace: str, extra_namespaces: tuple[str, str]) -> None:
    team, _ = extra_namespaces
    can = install()
    assert can("get", "secrets/git-token", namespace) and not can("get", "secrets/git-token", team)
    can = install("rbac.secrets.clusterWide=true")
    assert can("get", "secrets/git-token", team) and can("get", "secrets", None)
    assert not can("list", "secrets", team) and not can("watch", "secrets", None)


def test_cluster_wide_every_write_the_code_does_passes_rbac_and_the_least_privilege_policy(
        kubectl: Any, control_plane: Any, namespace: str, core_v1: Any, custom: Any) -> None:
    """The operator's and the gateway's own code, as their ServiceAccounts (impersonated), under the chart's
    cluster-wide RBAC and its `-writes` policy: agent Pods, ledger entries and the agent NetworkPolicy are
    created, changed and deleted as in a build; what the policy refuses is in hostile/test_hostile_privilege.py."""
    system = f"{namespace[:50]}-sys"
    kubectl("create", "namespace", system)
    release = f"rw-{namespace[-6:]}"
    docs = render(control_plane, system, release=release)
    applied = of_kinds(docs, *RBAC_KINDS) + [
        d for d in of_kinds(docs, "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
        if d["metadata"]["name"].endswith("-writes")]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(applied))

    def client_as(account: str) -> kubernetes.client.ApiClient:
        client = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig))
        client.set_default_header("Impersonate-User", f"system:serviceaccount:{system}:{account}")
        return client

    try:
        operator_client = client_as(f"{release}-longshot")
        operator, gateway = kube.Kube(operator_client), gcluster.Cluster(client_as(f"{release}-longshot-gateway"))
        probe = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "p", "namespace": system}})
        wait_for(lambda: "protected namespaces" in kubectl(
            "create", "--dry-run=server", f"--as=system:serviceaccount:{system}:{release}-longshot", "-f", "-",
            input=probe, check=False).stderr, timeout=30, what="the -writes policy to take effect")

        # the gateway's watch cache (gateway.watchcache) lists and watches Pods, AgentTasks and BuildRequests
        assert gateway.watch().wait_synced(30), "the gateway's watch cache did not sync under the chart's RBAC"
        gateway.stop_watching()
        b = create(custom, namespace, build_obj("b1"))
        t = create(custom, namespace, {"apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
                                       "metadata": {"name": "b1-t1", "labels": {"longshot.dev/build": "b1"}},
                                       "spec": {"buildRef": {"name": "b1"}, "description": "d", "role": "worker"}})
        settings = Settings(identity="test", namespace=system, gateway_url="http://gw:8080")
        # agent Pods: create, delete one, delete an attempt's by their labels
        for attempt in (1, 2):
            assert operator.create_pod(pods.build_agent_pod(t, b, settings, attempt)) is not None
        operator.delete_pod(namespace, pods.pod_name("b1-t1", 1))
        operator.delete_pods(namespace, "longshot.dev/task=b1-t1,longshot.dev/attempt=2")
        # a warm sandbox (docs/warm-pools.md): created, claimed by one fenced patch, one more deleted fenced
        warm = operator.create_pod(pods.build_warm_pod(b, settings, "b1-warm-1", 300))
        assert warm is not None
        cold = pods.build_agent_pod(t, b, settings, 3)
        assert operator.claim_pod(namespace, "b1-warm-1", pods.claim_patch(
            cold, warm["metadata"]["resourceVersion"], 1000)) is not None
        spare = operator.create_pod(pods.build_warm_pod(b, settings, "b1-warm-2", 300))
        assert spare is not None and operator.delete_pod_at(namespace, "b1-warm-2",
                                                            spare["metadata"]["resourceVersion"])
        operator.delete_pod(namespace, "b1-warm-1")
        # ledger entries: the gateway's transcript (create, then patch), the operator's result, retention
        for attempt in (1, 2):
            entry = ledger.manifest(namespace=namespace, pod=pods.pod_name("b1-t1", attempt), task="b1-t1",
                                    task_uid=t["metadata"]["uid"], build="b1", attempt=attempt, role="worker")
            gateway.put_configmap({**entry, "data": {"transcript": "one"}})
            gateway.put_configmap({**entry, "data": {"transcript": "two"}})
            operator.put_configmap({**entry, "data": {ledger.RESULT_KEY: "{}"}})
        assert len(operator.list_configmap_metadata(namespace, ledger.LABEL)) == 2
        operator.delete_configmap(namespace, ledger.entry_name(pods.pod_name("b1-t1", 1)))
        operator.delete_configmaps(namespace, f"{ledger.LABEL},longshot.dev/attempt=2")
        assert operator.list_configmap_metadata(namespace, ledger.LABEL) == []
        # the agent NetworkPolicy: created, then updated when the settings change
        assert netpol.ensure(operator_client, namespace, settings) == "created"
        changed = Settings(identity="test", namespace=system, gateway_url="http://gw:8080",
                           agent_extra_egress='[{"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]')
        assert netpol.ensure(operator_client, namespace, changed) == "updated"
        wait_for(lambda: not core_v1.list_namespaced_pod(namespace, label_selector="longshot.dev/task=b1-t1").items,
                 timeout=30, what="the agent Pods to be deleted")
        # a BuildSchedule's controller (controllers/schedules.py): a child owned by the schedule (blockOwnerDeletion),
        # the schedule's status, a replaced child suspended, a child beyond the history limits deleted
        sched = objects.parse(create(custom, namespace, schedule_obj("nightly")), objects.BuildSchedule)
        at = datetime(2026, 6, 1, tzinfo=UTC)
        child = schedules.child_name("nightly", at)
        assert operator.create(schedulesc.manifest(sched, schedules.Create(child, at))) is not None
        status = {"lastScheduleTime": "2026-06-01T00:00:00Z"}
        assert operator.patch_status("BuildSchedule", namespace, "nightly", status,
                                     resource_version=sched.metadata.resource_version) is not None
        assert operator.patch("BuildRequest", namespace, child, {"spec": {"suspend": True}}) is not None
        operator.delete("BuildRequest", namespace, child)
    finally:
        kubectl("delete", "-f", "-", "--wait=false", "--ignore-not-found", input=yaml.safe_dump_all(applied),
                check=False)
        kubectl("delete", "namespace", system, "--wait=false", check=False)
