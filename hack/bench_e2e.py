"""End-to-end benchmark against the floor (the same Pods, no operator), on the local cluster (``make bench-e2e``).

On the local single-node cluster (containerd + kubelet, brought up if needed, like ``make demo``; the Makefile
holds the machine-wide cluster lock), with the chart installed from the locally built images:

1. **the floor**: the N worker Pods Longshot would run (the operator's own Pod builder: the same image, script,
   resources, labels and gateway) created directly, at most W at a time (a new one as soon as one ends), each
   cloning through longshot-gateway, writing its own file, committing and pushing its branch to the forge. No
   operator decision, no gate, no merge. Time: first create to last Pod ended. The same containment as
   Longshot's own Pods: the agent NetworkPolicy (egress to the gateway and DNS only) and the gateway's ingress
   policy select them by the operator's labels, and the gateway serves each only as its AgentTask's current
   attempt: the bench records the attempt after the create (Pod name and UID, :func:`attempt_status`), the one
   status write the operator makes. The operator is scaled to zero for the floor (:func:`operator_replicas`):
   running, it would take these Pods for its own (adopt, judge and merge them) or, for a Pod it did not name,
   end the attempt the gateway binds it to.
2. **Longshot**: a BuildRequest whose scripted planner plans the same N tasks (one iteration: the plan is the
   whole request), ``workers.max`` W, the minimal quality gate (``make test``, the reconciler's command: the last
   batch's gate run is the final sweep), rebase, speculative window 32 (``--window``), until ``Finalized=True``. Time:
   creation to ``Finalized=True``; ``main`` must then hold every task's file.

Each phase starts on a settled machine (``settle``): the floor's Pods deleted by the garbage collector and the
cores quiet again, so Longshot's time does not include tearing down the floor's 100 Pods.

Figures: ``e2e_vs_bare`` = floor time / Longshot time; ``merged_per_hour``; ``pods_per_merge`` = agent Pods
created (every attempt of every AgentTask of the build: planner, workers, gates, sweeps) / branches merged;
``dispatch_p95_s`` from the operator's ``longshot_dispatch_latency_seconds`` (a ready task that a free worker
slot could run, to its Pod created), interpolated within its histogram bucket like PromQL's histogram_quantile.

``--repos K`` splits the N tasks over K repositories (K builds, one shard each) and ``--replicas R`` runs R
operator replicas: ``--repos 2 --replicas 1`` against ``--repos 2 --replicas 2`` shows what a second busy
replica gives on one node. ``--no-floor`` skips the floor. The cluster is brought down at the end (before the
Makefile releases the lock) unless ``--keep-cluster``.

``start_p50_s``: the median, over the phase's attempts, of the time from an attempt's admission (the watch of the
AgentTasks sees it in ``status.attempts``) to its runner's first gateway call with its task (the transcript's
``cloning`` event, in its ledger entry): the scripted agent makes no model call, so the clone that starts its work
stands for it. ``--warm N`` runs a second Longshot phase after the cold one, on fresh repositories and builds with
``spec.agent.warmPool.size: N`` (docs/warm-pools.md): the last line gives its figures, then the cold phase's
(``cold_*``) and the warm phase's claims (``warm_hits``, ``warm_misses``).

Last line: ``e2e_vs_bare=<n> start_p50_s=<n> merged_per_hour=<n> pods_per_merge=<n> dispatch_p95_s=<n>`` (with
``--warm``: `` cold_e2e_vs_bare=<n> cold_start_p50_s=<n> cold_pods_per_merge=<n> cold_dispatch_p95_s=<n>
warm_hits=<n> warm_misses=<n>`` after it).
Usage: ``python hack/bench_e2e.py [--tasks 100] [--workers 20] [--repos 1] [--replicas 1] [--no-floor] [--warm N]``.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
from prometheus_client.parser import text_string_to_metric_families

from longshot import config
from longshot.core import ledger
from longshot.core import tasks as coretasks
from longshot.runtime import pods as podmod
from longshot_testing import cluster as lc
from longshot_testing.quantiles import histogram_quantile

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION = "longshot.dev", "v1alpha1"
SYSTEM_NS = "longshot-system"
NS = "bench-e2e"
IMAGES = ("pause", "operator", "agent")
GIT_ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | {
    "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@localhost", "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


def log(msg: str) -> None:
    print(f"[bench-e2e] {msg}", flush=True)


def run(*argv: str, **kw: Any) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout.strip()


def git(*args: str, cwd: Path | None = None) -> str:
    return run("git", *args, cwd=cwd, env=GIT_ENV)


# --- the cluster, the chart, the repositories --------------------------------------------------------


def install_chart(c: lc.LocalCluster, replicas: int, workers: int, extra: list[str]) -> None:
    # Helm installs a chart's CRDs once and never upgrades them: a kept cluster may hold older ones
    c.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "charts" / "longshot" / "crds"))
    helm = [str(c.bin_dir / "helm"), f"--kubeconfig={c.kubeconfig}", "upgrade", "--install", "longshot",
            str(ROOT / "charts" / "longshot"), "--namespace", SYSTEM_NS, "--create-namespace",
            "--set", "operator.image.repository=docker.io/library/longshot-operator",
            "--set", "operator.image.tag=dev", "--set", "operator.image.pullPolicy=Never",
            "--set", "agent.image.repository=docker.io/library/longshot-agent",
            "--set", "agent.image.tag=dev", "--set", "agent.image.pullPolicy=Never",
            "--set", f"operator.replicas={replicas}", "--set", "podDisruptionBudget.enabled=false",
            "--set", "gateway.replicas=1", "--set", "gateway.podDisruptionBudget.enabled=false",
            "--set", f"agent.maxWorkers={max(50, 2 * workers)}",
            "--set", f"networkPolicy.namespaces={{{NS}}}",
            "--set", f"networkPolicy.dns.peers[0].ipBlock.cidr={lc.BRIDGE_IP}/32",
            # the API server's own port on the bridge (the allow entry below is for git and forge only)
            "--set-json", "egress.networkPolicy.apiServerPorts=" + json.dumps(c.api_server_ports()),
            # the forge on the bridge (egress policy): git and forge on its port
            "--set-json", "egress.allow=" + json.dumps([{"cidr": f"{lc.BRIDGE_IP}/32", "purposes": ["git", "forge"],
                                                        "ports": [c.git_port]}]),
            # the operator and the gateway read the build's git Secret in the bench namespace only
            "--set", f"rbac.secrets.namespaces={{{NS}}}",
            "--set", "prompts.enabled=false",
            # a CPU request is a CPU share under contention (cgroup weight): 20 busy agents at 50m each would
            # leave the chart's 100m operator a twentieth of the node (docs/install.md, "Sizing")
            "--set", "operator.resources.requests.cpu=400m", "--set", "gateway.resources.requests.cpu=200m",
            *[a for kv in extra for a in ("--set", kv)],
            "--wait", "--timeout=5m"]
    done = subprocess.run(helm, check=False, capture_output=True, text=True,
                          env={**os.environ, "HELM_CACHE_HOME": str(c.workdir / "helm")})
    if done.returncode != 0:
        raise SystemExit(f"helm upgrade --install failed: {done.stderr.strip()}")
    c.kubectl("-n", SYSTEM_NS, "rollout", "restart", "deployment/longshot", "deployment/longshot-gateway")
    for d in ("longshot", "longshot-gateway"):
        c.kubectl("-n", SYSTEM_NS, "rollout", "status", f"deployment/{d}", "--timeout=300s", timeout=320)


def fresh_namespace(c: lc.LocalCluster) -> None:
    c.kubectl("delete", "namespace", NS, "--wait=true", "--timeout=300s", check=False, timeout=320)
    c.kubectl("create", "namespace", NS)
    c.kubectl("label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted")
    user, password = c.git_credentials
    c.kubectl("-n", NS, "create", "secret", "generic", "git-token", f"--from-literal=username={user}",
              f"--from-literal=password={password}")


def repository(c: lc.LocalCluster, name: str, work: Path) -> tuple[Path, str]:
    """A bare repository on the forge with README and a Makefile whose ``test`` passes; (path, URL for Pods)."""
    bare = c.git_root / f"{name}.git"
    subprocess.run(["rm", "-rf", str(bare)], check=True)
    git("init", "-q", "--bare", "-b", "main", str(bare))
    src = work / f"src-{name}"
    src.mkdir(parents=True)
    (src / "README.md").write_text("bench-e2e\n")
    (src / "Makefile").write_text("test:\n\ttrue\n.PHONY: test\n")
    git("init", "-q", "-b", "main", str(src))
    git("add", "-A", cwd=src)
    git("commit", "-q", "-m", "init", cwd=src)
    git("push", "-q", str(bare), "main", cwd=src)
    return bare, f"{c.git_url}/{name}.git"


def script(tasks: list[str]) -> str:
    """The scripted agent: the planner plans ``tasks``; each task writes its own file and finishes (the runner
    commits and pushes its branch); testers, sweeps and everything else finish (the gate runs ``make test``)."""
    plan = [{"name": t, "description": f"Write work/{t}.txt", "scope": [f"work/{t}.txt"]} for t in tasks]
    data: dict[str, Any] = {
        "roles": {"planner": [{"finish": {"summary": f"{len(tasks)} tasks", "tasks": plan}}],
                  "reviewer": [{"finish": {"summary": "fine", "verdict": "approved"}}]},
        "tasks": {t: [{"write": {"path": f"work/{t}.txt", "content": f"{t}\n"}}, {"finish": {"summary": t}}]
                  for t in tasks},
        "steps": [{"finish": {"summary": "nothing to do"}}],
    }
    return json.dumps(data)  # JSON is YAML


def build_body(name: str, url: str, script_name: str, workers: int, *, suspend: bool = False,
               window: int = 32, finished_pods: int | None = None, warm: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BuildRequest", "metadata": {"name": name},
                            "spec": {
        "request": "bench-e2e: write one file per task",
        "repository": {"url": url, "baseBranch": "main", "credentialsSecret": "git-token"},
        "agent": {"backend": "scripted", "script": {"name": script_name}, "timeoutSeconds": 600,
                  "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                                "limits": {"cpu": "1", "memory": "256Mi"}}},
        "workers": {"max": workers}, "suspend": suspend,
        # the script's plan is the whole request: no second planner asking whether anything is left
        "planner": {"maxTasks": 1000, "maxIterations": 1},
        "merge": {"strategy": "rebase", "window": window},
        "qualityGate": {"profile": "minimal", "testCommand": "make test"},
        "reconciler": {"command": "make test", "intervalSeconds": 300},
        "finalization": {"maxAttempts": 2},
    }}
    if finished_pods is not None:
        body["spec"]["retention"] = {"finishedPods": finished_pods}
    if warm:
        body["spec"]["agent"]["warmPool"] = {"size": warm}
    return body


# --- 1. the floor -----------------------------------------------------------------------------------


def operator_settings(apps: kubernetes.client.AppsV1Api) -> config.Settings:
    """The Settings the operator runs with (its Deployment's environment): the floor's Pods are built alike."""
    d = apps.read_namespaced_deployment("longshot", SYSTEM_NS)
    env = {e.name: e.value for e in d.spec.template.spec.containers[0].env or [] if e.value is not None}
    return config.Settings.from_env({**env, "LONGSHOT_NAMESPACE": SYSTEM_NS})


def attempt_status(pod: Mapping[str, Any], started: datetime) -> dict[str, Any]:
    """The status write the operator makes once it has created an attempt's Pod (``pod``, as the API server returned
    it): the task Running, the attempt recorded with its Pod's name, start and UID (``core.tasks``' RecordAttempt,
    the UID filled in by the executor). The gateway serves a Pod only as its AgentTask's current attempt with that
    UID (``gateway.identity.bound_attempt``). Pure."""
    meta = pod["metadata"]
    number = int(meta["labels"][podmod.ATTEMPT_LABEL])
    record = {**coretasks.RecordAttempt(number, str(meta["name"]), start_time=started).to_wire(),
              "podUID": str(meta["uid"])}
    return {"status": {"phase": coretasks.RUNNING, "attempts": [record]}}


def operator_replicas(c: lc.LocalCluster, replicas: int) -> None:
    """Scale the operator's Deployment to ``replicas`` and wait until it is there (0: its Pods are gone)."""
    c.kubectl("-n", SYSTEM_NS, "scale", "deployment/longshot", f"--replicas={replicas}")
    if replicas == 0:
        c.kubectl("-n", SYSTEM_NS, "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/component=operator",
                  "--timeout=120s", timeout=140)
    else:
        c.kubectl("-n", SYSTEM_NS, "rollout", "status", "deployment/longshot", "--timeout=300s", timeout=320)


