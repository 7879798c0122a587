#!/usr/bin/env python3
"""Fleet benchmark (``make bench-fleet``): many simulated agents through the real operator and the real merge
queue, on simulated nodes.

What is real: etcd, kube-apiserver and kube-controller-manager (``longshot_testing.controlplane``), kube-scheduler,
the operator (``python -m longshot operator``, ``--replicas`` processes sharding the repositories by Lease), its
merge queue and all of its git work (fetches, secret scans, speculative commits, bisection, compare-and-swap
pushes), and a git forge (``longshot_testing.forge``: smart HTTP with a credential) serving one bare repository
per build. What is simulated: the nodes and the Pods' lives (kwok: the scheduler binds agent Pods to kwok nodes and
kwok marks them Running; no container runs), and the agents, which are this process:

* a **worker** (or fixer) Pod, once Running, "thinks" for ``--think-seconds`` (uniform in 0.5x..1.5x; 180 s by
  default: a thousand agents then offer 20,000 tasks an hour, twice the target, and run at once on two cores, where
  at 30 s the simulated cluster alone needed 2.1 cores and 250 to 490 ran), then writes
  its change **straight into the forge's repository** (a commit adding ``work/<xx>/<task>.txt`` on ``main`` as of
  at most 5 s ago, written as git objects and its branch ref on the forge's disk: not pushed over HTTP and not
  through longshot-gateway), and ends its Pod with the real exit protocol: the Pod's phase and the agent
  container's terminated state (exit code 0) with the encoded handoff (branch, commit, files) as its termination
  message, as the kubelet reports it;
* one worker in ``1 / --gate-failure-rate`` (seeded) writes ``BROKEN``: a culprit for the queue to find;
* a **gate** (tester) Pod runs for ``--gate-seconds`` and fails when the commit it is bound to (its queue branch's
  speculative commit) holds a culprit's broken file, else passes (handoff verdict ``passed``/``failed``); a
  **fixer** rewrites the broken file on the culprit's branch. Sweeps are testers too.

Flow: one BuildRequest per repository, already planned (its AgentTasks created by this benchmark: the user's
``create``), with ``workers.max`` = agents / repos, window 32, depth 2 (``--depth``), rebase, the minimal quality
gate. The operator starts first; each build is created suspended with enough tasks to fill its worker slots; once the
operator has taken them in (its builds' statuses count them), the builds are resumed and the clock starts, and the rest
of the tasks are created while the fleet runs (500 at a time per build), as a plan's tasks arrive. The run
ends when every task's work is merged, after ``--duration`` seconds, or earlier so that the whole benchmark fits in
``--budget`` seconds (14 minutes), whichever comes first; it then says how far it got.

Printed: progress every 30 s; where CPU went (each process); the operator's reconciles by kind (count, seconds) and
its merge-queue phases (``longshot_merge_queue_phase_seconds``); the API server's requests by verb and resource
(``apiserver_request_total``) and its writes by client (an audit log of writes only: operator, simulated kubelet,
kwok, scheduler, controller-manager). Last line::

    merged_per_hour=… agents=… tasks=… operator_cpu_s_per_merge=… api_writes_per_merge=… peak_rss_mib=…
    dispatch_p95_s=… queue_wait_p95_s=…

``api_writes_per_merge``: writes for one task's whole life, as the issue counts them: the user's create and the
operator's writes to the tasks whose work merged (the task, its Pods, MergeJobs and ledger entries, from the audit
log by object name), plus every write that is no one task's (gate tasks, builds, Leases, Events), per merge. The
writes to tasks still in flight at the end are left out and said (the operator's writes over merges, which counts
them, is printed too). ``peak_rss_mib``: the
largest peak RSS (VmHWM) of a replica. ``dispatch_p95_s``: the operator's ``longshot_dispatch_latency_seconds`` p95
after the first fill (from when 95 % of the agents have started, or the first one ended: the fleet's first
thousand admissions at the start are a burst of their own, 64 an admission; the whole run's p95 is printed too).
``merged_per_hour``: merges over the whole run from the resume; the rate from the first merge is printed too.
``queue_wait_p95_s``: from a MergeJob's creation to its Merged phase, as this benchmark's watch saw them.

Usage: ``python hack/bench_fleet.py [--tasks 10000] [--agents 1000] [--repos 1] [--replicas 1] [--think-seconds 180]
[--gate-seconds 5] [--gate-failure-rate 0.005] [--duration 600] [--budget 840] [--tenants 1|2] [--quiet-every 20]
[--through-gateway] [--keep DIR]``; ``make bench-fleet BENCH_FLEET_ARGS='--repos 4 --replicas 3'`` for four
repositories on three replicas. ``--through-gateway``: one real longshot-gateway, and the workers and fixers clone
and push through it with Pod-bound tokens as the runner does, heartbeats included (``bench_fleet_gateway``; no floor
run); the last line gains ``gateway_cpu_s_per_merge=… gateway_peak_rss_mib=… clone_p50_s=… clone_p95_s=…
push_p50_s=… push_p95_s=…``.
``--tenants 2``: fair admission by capacity (issue 57) on kwok nodes that hold the fleet's agents only, with a quiet
second tenant making one small build every ``--quiet-every`` seconds; it prints the quiet tenant's first-Pod-running
p95 (from its task's create, and from the moment room freed after it: the first of the fleet's agents to end) and
the tenants' agents over time, and the last line gains ``quiet_first_pod_p95_s=… quiet_after_room_p95_s=…
quiet_share=…``.
"""

from __future__ import annotations

import argparse
import bisect
import concurrent.futures
import contextlib
import hashlib
import heapq
import json
import math
import os
import random
import re
import secrets
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "hack"))

import bench_fleet_floor  # noqa: E402
import bench_fleet_gateway  # noqa: E402
import kubernetes  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from longshot.api import handoff as ho  # noqa: E402
from longshot_testing import controlplane  # noqa: E402
from longshot_testing.quantiles import histogram_quantile  # noqa: E402

GROUP, VERSION = "longshot.dev", "v1alpha1"
NS = "bench-fleet"
QUIET_NS = "bench-fleet-quiet"
"""The second tenant of ``--tenants 2``: one small build every ``--quiet-every`` seconds while the fleet fills the
nodes."""
LABEL = "app.kubernetes.io/managed-by=longshot-operator"
USER_AGENT = "longshot-bench-fleet"
FORGE_USER = "longshot"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
PODS_PER_NODE = 250
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
METRIC_WRITE_VERBS = ("POST", "CREATE", "PUT", "UPDATE", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY")
HOST_PROCESSES = ("etcd", "kube-apiserver", "kube-controller-manager")


def log(msg: str) -> None:
    print(f"[bench-fleet] {msg}", flush=True)


# --- pure helpers (unit-tested in tests/integration/hack/test_bench_fleet.py) -----------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation between closest ranks (numpy's default);
    NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)




@dataclass
class Samples:
    """Prometheus text-format samples, summed over every scraped target (several replicas)."""

    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def add_text(self, text: str) -> None:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                self.values[key] = self.values.get(key, 0.0) + float(s.value)

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        """``name``'s samples summed by the value of ``label``, among those whose labels match ``match``."""
        out: dict[str, float] = {}
        for (n, labels), v in self.values.items():
            d = dict(labels)
            if n == name and all(d.get(k) == val for k, val in match.items()):
                out[d.get(label, "")] = out.get(d.get(label, ""), 0.0) + v
        return out

    def buckets(self, name: str, **match: str) -> dict[float, float]:
        """A histogram's cumulative buckets ``{le: count}`` (``name`` without ``_bucket``), summed."""
        return {float(le): v for le, v in self.by(f"{name}_bucket", "le", **match).items()}

    def minus(self, before: Samples) -> Samples:
        return Samples({k: v - before.values.get(k, 0.0) for k, v in self.values.items()})


def client_of(user_agent: str) -> str:
    """Which component sent a request, from its User-Agent (the benchmark's own client sets :data:`USER_AGENT`)."""
    for prefix, name in (("kwok", "kwok"), ("kube-scheduler", "scheduler"),
                         ("kube-controller-manager", "controller-manager"), ("kube-apiserver", "apiserver"),
                         ("kubectl", "kubectl"), (USER_AGENT, "bench")):
        if user_agent.startswith(prefix):
            return name
    return "operator"


def audit_writes(lines: Iterable[str | bytes]) -> Counter[tuple[str, str, str, int]]:
    """Writes in an audit log (JSON lines, stage ResponseComplete), counted by (client, verb, resource[/sub],
    HTTP code). Lines that are not complete JSON events (a line cut by the reader) are skipped."""
    return collapse(audit_object_writes(lines))


def audit_object_writes(lines: Iterable[str | bytes]) -> Counter[tuple[str, str, str, str, int]]:
    """Writes in an audit log (JSON lines, stage ResponseComplete), counted by (client, verb, resource[/sub], object
    name, HTTP code); the name is "" where the request names none (an Event made with ``generateName``). Lines that
    are not complete JSON events (a line cut by the reader) are skipped."""
    out: Counter[tuple[str, str, str, str, int]] = Counter()
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if not isinstance(ev, dict) or ev.get("stage") != "ResponseComplete" or ev.get("verb") not in WRITE_VERBS:
            continue
        ref = ev.get("objectRef") or {}
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        code = int((ev.get("responseStatus") or {}).get("code") or 0)
        out[(client_of(ev.get("userAgent") or ""), ev["verb"], resource, str(ref.get("name") or ""), code)] += 1
    return out


_ATTEMPT = re.compile(r"-a[0-9]+$")


