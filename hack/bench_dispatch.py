"""Dispatch benchmark: how fast ready AgentTasks become Pods, against the Job controller and against the physical
floor (the same Pods created by concurrent raw API calls); how fast a 10,000-task plan is taken in; the operator's
memory with 10,000 AgentTasks.

On one throw-away control plane (etcd + kube-apiserver + kube-controller-manager with its default settings, no
kubelet), in the same run:

1. **the Job controller**: one Job with parallelism = completions = N; time from creating the Job until N Pods
   exist (continuity with earlier figures; the controller-manager's client is held to 20 requests/s);
2. **raw creates** (the floor): the very Pod manifests the operator would create for N tasks (its own Pod builder),
   created by ``--raw-threads`` concurrent API calls with nothing else to do; time until all N exist. Measured before
   and again after Longshot's run (the machine is shared): the faster of the two is the floor;
3. **Longshot**: the same N ready AgentTasks of one already-planned, suspended BuildRequest, the operator running as
   a real process (``python -m longshot operator``) and caught up; time from un-suspending the build until N Pods
   exist;
4. **ingestion**: a new build whose planner returns 10 subplanners and 9 workers, and whose 10 subplanners
   return 998 tasks each (handoffs fetched from a git repository, as large plans are): 10,000 AgentTasks in all.
   Measured from the moment the subplanners' Pods end (the benchmark plays their kubelet) until every AgentTask
   of the build exists with its initial status (phase Pending, conditions);
5. **memory**: then the build's ``workers.max`` is raised to 1,000 (the most one build may run) and the operator
   dispatches them; its peak RSS (VmHWM) is read with the 10,000 AgentTasks and those Pods in its cache.
   (Finished agent Pods are deleted once their handoff is recorded, ``spec.retention``, so Pods in the cache are
   bounded by the running tasks plus those kept for debugging, not by the tasks a build has had.)

The last line reads ``dispatch_vs_job_controller_ratio=<ours/theirs> dispatch_vs_raw_creates=<ours/raw>
ingest_per_s=<tasks/s> peak_rss_mib=<n>``; it is always printed: a step that fails or does not finish within
``--step-timeout`` says what it measured so far, and the line ends with ``unfinished=<steps>``. Usage:
``python hack/bench_dispatch.py [--tasks 1000] [--subplans 10 --subplan-tasks 998] [--only job|raw|ingest]``.
Profiling the operator: ``BENCH_PROFILE=1`` (py-spy, collapsed stacks; ``gil``: the GIL holder only) and
``BENCH_TRACEMALLOC=1`` (its live Python memory by line after ingestion and after the last step), with ``--keep``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes

from longshot import config
from longshot.api import handoff as ho
from longshot.core import names
from longshot.runtime import pods as podmod
from longshot_testing import controlplane

ROOT = Path(__file__).resolve().parents[1]
GROUP, VERSION = "longshot.dev", "v1alpha1"
LABEL = "app.kubernetes.io/managed-by=longshot-operator"
RAW_LABEL = "bench=raw"
PROFILE = bool(os.environ.get("BENCH_PROFILE"))
"""``BENCH_PROFILE=1``: record the operator with py-spy (``profile-<namespace>.txt`` in the work directory);
``BENCH_PROFILE=gil``: only the thread holding the GIL (where the CPU goes)."""
PROFILERS: dict[int, subprocess.Popen[bytes]] = {}
TRACEMALLOC = bool(os.environ.get("BENCH_TRACEMALLOC"))
"""``BENCH_TRACEMALLOC=1``: the operator traces its allocations from the start of ingestion (SIGUSR1) and writes where
its live memory is (``tracemalloc-<label>.txt``, SIGUSR2) after ingestion and after the last dispatch (slower)."""
SITECUSTOMIZE = """
import signal, tracemalloc, os, pathlib
signal.signal(signal.SIGUSR1, lambda signum, frame: tracemalloc.start(2))
def _dump(signum, frame):
    out = pathlib.Path(os.environ["BENCH_TRACEMALLOC_OUT"])
    snap = tracemalloc.take_snapshot()
    cur, peak = tracemalloc.get_traced_memory()
    lines = [f"traced {cur / 2**20:.1f} MiB now, {peak / 2**20:.1f} MiB peak"]
    lines += [str(s) for s in snap.statistics("lineno")[:40]]
    lines += ["", "by traceback:"]
    for s in snap.statistics("traceback")[:15]:
        lines += [f"{s.size / 2**20:.1f} MiB in {s.count} blocks", *s.traceback.format()]
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\\n".join(lines) + "\\n")
    tmp.rename(out)