def gone(api: kubernetes.client.ApiClient, build: str, limit: float = 300) -> None:
    """Wait until the BuildRequest ``build`` and its AgentTasks are deleted (the garbage collector)."""
    custom = kubernetes.client.CustomObjectsApi(api)
    start = time.monotonic()
    while True:
        left = [t for t in custom.list_namespaced_custom_object(GROUP, VERSION, NS, "agenttasks")["items"]
                if t["spec"]["buildRef"]["name"] == build]
        builds = [b for b in custom.list_namespaced_custom_object(GROUP, VERSION, NS, "buildrequests")["items"]
                  if b["metadata"]["name"] == build]
        if not left and not builds:
            return
        if time.monotonic() - start > limit:
            raise TimeoutError(f"the BuildRequest {build} or {len(left)} of its AgentTasks exist after {limit:.0f}s")
        time.sleep(1)


def floor(api: kubernetes.client.ApiClient, bare: Path, url: str, tasks: list[str], workers: int) -> float:
    core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
    b = custom.create_namespaced_custom_object(GROUP, VERSION, NS, "buildrequests",
                                               build_body("floor", url, "script-floor", workers, suspend=True))
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BuildRequest", "name": "floor",
             "uid": b["metadata"]["uid"], "controller": True}
    ts = [custom.create_namespaced_custom_object(GROUP, VERSION, NS, "agenttasks", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentTask",
        "metadata": {"name": f"floor-{t}", "labels": {"longshot.dev/build": "floor"}, "ownerReferences": [owner]},
        "spec": {"buildRef": {"name": "floor"}, "description": f"Write work/{t}.txt", "role": "worker"}})
        for t in tasks]
    settings = operator_settings(kubernetes.client.AppsV1Api(api))
    manifests = []
    for t in ts:
        m = podmod.build_agent_pod(t, b, settings, 1)  # the operator's Pod: its name, labels and owner
        m["metadata"]["labels"] = {**m["metadata"]["labels"], "bench": "floor"}
        manifests.append(m)
    # the floor's Pods carry the operator's labels, which only the operator's ServiceAccount may set (the chart's
    # admissionPolicy.leastPrivilege): they are created as it, by impersonation, as the operator creates its own
    # (the operator is scaled to zero for the floor: its ServiceAccount is read from the Deployment, not a Pod)
    operator_sa = kubernetes.client.AppsV1Api(api).read_namespaced_deployment(
        "longshot", SYSTEM_NS).spec.template.spec.service_account_name
    as_operator = kubernetes.client.ApiClient(api.configuration)
    as_operator.set_default_header("Impersonate-User", f"system:serviceaccount:{SYSTEM_NS}:{operator_sa}")
    creator = kubernetes.client.CoreV1Api(as_operator)
    ended: dict[str, str] = {}
    done = threading.Condition()

    def watch() -> None:
        w = kubernetes.watch.Watch()
        for ev in w.stream(core.list_namespaced_pod, NS, label_selector="bench=floor", timeout_seconds=3600):
            pod = ev["object"]
            if pod.status.phase in ("Succeeded", "Failed"):
                with done:
                    ended.setdefault(pod.metadata.name, pod.status.phase)
                    done.notify_all()
            with done:
                if len(ended) >= len(manifests):
                    w.stop()
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(1)  # the watch is established before the first create (a benchmark, not a test)
    start = time.monotonic()
    created = 0
    with done:
        while len(ended) < len(manifests):
            while created < len(manifests) and created - len(ended) < workers:
                started = datetime.now(UTC)
                pod = api.sanitize_for_serialization(creator.create_namespaced_pod(NS, manifests[created]))
                custom.patch_namespaced_custom_object_status(GROUP, VERSION, NS, "agenttasks",
                                                             ts[created]["metadata"]["name"],
                                                             attempt_status(pod, started))
                created += 1
            if not done.wait(timeout=900):
                raise TimeoutError(f"floor: {len(ended)} of {len(manifests)} Pods ended after 900 s without news")
    seconds = time.monotonic() - start
    failed = sorted(n for n, phase in ended.items() if phase != "Succeeded")
    if failed:
        why = []
        for name in failed[:3]:
            pod = core.read_namespaced_pod(name, NS)
            term = next((cs.state.terminated for cs in pod.status.container_statuses or []
                         if cs.state and cs.state.terminated), None)
            why.append(f"{name}: exit {getattr(term, 'exit_code', '?')} {(getattr(term, 'message', '') or '')[-600:]}")
        raise RuntimeError(f"floor: {len(failed)} Pods failed:\n" + "\n".join(why))
    branches = git("--git-dir", str(bare), "for-each-ref", "--format=%(refname)", f"refs/heads/longshot/{NS}/floor/")
    pushed = len(branches.split())
    if pushed != len(tasks):
        raise RuntimeError(f"floor: {pushed} of {len(tasks)} branches were pushed")
    log(f"floor: {len(tasks)} Pods without the operator (at most {workers} at once) cloned, committed and pushed "
        f"their branches in {seconds:.1f}s")
    custom.delete_namespaced_custom_object(GROUP, VERSION, NS, "buildrequests", "floor")  # and its tasks, Pods
    return seconds