def task_of(resource: str, name: str) -> str:
    """The AgentTask an object belongs to, by its name: the task itself; its Pods (``<task>-a<N>``); its MergeJobs
    (``<task>``, or ``<task>-a<N>`` after a relaunch); its ledger entries (``<task>-a<N>-ledger``). "" for anything
    else (builds, Leases, Events)."""
    kind = resource.split("/")[0]
    if kind == "agenttasks":
        return name
    if kind == "configmaps" and name.endswith("-ledger"):
        return _ATTEMPT.sub("", name.removesuffix("-ledger"))
    if kind in ("pods", "mergejobs"):
        return _ATTEMPT.sub("", name)
    return ""


@dataclass
class Lifecycle:
    """The user's and the operator's writes (refused ones left out), split by whose they are."""

    merged: int = 0
    """Tasks whose work merged (their MergeJob's phase ``Merged``)."""
    per_task: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(verb, resource): writes to a merged task's own objects (the task, its Pods, MergeJobs, ledger entries)."""
    shared: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(verb, resource): writes to no one task that merged: the queue's gate tasks and fixers that did not merge
    themselves, builds, Leases, every Event (they name no object in the audit log)."""
    in_flight: int = 0
    """Writes to the user's tasks whose work had not merged at the end (running, queued, failed)."""
    in_flight_tasks: int = 0

    @property
    def per_merge(self) -> float:
        """Writes for one merged task's whole life: its own, plus the shared ones spread over the merges."""
        if self.merged <= 0:
            return float("nan")
        return (sum(self.per_task.values()) + sum(self.shared.values())) / self.merged


def lifecycle(writes: Mapping[tuple[str, str, str, str, int], int], merged_jobs: Iterable[str]) -> Lifecycle:
    """``api_writes_per_merge`` as the issue counts it, "for the whole life of a task": the writes of the tasks whose
    work merged (the user's create, the operator's writes to the task, its Pods, its MergeJob, its ledger entries),
    plus every write that is no one task's (gates, fixers, builds, Leases, Events), per merge. The writes to tasks
    still in flight at the end are counted apart: they are the next merges', not these."""
    merged = {task_of("mergejobs", n) for n in merged_jobs}
    users = {name for (cl, verb, res, name, code) in writes if cl == "bench" and verb == "create"
             and res == "agenttasks" and code < 400}
    out = Lifecycle(merged=len(merged))
    busy: set[str] = set()
    for (cl, verb, res, name, code), n in writes.items():
        if code >= 400 or not (cl == "operator" or (cl == "bench" and verb == "create" and res == "agenttasks")):
            continue
        t = task_of(res, name)
        if t in merged:
            out.per_task[(verb, res)] += n
        elif t in users:
            out.in_flight += n
            busy.add(t)
        else:
            out.shared[(verb, res)] += n
    out.in_flight_tasks = len(busy)
    return out


def is_write(verb: str) -> bool:
    return verb.upper() in METRIC_WRITE_VERBS


def api_writes_per_merge(before: int, tasks: int, during: int, merged: int) -> float:
    """Writes per task over its whole life: those before the clock (creates, initial statuses) per task, plus those
    while the fleet ran per merge."""
    if merged <= 0 or tasks <= 0:
        return float("nan")
    return before / tasks + during / merged


def fanout_path(task: str) -> str:
    """Where a task's file lives: ``work/<2 hex of its name's hash>/<task>.txt`` (small trees, like a real repo)."""
    return f"work/{hashlib.sha1(task.encode()).hexdigest()[:2]}/{task}.txt"


def is_culprit(task: str, rate: float, seed: int) -> bool:
    """Whether ``task`` writes a broken file: a seeded draw, the same in every run."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:{task}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


# --- git objects written straight into the forge's repository --------------------------------------------


class Repo:
    """A bare repository on the forge's disk that simulated agents write into: loose objects written here (git's
    own format), trees read through one long-lived ``git cat-file --batch``, branch refs written as git writes
    loose refs (lock file, rename)."""

    def __init__(self, path: Path, env: Mapping[str, str]) -> None:
        self.path = path
        self.env = dict(env)
        self._lock = threading.Lock()
        self._cat = subprocess.Popen(["git", "--git-dir", str(path), "cat-file", "--batch"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=self.env)
        self._trees: dict[str, list[tuple[bytes, bytes, bytes]]] = {}
        self.base = self.rev("refs/heads/main")
        self.broken_blobs: dict[str, str] = {}
        """path -> blob id of a culprit's broken file."""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self._cat.stdin is not None
            self._cat.stdin.close()
        self._cat.wait(10)
        if self._cat.stdout is not None:
            self._cat.stdout.close()

    def rev(self, ref: str) -> str:
        return subprocess.run(["git", "--git-dir", str(self.path), "rev-parse", ref], env=self.env, check=True,
                              capture_output=True, text=True).stdout.strip()

    def refresh_base(self) -> None:
        self.base = self.rev("refs/heads/main")

    def _read(self, spec: str) -> tuple[str, str, bytes] | None:
        """(sha, type, content) of ``spec`` (``<commit>:<path>`` too), or None when it does not exist."""
        with self._lock:
            assert self._cat.stdin is not None and self._cat.stdout is not None
            self._cat.stdin.write(spec.encode() + b"\n")
            self._cat.stdin.flush()
            header = self._cat.stdout.readline().split()
            if len(header) != 3:
                return None
            size = int(header[2])
            data = self._cat.stdout.read(size + 1)[:size]
            return header[0].decode(), header[1].decode(), data

    def object_id(self, spec: str) -> str | None:
        got = self._read(spec)
        return got[0] if got is not None else None

    def _tree(self, sha: str | None) -> list[tuple[bytes, bytes, bytes]]:
        """A tree's entries (mode, name, raw id); [] for None."""
        if sha is None:
            return []
        cached = self._trees.get(sha)
        if cached is not None:
            return cached
        got = self._read(sha)
        assert got is not None and got[1] == "tree", f"{sha} is not a tree"
        data, entries, i = got[2], [], 0
        while i < len(data):
            sp = data.index(b" ", i)
            nul = data.index(b"\0", sp)
            entries.append((data[i:sp], data[sp + 1:nul], data[nul + 1:nul + 21]))
            i = nul + 21
        if len(self._trees) > 4096:
            self._trees.clear()
        self._trees[sha] = entries
        return entries

    def write(self, kind: str, data: bytes) -> str:
        raw = f"{kind} {len(data)}\0".encode() + data
        sha = hashlib.sha1(raw).hexdigest()
        path = self.path / "objects" / sha[:2] / sha[2:]
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            tmp = path.parent / f"tmp_obj_{secrets.token_hex(6)}"
            tmp.write_bytes(zlib.compress(raw, 1))
            tmp.chmod(0o444)
            os.replace(tmp, path)
        return sha

    def _with(self, tree: str | None, parts: list[str], blob: str) -> str:
        """The tree ``tree`` with the file at ``parts`` set to ``blob``; its id."""
        entries = {name: (mode, raw) for mode, name, raw in self._tree(tree)}
        name = parts[0].encode()
        if len(parts) == 1:
            entries[name] = (b"100644", bytes.fromhex(blob))
        else:
            sub = entries.get(name)
            new = self._with(sub[1].hex() if sub is not None else None, parts[1:], blob)
            entries[name] = (b"40000", bytes.fromhex(new))

        def order(n: bytes) -> bytes:  # git sorts a tree's entries as if directories' names ended with "/"
            return n + b"/" if entries[n][0] == b"40000" else n

        body = b"".join(entries[n][0] + b" " + n + b"\0" + entries[n][1] for n in sorted(entries, key=order))
        return self.write("tree", body)

    def commit_file(self, parent: str, path: str, content: bytes, message: str) -> str:
        """A commit on ``parent`` whose tree is ``parent``'s with ``path`` holding ``content``."""
        blob = self.write("blob", content)
        got = self._read(f"{parent}^{{tree}}")
        assert got is not None
        tree = self._with(got[0], path.split("/"), blob)
        stamp = f"{int(time.time())} +0000"
        body = (f"tree {tree}\nparent {parent}\nauthor Longshot Agent <agent@longshot.local> {stamp}\n"
                f"committer Longshot Agent <agent@longshot.local> {stamp}\n\n{message}")
        return self.write("commit", body.encode())

    def set_ref(self, ref: str, sha: str) -> None:
        """Point ``ref`` at ``sha`` as git writes a loose ref (a lock file renamed over it)."""
        path = self.path / ref
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(path.name + ".lock")
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, f"{sha}\n".encode())
        finally:
            os.close(fd)
        os.replace(lock, path)


# --- the simulated agents ----------------------------------------------------------------------------------


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Stats:
    finished: Counter[str] = field(default_factory=Counter)
    """Pods ended, by role and verdict."""
    agent_seconds: list[float] = field(default_factory=list)
    """From a Pod's creation (as the watch saw it) to its Running (kwok): the scheduling and start delay."""
    errors: list[str] = field(default_factory=list)
    running_at: dict[str, float] = field(default_factory=dict)
    """Pod name -> when this watch saw it Running."""
    fleet_ends: list[float] = field(default_factory=list)
    """When each of the fleet's agent Pods was ended (its status written), in order: when room freed."""