signal.signal(signal.SIGUSR2, _dump)
"""
GIT_ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | {
    "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com", "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


def log(msg: str) -> None:
    print(f"[bench-dispatch] {msg}", flush=True)


# --- helpers -------------------------------------------------------------------------------------------


def count_pods(core: kubernetes.client.CoreV1Api, namespace: str, selector: str) -> int:
    """Pods matching ``selector``, counted from a metadata-only page walk (cheap for the API server)."""
    n, token = 0, None
    while True:
        rsp = core.list_namespaced_pod(
            namespace, label_selector=selector, limit=500, _continue=token, _preload_content=False,
            _headers={"Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"})
        body = json.loads(rsp.data)
        n += len(body.get("items") or [])
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return n


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


def peak_rss_mib(pid: int, field: str = "VmHWM") -> float:
    """The process's peak resident memory (``VmRSS``: its resident memory now), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_operator(cp: controlplane.ControlPlane, ns: str, workdir: Path, max_workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "LONGSHOT_NAMESPACE": ns,
           "LONGSHOT_MAX_WORKERS": str(max_workers), "LONGSHOT_METRICS_PORT": "0",
           "LONGSHOT_WORKSPACE_DIR": str(workdir / f"ws-{ns}"), "LONGSHOT_NETWORK_POLICY": "false"}
    if TRACEMALLOC:
        site = workdir / "sitecustomize"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env["PYTHONPATH"] = f"{site}{os.pathsep}{env.get('PYTHONPATH', '')}"
        env["BENCH_TRACEMALLOC_OUT"] = str(workdir / f"tracemalloc-{ns}.txt")
    logf = open(workdir / f"operator-{ns}.log", "wb")  # noqa: SIM115
    p = subprocess.Popen([sys.executable, "-m", "longshot", "operator", "--namespace", ns],
                         stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    if PROFILE:  # a sampling profile of the operator (py-spy, collapsed stacks), written when it is stopped
        out = workdir / f"profile-{ns}.txt"
        PROFILERS[p.pid] = subprocess.Popen(
            ["py-spy", "record", "--pid", str(p.pid), "--format", "raw", "--rate", "50", "-o", str(out),
             *(["--gil"] if os.environ.get("BENCH_PROFILE") == "gil" else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        log(f"profiling the operator into {out}")
    return p


def memory(p: subprocess.Popen[bytes], workdir: Path, ns: str, label: str) -> None:
    """With ``BENCH_TRACEMALLOC``: the operator's live Python memory by line, into ``tracemalloc-<label>.txt``."""
    if not TRACEMALLOC:
        return
    out = workdir / f"tracemalloc-{ns}.txt"
    out.unlink(missing_ok=True)
    os.kill(p.pid, signal.SIGUSR2)
    controlplane.wait_until(out.exists, 300, "the operator's tracemalloc snapshot", 0.5)
    out.rename(workdir / f"tracemalloc-{label}.txt")
    log(f"operator memory by line: {workdir / f'tracemalloc-{label}.txt'}")


def stop(p: subprocess.Popen[bytes]) -> None:
    prof = PROFILERS.pop(p.pid, None)
    if prof is not None and prof.poll() is None:
        prof.send_signal(signal.SIGINT)
        try:
            prof.wait(60)
        except subprocess.TimeoutExpired:
            prof.kill()
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def build_body(name: str, url: str, workers: int, *, suspend: bool, planner: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    spec: dict[str, Any] = {"request": "bench", "repository": {"url": url}, "workers": {"max": workers},
                            "suspend": suspend, "agent": {"backend": "scripted"}}
    if planner:
        spec["planner"] = planner
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BuildRequest", "metadata": {"name": name}, "spec": spec}


# --- 1. the Job controller -------------------------------------------------------------------------------


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


# --- 2 and 3. raw creates and Longshot, the same Pods ----------------------------------------------------


def create_tasks(custom: kubernetes.client.CustomObjectsApi, ns: str, build_uid: str, n: int) -> list[dict[str, Any]]:
    def one(i: int) -> dict[str, Any]:
        body: dict[str, Any] = custom.create_namespaced_custom_object(GROUP, VERSION, ns, "agenttasks", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentTask",
            "metadata": {"name": f"t{i:05d}", "labels": {"longshot.dev/build": "bench"},
                         "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "BuildRequest",
                                              "name": "bench", "uid": build_uid, "controller": True}]},
            "spec": {"buildRef": {"name": "bench"}, "description": f"task {i}", "role": "worker"},
        })
        return body

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        return list(pool.map(one, range(n)))


def local_repository(workdir: Path, name: str) -> Path:
    """A bare repository with an empty commit on main: the operator checks the base branch before any Pod."""
    bare = workdir / f"{name}.git"
    git("init", "--quiet", "--bare", str(bare))
    base = git("--git-dir", str(bare), "commit-tree", git("--git-dir", str(bare), "mktree", input=b""), "-m", "base")
    git("--git-dir", str(bare), "update-ref", "refs/heads/main", base)
    return bare


def planned_build(custom: kubernetes.client.CustomObjectsApi, ns: str, workers: int, url: str) -> dict[str, Any]:
    b: dict[str, Any] = custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, "buildrequests", build_body("bench", url, workers, suspend=True))
    now = "2026-01-01T00:00:00Z"
    conds = [{"type": t, "status": s, "reason": r, "message": "", "lastTransitionTime": now}
             for t, s, r in (("Planned", "True", "PlanAccepted"), ("Progressing", "True", "TasksRunning"),
                             ("Merged", "Unknown", "Pending"), ("Finalized", "Unknown", "Pending"),
                             ("Ready", "False", "InProgress"), ("Suspended", "True", "Suspended"))]
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, "buildrequests", "bench", {
        "status": {"conditions": conds, "plannerTask": "bench-planner", "phase": "Suspended"}})
    return b


