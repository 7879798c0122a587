"""Agent Pods on a real node: their limits and sandbox as the kernel sees them, and the OOM killer."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from .conftest import apply, build_request, kget, node_sh, script_configmap, wait_for

# the first test also waits for the session cluster (cold: image builds, several minutes)
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

CGROUP = "/sys/fs/cgroup"


def running_container(kubectl, namespace: str, pod: str) -> tuple[dict[str, Any], str]:  # type: ignore[no-untyped-def]
    """The Pod once its agent container runs, and that container's id."""
    def running() -> tuple[dict[str, Any], str] | None:
        p = kget(kubectl, "-n", namespace, "pod", pod)
        statuses = ((p or {}).get("status") or {}).get("containerStatuses") or []
        if statuses and "running" in (statuses[0].get("state") or {}):
            return p, statuses[0]["containerID"].split("://", 1)[1]  # type: ignore[return-value]
        return None

    return wait_for(running, 180, f"Pod {namespace}/{pod} to run its agent container")


class Node:
    """The files of the node the Pod runs on, read where they are: this host (the local cluster's node) or the
    kind node's container."""

    def __init__(self, cluster: Any, pod: dict[str, Any]) -> None:
        self.cluster, self.name = cluster, pod["spec"]["nodeName"]

    def read(self, path: str) -> str:
        return node_sh(self.cluster, self.name, f"cat {shlex.quote(path)}")

    def exists(self, path: str) -> bool:
        return node_sh(self.cluster, self.name, f"test -e {shlex.quote(path)} && echo yes || echo no").strip() == "yes"

    def container_cgroup(self, controller: str, pod: dict[str, Any], container_id: str) -> str:
        """The container's cgroup (v1) under the controller, whatever the kubelet's cgroup driver: cgroupfs
        (``kubepods[/<qos>]/pod<uid>/<id>``, the local cluster) or systemd
        (``…kubepods-<qos>-pod<uid with _>.slice/cri-containerd-<id>.scope``, kind)."""
        uid = pod["metadata"]["uid"]
        found = node_sh(self.cluster, self.name,
                        f"find {CGROUP}/{controller}/ -maxdepth 7 -type d -name '*{container_id}*'").split()
        mine = [p for p in found if uid in p or uid.replace("-", "_") in p]
        assert len(mine) == 1, f"no single cgroup of container {container_id} of Pod {uid}: {found}"
        return mine[0]


def processes(node: Node, cgroup: str) -> dict[int, dict[str, str]]:
    """``/proc/<pid>/status`` of every process in the cgroup, read in one shell on the node. A process that exits
    between the listing and its read (the agent's short git commands) is left out rather than failing the read."""
    out = node_sh(node.cluster, node.name,
                  f"for p in $(cat {shlex.quote(cgroup)}/cgroup.procs); do "
                  f"s=$(cat /proc/$p/status 2>/dev/null) && printf '@@pid %s\\n%s\\n' \"$p\" \"$s\"; done")
    found: dict[int, dict[str, str]] = {}
    for block in out.split("@@pid ")[1:]:
        head, _, body = block.partition("\n")
        found[int(head)] = {k: v.strip() for k, _, v in (line.partition(":") for line in body.splitlines())}
    return found


def test_agent_pod_runs_sandboxed_with_its_limits(operator, cluster, kubectl, namespace, git_repo) -> None:  # type: ignore[no-untyped-def]
    script = ("roles:\n  planner:\n    - run: {command: 'sleep 45', timeout: 60}\n"
              "    - finish: {summary: nothing to plan, done: true}\n")
    apply(kubectl, namespace, script_configmap("script", script),
          build_request("sandbox", git_repo, script="script", memory_limit="300Mi", cpu_limit="500m",
                        finalization=False))

    pod, cid = running_container(kubectl, namespace, "sandbox-planner-a1")
    node = Node(cluster, pod)  # this host, or the kind node's container: where its cgroups and processes are

    # what the API server admitted (the namespace enforces Pod Security "restricted")
    c = pod["spec"]["containers"][0]
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": "300Mi"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["status"]["qosClass"] == "Burstable"

    # what the kernel enforces
    memory = node.container_cgroup("memory", pod, cid)
    assert int(node.read(f"{memory}/memory.limit_in_bytes")) == 300 * 1024 * 1024
    cpu = node.container_cgroup("cpu", pod, cid)
    assert int(node.read(f"{cpu}/cpu.cfs_quota_us")) == 50_000
    assert int(node.read(f"{cpu}/cpu.cfs_period_us")) == 100_000
    # the script's `sleep 45` lives long enough to be read; the agent's own git commands may come and go meanwhile
    def with_sleep() -> dict[int, dict[str, str]] | None:
        ps = processes(node, memory)
        return ps if any(status.get("Name") == "sleep" for status in ps.values()) else None

    procs = wait_for(with_sleep, 60, "the agent's `sleep` in its container's cgroup")
    for pid, status in procs.items():
        assert status["Uid"].split() == ["65532"] * 4, (pid, status["Uid"])
        assert status["Gid"].split() == ["65532"] * 4, (pid, status["Gid"])
        assert status["CapEff"] == "0000000000000000" and status["CapBnd"] == "0000000000000000", pid
        assert status["NoNewPrivs"] == "1", pid
        assert status["Seccomp"] == "2", pid  # filter mode: the RuntimeDefault profile
    # the container's init: pid 1 in its own pid namespace (the last NSpid field)
    init = next(pid for pid, status in procs.items() if status.get("NSpid", "").split()[-1:] == ["1"])
    mountinfo = node.read(f"/proc/{init}/mountinfo").splitlines()
    root_mount = next(line.split() for line in mountinfo if line.split()[4] == "/")
    assert "ro" in root_mount[5].split(","), root_mount
    assert not node.exists(f"/proc/{init}/root/var/run/secrets/kubernetes.io"), "a service-account token"
    workspace = next(line.split() for line in mountinfo if line.split()[4] == "/workspace")
    assert "rw" in workspace[5].split(",")

    # and the attempt still completes normally
    def done() -> dict[str, Any] | None:
        t = kget(kubectl, "-n", namespace, "agenttask", "sandbox-planner")
        conds = {c["type"]: c for c in (((t or {}).get("status") or {}).get("conditions") or [])}
        return t if conds.get("Succeeded", {}).get("status") == "True" else None

    wait_for(done, 180, "the sandboxed planner to succeed")


