"""The floor of ``make bench-fleet``: the same fleet's work with no operator, measured in the same run.

An absolute merge rate on a shared 2-core machine says little: the same benchmark printed 13,648, 7,593 and 5,398
merges an hour on three machines of one kind (issue 56). What the operator adds or costs shows as a ratio to what
the machine does with no operator at all, measured in the same run, on the same control plane, kwok nodes and forge:

* **bare Pods:** the benchmark itself keeps ``--agents`` Pods in flight (created, bound by kube-scheduler, made
  Running by kwok, as the operator's are), and each one's simulated agent thinks for the same time (``--think-seconds``,
  uniform in 0.5x..1.5x, the same seed), writes its change the same way (a commit on its own branch written into the
  forge's repository) and ends its Pod with the same status write; the Pod is then deleted and the next one created;
* **plain git:** one merger, as a person or a script without Longshot would do it, takes every branch that is ready
  (up to :data:`ROUND`), and in one working clone over the forge's smart HTTP runs one ``git fetch``, one octopus
  ``git merge`` per :data:`OCTOPUS` branches and one ``git push`` of ``main``. No gate, no secret scan, no
  speculation, no status: only what any merge needs.

Both runs are measured over the same window from their start (``--floor-seconds``, or the fleet's run if shorter),
so the ramp-up of the first agents' think weighs the same on both:

    fleet_vs_floor = (fleet's merges in the window) / (floor's merges in the window)

The floor is what this machine does for the fleet's work when nothing orchestrates it; the ratio is what Longshot
keeps of it. A busy or slower machine slows both, and the ratio moves far less than either rate.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import heapq
import random
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

FLOOR_NS = "bench-fleet-floor"
OCTOPUS = 32
"""Branches merged by one ``git merge`` (an octopus merge)."""
ROUND = 512
"""Most branches one fetch, merge and push round takes: every ready one, as a script without a queue would."""
FLOOR_LABEL = "bench.longshot.dev/floor=agent"
TASK_ANNOTATION = "bench.longshot.dev/task"


@dataclass
class FloorResult:
    merged_at: list[float] = field(default_factory=list)
    """Seconds from the floor's start at which each change reached ``main`` (its push)."""
    pods: int = 0
    """Bare Pods created."""
    seconds: float = 0.0
    pushes: int = 0
    errors: list[str] = field(default_factory=list)
    push_seconds: list[float] = field(default_factory=list)
    """Each fetch, merge and push round's duration."""

    def merged_within(self, window: float) -> int:
        return sum(1 for t in self.merged_at if t <= window)


def merged_within(merged_at: Sequence[float], window: float) -> int:
    return sum(1 for t in merged_at if t <= window)


def ratio(fleet_merged: int, floor_merged: int) -> float:
    """``fleet_vs_floor``: NaN when the floor merged nothing (the run says why)."""
    return fleet_merged / floor_merged if floor_merged else float("nan")


def git(cwd: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *argv], cwd=cwd, env=env, check=True, capture_output=True, text=True, timeout=120)


class Merger:
    """The plain-git merger: a working clone, fetch the ready branches, merge each, push ``main`` once a round."""

    def __init__(self, clone_url: str, work: Path, env: dict[str, str], window: int, result: FloorResult,
                 start: float) -> None:
        """``window``: most branches a round takes."""
        self.dir = work / "floor-clone"
        self.env = env
        self.window = window
        self.result = result
        self.start = start
        self.ready: list[str] = []
        self._cv = threading.Condition()
        self._stop = threading.Event()
        subprocess.run(["git", "clone", "-q", clone_url, str(self.dir)], env=env, check=True, capture_output=True,
                       timeout=120)
        git(self.dir, env, "config", "user.name", "Floor")
        git(self.dir, env, "config", "user.email", "floor@example.com")
        self.thread = threading.Thread(target=self._run, daemon=True, name="floor-merger")

    def offer(self, branch: str) -> None:
        with self._cv:
            self.ready.append(branch)
            self._cv.notify()

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                while not self.ready and not self._stop.is_set():
                    self._cv.wait(1)
                batch, self.ready = self.ready[:self.window], self.ready[self.window:]
            if not batch:
                continue
            t0 = time.monotonic()
            try:
                self._round(batch)
            except (subprocess.SubprocessError, OSError) as e:
                if len(self.result.errors) < 20:
                    detail = getattr(e, "stderr", "") or ""
                    self.result.errors.append(f"merge round: {type(e).__name__}: {str(detail).strip()[:200]}")
                with self._cv:  # try those again next round
                    self.ready[:0] = batch
            self.result.push_seconds.append(time.monotonic() - t0)

    def _round(self, batch: list[str]) -> None:
        refspecs = ["+refs/heads/main:refs/remotes/origin/main",
                    *(f"+refs/heads/{b}:refs/remotes/origin/{b}" for b in batch)]
        git(self.dir, self.env, "fetch", "-q", "origin", *refspecs)
        git(self.dir, self.env, "checkout", "-q", "-B", "main", "origin/main")
        for i in range(0, len(batch), OCTOPUS):  # one octopus merge of many branches: one git process, one commit
            heads = [f"origin/{b}" for b in batch[i:i + OCTOPUS]]
            try:
                git(self.dir, self.env, "merge", "-q", "--no-edit", *heads)
            except subprocess.CalledProcessError:  # an octopus refuses what needs a hand: one at a time
                git(self.dir, self.env, "reset", "-q", "--hard")
                for h in heads:
                    git(self.dir, self.env, "merge", "-q", "--no-edit", h)
        git(self.dir, self.env, "push", "-q", "origin", "main:main")
        now = time.monotonic() - self.start
        self.result.merged_at += [now] * len(batch)
        self.result.pushes += 1