def idle(pid: int, window: float = 1.0, busy: float = 0.05) -> bool:
    """The process used under ``busy`` of a core over the next ``window`` seconds (its start-up work is done: the
    reconciles of everything it listed at start, which no longer write a status each)."""
    before = cpu_seconds(pid)
    time.sleep(window)
    return cpu_seconds(pid) - before < busy * window


def caught_up(custom: kubernetes.client.CustomObjectsApi, ns: str, n: int) -> bool:
    """The operator holds the build's ``n`` tasks: its status counts them. (A task's own status says nothing here:
    it is Pending with its conditions from its create, the CRD's default status.)"""
    b = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "buildrequests", "bench")
    return int(((b.get("status") or {}).get("tasks") or {}).get("total") or 0) >= n


def raw_creates(api: kubernetes.client.ApiClient, manifests: list[dict[str, Any]], threads: int) -> float:
    """The floor: create every Pod with ``threads`` concurrent API calls; seconds until the last one exists."""
    core = kubernetes.client.CoreV1Api(api)

    def one(m: dict[str, Any]) -> None:
        core.create_namespaced_pod(m["metadata"]["namespace"], m, _preload_content=False)

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, manifests))
    return time.monotonic() - start


def bench_longshot(cp: controlplane.ControlPlane, api: kubernetes.client.ApiClient, n: int, workdir: Path,
                   raw_threads: int, only_raw: bool = False) -> tuple[float, float]:
    """(raw creates Pods/s, Longshot Pods/s) for the same N tasks' Pods on the same API server."""
    core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
    ns = namespace(core, "bench-longshot")
    build = planned_build(custom, ns, workers=n, url=f"file://{local_repository(workdir, 'dispatch')}")
    tasks = create_tasks(custom, ns, build["metadata"]["uid"], n)
    # the floor: the Pods the operator would create for these tasks, built by its own Pod builder (named and
    # labelled apart so that the operator, started afterwards, ignores them; owned by the same tasks)
    settings = config.Settings.from_env()
    manifests = []
    for t in tasks:
        m = podmod.build_agent_pod(t, build, settings, 1)
        m["metadata"]["name"] = "raw-" + m["metadata"]["name"]
        m["metadata"]["labels"] = {**m["metadata"]["labels"], "app.kubernetes.io/managed-by": "bench", "bench": "raw"}
        manifests.append(m)
    seconds = raw_creates(api, manifests, raw_threads)
    have = count_pods(core, ns, RAW_LABEL)
    raw = n / seconds
    log(f"raw creates ({raw_threads} concurrent calls): {have} Pods in {seconds:.1f}s ({raw:.1f} Pods/s)")
    if only_raw:
        return raw, float("nan")
    op = start_operator(cp, ns, workdir, max_workers=n)
    try:
        t0 = time.monotonic()
        controlplane.wait_until(lambda: caught_up(custom, ns, n), 600, "the operator to take in every task", 0.5)
        controlplane.wait_until(lambda: idle(op.pid), 600, "the operator to finish its start-up reconciles", 0)
        log(f"operator took in {n} tasks in {time.monotonic() - t0:.1f}s (start-up, not measured)")
        cpu0 = cpu_seconds(op.pid)
        start = time.monotonic()
        custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "buildrequests", "bench",
                                              {"spec": {"suspend": False}})
        wait_pods(core, ns, LABEL, n, timeout=900)
        total = time.monotonic() - start
        log(f"longshot: {n} Pods in {total:.1f}s ({n / total:.1f} Pods/s); operator CPU "
            f"{cpu_seconds(op.pid) - cpu0:.1f}s, RSS {peak_rss_mib(op.pid):.0f} MiB")
    finally:
        stop(op)
    # the floor again, now that the operator is gone: the machine is shared, and the faster of the two is the floor
    for m in manifests:
        m["metadata"]["name"] = "raw2-" + m["metadata"]["name"][len("raw-"):]
    again = n / raw_creates(api, manifests, raw_threads)
    log(f"raw creates again, after Longshot: {again:.1f} Pods/s; the floor is the faster: {max(raw, again):.1f}")
    return max(raw, again), n / total