def busy_cores() -> float:
    """The machine's mean busy cores (all but idle and iowait) since the last call (the first call: since boot)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy, total = sum(fields[:8]) - fields[3] - fields[4], sum(fields[:8])
    last = getattr(busy_cores, "last", (0, 0))
    busy_cores.last = (busy, total)  # type: ignore[attr-defined]
    return (busy - last[0]) / max(total - last[1], 1) * (os.cpu_count() or 1)


def settle(api: kubernetes.client.ApiClient, selector: str, limit: float = 300) -> None:
    """Before a timed phase: wait until the Pods ``selector`` matches are gone (the floor's, which the garbage
    collector deletes with their build) and the machine is quiet (under a third of a core busy over 2 s, or 60 s
    at most). Else the next phase pays for the last one's teardown: the kubelet and containerd removing 100
    containers, sandboxes and volumes is CPU on the same two cores."""
    core = kubernetes.client.CoreV1Api(api)
    start = time.monotonic()
    while core.list_namespaced_pod(NS, label_selector=selector).items:
        if time.monotonic() - start > limit:
            raise TimeoutError(f"Pods {selector} still exist after {limit:.0f}s")
        time.sleep(1)
    gone = time.monotonic() - start
    busy_cores()
    cores = float("inf")
    while cores > 0.33 and time.monotonic() - start < gone + 60:
        time.sleep(2)
        cores = busy_cores()
    log(f"settled: Pods {selector} gone after {gone:.1f}s, then {cores:.2f} cores busy after "
        f"{time.monotonic() - start - gone:.1f}s more")


# --- where the CPU went ----------------------------------------------------------------------------

CGROUP = Path("/sys/fs/cgroup/cpuacct")
HOST = ("kube-apiserver", "etcd", "kubelet", "containerd", "kube-scheduler", "kube-controller")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot(api: kubernetes.client.ApiClient) -> dict[str, float]:
    """CPU seconds used so far: the machine (busy time of every core), every Pod together (the kubelet's
    ``kubepods`` cgroup, which keeps the time of Pods since removed), the operator and gateway Pods, and the
    cluster's long-lived host processes by name. Only on the local cluster's cgroup v1 hierarchy; {} elsewhere."""
    if not (CGROUP / "kubepods" / "cpuacct.usage").exists():
        return {}
    out: dict[str, float] = {}
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    out["machine"] = (sum(fields[:8]) - fields[3] - fields[4]) / TICK  # all but idle and iowait
    out["steal"] = fields[7] / TICK  # time the hypervisor gave to others: a slower machine for that phase
    out["pods"] = int((CGROUP / "kubepods" / "cpuacct.usage").read_text()) / 1e9
    core = kubernetes.client.CoreV1Api(api)
    for component, key in (("operator", "operator"), ("gateway", "gateway")):
        total = 0.0
        for pod in core.list_namespaced_pod(SYSTEM_NS, label_selector=f"app.kubernetes.io/component={component}").items:
            for usage in CGROUP.glob(f"kubepods/*/pod{pod.metadata.uid}/cpuacct.usage"):
                total += int(usage.read_text()) / 1e9
            for usage in CGROUP.glob(f"kubepods/pod{pod.metadata.uid}/cpuacct.usage"):  # Guaranteed QoS
                total += int(usage.read_text()) / 1e9
        out[key] = total
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        name = next((h for h in HOST if comm.startswith(h[:15])), None)
        if name is not None:
            out[name] = out.get(name, 0.0) + (int(rest[11]) + int(rest[12])) / TICK
    return out


def api_requests(api: kubernetes.client.ApiClient) -> dict[tuple[str, str], float]:
    """The API server's requests so far by (verb, resource), from its own metrics."""
    request = api.param_serialize(method="GET", resource_path="/metrics", auth_settings=["BearerToken"])
    response = api.call_api(*request)
    response.read()
    text = response.data.decode()
    out: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name != "apiserver_request":
            continue
        for s in fam.samples:
            if s.name == "apiserver_request_total":
                key = (s.labels.get("verb", ""), s.labels.get("resource", "") + (
                    "/" + s.labels["subresource"] if s.labels.get("subresource") else ""))
                out[key] = out.get(key, 0.0) + s.value
    return out


