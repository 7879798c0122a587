"""Several operator replicas, as real processes: work is sharded by repository, each shard has one holder,
a holder that dies or loses its footing (alive, but its Lease writes refused) hands over, and nothing merges
twice or gets lost.

Which replica merged is read from the merge commits: each replica commits as its own identity
(``LONGSHOT_GIT_AUTHOR_NAME`` is set per replica by the ``operator_process`` fixture).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import kubernetes
import sample_repo
import yaml
from k8s_builders import condition, dump, get
from test_delivery import delivery_build, script_configmap

from longshot.core import sharding
from longshot.runtime import leader
from longshot.vcs import workspace
from longshot_testing import wait_for

N = 4


def lease(api_client, namespace, name):
    try:
        return kubernetes.client.CoordinationV1Api(api_client).read_namespaced_lease(name, namespace).spec
    except kubernetes.client.ApiException:
        return None


def shard_holder(api_client, namespace, url):
    spec = lease(api_client, namespace, leader.lease_name_for(namespace, None, url))
    return spec.holder_identity if spec is not None else None


def files_script(prefix: str = "f", n: int = N):
    tasks = [{"name": f"{prefix}{i}", "description": f"file {i}", "scope": [f"{prefix}{i}.txt"]} for i in range(n)]
    return {"roles": {"planner": [{"finish": {"summary": "files", "tasks": tasks}}]},
            "tasks": {f"{prefix}{i}": [{"write": {"path": f"{prefix}{i}.txt", "content": f"{i}\n"}},
                                       {"finish": f"file {i}"}] for i in range(n)}}


def merges_by(url: str) -> list[tuple[str, str]]:
    """(committer, MergeJob) of every merge commit on main, oldest first."""
    out = subprocess.run(["git", "--git-dir", url.removeprefix("file://"), "log", "--reverse",
                          "--format=%cn%x00%(trailers:key=Longshot-Merge,valueonly,separator=)%x00", "main"],
                         check=True, capture_output=True, text=True).stdout.split("\0")
    pairs = list(zip(out[0::2], out[1::2], strict=False))
    return [(c.strip(), m.strip()) for c, m in pairs if m.strip()]


def finalized_true(custom, namespace, name="demo", timeout=180):
    def done():
        b = get(custom, namespace, "buildrequests", name)
        return b if (condition(b, "Finalized") or {}).get("status") == "True" else None

    try:
        return wait_for(done, timeout=timeout, what=f"{name}: Finalized=True")
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None


def identities_for(shard_key: str) -> tuple[str, str]:
    """Two replica names such that the first one is assigned the shard (both replicas live)."""
    for i in range(100):
        a, b = f"replica-a{i}", f"replica-b{i}"
        if sharding.assign([shard_key], [a, b])[shard_key] == a:
            return a, b
    raise AssertionError("no pair of identities found")


def test_holder_killed_mid_queue_the_other_replica_finishes(operator_process, kubelet, api_client, core_v1,
                                                            custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, files_script())
    replicas = {name: operator_process(name) for name in ("replica-a", "replica-b")}
    gate = {"profile": "minimal", "testCommand": "true"}
    custom.create_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests",
                                           delivery_build(url, qualityGate=gate))
    wait_for(lambda: shard_holder(api_client, namespace, url), timeout=30, what="a shard holder")
    wait_for(lambda: merges_by(url), timeout=120, what="a first merge")
    # the holder now: as the second replica joins, the shard may move once to spread the shards (a rebalance)
    held = lease(api_client, namespace, leader.lease_name_for(namespace, None, url))
    first, killed_at = held.holder_identity, held.renew_time
    os.killpg(replicas[first].pid, signal.SIGKILL)
    replicas[first].wait()

    other = next(r for r in replicas if r != first)
    wait_for(lambda: shard_holder(api_client, namespace, url) == other, timeout=30, what=f"{other} to take over")
    spec = lease(api_client, namespace, leader.lease_name_for(namespace, None, url))
    gap = (spec.acquire_time - killed_at).total_seconds()
    assert spec.lease_duration_seconds - 1 <= gap <= spec.lease_duration_seconds + 4, gap
    finalized_true(custom, namespace)
    merged = [m for _, m in merges_by(url)]
    assert sorted(merged) == sorted(f"{namespace}/demo-f{i}" for i in range(N))  # each exactly once
    for i in range(N):
        assert sample_repo.show(url, f"f{i}.txt") == f"{i}\n"
    assert {c for c, _ in merges_by(url)} <= {first, other}


def block_lease_writes_of(kubectl, namespace: str, identity: str) -> None:
    """A ValidatingAdmissionPolicy on the real API server refuses every Lease write that names ``identity`` as
    holder: that replica stays alive but cannot renew (a partition from the point of view of its Leases)."""
    name = f"block-{namespace}"[:63]
    docs = [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name},
         "spec": {"failurePolicy": "Fail",
                  "matchConstraints": {"resourceRules": [{"apiGroups": ["coordination.k8s.io"],
                                                          "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                                                          "resources": ["leases"]}]},
                  "validations": [{"expression": f"!has(object.spec.holderIdentity) || "
                                                 f"object.spec.holderIdentity != '{identity}'",
                                   "message": f"{identity} is cut off"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": name},
         "spec": {"policyName": name, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {"matchLabels": {
                      "kubernetes.io/metadata.name": namespace}}}}},
    ]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def test_a_replica_that_loses_its_footing_but_stays_alive_hands_over(operator_process, kubelet, api_client,
                                                                     core_v1, custom, namespace, tmp_path, kubectl):
    """Issue 9's split brain: replica A keeps running but its Lease renewals are refused; B takes the shard
    within one lease duration (plus a poll), merges the rest, and nothing merges twice."""
    url = sample_repo.make(tmp_path)
    a, b = identities_for(workspace.tenant_key(namespace, None, url))
    script_configmap(core_v1, namespace, files_script(n=6))
    pa = operator_process(a)
    custom.create_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests",
                                           delivery_build(url, workers={"max": 2}, merge={"window": 1},
                                                          qualityGate={"profile": "minimal", "testCommand": "true"}))
    wait_for(lambda: shard_holder(api_client, namespace, url) == a, timeout=30, what=f"{a} to hold the shard")
    pb = operator_process(b)
    wait_for(lambda: merges_by(url), timeout=120, what="a first merge by A")
    block_lease_writes_of(kubectl, namespace, a)
    blocked = time.monotonic()
    wait_for(lambda: shard_holder(api_client, namespace, url) == b, timeout=30, what=f"{b} to take the shard")
    took = time.monotonic() - blocked
    duration = lease(api_client, namespace, leader.lease_name_for(namespace, None, url)).lease_duration_seconds
    assert took <= duration + 4, took
    assert pa.poll() is None and pb.poll() is None  # A is alive all along
    finalized_true(custom, namespace, timeout=240)
    merges = merges_by(url)
    assert sorted(m for _, m in merges) == sorted(f"{namespace}/demo-f{i}" for i in range(6))  # each once
    committers = [c for c, _ in merges]
    assert b in committers  # B merged after the hand-over
    last_a = max((i for i, c in enumerate(committers) if c == a), default=-1)
    first_b = committers.index(b)
    assert last_a < first_b  # once B took over, A merged nothing more


def test_two_replicas_four_repositories_both_merge_and_a_death_hands_over(operator_process, kubelet, api_client,
                                                                         core_v1, custom, namespace, tmp_path):
    """Issue 13: each repository's queue and builds run on the holder of its shard Lease; the shards are spread
    over the live replicas; when one replica dies the other takes its shards; nothing lost or merged twice."""
    urls = [sample_repo.make(tmp_path / f"r{i}") for i in range(4)]
    script_configmap(core_v1, namespace, files_script(n=3))
    replicas = {n: operator_process(n) for n in ("replica-a", "replica-b")}
    wait_for(lambda: len([s for s in list_of_leases(api_client, namespace) if s.startswith("longshot-member-")]) == 2,
             timeout=30, what="two live members")
    for i, url in enumerate(urls):
        b = delivery_build(url, qualityGate={"profile": "minimal", "testCommand": "true"})
        b["metadata"]["name"] = f"demo{i}"
        custom.create_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests", b)
    # the shards are spread over the live replicas: two each, once a shard first taken by the replica that saw its
    # build first is handed over to the one it is assigned to (a moment in which one replica holds three)
    holders = wait_for(lambda: (lambda hs: hs if all(hs) and hs.count("replica-a") == 2 else None)(
        [shard_holder(api_client, namespace, u) for u in urls]), timeout=60, what="every shard held, two each")
    assert sorted(holders) == ["replica-a", "replica-a", "replica-b", "replica-b"], holders
    wait_for(lambda: all(merges_by(u) for u in urls), timeout=180, what="a merge in every repository")
    assert {c for u in urls for c, _ in merges_by(u)} == {"replica-a", "replica-b"}  # both replicas merged
    os.killpg(replicas["replica-a"].pid, signal.SIGKILL)
    replicas["replica-a"].wait()
    wait_for(lambda: all(shard_holder(api_client, namespace, u) == "replica-b" for u in urls), timeout=40,
             what="replica-b holding every shard")
    for i, url in enumerate(urls):
        finalized_true(custom, namespace, f"demo{i}", timeout=240)
        assert sorted(m for _, m in merges_by(url)) == sorted(f"{namespace}/demo{i}-f{j}" for j in range(3))


def list_of_leases(api_client, namespace):
    return [x.metadata.name for x in kubernetes.client.CoordinationV1Api(api_client).list_namespaced_lease(
        namespace).items]