class Agents:
    """Watches the namespace's agent Pods; each one that kwok marks Running gets its agent: a timer, then the
    work (``_finish``) on a thread pool."""

    def __init__(self, api: kubernetes.client.ApiClient, repos: dict[str, Repo], args: argparse.Namespace,
                 gateway: bench_fleet_gateway.GatewayAgents | None = None) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.gateway = gateway
        """``--through-gateway``: workers and fixers clone and push through longshot-gateway."""
        self.repos = repos
        self.think = args.think_seconds
        self.gate_seconds = args.gate_seconds
        self.rate = args.gate_failure_rate
        self.seed = args.seed
        self.rng = random.Random(args.seed)
        self.pool = concurrent.futures.ThreadPoolExecutor(args.agent_threads, thread_name_prefix="agent")
        self.git_pool = (concurrent.futures.ThreadPoolExecutor(args.git_threads, thread_name_prefix="agent-git")
                         if gateway is not None else self.pool)
        """``--through-gateway``: the workers' and fixers' clones and pushes, apart: a gate's verdict must not wait
        behind them (each agent is a Pod of its own, which waits for nobody's git)."""
        self.started: set[str] = set()
        self.created: dict[str, float] = {}
        self.stats = Stats()
        self._timers: list[tuple[float, int, dict[str, Any]]] = []
        self._seq = 0
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self.namespaces = [NS, QUIET_NS] if args.tenants > 1 else [NS]
        self.live: dict[str, set[str]] = {ns: set() for ns in self.namespaces}
        """Namespace -> its agent Pods running now (the tenants' shares over time)."""
        self._threads = [*(threading.Thread(target=self._watch, args=(ns,), daemon=True, name=f"pod-watch-{ns}")
                           for ns in self.namespaces),
                         threading.Thread(target=self._timer, daemon=True, name="agent-timer")]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.git_pool.shutdown(wait=False, cancel_futures=True)

    def _watch(self, namespace: str) -> None:
        for ev in raw_watch(self.core.list_namespaced_pod, namespace, self._stop, label_selector=LABEL):
            pod = ev["object"]
            meta, status = pod.get("metadata") or {}, pod.get("status") or {}
            name = meta.get("name", "")
            if ev["type"] == "ADDED":
                self.created.setdefault(name, time.monotonic())
            if (ev["type"] in ("ADDED", "MODIFIED") and status.get("phase") == "Running"
                    and not meta.get("deletionTimestamp") and name not in self.started):
                self.started.add(name)
                self.stats.running_at[name] = time.monotonic()
                self.live[namespace].add(name)
                if name in self.created:
                    self.stats.agent_seconds.append(time.monotonic() - self.created[name])
                role = (meta.get("labels") or {}).get("longshot.dev/role", "worker")
                base = self.gate_seconds if role == "tester" else self.think
                delay = base * self.rng.uniform(0.5, 1.5) if role != "tester" else base
                if self.gateway is not None and role in ("worker", "fixer"):
                    # the runner clones first, then thinks: the clone on the pool, the timer once it is done
                    self.git_pool.submit(self._clone_then_think, pod, time.monotonic() + delay)
                    continue
                self._after(pod, time.monotonic() + delay)
            elif ev["type"] == "DELETED":
                self.created.pop(name, None)
                self.live[namespace].discard(name)

    def _after(self, pod: dict[str, Any], deadline: float) -> None:
        with self._cv:
            self._seq += 1
            heapq.heappush(self._timers, (deadline, self._seq, pod))
            self._cv.notify()

    def _clone_then_think(self, pod: dict[str, Any], deadline: float) -> None:
        assert self.gateway is not None
        try:
            task = ho.TaskInput.model_validate_json(pod["metadata"]["annotations"][ho.TASK_INPUT_ANNOTATION])
            self.gateway.clone(pod, task.namespace, task.build)
        except Exception as e:  # cloned again when its time comes
            if len(self.stats.errors) < 20:
                self.stats.errors.append(f"{pod['metadata']['name']} clone: {type(e).__name__}: {e}")
        self._after(pod, deadline)

    def _timer(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                while not self._timers or self._timers[0][0] > time.monotonic():
                    if self._stop.is_set():
                        return
                    self._cv.wait(None if not self._timers else max(0.0, self._timers[0][0] - time.monotonic()))
                _, _, pod = heapq.heappop(self._timers)
            role = (pod["metadata"].get("labels") or {}).get("longshot.dev/role", "worker")
            try:
                (self.git_pool if role in ("worker", "fixer") else self.pool).submit(self._finish_safely, pod)
            except RuntimeError:  # shut down
                return

    def _finish_safely(self, pod: dict[str, Any]) -> None:
        try:
            self._finish(pod)
        except Exception as e:
            if len(self.stats.errors) < 20:
                self.stats.errors.append(f"{pod['metadata']['name']}: {type(e).__name__}: {e}")

    def _finish(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        task = ho.TaskInput.model_validate_json(meta["annotations"][ho.TASK_INPUT_ANNOTATION])
        repo = self.repos[task.repository_url.rstrip("/").rsplit("/", 1)[-1]]
        result = self._work(task, repo, meta["name"])
        message = ho.encode(result).decode()
        assert ho.fits_termination_message(message.encode()), "a simulated handoff is always small"
        code = 0 if result.outcome != "failed" else 1
        started = (pod.get("status") or {}).get("startTime") or now_stamp()
        ns = meta.get("namespace") or NS
        self.live.get(ns, set()).discard(meta["name"])
        try:
            self.core.patch_namespaced_pod_status(meta["name"], ns, {"status": {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [{
                    "name": "agent", "image": pod["spec"]["containers"][0]["image"], "imageID": "", "ready": False,
                    "restartCount": 0, "started": False,
                    "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                             "message": message, "startedAt": started,
                                             "finishedAt": now_stamp()}}}]}})
        except kubernetes.client.ApiException as e:
            if e.status != 404:  # deleted meanwhile (a cancelled gate): nothing to report
                raise
            return
        verdict = f"/{result.verdict}" if result.verdict else ""
        self.stats.finished[f"{task.role}{verdict}"] += 1
        if ns == NS:
            self.stats.fleet_ends.append(time.monotonic())

    def _work(self, task: ho.TaskInput, repo: Repo, pod: str = "") -> ho.Handoff:
        """What the agent of ``task`` does at the boundary: its git write and its handoff."""
        if self.gateway is not None and task.role in ("worker", "fixer"):
            return self._work_through_gateway(task, repo, pod)
        common = {"task": task.task, "attempt": task.attempt, "role": task.role}
        if task.role == "tester":
            commit = task.commit or repo.rev(f"refs/heads/{task.branch}")
            broken = [p for p, blob in list(repo.broken_blobs.items()) if repo.object_id(f"{commit}:{p}") == blob]
            if broken:
                return ho.Handoff(**common, outcome="succeeded", verdict="failed", branch=task.branch, commit=commit,
                                  reasons=["`make test` exited with code 1", f"FAILED: {broken[0]} is broken"],
                                  summary=f"tests failed on {task.branch}")
            return ho.Handoff(**common, outcome="succeeded", verdict="passed", branch=task.branch, commit=commit,
                              reasons=["`make test` exited with code 0"], summary=f"tests passed on {task.branch}")
        if task.role in ("worker", "fixer"):
            plan_name = task.task
            path = fanout_path(plan_name)
            ref = f"refs/heads/{task.branch}"
            existing = repo.object_id(ref) if task.role == "fixer" or task.attempt > 1 else None
            start = existing or repo.base
            if task.role == "fixer":
                broken_path = next((p for p, blob in list(repo.broken_blobs.items())
                                    if repo.object_id(f"{start}:{p}") == blob), path)
                path, content = broken_path, f"fixed by {task.task}\n".encode()
            elif is_culprit(task.task, self.rate, self.seed):
                content = f"BROKEN by {task.task}\n".encode()
                repo.broken_blobs[path] = repo.write("blob", content)
            else:
                content = f"result of {task.task}\n".encode()
            commit = repo.commit_file(start, path, content,
                                      f"{task.task}: {task.role} change\n\nLongshot-Build: {task.build}\n"
                                      f"Longshot-Task: {task.task}\nLongshot-Attempt: {task.attempt}\n")
            repo.set_ref(ref, commit)
            return ho.Handoff(**common, outcome="succeeded", branch=task.branch, commit=commit, base_commit=start,
                              files_changed=[path], summary=f"{task.role} {task.task}: wrote {path}")
        if task.role == "planner":
            return ho.Handoff(**common, outcome="succeeded", done=True, summary="the request is met")
        return ho.Handoff(**common, outcome="succeeded", verdict="approved", summary="fine", reasons=["fine"])

    def _work_through_gateway(self, task: ho.TaskInput, repo: Repo, pod: str) -> ho.Handoff:
        """A worker's or fixer's git as the runner does it (``--through-gateway``): the change committed on its
        clone's base (or its own branch's tip) and pushed through longshot-gateway."""
        gw = self.gateway
        assert gw is not None
        common = {"task": task.task, "attempt": task.attempt, "role": task.role}
        if not gw.has_clone(pod):
            got = self.core.read_namespaced_pod(pod, task.namespace, _preload_content=False)
            gw.clone(json.loads(got.data), task.namespace, task.build)
        path = fanout_path(task.task)
        existing = (gw.rev(pod, f"refs/remotes/origin/{task.branch}")
                    if task.role == "fixer" or task.attempt > 1 else None)
        start = existing or gw.rev(pod, "HEAD") or gw.rev(pod, f"refs/remotes/origin/{task.base_branch or 'main'}")
        assert start is not None, f"{pod}: the clone has no base"
        if task.role == "fixer":
            broken_path = next((p for p, blob in list(repo.broken_blobs.items())
                                if gw.read(pod, f"{start}:{p}") == blob), path)
            path, content = broken_path, f"fixed by {task.task}\n".encode()
        elif is_culprit(task.task, self.rate, self.seed):
            content = f"BROKEN by {task.task}\n".encode()
            repo.broken_blobs[path] = bench_fleet_gateway.blob_id(content)
        else:
            content = f"result of {task.task}\n".encode()
        commit = gw.commit_and_push(pod, start, task.branch, path, content,
                                    f"{task.task}: {task.role} change\n\nLongshot-Build: {task.build}\n"
                                    f"Longshot-Task: {task.task}\nLongshot-Attempt: {task.attempt}\n")
        return ho.Handoff(**common, outcome="succeeded", branch=task.branch, commit=commit, base_commit=start,
                          files_changed=[path], summary=f"{task.role} {task.task}: wrote {path}")


# --- watching ----------------------------------------------------------------------------------------------