def requests_report(phase: str, before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]) -> str:
    """One line: the API server's requests in a phase, writes by resource first."""
    d = {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}
    # the metric's verbs: POST (create), PUT, PATCH, DELETE, DELETECOLLECTION, APPLY; GET, LIST, WATCH
    writes = {k: v for k, v in d.items() if k[0] in ("POST", "CREATE", "PUT", "UPDATE", "PATCH", "DELETE",
                                                     "DELETECOLLECTION", "APPLY")}
    reads = {k: v for k, v in d.items() if k not in writes and k[0] != "WATCH"}
    top = sorted(writes.items(), key=lambda kv: -kv[1])[:14]
    top_reads = sorted(reads.items(), key=lambda kv: -kv[1])[:6]
    return (f"{phase}: API requests {sum(d.values()):.0f} ({sum(writes.values()):.0f} writes, "
            f"{sum(reads.values()):.0f} reads); writes: " + ", ".join(f"{verb} {res} {n:.0f}" for (verb, res), n in top)
            + "; reads: " + ", ".join(f"{verb} {res} {n:.0f}" for (verb, res), n in top_reads))


def cpu_report(phase: str, before: dict[str, float], after: dict[str, float], seconds: float) -> str:
    """One line: the CPU seconds each part used in a phase, and the machine's mean busy cores."""
    if not before or not after:
        return f"{phase}: no CPU accounting on this machine"
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    agents = d["pods"] - d["operator"] - d["gateway"]
    host = sum(d.get(h, 0.0) for h in HOST)
    other = d["machine"] - d["pods"] - host
    parts = [f"agent Pods {agents:.0f}", f"operator {d['operator']:.0f}", f"gateway {d['gateway']:.0f}",
             *[f"{h} {d.get(h, 0.0):.0f}" for h in HOST], f"other (shims, runc, CNI, bench) {other:.0f}"]
    return (f"{phase}: CPU {d['machine']:.0f} s over {seconds:.0f} s ({d['machine'] / seconds:.2f} cores busy, "
            f"steal {d['steal']:.1f} s): " + ", ".join(parts))