# --- 4 and 5. ingestion of a 10,000-task plan, then memory -----------------------------------------------


def git(*args: str, cwd: Path | None = None, input: bytes | None = None) -> str:
    return subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=GIT_ENV, input=input,
                          check=True, capture_output=True).stdout.decode().strip()


def handoff_commit(bare: Path, handoff: ho.Handoff, namespace: str, build: str) -> ho.HandoffPointer:
    """Store ``handoff`` at its handoff ref, as the agent runner pushes a large handoff; its pointer."""
    data = ho.encode(handoff)
    blob = git("--git-dir", str(bare), "hash-object", "-w", "--stdin", input=data)
    tree = git("--git-dir", str(bare), "mktree", input=f"100644 blob {blob}\t{ho.HANDOFF_FILE}\n".encode())
    commit = git("--git-dir", str(bare), "commit-tree", tree, "-m", f"handoff of {handoff.task}")
    ref = ho.handoff_ref(namespace, build, handoff.task, handoff.attempt)
    git("--git-dir", str(bare), "update-ref", ref, commit)
    return ho.HandoffPointer(ref=ref, commit=commit, sha256=ho.digest(data), size=len(data))


def finish_pod(core: kubernetes.client.CoreV1Api, ns: str, name: str, message: str) -> None:
    """What a kubelet writes when the agent container exits 0 with ``message`` as its termination message."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    core.patch_namespaced_pod_status(name, ns, {"status": {
        "phase": "Succeeded", "startTime": now,
        "containerStatuses": [{"name": "agent", "image": "agent", "imageID": "", "ready": False, "restartCount": 0,
                               "started": False, "state": {"terminated": {
                                   "exitCode": 0, "reason": "Completed", "message": message, "startedAt": now,
                                   "finishedAt": now}}}]}})


class TaskCounter:
    """Watches the namespace's AgentTasks; counts those the operator has given their initial status."""

    def __init__(self, api: kubernetes.client.ApiClient, ns: str) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.ns = ns
        self.ready: set[str] = set()
        self.seen: set[str] = set()
        self.changed = threading.Condition()
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        rv = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.ns, "agenttasks", limit=1)[
            "metadata"]["resourceVersion"]
        while not self._stop:
            w = kubernetes.watch.Watch()
            try:
                for ev in w.stream(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.ns, "agenttasks",
                                   resource_version=rv, timeout_seconds=60, allow_watch_bookmarks=True):
                    obj = ev["object"]
                    rv = obj["metadata"]["resourceVersion"]
                    if ev["type"] == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    status = obj.get("status") or {}
                    with self.changed:
                        self.seen.add(name)
                        if status.get("conditions") and status.get("phase"):
                            self.ready.add(name)
                        self.changed.notify_all()
                    if self._stop:
                        return
            except Exception as e:  # a dropped watch: resume from the last version
                log(f"task watch restarted: {e}")

    def wait(self, n: int, timeout: float) -> float:
        start = time.monotonic()
        with self.changed:
            while len(self.ready) < n:
                left = timeout - (time.monotonic() - start)
                if left <= 0:
                    raise TimeoutError(f"{len(self.ready)} of {n} AgentTasks have their status ({len(self.seen)} "
                                       f"exist) after {timeout}s")
                self.changed.wait(min(left, 1.0))
        return time.monotonic() - start

    def stop(self) -> None:
        self._stop = True