def raw_watch(list_fn: Callable[..., Any], namespace: str, stop: threading.Event, *args: Any,
              **kw: Any) -> Iterator[dict[str, Any]]:
    """Watch events as plain dicts (a list first, as ADDED events; watches resumed from the last version,
    re-listed after 410 Gone), without the client's model deserialisation (1,000s of events a second)."""
    rv = None
    while not stop.is_set():
        try:
            if rv is None:
                token, items = None, []
                while True:
                    rsp = list_fn(namespace, *args, limit=500, _continue=token, _preload_content=False, **kw)
                    body = json.loads(rsp.data)
                    items += body.get("items") or []
                    token = (body.get("metadata") or {}).get("continue")
                    if not token:
                        rv = body["metadata"]["resourceVersion"]
                        break
                for obj in items:
                    yield {"type": "ADDED", "object": obj}
            rsp = list_fn(namespace, *args, watch=True, resource_version=rv, allow_watch_bookmarks=True,
                          timeout_seconds=60, _preload_content=False, **kw)
            buf = b""
            for chunk in rsp.stream(65536):
                if stop.is_set():
                    return
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if not line.strip():
                        continue
                    ev = json.loads(line)
                    if ev["type"] == "ERROR":
                        rv = None if (ev.get("object") or {}).get("code") == 410 else rv
                        raise RuntimeError("watch error")
                    rv = ev["object"]["metadata"].get("resourceVersion", rv)
                    if ev["type"] != "BOOKMARK":
                        yield ev
        except Exception:
            if stop.is_set():
                return
            time.sleep(0.5)


class Jobs:
    """Watches MergeJobs: when each was created and when it merged (as this watch saw them)."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.created: dict[str, float] = {}
        self.merged: dict[str, float] = {}
        self.phases: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="mergejob-watch")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        def lister(ns: str, **kw: Any) -> Any:
            return self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "mergejobs", **kw)

        for ev in raw_watch(lister, NS, self._stop):
            obj = ev["object"]
            name = obj["metadata"]["name"]
            t = time.monotonic()
            self.created.setdefault(name, t)
            phase = (obj.get("status") or {}).get("phase") or "Queued"
            if ev["type"] == "DELETED":
                continue
            self.phases[name] = phase
            if phase == "Merged" and name not in self.merged:
                self.merged[name] = t

    def waits(self) -> list[float]:
        return [t - self.created[n] for n, t in list(self.merged.items()) if n in self.created]


# --- the cluster pieces --------------------------------------------------------------------------------------


def spawn(name: str, argv: list[str], workdir: Path, env: Mapping[str, str] | None = None,
          nice: int = 0) -> subprocess.Popen[bytes]:
    """``argv`` in a session of its own; ``nice``: that session's CPU weight (:func:`set_group_nice`)."""
    out = (workdir / f"{name}.log").open("ab")
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, env=dict(env) if env is not None else None)
    out.close()
    if nice:
        set_group_nice(p.pid, nice)
    return p


def set_group_nice(pid: int, nice: int) -> None:
    """The niceness of the scheduling group of ``pid``'s session, and so of every process it starts.

    With the kernel's session autogroups on (``/proc/sys/kernel/sched_autogroup_enabled``, as on this machine),
    ``nice`` or ``setpriority`` on a process weighs it only against the processes of its own session; each session
    gets an equal share of the CPU against the others. The group's own niceness (``/proc/<pid>/autogroup``) is what
    weighs sessions against each other. Without autogroups, the process's own niceness is set instead."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(f"{nice}\n")
    except OSError:
        os.setpriority(os.PRIO_PROCESS, pid, nice)


def stop_process(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
"""


def start_scheduler(cp: controlplane.ControlPlane, work: Path) -> subprocess.Popen[bytes]:
    kubeconfig = controlplane.write_kubeconfig(work / "scheduler.kubeconfig", cp.server, cp.pki / "ca.crt",
                                               cp.scheduler_token, user="system:kube-scheduler")
    conf = work / "scheduler.yaml"
    # the client's default 50 requests/s would bind 1,000 Pods in 20 s: the scheduler is not what is measured
    conf.write_text("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
                    f"clientConnection: {{kubeconfig: {kubeconfig}, qps: 1000, burst: 2000}}\n"
                    "leaderElection: {leaderElect: false}\n")
    return spawn("kube-scheduler", [cp.binary("kube-scheduler"), f"--config={conf}",
                                    f"--authentication-kubeconfig={kubeconfig}",
                                    f"--authorization-kubeconfig={kubeconfig}", "--bind-address=127.0.0.1",
                                    f"--secure-port={controlplane.free_port()}", "--v=1"], work)


KWOK_CONFIG = """\
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  # kwok plays 4 Pod stages at a time by default: each a status PATCH, about 5 Pods made Running a second on this
  # machine, so that 1,000 agents' Pods waited 80 s (p50) from binding to Running and kwok, not the operator, was the
  # first wall (runs of 2026-11-25)
  podPlayStageParallelism: 64
  nodePlayStageParallelism: 8
  nodeLeaseParallelism: 8
"""


def start_kwok(cp: controlplane.ControlPlane, work: Path) -> subprocess.Popen[bytes]:
    conf = work / "kwok.yaml"
    conf.write_text(KWOK_CONFIG)
    return spawn("kwok", [cp.binary("kwok"), f"--config={conf}", f"--kubeconfig={cp.kubeconfig}",
                          "--manage-all-nodes=false",
                          f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                          "--cidr=10.128.0.1/12", "--node-ip=10.127.0.1", f"--node-port={controlplane.free_port()}",
                          f"--server-address=127.0.0.1:{controlplane.free_port()}"],
                 work, {**os.environ, "HOME": str(work)})


def kwok_nodes(core: kubernetes.client.CoreV1Api, n: int, pods: int = PODS_PER_NODE, prefix: str = "kwok-node") -> None:
    for i in range(n):
        cap = {"cpu": "1000", "memory": "4Ti", "pods": str(pods), "ephemeral-storage": "10Ti"}
        core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": f"{prefix}-{i}", "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": f"{prefix}-{i}", "type": "kwok"}},
            "status": {"allocatable": cap, "capacity": cap}})


def ready_nodes(core: kubernetes.client.CoreV1Api) -> int:
    """kwok nodes Ready, and untainted: the API server gives a new node the ``not-ready`` taint, which the node
    lifecycle controller (not run here: no kubelet) would take off once kwok reports it Ready."""
    ready = 0
    for node in core.list_node().items:
        if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or []):
            if node.spec.taints:
                core.patch_node(node.metadata.name, {"spec": {"taints": None}})
            ready += 1
    return ready


def start_forge(work: Path, nice: int = 0) -> tuple[subprocess.Popen[bytes], str, str]:
    creds = work / "forge-credentials"
    password = secrets.token_urlsafe(18)
    creds.write_text(f"{FORGE_USER}:{password}\n")
    creds.chmod(0o600)
    port = controlplane.free_port()
    p = spawn("forge", [sys.executable, "-m", "longshot_testing.forge", f"--root={work / 'git'}",
                        "--host=127.0.0.1", f"--port={port}", f"--credentials={creds}"], work, nice=nice)
    controlplane.wait_until(lambda: _connects(port), 30, "the git forge")
    return p, f"http://127.0.0.1:{port}", password


def _connects(port: int) -> bool:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


GIT_ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | {
    "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com", "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


def make_repository(root: Path, name: str) -> Repo:
    bare = root / f"{name}.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], env=GIT_ENV, check=True)
    repo = Repo.__new__(Repo)  # a base commit first: Repo reads main
    repo.path, repo.env = bare, dict(GIT_ENV)
    readme = repo.write("blob", b"bench-fleet\n")
    makefile = repo.write("blob", b"test:\n\ttrue\n.PHONY: test\n")
    tree = repo.write("tree", b"100644 Makefile\0" + bytes.fromhex(makefile) + b"100644 README.md\0"
                      + bytes.fromhex(readme))
    stamp = f"{int(time.time())} +0000"
    base = repo.write("commit", f"tree {tree}\nauthor Bench <bench@example.com> {stamp}\ncommitter Bench "
                                f"<bench@example.com> {stamp}\n\nbase\n".encode())
    repo.set_ref("refs/heads/main", base)
    return Repo(bare, GIT_ENV)


def build_body(name: str, url: str, workers: int, window: int, depth: int) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BuildRequest", "metadata": {"name": name}, "spec": {
        "request": "bench-fleet: one file per task",
        "repository": {"url": url, "baseBranch": "main", "credentialsSecret": "git-token"},
        "agent": {"backend": "scripted", "timeoutSeconds": 7200,
                  "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                "limits": {"cpu": "1", "memory": "256Mi"}}},
        "workers": {"max": workers}, "suspend": True,
        "planner": {"maxTasks": 1000, "maxIterations": 1, "maxTotalTasks": 10000},
        "merge": {"strategy": "rebase", "window": window, "depth": depth, "maxFixers": 100},
        "qualityGate": {"profile": "minimal", "testCommand": "make test"},
        "reconciler": {"command": "make test", "intervalSeconds": 86400},
        "finalization": {"maxAttempts": 1},
    }}


def planned(custom: kubernetes.client.CustomObjectsApi, name: str, namespace: str = NS) -> None:
    """The build's status as after its plan was accepted (the benchmark creates the plan's tasks itself)."""
    now = now_stamp()
    conds = [{"type": t, "status": s, "reason": r, "message": "", "lastTransitionTime": now}
             for t, s, r in (("Planned", "True", "PlanAccepted"), ("Progressing", "True", "TasksRunning"),
                             ("Merged", "Unknown", "Pending"), ("Finalized", "Unknown", "Pending"),
                             ("Ready", "False", "InProgress"), ("Suspended", "True", "Suspended"))]
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "buildrequests", name, {
        "status": {"conditions": conds, "plannerTask": f"{name}-planner", "phase": "Suspended"}})