# --- 2. Longshot ------------------------------------------------------------------------------------


def finalized(custom: kubernetes.client.CustomObjectsApi, name: str) -> str | None:
    b = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "buildrequests", name)
    c = next((c for c in (b.get("status") or {}).get("conditions") or [] if c["type"] == "Finalized"), None)
    return None if c is None or c["status"] == "Unknown" else f"{c['status']}/{c['reason']}"


def longshot(api: kubernetes.client.ApiClient, builds: dict[str, str], workers: int, timeout: float,
             window: int, finished_pods: int | None = None, warm: int = 0,
             admissions: Admissions | None = None) -> float:
    custom = kubernetes.client.CustomObjectsApi(api)
    start = time.monotonic()
    for name, url in builds.items():
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, "buildrequests",
                                               build_body(name, url, f"script-{name}", workers, window=window,
                                                          finished_pods=finished_pods, warm=warm))
    outcome: dict[str, str] = {}
    last = 0.0
    while len(outcome) < len(builds):
        for name in builds:
            if name not in outcome and (f := finalized(custom, name)) is not None:
                outcome[name] = f
                log(f"{name}: Finalized={f} after {time.monotonic() - start:.1f}s")
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not every build finalized after {timeout}s: {outcome}")
        if time.monotonic() - last > 30:
            last = time.monotonic()
            for name in builds:
                b = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "buildrequests", name)
                st = b.get("status") or {}
                log(f"{name}: {st.get('phase')} tasks {st.get('tasks')} merges {st.get('merges')}")
        time.sleep(1)
    bad = {n: f for n, f in outcome.items() if f != "True/Passed"}
    if bad:
        raise RuntimeError(f"builds did not pass: {bad}")
    return time.monotonic() - start