def bench_ingest(cp: controlplane.ControlPlane, api: kubernetes.client.ApiClient, subplans: int, per_subplan: int,
                 workers_after: int, workdir: Path, out: dict[str, float], step_timeout: float) -> None:
    """Fills ``out``: ``ingest_per_s`` (tasks taken in per second) and ``rss`` (the operator's peak RSS, MiB), each
    as soon as it is measured, so a later step that does not finish leaves the earlier figures."""
    core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
    ns = namespace(core, "bench-ingest")
    bare = local_repository(workdir, "ingest")
    extra_workers = 9
    total = 1 + subplans + extra_workers + subplans * per_subplan
    planner = {"maxTasks": max(per_subplan, subplans + extra_workers), "maxDepth": 1, "maxTotalTasks": total}
    name = "ingest"
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "buildrequests",
                                           build_body(name, f"file://{bare}", subplans + extra_workers + 1,
                                                      suspend=False, planner=planner))
    op = start_operator(cp, ns, workdir, max_workers=2000)
    counter = TaskCounter(api, ns)
    try:
        top = names.child_name(name, "planner")
        top_pod = names.pod_name(top, 1)
        controlplane.wait_until(lambda: count_pods(core, ns, f"longshot.dev/task={top}"), 120, "the planner's Pod")
        plan = [ho.PlannedTask(name=f"part-{i}", description=f"Part {i} of the system: split it up.", decompose=True)
                for i in range(subplans)]
        plan += [ho.PlannedTask(name=f"glue-{i}", description=f"Glue {i}.") for i in range(extra_workers)]
        finish_pod(core, ns, top_pod, ho.encode(ho.Handoff(task=top, attempt=1, role="planner", outcome="succeeded",
                                                           tasks=plan)).decode())
        subplanners = [names.child_name(name, f"part-{i}") for i in range(subplans)]
        pointers = {}
        for sp in subplanners:
            tasks = [ho.PlannedTask(name=f"w{j:04d}", description=f"Implement piece {j} of {sp}; write its tests.",
                                    priority=5, scope=[f"src/{sp}/w{j:04d}/**"]) for j in range(per_subplan)]
            pointers[sp] = handoff_commit(bare, ho.Handoff(task=sp, attempt=1, role="planner", outcome="succeeded",
                                                           tasks=tasks), ns, name)
        controlplane.wait_until(
            lambda: all(count_pods(core, ns, f"longshot.dev/task={sp}") for sp in subplanners), 300,
            "the subplanners' Pods", 0.5)
        counter.wait(1 + subplans + extra_workers, 120)
        rss0 = peak_rss_mib(op.pid)
        if TRACEMALLOC:
            os.kill(op.pid, signal.SIGUSR1)
        cpu0 = cpu_seconds(op.pid)
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(subplans) as pool:
            list(pool.map(lambda sp: finish_pod(core, ns, names.pod_name(sp, 1), json.dumps(pointers[sp].to_wire())),
                          subplanners))
        try:
            seconds = counter.wait(total, step_timeout)
        except TimeoutError:
            out["rss"] = peak_rss_mib(op.pid)
            log(f"ingestion did not finish: {len(counter.ready)} AgentTasks with their status after "
                f"{time.monotonic() - start:.0f}s; operator CPU {cpu_seconds(op.pid) - cpu0:.1f}s, peak RSS "
                f"{out['rss']:.0f} MiB")
            memory(op, workdir, ns, "ingesting")
            raise
        taken = subplans * per_subplan
        out["ingest_per_s"] = taken / seconds
        out["rss"] = peak_rss_mib(op.pid)
        log(f"ingestion: {taken} planned tasks taken in (created, initial status, Pending) in {seconds:.1f}s "
            f"({out['ingest_per_s']:.0f} tasks/s); {len(counter.ready)} AgentTasks in the build; operator CPU "
            f"{cpu_seconds(op.pid) - cpu0:.1f}s, peak RSS {rss0:.0f} MiB before, {out['rss']:.0f} after (RSS now "
            f"{peak_rss_mib(op.pid, 'VmRSS'):.0f})")
        memory(op, workdir, ns, "ingested")
        # memory: the most one build may run at once, dispatched from the 10,000-task build. Worker Pods are
        # counted: the planners' finished Pods are deleted meanwhile (spec.retention), so all Pods never add up
        workers = f"{LABEL},longshot.dev/role=worker"
        before = count_pods(core, ns, workers)
        start = time.monotonic()
        custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "buildrequests", name,
                                              {"spec": {"workers": {"max": workers_after}}})
        cpu0 = cpu_seconds(op.pid)
        try:
            wait_pods(core, ns, workers, workers_after, timeout=step_timeout)
        finally:  # what it reached, even when it did not finish
            took = time.monotonic() - start
            pods_now = count_pods(core, ns, workers)
            out["rss"] = peak_rss_mib(op.pid)
            log(f"dispatch in the {len(counter.ready)}-task build: {pods_now - before} more worker Pods "
                f"({pods_now} running, workers.max {workers_after}) in {took:.1f}s; "
                f"operator CPU {cpu_seconds(op.pid) - cpu0:.1f}s, peak RSS {out['rss']:.0f} MiB (now "
                f"{peak_rss_mib(op.pid, 'VmRSS'):.0f}) with "
                f"{len(counter.ready)} AgentTasks and {count_pods(core, ns, LABEL)} Pods")
        memory(op, workdir, ns, "dispatched")
    finally:
        counter.stop()
        stop(op)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=1000, help="ready tasks dispatched (and raw Pods created)")
    parser.add_argument("--raw-threads", type=int, default=32, help="concurrent calls of the raw-creates floor")
    parser.add_argument("--subplans", type=int, default=10)
    parser.add_argument("--subplan-tasks", type=int, default=998)
    parser.add_argument("--workers-after", type=int, default=1000, help="workers.max raised to after ingestion")
    parser.add_argument("--only", choices=("job", "raw", "longshot", "ingest"), default=None)
    parser.add_argument("--step-timeout", type=float, default=600,
                        help="seconds a step may take before it is reported as not finished")
    parser.add_argument("--bin-dir", default=None)
    parser.add_argument("--keep", default=None, help="keep the work directory (logs) here")
    args = parser.parse_args()
    bin_dir = args.bin_dir or subprocess.run(["bash", str(ROOT / "hack/k8s-binaries.sh")], check=True,
                                             capture_output=True, text=True).stdout.strip()
    theirs = raw = ours = float("nan")
    ingest: dict[str, float] = {"ingest_per_s": float("nan"), "rss": float("nan")}
    unfinished: list[str] = []

    def step(what: str, fn: Callable[[], None]) -> None:
        """Run one step; one that fails or times out is reported, and the benchmark goes on to its last line."""
        try:
            fn()
        except Exception as e:
            unfinished.append(what)
            log(f"step {what!r} did not finish: {type(e).__name__}: {e}")

    try:
        with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmp:
            work = Path(args.keep) if args.keep else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            with controlplane.ControlPlane(workdir=work / "cp", bin_dir=Path(bin_dir)) as cp:
                cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
                cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
                api = kubernetes.config.new_client_from_config(config_file=str(cp.kubeconfig))
                api.configuration.connection_pool_maxsize = 64

                def job() -> None:
                    nonlocal theirs
                    theirs = bench_job(api, args.tasks)

                def longshot() -> None:
                    nonlocal raw, ours
                    raw, ours = bench_longshot(cp, api, args.tasks, work, args.raw_threads,
                                               only_raw=args.only == "raw")

                if args.only in (None, "job"):
                    step("job controller", job)
                if args.only in (None, "raw", "longshot"):
                    step("raw creates and longshot dispatch", longshot)
                if args.only in (None, "ingest"):
                    step("ingestion and dispatch at 10,000 tasks", lambda: bench_ingest(
                        cp, api, args.subplans, args.subplan_tasks, args.workers_after, work, ingest,
                        args.step_timeout))
    except Exception as e:  # the control plane itself: still say what was measured
        unfinished.append("control plane")
        log(f"the control plane failed: {type(e).__name__}: {e}")
    finally:
        rate, rss = ingest["ingest_per_s"], ingest["rss"]
        log(f"longshot {ours:.1f} Pods/s vs job controller {theirs:.1f} Pods/s vs raw creates {raw:.1f} Pods/s; "
            f"ingestion {rate:.0f} tasks/s; peak RSS {rss:.0f} MiB"
            + (f"; did not finish: {', '.join(unfinished)}" if unfinished else ""))
        print(f"dispatch_vs_job_controller_ratio={ours / theirs:.2f} dispatch_vs_raw_creates={ours / raw:.2f} "
              f"ingest_per_s={rate:.0f} peak_rss_mib={rss:.0f}"
              + (f" unfinished={','.join(s.replace(' ', '_') for s in unfinished)}" if unfinished else ""),
              flush=True)
    return 1 if unfinished else 0


if __name__ == "__main__":
    sys.exit(main())