def create_tasks(custom: kubernetes.client.CustomObjectsApi, build: dict[str, Any], names: list[str]) -> None:
    bname, uid = build["metadata"]["name"], build["metadata"]["uid"]
    namespace = build["metadata"].get("namespace") or NS

    def one(task: str) -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "agenttasks", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "AgentTask",
            "metadata": {"name": task, "labels": {"longshot.dev/build": bname},
                         "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "BuildRequest",
                                              "name": bname, "uid": uid, "controller": True}]},
            "spec": {"buildRef": {"name": bname}, "description": f"Write {fanout_path(task)}", "role": "worker",
                     "scope": [fanout_path(task)]}})

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, names))


def taken_in(custom: kubernetes.client.CustomObjectsApi, builds: Sequence[str]) -> int:
    """AgentTasks the operator holds: its builds' statuses count them."""
    return sum(int(((custom.get_namespaced_custom_object(GROUP, VERSION, NS, "buildrequests", b).get("status") or {})
                    .get("tasks") or {}).get("total") or 0) for b in builds)


def idle(pids: Sequence[int], window: float = 2.0, busy: float = 0.1) -> bool:
    """The processes together used under ``busy`` of a core over the next ``window`` seconds."""
    before = sum(sum(proc_cpu(p)) for p in pids)
    time.sleep(window)
    return sum(sum(proc_cpu(p)) for p in pids) - before < busy * window


# --- measuring ---------------------------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> tuple[float, float]:
    """(own CPU seconds, reaped children's CPU seconds) of a process; (0, 0) when it is gone."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return (int(f[11]) + int(f[12])) / TICK, (int(f[13]) + int(f[14])) / TICK


def rss_mib(pid: int, key: str = "VmHWM") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def machine_cpu() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def cpu_snapshot(procs: Mapping[str, subprocess.Popen[bytes]]) -> dict[str, tuple[float, float]]:
    out = {name: proc_cpu(p.pid) for name, p in procs.items()}
    out["machine"] = (machine_cpu(), 0.0)
    return out


def fetch_text(url: str, token: str | None = None, ca: Path | None = None) -> str:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    with urllib.request.urlopen(req, timeout=30, context=context) as r:
        return str(r.read().decode())


def operator_samples(ports: Sequence[int]) -> Samples:
    s = Samples()
    for port in ports:
        with contextlib.suppress(OSError):
            s.add_text(fetch_text(f"http://127.0.0.1:{port}/metrics"))
    return s


def gateway_samples(port: int) -> Samples:
    """The gateway's metrics (``--through-gateway``); empty without one."""
    s = Samples()
    if port:
        with contextlib.suppress(OSError):
            s.add_text(fetch_text(f"http://127.0.0.1:{port}/metrics"))
    return s


def apiserver_samples(cp: controlplane.ControlPlane) -> Samples:
    s = Samples()
    text = fetch_text(f"{cp.server}/metrics", cp.admin_token, cp.pki / "ca.crt")
    # only the request counter: the API server's whole text is megabytes
    s.add_text("\n".join(line for line in text.splitlines()
                         if line.startswith(("apiserver_request_total", "# TYPE apiserver_request_total"))) + "\n")
    return s


def read_audit(path: Path, start: int, end: int | None = None) -> Counter[tuple[str, str, str, str, int]]:
    with path.open("rb") as f:
        f.seek(start)
        data = f.read() if end is None else f.read(end - start)
    return audit_object_writes(data.splitlines())


def collapse(writes: Mapping[tuple[str, str, str, str, int], int]) -> Counter[tuple[str, str, str, int]]:
    """Object-level writes (:func:`audit_object_writes`) counted as :func:`audit_writes` counts them."""
    out: Counter[tuple[str, str, str, int]] = Counter()
    for (cl, verb, res, _, code), n in writes.items():
        out[(cl, verb, res, code)] += n
    return out


# --- the report ----------------------------------------------------------------------------------------------------


def report_cpu(d: Mapping[str, tuple[float, float]], operators: Sequence[str], seconds: float, merged: int) -> float:
    """Where the CPU went over the run (``d``: name -> (own, reaped children's) CPU seconds, ``machine`` too); the
    operator replicas' CPU, their git children included."""
    parts = [f"{n} {own:.0f}" + (f" (+{kids:.0f} children)" if kids >= 0.5 else "")
             for n, (own, kids) in sorted(d.items(), key=lambda kv: -sum(kv[1])) if n != "machine"]
    log(f"CPU seconds over the run: machine {d['machine'][0]:.0f} ({d['machine'][0] / seconds:.2f} of "
        f"{os.cpu_count()} cores busy, other users of the machine included); " + ", ".join(parts))
    own, kids = sum(d[n][0] for n in operators), sum(d[n][1] for n in operators)
    log(f"operator: {own:.0f}s Python + {kids:.0f}s git (its children) = {(own + kids) / max(merged, 1):.3f} CPU s "
        "per merge")
    return own + kids


def report_operator(ops: Samples) -> None:
    """The operator's reconciles by kind and its merge queue's phases, over the run."""
    counts = ops.by("longshot_reconciles_total", "kind")
    secs = ops.by("longshot_reconcile_duration_seconds_sum", "kind")
    errs = ops.by("longshot_reconciles_total", "kind", result="Error")
    conflicts = ops.by("longshot_reconciles_total", "kind", result="Conflict")
    log("reconciles by kind (count, wall seconds in all, errors, conflicts): " + ", ".join(
        f"{k} {counts[k]:.0f} {secs.get(k, 0):.1f}s {errs.get(k, 0):.0f} {conflicts.get(k, 0):.0f}"
        for k in sorted(counts, key=lambda k: -secs.get(k, 0))))
    phase_s = ops.by("longshot_merge_queue_phase_seconds_sum", "phase")
    phase_n = ops.by("longshot_merge_queue_phase_seconds_count", "phase")
    log("merge queue phases (wall seconds in all, times, mean): " + (", ".join(
        f"{p} {phase_s[p]:.1f}s {phase_n.get(p, 0):.0f}x {phase_s[p] / max(phase_n.get(p, 0), 1) * 1000:.0f}ms"
        for p in sorted(phase_s, key=lambda p: -phase_s[p])) or "(no longshot_merge_queue_phase_seconds)"))


def report_requests(api_delta: Samples) -> None:
    """The API server's requests over the run by verb and resource (``apiserver_request_total``)."""
    reqs: Counter[tuple[str, str]] = Counter()
    for (n, labels), v in api_delta.values.items():
        if n == "apiserver_request_total" and v > 0:
            lab = dict(labels)
            res = lab.get("resource", "") + (f"/{lab['subresource']}" if lab.get("subresource") else "")
            reqs[(lab.get("verb", ""), res)] += int(v)
    writes = Counter({k: v for k, v in reqs.items() if is_write(k[0])})
    reads = Counter({k: v for k, v in reqs.items() if not is_write(k[0]) and k[0] != "WATCH"})
    log(f"API server requests over the run: {sum(reqs.values())} ({sum(writes.values())} writes); writes: "
        + ", ".join(f"{v} {r} {n}" for (v, r), n in writes.most_common(16))
        + "; reads: " + ", ".join(f"{v} {r} {n}" for (v, r), n in reads.most_common(8)))


def report_gateway(result: Result, gw: bench_fleet_gateway.GatewayAgents, samples: Samples,
                   cpu: tuple[float, float], pid: int, merged: int) -> None:
    """``--through-gateway``: the gateway's CPU per merge (its process and its git children), its peak RSS, the
    agents' clone and push times, and the gateway's own metrics over the run."""
    own, kids = cpu
    result.gateway_cpu_s_per_merge = (own + kids) / merged if merged else float("nan")
    result.gateway_rss = rss_mib(pid)
    t = gw.times
    result.clone_p50, result.clone_p95 = percentile(t.clone, 0.5), percentile(t.clone, 0.95)
    result.push_p50, result.push_p95 = percentile(t.push, 0.5), percentile(t.push, 0.95)
    log(f"gateway: {own:.0f}s Python + {kids:.0f}s git (its children) = {result.gateway_cpu_s_per_merge:.3f} CPU s "
        f"per merge; peak RSS {result.gateway_rss:.0f} MiB (its git children apart)")
    log(f"agents through the gateway: {len(t.clone)} clones p50 {result.clone_p50:.2f}s p95 {result.clone_p95:.2f}s "
        f"max {max(t.clone, default=float('nan')):.2f}s; {len(t.push)} pushes p50 {result.push_p50:.2f}s p95 "
        f"{result.push_p95:.2f}s max {max(t.push, default=float('nan')):.2f}s; {t.retries} retried answers (503, 429); "
        f"{len(t.heartbeats)} heartbeats (POST /progress) p50 {percentile(t.heartbeats, 0.5):.2f}s p95 "
        f"{percentile(t.heartbeats, 0.95):.2f}s, {t.heartbeat_failures} failed")
    bench_fleet_gateway.gateway_report(samples, histogram_quantile, log)


def report_lifecycle(life: Lifecycle) -> float:
    """Writes per merged task over its whole life (:func:`lifecycle`), by kind: ``api_writes_per_merge``."""
    m = max(life.merged, 1)
    log(f"api_writes_per_merge = {life.per_merge:.2f}: per merged task ({life.merged}) its own "
        f"{sum(life.per_task.values()) / m:.2f} (" + ", ".join(
            f"{v} {r} {n / m:.2f}" for (v, r), n in life.per_task.most_common(10)) + f") + shared "
        f"{sum(life.shared.values()) / m:.2f} (" + ", ".join(
            f"{v} {r} {n / m:.2f}" for (v, r), n in life.shared.most_common(10)) + f"); left out: {life.in_flight} "
        f"writes of {life.in_flight_tasks} tasks in flight at the end")
    return life.per_merge