class Admissions:
    """When each attempt was admitted, as the API server shows it: a watch on the namespace's AgentTasks notes the
    wall-clock time at which an attempt first appears in ``status.attempts`` (the operator's admission write; the
    attempt's ``startTime`` has whole seconds only). Same node, same clock as the agents' transcript stamps."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.seen: dict[tuple[str, int], float] = {}
        self._watch = kubernetes.watch.Watch()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="admissions", daemon=True)

    def __enter__(self) -> Admissions:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._watch.stop()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                for ev in self._watch.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, NS,
                                             "agenttasks", timeout_seconds=300):
                    now = time.time()
                    obj = ev["object"]
                    for a in (obj.get("status") or {}).get("attempts") or []:
                        self.seen.setdefault((obj["metadata"]["name"], int(a.get("number") or 0)), now)
                return
            except Exception as e:  # the watch is re-opened (an expired resourceVersion, a dropped connection)
                if self._stopped.is_set():  # the phase is over (its cluster may be going): no retry
                    return
                log(f"admissions watch: {type(e).__name__}; again")
                self._stopped.wait(1.0)


def start_seconds(api: kubernetes.client.ApiClient, builds: list[str], admissions: Admissions) -> list[float]:
    """Per attempt of the builds: from its admission (:class:`Admissions`) to the runner's first gateway call with
    its task, the transcript's ``cloning`` event (its ledger entry; the clone through the gateway follows it at
    once). A warm sandbox's runner makes that call as soon as its claim is answered; a cold one's once its Pod was
    scheduled, its sandbox made and its container started."""
    core = kubernetes.client.CoreV1Api(api)
    out: list[float] = []
    for build in builds:
        for cm in core.list_namespaced_config_map(NS, label_selector=f"{ledger.LABEL}=true,longshot.dev/build={build}"
                                                  ).items:
            labels = cm.metadata.labels or {}
            blob = (cm.binary_data or {}).get(ledger.TRANSCRIPT_KEY)
            admitted = admissions.seen.get((labels.get("longshot.dev/task", ""),
                                            int(labels.get("longshot.dev/attempt") or 0)))
            if not blob or admitted is None:
                continue
            for line in gzip.decompress(base64.b64decode(blob)).splitlines():
                event = json.loads(line)
                if event.get("type") == "log" and event.get("message") == "cloning":
                    out.append(max(0.0, float(event["ts"]) - admitted))
                    break
    return out


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def warm_claims(samples: list[Any]) -> tuple[int, int]:
    """(hits, misses) of longshot_warm_pool_claims_total over every operator replica."""
    got = {"hit": 0.0, "miss": 0.0}
    for s in samples:
        if s.name == "longshot_warm_pool_claims_total":
            got[s.labels["result"]] = got.get(s.labels["result"], 0.0) + s.value
    return int(got["hit"]), int(got["miss"])


def pods_and_merges(api: kubernetes.client.ApiClient, builds: list[str]) -> tuple[int, int]:
    """(agent Pods created: every attempt of every AgentTask of the builds, MergeJobs merged)."""
    custom = kubernetes.client.CustomObjectsApi(api)
    tasks = custom.list_namespaced_custom_object(GROUP, VERSION, NS, "agenttasks")["items"]
    jobs = custom.list_namespaced_custom_object(GROUP, VERSION, NS, "mergejobs")["items"]
    pods = sum(len((t.get("status") or {}).get("attempts") or []) for t in tasks
               if t["spec"]["buildRef"]["name"] in builds)
    merged = sum(1 for j in jobs if j["spec"]["buildRef"]["name"] in builds
                 and (j.get("status") or {}).get("phase") == "Merged")
    return pods, merged


def _kind(task: dict[str, Any]) -> str:
    role, name = task["spec"].get("role", "worker"), task["metadata"]["name"]
    if role != "tester":
        return role
    return "final sweep" if "-final-" in name else "sweep" if "-sweep-" in name else "gate"


def _seconds(stamp: str | None, since: datetime) -> float | None:
    return None if not stamp else (datetime.fromisoformat(stamp.replace("Z", "+00:00")) - since).total_seconds()


def timeline(build: dict[str, Any], tasks: list[dict[str, Any]]) -> list[str]:
    """Where a build's time went, from its objects (seconds since its creation; the API's stamps are whole
    seconds): each kind of agent Pod's first start and last end, how many ran, and which kinds ran after the last
    worker ended (the tail the floor does not have)."""
    since = datetime.fromisoformat(build["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    spans: dict[str, list[tuple[float, float]]] = {}
    for t in tasks:
        for a in (t.get("status") or {}).get("attempts") or []:
            start, end = _seconds(a.get("startTime"), since), _seconds(a.get("endTime"), since)
            if start is not None and end is not None:
                spans.setdefault(_kind(t), []).append((start, end))
    out = [f"{kind}: {len(v)} Pod(s), first start {min(s for s, _ in v):.0f}s, last end {max(e for _, e in v):.0f}s"
           for kind, v in sorted(spans.items(), key=lambda kv: min(s for s, _ in kv[1]))]
    if spans.get("worker"):
        last = max(e for _, e in spans["worker"])
        after = {k: sum(1 for s, _ in v if s >= last) for k, v in spans.items()}
        out.append("after the last worker ended (" + f"{last:.0f}s): " + (", ".join(
            f"{n} {k}" for k, n in after.items() if n) or "nothing"))
    finalized = next((c for c in (build.get("status") or {}).get("conditions") or [] if c["type"] == "Finalized"),
                     None)
    if finalized is not None:
        out.append(f"Finalized={finalized['status']} at {_seconds(finalized.get('lastTransitionTime'), since):.0f}s")
    return out


def build_timelines(api: kubernetes.client.ApiClient, builds: list[str]) -> list[str]:
    custom = kubernetes.client.CustomObjectsApi(api)
    tasks = custom.list_namespaced_custom_object(GROUP, VERSION, NS, "agenttasks")["items"]
    out = []
    for name in builds:
        b = custom.get_namespaced_custom_object(GROUP, VERSION, NS, "buildrequests", name)
        mine = [t for t in tasks if t["spec"]["buildRef"]["name"] == name]
        out += [f"{name}: {line}" for line in timeline(b, mine)]
    return out


def dump(api: kubernetes.client.ApiClient, to: Path) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    to.mkdir(parents=True, exist_ok=True)
    for plural in ("buildrequests", "agenttasks", "mergejobs"):
        items = custom.list_namespaced_custom_object(GROUP, VERSION, NS, plural)["items"]
        (to / f"{plural}.json").write_text(json.dumps(items, indent=1))
    core = kubernetes.client.CoreV1Api(api)
    for pod in core.list_namespaced_pod(SYSTEM_NS, label_selector="app.kubernetes.io/component=operator").items:
        (to / f"{pod.metadata.name}.log").write_text(core.read_namespaced_pod_log(pod.metadata.name, SYSTEM_NS))
    log(f"wrote the builds' objects to {to}")


def operator_samples(api: kubernetes.client.ApiClient) -> list[Any]:
    """Every sample of every operator replica's metrics."""
    core = kubernetes.client.CoreV1Api(api)
    out: list[Any] = []
    for pod in core.list_namespaced_pod(SYSTEM_NS, label_selector="app.kubernetes.io/component=operator").items:
        if not pod.status.pod_ip:
            continue
        text = urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/metrics", timeout=10).read().decode()
        for fam in text_string_to_metric_families(text):
            out += fam.samples
    return out


