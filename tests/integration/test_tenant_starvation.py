"""Tenants in their own lanes, on the real manager (issue 51): one tenant's slow repository does not starve another.

The operator runs in-process with kopf's runner (its watches are the event pump, each kind has the workers it has in
production) and watches two namespaces. Tenant A creates 8 (then 16) builds whose configuration check takes 8 s: the
preflight's ``git ls-remote`` of A's repository, served by a real git smart-HTTP server that answers its ref
advertisement 8 s late. While A's checks hold BuildRequest workers, tenant B, a tenant already (an earlier build of
B's runs, so its watch is up and its repository's shard held), creates one build: its planner's agent Pod (a build's
first Pod; no kubelet runs here, the Pod object is what the operator creates) must appear before the first of A's
checks is answered (it takes about 1 s). Without the work queues' turns between namespaces, A's checks held every
BuildRequest worker and B waited for them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import sample_repo
from git_servers import Git, SlowGitHTTPServer, slow_git_http
from k8s_builders import build, create

from longshot_testing import wait_for

SLOW_SECONDS = 8.0
"""How late A's repository answers ``git ls-remote`` (its ref advertisement): B's first Pod must come before the
first answer, so this is the margin a loaded machine has (B's Pod takes about 1 s alone, 2.6 s in the loaded tier)."""
MANAGED = "app.kubernetes.io/managed-by=longshot-operator"


@pytest.fixture
def slow_repository(tmp_path: Path) -> Iterator[tuple[SlowGitHTTPServer, str]]:
    sample_repo.make(tmp_path / "slow")
    with slow_git_http(tmp_path / "slow" / "server", git=Git({}), delay=SLOW_SECONDS) as server:
        yield server, server.url("calc")


@pytest.fixture
def tenant_b(another_namespace) -> str:  # type: ignore[no-untyped-def]
    """A second tenant's namespace (Pod Security ``restricted``, as the ``namespace`` fixture's)."""
    return str(another_namespace("t-tenant-b"))


@pytest.fixture
def two_tenant_operator(namespace: str, tenant_b: str, operator_watching) -> object:  # type: ignore[no-untyped-def]
    """The operator, in-process with kopf's runner, watching tenant A's namespace (``namespace``) and B's."""
    return operator_watching(namespace, tenant_b)


def _agent_pods(core_v1: kubernetes.client.CoreV1Api, namespace: str) -> list[str]:
    return [p.metadata.name for p in core_v1.list_namespaced_pod(namespace, label_selector=MANAGED).items]


@pytest.mark.parametrize("slow_builds", [8, 16])
def test_a_tenants_slow_repository_does_not_delay_another_tenants_first_pod(
        two_tenant_operator, core_v1, custom, namespace, tenant_b, slow_repository, slow_builds):
    server, slow_url = slow_repository
    # B is a tenant already: its watch is up and its repository's shard held (a new repository's first build waits
    # for its shard Lease, which is not what this test is about)
    create(custom, tenant_b, build("b-before"))
    wait_for(lambda: _agent_pods(core_v1, tenant_b), timeout=60, what="tenant B's earlier build's Pod")
    for i in range(slow_builds):
        create(custom, namespace, build(f"a{i}", repository__url=slow_url))
    # A's configuration checks are in flight (at least as many as a tenant may hold), and more are waiting
    wait_for(lambda: server.in_flight >= 4, timeout=60, what="tenant A's configuration checks to be in flight",
             interval=0.02)
    started = time.monotonic()
    create(custom, tenant_b, build("b0"))
    wait_for(lambda: [p for p in _agent_pods(core_v1, tenant_b) if p.startswith("b0-")], timeout=60,
             what="the first agent Pod of tenant B's new build", interval=0.02)
    took = time.monotonic() - started
    print(f"tenant B's first agent Pod after {took:.2f}s ({slow_builds} slow builds of tenant A; "
          f"{server.seen} of A's checks started by then)")
    with server.lock:
        busy, answered = server.in_flight, server.answered
    # B's Pod came before the first of A's checks was answered: it waited for none of them (before the lanes, B's
    # build waited for a BuildRequest worker, and the first one free was one whose check of A's had been answered).
    # An order of events, not a bound on seconds: a loaded machine slows both sides alike.
    assert answered == 0, f"tenant B's first agent Pod came after {answered} of A's checks ({took:.2f}s)"
    assert busy > 0  # A's checks were still going on when B's Pod appeared: the test measured what it says