def report_writes(writes: Counter[tuple[str, str, str, int]], created: int, merged: int) -> float:
    """The writes by client (from the audit log, from the operator's start to the end of the run) and
    ``api_writes_per_merge``: the user's AgentTask creates per task created, plus the operator's writes per merge."""
    by_client: Counter[str] = Counter()
    for (cl, _, res, code), n in writes.items():
        if code < 400:
            by_client[cl if cl != "bench" else "agents (kubelet's part)" if res == "pods/status" else "bench"] += n
    refused = sum(n for (_, _, _, code), n in writes.items() if code >= 400)
    log("API writes by client (audit log, from the operator's start): " + ", ".join(
        f"{c} {n}" for c, n in by_client.most_common()) + f"; refused (409 and others) {refused}")
    opw = Counter({(verb, res): n for (cl, verb, res, code), n in writes.items() if cl == "operator" and code < 400})
    log("the operator's writes: " + ", ".join(f"{v} {r} {n}" for (v, r), n in opw.most_common(14)))
    creates = sum(n for (cl, verb, res, code), n in writes.items()
                  if cl == "bench" and verb == "create" and res == "agenttasks" and code < 400)
    every = sum(n for (*_, code), n in writes.items() if code < 400)
    created = max(created, creates)  # the last creates may land after the count was read
    log(f"all writes over merges: {creates} AgentTask creates for {created} tasks ({creates / max(created, 1):.2f} "
        f"each) + {sum(opw.values())} operator writes for {merged} merges "
        f"({sum(opw.values()) / max(merged, 1):.2f} each; tasks still in flight at the end add to it); every client "
        f"(scheduler, kwok, simulated kubelet too): {every / max(merged, 1):.2f} per merge")
    return api_writes_per_merge(creates, created, sum(opw.values()), merged)


class Quiet:
    """The second tenant (``--tenants 2``): every ``every`` seconds one build of one task in :data:`QUIET_NS`, while
    the fleet keeps the nodes full. Its first Pod's wait (from its task's create to its Pod Running, as the agents'
    watch saw it) is what fair admission bounds; the tenants' shares are sampled as it goes."""

    def __init__(self, custom: kubernetes.client.CustomObjectsApi, url: str, every: float, agents: Agents,
                 stop: threading.Event, start: float) -> None:
        self.custom, self.url, self.every, self.agents, self.stop, self.start = custom, url, every, agents, stop, start
        self.created: dict[str, float] = {}
        """The quiet task -> when it was created."""
        self.shares: list[tuple[float, int, int]] = []
        """(seconds in, the fleet's agents running, the quiet tenant's)."""

    def run(self) -> None:
        i = 0
        while not self.stop.wait(self.every if i else min(self.every, 10.0)):
            try:
                name = f"quiet-{i:03d}"
                body = build_body(name, self.url, 1, 4, 1)
                body["metadata"]["namespace"] = QUIET_NS
                made = self.custom.create_namespaced_custom_object(GROUP, VERSION, QUIET_NS, "buildrequests", body)
                planned(self.custom, name, QUIET_NS)
                self.created[f"{name}-t00000"] = time.monotonic()
                create_tasks(self.custom, made, [f"{name}-t00000"])
                self.custom.patch_namespaced_custom_object(GROUP, VERSION, QUIET_NS, "buildrequests", name,
                                                           {"spec": {"suspend": False}})
            except Exception as e:
                log(f"the quiet tenant's build {i} failed: {type(e).__name__}: {e}")
            i += 1
            live = self.agents.live
            self.shares.append((time.monotonic() - self.start, len(live.get(NS, ())), len(live.get(QUIET_NS, ()))))

    def waits(self) -> list[tuple[float, float]]:
        """Each quiet task's first Pod's wait: from its task's create, and from the moment room freed after that
        create (the first of the fleet's agents to end after it; the create itself when none ended before the Pod
        ran: the room was there)."""
        running = self.agents.stats.running_at
        ends = sorted(self.agents.stats.fleet_ends)
        out = []
        for task, t in self.created.items():
            pod = next((p for p in running if p.startswith(task + "-a")), None)
            if pod is None:
                continue
            r = running[pod]
            i = bisect.bisect_left(ends, t)
            freed = ends[i] if i < len(ends) and ends[i] < r else t
            out.append((r - t, r - freed))
        return out

    def report(self) -> tuple[float, float, float]:
        """Logs the quiet tenant's waits and shares; returns its first-Pod-running p95 from its task's create and
        from room freeing, and its last share."""
        both = self.waits()
        waits = [w for w, _ in both]
        after = [a for _, a in both]
        log(f"quiet tenant: {len(self.created)} builds, {len(waits)} first Pods running; task created to Pod "
            f"Running p50 {percentile(waits, 0.5):.2f}s p95 {percentile(waits, 0.95):.2f}s max "
            f"{max(waits, default=float('nan')):.2f}s (the fleet kept the nodes full); from the first of the fleet's "
            f"agents to end after the create (room freed) to Pod Running p50 {percentile(after, 0.5):.2f}s p95 "
            f"{percentile(after, 0.95):.2f}s max {max(after, default=float('nan')):.2f}s")
        log("tenants' agents running over time (fleet/quiet): " + ", ".join(
            f"{t:.0f}s {a}/{b}" for t, a, b in self.shares[-20:]))
        last = self.shares[-1] if self.shares else (0.0, 0, 0)
        share = last[2] / (last[1] + last[2]) if last[1] + last[2] else float("nan")
        return percentile(waits, 0.95), percentile(after, 0.95), share


# --- the run -------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    merged: int = 0
    seconds: float = float("nan")
    cpu_s_per_merge: float = float("nan")
    writes_per_merge: float = float("nan")
    rss: float = float("nan")
    dispatch_p95: float = float("nan")
    queue_wait_p95: float = float("nan")
    quiet_p95: float = float("nan")
    quiet_room_p95: float = float("nan")
    quiet_share: float = float("nan")
    window: float = float("nan")
    """The window both the fleet and its floor are measured over (seconds from their start)."""
    fleet_window_per_hour: float = float("nan")
    floor_per_hour: float = float("nan")
    fleet_vs_floor: float = float("nan")
    gateway_cpu_s_per_merge: float = float("nan")
    gateway_rss: float = float("nan")
    clone_p50: float = float("nan")
    clone_p95: float = float("nan")
    push_p50: float = float("nan")
    push_p95: float = float("nan")