def reconcile_report(samples: list[Any]) -> str:
    """One line: the operator's reconciles by kind (count, conflicts, errors, seconds in all), since it started."""
    counts: dict[tuple[str, str], float] = {}
    seconds: dict[str, float] = {}
    for s in samples:
        if s.name == "longshot_reconciles_total":
            key = (s.labels["kind"], s.labels["result"])
            counts[key] = counts.get(key, 0.0) + s.value
        elif s.name == "longshot_reconcile_duration_seconds_sum":
            seconds[s.labels["kind"]] = seconds.get(s.labels["kind"], 0.0) + s.value
    kinds = sorted({k for k, _ in counts})
    return "operator reconciles (longshot: the operator is restarted after the floor): " + ", ".join(
        f"{k} {sum(v for (kk, _), v in counts.items() if kk == k):.0f} (conflicts {counts.get((k, 'Conflict'), 0):.0f},"
        f" errors {counts.get((k, 'Error'), 0):.0f}, {seconds.get(k, 0.0):.1f}s)" for k in kinds)


@dataclass
class Phase:
    """One timed Longshot phase: its builds to ``Finalized=True``, cold or with warm pools."""

    tag: str
    seconds: float
    pods: int
    merged: int
    p95: float
    observed: int
    start_p50: float
    starts: int
    hits: int
    misses: int

    @property
    def per_hour(self) -> float:
        return self.merged / self.seconds * 3600


