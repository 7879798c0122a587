"""``make bench-fleet BENCH_FLEET_ARGS=--through-gateway``: the fleet's git through the real longshot-gateway.

The benchmark starts one real gateway process (``python -m longshot gateway``: its settings from
``LONGSHOT_GATEWAY_*``, the admin kubeconfig, its mirrors under the work directory, egress allowing loopback where
the forge listens) and the operator with ``LONGSHOT_GATEWAY_URL`` (its Pods carry the gateway's address and a
projected token volume). Each simulated worker and fixer then does at the boundary what the runner does
(``agent.gitops``):

* once its Pod is Running: a token bound to the Pod (TokenRequest on the Pod's ServiceAccount, audience
  ``longshot-gateway``, ``boundObjectRef`` the Pod, as the kubelet asks for the projected token), then a full
  ``git clone --no-tags`` of ``<gateway>/git/<ns>/<build>.git`` with the token as ``http.extraHeader``, the runner's
  clone (into a per-agent temporary directory, ``--no-checkout``: the gateway serves the same requests and pack; the
  working tree is the agent's business, and a thousand of them would fill the disk);
* after its think time: its one file committed on the clone's ``origin/main`` (its own branch's tip for a fixer or a
  relaunch), with git's plumbing on the clone (an index read from the start tree, the file added, ``commit-tree``),
  and ``git push --porcelain --no-verify`` of the commit to its branch through the gateway, which checks the ref
  policy and forwards it to the forge with the build's credential (its ``pre-receive`` hook);
* from its start (before the clone: the runner's ``events.Heartbeat`` wraps its whole run) to its push, a first
  progress message (the runner's "agent runner started") and a heartbeat every ``HEARTBEAT_SECONDS`` (30 s, the
  runner's default) posted to the gateway's ``/progress`` (``{"heartbeat": true}``, which the gateway writes to the
  task's ``status.progress``): with a gateway the operator ends an attempt that sent none for
  ``LONGSHOT_HEARTBEAT_TIMEOUT_SECONDS`` (300 s), and a thousand agents' heartbeats are 33 requests (and status
  writes) a second;
* clone and push are timed by the agent (wall seconds, including the gateway's 503 "attempt not recorded yet" and
  429 retries, which git does not do: the agent retries them as the runner's ``_reconnecting`` does).

Gates (tester Pods) still read the forge's repository straight from its disk: a gate reads one commit, and its clone
through the gateway would be one more of the same requests; they are not counted here. The floor run is skipped
(``--floor-seconds 0`` is implied): the floor has no gateway.

Reported: the gateway's CPU seconds per merge (its process and its reaped git children: ``http-backend``,
``upload-pack``, ``receive-pack``, the pre-receive hook, the hook's push), its peak RSS (VmHWM), the agents' clone and
push p50/p95, and the gateway's own metrics over the run (``longshot_gateway_request_duration_seconds`` by route,
``longshot_gateway_mirror_fetch_seconds``, pushes by result, token reviews).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import heapq
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

AUDIENCE = "longshot-gateway"
TOKEN_SECONDS = 7200
HEARTBEAT_SECONDS = 30.0
"""The runner's heartbeat interval (``agent.settings``: ``heartbeat_seconds``)."""
RETRY_MARKERS = ("503", "429", "Retry-After", "attempt has not", "not recorded")
"""git's message for an HTTP answer the runner retries (the gateway's 503 before the operator recorded the Pod's UID,
its 429 of the per-attempt limits)."""


def blob_id(content: bytes) -> str:
    """The git object id of a blob holding ``content``."""
    return hashlib.sha1(f"blob {len(content)}\0".encode() + content).hexdigest()


@dataclass
class GitTimes:
    clone: list[float] = field(default_factory=list)
    push: list[float] = field(default_factory=list)
    retries: int = 0
    heartbeats: list[float] = field(default_factory=list)
    """Each heartbeat's round trip (``POST /progress``)."""
    heartbeat_failures: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            getattr(self, kind).append(seconds)