def _pod(name: str, task: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": name, "labels": {"bench.longshot.dev/floor": "agent"}, "annotations": {TASK_ANNOTATION: task}},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                 "containers": [{"name": "agent", "image": "longshot-agent:bench", "resources": {
                     "requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}}]}}


def run_floor(api: kubernetes.client.ApiClient, *, repo: Any, clone_url: str, work: Path, env: dict[str, str],
              args: argparse.Namespace, seconds: float, raw_watch: Callable[..., Any],
              now_stamp: Callable[[], str], log: Callable[[str], None]) -> FloorResult:
    """The floor run: ``args.agents`` bare Pods in flight (``args.tasks`` in all), each one's agent writing one
    commit on its own branch of ``repo`` (a ``bench_fleet.Repo``), merged by plain git; until every task merged or
    ``seconds`` passed."""
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": FLOOR_NS}})
    result = FloorResult()
    rng = random.Random(args.seed)
    stop = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(args.agent_threads, thread_name_prefix="floor-agent")
    creator = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="floor-create")
    timers: list[tuple[float, int, str, str, str]] = []
    cv = threading.Condition()
    seq = [0]
    started: set[str] = set()
    next_task = [0]
    lock = threading.Lock()
    start = time.monotonic()
    merger = Merger(clone_url, work, env, ROUND, result, start)

    def create_next() -> None:
        with lock:
            if next_task[0] >= args.tasks or stop.is_set():
                return
            i = next_task[0]
            next_task[0] += 1
        task = f"floor-t{i:05d}"
        try:
            core.create_namespaced_pod(FLOOR_NS, _pod(task, task))
            result.pods += 1
        except Exception as e:  # counted and shown; the run goes on
            if len(result.errors) < 20:
                result.errors.append(f"create {task}: {type(e).__name__}: {e}")

    def finish(name: str, task: str, image: str) -> None:
        try:
            branch = f"floor/{task}"
            commit = repo.commit_file(repo.base, f"work/{task[-2:]}/{task}.txt", f"result of {task}\n".encode(),
                                      f"{task}: worker change\n")
            repo.set_ref(f"refs/heads/{branch}", commit)
            core.patch_namespaced_pod_status(name, FLOOR_NS, {"status": {
                "phase": "Succeeded", "containerStatuses": [{
                    "name": "agent", "image": image, "imageID": "", "ready": False, "restartCount": 0,
                    "started": False, "state": {"terminated": {
                        "exitCode": 0, "reason": "Completed", "startedAt": now_stamp(), "finishedAt": now_stamp()}}}]}})
            merger.offer(branch)
            core.delete_namespaced_pod(name, FLOOR_NS, grace_period_seconds=0)
        except Exception as e:  # counted and shown; the run goes on
            if len(result.errors) < 20:
                result.errors.append(f"{name}: {type(e).__name__}: {e}")
        creator.submit(create_next)

    def watch() -> None:
        for ev in raw_watch(core.list_namespaced_pod, FLOOR_NS, stop, label_selector=FLOOR_LABEL):
            pod = ev["object"]
            meta, status = pod.get("metadata") or {}, pod.get("status") or {}
            name = meta.get("name", "")
            if (ev["type"] in ("ADDED", "MODIFIED") and status.get("phase") == "Running"
                    and not meta.get("deletionTimestamp") and name not in started):
                started.add(name)
                delay = args.think_seconds * rng.uniform(0.5, 1.5)
                with cv:
                    seq[0] += 1
                    heapq.heappush(timers, (time.monotonic() + delay, seq[0], name,
                                            (meta.get("annotations") or {}).get(TASK_ANNOTATION, name),
                                            pod["spec"]["containers"][0]["image"]))
                    cv.notify()

    def timer() -> None:
        while not stop.is_set():
            with cv:
                while not timers or timers[0][0] > time.monotonic():
                    if stop.is_set():
                        return
                    cv.wait(None if not timers else max(0.0, timers[0][0] - time.monotonic()))
                _, _, name, task, image = heapq.heappop(timers)
            try:
                pool.submit(finish, name, task, image)
            except RuntimeError:
                return

    def refresh() -> None:  # the agents start from main as of at most 5 s ago, as the fleet's do
        while not stop.wait(5):
            try:
                repo.refresh_base()
            except Exception:  # the next refresh tries again
                continue

    threads = [threading.Thread(target=f, daemon=True, name=f"floor-{f.__name__}") for f in (watch, timer, refresh)]
    for t in threads:
        t.start()
    merger.thread.start()
    for _ in range(min(args.agents, args.tasks)):
        creator.submit(create_next)
    log(f"floor: {args.agents} bare Pods in flight, plain git merges (every ready branch a round), for {seconds:.0f}s")
    last = start
    try:
        while time.monotonic() - start < seconds and len(result.merged_at) < args.tasks:
            if time.monotonic() - last >= args.report_every:
                last = time.monotonic()
                elapsed = last - start
                log(f"floor {elapsed:.0f}s: merged {len(result.merged_at)} "
                    f"({len(result.merged_at) / elapsed * 3600:.0f}/h), Pods created {result.pods}, pushes "
                    f"{result.pushes}" + (f"; errors: {result.errors[:3]}" if result.errors else ""))
            time.sleep(0.5)
    finally:
        result.seconds = time.monotonic() - start
        stop.set()
        merger.stop()
        with cv:
            cv.notify_all()
        pool.shutdown(wait=False, cancel_futures=True)
        creator.shutdown(wait=False, cancel_futures=True)
    return result
