"""Two operator replicas, one Lease: only the leader merges; kill it mid-queue and the other finishes the
build with no commit merged twice and none lost."""

from __future__ import annotations

import os
import signal
from datetime import datetime

import kubernetes
import sample_repo
from k8s_builders import condition, dump, get, list_of
from test_delivery import delivery_build, script_configmap

from longshot.testing import wait_for

N = 4


def holder(api_client, namespace):
    try:
        lease = kubernetes.client.CoordinationV1Api(api_client).read_namespaced_lease("longshot-operator", namespace)
    except kubernetes.client.ApiException:
        return None
    return lease.spec


def test_leader_killed_mid_queue_the_other_replica_finishes(operator_process, kubelet, api_client, core_v1,
                                                            custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    tasks = [{"name": f"f{i}", "description": f"file {i}", "scope": [f"f{i}.txt"]} for i in range(N)]
    script_configmap(core_v1, namespace, {
        "roles": {"planner": [{"finish": {"summary": "files", "tasks": tasks}}]},
        "tasks": {f"f{i}": [{"write": {"path": f"f{i}.txt", "content": f"{i}\n"}}, {"finish": f"file {i}"}]
                  for i in range(N)}})
    replicas = {"replica-a": operator_process("replica-a"), "replica-b": operator_process("replica-b")}
    lease = wait_for(lambda: (lambda s: s if s and s.holder_identity else None)(holder(api_client, namespace)),
                     timeout=30, what="a leader")
    first = lease.holder_identity
    create_build = delivery_build(url, qualityGate={"profile": "minimal", "testCommand": "true"})
    custom.create_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests", create_build)

    # the follower stays a follower while the leader lives: it never writes statuses or merges
    wait_for(lambda: any((j.get("status") or {}).get("phase") == "Merged"
                         for j in list_of(custom, namespace, "mergejobs")), timeout=120, what="a first merge")
    assert holder(api_client, namespace).holder_identity == first
    killed_at_renew = holder(api_client, namespace).renew_time
    os.killpg(replicas[first].pid, signal.SIGKILL)
    replicas[first].wait()

    other = next(r for r in replicas if r != first)
    lease = wait_for(lambda: (lambda s: s if s and s.holder_identity == other else None)(
        holder(api_client, namespace)), timeout=30, what=f"{other} to take the Lease")
    # taken over after the dead leader's Lease expired, within one lease duration plus a renew period
    gap = (lease.acquire_time - killed_at_renew).total_seconds()
    assert lease.lease_duration_seconds <= gap + 1 and gap <= lease.lease_duration_seconds + 3, gap
    assert lease.lease_transitions >= 1

    def done():
        b = get(custom, namespace, "buildrequests", "demo")
        return b if (condition(b, "Finalized") or {}).get("status") == "True" else None

    try:
        wait_for(done, timeout=180, what="Finalized=True after the fail-over")
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None
    # every branch merged exactly once, none lost
    merged = [m.split("Longshot-Merge: ")[1].split()[0] for m in sample_repo.log(url) if "Longshot-Merge:" in m]
    assert sorted(merged) == sorted(f"{namespace}/demo-f{i}" for i in range(N))
    for i in range(N):
        assert sample_repo.show(url, f"f{i}.txt") == f"{i}\n"
    assert isinstance(lease.acquire_time, datetime)