def run(args: argparse.Namespace, work: Path, bin_dir: Path, result: Result, began: float) -> None:
    audit_log = work / "audit.log"
    (work / "audit-policy.yaml").write_text(AUDIT_POLICY)
    cp = controlplane.ControlPlane(workdir=work / "cp", bin_dir=bin_dir, extra_apiserver_flags=(
        f"--audit-policy-file={work / 'audit-policy.yaml'}", f"--audit-log-path={audit_log}",
        "--audit-log-format=json", "--audit-log-mode=batch", "--audit-log-maxsize=0"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    repos: dict[str, Repo] = {}
    agents: Agents | None = None
    jobs: Jobs | None = None
    with cp:
        try:
            for p in cp.processes:
                procs[p.name] = p.popen
                if args.apiserver_nice and p.name in ("kube-apiserver", "etcd"):
                    set_group_nice(p.popen.pid, args.apiserver_nice)
            cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
            cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
            api = kubernetes.config.new_client_from_config(config_file=str(cp.kubeconfig))
            api.user_agent = USER_AGENT
            api.configuration.connection_pool_maxsize = 64
            core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
            procs["kube-scheduler"] = start_scheduler(cp, work)
            procs["kwok"] = start_kwok(cp, work)
            nodes = max(1, math.ceil((args.agents + 64 * args.repos) / PODS_PER_NODE))
            per_node = PODS_PER_NODE
            if args.tenants > 1:  # the nodes hold the fleet's agents and no more: the quiet tenant finds them full
                nodes = max(1, math.ceil(args.agents / PODS_PER_NODE))
                per_node = -(-args.agents // nodes)
            kwok_nodes(core, nodes, per_node)
            controlplane.wait_until(lambda: ready_nodes(core) >= nodes, 60, f"{nodes} kwok nodes Ready", 0.5)
            (work / "git").mkdir()
            procs["forge"], forge_url, password = start_forge(work, args.forge_nice)
            for ns in ([NS, QUIET_NS] if args.tenants > 1 else [NS]):
                core.create_namespace({"metadata": {"name": ns}})
                controlplane.wait_until(lambda ns=ns: core.list_namespaced_service_account(ns).items, 60,
                                        "the default SA")
                core.create_namespaced_secret(ns, {"metadata": {"name": "git-token"},
                                                   "stringData": {"username": FORGE_USER, "password": password}})
            gateway_url, gateway_metrics = "", 0
            if args.through_gateway:  # one real longshot-gateway between the agents and the forge
                gw_port, gateway_metrics = controlplane.free_port(), controlplane.free_port()
                procs["gateway"] = bench_fleet_gateway.start_gateway(spawn, work, cp.kubeconfig, NS, gw_port,
                                                                     gateway_metrics, ROOT, args.gateway_nice)
                controlplane.wait_until(lambda: _connects(gw_port), 60, "longshot-gateway")
                gateway_url = f"http://127.0.0.1:{gw_port}"
            audit_start = audit_log.stat().st_size
            ports = []
            for r in range(args.replicas):
                port = controlplane.free_port()
                ports.append(port)
                env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig), "LONGSHOT_NAMESPACE": NS,
                       "POD_NAME": f"replica-{r}", "LONGSHOT_MAX_WORKERS": str(args.agents + 64 * args.repos),
                       "LONGSHOT_METRICS_PORT": str(port), "LONGSHOT_WEBHOOK_PORT": "0",
                       "LONGSHOT_WORKSPACE_DIR": str(work / f"ws-{r}"),
                       "LONGSHOT_NETWORK_POLICY": "false", "LONGSHOT_EGRESS_ALLOWED_CIDRS": "127.0.0.0/8",
                       "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
                if gateway_url:  # its Pods carry the gateway's address and a projected token for it
                    env["LONGSHOT_GATEWAY_URL"] = gateway_url
                watched = ["--namespace", NS]
                if args.tenants > 1:  # fair admission by capacity, on the kwok nodes' room (docs/admission-capacity.md)
                    env.update(LONGSHOT_ADMISSION_CAPACITY="auto", LONGSHOT_ADMISSION_REFRESH_SECONDS="2")
                    watched += ["--namespace", QUIET_NS]
                procs[f"operator-{r}"] = spawn(f"operator-{r}", [sys.executable, "-m", "longshot", "operator",
                                                                 *watched], work, env, nice=args.operator_nice)
            operators = {n: p for n, p in procs.items() if n.startswith("operator-")}
            share = -(-args.tasks // args.repos)
            per_build = max(1, args.agents // args.repos)
            builds: dict[str, dict[str, Any]] = {}
            later: list[tuple[dict[str, Any], list[str]]] = []
            t_ingest = time.monotonic()
            first = 0
            for k in range(args.repos):
                name = f"fleet-{k}"
                repos[f"{name}.git"] = make_repository(work / "git", name)
                builds[name] = custom.create_namespaced_custom_object(
                    GROUP, VERSION, NS, "buildrequests",
                    build_body(name, f"{forge_url}/{name}.git", per_build, args.window, args.depth))
                planned(custom, name)
                mine = [f"{name}-t{i:05d}" for i in range(k * share, min(args.tasks, (k + 1) * share))]
                # enough to fill the build's worker slots now; the rest arrive while the fleet runs
                create_tasks(custom, builds[name], mine[:per_build])
                first += len(mine[:per_build])
                later.append((builds[name], mine[per_build:]))
            log(f"{first} AgentTasks created in {time.monotonic() - t_ingest:.1f}s over {args.repos} suspended "
                f"build(s) ({args.tasks - first} more arrive while the fleet runs); {nodes} kwok nodes")
            controlplane.wait_until(lambda: taken_in(custom, list(builds)) >= first, args.budget,
                                    "the operator to take in the first tasks", 1.0)
            controlplane.wait_until(lambda: idle([p.pid for p in operators.values()]), 300,
                                    "the operator to finish its start-up reconciles", 0)
            log(f"the operator took them in {time.monotonic() - t_ingest:.1f}s after the first create")
            ops_before = operator_samples(ports)
            api_before = apiserver_samples(cp)
            cpu0 = cpu_snapshot(procs)
            bench0 = proc_cpu(os.getpid())
            gw_agents = (bench_fleet_gateway.GatewayAgents(core, gateway_url, GIT_ENV, work, args.agent_nice)
                         if gateway_url else None)
            gw_before = gateway_samples(gateway_metrics)
            agents = Agents(api, repos, args, gw_agents)
            jobs = Jobs(api)
            agents.start()
            jobs.start()
            stop_refresh = threading.Event()

            def refresh() -> None:
                while not stop_refresh.wait(5):
                    for repo in repos.values():
                        with contextlib.suppress(Exception):
                            repo.refresh_base()

            threading.Thread(target=refresh, daemon=True).start()
            start = time.monotonic()
            # the run ends at --duration, or earlier so that the whole benchmark fits in --budget (a minute kept for
            # the report and the teardown)
            floor_reserve = args.floor_seconds + 90 if args.floor_seconds > 0 else 0  # the floor's run and set-up
            duration = max(30.0, min(args.duration, began + args.budget - 60 - floor_reserve - start))
            for name in builds:
                custom.patch_namespaced_custom_object(GROUP, VERSION, NS, "buildrequests", name,
                                                      {"spec": {"suspend": False}})
            created = [first]

            def create_rest() -> None:  # the rest of the plan, 500 at a time per build, in turn
                try:
                    for i in range(0, max((len(m) for _, m in later), default=0), 500):
                        for body, mine in later:
                            if stop_refresh.is_set():
                                return
                            create_tasks(custom, body, mine[i:i + 500])
                            created[0] += len(mine[i:i + 500])
                except Exception as e:
                    log(f"creating the rest of the tasks failed: {type(e).__name__}: {e}")

            threading.Thread(target=create_rest, daemon=True, name="create-tasks").start()
            quiet: Quiet | None = None
            if args.tenants > 1:
                repos["quiet.git"] = make_repository(work / "git", "quiet")
                quiet = Quiet(custom, f"{forge_url}/quiet.git", args.quiet_every, agents, stop_refresh, start)
                threading.Thread(target=quiet.run, daemon=True, name="quiet-tenant").start()
            log(f"resumed {len(builds)} build(s): {args.agents} agents, think {args.think_seconds:g}s, gates "
                f"{args.gate_seconds:g}s, culprits {args.gate_failure_rate:g}, {args.replicas} replica(s); run "
                f"until every task is merged or {duration:.0f}s"
                + (f"; the agents' git at nice {args.agent_nice}" if gw_agents is not None and args.agent_nice else "")
                + (f"; the operator at nice {args.operator_nice}" if args.operator_nice else "")
                + (f"; the forge at nice {args.forge_nice}" if args.forge_nice else "")
                + (f"; the gateway at nice {args.gateway_nice}" if gateway_url and args.gateway_nice else "")
                + (f"; the API server and etcd at nice {args.apiserver_nice}" if args.apiserver_nice else ""))
            last_report, last_merge = start, start
            merged_before = 0
            filled: tuple[float, Samples] | None = None  # when the first fill ended, and the operator's metrics then
            while True:
                merged = len(jobs.merged)
                if merged != merged_before:
                    merged_before, last_merge = merged, time.monotonic()
                elapsed = time.monotonic() - start
                if filled is None and (len(agents.started) >= 0.95 * args.agents or agents.stats.finished):
                    filled = (elapsed, operator_samples(ports))  # the first fill (or the first end) is behind
                if merged >= args.tasks or elapsed >= duration:
                    break
                dead = [n for n, p in procs.items() if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"{', '.join(dead)} exited; logs in {work}")
                if time.monotonic() - last_report >= args.report_every:
                    last_report = time.monotonic()
                    phases = Counter(jobs.phases.values())
                    cpu = sum(sum(proc_cpu(p.pid)) - sum(cpu0[n]) for n, p in operators.items())
                    running = len(agents.started) - sum(agents.stats.finished.values())
                    rss_now = max(rss_mib(p.pid, "VmRSS") for p in operators.values())
                    log(f"{elapsed:.0f}s: merged {merged}/{args.tasks} ({merged / elapsed * 3600:.0f}/h), tasks "
                        f"created {created[0]}, "
                        f"MergeJobs {dict(phases)}, agents running {running}, Pods ended "
                        f"{dict(agents.stats.finished)}, operator CPU {cpu:.0f}s ({cpu / elapsed:.2f} cores), RSS "
                        f"{rss_now:.0f} MiB" + (f"; agent errors: {agents.stats.errors[:3]}" if agents.stats.errors
                                               else ""))
                time.sleep(0.5)
            end = last_merge if merged >= args.tasks else time.monotonic()
            seconds = end - start
            stop_refresh.set()
            cpu1 = cpu_snapshot(procs)
            bench1 = proc_cpu(os.getpid())
            ops = operator_samples(ports).minus(ops_before)
            ops_all = operator_samples(ports)
            api_delta = apiserver_samples(cp).minus(api_before)
            time.sleep(2)  # the audit backend writes in batches
            audit_end = audit_log.stat().st_size
            merged = len(jobs.merged)
            result.merged, result.seconds = merged, seconds
            # --- the report --------------------------------------------------------------------------------------
            log(f"merged {merged} of {args.tasks} tasks' work in {seconds:.0f}s ({merged / seconds * 3600:.0f}/h)"
                + ("" if merged >= args.tasks else f": stopped after {duration:.0f}s (--duration, --budget), "
                   f"{args.tasks - merged} not merged") + f"; MergeJobs {dict(Counter(jobs.phases.values()))}; Pods "
                f"ended {dict(agents.stats.finished)}")
            if agents.stats.errors:
                log(f"simulated agent errors: {agents.stats.errors}")
            waits = jobs.waits()
            starts = agents.stats.agent_seconds
            first_merge = min(jobs.merged.values(), default=None)
            if first_merge is not None and end > first_merge:
                log(f"from the first merge ({first_merge - start:.0f}s in: the first agents' think) to the end: "
                    f"{merged / (end - first_merge) * 3600:.0f}/h")
            log(f"queue wait (MergeJob created to Merged): p50 {percentile(waits, 0.5):.1f}s p95 "
                f"{percentile(waits, 0.95):.1f}s max {max(waits, default=float('nan')):.1f}s; Pod created to Running "
                f"(scheduler, kwok): p50 {percentile(starts, 0.5):.2f}s p95 {percentile(starts, 0.95):.2f}s")
            d = {n: (cpu1[n][0] - cpu0[n][0], cpu1[n][1] - cpu0[n][1]) for n in cpu1}
            d["bench (simulated agents, watches)"] = (bench1[0] - bench0[0], bench1[1] - bench0[1])
            op_cpu = report_cpu(d, list(operators), seconds, merged)
            report_operator(ops)
            report_requests(api_delta)
            by_object = read_audit(audit_log, audit_start, audit_end)
            report_writes(collapse(by_object), created[0], merged)
            result.writes_per_merge = report_lifecycle(lifecycle(by_object, jobs.merged))
            result.cpu_s_per_merge = op_cpu / merged if merged else float("nan")
            result.rss = max(rss_mib(p.pid) for p in operators.values())
            whole = histogram_quantile(0.95, ops_all.buckets("longshot_dispatch_latency_seconds"))
            result.dispatch_p95 = whole
            if filled is not None:  # the first fill's admissions are a burst of their own: its p95 apart
                result.dispatch_p95 = histogram_quantile(
                    0.95, ops_all.minus(filled[1]).buckets("longshot_dispatch_latency_seconds"))
                log(f"dispatch p95: {result.dispatch_p95:.2f}s after the first fill ({filled[0]:.0f}s in: "
                    f"{args.agents} Pods, 64 an admission), {whole:.2f}s over the whole run")
            result.queue_wait_p95 = percentile(waits, 0.95)
            if gw_agents is not None:
                report_gateway(result, gw_agents, gateway_samples(gateway_metrics).minus(gw_before),
                               d["gateway"], procs["gateway"].pid, merged)
            if quiet is not None:
                result.quiet_p95, result.quiet_room_p95, result.quiet_share = quiet.report()
            if args.floor_seconds > 0:
                # --- the floor: the same work with no operator, on the same control plane, kwok and forge ---------
                agents.stop()
                jobs.stop()
                for n in operators:
                    stop_process(procs[n])
                floor_nodes = max(1, math.ceil(args.agents / PODS_PER_NODE))  # the fleet's Pods keep theirs
                kwok_nodes(core, floor_nodes, PODS_PER_NODE, prefix="kwok-floor")
                controlplane.wait_until(lambda: ready_nodes(core) >= nodes + floor_nodes, 60,
                                        f"{floor_nodes} more kwok nodes Ready", 0.5)
                repos["floor.git"] = make_repository(work / "git", "floor")
                window = min(args.floor_seconds, seconds)
                machine0, floor_bench0 = machine_cpu(), proc_cpu(os.getpid())
                floor = bench_fleet_floor.run_floor(
                    api, repo=repos["floor.git"], work=work, env={**GIT_ENV, "GIT_TERMINAL_PROMPT": "0"}, args=args,
                    clone_url=forge_url.replace("http://", f"http://{FORGE_USER}:{password}@", 1) + "/floor.git",
                    seconds=window, raw_watch=raw_watch, now_stamp=now_stamp, log=log)
                floor_cores = (machine_cpu() - machine0) / floor.seconds
                floor_bench = sum(proc_cpu(os.getpid())) - sum(floor_bench0)
                fleet_cores = (cpu1["machine"][0] - cpu0["machine"][0]) / seconds
                log(f"machine CPU busy (every process, other users included): {fleet_cores:.2f} cores during the "
                    f"fleet's run, {floor_cores:.2f} during the floor's (the bench's own agents and merger "
                    f"{floor_bench / floor.seconds:.2f}); the ratio holds only if the machine's other load stayed "
                    "the same")
                fleet_in = bench_fleet_floor.merged_within([t - start for t in jobs.merged.values()], window)
                floor_in = floor.merged_within(window)
                result.window = window
                result.fleet_window_per_hour = fleet_in / window * 3600
                result.floor_per_hour = floor_in / window * 3600
                result.fleet_vs_floor = bench_fleet_floor.ratio(fleet_in, floor_in)
                log(f"floor (bare Pods, plain git fetch/merge/push, no operator): {floor_in} merged in the first "
                    f"{window:.0f}s ({result.floor_per_hour:.0f}/h; {floor.pods} Pods, {floor.pushes} pushes, a "
                    f"round p50 {percentile(floor.push_seconds, 0.5):.2f}s p95 "
                    f"{percentile(floor.push_seconds, 0.95):.2f}s); the fleet {fleet_in} in its first {window:.0f}s "
                    f"({result.fleet_window_per_hour:.0f}/h): fleet_vs_floor {result.fleet_vs_floor:.3f}"
                    + (f"; floor errors: {floor.errors[:3]}" if floor.errors else ""))
        finally:
            if agents is not None:
                agents.stop()
                if agents.gateway is not None:
                    agents.gateway.stop()
            if jobs is not None:
                jobs.stop()
            for name in [n for n in procs if n.startswith("operator-")] + ["gateway", "kwok", "kube-scheduler",
                                                                          "forge"]:
                if name in procs:
                    stop_process(procs[name])
            for repo in repos.values():
                with contextlib.suppress(Exception):
                    repo.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--agents", type=int, default=1000, help="concurrent agents: workers.max over all builds")
    parser.add_argument("--repos", type=int, default=1, help="repositories, one build each")
    parser.add_argument("--replicas", type=int, default=1, help="operator replicas (sharded by repository)")
    parser.add_argument("--think-seconds", type=float, default=180.0,
                        help="a worker's time from Running to its push and exit (uniform in 0.5x..1.5x)")
    parser.add_argument("--gate-seconds", type=float, default=5.0, help="a gate (tester) Pod's duration")
    parser.add_argument("--gate-failure-rate", type=float, default=0.005,
                        help="share of workers whose change breaks the gate (culprits, seeded)")
    parser.add_argument("--window", type=int, default=32, help="spec.merge.window of each build")
    parser.add_argument("--depth", type=int, default=2, help="spec.merge.depth of each build: batches under test at "
                                                              "once")
    parser.add_argument("--duration", type=float, default=600,
                        help="seconds the fleet runs at most once resumed (then: how far it got)")
    parser.add_argument("--floor-seconds", type=float, default=360,
                        help="seconds of the floor run (the same fleet with bare Pods and plain git, no operator) "
                             "after the fleet's; both are measured over this window (0: no floor)")
    parser.add_argument("--budget", type=float, default=1260,
                        help="seconds the whole benchmark may take: the run is cut short to fit (then: how far it got)")
    parser.add_argument("--agent-threads", type=int, default=16, help="threads doing the simulated agents' work")
    parser.add_argument("--git-threads", type=int, default=128,
                        help="--through-gateway: threads doing the workers' and fixers' clones and pushes (each waits "
                             "on its git), apart from the gates'")
    parser.add_argument("--report-every", type=float, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tenants", type=int, choices=(1, 2), default=1,
                        help="2: admission by capacity on nodes that hold the fleet's agents only, and a quiet second "
                             "tenant making one small build every --quiet-every seconds; prints its first-Pod-running "
                             "p95 and its share over time")
    parser.add_argument("--quiet-every", type=float, default=20.0, help="seconds between the quiet tenant's builds")
    parser.add_argument("--through-gateway", action="store_true",
                        help="one real longshot-gateway: the operator's Pods get its address, and the simulated "
                             "workers and fixers clone and push through it with Pod-bound tokens, as the runner does "
                             "(hack/bench_fleet_gateway.py); no floor run")
    parser.add_argument("--agent-nice", type=int, default=0, choices=range(0, 20), metavar="0-19",
                        help="with --through-gateway: the simulated agents' git (clone, commit, push) runs at this "
                             "niceness, standing for agent Pods on other nodes (their git then takes only the CPU "
                             "the operator, gateway, forge and API server leave); 0 (the default): as they are")
    parser.add_argument("--operator-nice", type=int, default=0, choices=range(-20, 1), metavar="-20-0",
                        help="the operator replicas (and their git) run at this niceness (root only): the CPU share "
                             "their Pods' requests guarantee them on a real node (cpu.shares), which bare processes "
                             "on a loaded machine do not have; 0 (the default): as they are")
    parser.add_argument("--forge-nice", type=int, default=0, choices=range(-20, 1), metavar="-20-0",
                        help="the git forge (and its git) runs at this niceness (root only): a hosted forge is not on "
                             "the operator's node and does not wait for its CPU; 0 (the default): as it is")
    parser.add_argument("--gateway-nice", type=int, default=0, choices=range(-20, 1), metavar="-20-0",
                        help="with --through-gateway: the gateway (and its git) runs at this niceness (root only), "
                             "the CPU share its Pods' requests give it on a node; 0 (the default): as it is")
    parser.add_argument("--apiserver-nice", type=int, default=0, choices=range(-20, 1), metavar="-20-0",
                        help="kube-apiserver and etcd run at this niceness (root only): the CPU share of a control "
                             "plane on nodes of its own; 0 (the default): as they are")
    parser.add_argument("--bin-dir", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep the work directory (logs, audit log) here")
    args = parser.parse_args(argv)
    if args.through_gateway:
        args.floor_seconds = 0  # the floor has no gateway to go through
    began = time.monotonic()

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    bin_dir = args.bin_dir or Path(subprocess.run(["bash", str(ROOT / "hack/k8s-binaries.sh")], check=True,
                                                  capture_output=True, text=True).stdout.strip().splitlines()[-1])
    result = Result()
    failed: str | None = None
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            run(args, work, bin_dir, result, began)
        except (Exception, KeyboardInterrupt) as e:
            failed = f"{type(e).__name__}: {e}"
            log(f"the run failed: {failed}")
    per_hour = result.merged / result.seconds * 3600 if result.seconds == result.seconds else float("nan")
    log(f"merged={result.merged}/{args.tasks}" + (f" failed={failed!r}" if failed else ""))
    print(f"merged_per_hour={per_hour:.0f} agents={args.agents} tasks={args.tasks} "
          f"operator_cpu_s_per_merge={result.cpu_s_per_merge:.3f} api_writes_per_merge={result.writes_per_merge:.2f} "
          f"peak_rss_mib={result.rss:.0f} dispatch_p95_s={result.dispatch_p95:.2f} "
          f"queue_wait_p95_s={result.queue_wait_p95:.1f}"
          + (f" fleet_vs_floor={result.fleet_vs_floor:.3f} floor_per_hour={result.floor_per_hour:.0f}"
             f" window_s={result.window:.0f}" if args.floor_seconds > 0 else "")
          + (f" gateway_cpu_s_per_merge={result.gateway_cpu_s_per_merge:.3f}"
             f" gateway_peak_rss_mib={result.gateway_rss:.0f} clone_p50_s={result.clone_p50:.2f}"
             f" clone_p95_s={result.clone_p95:.2f} push_p50_s={result.push_p50:.2f} push_p95_s={result.push_p95:.2f}"
             if args.through_gateway else "")
          + (f" quiet_first_pod_p95_s={result.quiet_p95:.2f} quiet_after_room_p95_s={result.quiet_room_p95:.2f}"
             f" quiet_share={result.quiet_share:.3f}"
             if args.tenants > 1 else ""), flush=True)
    return 1 if failed or result.merged == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