def test_agent_exceeding_its_memory_is_oom_killed_and_retried(operator, kubectl, namespace, git_repo) -> None:  # type: ignore[no-untyped-def]
    hog = "python3 -c 'b = bytearray(512 * 1024 * 1024); print(len(b))'"
    script = (f"roles:\n  planner:\n    - run: {{command: \"{hog}\", timeout: 120}}\n"
              "    - finish: {summary: should not get here, done: true}\n")
    apply(kubectl, namespace, script_configmap("script", script),
          build_request("oom", git_repo, script="script", memory_limit="128Mi", max_attempts=2,
                        finalization=False))

    def attempts(n: int) -> list[dict[str, Any]] | None:
        t = kget(kubectl, "-n", namespace, "agenttask", "oom-planner")
        found = [a for a in (((t or {}).get("status") or {}).get("attempts") or []) if a.get("failureClass")]
        return found if len(found) >= n else None

    first = wait_for(lambda: attempts(1), 240, "the first attempt to end")[0]
    pod1 = kget(kubectl, "-n", namespace, "pod", "oom-planner-a1")
    term = pod1["status"]["containerStatuses"][0]["state"]["terminated"]  # type: ignore[index]
    assert term["reason"] == "OOMKilled", term
    assert first["failureClass"] == "OOMKilled", first

    # retried: a second Pod, with the same limit, killed the same way; then the task fails for good
    wait_for(lambda: kget(kubectl, "-n", namespace, "pod", "oom-planner-a2"), 120, "the retry's Pod")
    both = wait_for(lambda: attempts(2), 240, "the second attempt to end")
    assert [a["failureClass"] for a in both] == ["OOMKilled", "OOMKilled"]

    def failed() -> dict[str, Any] | None:
        t = kget(kubectl, "-n", namespace, "agenttask", "oom-planner")
        conds = {c["type"]: c for c in (((t or {}).get("status") or {}).get("conditions") or [])}
        s = conds.get("Succeeded")
        return s if s and s["status"] == "False" else None

    succeeded = wait_for(failed, 120, "the task to fail after its attempts")
    assert "OOMKilled" in succeeded["message"] or "memory" in succeeded["message"], succeeded


def test_a_builds_runtime_class_is_the_runtime_its_agent_runs_under(  # type: ignore[no-untyped-def]
        operator, kubectl, namespace, git_repo) -> None:
    """``spec.agent.runtimeClassName`` on a real kubelet (issue 56). No sandboxed runtime (gVisor, Kata) runs on this
    project's machines (docs/security.md, "Kernel isolation"), so the RuntimeClass here names containerd's ``runc``
    handler: the Pod is admitted with it, the kubelet asks containerd for that handler, and the attempt completes."""
    name = f"e2e-runc-{namespace[-6:]}"
    kubectl("apply", "-f", "-", input=f'{{"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", '
                                      f'"metadata": {{"name": "{name}"}}, "handler": "runc"}}')
    try:
        script = "roles:\n  planner:\n    - finish: {summary: nothing to plan, done: true}\n"
        b = build_request("isolated", git_repo, script="script", finalization=False)
        b["spec"]["agent"]["runtimeClassName"] = name
        apply(kubectl, namespace, script_configmap("script", script), b)

        def done() -> dict[str, Any] | None:
            t = kget(kubectl, "-n", namespace, "agenttask", "isolated-planner")
            conds = {c["type"]: c for c in (((t or {}).get("status") or {}).get("conditions") or [])}
            return t if conds.get("Succeeded", {}).get("status") == "True" else None

        wait_for(done, 180, "the planner under the build's RuntimeClass to succeed")
        pod = kget(kubectl, "-n", namespace, "pod", "isolated-planner-a1") or {}
        assert pod["spec"]["runtimeClassName"] == name
    finally:
        kubectl("delete", "runtimeclass", name, "--wait=false", check=False)