def start_gateway(spawn: Callable[..., subprocess.Popen[bytes]], work: Path, kubeconfig: Path, namespace: str,
                  port: int, metrics_port: int, root: Path, nice: int = 0) -> subprocess.Popen[bytes]:
    """One real gateway process: ``python -m longshot gateway`` with the admin kubeconfig; ``nice``: its session's
    CPU weight (``--gateway-nice``)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "LONGSHOT_GATEWAY_PORT": str(port),
           "LONGSHOT_GATEWAY_METRICS_PORT": str(metrics_port), "LONGSHOT_GATEWAY_ADDRESS": "127.0.0.1",
           "LONGSHOT_GATEWAY_NAMESPACE": namespace, "LONGSHOT_GATEWAY_MIRROR_DIR": str(work / "gateway-mirrors"),
           "LONGSHOT_GATEWAY_EGRESS_ALLOWED_CIDRS": "127.0.0.0/8",
           "PYTHONPATH": f"{root / 'operator'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return spawn("gateway", [sys.executable, "-m", "longshot", "gateway"], work, env, nice=nice)


class GatewayAgents:
    """The simulated agents' git through the gateway: a Pod-bound token, the runner's clone, a commit, its push."""

    def __init__(self, core: kubernetes.client.CoreV1Api, url: str, env: Mapping[str, str], work: Path,
                 nice: int = 0) -> None:
        self.core = core
        self.nice = nice
        """The simulated agents' git runs at this niceness (``--agent-nice``): 0, or more to stand for agent Pods
        on other nodes, whose git does not take the control plane's CPU."""
        self.url = url.rstrip("/")
        self.env = {k: v for k, v in env.items() if not k.startswith("GIT_CONFIG")} | {
            "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
        self.root = work / "agents"
        self.root.mkdir(parents=True, exist_ok=True)
        self.times = GitTimes()
        self._clones: dict[str, tuple[Path, str]] = {}
        """Pod name -> (its clone, its token)."""
        self._tokens: dict[str, str] = {}
        """Pod name -> its token, from its start to its push: whose heartbeats are due."""
        self._lock = threading.Lock()
        self._beats: list[tuple[float, str]] = []
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._posts = concurrent.futures.ThreadPoolExecutor(64, thread_name_prefix="heartbeat")
        threading.Thread(target=self._heartbeats, daemon=True, name="heartbeats").start()

    def niced(self) -> list[str]:
        """The prefix of each of the agents' git commands: a session of its own whose scheduling group has that
        niceness (``bench_fleet.set_group_nice``: with autogroups on, a process's own niceness weighs it only
        against its own session, here the benchmark's threads), then git in place of the shell."""
        if not self.nice:
            return []
        return ["setsid", "-w", "sh", "-c", f'echo {self.nice} > /proc/self/autogroup 2>/dev/null || renice -n '
                f'{self.nice} -p $$ >/dev/null; exec "$@"', "sh"]

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        self._posts.shutdown(wait=False, cancel_futures=True)

    def _heartbeats(self) -> None:
        """Every cloned agent's heartbeat, every HEARTBEAT_SECONDS until its push."""
        while not self._stop.is_set():
            with self._cv:
                while not self._beats or self._beats[0][0] > time.monotonic():
                    if self._stop.is_set():
                        return
                    self._cv.wait(None if not self._beats else max(0.0, self._beats[0][0] - time.monotonic()))
                _, name = heapq.heappop(self._beats)
            with self._lock:
                token = self._tokens.get(name)
            if token is None:  # pushed and gone
                continue
            with contextlib.suppress(RuntimeError):
                self._posts.submit(self._beat, token, None, name)
            with self._cv:
                heapq.heappush(self._beats, (time.monotonic() + HEARTBEAT_SECONDS, name))

    def _beat(self, token: str, body: Mapping[str, Any] | None = None, name: str | None = None) -> None:
        """One heartbeat (or ``body``); a heartbeat of an agent that pushed and exited while it waited for a
        thread is not sent (the runner's heartbeats end with its process)."""
        if name is not None:
            with self._lock:
                if self._tokens.get(name) != token:
                    return
        t = time.monotonic()
        try:
            data = json.dumps(body or {"heartbeat": True}).encode()
            request = urllib.request.Request(f"{self.url}/progress", data=data,
                                             method="POST", headers={"Content-Type": "application/json",
                                                                     "Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
            self.times.add("heartbeats", time.monotonic() - t)
        except OSError:
            with self.times.lock:
                self.times.heartbeat_failures += 1

    def token(self, pod: Mapping[str, Any]) -> str:
        meta = pod["metadata"]
        body = {"spec": {"audiences": [AUDIENCE], "expirationSeconds": TOKEN_SECONDS,
                         "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"],
                                            "uid": meta["uid"]}}}
        account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        return str(self.core.create_namespaced_service_account_token(account, meta["namespace"], body).status.token)

    def _git(self, token: str, *args: str, cwd: Path | None = None, retry: bool = False) -> str:
        env = {**self.env, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
               "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {token}"}
        delay = 0.5
        for attempt in range(8 if retry else 1):
            p = subprocess.run([*self.niced(), "git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                               timeout=600, check=False)
            if p.returncode == 0:
                return p.stdout
            if not retry or attempt == 7 or not any(m in p.stderr for m in RETRY_MARKERS):
                raise RuntimeError(f"git {args[0]} failed ({p.returncode}): {p.stderr.strip()[-300:]}")
            with self.times.lock:
                self.times.retries += 1
            time.sleep(delay)
            delay = min(delay * 2, 4.0)
        raise AssertionError("unreachable")

    def clone(self, pod: Mapping[str, Any], namespace: str, build: str) -> None:
        """What the runner does first: its token, then a full clone of its build's repository through the gateway."""
        name = pod["metadata"]["name"]
        token = self.token(pod)
        with self._lock:
            first = name not in self._tokens
            self._tokens[name] = token
        if first:  # the runner's first progress message, then its heartbeats, all from its start
            with contextlib.suppress(RuntimeError):
                self._posts.submit(self._beat, token, {"message": "agent runner started"})
            with self._cv:
                heapq.heappush(self._beats, (time.monotonic() + HEARTBEAT_SECONDS, name))
                self._cv.notify()
        dest = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.root))
        t = time.monotonic()
        try:
            self._git(token, "clone", "--quiet", "--no-tags", "--no-checkout", "--",
                      f"{self.url}/git/{namespace}/{build}.git", str(dest / "c"), retry=True)
        except Exception:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        self.times.add("clone", time.monotonic() - t)
        with self._lock:
            self._clones[name] = (dest, token)

    def forget(self, name: str) -> None:
        with self._lock:
            got = self._clones.pop(name, None)
            self._tokens.pop(name, None)
        if got is not None:
            shutil.rmtree(got[0], ignore_errors=True)

    def has_clone(self, name: str) -> bool:
        with self._lock:
            return name in self._clones

    def rev(self, name: str, ref: str) -> str | None:
        """``ref``'s commit in the Pod's clone (``origin/<branch>``), or None."""
        with self._lock:
            dest, _ = self._clones[name]
        p = subprocess.run([*self.niced(), "git", "--git-dir", str(dest / "c" / ".git"), "rev-parse", "--verify",
                            "--quiet", f"{ref}^{{commit}}"], env=self.env, capture_output=True, text=True, check=False)
        return p.stdout.strip() or None

    def read(self, name: str, spec: str) -> str | None:
        """The object id of ``spec`` (``<commit>:<path>``) in the Pod's clone, or None."""
        with self._lock:
            dest, _ = self._clones[name]
        p = subprocess.run([*self.niced(), "git", "--git-dir", str(dest / "c" / ".git"), "rev-parse", "--verify",
                            "--quiet", spec], env=self.env, capture_output=True, text=True, check=False)
        return p.stdout.strip() or None

    def commit_and_push(self, name: str, start: str, branch: str, path: str, content: bytes, message: str) -> str:
        """Its one file committed on ``start`` in its clone and pushed to ``branch`` through the gateway; the
        commit. The clone is removed afterwards."""
        with self._lock:
            dest, token = self._clones[name]
        git_dir = str(dest / "c" / ".git")
        index = {**self.env, "GIT_INDEX_FILE": str(dest / "index"), "GIT_AUTHOR_NAME": "Longshot Agent",
                 "GIT_AUTHOR_EMAIL": "agent@longshot.local", "GIT_COMMITTER_NAME": "Longshot Agent",
                 "GIT_COMMITTER_EMAIL": "agent@longshot.local"}

        def plumb(*args: str, data: bytes | None = None) -> str:
            return subprocess.run([*self.niced(), "git", "--git-dir", git_dir, *args], env=index, input=data,
                                  capture_output=True, check=True).stdout.decode().strip()

        try:
            plumb("read-tree", start)
            blob = plumb("hash-object", "-w", "--stdin", data=content)
            plumb("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
            tree = plumb("write-tree")
            commit = plumb("commit-tree", tree, "-p", start, "-F", "-", data=message.encode())
            t = time.monotonic()
            self._git(token, "--git-dir", git_dir, "push", "--porcelain", "--no-verify", "--", "origin",
                      f"{commit}:refs/heads/{branch}", retry=True)
            self.times.add("push", time.monotonic() - t)
            return commit
        finally:
            self.forget(name)


def gateway_report(samples: Any, quantile: Callable[[float, dict[float, float]], float],
                   log: Callable[[str], None]) -> None:
    """The gateway's own metrics over the run: requests by route and result, their duration, mirror fetches,
    pushes, token reviews."""
    counts = samples.by("longshot_gateway_request_duration_seconds_count", "route")
    sums = samples.by("longshot_gateway_request_duration_seconds_sum", "route")
    parts = []
    for route in sorted(counts, key=lambda r: -counts[r]):
        if counts[route] <= 0:
            continue
        b = samples.buckets("longshot_gateway_request_duration_seconds", route=route)
        parts.append(f"{route} {counts[route]:.0f}x mean {sums.get(route, 0) / counts[route]:.2f}s p50 "
                     f"{quantile(0.5, b):.2f}s p95 {quantile(0.95, b):.2f}s")
    results = samples.by("longshot_gateway_requests_total", "result", route="git")
    log("gateway requests (longshot_gateway_request_duration_seconds): " + ("; ".join(parts) or "none")
        + "; git results " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(results.items()) if v > 0))
    fetch_n = samples.by("longshot_gateway_mirror_fetch_seconds_count", "result")
    fetch_s = samples.by("longshot_gateway_mirror_fetch_seconds_sum", "result")
    fb = samples.buckets("longshot_gateway_mirror_fetch_seconds", result="ok")
    n = sum(fetch_n.values())
    log(f"gateway mirror fetches (longshot_gateway_mirror_fetch_seconds): {n:.0f} ("
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(fetch_n.items()) if v > 0)
        + f"), {sum(fetch_s.values()):.0f}s in all, mean {sum(fetch_s.values()) / max(n, 1):.2f}s, p95 "
        f"{quantile(0.95, fb):.2f}s; pushes "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(samples.by("longshot_gateway_git_pushes_total",
                                                                  "result").items()) if v > 0)
        + "; token reviews " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(samples.by(
            "longshot_gateway_token_reviews_total", "result").items()) if v > 0))
    stage_n = samples.by("longshot_gateway_git_stage_seconds_count", "stage")
    stage_s = samples.by("longshot_gateway_git_stage_seconds_sum", "stage")
    log("where git requests' time went (longshot_gateway_git_stage_seconds): " + "; ".join(
        f"{st} {n:.0f}x {stage_s.get(st, 0):.0f}s in all, mean {stage_s.get(st, 0) / n:.3f}s p50 "
        f"{quantile(0.5, samples.buckets('longshot_gateway_git_stage_seconds', stage=st)):.3f}s p95 "
        f"{quantile(0.95, samples.buckets('longshot_gateway_git_stage_seconds', stage=st)):.3f}s"
        for st, n in sorted(stage_n.items(), key=lambda kv: -stage_s.get(kv[0], 0)) if n > 0))
    lag = samples.buckets("longshot_gateway_event_loop_lag_seconds")
    lag_n = samples.by("longshot_gateway_event_loop_lag_seconds_count", "").get("", 0.0)
    lag_s = samples.by("longshot_gateway_event_loop_lag_seconds_sum", "").get("", 0.0)
    if lag_n > 0:
        log(f"gateway event loop lag (longshot_gateway_event_loop_lag_seconds): {lag_n:.0f} samples, mean "
            f"{lag_s / lag_n:.3f}s p50 {quantile(0.5, lag):.3f}s p95 {quantile(0.95, lag):.3f}s")


