"""Two operator replicas, and the Pod of the replica that holds the build's repository shard deleted mid-build:
the other replica takes the shard Lease and the build still finishes, every branch merged exactly once and
nothing lost."""

from __future__ import annotations

import subprocess
from collections import Counter
from typing import Any

import pytest

from longshot.runtime import leader as leadermod

from .conftest import SYSTEM_NS, apply, build_request, install_chart, kget, operator_pods, script_configmap, wait_for

# the first test also waits for the session cluster (cold: image builds, several minutes)
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

TASKS = ("alpha", "beta", "gamma", "delta")
# gamma and delta start only once alpha and beta succeeded: there is work left when the first merge lands
DEPENDS = {"gamma": ["alpha"], "delta": ["beta"]}


def script() -> str:
    lines = ["roles:", "  planner:", "    - finish:", "        summary: four tasks", "        tasks:"]
    for t in TASKS:
        deps = f", depends_on: {DEPENDS[t]}" if t in DEPENDS else ""
        lines.append(f'          - {{name: {t}, description: "Add {t}.txt", scope: [{t}.txt]{deps}}}')
    lines += ["  reviewer:", "    - finish: {summary: fine, verdict: approved}", "tasks:"]
    for t in TASKS:
        lines += [f"  {t}:", f'    - write: {{path: {t}.txt, content: "{t}\\n"}}',
                  f'    - finish: {{summary: "Add {t}"}}']
    lines += ["steps:", "  - finish: {summary: nothing to do}", ""]
    return "\n".join(lines)


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


def lease_holder(kubectl, namespace: str, repository: str) -> str:  # type: ignore[no-untyped-def]
    """The replica holding the shard Lease of this namespace's use of the repository with its credentials Secret
    (``git-token``, as ``build_request`` names it): the one that runs its builds and merge queue."""
    lease = kget(kubectl, "-n", SYSTEM_NS, "lease", leadermod.lease_name_for(namespace, "git-token", repository)) or {}
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def ready_operator_pods(kubectl, n: int) -> list[str] | None:  # type: ignore[no-untyped-def]
    pods = operator_pods(kubectl)
    ready = [p["metadata"]["name"] for p in pods
             if all(c.get("ready") for c in (p.get("status") or {}).get("containerStatuses") or [{}])]
    return ready if len(ready) >= n else None


@pytest.fixture
def two_replicas(cluster, kubectl, operator):  # type: ignore[no-untyped-def]
    """The chart upgraded to ``operator.replicas=2``; back to one replica (and only one Pod) afterwards."""
    install_chart(cluster, replicas=2)
    wait_for(lambda: ready_operator_pods(kubectl, 2), 180, "two ready operator replicas")
    yield
    install_chart(cluster, replicas=1)

    def one_pod() -> bool:
        pods = (kget(kubectl, "-n", SYSTEM_NS, "pods", "-l", "app.kubernetes.io/component=operator") or {})
        return len(pods.get("items", [])) == 1 and bool(ready_operator_pods(kubectl, 1))

    wait_for(one_pod, 180, "the operator back to one ready Pod")


def test_leader_pod_deleted_mid_build(two_replicas, cluster, kubectl, namespace, git_repo) -> None:  # type: ignore[no-untyped-def]
    apply(kubectl, namespace, script_configmap("script", script()),
          build_request("failover", git_repo, script="script", merge={"strategy": "merge-commit"}))

    def mergejobs() -> list[dict[str, Any]]:
        return list((kget(kubectl, "-n", namespace, "mergejobs") or {}).get("items", []))

    def merged(jobs: list[dict[str, Any]]) -> list[str]:
        return [j["metadata"]["name"] for j in jobs if condition(j, "Merged").get("status") == "True"]

    first = wait_for(lambda: merged(mergejobs()), 300, "the first MergeJob to be merged", interval=0.5)
    leader = lease_holder(kubectl, namespace, git_repo)
    pods = [p["metadata"]["name"] for p in operator_pods(kubectl)]
    assert leader in pods, (leader, pods)
    # the build is mid-way: some work is not merged yet when the leader goes
    assert len(merged(mergejobs())) < len(TASKS), "every task was merged before the leader could be deleted"

    def new_leader() -> str | None:
        holder = lease_holder(kubectl, namespace, git_repo)
        return holder if holder and holder != leader else None

    # The Deployment replaces the deleted Pod at once, and that new Pod campaigns too: it could win the
    # released Lease before the standby's next poll. Cordoning the node keeps the replacement Pending, so the
    # only candidate is the replica that was already running; uncordoned as soon as the Lease moved.
    nodes = [n["metadata"]["name"] for n in (kget(kubectl, "nodes") or {}).get("items", [])]
    for node in nodes:
        kubectl("cordon", node)
    try:
        kubectl("-n", SYSTEM_NS, "delete", "pod", leader, "--wait=false")
        successor = wait_for(new_leader, 120, f"another replica to take the shard Lease of {git_repo} from {leader}")
    finally:
        for node in nodes:
            kubectl("uncordon", node)
    assert successor in pods, (successor, pods)  # the standby replica

    def finalized() -> dict[str, Any] | None:
        c = condition(kget(kubectl, "-n", namespace, "br", "failover"), "Finalized")
        if c.get("status") == "True" or (c.get("status") == "False" and c.get("reason") != "InProgress"):
            return c
        return None

    final = wait_for(finalized, 480, "BuildRequest failover to be finalized after the failover", interval=2)
    br = kget(kubectl, "-n", namespace, "br", "failover")
    assert final["status"] == "True", (final, (br or {}).get("status"), first)

    jobs = mergejobs()
    names = sorted(j["metadata"]["name"] for j in jobs)
    assert names == sorted(f"failover-{t}" for t in TASKS), names
    assert sorted(merged(jobs)) == names, [(j["metadata"]["name"], condition(j, "Merged")) for j in jobs]

    # on main in the git server: each MergeJob's merge exactly once (its Longshot-Merge trailer), each task's file
    bare = cluster.git_root / f"{namespace}.git"
    trailers = subprocess.run(
        ["git", "-C", str(bare), "log", "--format=%(trailers:key=Longshot-Merge,valueonly,separator=%x2C)", "main"],
        capture_output=True, text=True, check=True).stdout.split()
    counts = Counter(trailers)
    assert counts == Counter({f"{namespace}/{n}": 1 for n in names}), counts
    files = subprocess.run(["git", "-C", str(bare), "ls-tree", "--name-only", "main"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert {f"{t}.txt" for t in TASKS} <= set(files), files
    for t in TASKS:
        content = subprocess.run(["git", "-C", str(bare), "show", f"main:{t}.txt"], capture_output=True,
                                 text=True, check=True).stdout
        assert content == f"{t}\n", (t, content)
