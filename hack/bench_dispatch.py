"""Dispatch benchmark: how fast ready AgentTasks become Pods, against the Kubernetes Job controller.

On one throw-away control plane (etcd + kube-apiserver + kube-controller-manager with its default
settings, no kubelet), in the same run:

1. the Job controller: one Job with parallelism = completions = N; time from creating the Job until N Pods
   exist;
2. Longshot: N ready AgentTasks of one already-planned, suspended BuildRequest, the operator running as
   a real process (``python -m longshot operator``) and caught up; time from un-suspending the build
   until N Pods exist;
3. memory: the operator's peak RSS (VmHWM) after it has taken in M AgentTasks.

The last line reads ``dispatch_vs_job_controller_ratio=<ours/theirs pods per second>
operator_peak_rss_mib=<n>``. Usage: ``python hack/bench_dispatch.py [--tasks 1000] [--memory-tasks 10000]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kubernetes

from longshot.testing import controlplane

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION = "longshot.dev", "v1alpha1"
LABEL = "app.kubernetes.io/managed-by=longshot-operator"


def log(msg: str) -> None:
    print(f"[bench-dispatch] {msg}", flush=True)


def count_pods(core: kubernetes.client.CoreV1Api, namespace: str, selector: str) -> int:
    # metadata-only list is cheap enough at these sizes
    return len(core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=True).items)


def wait_pods(core: kubernetes.client.CoreV1Api, namespace: str, selector: str, n: int, timeout: float) -> float:
    start = time.monotonic()
    while True:
        have = count_pods(core, namespace, selector)
        if have >= n:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"only {have} of {n} Pods after {timeout}s")
        time.sleep(0.2)


def namespace(core: kubernetes.client.CoreV1Api, name: str) -> str:
    core.create_namespace({"metadata": {"name": name}})
    controlplane.wait_until(lambda: core.list_namespaced_service_account(name).items, 60, f"{name} default SA")
    return name


def bench_job(api: kubernetes.client.ApiClient, n: int) -> float:
    core, batch = kubernetes.client.CoreV1Api(api), kubernetes.client.BatchV1Api(api)
    ns = namespace(core, "bench-job")
    job = {
        "metadata": {"name": "bench"},
        "spec": {
            "parallelism": n, "completions": n, "backoffLimit": 0,
            "template": {"metadata": {"labels": {"bench": "job"}}, "spec": {
                "restartPolicy": "Never", "automountServiceAccountToken": False,
                "containers": [{"name": "c", "image": "busybox", "command": ["true"],
                                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}}]}},
        },
    }
    start = time.monotonic()
    batch.create_namespaced_job(ns, job)
    wait_pods(core, ns, "bench=job", n, timeout=900)
    total = time.monotonic() - start
    log(f"job controller: {n} Pods in {total:.1f}s ({n / total:.1f} Pods/s)")
    return n / total


def create_tasks(custom: kubernetes.client.CustomObjectsApi, ns: str, build_uid: str, n: int) -> None:
    def one(i: int) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "agenttasks", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentTask",
            "metadata": {"name": f"t{i:05d}", "labels": {"longshot.dev/build": "bench"},
                         "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "BuildRequest",
                                              "name": "bench", "uid": build_uid, "controller": True}]},
            "spec": {"buildRef": {"name": "bench"}, "description": f"task {i}", "role": "worker"},
        })

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        list(pool.map(one, range(n)))


def planned_build(custom: kubernetes.client.CustomObjectsApi, ns: str, workers: int) -> str:
    b = custom.create_namespaced_custom_object(GROUP, VERSION, ns, "buildrequests", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "BuildRequest", "metadata": {"name": "bench"},
        "spec": {"request": "bench", "repository": {"url": "https://git.example.com/bench.git"},
                 "workers": {"max": workers}, "suspend": True},
    })
    now = "2026-01-01T00:00:00Z"
    conds = [{"type": t, "status": s, "reason": r, "message": "", "lastTransitionTime": now}
             for t, s, r in (("Planned", "True", "PlanAccepted"), ("Progressing", "True", "TasksRunning"),
                             ("Merged", "Unknown", "Pending"), ("Finalized", "Unknown", "Pending"),
                             ("Ready", "False", "InProgress"), ("Suspended", "True", "Suspended"))]
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, "buildrequests", "bench", {
        "status": {"conditions": conds, "plannerTask": "bench-planner", "phase": "Suspended"}})
    return str(b["metadata"]["uid"])


def start_operator(cp: controlplane.ControlPlane, ns: str, workdir: Path, max_workers: int) -> subprocess.Popen:
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "LONGSHOT_NAMESPACE": ns,
           "LONGSHOT_MAX_WORKERS": str(max_workers), "LONGSHOT_METRICS_PORT": "0"}
    logf = open(workdir / f"operator-{ns}.log", "wb")  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "longshot", "operator", "--namespace", ns],
                            stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def caught_up(custom: kubernetes.client.CustomObjectsApi, ns: str, n: int) -> bool:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "agenttasks")["items"]
    return len(items) >= n and all((t.get("status") or {}).get("conditions") for t in items)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def bench_longshot(cp: controlplane.ControlPlane, api: kubernetes.client.ApiClient, n: int, workdir: Path) -> float:
    core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
    ns = namespace(core, "bench-longshot")
    uid = planned_build(custom, ns, workers=n)
    create_tasks(custom, ns, uid, n)
    op = start_operator(cp, ns, workdir, max_workers=n)
    try:
        t0 = time.monotonic()
        controlplane.wait_until(lambda: caught_up(custom, ns, n), 600, "the operator to take in every task", 0.5)
        log(f"operator took in {n} tasks in {time.monotonic() - t0:.1f}s (start-up, not measured)")
        start = time.monotonic()
        custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "buildrequests", "bench",
                                              {"spec": {"suspend": False}})
        wait_pods(core, ns, LABEL, n, timeout=900)
        total = time.monotonic() - start
        log(f"longshot: {n} Pods in {total:.1f}s ({n / total:.1f} Pods/s); operator RSS {peak_rss_mib(op.pid):.0f} MiB")
        return n / total
    finally:
        stop(op)


def bench_memory(cp: controlplane.ControlPlane, api: kubernetes.client.ApiClient, m: int, workdir: Path) -> float:
    core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
    ns = namespace(core, "bench-memory")
    uid = planned_build(custom, ns, workers=1)
    t0 = time.monotonic()
    create_tasks(custom, ns, uid, m)
    log(f"created {m} AgentTasks in {time.monotonic() - t0:.1f}s")
    op = start_operator(cp, ns, workdir, max_workers=1)
    try:
        t0 = time.monotonic()
        controlplane.wait_until(lambda: caught_up(custom, ns, m), 1200, "the operator to take in every task", 2)
        log(f"operator took in {m} tasks in {time.monotonic() - t0:.1f}s")
        return peak_rss_mib(op.pid)
    finally:
        stop(op)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--memory-tasks", type=int, default=10_000)
    parser.add_argument("--bin-dir", default=None)
    args = parser.parse_args()
    bin_dir = args.bin_dir or subprocess.run(["bash", str(ROOT / "hack/k8s-binaries.sh")], check=True,
                                             capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp:
        work = Path(tmp)
        with controlplane.ControlPlane(workdir=work / "cp", bin_dir=Path(bin_dir)) as cp:
            cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
            api = kubernetes.config.new_client_from_config(config_file=str(cp.kubeconfig))
            api.configuration.connection_pool_maxsize = 32
            theirs = bench_job(api, args.tasks)
            ours = bench_longshot(cp, api, args.tasks, work)
            rss = bench_memory(cp, api, args.memory_tasks, work)
    log(f"longshot {ours:.1f} Pods/s vs job controller {theirs:.1f} Pods/s; peak RSS with "
        f"{args.memory_tasks} AgentTasks: {rss:.0f} MiB")
    print(f"dispatch_vs_job_controller_ratio={ours / theirs:.2f} operator_peak_rss_mib={rss:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