def dispatch_buckets(samples: list[Any]) -> dict[float, float]:
    buckets: dict[float, float] = {}
    for s in samples:
        if s.name == "longshot_dispatch_latency_seconds_bucket":
            le = float(s.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + s.value
    return buckets


def longshot_phase(c: lc.LocalCluster, api: kubernetes.client.ApiClient, work: Path, names: list[str],
                   args: argparse.Namespace, warm: int, cpu_lines: list[str]) -> Phase:
    """The Longshot phase: fresh repositories and builds (``-warm`` in their names with warm pools of ``warm``),
    timed to ``Finalized=True``; its own share of the operator's histograms and counters."""
    tag = "-warm" if warm else ""
    builds: dict[str, str] = {}
    bares: dict[str, Path] = {}
    share = -(-args.tasks // args.repos)
    for k in range(args.repos):
        name = f"e2e{tag}" if args.repos == 1 else f"e2e{tag}-{k}"
        mine = names[k * share:(k + 1) * share]
        bares[name], builds[name] = repository(c, f"{NS}-{name}", work)
        c.kubectl("-n", NS, "create", "configmap", f"script-{name}",
                  f"--from-literal=script.yaml={script(mine)}")
    log(f"longshot{tag}: {len(builds)} build(s) of {args.tasks} tasks in all, workers.max {args.workers}, "
        f"{args.replicas} operator replica(s), warm pool {warm or 'off'}")
    before, requests, samples_before = cpu_snapshot(api), api_requests(api), operator_samples(api)
    with Admissions(api) as admissions:
        seconds = longshot(api, builds, args.workers, args.timeout, args.window, args.finished_pods, warm=warm)
    cpu_lines.append(cpu_report(f"longshot{tag}", before, cpu_snapshot(api), seconds))
    cpu_lines.append(requests_report(f"longshot{tag}", requests, api_requests(api)))
    for name, bare in bares.items():
        files = git("--git-dir", str(bare), "ls-tree", "--name-only", "main", "work/").split()
        log(f"{name}: main holds {len(files)} task files")
    pods, merged = pods_and_merges(api, list(builds))
    samples = operator_samples(api)
    was = dispatch_buckets(samples_before)
    buckets = {le: v - was.get(le, 0.0) for le, v in dispatch_buckets(samples).items()}
    hits0, misses0 = warm_claims(samples_before)
    hits, misses = warm_claims(samples)
    starts = start_seconds(api, list(builds), admissions)
    cpu_lines.append(reconcile_report(samples))
    for line in build_timelines(api, list(builds)):
        log(line)
    return Phase(tag, seconds, pods, merged, histogram_quantile(0.95, buckets), int(buckets.get(float("inf"), 0)),
                 p50(starts), len(starts), hits - hits0, misses - misses0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--workers", type=int, default=20, help="workers.max of each build, and the floor's W")
    parser.add_argument("--repos", type=int, default=1, help="split the tasks over this many repositories/builds")
    parser.add_argument("--replicas", type=int, default=1, help="operator replicas")
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--warm", type=int, default=0, metavar="N",
                        help="after the cold Longshot phase, a second one with spec.agent.warmPool.size N "
                             "(docs/warm-pools.md); the last line gives both")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--keep-cluster", action="store_true")
    parser.add_argument("--window", type=int, default=32, help="spec.merge.window of each build (1: serial)")
    parser.add_argument("--finished-pods", type=int, default=None,
                        help="spec.retention.finishedPods of each build (default: the CRD's, 10)")
    parser.add_argument("--dump", type=Path, metavar="DIR",
                        help="write the builds' BuildRequests, AgentTasks and MergeJobs there as JSON (for study)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a chart value, as helm's --set (repeatable)")
    parser.add_argument("--images-from", type=Path, metavar="TREE",
                        help="run the operator and agent images built from another checkout (its hack/images.sh, "
                             "with LONGSHOT_IMAGE_CACHE as given): a before-and-after pair with this harness, chart "
                             "and floor")
    args = parser.parse_args()
    bin_dir = Path(run("bash", str(ROOT / "hack/k8s-binaries.sh")))
    tree = (args.images_from or ROOT).resolve()
    archives = [Path(run("bash", str(tree / "hack/images.sh"), "path", name)) for name in IMAGES]
    if args.images_from:
        log(f"images from {tree}: {', '.join(a.name for a in archives)}")
    c = lc.LocalCluster(bin_dir=bin_dir, images=archives)
    c.up()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
            work = Path(tmp)
            fresh_namespace(c)  # first: the chart binds the Secret reader and the NetworkPolicy in it
            install_chart(c, args.replicas, args.workers, args.set)
            api = kubernetes.config.new_client_from_config(config_file=str(c.kubeconfig))
            names = [f"t{i:03d}" for i in range(args.tasks)]
            floor_s = float("nan")
            cpu_lines: list[str] = []
            if not args.no_floor:
                bare, url = repository(c, f"{NS}-floor", work)
                c.kubectl("-n", NS, "create", "configmap", "script-floor",
                          f"--from-literal=script.yaml={script(names)}")
                operator_replicas(c, 0)  # the floor has no operator (see the docstring)
                settle(api, "bench=floor")
                before, requests = cpu_snapshot(api), api_requests(api)
                floor_s = floor(api, bare, url, names, args.workers)
                cpu_lines.append(cpu_report("floor", before, cpu_snapshot(api), floor_s))
                cpu_lines.append(requests_report("floor", requests, api_requests(api)))
                settle(api, "bench=floor")
                gone(api, "floor")  # the operator comes back to none of the floor's objects
                operator_replicas(c, args.replicas)
                settle(api, "bench=floor")
            phases: list[Phase] = []
            for warm in ((0, args.warm) if args.warm else (0,)):
                if phases:
                    settle(api, "bench=none")  # quiet cores before the next phase
                phases.append(longshot_phase(c, api, work, names, args, warm, cpu_lines))
            if args.dump is not None:
                dump(api, args.dump)
            for line in cpu_lines:
                log(line)
    finally:
        if not args.keep_cluster:
            c.down()  # the cluster is a machine-wide singleton: down before the lock is released
    for ph in phases:
        log(f"longshot{ph.tag}: {ph.merged} merged in {ph.seconds:.1f}s ({ph.per_hour:.0f}/hour); {ph.pods} agent "
            f"Pods ({ph.pods / max(ph.merged, 1):.2f} per merge); dispatch p95 {ph.p95:.2f}s over {ph.observed} "
            f"admissions; start p50 {ph.start_p50:.2f}s over {ph.starts} attempts; warm claims {ph.hits} hit(s), "
            f"{ph.misses} miss(es); floor {floor_s:.1f}s")
    last = phases[-1]
    line = (f"e2e_vs_bare={floor_s / last.seconds:.2f} start_p50_s={last.start_p50:.2f} "
            f"merged_per_hour={last.per_hour:.0f} pods_per_merge={last.pods / max(last.merged, 1):.2f} "
            f"dispatch_p95_s={last.p95:.2f}")
    if len(phases) > 1:  # with warm pools on, the cold figures beside them
        cold = phases[0]
        line += (f" cold_e2e_vs_bare={floor_s / cold.seconds:.2f} cold_start_p50_s={cold.start_p50:.2f} "
                 f"cold_pods_per_merge={cold.pods / max(cold.merged, 1):.2f} cold_dispatch_p95_s={cold.p95:.2f} "
                 f"warm_hits={last.hits} warm_misses={last.misses}")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
