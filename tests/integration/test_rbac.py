"""The chart's RBAC on the real API server: what the operator's ServiceAccount may do in each mode.

The rendered RBAC objects are applied for real and ``kubectl auth can-i --as=<the ServiceAccount>`` asks the
API server's authorizer. With ``watchNamespaces`` everything is a Role in those namespaces; cluster-wide,
Secrets are readable only where granted (no cluster-wide Secret read unless ``rbac.secrets.clusterWide``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from chart_render import of_kinds, render

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

        def can(verb: str, resource: str, ns: str | None = None) -> bool:
            where = [f"--namespace={ns}"] if ns else ["--all-namespaces"]
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
               ("patch", "buildrequests.longshot.dev/status", watched), ("create", "mergejobs.longshot.dev", watched),
               ("get", "secrets/git-token", watched), ("create", "events", watched),
               ("watch", "customresourcedefinitions.apiextensions.k8s.io", None), ("list", "namespaces", None),
               ("get", "configmaps/longshot-killswitch", namespace)]
    denied = [("create", "pods", other), ("get", "secrets/git-token", other), ("list", "pods", None),
              ("get", "secrets", None), ("list", "secrets", watched), ("watch", "agenttasks.longshot.dev", None),
              ("create", "pods", namespace), ("get", "secrets/git-token", namespace), ("patch", "pods", watched)]
    assert [a for a in allowed if not can(*a)] == []
    assert [d for d in denied if can(*d)] == []


def test_cluster_wide_mode_reads_secrets_only_where_granted(
        install: Any, kubectl: Any, control_plane: Any, namespace: str, extra_namespaces: tuple[str, str]) -> None:
    team, other = extra_namespaces
    assert "secrets" not in json.dumps(cluster_rules(render(control_plane, namespace)))

    can = install(f"rbac.secrets.namespaces={{{team}}}")
    assert [a for a in [("create", "pods", other), ("watch", "pods", None), ("list", "agenttasks.longshot.dev", None),
                        ("get", "secrets/git-token", team)] if not can(*a)] == []
    assert [d for d in [("get", "secrets/git-token", other), ("get", "secrets", None), ("list", "secrets", team),
                        ("get", "secrets/git-token", namespace), ("list", "namespaces", None)] if can(*d)] == []

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
